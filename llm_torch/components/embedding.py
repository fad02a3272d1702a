"""Position embeddings that are added to token embeddings."""

import torch
from torch import Tensor, nn


class LearnedPositionEmbedding(nn.Module):
    """GPT-2's learned absolute position embedding: one trained vector per position.

    Positions are contiguous, so the lookup is a slice of the table rather than a gather;
    ``offset`` lets incremental decoding (KV cache) ask for positions after a prefix.

    Args:
        block_size: Number of positions (the model's maximum sequence length).
        n_embd: Embedding width.
    """

    def __init__(self, block_size: int, n_embd: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(block_size, n_embd))
        nn.init.normal_(self.weight, std=0.02)

    def forward(self, seq_len: int, offset: int = 0) -> Tensor:
        """Return embeddings ``(seq_len, n_embd)`` for positions ``offset`` onwards."""
        return self.weight[offset : offset + seq_len]
