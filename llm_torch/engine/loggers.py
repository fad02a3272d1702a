"""``TensorBoardLogger`` without the two placeholder scalars Lightning adds."""

from collections.abc import Mapping
from typing import Any

from lightning.pytorch.loggers import TensorBoardLogger


class TensorBoard(TensorBoardLogger):
    """TensorBoard logs holding only what llm-torch logs.

    Lightning's logger writes an ``hp_metric`` of -1 at the start and an ``epoch`` scalar with
    every step (always 0 on an endless stream); they sort first in TensorBoard's page, above
    ``train/loss``. Both are left out.

    Args:
        *args: As ``TensorBoardLogger``.
        **kwargs: As ``TensorBoardLogger``; ``default_hp_metric`` defaults to ``False``.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("default_hp_metric", False)
        super().__init__(*args, **kwargs)

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        """Write ``metrics`` at ``step``, without Lightning's ``epoch``."""
        super().log_metrics({k: v for k, v in metrics.items() if k != "epoch"}, step)
