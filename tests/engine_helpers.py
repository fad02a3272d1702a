"""Shared pieces of the engine tests."""

from collections.abc import Callable
from typing import Any

import torch
from lightning.pytorch.loggers import Logger
from torch.utils._python_dispatch import TorchDispatchMode


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


class HostReads(TorchDispatchMode):
    """Counts host reads: scalar reads (``item``, ``bool``, ``float``) and host-copy methods."""

    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        if func is torch.ops.aten._local_scalar_dense.default:
            self.count += 1
        return func(*args, **(kwargs or {}))

    def counting(self, method: Callable[..., Any]) -> Callable[..., Any]:
        """``method``, counted."""

        def counted(tensor: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
            self.count += 1
            return method(tensor, *args, **kwargs)

        return counted
