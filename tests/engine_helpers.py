"""Shared pieces of the engine tests."""

from typing import Any

from lightning.pytorch.loggers import Logger


class Recorder(Logger):
    """A logger that keeps what it is given: ``{step: {name: value}}``."""

    def __init__(self) -> None:
        super().__init__()
        self.steps: dict[int, dict[str, float]] = {}

    @property
    def name(self) -> str:
        """Lightning's name of the logger."""
        return "recorder"

    @property
    def version(self) -> int:
        """Lightning's version of the run."""
        return 0

    def log_hyperparams(self, params: Any, *args: Any, **kwargs: Any) -> None:
        """Hyperparameters are not recorded."""

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        """Keep ``metrics`` under ``step``."""
        assert step is not None
        self.steps.setdefault(step, {}).update(metrics)
