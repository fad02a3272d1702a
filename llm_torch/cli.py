"""The ``llm-torch`` command: ``fit``, ``validate``, ``test`` and ``predict`` from one YAML.

``predict`` continues the prompts of ``--data.prompts_file`` and writes JSON Lines to
``--writer.output``.

``generate`` and ``export`` need no YAML; they live in :mod:`llm_torch.commands`.

A ``LightningCLI`` over :class:`CausalLMModule` and :class:`TextDataModule`. The defaults that
every LLM run wants live here rather than in each config: step-based training with periodic
validation, a best-by-``val/loss`` checkpoint plus a resumable ``last.ckpt`` in a fixed folder
(so ``--ckpt_path last`` finds it), throughput/MFU logging, text samples, and a checkpoint on
Ctrl-C or SIGTERM.
"""

import os
import sys
import zipfile
from pathlib import Path
from typing import Any

from lightning.pytorch import Callback, Trainer
from lightning.pytorch.callbacks import ModelCheckpoint, ProgressBar
from lightning.pytorch.cli import ArgsType, LightningArgumentParser, LightningCLI

from llm_torch.data import TextDataModule
from llm_torch.engine.callbacks import (
    GlobalBatchSize,
    InterruptCheckpoint,
    JSONLPredictionWriter,
    TextSampleLogger,
)
from llm_torch.engine.checkpoint import CheckpointError
from llm_torch.engine.loggers import TensorBoard
from llm_torch.engine.module import CausalLMModule
from llm_torch.engine.monitor import TrainingMonitor
from llm_torch.engine.progress import StepProgressBar


class LLMCLI(LightningCLI):
    """LightningCLI with llm-torch's links and defaults."""

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        """Link the vocabulary from data to model and add the always-on callbacks."""
        parser.link_arguments("data.vocab_size", "model.vocab_size", apply_on="instantiate")

        parser.add_lightning_class_args(ModelCheckpoint, "checkpoint")
        parser.add_lightning_class_args(ModelCheckpoint, "last_checkpoint")
        parser.link_arguments("checkpoint.dirpath", "last_checkpoint.dirpath")
        parser.add_lightning_class_args(TrainingMonitor, "speed")
        parser.add_lightning_class_args(TextSampleLogger, "sample")
        parser.add_lightning_class_args(InterruptCheckpoint, "interrupt")
        parser.add_lightning_class_args(GlobalBatchSize, "batch")
        parser.add_lightning_class_args(JSONLPredictionWriter, "writer")
        parser.set_defaults(
            {
                # Best model by validation loss.
                "checkpoint.dirpath": "checkpoints",
                "checkpoint.filename": "best",
                "checkpoint.monitor": "val/loss",
                "checkpoint.mode": "min",
                "checkpoint.save_top_k": 1,
                "checkpoint.auto_insert_metric_name": False,
                # The resume point: every N optimizer steps, plus last.ckpt.
                "last_checkpoint.filename": "step-{step}",
                "last_checkpoint.auto_insert_metric_name": False,
                "last_checkpoint.monitor": None,
                "last_checkpoint.save_top_k": 1,
                "last_checkpoint.save_last": True,
                "last_checkpoint.every_n_train_steps": 500,
                # Training is counted in steps: the training loader is an endless stream.
                "trainer.max_steps": 5000,
                "trainer.val_check_interval": 250,
                "trainer.check_val_every_n_epoch": None,
                "trainer.limit_val_batches": 50,
                "trainer.log_every_n_steps": 10,
            }
        )

    def parse_arguments(self, parser: LightningArgumentParser, args: ArgsType) -> None:
        """Parse, then vet ``--ckpt_path`` before Lightning reads hyperparameters from it."""
        super().parse_arguments(parser, args)
        subcommand = self.config.get("subcommand")
        ckpt_path = self.config[subcommand].get("ckpt_path") if subcommand else None
        special = ckpt_path in ("last", "best", "hpc") or str(ckpt_path).startswith("registry")
        if ckpt_path and not special:
            _check_checkpoint_file(Path(ckpt_path))

    def _instantiate_trainer(self, config: dict[str, Any], callbacks: list[Callback]) -> Trainer:
        """Default to a step-counting progress bar and a TensorBoard log without placeholders.

        Both stand in for Lightning's defaults only where the config keeps those defaults: an
        explicit logger, a progress bar in ``trainer.callbacks`` or ``enable_progress_bar:
        false`` win.
        """
        if config.get("logger") in (None, True):
            save_dir = config.get("default_root_dir") or os.getcwd()
            config["logger"] = TensorBoard(save_dir=save_dir)
        configured = config.get("callbacks") or []
        configured = [*(configured if isinstance(configured, list) else [configured]), *callbacks]
        has_bar = any(isinstance(callback, ProgressBar) for callback in configured)
        if config.get("enable_progress_bar") is not False and not has_bar:
            callbacks = [*callbacks, StepProgressBar()]
        return super()._instantiate_trainer(config, callbacks)


def _check_checkpoint_file(path: Path) -> None:
    """Raise a clear error for a missing or truncated checkpoint file.

    Reading a zip's central directory (at the end of the file) is cheap and fails on truncation,
    where ``torch.load`` would fail later with a bare traceback.
    """
    if not path.exists():
        raise FileNotFoundError(
            f"--ckpt_path {str(path)!r} does not exist. Pass a checkpoint written by fit "
            "(e.g. checkpoints/<run>/last.ckpt), or 'last' to resume from the newest "
            "last.ckpt in --checkpoint.dirpath."
        )
    if path.is_file():
        try:
            zipfile.ZipFile(path).close()
        except zipfile.BadZipFile:
            raise CheckpointError(
                f"--ckpt_path {str(path)!r} is truncated or corrupt (not a complete PyTorch "
                "checkpoint). Use another checkpoint, e.g. step-N.ckpt or best.ckpt."
            ) from None


def cli(args: list[str] | None = None, **kwargs: Any) -> LLMCLI:
    """Parse ``args`` (default: the command line), then run the subcommand; returns the CLI.

    ``kwargs`` go to ``LightningCLI`` (e.g. ``trainer_defaults`` with extra callbacks).
    """
    return LLMCLI(
        CausalLMModule,
        TextDataModule,
        seed_everything_default=1337,
        save_config_kwargs={"overwrite": True},
        args=args,
        **kwargs,
    )


def main() -> None:
    """Entry point of the ``llm-torch`` console script."""
    from llm_torch.commands import run_command

    if not run_command(sys.argv[1:]):
        cli()


if __name__ == "__main__":
    main()
