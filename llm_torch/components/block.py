"""The pre-norm transformer block shared by GPT-2 and Llama."""

from torch import Tensor, nn

from llm_torch.components.attention import CausalSelfAttention, PositionalHook
from llm_torch.components.kv_cache import LayerView


class TransformerBlock(nn.Module):
    """Pre-norm residual block: ``x + attn(norm_1(x))``, then ``x + mlp(norm_2(x))``.

    The block only fixes the wiring; architectures choose the pieces (LayerNorm or RMSNorm,
    GELU or SwiGLU MLP, with or without biases), which keeps every model a short assembly.

    Args:
        attn: Causal self-attention.
        mlp: Position-wise feed-forward network.
        norm_1: Normalisation before attention.
        norm_2: Normalisation before the feed-forward network.
    """

    def __init__(
        self, attn: CausalSelfAttention, mlp: nn.Module, norm_1: nn.Module, norm_2: nn.Module
    ) -> None:
        super().__init__()
        self.norm_1 = norm_1
        self.attn = attn
        self.norm_2 = norm_2
        self.mlp = mlp

    def forward(
        self,
        x: Tensor,
        positional: PositionalHook | None = None,
        kv: LayerView | None = None,
        attn_mask: Tensor | None = None,
    ) -> Tensor:
        """Apply the block to ``x`` of shape ``(B, T, n_embd)``.

        ``positional``, ``kv`` and ``attn_mask`` go to attention: see
        :class:`CausalSelfAttention`.
        """
        x = x + self.attn(self.norm_1(x), positional, kv, attn_mask)
        return x + self.mlp(self.norm_2(x))
