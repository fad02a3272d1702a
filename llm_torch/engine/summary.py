"""``ModelSummary``: Lightning's layer table with the model's FLOPs per token, not zeros."""

from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import ModelSummary as LightningModelSummary
from lightning.pytorch.utilities import rank_zero_info
from lightning.pytorch.utilities.model_summary.model_summary import (
    _format_summary_table,
    get_human_readable_count,
    summarize,
)

from llm_torch.engine.module import CausalLMModule


class ModelSummary(LightningModelSummary):
    """The layer table Lightning prints at the start of ``fit``, without its FLOPs column.

    Lightning counts FLOPs by running a declared example input, which would cost a forward pass
    of a model that may not fit one device unsharded; without one, its column and total read 0.
    The table ends instead with the architecture's training FLOPs per token
    (``flops_per_token``), the numerator of MFU.

    Args:
        max_depth: Depth of submodules listed (Lightning's meaning).
    """

    def __init__(self, max_depth: int = 1) -> None:
        super().__init__(max_depth=max_depth)

    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Print the table on rank zero."""
        if not self._max_depth:
            return
        summary = summarize(pl_module, max_depth=self._max_depth)
        columns = [column for column in summary._get_summary_data() if column[0] != "FLOPs"]
        if not trainer.is_global_zero:
            return
        table = _format_summary_table(
            summary.total_parameters,
            summary.trainable_parameters,
            summary.model_size,
            summary.total_training_modes,
            0,
            *columns,
        )
        table = table.rsplit("\n", 1)[0]  # Lightning's "Total Flops" line
        model = pl_module.model if isinstance(pl_module, CausalLMModule) else None
        if model is not None:
            flops = get_human_readable_count(model.flops_per_token())
            table += f"\n{flops:<10}Training FLOPs per token (forward + backward, at block_size)"
        rank_zero_info("\n" + table)  # Lightning's console logger, as its own summary
