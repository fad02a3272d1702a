"""``TrainingMonitor``: the training scalars, read from the device once per logged step."""

import logging
import resource
import sys
import time
from collections import deque
from typing import Any

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from torch import Tensor
from torch.optim import Optimizer

from llm_torch.engine.flops import peak_flops
from llm_torch.engine.module import CausalLMModule
from llm_torch.engine.steps import is_boundary

log = logging.getLogger(__name__)


class TrainingMonitor(Callback):
    """Log loss, gradient norm, learning rate, tokens/s, MFU and peak memory without stalls.

    A GPU runs asynchronously: every read of a device value on the host (``float(loss)``,
    ``self.log`` of a Python number, a progress-bar refresh) makes the host wait for the device
    and then leaves the device idle while the host prepares the next step. So between logged
    steps nothing is read: each micro-batch's loss is added to a device tensor, and once per
    logged optimizer step (every ``trainer.log_every_n_steps``) the loss and the gradient norm
    are read together, in one transfer. ``train/loss`` is the mean over the step's micro-batches
    (the same number in TensorBoard and in :class:`~llm_torch.engine.progress.StepProgressBar`).

    Throughput uses the host clock over a sliding window of optimizer steps: the host runs ahead
    of the device by at most a few steps, so over a window the rate is the device's. MFU is model
    FLOPs per second (the architecture's ``flops_per_token``) over the peak of all devices: on
    GPU the dense bf16 datasheet peak, on CPU a measured matmul rate, or the configured
    ``peak_flops``. Peak memory is the CUDA allocator's peak, or the process's peak resident set
    on CPU.

    Args:
        window: Number of recent optimizer steps the rates average over.
        peak_flops: Per-device peak FLOP/s; ``None`` looks it up (GPU) or measures it (CPU).
    """

    def __init__(self, window: int = 20, peak_flops: float | None = None) -> None:
        self.window = window
        self.peak_flops = peak_flops
        self._peak: float | None = None
        self._history: deque[tuple[float, int]] = deque(maxlen=window + 1)
        self._tokens = 0
        self._loss_sum: Tensor | None = None
        self._lr = 0.0
        self._flops_per_token: dict[int, int] = {}  # by sequence length, computed once each
        #: What the progress bar shows of the last logged step.
        self.progress: dict[str, float] = {}

    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Resolve the peak FLOP/s of this device once."""
        self._peak = peak_flops(pl_module.device, self.peak_flops)
        if self._peak is None:
            log.warning(
                "MFU is not logged: the peak FLOP/s of %s is unknown. Set it with "
                "--speed.peak_flops (FLOP/s per device).",
                pl_module.device,
            )

    def on_before_optimizer_step(
        self, trainer: Trainer, pl_module: LightningModule, optimizer: Optimizer
    ) -> None:
        """Note the learning rate this step uses (a host value; the scheduler steps after)."""
        self._lr = float(optimizer.param_groups[0]["lr"])

    def on_train_batch_end(
        self,
        trainer: Trainer,
        pl_module: LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        """Count tokens; on logged steps, sum the loss and log once the step is complete."""
        self._tokens += batch[0].numel() * trainer.world_size
        step_done = is_boundary(batch_idx + 1, trainer.accumulate_grad_batches)
        step = trainer.global_step - 1 if step_done else trainer.global_step  # 0-based, as logged
        every = int(getattr(trainer, "log_every_n_steps", 1))  # set at run time; 0: never
        logged_step = is_boundary(step + 1, every)  # the step this micro-batch belongs to
        if logged_step and outputs is not None:
            # Lightning returns the loss divided by the accumulation count: the sum is the mean.
            loss = (outputs["loss"] if isinstance(outputs, dict) else outputs).detach()
            self._loss_sum = loss if self._loss_sum is None else self._loss_sum + loss
        if not step_done:
            return
        self._history.append((time.perf_counter(), self._tokens))
        if logged_step and self._loss_sum is not None:
            self._log(trainer, pl_module, step, batch[0].shape[1])

    def _log(self, trainer: Trainer, pl_module: LightningModule, step: int, seq_len: int) -> None:
        """Read the step's loss and gradient norm (one transfer) and write every scalar.

        The loggers are written directly, at the step Lightning's own metrics use: going
        through ``self.log`` would cost a device tensor per value and, for the progress bar,
        a read back per value.
        """
        assert self._loss_sum is not None
        grad_norm = getattr(pl_module, "grad_norm", None)
        if grad_norm is None:
            grad_norm = torch.full_like(self._loss_sum, float("nan"))
        loss, norm = torch.stack([self._loss_sum.float(), grad_norm.float()]).tolist()
        self._loss_sum = None
        metrics = {"train/loss": loss, "lr": self._lr}
        if norm == norm:  # not NaN: a gradient norm was measured
            metrics["train/grad_norm"] = norm
        self.progress = {"loss": loss}
        if len(self._history) > 1:
            (start, first), (end, last) = self._history[0], self._history[-1]
            tokens_per_sec = (last - first) / max(end - start, 1e-9)
            metrics["perf/tokens_per_sec"] = tokens_per_sec
            self.progress["tok/s"] = tokens_per_sec
            model = pl_module.model if isinstance(pl_module, CausalLMModule) else None
            if self._peak and model is not None:
                if seq_len not in self._flops_per_token:
                    self._flops_per_token[seq_len] = model.flops_per_token(seq_len)
                flops = tokens_per_sec * self._flops_per_token[seq_len]
                metrics["perf/mfu"] = flops / (self._peak * trainer.world_size)
        memory = peak_memory_gib(pl_module.device)
        if memory is not None:
            metrics["perf/peak_memory_gib"] = memory
            self.progress["mem GiB"] = memory
        for logger in trainer.loggers:
            logger.log_metrics(metrics, step=step)


def peak_memory_gib(device: torch.device) -> float | None:
    """Peak memory so far in GiB: CUDA's allocator peak, or the process's peak RSS on CPU.

    Both are host-side counters; reading them never waits for the device.
    """
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30
    if device.type == "cpu":
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak / (2**30 if sys.platform == "darwin" else 2**20)  # bytes vs KiB
    return None
