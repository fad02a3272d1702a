"""Real two-process training on CPU: DDP and FSDP2 (Lightning's ModelParallelStrategy)."""

import os
import subprocess
from pathlib import Path

import pytest
import torch
from cli_helpers import REPO, cli_command, tiny_args, write_corpus

CONFIG = REPO / "configs" / "shakespeare-char.yaml"
ADAMW = "--model.optimizer.name=adamw"

pytestmark = pytest.mark.slow  # each fit starts two Python processes


def fit_two_processes(
    tmp_path: Path, strategy: str, corpus: Path, *extra: str
) -> dict[str, dict[str, torch.Tensor]]:
    """Train 3 steps on 2 CPU processes; return each rank's final (gathered) weights."""
    weights = tmp_path / "weights"
    args = [
        *tiny_args(tmp_path, corpus, steps=3),
        "--trainer.devices=2",
        f"--trainer.strategy={strategy}",
        "--trainer.callbacks+=cli_helpers.SaveFinalWeights",
        f"--trainer.callbacks.dirpath={weights}",
        *extra,
    ]
    # An in-process fit earlier in the session (test_configs: FSDP2 on one rank) leaves
    # Lightning's launcher variables behind, and its store listening on MASTER_PORT: inherited,
    # they would make rank 0 bind a taken port and skip spawning rank 1.
    launcher = {"MASTER_ADDR", "MASTER_PORT", "NODE_RANK", "LOCAL_RANK", "WORLD_SIZE", "RANK"}
    env = {k: v for k, v in os.environ.items() if k not in launcher}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO / "tests"), str(REPO)])
    result = subprocess.run(
        [*cli_command(), "fit", f"--config={CONFIG}", *args],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return {rank: torch.load(weights / f"{rank}.pt") for rank in ("rank0", "rank1")}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_corpus(tmp_path_factory.mktemp("corpus") / "corpus.txt")


@pytest.fixture(scope="module")
def ddp_weights(
    tmp_path_factory: pytest.TempPathFactory, corpus: Path
) -> dict[str, dict[str, torch.Tensor]]:
    # AdamW, which FSDP2 can shard (the config's Muon needs whole matrices).
    return fit_two_processes(tmp_path_factory.mktemp("ddp"), "ddp", corpus, ADAMW)


def test_ddp_ranks_end_with_identical_weights(
    ddp_weights: dict[str, dict[str, torch.Tensor]],
) -> None:
    rank0, rank1 = ddp_weights["rank0"], ddp_weights["rank1"]
    assert rank0.keys() == rank1.keys()
    for name in rank0:
        torch.testing.assert_close(rank0[name], rank1[name], rtol=0, atol=0, msg=name)


def test_ddp_with_muon_keeps_ranks_identical_and_trains_differently_from_adamw(
    tmp_path: Path, corpus: Path, ddp_weights: dict[str, dict[str, torch.Tensor]]
) -> None:
    muon = fit_two_processes(tmp_path, "ddp", corpus, "--model.optimizer.name=muon")
    for name, tensor in muon["rank0"].items():
        # Newton-Schulz on the all-reduced gradient is the same computation on every rank.
        torch.testing.assert_close(muon["rank1"][name], tensor, rtol=0, atol=0, msg=name)
    qkv = "model.blocks.0.attn.qkv.weight"
    assert not torch.allclose(muon["rank0"][qkv], ddp_weights["rank0"][qkv])


def test_fsdp2_on_cpu_trains_like_ddp(
    tmp_path: Path, corpus: Path, ddp_weights: dict[str, dict[str, torch.Tensor]]
) -> None:
    strategy = '{"class_path": "llm_torch.engine.strategy.FSDPStrategy"}'
    fsdp = fit_two_processes(tmp_path, strategy, corpus, ADAMW)
    reference = ddp_weights["rank0"]
    for rank in ("rank0", "rank1"):
        assert fsdp[rank].keys() == reference.keys()
        for name, tensor in reference.items():
            # Same data, seed and math; only the order of floating-point reductions differs.
            torch.testing.assert_close(fsdp[rank][name], tensor, rtol=1e-4, atol=1e-5, msg=name)
