"""Hugging Face ``transformers`` interop: import and export weights with identical outputs.

Each supported family is one table (:mod:`llm_torch.interop.gpt2`, :mod:`llm_torch.interop.llama`,
:mod:`llm_torch.interop.qwen3`):
how every llm-torch tensor is made of ``transformers`` tensors, plus a config translation in each
direction. Import and export here are the same generic loop over that table, so a new family is a
new table, not new plumbing.

``transformers`` is an optional dependency (the ``dev`` extra installs it): it is imported inside
the functions here, never at package import time.
"""

import os
from typing import TYPE_CHECKING

import torch

from llm_torch.architectures.base import DecoderLM
from llm_torch.architectures.gpt import GPT, GPTConfig
from llm_torch.architectures.llama import Llama
from llm_torch.interop.gpt2 import GPT2
from llm_torch.interop.llama import LLAMA
from llm_torch.interop.qwen3 import QWEN3

if TYPE_CHECKING:
    from transformers import PreTrainedModel


_FAMILIES = {family.model_type: family for family in (GPT2, LLAMA, QWEN3)}


def _load_hf_model(model_or_dir: "PreTrainedModel | str | os.PathLike[str]") -> "PreTrainedModel":
    """Return the model itself, or load it from a ``save_pretrained`` directory."""
    if isinstance(model_or_dir, str | os.PathLike):
        from transformers import AutoModelForCausalLM

        if not os.path.isdir(model_or_dir):
            raise FileNotFoundError(
                f"{os.fspath(model_or_dir)!r} is not a directory. Pass a directory written by "
                "`save_pretrained` (config.json plus weights) or a transformers model instance."
            )
        return AutoModelForCausalLM.from_pretrained(model_or_dir)
    return model_or_dir


def from_hf(model_or_dir: "PreTrainedModel | str | os.PathLike[str]") -> DecoderLM:
    """Build an llm-torch model holding a Hugging Face model's weights.

    Args:
        model_or_dir: A ``transformers.GPT2LMHeadModel``, ``LlamaForCausalLM`` or
            ``Qwen3ForCausalLM`` instance, or a directory written by its ``save_pretrained``
            (safetensors or PyTorch weights).

    Returns:
        A float32 :class:`GPT` or :class:`Llama` (with ``qk_norm`` for Qwen 3) in eval mode whose
        logits equal the source model's, on the source's device.

    Raises:
        ValueError: If the model's architecture or options are not supported.
    """
    hf_model = _load_hf_model(model_or_dir)
    model_type = getattr(hf_model.config, "model_type", None)
    family = _FAMILIES.get(str(model_type))
    if family is None:
        raise ValueError(
            f"Cannot import Hugging Face model_type {model_type!r}: llm-torch imports "
            f"{', '.join(repr(name) for name in _FAMILIES)}."
        )
    config = family.config_from_hf(hf_model.config)
    hf_state = hf_model.state_dict()
    state = {}
    for row in family.tensors(config.n_layer):
        parts = [hf_state[name].t() if row.transpose else hf_state[name] for name in row.theirs]
        state[row.ours] = torch.cat(parts) if len(parts) > 1 else parts[0]
    with torch.device("meta"):  # no point initialising weights that are about to be replaced
        model: DecoderLM = GPT(config) if isinstance(config, GPTConfig) else Llama(config)
    model.load_state_dict(_float32_copies(state), strict=True, assign=True)
    if isinstance(model, GPT) or model.config.tie_embeddings:
        model.lm_head.weight = model.wte.weight  # `assign` replaced both; tie them again
    if isinstance(model, Llama):  # RoPE tables are not in the state dict: build them for real
        model.rope.to_empty(device=model.wte.weight.device)
        model.rope.reset_buffers()
    return model.eval()


def to_hf(
    model: DecoderLM, eos_token_id: int | None = None, bos_token_id: int | None = None
) -> "PreTrainedModel":
    """Convert an llm-torch model into the ``transformers`` model with the same logits.

    A :class:`GPT` becomes a ``GPT2LMHeadModel``, a :class:`Llama` a ``LlamaForCausalLM``, or a
    ``Qwen3ForCausalLM`` if it has QK-norm (Qwen 3 is Llama with QK-norm). Save
    the result with ``save_pretrained(dir)``; ``AutoModelForCausalLM.from_pretrained(dir)`` then
    loads it.

    Args:
        model: The model to export (its weights are copied; padded vocabulary rows are dropped).
        eos_token_id: End-of-text id to record as the model's EOS token (the tokenizer knows
            it; GPT-2's is 50256). ``None`` records none.
        bos_token_id: Beginning-of-text id; ``None`` means ``eos_token_id`` for GPT-2 (whose BOS
            is its end-of-text token) and none for Llama and Qwen 3.

    Raises:
        TypeError: If ``model`` is neither a GPT nor a Llama.
        ValueError: If the model uses an option ``transformers`` cannot express.
    """
    import transformers

    if isinstance(model, GPT):
        family = GPT2
        bos_token_id = eos_token_id if bos_token_id is None else bos_token_id
    elif isinstance(model, Llama):
        family = QWEN3 if model.config.qk_norm else LLAMA
    else:
        raise TypeError(
            f"to_hf exports GPT and Llama models, not {type(model).__name__} (unwrap compiled or "
            "distributed wrappers first)."
        )
    cfg = model.config
    hf_config = getattr(transformers, family.hf_config_class)(
        **family.config_to_hf(cfg), bos_token_id=bos_token_id, eos_token_id=eos_token_id
    )
    hf_model = getattr(transformers, family.hf_class)(hf_config)
    hf_shapes = {name: tensor.shape for name, tensor in hf_model.state_dict().items()}
    state = model.state_dict()
    hf_state = {}
    for row in family.tensors(cfg.n_layer):
        if row.ours not in state:  # a bias-free GPT: zero biases compute the same function
            hf_state.update({name: torch.zeros(hf_shapes[name]) for name in row.theirs})
            continue
        tensor = state[row.ours]
        if row.vocab_rows:
            tensor = tensor[: cfg.vocab_size]  # drop padding rows
        sizes = [hf_shapes[name][1 if row.transpose else 0] for name in row.theirs]
        for name, part in zip(row.theirs, tensor.split(sizes), strict=True):
            hf_state[name] = part.t() if row.transpose else part
    hf_model.load_state_dict(hf_state, strict=True)
    return hf_model.eval()


def _float32_copies(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Own, contiguous float32 copies, so the new model shares no memory with the source."""
    return {
        name: tensor.detach().to(torch.float32, memory_format=torch.contiguous_format, copy=True)
        for name, tensor in state.items()
    }
