"""Qwen 3 family of the Hugging Face interop: ``Llama(qk_norm=True)`` <-> ``Qwen3ForCausalLM``.

Qwen 3 is Llama with a per-head RMSNorm on queries and keys before RoPE, sharing the block
norms' epsilon, as llm-torch's QK-norm does. So its table is Llama's plus the two norms, and its
config translation is Llama's with ``qk_norm`` on and sliding-window attention refused (llm-torch
attends to the whole context in every layer).
"""

from dataclasses import replace
from typing import Any

from llm_torch.architectures.llama import LlamaConfig
from llm_torch.interop.common import refuse, t
from llm_torch.interop.llama import LLAMA, llama_config_from_hf, llama_config_to_hf


def _qwen3_config_from_hf(hf_config: Any) -> LlamaConfig:
    """Translate a ``transformers.Qwen3Config``, refusing sliding-window layers."""
    # ``layer_types`` is what the model runs (transformers derives it from use_sliding_window,
    # sliding_window and max_window_layers when a config omits it).
    refuse(
        "Qwen 3",
        {"layer_types": (sorted(set(hf_config.layer_types)), (["full_attention"],))},
    )
    return llama_config_from_hf(hf_config, "Qwen 3", qk_norm=True)


def _qwen3_config_to_hf(cfg: LlamaConfig) -> dict[str, Any]:
    """``transformers.Qwen3Config`` arguments for a Llama with QK-norm: full attention only.

    Raises:
        ValueError: For options ``Qwen3ForCausalLM`` lacks (no QK-norm, ReLU^2, soft-capping).
    """
    kwargs = llama_config_to_hf(cfg, "Qwen 3", qk_norm=True)
    del kwargs["mlp_bias"]  # Qwen 3's MLP never has biases; the key is not Qwen3Config's
    return {
        **kwargs,
        "use_sliding_window": False,
        "sliding_window": None,
        "layer_types": ["full_attention"] * cfg.n_layer,
    }


QWEN3 = replace(
    LLAMA,
    model_type="qwen3",
    hf_class="Qwen3ForCausalLM",
    hf_config_class="Qwen3Config",
    block=(
        *LLAMA.block,
        t("attn.q_norm.weight", "self_attn.q_norm.weight"),
        t("attn.k_norm.weight", "self_attn.k_norm.weight"),
    ),
    config_from_hf=_qwen3_config_from_hf,
    config_to_hf=_qwen3_config_to_hf,
)
