"""``llm-torch fit`` asks the device for no value between logged steps.

On a GPU every host read of a device value (``item``, ``tolist``, ``bool``, ``float``, ``cpu``,
``numpy``) waits for the queue to drain, so one per step costs the overlap that keeps the GPU
busy. On CPU nothing waits, but the reads are the same calls: the test counts them while the
whole CLI (every callback, the progress bar, the checkpoints) trains, and allows them only on
steps that log.
"""

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from cli_helpers import REPO, tiny_args, write_corpus
from engine_helpers import HostReads
from lightning.pytorch import Callback, Trainer

#: Tensor methods that hand a value to the host without going through an aten op on CPU.
_HOST_METHODS = ("tolist", "numpy", "cpu")


@pytest.fixture
def host_reads(monkeypatch: pytest.MonkeyPatch) -> Iterator[HostReads]:
    mode = HostReads()
    for name in _HOST_METHODS:
        monkeypatch.setattr(torch.Tensor, name, mode.counting(getattr(torch.Tensor, name)))
    with mode:
        yield mode


class ReadsPerStep(Callback):
    """Host reads from one batch's start to the next, keyed by the optimizer step it made."""

    def __init__(self, reads: HostReads) -> None:
        self.reads = reads
        self.per_step: dict[int, int] = {}
        self._start: int | None = None
        self._step = 0

    def _close(self) -> None:
        if self._start is not None:
            self.per_step[self._step] = self.reads.count - self._start

    def on_train_batch_start(self, trainer: Trainer, *args: Any) -> None:
        """Close the previous batch's count and open this one's."""
        self._close()
        self._start = self.reads.count

    def on_train_batch_end(self, trainer: Trainer, *args: Any) -> None:
        """Note the step this batch completed."""
        self._step = trainer.global_step

    def on_train_end(self, trainer: Trainer, *args: Any) -> None:
        """The last step saves and validates: not counted."""
        self._start = None


def test_the_fit_command_reads_device_values_only_on_logged_steps(
    host_reads: HostReads, tmp_path: Path, one_thread: None
) -> None:
    from llm_torch.cli import cli

    torch.ones(()).tolist()
    float(torch.ones(()))
    assert host_reads.count == 2  # both kinds of read are seen (no vacuous pass)
    per_step = ReadsPerStep(host_reads)
    corpus = write_corpus(tmp_path / "corpus.txt")
    args = [
        "fit",
        f"--config={REPO / 'configs' / 'shakespeare-char.yaml'}",
        *tiny_args(tmp_path, corpus, steps=12),
        "--data.tokenizer=byte",
        "--trainer.log_every_n_steps=4",
        "--trainer.val_check_interval=12",
        "--trainer.gradient_clip_val=1.0",
        "--trainer.enable_progress_bar=true",  # a bar that reads the device would show here
        "--last_checkpoint.every_n_train_steps=12",
    ]
    cli(args, trainer_defaults={"callbacks": [per_step]})
    # Steps 1..11 are closed by the next batch's start; 4 and 8 log, 12 also validates.
    silent = {step: reads for step, reads in per_step.per_step.items() if step % 4}
    assert sorted(per_step.per_step) == list(range(1, 12))
    assert silent == dict.fromkeys(silent, 0), silent
    assert per_step.per_step[4] > 0  # a logged step does read: the counter sees training
