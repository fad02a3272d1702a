"""Hugging Face ``transformers`` interop: import and export weights with identical outputs.

``transformers`` is an optional dependency (the ``dev`` extra installs it): it is imported inside
the functions here, never at package import time.
"""

import os
from typing import TYPE_CHECKING, Any

import torch

from llm_torch.architectures.gpt import GPT, GPTConfig

if TYPE_CHECKING:
    from transformers import PreTrainedModel

# (llm-torch name, transformers GPT-2 name, is a Conv1D weight). GPT-2's Conv1D stores weights as
# (in, out), the transpose of nn.Linear's (out, in).
_GPT2_BLOCK_PARAMS = [
    ("norm_1.weight", "ln_1.weight", False),
    ("norm_1.bias", "ln_1.bias", False),
    ("attn.qkv.weight", "attn.c_attn.weight", True),
    ("attn.qkv.bias", "attn.c_attn.bias", False),
    ("attn.proj.weight", "attn.c_proj.weight", True),
    ("attn.proj.bias", "attn.c_proj.bias", False),
    ("norm_2.weight", "ln_2.weight", False),
    ("norm_2.bias", "ln_2.bias", False),
    ("mlp.fc.weight", "mlp.c_fc.weight", True),
    ("mlp.fc.bias", "mlp.c_fc.bias", False),
    ("mlp.proj.weight", "mlp.c_proj.weight", True),
    ("mlp.proj.bias", "mlp.c_proj.bias", False),
]


def _gpt2_names(n_layer: int) -> dict[str, tuple[str, bool]]:
    """Map every llm-torch GPT state-dict key to its ``GPT2LMHeadModel`` key and transpose flag."""
    names = {
        "wte.weight": ("transformer.wte.weight", False),
        "wpe.weight": ("transformer.wpe.weight", False),
        "ln_f.weight": ("transformer.ln_f.weight", False),
        "ln_f.bias": ("transformer.ln_f.bias", False),
        "lm_head.weight": ("lm_head.weight", False),
    }
    for i in range(n_layer):
        for ours, theirs, conv1d in _GPT2_BLOCK_PARAMS:
            names[f"blocks.{i}.{ours}"] = (f"transformer.h.{i}.{theirs}", conv1d)
    return names


def _gpt_config_from_hf(hf_config: Any) -> GPTConfig:
    """Translate a ``transformers.GPT2Config``, refusing variants GPT cannot express."""
    unsupported = {
        "activation_function": (hf_config.activation_function, "gelu_new"),
        "scale_attn_weights": (hf_config.scale_attn_weights, True),
        "scale_attn_by_inverse_layer_idx": (hf_config.scale_attn_by_inverse_layer_idx, False),
        "reorder_and_upcast_attn": (hf_config.reorder_and_upcast_attn, False),
        "tie_word_embeddings": (getattr(hf_config, "tie_word_embeddings", True), True),
    }
    for key, (value, expected) in unsupported.items():
        if value != expected:
            raise ValueError(
                f"Cannot import this GPT-2 checkpoint: its config has {key}={value!r}, while "
                f"llm-torch's GPT implements only {key}={expected!r}."
            )
    return GPTConfig(
        vocab_size=hf_config.vocab_size,
        block_size=hf_config.n_positions,
        n_layer=hf_config.n_layer,
        n_head=hf_config.n_head,
        n_embd=hf_config.n_embd,
        mlp_hidden=hf_config.n_inner,
        dropout=hf_config.resid_pdrop,
        bias=True,
        layer_norm_eps=hf_config.layer_norm_epsilon,
    )


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


def from_hf(model_or_dir: "PreTrainedModel | str | os.PathLike[str]") -> GPT:
    """Build an llm-torch model holding a Hugging Face model's weights.

    Args:
        model_or_dir: A ``transformers.GPT2LMHeadModel`` instance, or a directory written by its
            ``save_pretrained`` (safetensors or PyTorch weights).

    Returns:
        A float32 :class:`GPT` in eval mode whose logits equal the source model's.

    Raises:
        ValueError: If the model's architecture or options are not supported.
    """
    hf_model = _load_hf_model(model_or_dir)
    model_type = getattr(hf_model.config, "model_type", None)
    if model_type != "gpt2":
        raise ValueError(
            f"Cannot import Hugging Face model_type {model_type!r}: llm-torch imports 'gpt2'."
        )
    config = _gpt_config_from_hf(hf_model.config)
    hf_state = hf_model.state_dict()
    state = {
        ours: hf_state[theirs].t() if conv1d else hf_state[theirs]
        for ours, (theirs, conv1d) in _gpt2_names(config.n_layer).items()
    }
    with torch.device("meta"):  # no point initialising weights that are about to be replaced
        model = GPT(config)
    model.load_state_dict(_float32_copies(state), strict=True, assign=True)
    model.lm_head.weight = model.wte.weight  # `assign` replaced both; tie them again
    return model.eval()


def to_hf(model: GPT, eos_token_id: int | None = None) -> "PreTrainedModel":
    """Convert an llm-torch GPT into a ``transformers.GPT2LMHeadModel`` with the same logits.

    Save the result with ``save_pretrained(dir)``; ``AutoModelForCausalLM.from_pretrained(dir)``
    then loads it.

    Args:
        model: The GPT to export (its weights are copied; padded vocabulary rows are dropped).
        eos_token_id: End-of-text id to record as the model's BOS/EOS token (the tokenizer knows
            it; GPT-2's is 50256). ``None`` records none.

    Raises:
        ValueError: If the model uses an option GPT-2 in ``transformers`` cannot express.
    """
    from transformers import GPT2Config, GPT2LMHeadModel

    cfg = model.config
    if not cfg.bias:
        raise ValueError(
            "Cannot export a GPT with bias=False: transformers' GPT-2 always has biases."
        )
    hf_config = GPT2Config(
        vocab_size=cfg.vocab_size,
        n_positions=cfg.block_size,
        n_embd=cfg.n_embd,
        n_layer=cfg.n_layer,
        n_head=cfg.n_head,
        n_inner=cfg.mlp_hidden,
        activation_function="gelu_new",
        resid_pdrop=cfg.dropout,
        embd_pdrop=cfg.dropout,
        attn_pdrop=cfg.dropout,
        layer_norm_epsilon=cfg.layer_norm_eps,
        bos_token_id=eos_token_id,
        eos_token_id=eos_token_id,
        tie_word_embeddings=True,
    )
    state = model.state_dict()
    hf_state = {}
    for ours, (theirs, conv1d) in _gpt2_names(cfg.n_layer).items():
        tensor = state[ours]
        if ours in ("wte.weight", "lm_head.weight"):
            tensor = tensor[: cfg.vocab_size]  # drop padding rows
        hf_state[theirs] = tensor.t() if conv1d else tensor
    hf_model = GPT2LMHeadModel(hf_config)
    hf_model.load_state_dict(hf_state, strict=True)
    return hf_model.eval()


def _float32_copies(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Own, contiguous float32 copies, so the new model shares no memory with the source."""
    return {
        name: tensor.detach().to(torch.float32, memory_format=torch.contiguous_format, copy=True)
        for name, tensor in state.items()
    }
