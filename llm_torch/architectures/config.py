"""``DecoderConfig``: the shape every decoder-only architecture shares.

An architecture is a subclass that adds its own fields (GPT's biases, Llama's key/value heads and
RoPE) and checks them in :meth:`DecoderConfig.validate`; naming, presets, vocabulary padding and
the common checks live here once.
"""

import copy
import inspect
import math
from dataclasses import dataclass, fields
from typing import Any, ClassVar, TypeVar

Config = TypeVar("Config", bound="DecoderConfig")

#: The signature default of a field whose default depends on the architecture; each architecture
#: fills in its own value (:attr:`DecoderConfig.arch_defaults`) when the field is left ``None``.
#: A parser that carries values from one architecture's config to another's (jsonargparse keeps
#: ``init_args`` across a ``class_path`` change) then carries ``None``, never the other's value.
ARCH_DEFAULT: Any = None


@dataclass
class DecoderConfig:
    """Everything that determines a decoder-only model's shape and regularisation.

    Optional fields are derived when ``None`` (see the ``resolved_*`` properties), so overriding
    ``n_embd`` or ``n_head`` of a preset re-derives them. Fields whose default differs between
    architectures (GPT-2's context is 1024 and tied, Llama's 2048 and untied) are ``None`` in the
    signature and take :attr:`arch_defaults` of the class being built: a subclass changes a
    default there, never by redeclaring the field (:meth:`__init_subclass__` refuses that).

    Attributes:
        vocab_size: Number of real tokens (logits have exactly this many columns).
        block_size: Maximum sequence length.
        n_layer: Number of transformer blocks.
        n_head: Number of (query) attention heads.
        n_embd: Model width.
        mlp_hidden: Width of the MLP's hidden layer; ``None``: the architecture's rule.
        head_dim: Width of one attention head; ``None`` means ``n_embd // n_head``.
        norm_eps: Epsilon of the normalisation layers.
        tie_embeddings: One tensor for the token embedding and the LM head.
        dropout: Dropout on embeddings, attention probabilities and residual branches.
        pad_vocab_size_multiple: Round the embedding table up to a multiple of this (64 speeds up
            the LM head matmul on GPUs). Padded rows never appear in the returned logits.
        rope_theta: RoPE base, for architectures with rotary positions (larger is slower).
        mlp_activation: The MLP's activation, one of the architecture's
            :attr:`mlp_activations` (``relu2``: ReLU squared, the speedrun recipe's); ``None``:
            the architecture's own, the first of them.
        qk_norm: RMS-normalise queries and keys per head before attention (see
            :class:`~llm_torch.components.CausalSelfAttention`).
        logit_softcap: ``None``, or ``c`` to squash logits to ``c * tanh(logits / c)`` (Gemma 2,
            modded-nanogpt), which keeps early training from over-confident predictions.
    """

    vocab_size: int = ARCH_DEFAULT
    block_size: int = ARCH_DEFAULT
    n_layer: int = 12
    n_head: int = 12
    n_embd: int = 768
    mlp_hidden: int | None = None
    head_dim: int | None = None
    norm_eps: float = 1e-5
    tie_embeddings: bool = ARCH_DEFAULT
    dropout: float = 0.0
    pad_vocab_size_multiple: int = 1
    rope_theta: float = 10000.0
    mlp_activation: str | None = None
    qk_norm: bool = False
    logit_softcap: float | None = None

    #: The architecture's values of the fields that default to :data:`ARCH_DEFAULT`.
    arch_defaults: ClassVar[dict[str, Any]] = {
        "vocab_size": 50257,
        "block_size": 1024,
        "tie_embeddings": True,
    }
    #: Named shapes for :meth:`from_name`: field overrides of the defaults.
    presets: ClassVar[dict[str, dict[str, Any]]] = {}
    #: Values of ``mlp_activation`` the architecture builds, its own first.
    mlp_activations: ClassVar[tuple[str, ...]] = ("gelu", "relu2")

    def __init_subclass__(cls, **kwargs: Any) -> None:
        """Refuse a subclass that redeclares a shared field, whose default would then be carried.

        jsonargparse fills a config's ``init_args`` with its class's signature defaults and keeps
        them when ``class_path`` switches to another class: a redeclared default (Llama's
        ``block_size: int = 2048``) would be silently replaced by the first class's.
        """
        super().__init_subclass__(**kwargs)
        shared = {field.name for field in fields(DecoderConfig)}
        redeclared = shared & inspect.get_annotations(cls).keys()
        if redeclared:
            raise TypeError(
                f"{cls.__name__} redeclares {sorted(redeclared)} of DecoderConfig: set their "
                "defaults in its arch_defaults instead, so they survive a class_path switch."
            )

    def __post_init__(self) -> None:
        for name, value in self.arch_defaults.items():
            if getattr(self, name) is None:
                setattr(self, name, value)
        try:
            self.validate()
        except ValueError as err:
            raise ValueError(f"{type(self).__name__}.{err}") from None

    def validate(self) -> None:
        """Raise ``ValueError("field ...")`` for an impossible shape; subclasses add checks."""
        for name in ("vocab_size", "block_size", "n_layer", "n_head", "n_embd"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}.")
        for name in ("mlp_hidden", "head_dim"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise ValueError(f"{name} must be positive or None, got {value}.")
        if self.head_dim is None and self.n_embd % self.n_head:
            raise ValueError(
                f"n_embd ({self.n_embd}) must be divisible by n_head ({self.n_head}), or set "
                "head_dim explicitly."
            )
        if self.norm_eps <= 0:
            raise ValueError(f"norm_eps must be positive, got {self.norm_eps}.")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}.")
        if self.pad_vocab_size_multiple <= 0:
            raise ValueError("pad_vocab_size_multiple must be positive (1: no padding).")
        if self.rope_theta <= 0:
            raise ValueError(f"rope_theta must be positive, got {self.rope_theta}.")
        if self.mlp_activation is not None and self.mlp_activation not in self.mlp_activations:
            raise ValueError(
                f"mlp_activation must be one of {list(self.mlp_activations)}, got "
                f"{self.mlp_activation!r}."
            )
        if self.logit_softcap is not None and self.logit_softcap <= 0:
            raise ValueError(
                f"logit_softcap must be positive or None (no capping), got {self.logit_softcap}."
            )

    @classmethod
    def from_name(cls: type[Config], name: str, **overrides: Any) -> Config:
        """Build a named preset with field overrides (derived fields re-derive)."""
        if name not in cls.presets:
            raise ValueError(
                f"Unknown {cls.__name__.removesuffix('Config')} preset {name!r}; choose one of "
                f"{sorted(cls.presets)}."
            )
        return cls(**{**copy.deepcopy(cls.presets[name]), **overrides})

    @property
    def padded_vocab_size(self) -> int:
        """Rows of the embedding table: ``vocab_size`` rounded up to the padding multiple."""
        multiple = self.pad_vocab_size_multiple
        return math.ceil(self.vocab_size / multiple) * multiple

    @property
    def resolved_mlp_activation(self) -> str:
        """The MLP's activation, the architecture's own when unset."""
        return self.mlp_activations[0] if self.mlp_activation is None else self.mlp_activation

    @property
    def resolved_head_dim(self) -> int:
        """Width of one attention head, ``n_embd // n_head`` when unset."""
        return self.n_embd // self.n_head if self.head_dim is None else self.head_dim
