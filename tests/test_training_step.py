"""The training step through Lightning: clipping with fused AdamW, and no host-device syncs."""

import copy
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from engine_helpers import HostReads, Recorder
from lightning.pytorch import Callback, Trainer
from lightning.pytorch.plugins import MixedPrecision
from torch.utils.data import DataLoader, TensorDataset

from llm_torch.architectures import GPTConfig
from llm_torch.engine.module import CausalLMModule
from llm_torch.engine.monitor import TrainingMonitor

CONFIG = GPTConfig(vocab_size=37, block_size=16, n_layer=2, n_head=2, n_embd=32, bias=False)
CLIP = 0.05
LR = 1e-2
#: Large enough that AdamW steps scale with the gradient, so clipping shows in the weights.
EPS = 1e-2


def _batches(n: int, seed: int = 0) -> TensorDataset:
    generator = torch.Generator().manual_seed(seed)
    tokens = torch.randint(0, CONFIG.vocab_size, (n, CONFIG.block_size + 1), generator=generator)
    return TensorDataset(tokens[:, :-1], tokens[:, 1:])


def _trainer(precision: str, steps: int, **overrides: Any) -> Trainer:
    """A quiet CPU trainer; ``overrides`` replace any of its arguments."""
    # Lightning turns "16-mixed" on CPU into bf16; the plugin keeps fp16 and its GradScaler.
    fp16 = precision == "16-mixed"
    arguments: dict[str, Any] = {
        "accelerator": "cpu",
        "devices": 1,
        "max_steps": steps,
        "precision": None if fp16 else precision,
        "plugins": [MixedPrecision("16-mixed", "cpu")] if fp16 else None,
        "logger": False,
        "enable_checkpointing": False,
        "enable_progress_bar": False,
        "enable_model_summary": False,
    }
    return Trainer(**{**arguments, **overrides})


def _reference_run(
    model: torch.nn.Module, data: TensorDataset, precision: str
) -> tuple[torch.nn.Module, list[float]]:
    """The recipe by hand: autocast, GradScaler, unscale, clip, single-tensor AdamW."""
    dtype = {"bf16-mixed": torch.bfloat16, "16-mixed": torch.float16}.get(precision)
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=LR, betas=(0.9, 0.95), eps=EPS, weight_decay=0.0, foreach=False
    )
    scaler = torch.amp.GradScaler("cpu", enabled=precision == "16-mixed")
    norms = []
    for inputs, targets in DataLoader(data, batch_size=4):
        with torch.autocast("cpu", dtype=dtype or torch.float32, enabled=dtype is not None):
            logits = model(inputs)
        loss = F.cross_entropy(logits.float().flatten(0, 1), targets.flatten())
        scaler.scale(loss).backward()
        scaler.unscale_(optimizer)
        norms.append(float(torch.nn.utils.clip_grad_norm_(model.parameters(), CLIP)))
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad()
    return model, norms


@pytest.mark.parametrize("precision", ["32-true", "bf16-mixed", "16-mixed"])
def test_fused_adamw_clips_like_a_hand_written_loop(precision: str, one_thread: None) -> None:
    torch.manual_seed(0)
    module = CausalLMModule(CONFIG, lr=LR, min_lr=LR, warmup_steps=0, weight_decay=0.0, eps=EPS)
    module.configure_model()
    reference, norms = _reference_run(copy.deepcopy(module.model), _batches(12), precision)

    trainer = _trainer(precision, steps=3, gradient_clip_val=CLIP)
    trainer.fit(module, DataLoader(_batches(12), batch_size=4))

    assert trainer.optimizers[0].defaults["fused"]  # the kernel every GPU run uses
    assert min(norms) > 10 * CLIP  # every step really was clipped
    assert module.grad_norm is not None
    assert float(module.grad_norm) == pytest.approx(norms[-1], rel=1e-4)  # before clipping
    for (name, ours), theirs in zip(
        module.model.named_parameters(), reference.parameters(), strict=True
    ):
        torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-6, msg=name)


class _ReadsPerBatch(Callback):
    """Records the scalar reads of each training micro-batch, keyed by its optimizer step."""

    def __init__(self, counter: HostReads) -> None:
        self.counter = counter
        self.reads: list[tuple[int, int]] = []  # (optimizer step the batch belongs to, reads)
        self._start = 0

    def on_train_batch_start(self, trainer: Trainer, *args: Any) -> None:
        self._start = self.counter.count

    def on_train_batch_end(self, trainer: Trainer, *args: Any) -> None:
        self.reads.append((trainer.global_step, self.counter.count - self._start))


@pytest.fixture
def counter() -> Iterator[HostReads]:
    with HostReads() as mode:
        yield mode


def test_training_reads_device_values_only_on_logged_steps(
    counter: HostReads, one_thread: None
) -> None:
    float(torch.ones(()))
    assert counter.count == 1  # the counter sees a read (guards against a vacuous pass)
    torch.manual_seed(0)
    module = CausalLMModule(CONFIG, warmup_steps=2)
    reads = _ReadsPerBatch(counter)
    trainer = _trainer(
        "32-true",
        steps=8,
        accumulate_grad_batches=2,
        gradient_clip_val=1.0,
        log_every_n_steps=4,
        enable_progress_bar=True,  # a bar that reads the device would show up here
        callbacks=[TrainingMonitor(peak_flops=1e12), reads],
    )
    trainer.fit(module, DataLoader(_batches(32), batch_size=2))
    # global_step after each micro-batch: the step completes on the second of each pair.
    silent = [count for step, count in reads.reads if step % 4 != 0]
    assert len(reads.reads) == 16 and silent == [0] * 12


def test_logged_train_loss_is_the_mean_over_the_step_micro_batches(one_thread: None) -> None:
    torch.manual_seed(0)
    module = CausalLMModule(CONFIG, lr=LR, min_lr=LR, warmup_steps=0)
    module.configure_model()
    initial = copy.deepcopy(module.model)
    data = _batches(4)
    with torch.no_grad():
        expected = sum(
            float(F.cross_entropy(initial(x).flatten(0, 1), y.flatten()))
            for x, y in DataLoader(data, batch_size=1)
        ) / len(data)
    monitor, recorder = TrainingMonitor(peak_flops=1e12), Recorder()
    trainer = _trainer(
        "32-true",
        steps=1,
        accumulate_grad_batches=4,
        log_every_n_steps=1,
        logger=recorder,
        callbacks=[monitor],
    )
    trainer.fit(module, DataLoader(data, batch_size=1))
    logged = recorder.steps[0]
    assert logged["train/loss"] == pytest.approx(expected, rel=1e-5)
    assert monitor.progress["loss"] == logged["train/loss"]  # the progress bar's number
    assert logged["lr"] == pytest.approx(LR)
    assert logged["train/grad_norm"] == pytest.approx(float(module.grad_norm), rel=1e-6)
    assert logged["perf/peak_memory_gib"] > 0


@pytest.mark.slow
def test_text_sample_at_validation_does_not_recompile_the_training_graph(one_thread: None) -> None:
    from types import SimpleNamespace

    from torch._dynamo.utils import counters

    from llm_torch.engine.samples import TextSampleLogger
    from llm_torch.tokenizer import get_tokenizer

    tokenizer = get_tokenizer("byte")
    module = CausalLMModule(replace(CONFIG, vocab_size=tokenizer.vocab_size), compile=True)
    module.configure_model()
    inputs, targets = _batches(2)[:]
    module._loss((inputs % tokenizer.vocab_size, targets % tokenizer.vocab_size)).backward()
    compiled = counters["frames"]["total"]
    assert compiled > 0  # the training step did compile
    trainer = SimpleNamespace(
        datamodule=SimpleNamespace(tokenizer=tokenizer),
        sanity_checking=False,
        is_global_zero=False,
        loggers=[],
    )
    TextSampleLogger(prompt="To be", max_new_tokens=6).on_validation_end(trainer, module)  # type: ignore[arg-type]
    assert counters["frames"]["total"] == compiled  # one-token decode steps ran eagerly
