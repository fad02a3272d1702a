"""What ``llm_torch.engine.lightning_compat`` assumes of Lightning, checked on the installed one.

An upgrade that changes one of these fails here, by name. Tested with Lightning 2.6; each test
exercises the assumption through Lightning's own code path (its loggers, its strategy's mesh,
its mixed-precision plugin's decision), not the attribute alone.
"""

from typing import Any

import lightning
import pytest
import torch
from engine_helpers import Recorder
from lightning.fabric.plugins.precision.amp import _optimizer_handles_unscaling
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.strategies import ParallelStrategy, model_parallel
from torch import Tensor, nn
from torch.utils.data import DataLoader, TensorDataset

from llm_torch.engine.lightning_compat import (
    optimizer_unscales_itself,
    set_data_parallel_size,
    set_logging_step,
)
from llm_torch.engine.optim import OptimizerChain
from llm_torch.engine.strategy import FSDPStrategy


def test_the_installed_lightning_is_a_tested_one() -> None:
    major, minor = (int(part) for part in lightning.__version__.split(".")[:2])
    assert (major, minor) >= (2, 5), lightning.__version__  # pyproject's lower bound


class _Shifted(LightningModule):
    """Logs one value per step, after moving Lightning's logging step to ``100 + step``."""

    def __init__(self) -> None:
        super().__init__()
        self.layer = nn.Linear(2, 1)

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        set_logging_step(self.trainer, 100 + self.trainer.global_step)

    def training_step(self, batch: list[Tensor], batch_idx: int) -> Tensor:
        loss = self.layer(batch[0]).square().mean()
        self.log("x", loss)
        return loss

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.1)


def test_set_logging_step_moves_the_step_lightning_logs_at() -> None:
    logger = Recorder()
    trainer = Trainer(
        max_steps=3,
        logger=logger,
        log_every_n_steps=1,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        accelerator="cpu",
    )
    data = DataLoader(TensorDataset(torch.ones(8, 2)), batch_size=2)
    trainer.fit(_Shifted(), data)
    assert [step for step, metrics in logger.steps.items() if "x" in metrics] == [100, 101, 102]
    # ...and it is the counter a checkpoint saves and restores.
    saved = trainer.fit_loop.state_dict()["epoch_loop.state_dict"]
    assert saved["_batches_that_stepped"] == 103


def test_set_data_parallel_size_sizes_lightnings_device_mesh(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    meshes: list[tuple[Any, Any]] = []

    def fake_mesh(data: Any, tensor: Any, world_size: int, device: torch.device) -> str:
        meshes.append((data, tensor))
        return "mesh"

    # The rest of setup_environment starts processes; only the mesh sizes matter here.
    monkeypatch.setattr(model_parallel, "_setup_device_mesh", fake_mesh)
    monkeypatch.setattr(model_parallel.ModelParallelStrategy, "_setup_distributed", lambda _: None)
    monkeypatch.setattr(ParallelStrategy, "setup_environment", lambda _: None)
    strategy = model_parallel.ModelParallelStrategy(tensor_parallel_size=1)
    fsdp = FSDPStrategy()  # 2 nodes of 3 devices: a mesh of 6 x 1
    for each in (strategy, fsdp):
        each.num_nodes = 2
        each.parallel_devices = [torch.device("cpu")] * 3
        each.connect(LightningModule())
    set_data_parallel_size(strategy, 5)
    strategy.setup_environment()
    fsdp.setup_environment()
    assert meshes == [(5, 1), (6, 1)]


def test_optimizer_unscales_itself_agrees_with_lightnings_precision_plugin() -> None:
    """Lightning unscales, before clipping, exactly the optimizers this says do not."""
    params = [nn.Parameter(torch.ones(3))]
    fused = torch.optim.AdamW(params, fused=True)
    plain = torch.optim.AdamW(params)
    chain = OptimizerChain(torch.optim.AdamW([nn.Parameter(torch.ones(2))], fused=True))
    for optimizer, expected in [(fused, True), (plain, False), (chain, False)]:
        assert optimizer_unscales_itself(optimizer) is expected
        assert _optimizer_handles_unscaling(optimizer) is expected
