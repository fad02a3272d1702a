"""``FSDPStrategy``: FSDP2 sharding over every device via Lightning's ModelParallelStrategy."""

from typing import Any

from lightning.pytorch.strategies import ModelParallelStrategy

from llm_torch.engine.lightning_compat import set_data_parallel_size


class FSDPStrategy(ModelParallelStrategy):
    """Shard parameters, gradients and optimizer state over all devices with FSDP2.

    Lightning's ``ModelParallelStrategy`` defaults to tensor parallelism within a node
    (``tensor_parallel_size="auto"``), which llm-torch does not implement. This subclass fixes
    the mesh to pure data parallelism: ``data_parallel_size`` = every process on every node,
    ``tensor_parallel_size`` = 1. :meth:`CausalLMModule.configure_model` then applies
    ``fully_shard`` per transformer block and to the root. It runs on CPU (gloo) as on GPU (NCCL),
    single- or multi-node (torchrun or SLURM, like any Lightning strategy).

    Args:
        **kwargs: Passed to ``ModelParallelStrategy`` (e.g. ``save_distributed_checkpoint``).
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(data_parallel_size="auto", tensor_parallel_size=1, **kwargs)

    def setup_environment(self) -> None:
        """Size the data-parallel mesh dimension to the whole world before the mesh is built."""
        set_data_parallel_size(self, self.num_nodes * self.num_processes)
        super().setup_environment()
