"""The key/value cache generation passes to the model: buffers, position and padding.

Generating token ``t`` only needs the new token's query against the keys and values of all
earlier tokens, which do not change once computed. Caching them turns each decoding step from a
forward pass over the whole context into one over a single token.

The model's forward pass only knows whole sequences; everything incremental lives here, in an
object the caller (:mod:`llm_torch.generation`) creates, positions and passes as
``model(idx, cache=cache)``, as in nanochat:

- :class:`LayerCache`: one attention layer's buffers, allocated once at full length and written
  in place (gpt-fast, litgpt): no tensor grows or is reallocated per token, so memory is known
  up front and the allocator stays idle inside the decoding loop.
- :class:`KVCache`: one per model: a ``LayerCache`` per layer, the slot the next forward pass
  writes to (:meth:`KVCache.seek`), each row's left padding and whether only the last position's
  logits are wanted. It turns these into one :class:`Context` per forward pass.
- :class:`Context`: what the layers of one forward pass share, built once rather than once per
  layer: positions, the attention mask, each layer's view of its buffers.

Two ways to read the buffers back, chosen by :meth:`KVCache.seek`:

- dynamic (default): the written prefix, ``0 .. pos + T - 1``. The view grows by one position
  per step, which is cheapest in eager mode but gives every step a new shape.
- static: the whole buffer, every step, under a mask, with the position as a 0-d device tensor.
  Shapes never change, so a decode step compiles once and can be captured as a CUDA graph. The
  cache keeps the position on the host as well, so range checks read nothing from the device.
"""

from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import Tensor


class LayerCache:
    """Keys and values of one attention layer, for up to ``batch_size`` sequences.

    Buffers are ``(batch_size, n_kv_head, max_len, head_dim)``: the layout
    ``F.scaled_dot_product_attention`` reads, so a prefix of the buffer is passed to it as is.
    Grouped-query models store only their ``n_kv_head`` key/value heads; SDPA's ``enable_gqa``
    shares them among the query heads. They are plain tensors, not module buffers: they never
    enter a checkpoint, and ``model.to(...)`` leaves them alone. They are marked as static
    addresses, so a compiled step writes them in place inside its CUDA graph.

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

    def __init__(
        self,
        batch_size: int,
        n_kv_head: int,
        max_len: int,
        head_dim: int,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
    ) -> None:
        if batch_size <= 0 or max_len <= 0:
            raise ValueError(
                f"A KV cache needs a positive batch_size and max_len, got {batch_size} and "
                f"{max_len}."
            )
        shape = (batch_size, n_kv_head, max_len, head_dim)
        self.k = torch.zeros(shape, dtype=dtype, device=device)
        self.v = torch.zeros(shape, dtype=dtype, device=device)
        torch._dynamo.mark_static_address(self.k)
        torch._dynamo.mark_static_address(self.v)

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
                ``max_len`` (a tensor position is the caller's to check: :class:`KVCache` does,
                from its host copy).
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

    def __repr__(self) -> str:
        """Show the buffer shape."""
        return f"LayerCache(shape={tuple(self.k.shape)}, dtype={self.k.dtype})"


class LayerView(NamedTuple):
    """One layer's buffers, bound to the first slot of the current forward pass."""

    cache: LayerCache
    input_pos: int | Tensor

    def update(self, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        """Write ``k``, ``v`` at this pass's slots; the keys and values to attend to."""
        return self.cache.update(k, v, self.input_pos)


@dataclass(frozen=True)
class Context:
    """What every layer of one forward pass shares: positions, attention mask, cache views.

    The default, ``Context()``, is a whole sequence from position 0 under plain causal
    attention, with nothing cached: training and evaluation.

    Attributes:
        offset: Position of the first token, when positions are contiguous and shared by rows.
        positions: Integer positions ``(T,)`` or per row ``(B, T)``, replacing ``offset``
            (left-padded rows, the static cache); never past the model's ``block_size``.
        mask: Boolean ``(T, keys)`` or ``(B or 1, 1, T, keys)``, ``True`` where a query may
            attend; ``None`` means causal when queries and keys have the same length, else
            every key (one query after a cached prefix).
        layers: Each attention layer's :class:`LayerView`, in order; empty without a cache.
    """

    offset: int = 0
    positions: Tensor | None = None
    mask: Tensor | None = None
    layers: Sequence[LayerView] = ()

    def layer(self, index: int) -> LayerView | None:
        """Attention layer ``index``'s view of the cache, or ``None`` when nothing is cached."""
        return self.layers[index] if self.layers else None


class KVCache:
    """One model's key/value cache for generation, and where its batch stands.

    Created by the caller (see :func:`llm_torch.generation.new_cache`) and passed as
    ``model(idx, cache=cache)``; the model keeps no decoding state of its own. Nothing moves on
    its own: :meth:`seek` sets the slot the next forward pass writes, so a compiled step never
    has to read or bump a host integer.

    Args:
        layers: One :class:`LayerCache` per attention layer, in the order the model runs them.
            None at all is a forward pass that stores nothing (left-padded rows without a
            cache): it always starts at position 0.
        pad: Left padding per row ``(B,)``, for batches of prompts of different lengths: row
            ``b``'s first ``pad[b]`` slots are ignored and its positions start after them, so
            each row computes what it would alone. ``None``: no padding.
        last_only: Return the logits of the last position only, ``(B, 1, vocab_size)``: all that
            generation needs, and the LM head over a whole prompt is a large share of prefill
            (over 30% of the FLOPs for GPT-2 124M at 512 tokens).

    Attributes:
        pos: Slot of the next forward pass's first token, on the host.
        input_pos: The same as a 0-d device tensor after ``seek(pos, static=True)``, else
            ``None``; the static path reads the whole cache through it.
    """

    def __init__(
        self,
        layers: Sequence[LayerCache] = (),
        pad: Tensor | None = None,
        last_only: bool = False,
    ) -> None:
        self.layers = list(layers)
        self.pad = pad
        self.last_only = last_only
        self.pos = 0
        self.input_pos: Tensor | None = None
        first = self.layers[0] if self.layers else None
        # Every static position as a view into one tensor: seeking is then free on the host
        # (no kernel, no copy, no sync), and a compiled step sees a fresh 0-d input each time.
        self._slots = None if first is None else torch.arange(first.max_len, device=first.k.device)

    @property
    def batch_size(self) -> int:
        """Largest batch the buffers serve (0 without buffers)."""
        return self.layers[0].batch_size if self.layers else 0

    @property
    def max_len(self) -> int:
        """Number of positions the buffers hold (0 without buffers)."""
        return self.layers[0].max_len if self.layers else 0

    def seek(self, pos: int, static: bool = False) -> "KVCache":
        """Make the next forward pass write slots ``pos`` onwards; returns the cache itself.

        Args:
            pos: Slot of the next token: ``0`` for the prompt, then the number already fed.
            static: Read the whole cache under a mask instead of the written prefix, with the
                position as a device tensor, so every decode step has the same shapes and can be
                compiled.

        Raises:
            ValueError: If the cache stores nothing and ``pos`` is not 0 or ``static`` is set,
                or a static position is past the cache.
        """
        if self._slots is None:
            if pos or static:
                raise ValueError(
                    "This KVCache has no buffers, so it only runs whole sequences from position "
                    "0; create one with llm_torch.generation.new_cache to decode incrementally."
                )
        elif static:
            check_range(pos, 1, self.max_len)
        self.pos = pos
        self.input_pos = self._slots[pos] if static and self._slots is not None else None
        return self

    def reset(self) -> None:
        """Zero the buffers and go back to slot 0, so a reused cache starts clean."""
        for layer in self.layers:
            layer.reset()
        self.seek(0)

    def context(self, batch: int, seq_len: int, device: torch.device) -> Context:
        """Positions, mask and layer views for a forward pass over ``(batch, seq_len)`` ids.

        Query ``t`` sits in slot ``i = pos + t``. It sees slot ``j`` when ``j <= i`` and ``j``
        is not its row's padding. A padding query sees itself only: a row with no key at all
        would give NaN, which would leak through the values (``0 * NaN``) into real rows.
        Positions are slots minus the row's padding, so RoPE and learned tables see exactly the
        positions of the prompt run alone.

        Raises:
            ValueError: If ``pad`` is not ``(batch,)``, or (eagerly) a static position runs past
                the cache.
        """
        pad = self.pad
        if pad is not None and (pad.dim() != 1 or pad.size(0) != batch):
            raise ValueError(
                f"pad must hold one left-padding count per row, shape ({batch},); got "
                f"{tuple(pad.shape)}."
            )
        first: int | Tensor
        if self.input_pos is not None:  # static; a compiled step must not read the host int
            if not torch.compiler.is_compiling():
                check_range(self.pos, seq_len, self.max_len)
            first, keys_len = self.input_pos, self.max_len
        else:
            first = self.pos
            keys_len = first + seq_len
        layers = [LayerView(layer, first) for layer in self.layers]
        if pad is None and isinstance(first, int):  # contiguous positions from the int offset
            mask = None
            if first > 0 and seq_len > 1:
                # Queries start mid-sequence. SDPA's is_causal aligns the mask to the top-left
                # corner (query i sees keys <= i), which is only right when both start at 0. One
                # query sees every cached key: no mask. A chunk gets its causal band explicitly.
                mask = torch.ones(seq_len, keys_len, dtype=torch.bool, device=device)
                mask = mask.tril(diagonal=first)
            return Context(offset=first, mask=mask, layers=layers)
        slots = first + torch.arange(seq_len, device=device)
        keys = torch.arange(keys_len, device=device)
        visible = keys <= slots[:, None]  # (T, keys)
        if pad is None:
            return Context(positions=slots, mask=visible[None, None], layers=layers)
        rows = pad.to(device)[:, None, None]
        visible = visible & ((keys >= rows) | (keys == slots[:, None]))  # (B, T, keys)
        positions = (slots - rows[:, :, 0]).clamp(min=0)
        return Context(positions=positions, mask=visible[:, None], layers=layers)


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
