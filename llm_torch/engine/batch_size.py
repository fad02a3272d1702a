"""Gradient accumulation derived from a global batch size, whatever the number of devices."""

from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import Callback


class GlobalBatchSize(Callback):
    """Derive gradient accumulation from a global batch size, whatever the number of devices.

    ``global_batch_size = batch_size x devices x nodes x accumulate_grad_batches``; fixing the
    global batch (as papers report it) keeps a recipe's optimisation the same on 1 or 64 GPUs.

    Args:
        global_batch_size: Sequences per optimizer step over all devices; ``None`` leaves
            ``trainer.accumulate_grad_batches`` as configured.
    """

    def __init__(self, global_batch_size: int | None = None) -> None:
        if global_batch_size is not None and global_batch_size <= 0:
            raise ValueError(f"global_batch_size must be positive, got {global_batch_size}.")
        self.global_batch_size = global_batch_size

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        """Set ``trainer.accumulate_grad_batches`` once the world size is known."""
        if self.global_batch_size is None or stage != "fit":
            return
        micro = getattr(getattr(trainer, "datamodule", None), "batch_size", None)
        if micro is None:
            raise ValueError("global_batch_size needs a data module with a batch_size.")
        per_step = micro * trainer.world_size
        if self.global_batch_size % per_step:
            raise ValueError(
                f"global_batch_size {self.global_batch_size} is not a multiple of data.batch_size "
                f"{micro} x {trainer.world_size} device(s) = {per_step}. Choose a multiple of "
                f"{per_step}, or change data.batch_size or the number of devices."
            )
        trainer.accumulate_grad_batches = self.global_batch_size // per_step
