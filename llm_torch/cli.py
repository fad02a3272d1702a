"""The ``llm-torch`` command: ``fit``, ``validate``, ``test`` and ``predict`` from one YAML.

``predict`` continues the prompts of ``--data.prompts_file`` and writes JSON Lines to
``--writer.output``.

``generate``, ``export``, ``evaluate`` and ``train-tokenizer`` need no YAML: :func:`main`
dispatches them to their own modules (see :data:`COMMANDS`), everything else to LightningCLI.

A ``LightningCLI`` over :class:`CausalLMModule` and :class:`TextDataModule`. The defaults that
every LLM run wants live here rather than in each config: step-based training with periodic
validation, a best-by-``val/loss`` checkpoint plus a resumable ``last.ckpt`` in a fixed folder
(so ``--ckpt_path last`` finds it), throughput/MFU logging, text samples, and a checkpoint on
Ctrl-C or SIGTERM.
"""

import importlib
import logging
import os
import re
import sys
import traceback
import warnings
import zipfile
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any, NoReturn

from jsonargparse import Namespace, set_parsing_settings
from lightning.pytorch import Callback, Trainer
from lightning.pytorch.callbacks import ModelCheckpoint, ProgressBar
from lightning.pytorch.callbacks import ModelSummary as LightningModelSummary
from lightning.pytorch.cli import ArgsType, LightningArgumentParser, LightningCLI
from lightning.pytorch.utilities import rank_zero_warn

from llm_torch.architectures import DecoderConfig, GPTConfig
from llm_torch.data import TextDataModule
from llm_torch.engine.batch_size import GlobalBatchSize
from llm_torch.engine.checkpoint import CheckpointError, read_checkpoint, saved_architecture
from llm_torch.engine.interrupt import InterruptCheckpoint
from llm_torch.engine.loggers import TensorBoard
from llm_torch.engine.module import CausalLMModule
from llm_torch.engine.monitor import TrainingMonitor
from llm_torch.engine.predictions import JSONLPredictionWriter
from llm_torch.engine.progress import StepProgressBar
from llm_torch.engine.samples import TextSampleLogger
from llm_torch.engine.summary import ModelSummary
from llm_torch.evaluation.command import evaluate_command
from llm_torch.evaluation.multiple_choice import MultipleChoiceEval
from llm_torch.generate_command import generate_command
from llm_torch.interop.command import export_command
from llm_torch.tokenizer.base import TokenizerUnavailableError
from llm_torch.tokenizer.command import train_tokenizer_command

# `--model.arch` is any DecoderConfig subclass, named by class_path. Without this, jsonargparse
# reads a dataclass type as its own fields only, and a union of the architectures re-picks the
# class on every override (`--model.arch.init_args.n_layer 2` turned a Llama config into GPT's).
set_parsing_settings(subclasses_enabled=[DecoderConfig])


class _Parser(LightningArgumentParser):
    """LightningCLI's parser, with errors that fit on a screen.

    jsonargparse prints the whole usage (over 100 lines) before its message, and tries every
    architecture of ``model.arch`` in turn, repeating one mistake per architecture. The message
    alone, with repeats folded, names the key; ``--help`` still lists every option.
    """

    def error(self, message: str, ex: Exception | None = None) -> NoReturn:
        """Print a short message and exit with status 2."""
        if not self.exit_on_error:
            super().error(message, ex)
        prog = self.prog.replace(" [options]", "")
        sys.stderr.write(f"llm-torch: error: {_fold_union_errors(message)}\n")
        sys.stderr.write(f"tip: {prog} --help lists every option.\n")
        self.exit(2)


def _fold_union_errors(message: str) -> str:
    """Shorten jsonargparse's "does not validate against any of the Union subtypes" message.

    Keeps its first line (the key) and each distinct reason once, naming the classes it came
    from; a union error without them (a ``class_path`` that is no architecture config) keeps its
    first line and reasons; other messages keep their first four lines without the echoed value.
    """
    problem = r"- Problem with given class_path '[\w.]*?(\w+)':\n((?:\s{6,}\S.*(?:\n|$))+)"
    problems = re.findall(problem, message)
    lines = [line for line in message.splitlines() if not line.strip().startswith("Given value")]
    if not problems:  # e.g. a class_path that is not an architecture config
        bullets = [line.strip()[2:] for line in lines if line.strip().startswith("- ")]
        bullets = [bullet for bullet in bullets if "NoneType" not in bullet]  # arch: ... | None
        return " ".join([lines[0].strip(), *bullets]) if bullets else "\n".join(lines[:4])
    reasons: dict[str, list[str]] = {}
    for cls, reason in problems:
        reasons.setdefault(" ".join(reason.split()), []).append(cls)
    folded = [f"{reason} ({', '.join(classes)})" for reason, classes in reasons.items()]
    return " ".join([lines[0].strip(), *folded])


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
        parser.add_lightning_class_args(MultipleChoiceEval, "eval")
        parser.set_defaults(
            {
                # GPT-2 unless a config names another class_path. The class alone, not an
                # instance: the parser fills its init_args from the signature, whose
                # architecture-dependent fields are None (see DecoderConfig.arch_defaults).
                "model.arch": {"class_path": f"{GPTConfig.__module__}.{GPTConfig.__name__}"},
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
            if Path(ckpt_path).is_file():
                _adopt_saved_architecture(self.config[subcommand], Path(ckpt_path))

    def instantiate_trainer(self, **kwargs: Any) -> Trainer:
        """Default to a step bar, a summary with FLOPs, and TensorBoard without placeholders.

        Each stands in for Lightning's default only where the config keeps that default: an
        explicit logger, a progress bar or summary in ``trainer.callbacks``, or
        ``enable_progress_bar: false`` / ``enable_model_summary: false`` win. The bar and summary
        go in through ``trainer_defaults``, whose callbacks Lightning adds after the configured
        ones and this CLI's (``speed``, ...): the bar must run after ``TrainingMonitor`` has
        read the step's loss.
        """
        config = {**self.config_init.get(str(self.subcommand), self.config_init).get("trainer", {})}
        config.update(kwargs)
        if config.get("logger") in (None, True):
            save_dir = config.get("default_root_dir") or os.getcwd()
            kwargs["logger"] = TensorBoard(save_dir=save_dir)
        configured = config.get("callbacks") or []
        configured = configured if isinstance(configured, list) else [configured]
        defaults: list[tuple[str, type[Callback], Callable[[], Callback]]] = [
            ("enable_progress_bar", ProgressBar, StepProgressBar),
            ("enable_model_summary", LightningModelSummary, ModelSummary),
        ]
        added = [
            default()
            for switch, kind, default in defaults
            if config.get(switch) is not False
            and not any(isinstance(callback, kind) for callback in configured)
        ]
        persistent = self.trainer_defaults.get("callbacks") or []
        persistent = persistent if isinstance(persistent, list) else [persistent]
        given = self.trainer_defaults
        self.trainer_defaults = {**given, "callbacks": [*added, *persistent]}
        try:
            return super().instantiate_trainer(**kwargs)
        finally:
            self.trainer_defaults = given  # the defaults as passed, for another call


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


def _adopt_saved_architecture(config: Namespace, path: Path) -> None:
    """Set ``model.arch`` to the architecture the checkpoint at ``path`` was trained with.

    Lightning parses a checkpoint's hyperparameters over the config, but only the fields they
    hold: a field the checkpoint predates would keep the YAML's value, and an architecture switch
    would keep the YAML's shared fields. The whole saved architecture goes in first instead, and
    the fields where the config asked for something else are named in a warning.
    """
    saved = saved_architecture(read_checkpoint(path), path)
    if saved is None:
        return
    disagreements = _disagreements(config.model.arch, saved)
    if disagreements:
        rank_zero_warn(
            f"--ckpt_path {str(path)!r} holds a {type(saved).__name__} that the config "
            f"disagrees with ({'; '.join(disagreements)}): the checkpoint's architecture is "
            "used. Remove these model.arch settings, or train a new model without --ckpt_path."
        )
    config["model.arch"] = Namespace(
        class_path=f"{type(saved).__module__}.{type(saved).__name__}",
        init_args=Namespace(**asdict(saved)),
    )


def _disagreements(arch: Namespace, saved: DecoderConfig) -> list[str]:
    """Settings of the parsed ``model.arch`` that differ from ``saved`` and from their defaults.

    A value equal to its class's default (or ``None``, the architecture's own) is taken as not
    set; ``vocab_size`` is left out, as the data module's tokenizer sets it.
    """
    module, _, name = arch.class_path.rpartition(".")
    config_class = getattr(importlib.import_module(module), name)
    defaults = asdict(config_class())
    found = []
    if config_class not in (type(saved), GPTConfig):  # GPT: the default, maybe never asked for
        found.append(f"class_path: checkpoint {type(saved).__name__}, config {name}")
    for key, value in vars(arch.init_args).items():
        if key == "vocab_size" or value is None or value == defaults.get(key, value):
            continue
        if getattr(saved, key, None) != value:
            found.append(f"{key}: checkpoint {getattr(saved, key, None)!r}, config {value!r}")
    return found


def cli(args: list[str] | None = None, **kwargs: Any) -> LLMCLI:
    """Parse ``args`` (default: the command line), then run the subcommand; returns the CLI.

    ``kwargs`` go to ``LightningCLI`` (e.g. ``trainer_defaults`` with extra callbacks).
    """
    return LLMCLI(
        CausalLMModule,
        TextDataModule,
        seed_everything_default=1337,
        save_config_kwargs={"overwrite": True},
        parser_class=_Parser,
        args=args,
        **kwargs,
    )


#: Exceptions that llm-torch raises for bad input (a config value, a path, a tokenizer name, a
#: checkpoint). Raised by llm-torch's own checks, their message is the whole story.
USER_ERRORS = (ValueError, TypeError, OSError, TokenizerUnavailableError)

#: Lightning notices that say nothing to an llm-torch user: a deprecation inside Lightning, and
#: resume warnings about the fixed checkpoint folder that ``--ckpt_path last`` relies on.
_QUIET_WARNINGS = (
    r"`isinstance\(treespec, LeafSpec\)` is deprecated",
    r"Checkpoint directory .* exists and is not empty",
    r"Be aware that when using `ckpt_path`, callbacks used to create the checkpoint",
)


#: Lightning log lines to drop: an advertisement, and a note about llm-torch's own summary.
_QUIET_INFO = ("litlogger", "Skipping setting a default `ModelSummary`")


def _quiet_lightning() -> None:
    """Filter the known Lightning warnings and its advertising tip (``litlogger``)."""
    for message in _QUIET_WARNINGS:
        warnings.filterwarnings("ignore", message=message)
    notices = logging.getLogger("lightning.pytorch.utilities.rank_zero")
    notices.addFilter(lambda record: not any(text in record.getMessage() for text in _QUIET_INFO))


def user_error(error: BaseException) -> BaseException | None:
    """The bad-input error behind ``error``, or ``None`` for a real crash.

    Follows the explicit cause chain (jsonargparse wraps a config's ``ValueError`` in its own)
    to an exception of :data:`USER_ERRORS` raised by llm-torch's code. Errors raised inside
    torch, Lightning or elsewhere are crashes, and keep their traceback.
    """
    package = str(Path(__file__).resolve().parent)
    current: BaseException | None = error
    while current is not None:
        frames = traceback.extract_tb(current.__traceback__)
        if isinstance(current, USER_ERRORS) and frames and frames[-1].filename.startswith(package):
            return current
        current = current.__cause__
    return None


#: Subcommands that are not Lightning's (fit, validate, test, predict): they need no YAML.
COMMANDS: dict[str, Callable[[list[str]], None]] = {
    "generate": generate_command,
    "export": export_command,
    "evaluate": evaluate_command,
    "train-tokenizer": train_tokenizer_command,
}


def main() -> None:
    """Entry point of the ``llm-torch`` console script.

    Runs one of :data:`COMMANDS`, or else LightningCLI. Bad input ends with one
    ``llm-torch: error: ...`` line and exit status 2, like an unknown option does; anything else
    raises with its traceback.
    """
    _quiet_lightning()
    argv = sys.argv[1:]
    try:
        if argv and argv[0] in COMMANDS:
            COMMANDS[argv[0]](argv[1:])
        else:
            cli()
    except Exception as error:
        cause = user_error(error)
        if cause is None:
            raise
        print(f"llm-torch: error: {cause}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
