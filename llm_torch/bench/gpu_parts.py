"""What each part of ``python -m llm_torch.bench.gpu`` measures, run in the part's child process.

Each ``measure_*`` function takes the part's plan (``bench.gpu.PLANS``, steps already scaled),
the output folder and the child run's name, and returns the part's figures as plain data. They
are thin: the measuring is ``bench.train``'s (both paths, ``StepClock``, ``Timing``) and
``bench.generate``'s; this module adds synthetic token shards, a loss recorder and a profiler.
Kept apart from the orchestrator so that the parent process never imports Lightning.
"""

import gzip
import math
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from torch.autograd import DeviceType

from llm_torch.bench import generate as generate_bench
from llm_torch.bench import train as train_bench
from llm_torch.data.shards import header
from llm_torch.engine.flops import peak_flops

Plan = dict[str, Any]
Figures = dict[str, Any]


def bench_options(plan: Plan) -> Any:
    """``bench.train``'s options for a plan: its arguments, then its step counts."""
    return train_bench._parse(
        [*plan["args"], f"--steps={plan['steps']}", f"--warmup={plan['warmup']}"]
    )


def timing_figures(options: Any, timing: train_bench.Timing, extra_args: list[str]) -> Figures:
    """A timed run's figures, with its MFU against this device's peak (or why there is none)."""
    with tempfile.TemporaryDirectory() as tmp:  # the same parse as bench.train's own table
        args = [*train_bench.cli_args(options, Path(tmp)), *extra_args]
        probe = train_bench.LLMCLI(
            train_bench.CausalLMModule, train_bench.TextDataModule, run=False, args=args
        )
        assert isinstance(probe.model, train_bench.CausalLMModule)
        block_size = probe.datamodule.block_size
        flops = train_bench.build_model_flops(probe.model, block_size)
    device = torch.device(options.device)
    peak = peak_flops(device)
    against = {"cuda": "dense bf16 datasheet peak", "cpu": "measured CPU fp32 matmul rate"}
    return {
        "tokens_per_sec": timing.tokens_per_sec,
        "seconds_per_step": timing.seconds_per_step,
        "tokens_per_step": timing.tokens_per_step,
        "peak_memory_gib": timing.peak_memory_gib,
        "flops_per_token": flops,
        "peak_flops": peak,
        "mfu": timing.tokens_per_sec * flops / peak if peak else None,
        "mfu_against": against[device.type] if peak else "unknown GPU: no datasheet peak",
        "shape": f"{options.batch_size} x {block_size}, {options.accumulate} per step, "
        f"{options.precision}, compile {options.compile}, on {options.device}",
    }


def measure_train(plan: Plan, out: Path, run: str) -> Figures:
    """(a), (b): one path of ``bench.train`` (``run``: ``plain`` or ``fit``)."""
    options = bench_options(plan)
    with tempfile.TemporaryDirectory() as tmp:
        timing = train_bench.PATHS[{"plain": "a", "fit": "b"}[run]][1](options, Path(tmp))
    return timing_figures(options, timing, [])


class LossRecorder(Callback):
    """Keeps each optimizer step's loss on the device; :meth:`values` reads them all at once."""

    def __init__(self) -> None:
        self.losses: list[torch.Tensor] = []

    def on_train_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any, i: int
    ) -> None:
        """Keep the step's last micro-batch loss (Lightning hands it divided by accumulation)."""
        if (i + 1) % trainer.accumulate_grad_batches == 0:
            self.losses.append(outputs["loss"].detach() * trainer.accumulate_grad_batches)

    def values(self) -> list[float]:
        """The recorded losses as floats: one device read."""
        return torch.stack(self.losses).float().cpu().tolist() if self.losses else []


def write_token_shards(folder: Path, train_tokens: int, ids: int = 4096) -> tuple[str, str]:
    """Learnable synthetic llm.c shards: 64-token walks through a fixed permutation of ``ids``.

    Every token but a walk's first follows from the one before, so a model's loss falls from
    ``ln(vocab_size)`` towards ``ln(ids) / 64`` nats as it learns the permutation.

    Returns:
        The train and the validation shard's paths.
    """
    rng = np.random.default_rng(0)
    permutation = rng.permutation(ids).astype(np.uint16)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for split, count in (("train", train_tokens), ("val", max(train_tokens // 10, 4096))):
        walks = np.empty((math.ceil(count / 64), 64), dtype=np.uint16)
        walks[:, 0] = rng.integers(ids, size=len(walks))
        for j in range(1, 64):
            walks[:, j] = permutation[walks[:, j - 1]]
        path = folder / f"synthetic_{split}_000000.bin"
        path.write_bytes(header("uint16", walks.size) + walks.tobytes())
        paths.append(str(path))
    return paths[0], paths[1]


def measure_speedrun(plan: Plan, out: Path, run: str) -> Figures:
    """(c): ``gpt2-speedrun.yaml`` through ``llm-torch fit`` on synthetic token shards."""
    options = bench_options(plan)
    recorder = LossRecorder()
    with tempfile.TemporaryDirectory() as tmp:
        tokens = (options.warmup + options.steps) * options.batch_size * 1024
        train, val = write_token_shards(Path(tmp) / "tokens", min(tokens, 8 * 2**20), plan["ids"])
        extra = [
            f"--data.source={train}",
            f"--data.val_source={val}",
            f"--data.cache_dir={tmp}/cache",  # not the user's cache: these shards are deleted
            *plan["overrides"],
        ]
        timing = train_bench.run_lightning(options, Path(tmp), extra, [recorder])
        figures = timing_figures(options, timing, extra)
    losses = recorder.values()
    window = max(1, min(10, len(losses) // 4))
    start, end = sum(losses[:window]) / window, sum(losses[-window:]) / window
    return {
        **figures,
        "steps": len(losses),
        "loss_first": losses[0],
        "loss_start": start,
        "loss_end": end,
        "loss_falling": end < start,
        "all_finite": all(math.isfinite(loss) for loss in losses),
        "losses_every_10_steps": losses[::10],
    }


def measure_decode(plan: Plan, out: Path, run: str) -> Figures:
    """(d): ``bench.generate`` with the plan's options (``steps``: new tokens)."""
    return generate_bench.main([*plan["args"], f"--new-tokens={plan['steps']}"])


class ProfileSteps(Callback):
    """Profiles optimizer steps ``start + 1`` to ``start + steps``; writes the table and trace.

    Args:
        start: Optimizer steps before the profiler starts (compilation and warm-up).
        steps: Optimizer steps profiled.
        out: Folder for ``profile_kernels.txt`` and ``profile_trace.json.gz``.
    """

    def __init__(self, start: int, steps: int, out: Path) -> None:
        self.start, self.steps, self.out = start, steps, out
        self.profiler: torch.profiler.profile | None = None
        self.figures: Figures = {}

    def on_train_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any, i: int
    ) -> None:
        """Start at the end of step ``start``; stop and report at the end of the last one."""
        if (i + 1) % trainer.accumulate_grad_batches:
            return
        cuda = pl_module.device.type == "cuda"
        if trainer.global_step == self.start:
            activities = [torch.profiler.ProfilerActivity.CPU]
            if cuda:
                activities.append(torch.profiler.ProfilerActivity.CUDA)
            self.profiler = torch.profiler.profile(activities=activities)
            self.profiler.start()
        elif trainer.global_step == self.start + self.steps and self.profiler is not None:
            if cuda:
                torch.cuda.synchronize(pl_module.device)
            self.profiler.stop()
            self.report(self.profiler, cuda)

    def report(self, profiler: torch.profiler.profile, cuda: bool) -> None:
        """Write the table and the gzipped trace; keep the ten heaviest kernels as figures.

        On a GPU the kernels are the device's events, ranked by their own device time; on a CPU
        there are no kernels, so the operators are ranked by their own CPU time.
        """
        sort_by = "self_device_time_total" if cuda else "self_cpu_time_total"
        events = profiler.key_averages()
        table = events.table(sort_by=sort_by, row_limit=40)
        (self.out / "profile_kernels.txt").write_text(f"sorted by {sort_by}\n{table}\n")
        kernels = [e for e in events if not cuda or e.device_type == DeviceType.CUDA]
        kernels = kernels or list(events)  # no kernels recorded (no CUPTI): rank the operators
        kernels.sort(key=lambda event: getattr(event, sort_by), reverse=True)
        total = sum(getattr(event, sort_by) for event in kernels) or 1.0
        trace = self.out / "profile_trace.json.gz"
        with tempfile.TemporaryDirectory() as tmp:
            raw = Path(tmp) / "trace.json"
            profiler.export_chrome_trace(str(raw))
            with raw.open("rb") as source, gzip.open(trace, "wb") as target:
                shutil.copyfileobj(source, target)
        self.figures = {
            "steps": self.steps,
            "sort_by": sort_by,
            "total_ms": total / 1e3,
            "top": [
                {
                    "name": event.key,
                    "ms": getattr(event, sort_by) / 1e3,
                    "calls": event.count,
                    "share": getattr(event, sort_by) / total,
                }
                for event in kernels[:10]
            ],
            "table": "profile_kernels.txt",
            "trace": trace.name,
            "trace_mib": trace.stat().st_size / 2**20,
        }


def measure_profile(plan: Plan, out: Path, run: str) -> Figures:
    """(e): ``torch.profiler`` over a few ``llm-torch fit`` steps, after the warm-up steps."""
    options = bench_options(plan)
    profiler = ProfileSteps(options.warmup, options.steps, out)
    with tempfile.TemporaryDirectory() as tmp:
        timing = train_bench.run_lightning(options, Path(tmp), callbacks=[profiler])
    if not profiler.figures:
        raise RuntimeError("the fit ended before the profiled steps did")
    return {**profiler.figures, "tokens_per_sec_profiled": timing.tokens_per_sec}


#: Each part's measurement, by the part's name in ``bench.gpu``.
MEASURES: dict[str, Callable[[Plan, Path, str], Figures]] = {
    "train_gpt2": measure_train,
    "train_llama": measure_train,
    "speedrun": measure_speedrun,
    "decode": measure_decode,
    "profile": measure_profile,
}
