"""Position-wise feed-forward networks: GPT-2's MLP (GELU or ReLU^2) and Llama's SwiGLU."""

from collections.abc import Callable
from functools import partial

import torch.nn.functional as F
from torch import Tensor, nn


def relu_squared(x: Tensor) -> Tensor:
    """``relu(x) ** 2``: the speedrun MLP activation (Primer, So et al. 2021; modded-nanogpt)."""
    return F.relu(x).square()


#: Activations of :class:`MLP` by config name. ``gelu`` is the tanh approximation GPT-2 was
#: trained with (``gelu_new`` in ``transformers``): the exact erf form would drift from
#: pretrained weights.
ACTIVATIONS: dict[str, Callable[[Tensor], Tensor]] = {
    "gelu": partial(F.gelu, approximate="tanh"),
    "relu2": relu_squared,
}


class MLP(nn.Module):
    """GPT-2's feed-forward network: expand, activation, project back, dropout.

    Args:
        n_embd: Model width.
        hidden: Width of the hidden layer (GPT-2: ``4 * n_embd``).
        bias: Whether both projections have biases.
        dropout: Dropout on the output, active in training only.
        activation: A name in :data:`ACTIVATIONS`.
    """

    def __init__(
        self,
        n_embd: int,
        hidden: int,
        bias: bool = True,
        dropout: float = 0.0,
        activation: str = "gelu",
    ) -> None:
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ValueError(
                f"Unknown MLP activation {activation!r}; use one of {list(ACTIVATIONS)}."
            )
        self.fc = nn.Linear(n_embd, hidden, bias=bias)
        self.act = ACTIVATIONS[activation]
        self.proj = nn.Linear(hidden, n_embd, bias=bias)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        """Apply the network to ``x`` of shape ``(..., n_embd)``."""
        return self.dropout(self.proj(self.act(self.fc(x))))


class SwiGLUMLP(nn.Module):
    """Llama's gated feed-forward network: ``proj(silu(gate(x)) * up(x))``, then dropout.

    The gate and up projections are one fused ``fc`` layer whose output rows are
    ``cat(gate, up)``: one input matmul instead of two (as attention fuses q, k and v). Hugging
    Face interop concatenates ``gate_proj`` and ``up_proj`` into it, and splits it back.

    Args:
        n_embd: Model width.
        hidden: Width of the gated hidden layer (Llama 2 7B: 11008 for ``n_embd`` 4096).
        bias: Whether the projections have biases (Llama: no).
        dropout: Dropout on the output, active in training only.
    """

    def __init__(self, n_embd: int, hidden: int, bias: bool = False, dropout: float = 0.0) -> None:
        super().__init__()
        self.hidden = hidden
        self.fc = nn.Linear(n_embd, 2 * hidden, bias=bias)
        self.proj = nn.Linear(hidden, n_embd, bias=bias)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        """Apply the network to ``x`` of shape ``(..., n_embd)``."""
        gate, up = self.fc(x).chunk(2, dim=-1)
        return self.dropout(self.proj(F.silu(gate) * up))
