"""Llama family of the Hugging Face interop: ``Llama`` <-> ``transformers.LlamaForCausalLM``.

The config translations take the family's name and QK-norm setting, so Qwen 3 (a Llama with
QK-norm, :mod:`llm_torch.interop.qwen3`) reuses them rather than copying them.
"""

from typing import Any

from llm_torch.architectures.llama import LlamaConfig
from llm_torch.interop.common import Family, recipe_options, refuse, refuse_export, t


def _hf_rope(hf_config: Any) -> dict[str, Any]:
    """RoPE settings of a ``LlamaConfig``: ``rope_parameters`` (v5) or ``rope_scaling`` (4.x)."""
    params = getattr(hf_config, "rope_parameters", None)
    if params is None:  # transformers 4.x
        params = {"rope_theta": hf_config.rope_theta, **(hf_config.rope_scaling or {})}
    params = dict(params)
    params.setdefault("rope_type", params.pop("type", "default"))
    return params


def llama_config_from_hf(
    hf_config: Any, family: str = "Llama", qk_norm: bool = False
) -> LlamaConfig:
    """Translate a ``transformers`` Llama-style config, refusing variants Llama cannot express.

    Args:
        hf_config: A ``transformers.LlamaConfig`` (or ``Qwen3Config``: the same keys).
        family: Name the refusal messages give the checkpoint.
        qk_norm: Whether the family normalises queries and keys (Qwen 3 does, Llama does not).
    """
    rope = _hf_rope(hf_config)
    rope_type = rope["rope_type"]
    refuse(
        family,
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
    head_dim = getattr(hf_config, "head_dim", None)
    if head_dim is not None and head_dim * hf_config.num_attention_heads == hf_config.hidden_size:
        head_dim = None  # the default, as a config that does not name it says (init_from compares)
    return LlamaConfig(
        vocab_size=hf_config.vocab_size,
        block_size=hf_config.max_position_embeddings,
        n_layer=hf_config.num_hidden_layers,
        n_head=hf_config.num_attention_heads,
        n_kv_head=hf_config.num_key_value_heads or hf_config.num_attention_heads,
        n_embd=hf_config.hidden_size,
        mlp_hidden=hf_config.intermediate_size,
        head_dim=head_dim,
        norm_eps=hf_config.rms_norm_eps,
        rope_theta=rope["rope_theta"],
        rope_scaling=scaling,
        tie_embeddings=hf_config.tie_word_embeddings,
        qk_norm=qk_norm,
        # HF has attention dropout only; ours also drops residuals. Both are off in eval.
        dropout=hf_config.attention_dropout,
    )


def llama_config_to_hf(
    cfg: LlamaConfig, family: str = "Llama", qk_norm: bool = False
) -> dict[str, Any]:
    """``transformers.LlamaConfig`` arguments for a Llama.

    Args:
        cfg: The model's config.
        family: Name the refusal messages give the ``transformers`` model class.
        qk_norm: The QK-norm setting that class computes (Qwen 3: on; Llama: off).

    Raises:
        ValueError: For options the class lacks (QK-norm for Llama, ReLU^2, soft-capping).
    """
    refuse_export(family, {**recipe_options(cfg, "swiglu"), "qk_norm": (cfg.qk_norm, (qk_norm,))})
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


LLAMA = Family(
    model_type="llama",
    hf_class="LlamaForCausalLM",
    hf_config_class="LlamaConfig",
    top=(
        t("wte.weight", "model.embed_tokens.weight", vocab_rows=True),
        t("ln_f.weight", "model.norm.weight"),
        t("lm_head.weight", "lm_head.weight", vocab_rows=True),
    ),
    block=(
        t("norm_1.weight", "input_layernorm.weight"),
        # Same rotate_half convention as transformers: q and k rows need no permutation.
        t(
            "attn.qkv.weight",
            "self_attn.q_proj.weight",
            "self_attn.k_proj.weight",
            "self_attn.v_proj.weight",
        ),
        t("attn.proj.weight", "self_attn.o_proj.weight"),
        t("norm_2.weight", "post_attention_layernorm.weight"),
        t("mlp.fc.weight", "mlp.gate_proj.weight", "mlp.up_proj.weight"),
        t("mlp.proj.weight", "mlp.down_proj.weight"),
    ),
    hf_block="model.layers.{}.",
    config_from_hf=llama_config_from_hf,
    config_to_hf=llama_config_to_hf,
)
