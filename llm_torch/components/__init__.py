"""Building blocks shared by every architecture: attention, MLPs, embeddings, blocks.

Normalisation layers are PyTorch's own (``nn.LayerNorm`` takes ``bias=False``), so they need no
wrapper here.
"""

from llm_torch.components.attention import CausalSelfAttention, PositionalHook
from llm_torch.components.block import TransformerBlock
from llm_torch.components.embedding import LearnedPositionEmbedding
from llm_torch.components.mlp import GELUMLP

__all__ = [
    "GELUMLP",
    "CausalSelfAttention",
    "LearnedPositionEmbedding",
    "PositionalHook",
    "TransformerBlock",
]
