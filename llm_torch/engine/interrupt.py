"""A resumable checkpoint when training is interrupted by Ctrl-C or SIGTERM."""

import logging
import signal
from pathlib import Path
from types import FrameType
from typing import Any

from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import Callback, ModelCheckpoint

from llm_torch.engine.steps import is_boundary

log = logging.getLogger(__name__)


class InterruptCheckpoint(Callback):
    """Leave a resumable ``last.ckpt`` when training is stopped by Ctrl-C or SIGTERM.

    Ctrl-C sets a flag; training stops cleanly at the next optimizer-step boundary (never in the
    middle of gradient accumulation) after saving. SIGTERM is Lightning's: it raises between steps
    on every rank, and the checkpoint is written from ``on_exception``. Either way
    ``--ckpt_path last`` resumes from the interruption point.

    The checkpoint goes to the directory of the first ``ModelCheckpoint`` with ``save_last``, so
    ``last`` resolves to it.
    """

    def __init__(self) -> None:
        self._interrupted = False
        self._previous_handler: Any = None

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Install the Ctrl-C handler (only the main thread may install signal handlers)."""
        try:
            self._previous_handler = signal.signal(signal.SIGINT, self._on_sigint)
        except ValueError:  # not the main thread: leave Ctrl-C to Lightning
            self._previous_handler = None

    def _on_sigint(self, signum: int, frame: FrameType | None) -> None:
        log.warning(
            "Interrupted: saving a checkpoint at the end of this step (Ctrl-C again aborts)."
        )
        self._interrupted = True
        signal.signal(signal.SIGINT, self._previous_handler or signal.default_int_handler)

    def on_train_batch_end(self, trainer: Trainer, *args: Any) -> None:
        """Save and stop once an interrupted run reaches an optimizer-step boundary.

        ``args`` are Lightning's ``(pl_module, outputs, batch, batch_idx)``.
        """
        batch_idx: int = args[-1]
        if self._interrupted and is_boundary(batch_idx + 1, trainer.accumulate_grad_batches):
            self._save(trainer)
            trainer.should_stop = True

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Restore the previous Ctrl-C handler."""
        if self._previous_handler is not None:
            signal.signal(signal.SIGINT, self._previous_handler)
            self._previous_handler = None

    def on_exception(
        self, trainer: Trainer, pl_module: LightningModule, exception: BaseException
    ) -> None:
        """On SIGTERM (raised by Lightning between steps), save before exiting."""
        if getattr(trainer, "received_sigterm", False):
            self._save(trainer)

    @staticmethod
    def _save(trainer: Trainer) -> None:
        dirpath = next(
            (
                cb.dirpath
                for cb in trainer.checkpoint_callbacks
                if isinstance(cb, ModelCheckpoint) and cb.save_last and cb.dirpath
            ),
            None,
        )
        if dirpath is None:
            log.warning("No ModelCheckpoint(save_last=True) is configured: nothing saved.")
            return
        path = Path(dirpath) / f"{ModelCheckpoint.CHECKPOINT_NAME_LAST}.ckpt"
        trainer.save_checkpoint(path)
        log.warning("Saved %s at step %d; resume with --ckpt_path last.", path, trainer.global_step)
