"""Causal self-attention on PyTorch's fused ``scaled_dot_product_attention``.

One module serves every architecture: multi-head (GPT-2), grouped-query and multi-query attention
(Llama) differ only in ``n_kv_head``; position schemes that act on queries and keys (rotary
embeddings) plug in through a ``PositionalHook`` passed to ``forward``.
"""

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from llm_torch.components.kv_cache import KVCache

#: Maps ``(q, k)``, each ``(B, heads, T, head_dim)``, to position-encoded ``(q, k)``.
PositionalHook = Callable[[Tensor, Tensor], tuple[Tensor, Tensor]]


class CausalSelfAttention(nn.Module):
    """Causal self-attention with ``n_kv_head <= n_head`` key/value heads.

    Queries, keys and values come from one fused projection (GPT-2's ``c_attn`` layout, extended
    for fewer key/value heads), so a forward pass runs a single input matmul. The attention
    itself is ``F.scaled_dot_product_attention``, which picks flash / memory-efficient kernels
    on GPU.

    The pass is split into projection (``qkv``), attention and output projection, so a KV cache only
    has to slot its update between the first two: with ``input_pos`` given, the new keys and
    values are written to ``kv_cache`` and the queries attend to everything cached so far. Masks
    for left-padded batches and the static cache come from the model (``attn_mask``), built once
    per forward pass rather than once per layer.

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
        self.kv_cache: KVCache | None = None

    def forward(
        self,
        x: Tensor,
        positional: PositionalHook | None = None,
        input_pos: int | Tensor | None = None,
        attn_mask: Tensor | None = None,
    ) -> Tensor:
        """Attend over ``x`` of shape ``(B, T, n_embd)``; position ``t`` sees positions ``<= t``.

        Args:
            x: Input activations.
            positional: Position encoding applied to queries and keys (for ``x``'s positions).
            input_pos: ``None`` (training, full sequences): no cache. Otherwise the cache slot of
                ``x[:, 0]``; keys and values go to ``kv_cache``. An ``int`` attends to slots
                ``0 .. input_pos + T - 1``; a 0-d tensor to the whole cache (static shapes), which
                needs ``attn_mask``.
            attn_mask: Boolean ``(B or 1, 1, T, keys)``, ``True`` where a query may attend; it
                replaces the causal mask (left-padded batches, the static cache). ``keys`` is
                ``T`` without a cache, ``input_pos + T`` for an ``int`` position, else the cache's
                ``max_len``.

        Raises:
            RuntimeError: If ``input_pos`` is given but no cache is set up.
        """
        q, k, v = self.project_qkv(x)
        if self.q_norm is not None and self.k_norm is not None:
            q, k = self.q_norm(q), self.k_norm(k)
        if positional is not None:
            q, k = positional(q, k)
        is_causal, mask = attn_mask is None, attn_mask
        if input_pos is not None:
            if self.kv_cache is None:
                raise RuntimeError(
                    "input_pos was given but attention has no KV cache: call "
                    "model.setup_cache(batch_size, max_len) first, or pass input_pos=None."
                )
            k, v = self.kv_cache.update(k, v, input_pos)
            if mask is None and isinstance(input_pos, Tensor):
                raise ValueError("A tensor input_pos reads the whole cache: pass attn_mask too.")
            if mask is None and isinstance(input_pos, int) and input_pos > 0:
                # Queries now start mid-sequence. SDPA's is_causal aligns the mask to the top-left
                # corner (query i sees keys <= i), which is only right when both start at 0. One
                # query sees every cached key: no mask. A chunk gets its causal band explicitly.
                is_causal = False
                seq_len = q.size(2)
                if seq_len > 1:
                    mask = torch.ones(
                        seq_len, input_pos + seq_len, dtype=torch.bool, device=q.device
                    ).tril(diagonal=input_pos)
        y = F.scaled_dot_product_attention(
            q,
            k,
            v,
            attn_mask=mask,
            dropout_p=self.dropout if self.training else 0.0,
            is_causal=is_causal,
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

    def setup_cache(
        self,
        batch_size: int,
        max_len: int,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
    ) -> None:
        """Allocate a KV cache for ``batch_size`` sequences of up to ``max_len`` positions."""
        self.kv_cache = KVCache(batch_size, self.n_kv_head, max_len, self.head_dim, dtype, device)

    def clear_cache(self) -> None:
        """Free the KV cache; attention works as before it was set up."""
        self.kv_cache = None
