"""Hugging Face ``transformers`` interop: import and export weights with identical outputs.

Each supported family (GPT-2, Llama) is one table: how every llm-torch tensor is made of
``transformers`` tensors, plus a config translation in each direction. Import and export are the
same generic loop over that table, so a new family is a new table, not new plumbing.

``transformers`` is an optional dependency (the ``dev`` extra installs it): it is imported inside
the functions here, never at package import time.
"""

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from llm_torch.architectures.gpt import GPT, GPTConfig
from llm_torch.architectures.llama import Llama, LlamaConfig
from llm_torch.architectures.registry import Model

if TYPE_CHECKING:
    from transformers import PreTrainedModel


@dataclass(frozen=True)
class _Tensor:
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


def _t(ours: str, *theirs: str, transpose: bool = False, vocab_rows: bool = False) -> _Tensor:
    """Shorthand for a table row."""
    return _Tensor(ours, theirs, transpose, vocab_rows)


@dataclass(frozen=True)
class _Family:
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
    top: tuple[_Tensor, ...]
    block: tuple[_Tensor, ...]
    hf_block: str
    config_from_hf: Callable[[Any], GPTConfig | LlamaConfig]
    config_to_hf: Callable[[Any], dict[str, Any]]

    def tensors(self, n_layer: int) -> list[_Tensor]:
        """Every tensor of an ``n_layer`` model, block names expanded."""
        rows = list(self.top)
        for i in range(n_layer):
            prefix = self.hf_block.format(i)
            rows += [
                _Tensor(
                    f"blocks.{i}.{row.ours}",
                    tuple(prefix + name for name in row.theirs),
                    row.transpose,
                    row.vocab_rows,
                )
                for row in self.block
            ]
        return rows


def _refuse(family: str, values: dict[str, tuple[Any, tuple[Any, ...]]]) -> None:
    """Raise for the first ``key: (value, supported values)`` whose value is not supported."""
    for key, (value, supported) in values.items():
        if value not in supported:
            allowed = " or ".join(f"{key}={option!r}" for option in supported)
            raise ValueError(
                f"Cannot import this {family} checkpoint: its config has {key}={value!r}, while "
                f"llm-torch's implementation supports only {allowed}."
            )


# --- GPT-2 ----------------------------------------------------------------------------------------


def _gpt_config_from_hf(hf_config: Any) -> GPTConfig:
    """Translate a ``transformers.GPT2Config``, refusing variants GPT cannot express."""
    _refuse(
        "GPT-2",
        {
            "activation_function": (hf_config.activation_function, ("gelu_new",)),
            "scale_attn_weights": (hf_config.scale_attn_weights, (True,)),
            "scale_attn_by_inverse_layer_idx": (
                hf_config.scale_attn_by_inverse_layer_idx,
                (False,),
            ),
            "reorder_and_upcast_attn": (hf_config.reorder_and_upcast_attn, (False,)),
            "tie_word_embeddings": (getattr(hf_config, "tie_word_embeddings", True), (True,)),
        },
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


def _gpt_config_to_hf(cfg: GPTConfig) -> dict[str, Any]:
    """``GPT2Config`` arguments for a GPT (``bias=False`` exports as zero biases)."""
    return {
        "vocab_size": cfg.vocab_size,
        "n_positions": cfg.block_size,
        "n_embd": cfg.n_embd,
        "n_layer": cfg.n_layer,
        "n_head": cfg.n_head,
        "n_inner": cfg.mlp_hidden,
        "activation_function": "gelu_new",
        "resid_pdrop": cfg.dropout,
        "embd_pdrop": cfg.dropout,
        "attn_pdrop": cfg.dropout,
        "layer_norm_epsilon": cfg.layer_norm_eps,
        "tie_word_embeddings": True,
    }


_GPT2 = _Family(
    model_type="gpt2",
    hf_class="GPT2LMHeadModel",
    hf_config_class="GPT2Config",
    top=(
        _t("wte.weight", "transformer.wte.weight", vocab_rows=True),
        _t("wpe.weight", "transformer.wpe.weight"),
        _t("ln_f.weight", "transformer.ln_f.weight"),
        _t("ln_f.bias", "transformer.ln_f.bias"),
        _t("lm_head.weight", "lm_head.weight", vocab_rows=True),
    ),
    block=(
        _t("norm_1.weight", "ln_1.weight"),
        _t("norm_1.bias", "ln_1.bias"),
        _t("attn.qkv.weight", "attn.c_attn.weight", transpose=True),
        _t("attn.qkv.bias", "attn.c_attn.bias"),
        _t("attn.proj.weight", "attn.c_proj.weight", transpose=True),
        _t("attn.proj.bias", "attn.c_proj.bias"),
        _t("norm_2.weight", "ln_2.weight"),
        _t("norm_2.bias", "ln_2.bias"),
        _t("mlp.fc.weight", "mlp.c_fc.weight", transpose=True),
        _t("mlp.fc.bias", "mlp.c_fc.bias"),
        _t("mlp.proj.weight", "mlp.c_proj.weight", transpose=True),
        _t("mlp.proj.bias", "mlp.c_proj.bias"),
    ),
    hf_block="transformer.h.{}.",
    config_from_hf=_gpt_config_from_hf,
    config_to_hf=_gpt_config_to_hf,
)


# --- Llama ----------------------------------------------------------------------------------------


def _hf_rope(hf_config: Any) -> dict[str, Any]:
    """RoPE settings of a ``LlamaConfig``: ``rope_parameters`` (v5) or ``rope_scaling`` (4.x)."""
    params = getattr(hf_config, "rope_parameters", None)
    if params is None:  # transformers 4.x
        params = {"rope_theta": hf_config.rope_theta, **(hf_config.rope_scaling or {})}
    params = dict(params)
    params.setdefault("rope_type", params.pop("type", "default"))
    return params


def _llama_config_from_hf(hf_config: Any) -> LlamaConfig:
    """Translate a ``transformers.LlamaConfig``, refusing variants Llama cannot express."""
    rope = _hf_rope(hf_config)
    rope_type = rope["rope_type"]
    _refuse(
        "Llama",
        {
            "hidden_act": (hf_config.hidden_act, ("silu",)),
            "attention_bias": (hf_config.attention_bias, (False,)),
            "mlp_bias": (getattr(hf_config, "mlp_bias", False), (False,)),
            "rope_type": (rope_type, ("default", "llama3")),
            "partial_rotary_factor": (rope.get("partial_rotary_factor", 1.0), (1.0,)),
        },
    )
    scaling = None
    if rope_type == "llama3":
        scaling = {
            "rope_type": "llama3",
            "factor": rope["factor"],
            "low_freq_factor": rope["low_freq_factor"],
            "high_freq_factor": rope["high_freq_factor"],
            "original_max_position_embeddings": rope["original_max_position_embeddings"],
        }
    return LlamaConfig(
        vocab_size=hf_config.vocab_size,
        block_size=hf_config.max_position_embeddings,
        n_layer=hf_config.num_hidden_layers,
        n_head=hf_config.num_attention_heads,
        n_kv_head=hf_config.num_key_value_heads or hf_config.num_attention_heads,
        n_embd=hf_config.hidden_size,
        mlp_hidden=hf_config.intermediate_size,
        head_dim=getattr(hf_config, "head_dim", None),
        norm_eps=hf_config.rms_norm_eps,
        rope_theta=rope["rope_theta"],
        rope_scaling=scaling,
        tie_embeddings=hf_config.tie_word_embeddings,
        # HF has attention dropout only; ours also drops residuals. Both are off in eval.
        dropout=hf_config.attention_dropout,
    )


def _llama_config_to_hf(cfg: LlamaConfig) -> dict[str, Any]:
    """``transformers.LlamaConfig`` arguments for a Llama (any of ours is expressible)."""
    return {
        "vocab_size": cfg.vocab_size,
        "hidden_size": cfg.n_embd,
        "intermediate_size": cfg.resolved_mlp_hidden,
        "num_hidden_layers": cfg.n_layer,
        "num_attention_heads": cfg.n_head,
        "num_key_value_heads": cfg.resolved_n_kv_head,
        "head_dim": cfg.resolved_head_dim,
        "max_position_embeddings": cfg.block_size,
        "rms_norm_eps": cfg.norm_eps,
        # Both transformers 4.x and 5.x accept these (5.x folds them into rope_parameters).
        "rope_theta": cfg.rope_theta,
        "rope_scaling": dict(cfg.rope_scaling) if cfg.rope_scaling is not None else None,
        "tie_word_embeddings": cfg.tie_embeddings,
        "hidden_act": "silu",
        "attention_bias": False,
        "mlp_bias": False,
        "attention_dropout": cfg.dropout,
    }


_LLAMA = _Family(
    model_type="llama",
    hf_class="LlamaForCausalLM",
    hf_config_class="LlamaConfig",
    top=(
        _t("wte.weight", "model.embed_tokens.weight", vocab_rows=True),
        _t("ln_f.weight", "model.norm.weight"),
        _t("lm_head.weight", "lm_head.weight", vocab_rows=True),
    ),
    block=(
        _t("norm_1.weight", "input_layernorm.weight"),
        # Same rotate_half convention as transformers: q and k rows need no permutation.
        _t(
            "attn.qkv.weight",
            "self_attn.q_proj.weight",
            "self_attn.k_proj.weight",
            "self_attn.v_proj.weight",
        ),
        _t("attn.proj.weight", "self_attn.o_proj.weight"),
        _t("norm_2.weight", "post_attention_layernorm.weight"),
        _t("mlp.fc.weight", "mlp.gate_proj.weight", "mlp.up_proj.weight"),
        _t("mlp.proj.weight", "mlp.down_proj.weight"),
    ),
    hf_block="model.layers.{}.",
    config_from_hf=_llama_config_from_hf,
    config_to_hf=_llama_config_to_hf,
)

_FAMILIES = {family.model_type: family for family in (_GPT2, _LLAMA)}


# --- generic import / export ----------------------------------------------------------------------


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


def from_hf(model_or_dir: "PreTrainedModel | str | os.PathLike[str]") -> Model:
    """Build an llm-torch model holding a Hugging Face model's weights.

    Args:
        model_or_dir: A ``transformers.GPT2LMHeadModel`` or ``LlamaForCausalLM`` instance, or a
            directory written by its ``save_pretrained`` (safetensors or PyTorch weights).

    Returns:
        A float32 :class:`GPT` or :class:`Llama` in eval mode whose logits equal the source
        model's, on the source's device.

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
        model: Model = GPT(config) if isinstance(config, GPTConfig) else Llama(config)
    model.load_state_dict(_float32_copies(state), strict=True, assign=True)
    if isinstance(model, GPT) or model.config.tie_embeddings:
        model.lm_head.weight = model.wte.weight  # `assign` replaced both; tie them again
    if isinstance(model, Llama):  # RoPE tables are not in the state dict: build them for real
        model.rope.to_empty(device=model.wte.weight.device)
        model.rope.reset_buffers()
    return model.eval()


def to_hf(
    model: Model, eos_token_id: int | None = None, bos_token_id: int | None = None
) -> "PreTrainedModel":
    """Convert an llm-torch model into the ``transformers`` model with the same logits.

    A :class:`GPT` becomes a ``GPT2LMHeadModel``, a :class:`Llama` a ``LlamaForCausalLM``. Save
    the result with ``save_pretrained(dir)``; ``AutoModelForCausalLM.from_pretrained(dir)`` then
    loads it.

    Args:
        model: The model to export (its weights are copied; padded vocabulary rows are dropped).
        eos_token_id: End-of-text id to record as the model's EOS token (the tokenizer knows
            it; GPT-2's is 50256). ``None`` records none.
        bos_token_id: Beginning-of-text id; ``None`` means ``eos_token_id`` for GPT-2 (whose BOS
            is its end-of-text token) and none for Llama.

    Raises:
        TypeError: If ``model`` is neither a GPT nor a Llama.
        ValueError: If the model uses an option ``transformers`` cannot express.
    """
    import transformers

    if isinstance(model, GPT):
        family = _GPT2
        bos_token_id = eos_token_id if bos_token_id is None else bos_token_id
    elif isinstance(model, Llama):
        family = _LLAMA
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
