"""The Lightning (and torch) internals llm-torch relies on, each in one function.

Each does something no public API does; ``tests/test_lightning_compat.py`` checks what it
assumes against the installed version, so an upgrade that changes one fails there, by name,
rather than as a wrong logging step or a double-unscaled gradient deep in a run. Tested with
Lightning 2.6 (``pyproject.toml`` asks for 2.5 or newer).
"""

from lightning.pytorch import Trainer
from lightning.pytorch.strategies import ModelParallelStrategy
from torch.optim import Optimizer


def set_logging_step(trainer: Trainer, step: int) -> None:
    """Make Lightning's loggers write at ``step`` from now on.

    Lightning logs ``self.log`` values at its counter of stepped batches
    (``fit_loop.epoch_loop._batches_that_stepped``), which checkpoints restore; there is no
    public setter.
    """
    loop = trainer.fit_loop.epoch_loop
    if loop._batches_that_stepped != step:
        loop._batches_that_stepped = step


def set_data_parallel_size(strategy: ModelParallelStrategy, size: int) -> None:
    """Set the data-parallel mesh size that ``ModelParallelStrategy.setup_environment`` builds.

    The constructor takes it, but the world size is known only once the accelerator connector
    has set ``num_nodes`` and the devices, and the constructor's ``"auto"`` means the number of
    nodes (tensor parallelism within each), not every process.
    """
    strategy._data_parallel_size = size


def optimizer_unscales_itself(optimizer: Optimizer) -> bool:
    """Whether ``GradScaler`` leaves unscaling to the optimizer's ``step`` (fused AdamW, SGD).

    Lightning's mixed-precision plugin unscales every other optimizer before clipping; it decides
    by torch's ``_step_supports_amp_scaling`` flag, so this reads the same flag.
    """
    return bool(getattr(optimizer, "_step_supports_amp_scaling", False))
