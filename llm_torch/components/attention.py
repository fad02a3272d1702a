"""Causal self-attention on PyTorch's fused ``scaled_dot_product_attention``.

One module serves every architecture: multi-head (GPT-2), grouped-query and multi-query attention
(Llama) differ only in ``n_kv_head``; position schemes that act on queries and keys (rotary
embeddings) plug in through a ``PositionalHook`` passed to ``forward``.
"""

from collections.abc import Callable

import torch.nn.functional as F
from torch import Tensor, nn

from llm_torch.components.kv_cache import LayerView

#: Maps ``(q, k)``, each ``(B, heads, T, head_dim)``, to position-encoded ``(q, k)``.
PositionalHook = Callable[[Tensor, Tensor], tuple[Tensor, Tensor]]


class CausalSelfAttention(nn.Module):
    """Causal self-attention with ``n_kv_head <= n_head`` key/value heads.

    Queries, keys and values come from one fused projection (GPT-2's ``c_attn`` layout, extended
    for fewer key/value heads), so a forward pass runs a single input matmul. The attention
    itself is ``F.scaled_dot_product_attention``, which picks flash / memory-efficient kernels
    on GPU.

    The pass is split into projection (``qkv``), attention and output projection, so a KV cache only
    has to slot its update between the first two: given this layer's view of the cache (``kv``),
    the new keys and values are written to it and the queries attend to everything cached so
    far. Masks for left-padded batches, cached chunks and the static cache come from the cache
    (``attn_mask``), built once per forward pass rather than once per layer.

    Args:
        n_embd: Model width (input and output features).
        n_head: Number of query heads.
        n_kv_head: Number of key/value heads; ``None`` means ``n_head`` (multi-head attention).
            Must divide ``n_head``: each key/value head serves ``n_head // n_kv_head`` query heads.
        head_dim: Width of one head; ``None`` means ``n_embd // n_head``.
        bias: Whether the projections have biases (GPT-2: yes, Llama: no).
        dropout: Dropout on attention probabilities and on the output, active in training only.
        qk_norm: RMS-normalise each query and key head before positions are applied (OLMo 2,
            Qwen 3, modded-nanogpt): attention logits stay bounded, which tolerates higher
            learning rates.
        norm_eps: Epsilon of the QK norms.
    """

    def __init__(
        self,
        n_embd: int,
        n_head: int,
        n_kv_head: int | None = None,
        head_dim: int | None = None,
        bias: bool = True,
        dropout: float = 0.0,
        qk_norm: bool = False,
        norm_eps: float = 1e-5,
    ) -> None:
        super().__init__()
        n_kv_head = n_head if n_kv_head is None else n_kv_head
        if head_dim is None:
            if n_embd % n_head:
                raise ValueError(f"n_embd ({n_embd}) must be divisible by n_head ({n_head}).")
            head_dim = n_embd // n_head
        if not 1 <= n_kv_head <= n_head or n_head % n_kv_head:
            raise ValueError(
                f"n_kv_head ({n_kv_head}) must divide n_head ({n_head}): each key/value head "
                "serves an equal group of query heads."
            )
        self.n_head = n_head
        self.n_kv_head = n_kv_head
        self.head_dim = head_dim
        self.dropout = dropout
        self.qkv = nn.Linear(n_embd, (n_head + 2 * n_kv_head) * head_dim, bias=bias)
        self.proj = nn.Linear(n_head * head_dim, n_embd, bias=bias)
        self.resid_dropout = nn.Dropout(dropout)
        self.q_norm = nn.RMSNorm(head_dim, eps=norm_eps) if qk_norm else None
        self.k_norm = nn.RMSNorm(head_dim, eps=norm_eps) if qk_norm else None

    def forward(
        self,
        x: Tensor,
        positional: PositionalHook | None = None,
        kv: LayerView | None = None,
        attn_mask: Tensor | None = None,
    ) -> Tensor:
        """Attend over ``x`` of shape ``(B, T, n_embd)``; position ``t`` sees positions ``<= t``.

        Args:
            x: Input activations.
            positional: Position encoding applied to queries and keys (for ``x``'s positions).
            kv: This layer's view of a KV cache (see :class:`~llm_torch.components.KVCache`):
                the new keys and values are written to it and the queries attend to what it
                returns. ``None`` (training, evaluation): no cache.
            attn_mask: Boolean ``(T, keys)`` or ``(B or 1, 1, T, keys)``, ``True`` where a query
                may attend; it replaces the causal mask. Without it, queries attend causally
                when there are as many keys as queries, else (one query after a cached prefix)
                to every key.
        """
        q, k, v = self.project_qkv(x)
        if self.q_norm is not None and self.k_norm is not None:
            q, k = self.q_norm(q), self.k_norm(k)
        if positional is not None:
            q, k = positional(q, k)
        if kv is not None:
            k, v = kv.update(k, v)
        y = F.scaled_dot_product_attention(
            q,
            k,
            v,
            attn_mask=attn_mask,
            dropout_p=self.dropout if self.training else 0.0,
            is_causal=attn_mask is None and q.size(2) == k.size(2),
            enable_gqa=self.n_kv_head != self.n_head,
        )
        batch, _, seq_len, _ = y.shape
        y = y.transpose(1, 2).reshape(batch, seq_len, self.n_head * self.head_dim)
        return self.resid_dropout(self.proj(y))

    def project_qkv(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Project ``x`` to queries ``(B, n_head, T, hd)`` and keys, values ``(B, n_kv, T, hd)``."""
        batch, seq_len, _ = x.shape
        q_size = self.n_head * self.head_dim
        kv_size = self.n_kv_head * self.head_dim
        q, k, v = self.qkv(x).split([q_size, kv_size, kv_size], dim=-1)
        q = q.view(batch, seq_len, self.n_head, self.head_dim).transpose(1, 2)
        k = k.view(batch, seq_len, self.n_kv_head, self.head_dim).transpose(1, 2)
        v = v.view(batch, seq_len, self.n_kv_head, self.head_dim).transpose(1, 2)
        return q, k, v
