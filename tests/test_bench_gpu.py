"""``python -m llm_torch.bench.gpu``: the one-command GPU suite, run on CPU with its tiny preset.

It runs for real only when a GPU is lent for a few minutes, so these tests keep it from rotting
in between: every part must finish and record finite figures, and a part that crashes or runs
out of time must be recorded as such without stopping the parts after it.
"""

import gzip
import itertools
import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

from llm_torch.bench import gpu
from llm_torch.data.shards import read_shard

ROOT = Path(__file__).resolve().parents[1]
LABELS = ["(a) train step", "(b) train step", "(c) speedrun", "(d) decode", "(e) profile"]


def numbers(value: Any) -> list[float]:
    """Every int and float inside nested dicts and lists (bools aside)."""
    if isinstance(value, dict):
        return [n for item in value.values() for n in numbers(item)]
    if isinstance(value, list):
        return [n for item in value for n in numbers(item)]
    if isinstance(value, int | float) and not isinstance(value, bool):
        return [float(value)]
    return []


@pytest.mark.slow  # seven child processes, each importing torch and Lightning
def test_tiny_suite_records_every_part_with_finite_figures(tmp_path: Path) -> None:
    out = tmp_path / "gpu"
    done = subprocess.run(
        [sys.executable, "-m", "llm_torch.bench.gpu", "--tiny", f"--out={out}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads((out / "results.json").read_text())
    parts = results["parts"]
    assert list(parts) == ["train_gpt2", "train_llama", "speedrun", "decode", "profile"]
    for name, entry in parts.items():
        assert entry["status"] == "ok", (name, entry)
        assert entry["figures"], name
        assert all(math.isfinite(n) for n in numbers(entry["figures"])), name
    assert results["machine"]["torch"] == torch.__version__

    for name in ("train_gpt2", "train_llama"):  # 4 windows of 64 tokens per step, both paths
        figures = parts[name]["figures"]
        for path in ("plain", "fit"):
            run = figures[path]
            assert run["tokens_per_step"] == 4 * 64
            assert run["tokens_per_sec"] == pytest.approx(256 / run["seconds_per_step"])
            assert run["mfu"] == pytest.approx(
                run["tokens_per_sec"] * run["flops_per_token"] / run["peak_flops"]
            )
        ratio = figures["fit"]["tokens_per_sec"] / figures["plain"]["tokens_per_sec"]
        assert figures["ratio"] == pytest.approx(ratio)

    speedrun = parts["speedrun"]["figures"]  # 256 ids: an untrained model starts near ln(256)
    assert speedrun["loss_first"] == pytest.approx(math.log(256), abs=0.1)
    assert speedrun["loss_end"] < speedrun["loss_start"] - 1.0
    assert speedrun["loss_falling"] and speedrun["all_finite"]

    rows = parts["decode"]["figures"]["rows"]
    assert {(row["generator"], row["batch"]) for row in rows} == {
        (generator, batch)
        for generator in ("llm-torch, KV cache", "transformers generate")
        for batch in (1, 8)
    }

    profile = parts["profile"]["figures"]  # a GPT's training step is mostly matmuls
    assert {"aten::mm", "aten::addmm"} & {top["name"] for top in profile["top"][:3]}
    assert "aten::mm" in (out / "profile_kernels.txt").read_text()
    trace = json.loads(gzip.decompress((out / "profile_trace.json.gz").read_bytes()))
    assert trace["traceEvents"]

    summary = (out / "summary.txt").read_text()
    assert [label in summary for label in LABELS] == [True] * 5
    assert summary in done.stdout  # printed as it was written
    assert "===== profile run: exit code 0" in (out / "log.txt").read_text()


@pytest.mark.slow  # a child process that imports Lightning before it crashes
def test_a_crash_and_a_timeout_are_recorded_and_the_suite_goes_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    tiny = gpu.PLANS["tiny"]
    crashing = {**tiny["decode"], "args": [*tiny["decode"]["args"], "--no-such-option"]}
    monkeypatch.setitem(tiny, "decode", crashing)
    monkeypatch.setitem(tiny, "profile", {**tiny["profile"], "budget": 0.01})

    gpu.main(["--tiny", "--parts=decode,profile", f"--out={tmp_path}"])

    parts = json.loads((tmp_path / "results.json").read_text())["parts"]
    assert list(parts) == ["decode", "profile"]
    assert parts["decode"]["status"] == "failed"
    assert "exit code 2" in parts["decode"]["figures"]["error"]
    assert "--no-such-option" in parts["decode"]["figures"]["error"]
    assert parts["profile"]["status"] == "failed"
    assert "time budget" in parts["profile"]["figures"]["error"]
    summary = (tmp_path / "summary.txt").read_text()
    assert summary.count("FAILED") == 2
    assert summary in capsys.readouterr().out


def test_synthetic_shards_are_llm_c_shards_that_follow_one_permutation(tmp_path: Path) -> None:
    from llm_torch.bench.gpu_parts import write_token_shards

    train, val = write_token_shards(tmp_path, 64 * 100, ids=256)
    raw = Path(train).read_bytes()  # llm.c's header: 256 int32, magic 20240520, version 1, count
    header = [int.from_bytes(raw[i : i + 4], "little") for i in range(0, 12, 4)]
    assert header == [20240520, 1, 64 * 100]
    assert read_shard(Path(val)).tokens >= 4096
    tokens = [int.from_bytes(raw[i : i + 2], "little") for i in range(1024, len(raw), 2)]
    following: dict[int, int] = {}
    for walk in range(100):
        steps = tokens[walk * 64 : walk * 64 + 64]
        for a, b in itertools.pairwise(steps):
            assert following.setdefault(a, b) == b  # within a walk, a token fixes the next one
    assert max(tokens) < 256
