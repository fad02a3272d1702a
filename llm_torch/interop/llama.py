"""Llama family of the Hugging Face interop: ``Llama`` <-> ``transformers.LlamaForCausalLM``."""

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


def _llama_config_from_hf(hf_config: Any) -> LlamaConfig:
    """Translate a ``transformers.LlamaConfig``, refusing variants Llama cannot express."""
    rope = _hf_rope(hf_config)
    rope_type = rope["rope_type"]
    refuse(
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
    """``transformers.LlamaConfig`` arguments for a Llama.

    Raises:
        ValueError: For options ``LlamaForCausalLM`` lacks (QK-norm, ReLU^2, soft-capping).
    """
    refuse_export("Llama", recipe_options(cfg, "swiglu"))
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
    config_from_hf=_llama_config_from_hf,
    config_to_hf=_llama_config_to_hf,
)
