"""Every GPU figure of llm-torch in one command: ``python -m llm_torch.bench.gpu --out DIR``.

Made for a GPU lent for a few minutes. On the device tool: run ``../shared/tools/gpu-prep.sh`` in
the checkout first, then call ``run`` with ``carry: [".whl", ".gpu-assets"]``, ``timeout_s: 600``
and the command::

    python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl && \
    export PYTHONPATH=/tmp/site:$PWD TIKTOKEN_CACHE_DIR=$PWD/.gpu-assets/tiktoken \
    PYTHONUNBUFFERED=1 && python3 -m llm_torch.bench.gpu --out $OUT/gpu

The parts, most important first, so that a run cut off still leaves the figures that matter most
(about 6 minutes on one H100/H200 in all, most of it compilation):

(a) ``train_gpt2``: ``bench.train --preset gpt2``, the plain loop and ``llm-torch fit``, one fresh
    process each: tokens/s, ms/step, MFU, peak memory, and the ratio fit/plain;
(b) ``train_llama``: the same at the Llama 3.2 1B shape (``--preset llama-3.2-1b``);
(c) ``speedrun``: ``configs/gpt2-speedrun.yaml``'s model and optimizer (Muon) through
    ``llm-torch fit`` on synthetic llm.c token shards (no download): short walks through a fixed
    permutation of 4,096 ids, which a model learns, so the loss must fall: tokens/s, MFU, the
    loss at the start and the end, and whether every loss was finite;
(d) ``decode``: ``bench.generate``: eager, compiled (CUDA graphs) and ``transformers``, batch 1
    and 8, and the first-token latency;
(e) ``profile``: ``torch.profiler`` over a few ``llm-torch fit`` steps at the GPT-2 preset: the
    top kernels as a table (``profile_kernels.txt``) and a Chrome trace for Perfetto
    (``profile_trace.json.gz``).

Every part runs in child processes (this module with ``--child`` and the part's plan; the
measuring is in ``gpu_parts``), killed with their process group when the part's time budget
ends, so a crash, an out-of-memory or a hang loses that part only. After each part,
``results.json`` (machine info and every finished part) is rewritten and the part's lines are
appended to ``summary.txt`` and printed; the children's output goes to ``log.txt``.
``--steps-scale`` and ``--time-scale`` scale every part's steps and time budget, ``--parts``
picks some of them.

``--tiny`` (``--preset tiny``) runs every part on CPU with tiny shapes, for the test that keeps
this command working: a few seconds of work, and the start of seven child processes (importing
Lightning). On CPU, MFU is relative to a measured matmul rate, and the compiled decoder is
skipped (compiling it takes longer than the whole tiny run).
"""

import argparse
import contextlib
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = ROOT / "configs"
RESULT = "bench.gpu result: "
_SPEEDRUN = f"--config={CONFIGS / 'gpt2-speedrun.yaml'}"

#: Per preset and part: what it runs (``what``), the benchmark's arguments, steps timed (new
#: tokens for ``decode``), warm-up steps, its time budget in seconds, torch's CPU threads (one on
#: a shared CPU is several times faster than two that wait on each other); for ``speedrun`` also
#: extra CLI overrides and the number of token ids its synthetic data uses.
PLANS: dict[str, dict[str, dict[str, Any]]] = {
    "gpu": {
        "train_gpt2": {
            "what": "GPT-2 124M (bench.train --preset gpt2)",
            "args": ["--preset=gpt2"],
            "steps": 20,
            "warmup": 10,
            "budget": 180,
        },
        "train_llama": {
            "what": "Llama 3.2 1B shape (bench.train --preset llama-3.2-1b)",
            "args": ["--preset=llama-3.2-1b"],
            "steps": 10,
            "warmup": 5,
            "budget": 180,
        },
        "speedrun": {
            "what": "gpt2-speedrun.yaml, 32 x 1024 per step, synthetic tokens",
            "args": ["--preset=gpt2", _SPEEDRUN, "--batch-size=32", "--accumulate=1"],
            "overrides": [],
            "ids": 4096,
            "steps": 270,
            "warmup": 30,
            "budget": 150,
        },
        "decode": {
            "what": "GPT-2 124M shape, bf16, greedy (bench.generate)",
            "args": ["--device=cuda", "--dtype=bfloat16", "--skip-uncached", "--repeats=2"],
            "steps": 256,
            "budget": 180,
        },
        "profile": {
            "what": "llm-torch fit at the GPT-2 preset",
            "args": ["--preset=gpt2"],
            "steps": 2,
            "warmup": 5,
            "budget": 90,
        },
    },
    "tiny": {
        "train_gpt2": {
            "what": "tiny: the quickstart shape on CPU",
            "args": ["--preset=quickstart", "--batch-size=4"],
            "steps": 3,
            "warmup": 1,
            "budget": 180,
            "threads": 1,
        },
        "train_llama": {
            "what": "tiny: llama-nano on CPU",
            "args": [
                "--preset=quickstart",
                f"--config={CONFIGS / 'llama-nano.yaml'}",
                "--batch-size=4",
            ],
            "steps": 3,
            "warmup": 1,
            "budget": 180,
            "threads": 1,
        },
        "speedrun": {
            "what": "tiny: gpt2-speedrun.yaml's recipe, 2 layers of 64, synthetic tokens, CPU",
            "args": ["--preset=quickstart", _SPEEDRUN, "--batch-size=8", "--accumulate=1"],
            "overrides": [
                "--model.arch.init_args.n_layer=2",
                "--model.arch.init_args.n_head=2",
                "--model.arch.init_args.n_embd=64",
                "--model.arch.init_args.block_size=64",
                "--data.block_size=64",
                "--data.tokenizer=byte",  # 256 ids: GPT-2's 50,257 would dominate the time
            ],
            "ids": 256,
            "steps": 20,
            "warmup": 2,
            "budget": 180,
            "threads": 1,
        },
        "decode": {
            "what": "tiny: llama-nano, fp32 on CPU, no compile",
            "args": [
                "--preset=llama-nano",
                "--skip-uncached",
                "--skip-compile",
                "--prompt-len=16",
                "--prefill-len=32",
            ],
            "steps": 8,
            "budget": 180,
            "threads": 1,
        },
        "profile": {
            "what": "tiny: llm-torch fit at the quickstart shape on CPU",
            "args": ["--preset=quickstart", "--batch-size=4"],
            "steps": 2,
            "warmup": 1,
            "budget": 180,
            "threads": 1,
        },
    },
}

#: What issue 21 asks of an H100-class GPU, printed beside the figures.
TARGETS = {
    "train_gpt2": ">= 560,000 tokens/s and MFU >= 0.48 (nanoGPT: 489k), fit/plain >= 0.97",
    "train_llama": "MFU >= 0.45, fit/plain >= 0.97",
    "decode": "batch 1 >= 1,500 tokens/s and >= 5x transformers",
}


def plan(options: argparse.Namespace, part: str) -> dict[str, Any]:
    """A part's plan for this run: the preset's, with ``--steps-scale`` applied."""
    chosen = dict(PLANS[options.preset][part])
    chosen["steps"] = max(1, round(chosen["steps"] * options.steps_scale))
    return chosen


# --- summary lines, in the parent --------------------------------------------------------------


def _train_line(name: str, figures: dict[str, Any]) -> str:
    if "error" in figures:
        return f"  {name}: FAILED: {figures['error']}"
    mfu = f"{figures['mfu']:.3f}" if figures["mfu"] is not None else figures["mfu_against"]
    return (
        f"  {name}: {figures['tokens_per_sec']:,.0f} tokens/s, "
        f"{figures['seconds_per_step'] * 1e3:.1f} ms/step, MFU {mfu}, "
        f"peak {figures['peak_memory_gib'] or 0:.2f} GiB"
    )


def summarise_train(figures: dict[str, Any]) -> list[str]:
    """(a), (b): both paths and their ratio."""
    shape = next((f["shape"] for f in figures.values() if isinstance(f, dict) and "shape" in f), "")
    lines = [f"  {shape}"] if shape else []
    lines += [_train_line(label, figures[run]) for run, label in TRAIN_RUNS.items()]
    if figures.get("ratio") is not None:
        lines.append(f"  ratio fit/plain: {figures['ratio']:.3f}")
    return lines


def summarise_speedrun(figures: dict[str, Any]) -> list[str]:
    """(c): speed and whether it learned."""
    return [
        _train_line("llm-torch fit", figures),
        f"  loss {figures['loss_first']:.3f} at step 1, {figures['loss_start']:.3f} -> "
        f"{figures['loss_end']:.3f} (first -> last steps of {figures['steps']}), "
        f"{'falling' if figures['loss_falling'] else 'NOT FALLING'}, "
        f"{'no NaN/inf' if figures['all_finite'] else 'NaN/inf SEEN'}",
    ]


def summarise_decode(figures: dict[str, Any]) -> list[str]:
    """(d): tokens/s per generator and batch, against ``transformers``."""
    lines = []
    for batch in sorted({row["batch"] for row in figures["rows"]}):
        rows = {row["generator"]: row for row in figures["rows"] if row["batch"] == batch}
        hf = rows.get("transformers generate", {}).get("tokens_per_sec")
        cells = []
        for name, row in rows.items():
            versus = hf and name != "transformers generate"
            ratio = f" ({row['tokens_per_sec'] / hf:.2f}x transformers)" if versus else ""
            cells.append(f"{name} {row['tokens_per_sec']:,.1f}{ratio}")
        lines.append(f"  batch {batch}, tokens/s: " + "; ".join(cells))
    if not any(row["generator"] == "llm-torch, compiled" for row in figures["rows"]):
        lines.append("  llm-torch, compiled: not run in this preset")
    for batch, seconds in figures["compile_seconds"].items():
        lines.append(f"  compiled, batch {batch}: first call (compile) {seconds:.1f} s")
    latency = ", ".join(f"{k} {v:.1f} ms" for k, v in figures["first_token_ms"].items())
    lines.append(f"  first token: {latency}")
    return lines


def summarise_profile(figures: dict[str, Any]) -> list[str]:
    """(e): the five heaviest kernels (or ops, on CPU) and where the files are."""
    lines = [
        f"  {figures['steps']} steps, {figures['sort_by']}, total {figures['total_ms']:.1f} ms"
    ]
    lines += [
        f"  {top['share']:6.1%} {top['ms']:9.2f} ms {top['calls']:6d}x  {top['name'][:70]}"
        for top in figures["top"][:5]
    ]
    lines.append(
        f"  table: {figures['table']}; trace: {figures['trace']} ({figures['trace_mib']:.1f} MiB)"
    )
    return lines


@dataclass(frozen=True)
class Part:
    """One part: its label, how the summary reads its figures, and its child runs."""

    label: str
    summarise: Callable[[dict[str, Any]], list[str]]
    runs: tuple[str, ...] = ("run",)


TRAIN_RUNS = {"plain": "plain PyTorch loop", "fit": "llm-torch fit"}
#: The parts, in the order they run: most important first.
PARTS: dict[str, Part] = {
    "train_gpt2": Part("(a) train step", summarise_train, tuple(TRAIN_RUNS)),
    "train_llama": Part("(b) train step", summarise_train, tuple(TRAIN_RUNS)),
    "speedrun": Part("(c) speedrun recipe", summarise_speedrun),
    "decode": Part("(d) decode", summarise_decode),
    "profile": Part("(e) profile", summarise_profile),
}


# --- the orchestrator --------------------------------------------------------------------------


def run_child(
    part: str, run: str, chosen: dict[str, Any], timeout: float, out: Path
) -> dict[str, Any]:
    """One child run of a plan, in its own process group; its figures, or ``{"error": why}``."""
    if timeout <= 0:
        return {"error": "no time left in the part's budget"}
    command = [sys.executable, "-m", "llm_torch.bench.gpu", f"--out={out}"]
    command += [f"--child={part}:{run}", f"--plan={json.dumps(chosen)}"]
    start = time.monotonic()
    with tempfile.TemporaryFile("w+") as output:
        child = subprocess.Popen(
            command, stdout=output, stderr=subprocess.STDOUT, text=True, start_new_session=True
        )
        try:
            code: int | None = child.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            code = None
        finally:  # also its leftovers: DataLoader and compile workers
            _kill_group(child)
        output.seek(0)
        text = output.read()
    with (out / "log.txt").open("a") as file:
        took = time.monotonic() - start
        file.write(f"\n===== {part} {run}: exit code {code}, {took:.1f} s =====\n{text}")
    results = [line for line in text.splitlines() if line.startswith(RESULT)]
    if code is None:
        return {"error": f"stopped at the part's time budget ({timeout:.0f} s); see log.txt"}
    if code or not results:
        tail = " | ".join(text.strip().splitlines()[-3:])[-600:]
        return {"error": f"exit code {code}: {tail}"}
    figures: dict[str, Any] = json.loads(results[-1].removeprefix(RESULT))
    return figures


def _kill_group(child: subprocess.Popen[str]) -> None:
    with contextlib.suppress(ProcessLookupError):  # the group is gone: nothing left over
        os.killpg(child.pid, signal.SIGKILL)
    child.wait()


def machine_info() -> dict[str, Any]:
    """What the figures were taken on: GPU, library versions, the commit."""

    def version(name: str) -> str | None:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            return None

    try:
        commit = subprocess.run(
            ["git", "-C", str(ROOT), "describe", "--always", "--dirty", "--abbrev=40"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        commit = None  # a copy of the working tree without .git
    cuda = torch.cuda.is_available()
    gpu = torch.cuda.get_device_properties(0) if cuda else None
    return {
        "gpu": gpu.name if gpu else None,
        "gpu_memory_gib": gpu.total_memory / 2**30 if gpu else None,
        "gpu_count": torch.cuda.device_count() if cuda else 0,
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "lightning": version("lightning"),
        "transformers": version("transformers"),
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
        "commit": commit,
        "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


class Report:
    """The suite's files, updated after each part, so a run cut off keeps what it finished.

    ``results.json`` is rewritten whole (atomically), ``summary.txt`` appended to.
    """

    def __init__(self, out: Path, preset: str, machine: dict[str, Any]) -> None:
        self.out = out
        self.data: dict[str, Any] = {"preset": preset, "machine": machine, "parts": {}}
        gpu = machine["gpu"] or "no GPU"
        self._write_json()
        (out / "summary.txt").write_text("")
        self._append(
            [
                f"llm-torch GPU suite, preset {preset}: {gpu}, torch {machine['torch']} "
                f"(CUDA {machine['cuda']}), commit {machine['commit'] or 'unknown'}"
            ]
        )

    def add(self, name: str, entry: dict[str, Any], lines: list[str]) -> None:
        """Record a finished part and print its summary."""
        self.data["parts"][name] = entry
        self._write_json()
        self._append(
            ["", f"{entry['label']} [{entry['seconds']:.0f} s, {entry['status']}]", *lines]
        )

    def _write_json(self) -> None:
        partial = self.out / "results.json.tmp"
        partial.write_text(json.dumps(self.data, indent=2) + "\n")
        partial.replace(self.out / "results.json")

    def _append(self, lines: list[str]) -> None:
        text = "\n".join(lines) + "\n"
        with (self.out / "summary.txt").open("a") as file:
            file.write(text)
        print(text, end="", flush=True)


def run_part(name: str, options: argparse.Namespace) -> dict[str, Any]:
    """A part's child runs within its budget; its entry for ``results.json``."""
    part, chosen = PARTS[name], plan(options, name)
    budget = chosen["budget"] * options.time_scale
    start = time.monotonic()
    results = {
        run: run_child(name, run, chosen, budget - (time.monotonic() - start), Path(options.out))
        for run in part.runs
    }
    figures: dict[str, Any] = dict(results) if len(part.runs) > 1 else results[part.runs[0]]
    failed = [run for run, result in results.items() if "error" in result]
    if len(part.runs) > 1 and not failed:
        figures["ratio"] = results["fit"]["tokens_per_sec"] / results["plain"]["tokens_per_sec"]
    status = "ok" if not failed else "failed" if len(failed) == len(part.runs) else "partial"
    return {
        "label": f"{part.label}, {chosen['what']}",
        "status": status,
        "seconds": time.monotonic() - start,
        "budget_s": budget,
        "figures": figures,
    }


def summary_lines(name: str, entry: dict[str, Any], preset: str) -> list[str]:
    """The summary of one part, a failure's reason, and the issue's targets on a GPU."""
    figures = entry["figures"]
    if entry["status"] == "failed" and "error" in figures:
        lines = [f"  FAILED: {figures['error']}"]
    else:
        lines = PARTS[name].summarise(figures)
    if preset == "gpu" and name in TARGETS:
        lines.append(f"  target: {TARGETS[name]}")
    return lines


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--out", required=True, help="folder for results.json, summary.txt, ...")
    parser.add_argument("--preset", choices=sorted(PLANS), default="gpu")
    parser.add_argument("--tiny", dest="preset", action="store_const", const="tiny")
    parser.add_argument("--parts", default=",".join(PARTS), help="comma-separated subset")
    parser.add_argument("--steps-scale", type=float, default=1.0, help="scales every part's steps")
    parser.add_argument("--time-scale", type=float, default=1.0, help="scales every budget")
    parser.add_argument("--child", help=argparse.SUPPRESS)  # PART:RUN, in a child process
    parser.add_argument("--plan", type=json.loads, help=argparse.SUPPRESS)  # the child's plan
    options = parser.parse_args(argv)
    options.parts = [part for part in options.parts.split(",") if part]
    unknown = sorted(set(options.parts) - set(PARTS))
    if unknown:
        parser.error(f"unknown parts {unknown}: choose from {', '.join(PARTS)}")
    if options.preset == "gpu" and not options.child and not torch.cuda.is_available():
        parser.error("no CUDA device here: the gpu preset needs one; --tiny runs on CPU")
    return options


def main(argv: list[str] | None = None) -> None:
    """Run the chosen parts in order, recording each as it finishes; or, as a child, one run."""
    argv = sys.argv[1:] if argv is None else argv
    options = _parse(argv)
    out = Path(options.out)
    out.mkdir(parents=True, exist_ok=True)
    if options.child:  # one run of one part, reported as one JSON line
        from llm_torch.bench.gpu_parts import MEASURES  # Lightning: in the children only

        part, run = options.child.split(":")
        if "threads" in options.plan:
            torch.set_num_threads(options.plan["threads"])
        figures = MEASURES[part](options.plan, out, run)
        print(RESULT + json.dumps(figures), flush=True)
        return

    previous = signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # kills the child too
    try:
        (out / "log.txt").write_text("")
        report = Report(out, options.preset, machine_info())
        for name in options.parts:
            entry = run_part(name, options)
            report.add(name, entry, summary_lines(name, entry, options.preset))
    finally:
        signal.signal(signal.SIGTERM, previous)
    print(f"\nwritten: results.json, summary.txt, log.txt and the profile's files in {out}")


if __name__ == "__main__":
    main()
