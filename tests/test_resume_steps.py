"""A resumed run logs every value at the step the uninterrupted run logs it.

The checkpoint can be written mid-interval (``every_n_train_steps``), right after validation,
at the end of a run (``max_steps``) or on SIGTERM; each case resumes to the same 12 steps as
one uninterrupted run and must log the same loss at the same step, with no step missing.
"""

import shutil
import signal
from pathlib import Path

import pytest
from cli_helpers import REPO, scalars, tiny_args, write_corpus

from llm_torch.cli import cli

CONFIG = REPO / "configs" / "shakespeare-char.yaml"
STEPS = 12


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_corpus(tmp_path_factory.mktemp("corpus") / "corpus.txt")


def _fit(root: Path, corpus: Path, steps: int, *extra: str) -> None:
    args = [
        *tiny_args(root, corpus, steps=steps),
        # The schedule's length must not depend on where a run stops.
        f"--model.lr_decay_steps={STEPS}",
        "--model.warmup_steps=2",
        "--trainer.val_check_interval=4",
        "--trainer.deterministic=true",
        "--last_checkpoint.every_n_train_steps=100",
    ]
    cli(["fit", f"--config={CONFIG}", *args, *extra])


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory: pytest.TempPathFactory, corpus: Path) -> dict[str, dict]:
    root = tmp_path_factory.mktemp("full")
    _fit(root, corpus, STEPS)
    logs = root / "logs"
    return {tag: scalars(logs, tag) for tag in ("train/loss", "val/loss")}


def _resume(root: Path, corpus: Path, checkpoint: Path) -> dict[str, dict]:
    """Fit to ``STEPS`` from ``checkpoint`` in a fresh log folder; the logged scalars."""
    resumed = root / "resumed"
    resumed.mkdir()
    start = resumed / "start.ckpt"
    shutil.copy(checkpoint, start)
    _fit(resumed, corpus, STEPS, f"--ckpt_path={start}")
    return {tag: scalars(resumed / "logs", tag) for tag in ("train/loss", "val/loss")}


def _assert_continues(
    first: Path, resumed: dict[str, dict], uninterrupted: dict[str, dict], from_step: int
) -> None:
    losses = {**scalars(first / "logs", "train/loss"), **resumed["train/loss"]}
    assert sorted(resumed["train/loss"]) == list(range(from_step, STEPS))
    assert losses == uninterrupted["train/loss"]  # same values at the same steps, none missing
    for step, value in resumed["val/loss"].items():
        assert uninterrupted["val/loss"][step] == value


def test_resume_from_a_mid_interval_checkpoint(
    tmp_path: Path, corpus: Path, uninterrupted: dict[str, dict]
) -> None:
    # step-6.ckpt is written after step 6, between the validations after steps 4 and 8.
    _fit(tmp_path, corpus, 7, "--last_checkpoint.every_n_train_steps=6")
    resumed = _resume(tmp_path, corpus, tmp_path / "checkpoints" / "step-6.ckpt")
    _assert_continues(tmp_path, resumed, uninterrupted, from_step=6)


def test_resume_from_a_checkpoint_written_at_validation(
    tmp_path: Path, corpus: Path, uninterrupted: dict[str, dict]
) -> None:
    # The run ends at step 8 with a validation; last.ckpt is written right after it.
    _fit(tmp_path, corpus, 8)
    resumed = _resume(tmp_path, corpus, tmp_path / "checkpoints" / "last.ckpt")
    _assert_continues(tmp_path, resumed, uninterrupted, from_step=8)


def test_resume_from_the_end_of_a_shorter_run(
    tmp_path: Path, corpus: Path, uninterrupted: dict[str, dict]
) -> None:
    _fit(tmp_path, corpus, 6)  # last.ckpt is written at max_steps, between validations
    resumed = _resume(tmp_path, corpus, tmp_path / "checkpoints" / "last.ckpt")
    _assert_continues(tmp_path, resumed, uninterrupted, from_step=6)


def test_resume_after_sigterm(tmp_path: Path, corpus: Path, uninterrupted: dict[str, dict]) -> None:
    interrupt = [
        "--trainer.callbacks+=cli_helpers.SendSignal",
        f"--trainer.callbacks.signum={int(signal.SIGTERM)}",
        "--trainer.callbacks.at_step=5",
    ]
    with pytest.raises(SystemExit):
        _fit(tmp_path, corpus, STEPS, *interrupt)
    resumed = _resume(tmp_path, corpus, tmp_path / "checkpoints" / "last.ckpt")
    _assert_continues(tmp_path, resumed, uninterrupted, from_step=5)
