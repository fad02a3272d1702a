"""``StepProgressBar``: training progress in optimizer steps, refreshed on logged steps."""

from typing import Any

from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.callbacks import TQDMProgressBar

from llm_torch.engine.monitor import TrainingMonitor
from llm_torch.engine.steps import is_boundary


class StepProgressBar(TQDMProgressBar):
    """A tqdm bar that counts optimizer steps out of ``max_steps``, with an ETA.

    llm-torch trains on an endless stream, so Lightning's epochs and batch counts mean nothing
    (it would show ``Epoch 0/-2`` and micro-batches). The bar moves only on logged steps (every
    ``trainer.log_every_n_steps``), where :class:`~llm_torch.engine.monitor.TrainingMonitor`
    has just read the loss from the device: refreshing it in between would force a host-device
    sync per micro-batch. Lightning's ``v_num`` is dropped from the numbers shown.
    """

    def on_train_epoch_start(self, trainer: Trainer, *_: Any) -> None:
        """Start (or, after a resume, continue) the bar at the current optimizer step."""
        bar = self.train_progress_bar
        bar.reset(total=trainer.max_steps if trainer.max_steps > 0 else None)
        bar.initial = trainer.global_step  # the ETA counts only this run's steps
        bar.n = trainer.global_step
        bar.set_description("Training")

    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, *_: Any) -> None:
        """Move to the current step on logged steps and at the last one."""
        bar = self.train_progress_bar
        step = trainer.global_step
        if not self.is_enabled or bar is None or bar.disable or step == bar.n:
            return
        every = max(int(getattr(trainer, "log_every_n_steps", 1)), 1)  # set at run time
        if is_boundary(step, every) or step == trainer.max_steps:
            bar.n = step
            bar.set_postfix(self.get_metrics(trainer, pl_module), refresh=False)
            bar.refresh()

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Leave the bar as it is: the step count, not an epoch, is what finished."""

    def get_metrics(
        self, trainer: Trainer, pl_module: LightningModule
    ) -> dict[str, int | str | float | dict[str, float]]:
        """The training monitor's values and the logged ones, without Lightning's ``v_num``."""
        callbacks: list[Callback] = getattr(trainer, "callbacks", [])
        monitor = next((cb for cb in callbacks if isinstance(cb, TrainingMonitor)), None)
        metrics: dict[str, int | str | float | dict[str, float]] = {}
        metrics.update(monitor.progress if monitor else {})
        metrics.update(super().get_metrics(trainer, pl_module))
        metrics.pop("v_num", None)
        return metrics
