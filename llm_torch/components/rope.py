"""Rotary position embeddings (RoPE), optionally with Llama 3.1's frequency scaling.

Queries and keys are rotated in HF's "rotate_half" layout: dimension ``i`` pairs with
``i + head_dim / 2`` (not with its neighbour, as in Meta's original complex-number code). With the
same layout as ``transformers``, Hugging Face Llama projections import without any permutation.

The cos/sin tables are computed once, in float32 as ``transformers`` does, and kept as
non-persistent buffers: they follow the module across devices and dtypes, never enter checkpoints,
and cost one slice (or gather) per forward pass, shared by every layer, instead of trigonometry
per step.
"""

import math
from collections.abc import Mapping
from typing import Any, NamedTuple

import torch
from torch import Tensor, nn

#: Keys of a ``rope_scaling`` dict (besides ``rope_type``), as in ``transformers``' configs.
LLAMA3_SCALING_KEYS: tuple[str, ...] = (
    "factor",
    "low_freq_factor",
    "high_freq_factor",
    "original_max_position_embeddings",
)


def validate_rope_scaling(scaling: Mapping[str, Any] | None) -> None:
    """Check a ``rope_scaling`` dict, so that a typo fails at config time, not as NaNs later.

    Args:
        scaling: ``None`` (plain RoPE) or ``{"rope_type": "llama3", "factor": ...,
            "low_freq_factor": ..., "high_freq_factor": ...,
            "original_max_position_embeddings": ...}``.

    Raises:
        ValueError: Unknown ``rope_type``, missing or unknown keys, or inconsistent values.
    """
    if scaling is None:
        return
    rope_type = scaling.get("rope_type")
    if rope_type != "llama3":
        raise ValueError(
            f"rope_scaling has rope_type={rope_type!r}; only 'llama3' is implemented (use "
            "rope_scaling=None for plain RoPE)."
        )
    keys = set(scaling) - {"rope_type"}
    missing = sorted(set(LLAMA3_SCALING_KEYS) - keys)
    unknown = sorted(keys - set(LLAMA3_SCALING_KEYS))
    if missing or unknown:
        raise ValueError(
            f"rope_scaling for 'llama3' needs exactly the keys {list(LLAMA3_SCALING_KEYS)}; "
            f"missing {missing}, unknown {unknown}."
        )
    if scaling["factor"] <= 0 or scaling["original_max_position_embeddings"] <= 0:
        raise ValueError(
            "rope_scaling 'factor' and 'original_max_position_embeddings' must be > 0."
        )
    if not 0 < scaling["low_freq_factor"] < scaling["high_freq_factor"]:
        raise ValueError(
            "rope_scaling needs 0 < low_freq_factor < high_freq_factor, got "
            f"{scaling['low_freq_factor']} and {scaling['high_freq_factor']}."
        )


def rope_inverse_frequencies(
    head_dim: int,
    theta: float,
    scaling: Mapping[str, Any] | None = None,
    device: torch.device | str | None = None,
) -> Tensor:
    """Return the ``head_dim / 2`` rotation speeds (radians per position), in float32.

    Llama 3.1 scaling stretches slow rotations (wavelength beyond the original context) by
    ``factor``, keeps fast ones (wavelength below ``original / high_freq_factor``), and blends the
    band between, so long contexts reuse angles seen in pre-training.
    """
    exponents = torch.arange(0, head_dim, 2, dtype=torch.int64, device=device).float() / head_dim
    inv_freq = 1.0 / (theta**exponents)
    if scaling is None:
        return inv_freq
    factor = scaling["factor"]
    low, high = scaling["low_freq_factor"], scaling["high_freq_factor"]
    original = scaling["original_max_position_embeddings"]
    wavelength = 2 * math.pi / inv_freq
    smooth = (original / wavelength - low) / (high - low)
    blended = (1 - smooth) * inv_freq / factor + smooth * inv_freq
    scaled = torch.where(wavelength > original / low, inv_freq / factor, blended)
    return torch.where(wavelength < original / high, inv_freq, scaled)


def rope_tables(
    head_dim: int,
    max_seq_len: int,
    theta: float,
    scaling: Mapping[str, Any] | None = None,
    device: torch.device | str | None = None,
) -> tuple[Tensor, Tensor]:
    """Return float32 ``(cos, sin)``, each ``(max_seq_len, head_dim)``, in rotate_half layout."""
    inv_freq = rope_inverse_frequencies(head_dim, theta, scaling, device)
    positions = torch.arange(max_seq_len, dtype=torch.int64, device=device).float()
    angles = torch.outer(positions, inv_freq)
    angles = torch.cat([angles, angles], dim=-1)  # dimension i and i + head_dim/2 share an angle
    return angles.cos(), angles.sin()


def rotate_half(x: Tensor) -> Tensor:
    """Map the pairs ``(x_i, x_{i+d/2})`` to ``(-x_{i+d/2}, x_i)``: a quarter turn of each pair."""
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat([-x2, x1], dim=-1)


def apply_rotary(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Rotate ``x`` ``(..., T, head_dim)`` by per-position angles given as ``cos``, ``sin``."""
    return x * cos + rotate_half(x) * sin


class RotaryEmbedding(nn.Module):
    """Rotary position embedding as a ``PositionalHook``: ``rope(q, k) -> (q, k)``.

    Only queries and keys are rotated (values carry content, not position), so attention scores
    depend on relative positions. One instance serves every layer of a model.

    Args:
        head_dim: Width of one attention head (even).
        max_seq_len: Number of positions to tabulate (the model's ``block_size``).
        theta: RoPE base; larger means slower rotations (Llama 2: 1e4, Llama 3: 5e5).
        scaling: ``None`` or a Llama 3.1 ``rope_scaling`` dict; see :func:`validate_rope_scaling`.
    """

    cos: Tensor
    sin: Tensor

    def __init__(
        self,
        head_dim: int,
        max_seq_len: int,
        theta: float = 10000.0,
        scaling: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__()
        if head_dim <= 0 or head_dim % 2:
            raise ValueError(f"RoPE needs an even, positive head_dim, got {head_dim}.")
        if theta <= 0:
            raise ValueError(f"RoPE theta must be positive, got {theta}.")
        validate_rope_scaling(scaling)
        self.head_dim = head_dim
        self.max_seq_len = max_seq_len
        self.theta = theta
        self.scaling = dict(scaling) if scaling is not None else None
        # float32 whatever the default dtype; `model.to(dtype)` may cast them later, as HF does.
        table = torch.empty(max_seq_len, head_dim, dtype=torch.float32)
        self.register_buffer("cos", table, persistent=False)
        self.register_buffer("sin", torch.empty_like(table), persistent=False)
        self.reset_buffers()

    def reset_buffers(self) -> None:
        """(Re)compute the tables in place, on the buffers' device and in their dtype.

        Call after ``to_empty`` (meta-device initialisation), which leaves buffers uninitialised.
        """
        cos, sin = rope_tables(
            self.head_dim, self.max_seq_len, self.theta, self.scaling, self.cos.device
        )
        with torch.no_grad():
            self.cos.copy_(cos)
            self.sin.copy_(sin)

    def forward(
        self, q: Tensor, k: Tensor, offset: int = 0, positions: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        """Rotate ``q`` and ``k`` ``(B, heads, T, head_dim)`` for positions ``offset..offset+T-1``.

        Args:
            q: Queries.
            k: Keys.
            offset: Position of the first token, when positions are contiguous and shared.
            positions: Integer positions ``(T,)`` or per row ``(B, T)`` (left-padded batches,
                the static cache), used instead of ``offset``.

        Raises:
            ValueError: If the positions run past ``max_seq_len``.
        """
        return self.at(q.size(-2), offset, positions)(q, k)

    def at(self, seq_len: int, offset: int = 0, positions: Tensor | None = None) -> "RotaryTables":
        """The rotation of one forward pass's positions, for every layer to apply.

        The tables are sliced (or gathered, for ``positions``) here, once per forward pass
        rather than once per layer.

        Args:
            seq_len: Number of positions.
            offset: Position of the first token, when positions are contiguous and shared.
            positions: Integer positions ``(T,)`` or per row ``(B, T)``, used instead of
                ``offset``. Not range-checked: a gather cannot be without a device sync; the
                caller keeps them below ``max_seq_len``.

        Raises:
            ValueError: If ``offset + seq_len`` passes ``max_seq_len``.
        """
        if positions is not None:
            cos, sin = self.cos[positions], self.sin[positions]
            if positions.dim() == 2:  # (B, T, head_dim) -> (B, 1, T, head_dim): shared by heads
                cos, sin = cos.unsqueeze(1), sin.unsqueeze(1)
            return RotaryTables(cos, sin)
        end = offset + seq_len
        if end > self.max_seq_len:
            raise ValueError(
                f"RoPE tables cover {self.max_seq_len} positions, but position {end - 1} was "
                "requested. Build the model with a larger block_size."
            )
        return RotaryTables(self.cos[offset:end], self.sin[offset:end])

    def extra_repr(self) -> str:
        """Show the table shape and settings in ``print(model)``."""
        return (
            f"head_dim={self.head_dim}, max_seq_len={self.max_seq_len}, theta={self.theta}, "
            f"scaling={self.scaling}"
        )


class RotaryTables(NamedTuple):
    """One forward pass's ``cos`` and ``sin`` rows, as a ``PositionalHook``: ``(q, k) -> (q, k)``.

    Built by :meth:`RotaryEmbedding.at`; each layer only casts them to its queries' dtype (a
    no-op unless autocast computes in another dtype than the tables are stored in).
    """

    cos: Tensor
    sin: Tensor

    def __call__(self, q: Tensor, k: Tensor) -> tuple[Tensor, Tensor]:
        """Rotate queries and keys ``(B, heads, T, head_dim)``."""
        cos, sin = self.cos.to(q.dtype), self.sin.to(q.dtype)
        return apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
