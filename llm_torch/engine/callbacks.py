"""Training callbacks: throughput and MFU, text samples, and checkpoints on interruption."""

import json
import logging
import signal
import time
from collections import deque
from collections.abc import Sequence
from pathlib import Path
from types import FrameType
from typing import Any

import torch
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import BasePredictionWriter, Callback, ModelCheckpoint
from lightning.pytorch.loggers import TensorBoardLogger

from llm_torch.architectures.registry import Model
from llm_torch.engine.flops import peak_flops
from llm_torch.generation import generate

log = logging.getLogger(__name__)


def _model(pl_module: LightningModule) -> Model:
    """The architecture inside a ``CausalLMModule``."""
    from llm_torch.engine.module import CausalLMModule  # the module imports this file

    if not isinstance(pl_module, CausalLMModule):
        raise TypeError(f"llm-torch callbacks expect a CausalLMModule, got {type(pl_module)}.")
    return pl_module.net


class SpeedMonitor(Callback):
    """Log tokens per second, MFU and the training loss without per-step host-device syncs.

    Timing uses the host clock over a sliding window of steps: the host runs ahead of an
    asynchronous GPU by at most a few steps, so over a window the rate is the device's. Token
    counts come from batch shapes, which live on the host. The loss shown in the progress bar is
    read from the device only every ``log_every_n_steps`` steps, when Lightning syncs to write
    its logs anyway.

    MFU is model FLOPs per second (the architecture's ``flops_per_token``) over the peak of all
    devices: on GPU the dense bf16 datasheet peak, on CPU a measured matmul rate, or the
    configured ``peak_flops``.

    Args:
        window: Number of recent steps the rates average over.
        peak_flops: Per-device peak FLOP/s; ``None`` looks it up (GPU) or measures it (CPU).
    """

    def __init__(self, window: int = 20, peak_flops: float | None = None) -> None:
        self.window = window
        self.peak_flops = peak_flops
        self._peak: float | None = None
        self._history: deque[tuple[float, int]] = deque(maxlen=window + 1)
        self._tokens = 0
        self._loss: float | None = None
        self._flops_per_token: dict[int, int] = {}  # by sequence length, computed once each

    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Resolve the peak FLOP/s of this device once."""
        self._peak = peak_flops(pl_module.device, self.peak_flops)
        if self._peak is None:
            log.warning(
                "MFU is not logged: the peak FLOP/s of %s is unknown. Set it with "
                "--speed.peak_flops (FLOP/s per device).",
                pl_module.device,
            )

    def on_train_batch_end(
        self,
        trainer: Trainer,
        pl_module: LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        """Update the window and log the rates (plain floats: logging them costs no sync)."""
        inputs = batch[0]
        self._tokens += inputs.numel() * trainer.world_size
        self._history.append((time.perf_counter(), self._tokens))
        metrics: dict[str, float] = {}
        if len(self._history) > 1:
            (start, first), (end, last) = self._history[0], self._history[-1]
            tokens_per_sec = (last - first) / max(end - start, 1e-9)
            metrics["perf/tokens_per_sec"] = tokens_per_sec
            if self._peak:
                seq_len = inputs.shape[1]
                if seq_len not in self._flops_per_token:
                    self._flops_per_token[seq_len] = _model(pl_module).flops_per_token(seq_len)
                flops = self._flops_per_token[seq_len]
                metrics["perf/mfu"] = tokens_per_sec * flops / (self._peak * trainer.world_size)
        # Read the loss once per logged optimizer step, not per micro-batch of accumulation.
        step_done = (batch_idx + 1) % trainer.accumulate_grad_batches == 0
        logged_step = trainer.global_step % self._log_every(trainer) == 0
        if step_done and logged_step and outputs is not None:
            loss = outputs["loss"] if isinstance(outputs, dict) else outputs
            self._loss = float(loss)
        if metrics:
            pl_module.log_dict(metrics, on_step=True, on_epoch=False)
            pl_module.log("tok/s", metrics["perf/tokens_per_sec"], prog_bar=True, logger=False)
        if self._loss is not None:
            pl_module.log("loss", self._loss, prog_bar=True, logger=False)

    @staticmethod
    def _log_every(trainer: Trainer) -> int:
        """Lightning's logging cadence (set on the trainer at run time, hence ``getattr``)."""
        return max(int(getattr(trainer, "log_every_n_steps", 1)), 1)


class TextSampleLogger(Callback):
    """Write a short generated sample to TensorBoard's text tab after each validation.

    Reading what the model writes is the quickest sanity check of a run. Sampling uses a private
    RNG, so it does not change the training trajectory.

    Args:
        prompt: Text to continue; empty starts from the end-of-text token.
        max_new_tokens: Length of the sample in tokens.
        temperature: Sampling temperature (0: greedy).
        top_k: Sample among the ``top_k`` most likely tokens.
        seed: Seed of the sampling RNG.
    """

    def __init__(
        self,
        prompt: str = "",
        max_new_tokens: int = 200,
        temperature: float = 0.8,
        top_k: int | None = 200,
        seed: int = 0,
    ) -> None:
        self.prompt = prompt
        self.max_new_tokens = max_new_tokens
        self.temperature = temperature
        self.top_k = top_k
        self.seed = seed

    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Generate on every rank (sharded models need all of them), write on rank zero."""
        tokenizer = getattr(getattr(trainer, "datamodule", None), "tokenizer", None)
        if trainer.sanity_checking or tokenizer is None:
            return
        prompt = tokenizer.encode(self.prompt) if self.prompt else [tokenizer.eot_id]
        model = _model(pl_module)
        was_training = model.training
        model.eval()
        ids = generate(
            model,
            torch.tensor([prompt], device=pl_module.device),
            self.max_new_tokens,
            temperature=self.temperature,
            top_k=self.top_k,
            seed=self.seed,
            # The cache holds at most block_size tokens; longer samples slide the context instead.
            use_cache=len(prompt) + self.max_new_tokens <= model.config.block_size,
        )
        model.train(was_training)
        if trainer.is_global_zero:
            text = tokenizer.decode(ids[0])
            # Indented lines render as preformatted text: keeps line breaks and stage layout.
            markdown = "\n".join("    " + line for line in text.splitlines())
            for logger in trainer.loggers:
                if isinstance(logger, TensorBoardLogger):
                    logger.experiment.add_text("samples", markdown, trainer.global_step)


class InterruptCheckpoint(Callback):
    """Leave a resumable ``last.ckpt`` when training is stopped by Ctrl-C or SIGTERM.

    Ctrl-C sets a flag; training stops cleanly at the next optimizer-step boundary (never in the
    middle of gradient accumulation) after saving. SIGTERM is Lightning's: it raises between steps
    on every rank, and the checkpoint is written from ``on_exception``. Either way
    ``--ckpt_path last`` resumes from the interruption point.

    The checkpoint goes to the directory of the first ``ModelCheckpoint`` with ``save_last``, so
    ``last`` resolves to it.
    """

    def __init__(self) -> None:
        self._interrupted = False
        self._previous_handler: Any = None

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Install the Ctrl-C handler (only the main thread may install signal handlers)."""
        try:
            self._previous_handler = signal.signal(signal.SIGINT, self._on_sigint)
        except ValueError:  # not the main thread: leave Ctrl-C to Lightning
            self._previous_handler = None

    def _on_sigint(self, signum: int, frame: FrameType | None) -> None:
        log.warning(
            "Interrupted: saving a checkpoint at the end of this step (Ctrl-C again aborts)."
        )
        self._interrupted = True
        signal.signal(signal.SIGINT, self._previous_handler or signal.default_int_handler)

    def on_train_batch_end(
        self,
        trainer: Trainer,
        pl_module: LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        """Save and stop once an interrupted run reaches an optimizer-step boundary."""
        if self._interrupted and (batch_idx + 1) % trainer.accumulate_grad_batches == 0:
            self._save(trainer)
            trainer.should_stop = True

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Restore the previous Ctrl-C handler."""
        if self._previous_handler is not None:
            signal.signal(signal.SIGINT, self._previous_handler)
            self._previous_handler = None

    def on_exception(
        self, trainer: Trainer, pl_module: LightningModule, exception: BaseException
    ) -> None:
        """On SIGTERM (raised by Lightning between steps), save before exiting."""
        if getattr(trainer, "received_sigterm", False):
            self._save(trainer)

    @staticmethod
    def _save(trainer: Trainer) -> None:
        dirpath = next(
            (
                cb.dirpath
                for cb in trainer.checkpoint_callbacks
                if isinstance(cb, ModelCheckpoint) and cb.save_last and cb.dirpath
            ),
            None,
        )
        if dirpath is None:
            log.warning("No ModelCheckpoint(save_last=True) is configured: nothing saved.")
            return
        path = Path(dirpath) / f"{ModelCheckpoint.CHECKPOINT_NAME_LAST}.ckpt"
        trainer.save_checkpoint(path)
        log.warning("Saved %s at step %d; resume with --ckpt_path last.", path, trainer.global_step)


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


class JSONLPredictionWriter(BasePredictionWriter):
    """Write ``llm-torch predict`` generations as JSON Lines: prompt, completion, index.

    Each rank writes its own file when there are several (``name.rank1.jsonl``, ...), since ranks
    predict different prompts.

    Args:
        output: Path of the JSON Lines file.
    """

    def __init__(self, output: str = "predictions.jsonl") -> None:
        super().__init__(write_interval="batch")
        self.output = output

    def _path(self, trainer: Trainer) -> Path:
        path = Path(self.output)
        if trainer.world_size > 1:
            path = path.with_suffix(f".rank{trainer.global_rank}{path.suffix}")
        return path

    def on_predict_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Start an empty file, so reruns do not append to old results."""
        path = self._path(trainer)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("", encoding="utf-8")

    def write_on_batch_end(
        self,
        trainer: Trainer,
        pl_module: LightningModule,
        prediction: Any,
        batch_indices: Sequence[int] | None,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int,
    ) -> None:
        """Append one line per prompt of the batch."""
        tokenizer = getattr(getattr(trainer, "datamodule", None), "tokenizer", None)
        if tokenizer is None:
            raise ValueError("Writing predictions needs the data module's tokenizer.")
        with self._path(trainer).open("a", encoding="utf-8") as file:
            for index, prompt, new_ids in prediction:
                completion = tokenizer.decode(new_ids)
                record = {"index": index, "prompt": prompt, "completion": completion}
                file.write(json.dumps(record, ensure_ascii=False) + "\n")
