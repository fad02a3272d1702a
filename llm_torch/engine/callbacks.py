"""Training callbacks: text samples, checkpoints on interruption, batch sizes, predictions."""

import json
import logging
import signal
from collections.abc import Sequence
from pathlib import Path
from types import FrameType
from typing import Any

import torch
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import BasePredictionWriter, Callback, ModelCheckpoint
from lightning.pytorch.loggers import TensorBoardLogger

from llm_torch.architectures.registry import Model
from llm_torch.engine.module import CausalLMModule
from llm_torch.generation import generate

log = logging.getLogger(__name__)


def _model(pl_module: LightningModule) -> Model:
    """The architecture inside a ``CausalLMModule``."""
    if not isinstance(pl_module, CausalLMModule):
        raise TypeError(f"llm-torch callbacks expect a CausalLMModule, got {type(pl_module)}.")
    return pl_module.net


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
        # Eager: one-token decode steps would recompile the training graph of compiled blocks.
        with torch.compiler.set_stance("force_eager"):
            ids = generate(
                model,
                torch.tensor([prompt], device=pl_module.device),
                self.max_new_tokens,
                temperature=self.temperature,
                top_k=self.top_k,
                seed=self.seed,
                # The cache holds at most block_size tokens; longer samples slide the context.
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
