"""What a user sees: short errors for bad input, a step-counting bar, clean TensorBoard logs."""

import logging
import os
import re
import subprocess
from pathlib import Path

import pytest
import torch
from cli_helpers import REPO, cli_command, event_tags, scalars, tiny_args, write_corpus
from lightning.pytorch.utilities.model_summary.model_summary import get_human_readable_count

from llm_torch.architectures import GPTConfig
from llm_torch.cli import cli, user_error

CONFIG = REPO / "configs" / "shakespeare-char.yaml"


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    return write_corpus(tmp_path / "corpus.txt")


def _run_cli(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run(
        [*cli_command(), *args], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
    )


@pytest.mark.slow  # a CLI subprocess per case
@pytest.mark.parametrize(
    ("args", "names"),
    [
        (["--model.arch.init_args.n_head=5"], ["n_embd (128)", "n_head (5)"]),
        (["--model.arch.init_args.n_layerz=3"], ["model.arch", "n_layerz"]),
        (["--trainer.max_steps=many"], ["trainer.max_steps", "many"]),
        (["--data.tokenizer=nope"], ["tokenizer 'nope'", "valid names are"]),
        (["--data.source=/no/such/corpus"], ["/no/such/corpus", "Fix:"]),
        (["--ckpt_path=bad.ckpt"], ["bad.ckpt", "truncated or corrupt"]),
    ],
    ids=["config-value", "unknown-key", "wrong-type", "tokenizer", "path", "checkpoint"],
)
def test_bad_input_is_one_short_message_with_exit_status_2(
    tmp_path: Path, args: list[str], names: list[str]
) -> None:
    (tmp_path / "bad.ckpt").write_bytes(b"not a checkpoint at all")
    result = _run_cli(tmp_path, "fit", f"--config={CONFIG}", *args)
    assert result.returncode == 2, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) <= 5, result.stderr
    error = next(line for line in result.stderr.splitlines() if line.startswith("llm-torch: "))
    for name in names:
        assert name in result.stderr, (name, error)


def test_a_crash_keeps_its_traceback() -> None:
    with pytest.raises(RuntimeError) as crash:
        torch.ones(2) @ torch.ones(3)  # raised inside torch: not an input error of llm-torch
    assert user_error(crash.value) is None
    # Raised here, like jsonargparse's wrapper of a config's error: its cause counts.
    with pytest.raises(ValueError, match="any of the Union subtypes") as wrapped:
        try:
            GPTConfig(n_embd=128, n_head=5)
        except ValueError as config_error:
            raise ValueError("Does not validate against any of the Union subtypes") from (
                config_error
            )
    cause = user_error(wrapped.value)
    assert cause is not None and "must be divisible by n_head (5)" in str(cause)


def test_console_counts_optimizer_steps_and_shows_the_logged_loss(
    tmp_path: Path,
    corpus: Path,
    capfd: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    args = [*tiny_args(tmp_path, corpus, steps=6), "--trainer.enable_progress_bar=true"]
    args += ["--trainer.enable_model_summary=true", "--trainer.log_every_n_steps=3"]
    args += ["--batch.global_batch_size=4"]  # 2 micro-batches of 2 per step
    run = cli(["fit", f"--config={CONFIG}", *args])
    out, _ = capfd.readouterr()
    final = out.replace("\r", "\n").strip().splitlines()[-1]
    assert final.startswith("Training: 100%") and " 6/6 " in final
    assert "v_num" not in out and "Epoch" not in out
    shown = float(re.search(r"loss=([\d.]+)", final).group(1))  # type: ignore[union-attr]
    logged = scalars(tmp_path / "logs", "train/loss")
    assert sorted(logged) == [2, 5]  # every 3rd step, 0-based
    assert shown == pytest.approx(logged[5], abs=5e-3)  # the bar rounds to 3 digits
    # The model summary: no column of zero FLOPs, the model's figure instead.
    flops = get_human_readable_count(run.model.model.flops_per_token())
    assert re.search(rf"{re.escape(flops)}\s+Training FLOPs per token", caplog.text)
    assert "| FLOPs" not in caplog.text and "Total Flops" not in caplog.text


def test_tensorboard_holds_no_placeholder_scalars(tmp_path: Path, corpus: Path) -> None:
    cli(["fit", f"--config={CONFIG}", *tiny_args(tmp_path, corpus, steps=2)])
    scalar_tags, _ = event_tags(tmp_path / "logs")
    assert "train/loss" in scalar_tags and "val/loss" in scalar_tags
    assert not {"hp_metric", "epoch"} & scalar_tags
