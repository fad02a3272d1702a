"""Position-wise feed-forward networks."""

from torch import Tensor, nn


class GELUMLP(nn.Module):
    """GPT-2's feed-forward network: expand, GELU (tanh approximation), project back, dropout.

    GPT-2 was trained with the tanh approximation of GELU (``gelu_new`` in ``transformers``);
    using the exact erf form would drift from pretrained weights.

    Args:
        n_embd: Model width.
        hidden: Width of the hidden layer (GPT-2: ``4 * n_embd``).
        bias: Whether both projections have biases.
        dropout: Dropout on the output, active in training only.
    """

    def __init__(self, n_embd: int, hidden: int, bias: bool = True, dropout: float = 0.0) -> None:
        super().__init__()
        self.fc = nn.Linear(n_embd, hidden, bias=bias)
        self.act = nn.GELU(approximate="tanh")
        self.proj = nn.Linear(hidden, n_embd, bias=bias)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        """Apply the network to ``x`` of shape ``(..., n_embd)``."""
        return self.dropout(self.proj(self.act(self.fc(x))))
