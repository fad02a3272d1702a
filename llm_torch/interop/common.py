"""Shared pieces of the Hugging Face interop: the tensor-map table format and config vetting.

A model family (see :mod:`llm_torch.interop.gpt2`, :mod:`llm_torch.interop.llama`) is a
:class:`Family`: a table of :class:`TensorMap` rows plus a config translation in each direction.
:mod:`llm_torch.interop.hf` runs import and export as one generic loop over such a table.
"""

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from llm_torch.architectures.gpt import GPTConfig
from llm_torch.architectures.llama import LlamaConfig


@dataclass(frozen=True)
class TensorMap:
    """One llm-torch tensor and the ``transformers`` tensors it is made of.

    Attributes:
        ours: llm-torch state-dict name (relative to a block for per-block entries).
        theirs: ``transformers`` names; several are concatenated along dim 0, as our fused
            projections are (``qkv`` = q, k, v rows; SwiGLU ``fc`` = gate, up rows).
        transpose: The ``transformers`` tensor is stored ``(in, out)`` (GPT-2's Conv1D).
        vocab_rows: Rows are vocabulary entries; export drops llm-torch's padding rows.
    """

    ours: str
    theirs: tuple[str, ...]
    transpose: bool = False
    vocab_rows: bool = False


def t(ours: str, *theirs: str, transpose: bool = False, vocab_rows: bool = False) -> TensorMap:
    """Shorthand for a table row."""
    return TensorMap(ours, theirs, transpose, vocab_rows)


@dataclass(frozen=True)
class Family:
    """How one model family maps onto ``transformers``.

    Attributes:
        model_type: ``config.model_type`` in ``transformers``.
        hf_class: Name of the ``transformers`` causal-LM class that export builds.
        hf_config_class: Name of its ``transformers`` config class.
        top: Tensors outside the blocks.
        block: Tensors of one block; ``hf_block`` prefixes their ``transformers`` names.
        hf_block: ``transformers`` prefix of block ``i``, formatted with ``i``.
        config_from_hf: Translates (and vets) a ``transformers`` config.
        config_to_hf: Keyword arguments of the ``transformers`` config for our config.
    """

    model_type: str
    hf_class: str
    hf_config_class: str
    top: tuple[TensorMap, ...]
    block: tuple[TensorMap, ...]
    hf_block: str
    config_from_hf: Callable[[Any], GPTConfig | LlamaConfig]
    config_to_hf: Callable[[Any], dict[str, Any]]

    def tensors(self, n_layer: int) -> list[TensorMap]:
        """Every tensor of an ``n_layer`` model, block names expanded."""
        rows = list(self.top)
        for i in range(n_layer):
            prefix = self.hf_block.format(i)
            rows += [
                TensorMap(
                    f"blocks.{i}.{row.ours}",
                    tuple(prefix + name for name in row.theirs),
                    row.transpose,
                    row.vocab_rows,
                )
                for row in self.block
            ]
        return rows


def refuse(family: str, values: dict[str, tuple[Any, tuple[Any, ...]]]) -> None:
    """Raise for the first ``key: (value, supported values)`` whose value is not supported."""
    key, value, allowed = _first_unsupported(values)
    if key:
        raise ValueError(
            f"Cannot import this {family} checkpoint: its config has {key}={value!r}, while "
            f"llm-torch's implementation supports only {allowed}."
        )


def _first_unsupported(values: dict[str, tuple[Any, tuple[Any, ...]]]) -> tuple[str, Any, str]:
    """``(key, value, "key=a or key=b")`` of the first unsupported entry, or ``("", None, "")``."""
    for key, (value, supported) in values.items():
        if value not in supported:
            return key, value, " or ".join(f"{key}={option!r}" for option in supported)
    return "", None, ""


def refuse_export(family: str, values: dict[str, tuple[Any, tuple[Any, ...]]]) -> None:
    """Raise for the first ``key: (value, exportable values)`` that ``transformers`` lacks."""
    key, value, allowed = _first_unsupported(values)
    if key:
        raise ValueError(
            f"Cannot export this model to transformers' {family}: it was built with "
            f"{key}={value!r}, which that model class cannot express (it needs {allowed}). "
            "Keep the llm-torch checkpoint, or train with that option off to export."
        )


def recipe_options(cfg: GPTConfig | LlamaConfig, activation: str) -> dict[str, Any]:
    """The speedrun-recipe fields, each with the one value a plain GPT-2 or Llama has.

    For :func:`refuse_export`; Qwen 3 overrides the ``qk_norm`` entry (it has QK-norm).
    """
    return {
        "qk_norm": (cfg.qk_norm, (False,)),
        "mlp_activation": (cfg.resolved_mlp_activation, (activation,)),
        "logit_softcap": (cfg.logit_softcap, (None,)),
    }
