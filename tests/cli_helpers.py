"""Shared pieces of the CLI tests: a small corpus, tiny-model overrides, event-file readers."""

import os
import random
import re
import sys
from pathlib import Path

import torch
from bpe_helpers import is_cached
from lightning.pytorch import Callback, LightningModule, Trainer
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

REPO = Path(__file__).resolve().parents[1]
CONFIGS = sorted((REPO / "configs").glob("*.yaml"))

_WORDS = (
    "the king queen lord lady sword crown night day love death fair foul sweet bitter speak "
    "hear see come go stay fly hold thou thee thy my mine heart blood honour grace"
).split()


def write_corpus(path: Path, n_lines: int = 1500, seed: int = 0) -> Path:
    """Write a deterministic play-like text (~60 KB) for fast training runs."""
    rng = random.Random(seed)
    lines = []
    for i in range(n_lines):
        if i % 6 == 0:
            lines.append(f"\n{rng.choice(['KING', 'QUEEN', 'LORD'])}:")
        words = [rng.choice(_WORDS) for _ in range(rng.randint(4, 9))]
        lines.append(" ".join(words).capitalize() + rng.choice([".", ",", "!", "?"]))
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


#: The quickstart's GPT as GPT-2 computes it: rotary positions and QK-norm off, so
#: transformers' GPT2LMHeadModel can hold it (export, init_from, pre-recipe checkpoints).
GPT2_ARCH = ["--model.arch.init_args.positions=learned", "--model.arch.init_args.qk_norm=false"]


def tiny_args(tmp_path: Path, corpus: Path, *, steps: int = 2) -> list[str]:
    """Overrides that shrink any config to a seconds-long CPU run inside ``tmp_path``."""
    return [
        "--trainer.accelerator=cpu",
        "--trainer.devices=1",
        "--trainer.strategy=auto",
        "--trainer.precision=32-true",
        f"--trainer.max_steps={steps}",
        f"--trainer.val_check_interval={steps}",
        "--trainer.limit_val_batches=2",
        "--trainer.log_every_n_steps=1",
        "--trainer.enable_progress_bar=false",
        "--trainer.enable_model_summary=false",
        f"--trainer.default_root_dir={tmp_path / 'logs'}",
        f"--checkpoint.dirpath={tmp_path / 'checkpoints'}",
        f"--last_checkpoint.every_n_train_steps={steps}",
        "--model.compile=false",
        "--model.warmup_steps=1",
        f"--data.source={corpus}",
        f"--data.cache_dir={tmp_path / 'cache'}",
        "--data.block_size=16",
        "--data.batch_size=2",
        "--data.num_workers=0",
        "--data.progress=false",
        "--sample.max_new_tokens=8",
    ]


def tokenizer_args(config: Path, tiny_bpe: Path) -> list[str]:
    """Overrides that run ``config`` on tokenizer files the tests have, never downloading one.

    A config that names the user's own file gets a stand-in: the tests' small BPE (``tiny_bpe``, a
    tiktoken ranks file) for ``tiktoken:``, bytes for ``hf:``. A ``gpt2`` config keeps GPT-2's BPE
    when its file is cached and gets the small BPE otherwise, as on a fresh offline clone.
    """
    found = re.search(r"^\s*tokenizer:\s*(\S+)", config.read_text(encoding="utf-8"), re.MULTILINE)
    tokenizer = found.group(1) if found else "gpt2"  # TextDataModule's default
    if tokenizer.startswith("hf:"):
        return ["--data.tokenizer=byte"]
    if tokenizer.startswith("tiktoken:") or (tokenizer == "gpt2" and not is_cached("r50k_base")):
        return [f"--data.tokenizer=tiktoken:{tiny_bpe}"]
    return []


def tiny_model_args(arch: str = "gpt") -> list[str]:
    """Shrink the architecture of a config to a few thousand parameters."""
    args = [
        "--model.arch.init_args.n_layer=1",
        "--model.arch.init_args.n_head=2",
        "--model.arch.init_args.n_embd=32",
        "--model.arch.init_args.block_size=32",
    ]
    if arch == "llama":
        args += ["--model.arch.init_args.n_kv_head=1", "--model.arch.init_args.mlp_hidden=64"]
    return args


def scalars(log_dir: Path, tag: str) -> dict[int, float]:
    """``{step: value}`` of one scalar tag across all event files under ``log_dir``."""
    values: dict[int, float] = {}
    for events in sorted(log_dir.rglob("events.out.tfevents.*")):
        accumulator = EventAccumulator(str(events), size_guidance={"scalars": 0, "tensors": 0})
        accumulator.Reload()
        if tag in accumulator.Tags()["scalars"]:
            values.update({event.step: event.value for event in accumulator.Scalars(tag)})
    return values


def event_tags(log_dir: Path) -> tuple[set[str], set[str]]:
    """All scalar tags and tensor (text) tags written under ``log_dir``."""
    scalar_tags: set[str] = set()
    tensor_tags: set[str] = set()
    for events in log_dir.rglob("events.out.tfevents.*"):
        accumulator = EventAccumulator(str(events), size_guidance={"scalars": 0, "tensors": 0})
        accumulator.Reload()
        scalar_tags.update(accumulator.Tags()["scalars"])
        tensor_tags.update(accumulator.Tags()["tensors"])
    return scalar_tags, tensor_tags


class SaveFinalWeights(Callback):
    """Test callback: each rank saves its full final weights to ``{dirpath}/rank{r}.pt``."""

    def __init__(self, dirpath: str) -> None:
        self.dirpath = Path(dirpath)

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Gather sharded parameters (if any) and save them per rank."""
        state = {}
        for name, param in pl_module.state_dict().items():
            full = param.full_tensor() if hasattr(param, "full_tensor") else param
            state[name] = full.detach().cpu().clone()
        self.dirpath.mkdir(parents=True, exist_ok=True)
        torch.save(state, self.dirpath / f"rank{trainer.global_rank}.pt")


def cli_command() -> list[str]:
    """The ``llm-torch`` command, run with this interpreter."""
    return [sys.executable, "-m", "llm_torch.cli"]


class SendSignal(Callback):
    """Test callback: send ``signum`` to this process right after optimizer step ``at_step``."""

    def __init__(self, signum: int, at_step: int) -> None:
        self.signum = signum
        self.at_step = at_step

    def on_train_batch_end(
        self,
        trainer: Trainer,
        pl_module: LightningModule,
        outputs: object,
        batch: object,
        batch_idx: int,
    ) -> None:
        """Interrupt once, at the chosen step."""
        if trainer.global_step == self.at_step:
            os.kill(os.getpid(), self.signum)
