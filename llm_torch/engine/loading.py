"""A trained model ready to use: from a checkpoint or a Hugging Face folder, on a device.

``llm-torch generate`` and ``evaluate`` (and :class:`~llm_torch.evaluation.LLMTorchLM`) name a
model the same way: ``--ckpt_path`` or ``--hf_dir``, ``--tokenizer``, ``--device`` and
``--precision``. This module reads those options, in one parser helper and one loader, so the
commands cannot disagree on what a name means.
"""

import argparse
from pathlib import Path

import torch

from llm_torch.architectures.base import DecoderLM
from llm_torch.engine.checkpoint import load_checkpoint
from llm_torch.tokenizer import Tokenizer, get_tokenizer

#: ``--precision`` names and the dtypes the weights are cast to.
DTYPES = {"32": torch.float32, "bf16": torch.bfloat16, "16": torch.float16}


def add_model_options(parser: argparse.ArgumentParser) -> None:
    """Add ``--ckpt_path`` or ``--hf_dir``, ``--tokenizer``, ``--device`` and ``--precision``."""
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--ckpt_path", help="checkpoint written by `llm-torch fit`")
    source.add_argument(
        "--hf_dir", help="Hugging Face save_pretrained folder (GPT-2, Llama, Qwen 3)"
    )
    parser.add_argument(
        "--tokenizer",
        help="tokenizer spec (gpt2, byte, hf:/path/tokenizer.json, ...); default: the "
        "checkpoint's, or the tokenizer.json inside --hf_dir",
    )
    parser.add_argument(
        "--device", default="auto", help="cpu, cuda, cuda:1, ... (auto: cuda if any)"
    )
    parser.add_argument("--precision", choices=sorted(DTYPES), default="32")


def resolve_device(device: str) -> torch.device:
    """``auto`` is CUDA when there is one, else the CPU."""
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(device)


def load_model(
    ckpt_path: str | None = None,
    hf_dir: str | None = None,
    tokenizer: str | Tokenizer | None = None,
) -> tuple[DecoderLM, Tokenizer]:
    """The model and tokenizer of a checkpoint or a Hugging Face folder.

    The model is in float32, in eval mode, on the CPU: :func:`place` moves it.

    Args:
        ckpt_path: A checkpoint written by ``llm-torch fit`` (carries its tokenizer spec).
        hf_dir: A ``save_pretrained`` folder (GPT-2, Llama, Qwen 3); its ``tokenizer.json`` is
            used.
        tokenizer: A tokenizer (or its spec) that replaces the one found with the model.

    Raises:
        ValueError: Not exactly one of ``ckpt_path`` and ``hf_dir``, no tokenizer known, or a
            tokenizer with ids the model does not have.
    """
    if (ckpt_path is None) == (hf_dir is None):
        raise ValueError("Pass exactly one of ckpt_path (an llm-torch checkpoint) and hf_dir.")
    found: Tokenizer | None
    if ckpt_path is not None:
        model, found = load_checkpoint(ckpt_path)
        where = f"checkpoint {ckpt_path!r}"
    else:
        from llm_torch.interop.hf import from_hf

        assert hf_dir is not None
        model = from_hf(hf_dir)
        bundled = Path(hf_dir) / "tokenizer.json"
        found = get_tokenizer(f"hf:{bundled}") if bundled.is_file() else None
        where = f"folder {hf_dir!r} (no tokenizer.json)"
    chosen = get_tokenizer(tokenizer) if isinstance(tokenizer, str) else tokenizer
    chosen = found if chosen is None else chosen
    if chosen is None:
        raise ValueError(
            f"No tokenizer is known for the {where}: token ids mean nothing without it. Pass "
            "--tokenizer (e.g. gpt2 for GPT-2, or hf:/path/tokenizer.json)."
        )
    if chosen.vocab_size > model.config.vocab_size:
        raise ValueError(
            f"Tokenizer {chosen.name!r} has {chosen.vocab_size} ids but the model only "
            f"{model.config.vocab_size}; pass the tokenizer the model was trained with."
        )
    return model.eval(), chosen


def place(model: DecoderLM, device: str, precision: str) -> DecoderLM:
    """``model`` in eval mode on ``device`` (``auto``: CUDA if any), cast to ``precision``."""
    return model.to(device=resolve_device(device), dtype=DTYPES[precision]).eval()
