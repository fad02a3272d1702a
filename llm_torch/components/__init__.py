"""Shared building blocks: attention, KV cache, MLPs, embeddings, RoPE, transformer blocks.

Normalisation layers are PyTorch's own (``nn.LayerNorm`` takes ``bias=False``; ``nn.RMSNorm``
computes what ``transformers``' ``LlamaRMSNorm`` does, bit for bit in float32), so they need no
wrapper here.
"""

from llm_torch.components.attention import CausalSelfAttention, PositionalHook
from llm_torch.components.block import TransformerBlock
from llm_torch.components.embedding import LearnedPositionEmbedding
from llm_torch.components.kv_cache import Context, KVCache, LayerCache, LayerView
from llm_torch.components.mlp import MLP, SwiGLUMLP
from llm_torch.components.rope import (
    RotaryEmbedding,
    RotaryTables,
    apply_rotary,
    rope_tables,
    rotate_half,
)

__all__ = [
    "MLP",
    "CausalSelfAttention",
    "Context",
    "KVCache",
    "LayerCache",
    "LayerView",
    "LearnedPositionEmbedding",
    "PositionalHook",
    "RotaryEmbedding",
    "RotaryTables",
    "SwiGLUMLP",
    "TransformerBlock",
    "apply_rotary",
    "rope_tables",
    "rotate_half",
]
