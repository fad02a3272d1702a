"""Rebuild a model and its tokenizer from a training checkpoint, safely and without the YAML."""

import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch

from llm_torch.architectures.base import DecoderLM
from llm_torch.architectures.config import DecoderConfig
from llm_torch.architectures.registry import build_model, config_from_dict
from llm_torch.tokenizer import Tokenizer, get_tokenizer

#: Key under which checkpoints carry what rebuilds the model and tokenizer without the YAML.
CHECKPOINT_KEY = "llm_torch"

#: Version of what :data:`CHECKPOINT_KEY` holds. 1 (no ``"format"`` entry): the fields the
#: architecture had when the checkpoint was written; a field added later is missing and takes
#: its default, which new fields always give the former behaviour. 2: every field, as resolved.
CHECKPOINT_FORMAT = 2


class CheckpointError(ValueError):
    """A checkpoint that cannot be used: corrupt, truncated, foreign or mismatched."""


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load a checkpoint file with ``weights_only=True`` (no arbitrary code from pickles).

    Raises:
        FileNotFoundError: ``path`` does not exist.
        CheckpointError: A folder (sharded checkpoint), or a file torch cannot read.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"Checkpoint {str(path)!r} does not exist.")
    if path.is_dir():
        raise CheckpointError(
            f"{str(path)!r} is a sharded (FSDP) checkpoint folder. Consolidate it into one file "
            "first: python -m lightning.pytorch.utilities.consolidate_checkpoint "
            f"{path} --output_file {path}.consolidated"
        )
    try:
        checkpoint: dict[str, Any] = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, EOFError, OSError, pickle.UnpicklingError, zipfile.BadZipFile) as err:
        raise CheckpointError(
            f"Cannot read checkpoint {str(path)!r}: it is truncated, corrupt or not a PyTorch "
            f"checkpoint ({type(err).__name__}: {str(err)[:200]}). Use another checkpoint, e.g. "
            "best.ckpt or step-N.ckpt from the same folder."
        ) from None
    return checkpoint


def saved_architecture(checkpoint: dict[str, Any], path: str | Path) -> DecoderConfig | None:
    """The architecture a checkpoint was trained with, every field resolved.

    Returns:
        The config, or ``None`` for a checkpoint that llm-torch did not write (no model config).

    Raises:
        CheckpointError: A format newer than this llm-torch reads, or a config it cannot build
            (an unknown architecture or field, an impossible value).
    """
    saved = checkpoint.get(CHECKPOINT_KEY)
    if not isinstance(saved, dict) or "model" not in saved:
        return None
    version = saved.get("format", 1)
    if not isinstance(version, int) or not 1 <= version <= CHECKPOINT_FORMAT:
        raise CheckpointError(
            f"{str(path)!r} has checkpoint format {version!r}; this llm-torch reads formats 1 to "
            f"{CHECKPOINT_FORMAT}. Load it with the llm-torch version that wrote it (or newer)."
        )
    try:
        return config_from_dict(saved["model"])
    except (TypeError, ValueError) as err:
        raise CheckpointError(
            f"The model config in {str(path)!r} cannot be built by this llm-torch: {err}"
        ) from None


def load_checkpoint(path: str | Path) -> tuple[DecoderLM, Tokenizer | None]:
    """Rebuild the trained model (float32, eval mode, on CPU) and its tokenizer.

    Args:
        path: A ``.ckpt`` file written by ``llm-torch fit``.

    Returns:
        The model with the checkpoint's weights, and the tokenizer it was trained with (``None``
        if the checkpoint was saved without a data module).

    Raises:
        FileNotFoundError: ``path`` does not exist.
        CheckpointError: Unreadable, not from llm-torch, or weights that do not fit the config.
    """
    checkpoint = read_checkpoint(path)
    config = saved_architecture(checkpoint, path)
    if config is None or "state_dict" not in checkpoint:
        raise CheckpointError(
            f"{str(path)!r} is not an llm-torch training checkpoint (it has no model config). "
            "For Hugging Face weights use a save_pretrained folder instead."
        )
    saved = checkpoint[CHECKPOINT_KEY]
    model = build_model(config)
    prefix = "model."
    state = {
        name.removeprefix(prefix): tensor
        for name, tensor in checkpoint["state_dict"].items()
        if name.startswith(prefix)
    }
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as err:
        raise CheckpointError(
            f"The weights in {str(path)!r} do not fit the model config it records: {err}"
        ) from None
    tokenizer = get_tokenizer(saved["tokenizer"]) if saved.get("tokenizer") else None
    return model.eval(), tokenizer
