"""A preallocated key/value cache for incremental decoding.

Generating token ``t`` only needs the new token's query against the keys and values of all
earlier tokens, which do not change once computed. Caching them turns each decoding step from a
forward pass over the whole context into one over a single token.

The buffers are allocated once, at full length, and written in place, as in gpt-fast and litgpt:
no tensor grows or is reallocated per token, so memory is known up front and the allocator stays
idle inside the decoding loop.

Two ways to read it back, chosen by the type of ``input_pos``:

- ``int`` (dynamic): the written prefix, ``0 .. input_pos + T - 1``. The view grows by one
  position per step, which is cheapest in eager mode but gives every step a new shape.
- 0-d ``Tensor`` (static): the whole buffer, every step. Shapes never change, so a decode step
  compiles once and can be captured as a CUDA graph; the caller masks the unwritten positions.
  The position stays on the device: reading it here would cost a host sync in every layer, so
  the model checks its range once per forward pass (:func:`check_range`).
"""

import torch
from torch import Tensor, nn


class KVCache(nn.Module):
    """Keys and values of one attention layer, for up to ``batch_size`` sequences.

    Buffers are ``(batch_size, n_kv_head, max_len, head_dim)``: the layout
    ``F.scaled_dot_product_attention`` reads, so a prefix of the buffer is passed to it as is.
    Grouped-query models store only their ``n_kv_head`` key/value heads; SDPA's ``enable_gqa``
    shares them among the query heads. The buffers are non-persistent: they never enter a
    checkpoint.

    Positions are written as one contiguous run starting at ``input_pos``: a slice copy for an
    ``int``, an ``index_copy_`` for a tensor (see the module docstring for what each returns).

    Args:
        batch_size: Largest batch the cache serves; smaller batches use its first rows.
        n_kv_head: Number of key/value heads.
        max_len: Number of positions to hold.
        head_dim: Width of one head.
        dtype: Element type, the model's (keys and values are stored as the model computes them).
        device: Where the buffers live, the model's device.
    """

    k: Tensor
    v: Tensor

    def __init__(
        self,
        batch_size: int,
        n_kv_head: int,
        max_len: int,
        head_dim: int,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
    ) -> None:
        super().__init__()
        if batch_size <= 0 or max_len <= 0:
            raise ValueError(
                f"A KV cache needs a positive batch_size and max_len, got {batch_size} and "
                f"{max_len}."
            )
        shape = (batch_size, n_kv_head, max_len, head_dim)
        self.register_buffer("k", torch.zeros(shape, dtype=dtype, device=device), persistent=False)
        self.register_buffer("v", torch.zeros(shape, dtype=dtype, device=device), persistent=False)

    @property
    def batch_size(self) -> int:
        """Largest batch the cache serves."""
        return self.k.size(0)

    @property
    def max_len(self) -> int:
        """Number of positions the cache holds."""
        return self.k.size(2)

    def update(self, k: Tensor, v: Tensor, input_pos: int | Tensor) -> tuple[Tensor, Tensor]:
        """Store ``k``, ``v`` ``(B, n_kv_head, T, head_dim)`` at positions ``input_pos`` onwards.

        Args:
            k: Keys of the new positions (after any rotary embedding).
            v: Values of the new positions.
            input_pos: Position of the first new token: an ``int`` (earlier positions must have
                been written), or a 0-d integer tensor for the static, compilable read-back.

        Returns:
            Views into the buffers, valid until the next update: keys and values of positions
            ``0 .. input_pos + T - 1`` for an ``int``; all ``max_len`` positions for a tensor.

        Raises:
            ValueError: If the batch exceeds ``batch_size``, or an ``int`` position runs past
                ``max_len`` (a tensor position is the caller's to check, see the module
                docstring).
        """
        batch, seq_len = k.size(0), k.size(2)
        if batch > self.batch_size:
            raise ValueError(
                f"Batch of {batch} sequences does not fit a KV cache set up for {self.batch_size}."
            )
        if isinstance(input_pos, Tensor):
            index = input_pos + torch.arange(seq_len, device=k.device)
            self.k[:batch].index_copy_(2, index, k)
            self.v[:batch].index_copy_(2, index, v)
            return self.k[:batch], self.v[:batch]
        check_range(input_pos, seq_len, self.max_len)
        end = input_pos + seq_len
        self.k[:batch, :, input_pos:end] = k
        self.v[:batch, :, input_pos:end] = v
        return self.k[:batch, :, :end], self.v[:batch, :, :end]

    def reset(self) -> None:
        """Zero the buffers in place, as allocated, so a reused cache starts clean.

        A static step reads every slot, unwritten ones masked; masking a non-finite leftover
        (from an earlier run that overflowed) would still give ``0 * inf = NaN``.
        """
        self.k.zero_()
        self.v.zero_()

    def extra_repr(self) -> str:
        """Show the buffer shape in ``print(model)``."""
        return f"shape={tuple(self.k.shape)}, dtype={self.k.dtype}"


def check_range(input_pos: int, seq_len: int, max_len: int) -> None:
    """Raise if positions ``input_pos .. input_pos + seq_len - 1`` do not fit ``max_len``.

    Raises:
        ValueError: Naming the positions, the cache's length and the fix.
    """
    end = input_pos + seq_len
    if input_pos < 0 or end > max_len:
        raise ValueError(
            f"KV cache overflow: positions {input_pos}..{end - 1} were requested, but the "
            f"cache holds {max_len} positions. Set up the cache with a larger max_len "
            "(at most the model's block_size), or generate fewer tokens."
        )
