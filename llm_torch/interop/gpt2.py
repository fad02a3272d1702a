"""GPT-2 family of the Hugging Face interop: ``GPT`` <-> ``transformers.GPT2LMHeadModel``."""

from typing import Any

from llm_torch.architectures.gpt import GPTConfig
from llm_torch.interop.common import Family, recipe_options, refuse, refuse_export, t


def _gpt_config_from_hf(hf_config: Any) -> GPTConfig:
    """Translate a ``transformers.GPT2Config``, refusing variants GPT cannot express."""
    refuse(
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
        norm_eps=hf_config.layer_norm_epsilon,
    )


def _gpt_config_to_hf(cfg: GPTConfig) -> dict[str, Any]:
    """``GPT2Config`` arguments for a GPT (``bias=False`` exports as zero biases).

    Raises:
        ValueError: For options ``GPT2LMHeadModel`` lacks (rotary positions, QK-norm, ...).
    """
    refuse_export(
        "GPT-2",
        {
            **recipe_options(cfg, "gelu"),
            "positions": (cfg.positions, ("learned",)),
            "tie_embeddings": (cfg.tie_embeddings, (True,)),
        },
    )
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
        "layer_norm_epsilon": cfg.norm_eps,
        "tie_word_embeddings": True,
    }


GPT2 = Family(
    model_type="gpt2",
    hf_class="GPT2LMHeadModel",
    hf_config_class="GPT2Config",
    top=(
        t("wte.weight", "transformer.wte.weight", vocab_rows=True),
        t("wpe.weight", "transformer.wpe.weight"),
        t("ln_f.weight", "transformer.ln_f.weight"),
        t("ln_f.bias", "transformer.ln_f.bias"),
        t("lm_head.weight", "lm_head.weight", vocab_rows=True),
    ),
    block=(
        t("norm_1.weight", "ln_1.weight"),
        t("norm_1.bias", "ln_1.bias"),
        t("attn.qkv.weight", "attn.c_attn.weight", transpose=True),
        t("attn.qkv.bias", "attn.c_attn.bias"),
        t("attn.proj.weight", "attn.c_proj.weight", transpose=True),
        t("attn.proj.bias", "attn.c_proj.bias"),
        t("norm_2.weight", "ln_2.weight"),
        t("norm_2.bias", "ln_2.bias"),
        t("mlp.fc.weight", "mlp.c_fc.weight", transpose=True),
        t("mlp.fc.bias", "mlp.c_fc.bias"),
        t("mlp.proj.weight", "mlp.c_proj.weight", transpose=True),
        t("mlp.proj.bias", "mlp.c_proj.bias"),
    ),
    hf_block="transformer.h.{}.",
    config_from_hf=_gpt_config_from_hf,
    config_to_hf=_gpt_config_to_hf,
)
