"""Train-step benchmark: ``llm-torch fit`` against a plain PyTorch loop on the same model and data.

    python -m llm_torch.bench.train                       # CPU, quickstart shape, ~1 minute
    python -m llm_torch.bench.train --preset gpt2         # one GPU, GPT-2 124M, nanoGPT's shape
    python -m llm_torch.bench.train --preset llama-3.2-1b # one GPU, Llama 3.2 1B shape

Both paths build the model from the same config (parsed by the ``llm-torch`` CLI) and train on
the same cached token windows:

(a) a hand-written loop, nanoGPT's recipe with nothing left out: fused AdamW with the same
    parameter groups and schedule, autocast, gradient accumulation, clipping, the same compile
    granularity, pinned non-blocking copies with the next batch fetched while the device works,
    and the loss read once per ``log_every_n_steps``;
(b) the ``llm-torch fit`` command itself: LightningCLI, ``Trainer``, ``CausalLMModule``,
    ``TextDataModule`` and every callback the CLI adds (logging, progress bar, checkpoints).

Each path runs ``--repeats`` times, alternating; the table shows the median run and the ratio
(b)/(a) of tokens per second. A run's figure is its median step time on CPU (robust to other
load on the machine) and its device-synchronised mean step time on GPU, after ``--warmup``
steps.

One module on purpose: the two paths are the benchmark, and a reader checks that (a) leaves
nothing out that (b) does by reading them side by side, in one file.
"""

import argparse
import gc
import itertools
import json
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch import Callback, LightningModule, Trainer

from llm_torch.architectures.registry import build_model
from llm_torch.cli import LLMCLI, cli
from llm_torch.data import TextDataModule
from llm_torch.engine.flops import peak_flops
from llm_torch.engine.module import CausalLMModule
from llm_torch.engine.monitor import peak_memory_gib
from llm_torch.engine.optim import build_optimizer, warmup_cosine

CONFIGS = Path(__file__).resolve().parents[2] / "configs"

#: Named shapes: config file, device, micro-batch, accumulation, precision, compile, extra args.
PRESETS: dict[str, dict[str, Any]] = {
    "quickstart": {
        "config": "shakespeare-char.yaml",
        "device": "cpu",
        "batch_size": 12,
        "accumulate": 1,
        "precision": "32-true",
        "compile": False,
        "steps": 150,
        "warmup": 20,
    },
    "gpt2": {
        "config": "gpt2.yaml",
        "device": "cuda",
        "batch_size": 32,
        "accumulate": 4,
        "precision": "bf16-mixed",
        "compile": True,
        "steps": 20,
        "warmup": 10,
    },
    "llama-3.2-1b": {
        "config": "llama-3.2-1b.yaml",
        "device": "cuda",
        "batch_size": 4,
        "accumulate": 4,
        "precision": "bf16-mixed",
        "compile": True,
        "steps": 10,
        "warmup": 5,
        # The issue's shape: GPT-2's vocabulary (no Llama tokenizer file needed), 2048 tokens.
        "args": ["--data.tokenizer=gpt2", "--data.block_size=2048"],
    },
}


class StepClock:
    """Step end times after warm-up; device-synchronised at the first and the last.

    On a GPU the host runs ahead, so only the synchronised total is the device's time. On a
    CPU, whose speed varies with whatever else runs, the median step is the robust figure.

    Args:
        device: Where training runs.
        warmup: Optimizer steps before the clock starts (compilation, allocator warm-up).
        steps: Optimizer steps timed.
    """

    def __init__(self, device: torch.device, warmup: int, steps: int) -> None:
        self.device = device
        self.warmup = warmup
        self.steps = steps
        self.times: list[float] = []

    def step_done(self, step: int) -> None:
        """Record the end of optimizer step ``step`` (1-based) if it is timed."""
        if self.warmup <= step <= self.warmup + self.steps:
            if step in (self.warmup, self.warmup + self.steps):
                _sync(self.device)
            self.times.append(time.perf_counter())

    def seconds_per_step(self) -> float:
        """The median step on CPU, the synchronised mean on GPU."""
        if len(self.times) != self.steps + 1:
            raise RuntimeError(f"timed {len(self.times) - 1} of {self.steps} steps")
        if self.device.type == "cpu":
            return statistics.median(b - a for a, b in itertools.pairwise(self.times))
        return (self.times[-1] - self.times[0]) / self.steps


@dataclass
class Timing:
    """One timed run: seconds per optimizer step of ``tokens_per_step`` tokens, peak memory."""

    seconds_per_step: float
    tokens_per_step: int
    peak_memory_gib: float | None

    @property
    def tokens_per_sec(self) -> float:
        """Training throughput."""
        return self.tokens_per_step / self.seconds_per_step


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class StepTimer(Callback):
    """Feeds a :class:`StepClock` from a Lightning fit, at each optimizer-step boundary."""

    def __init__(self, clock: StepClock) -> None:
        self.clock = clock

    def on_train_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any, i: int
    ) -> None:
        """Record the step that just finished (none mid-accumulation)."""
        if (i + 1) % trainer.accumulate_grad_batches == 0:
            self.clock.step_done(trainer.global_step)


def cli_args(options: argparse.Namespace, workdir: Path) -> list[str]:
    """The ``llm-torch fit`` arguments both paths are built from."""
    preset = PRESETS[options.preset]
    config = options.config or str(CONFIGS / preset["config"])
    max_steps = options.warmup + options.steps
    return [
        f"--config={config}",
        *preset.get("args", []),
        f"--trainer.accelerator={options.device}",
        "--trainer.devices=1",
        "--trainer.strategy=auto",
        f"--trainer.precision={options.precision}",
        f"--trainer.max_steps={max_steps}",
        f"--trainer.val_check_interval={10 * max_steps * options.accumulate}",  # none timed
        f"--trainer.default_root_dir={workdir / 'logs'}",
        f"--checkpoint.dirpath={workdir / 'checkpoints'}",
        f"--last_checkpoint.every_n_train_steps={10 * max_steps}",
        f"--data.batch_size={options.batch_size}",
        f"--batch.global_batch_size={options.batch_size * options.accumulate}",
        f"--model.compile={options.compile}",
        "--data.num_workers=2" if options.device == "cuda" else "--data.num_workers=0",
    ]


def run_lightning(
    options: argparse.Namespace,
    workdir: Path,
    extra_args: Sequence[str] = (),
    callbacks: Sequence[Callback] = (),
) -> Timing:
    """Path (b): ``llm-torch fit`` as a user runs it, with a step timer added.

    ``extra_args`` (CLI overrides) and ``callbacks`` let other benchmarks (``bench.gpu``) time
    the same fit on other data or with a profiler attached.
    """
    device = torch.device(options.device)
    clock = StepClock(device, options.warmup, options.steps)
    _reset_peak_memory(device)
    run = cli(
        ["fit", *cli_args(options, workdir), *extra_args],
        trainer_defaults={"callbacks": [StepTimer(clock), *callbacks]},
    )
    tokens = options.batch_size * options.accumulate * run.datamodule.block_size
    return Timing(clock.seconds_per_step(), tokens, peak_memory_gib(device))


def run_plain(options: argparse.Namespace, workdir: Path) -> Timing:
    """Path (a): the same model, optimizer, schedule and data in a hand-written loop."""
    parsed = LLMCLI(CausalLMModule, TextDataModule, run=False, args=cli_args(options, workdir))
    module, data = parsed.model, parsed.datamodule
    assert isinstance(module, CausalLMModule) and isinstance(data, TextDataModule)
    device = torch.device(options.device)
    if device.type == "cuda":
        torch.set_float32_matmul_precision("high")
    torch.manual_seed(1337)
    with device:
        model = build_model(module.config)
    if options.compile:
        model.compile_for_training()
    optimizer = build_optimizer(  # AdamW, or Muon chained with AdamW, as configured
        model,
        module.optimizer_config,
        lr=module.lr,
        weight_decay=module.weight_decay,
        betas=module.betas,
        eps=module.eps,
        fused=True,
    )
    decay_steps = module.lr_decay_steps or parsed.trainer.max_steps
    schedule = partial(
        warmup_cosine,
        warmup_steps=module.warmup_steps,
        decay_steps=decay_steps,
        min_ratio=module.min_lr / module.lr,
    )
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
    dtype = {"bf16-mixed": torch.bfloat16, "16-mixed": torch.float16}.get(options.precision)
    scaler = torch.amp.GradScaler(device.type, enabled=dtype is torch.float16)
    clip = parsed.trainer.gradient_clip_val
    log_every = int(getattr(parsed.trainer, "log_every_n_steps", 10))  # set at run time

    data.prepare_data()
    data.setup("fit")
    windows = data.train_dataloader().dataset
    batch_index = 0

    def next_batch() -> tuple[torch.Tensor, torch.Tensor]:
        nonlocal batch_index
        inputs, targets = windows.batch(batch_index)  # type: ignore[attr-defined]
        batch_index += 1
        if device.type == "cuda":
            inputs, targets = inputs.pin_memory(), targets.pin_memory()
        return inputs.to(device, non_blocking=True), targets.to(device, non_blocking=True)

    clock = StepClock(device, options.warmup, options.steps)
    _reset_peak_memory(device)
    model.train()
    batch = next_batch()
    for step in range(1, options.warmup + options.steps + 1):
        for _ in range(options.accumulate):
            with torch.autocast(device.type, dtype=dtype or torch.float32, enabled=bool(dtype)):
                loss = model(batch[0], targets=batch[1]) / options.accumulate
            batch = next_batch()  # fetched while the device computes
            scaler.scale(loss).backward()
        if clip:
            scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
        scaler.step(optimizer)
        scaler.update()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        if step % log_every == 0:
            loss.item()  # what a loop that prints its loss pays
        clock.step_done(step)
    tokens = options.batch_size * options.accumulate * data.block_size
    return Timing(clock.seconds_per_step(), tokens, peak_memory_gib(device))


def _reset_peak_memory(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def _row(name: str, timings: list[Timing], peak: float | None, flops: int) -> str:
    seconds = statistics.median(t.seconds_per_step for t in timings)
    tokens_per_sec = statistics.median(t.tokens_per_sec for t in timings)
    mfu = f"{tokens_per_sec * flops / peak:.3f}" if peak else "-"
    memory = max((t.peak_memory_gib or 0.0) for t in timings)
    runs = " ".join(f"{t.tokens_per_sec:,.0f}" for t in timings)
    return (
        f"| {name} | {seconds * 1e3:.1f} | {tokens_per_sec:,.0f} | {mfu} | {memory:.2f} | {runs} |"
    )


#: The two paths, by the key of ``--path``.
PATHS: dict[str, tuple[str, Callable[[argparse.Namespace, Path], Timing]]] = {
    "a": ("(a) plain PyTorch loop", run_plain),
    "b": ("(b) llm-torch fit", run_lightning),
}
_RESULT = "bench.train result: "


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--preset", choices=sorted(PRESETS), default="quickstart")
    parser.add_argument("--config", help="a config YAML instead of the preset's")
    parser.add_argument("--device", help="cpu or cuda (default: the preset's)")
    parser.add_argument("--batch-size", type=int, help="micro-batch size (sequences)")
    parser.add_argument("--accumulate", type=int, help="micro-batches per optimizer step")
    parser.add_argument("--precision", choices=["32-true", "bf16-mixed", "16-mixed"])
    parser.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None)
    parser.add_argument("--steps", type=int, help="optimizer steps timed")
    parser.add_argument("--warmup", type=int, help="optimizer steps before timing")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--path", choices=sorted(PATHS), help=argparse.SUPPRESS)
    options = parser.parse_args(argv)
    preset = PRESETS[options.preset]
    for key in ("device", "batch_size", "accumulate", "precision", "compile", "steps", "warmup"):
        if getattr(options, key) is None:
            setattr(options, key, preset[key])
    return options


def _run_in_subprocess(argv: list[str], path: str) -> Timing:
    """One run of one path in a fresh process, so no run inherits another's threads or heap."""
    command = [sys.executable, "-m", "llm_torch.bench.train", *argv, f"--path={path}"]
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    lines = [line for line in result.stdout.splitlines() if line.startswith(_RESULT)]
    if result.returncode or not lines:
        sys.exit(f"{PATHS[path][0]} failed:\n{result.stderr[-4000:]}")
    return Timing(**json.loads(lines[-1].removeprefix(_RESULT)))


def main(argv: list[str] | None = None) -> None:
    """Run both paths ``--repeats`` times each, alternating, and print the table."""
    argv = sys.argv[1:] if argv is None else argv
    options = _parse(argv)
    if options.path:  # a child: one run, reported as one JSON line
        with tempfile.TemporaryDirectory() as tmp:
            timing = PATHS[options.path][1](options, Path(tmp))
        print(_RESULT + json.dumps(asdict(timing)), flush=True)
        return

    results: dict[str, list[Timing]] = {key: [] for key in PATHS}
    for _ in range(options.repeats):
        for key in PATHS:
            results[key].append(_run_in_subprocess(argv, key))

    device = torch.device(options.device)
    with tempfile.TemporaryDirectory() as tmp:
        probe = LLMCLI(CausalLMModule, TextDataModule, run=False, args=cli_args(options, Path(tmp)))
    assert isinstance(probe.model, CausalLMModule)
    flops = build_model_flops(probe.model, probe.datamodule.block_size)
    peak = peak_flops(device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(
        f"\n{options.preset}: {name}, micro-batch {options.batch_size} x "
        f"{probe.datamodule.block_size}, {options.accumulate} per step, {options.precision}, "
        f"compile {options.compile}; median of {options.repeats} runs of {options.steps} steps"
    )
    print("| Path | ms/step | tokens/s | MFU | peak GiB | tokens/s per run |")
    print("| --- | --- | --- | --- | --- | --- |")
    for key, (label, _) in PATHS.items():
        print(_row(label, results[key], peak, flops))
    plain, fit = (statistics.median(t.tokens_per_sec for t in results[key]) for key in PATHS)
    print(f"\nratio (b)/(a): {fit / plain:.3f}")


def build_model_flops(module: CausalLMModule, seq_len: int) -> int:
    """Training FLOPs per token of the module's architecture (built on the meta device)."""
    with torch.device("meta"):
        return build_model(module.config).flops_per_token(seq_len)


if __name__ == "__main__":
    main()
