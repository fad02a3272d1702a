"""Llama (Llama 2, Llama 3.x, TinyLlama), assembled from the shared components.

The model computes what ``transformers.LlamaForCausalLM`` computes: rotary positions (optionally
with Llama 3.1 frequency scaling), pre-RMSNorm blocks with grouped-query attention and SwiGLU MLPs,
no biases, a final RMSNorm and an LM head that is tied to the token embedding or not.
``forward`` returns logits; the loss belongs to the training engine.
"""

import copy
import math
from dataclasses import dataclass
from functools import partial
from typing import Any

from torch import Tensor, nn

from llm_torch.architectures.base import DecoderLM
from llm_torch.components import CausalSelfAttention, RotaryEmbedding, SwiGLUMLP, TransformerBlock
from llm_torch.components.rope import validate_rope_scaling

#: Named shapes. ``llama-nano`` is for CPU experiments (its vocabulary is set by the data); the
#: others match the released checkpoints' ``config.json`` (``block_size`` is HF's
#: ``max_position_embeddings``: 131072 for Llama 3.2, whose RoPE scaling extends the 8192-token
#: pre-training context).
LLAMA_PRESETS: dict[str, dict[str, Any]] = {
    "llama-nano": {
        "block_size": 256,
        "n_layer": 4,
        "n_head": 4,
        "n_kv_head": 2,
        "n_embd": 128,
        "mlp_hidden": 384,
        "tie_embeddings": True,
    },
    "tinyllama-1.1b": {
        "vocab_size": 32000,
        "block_size": 2048,
        "n_layer": 22,
        "n_head": 32,
        "n_kv_head": 4,
        "n_embd": 2048,
        "mlp_hidden": 5632,
        "norm_eps": 1e-5,
        "rope_theta": 10000.0,
        "tie_embeddings": False,
    },
    "llama-3.2-1b": {
        "vocab_size": 128256,
        "block_size": 131072,
        "n_layer": 16,
        "n_head": 32,
        "n_kv_head": 8,
        "n_embd": 2048,
        "mlp_hidden": 8192,
        "norm_eps": 1e-5,
        "rope_theta": 500000.0,
        "rope_scaling": {
            "rope_type": "llama3",
            "factor": 32.0,
            "low_freq_factor": 1.0,
            "high_freq_factor": 4.0,
            "original_max_position_embeddings": 8192,
        },
        "tie_embeddings": True,
    },
}


@dataclass
class LlamaConfig:
    """Everything that determines a Llama's shape and regularisation.

    Optional fields are derived when ``None`` (see the ``resolved_*`` properties), so overriding
    ``n_embd`` or ``n_head`` of a preset re-derives them.

    Attributes:
        vocab_size: Number of real tokens (logits have exactly this many columns).
        block_size: Maximum sequence length (rows of the RoPE tables).
        n_layer: Number of transformer blocks.
        n_head: Number of query heads.
        n_kv_head: Number of key/value heads (``n_head``: MHA, fewer: GQA, 1: MQA); ``None``
            means ``n_head``.
        n_embd: Model width.
        mlp_hidden: Width of the SwiGLU hidden layer; ``None`` means Meta's rule,
            ``8 * n_embd / 3`` rounded up to a multiple of 256.
        head_dim: Width of one head; ``None`` means ``n_embd // n_head``.
        norm_eps: RMSNorm epsilon.
        rope_theta: RoPE base.
        rope_scaling: ``None`` or Llama 3.1 scaling, ``{"rope_type": "llama3", "factor",
            "low_freq_factor", "high_freq_factor", "original_max_position_embeddings"}``.
        tie_embeddings: Share one tensor between token embedding and LM head.
        dropout: Dropout on embeddings, attention probabilities and residual branches.
        pad_vocab_size_multiple: Round the embedding table up to a multiple of this (64 speeds up
            the LM head matmul on GPUs). Padded rows never appear in the returned logits.
    """

    vocab_size: int = 32000
    block_size: int = 2048
    n_layer: int = 12
    n_head: int = 12
    n_kv_head: int | None = None
    n_embd: int = 768
    mlp_hidden: int | None = None
    head_dim: int | None = None
    norm_eps: float = 1e-5
    rope_theta: float = 10000.0
    rope_scaling: dict[str, Any] | None = None
    tie_embeddings: bool = False
    dropout: float = 0.0
    pad_vocab_size_multiple: int = 1

    def __post_init__(self) -> None:
        for name in ("vocab_size", "block_size", "n_layer", "n_head", "n_embd"):
            if getattr(self, name) <= 0:
                raise ValueError(f"LlamaConfig.{name} must be positive, got {getattr(self, name)}.")
        for name in ("n_kv_head", "mlp_hidden", "head_dim"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise ValueError(f"LlamaConfig.{name} must be positive or None, got {value}.")
        if self.head_dim is None and self.n_embd % self.n_head:
            raise ValueError(
                f"LlamaConfig.n_embd ({self.n_embd}) must be divisible by n_head ({self.n_head}), "
                "or set head_dim explicitly."
            )
        if self.n_head % self.resolved_n_kv_head:
            raise ValueError(
                f"LlamaConfig.n_kv_head ({self.n_kv_head}) must divide n_head ({self.n_head}): "
                "each key/value head serves an equal group of query heads."
            )
        if self.resolved_head_dim % 2:
            raise ValueError(
                f"LlamaConfig head dimension ({self.resolved_head_dim}) must be even: RoPE "
                "rotates pairs of dimensions."
            )
        if self.rope_theta <= 0:
            raise ValueError(f"LlamaConfig.rope_theta must be positive, got {self.rope_theta}.")
        try:
            validate_rope_scaling(self.rope_scaling)
        except ValueError as err:
            raise ValueError(f"LlamaConfig.{err}") from None
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"LlamaConfig.dropout must be in [0, 1), got {self.dropout}.")
        if self.pad_vocab_size_multiple <= 0:
            raise ValueError(
                "LlamaConfig.pad_vocab_size_multiple must be positive (1: no padding)."
            )

    @classmethod
    def from_name(cls, name: str, **overrides: Any) -> "LlamaConfig":
        """Build a named preset (``llama-nano``, ``tinyllama-1.1b``, ...) with field overrides."""
        if name not in LLAMA_PRESETS:
            raise ValueError(
                f"Unknown Llama preset {name!r}; choose one of {sorted(LLAMA_PRESETS)}."
            )
        return cls(**{**copy.deepcopy(LLAMA_PRESETS[name]), **overrides})

    @property
    def padded_vocab_size(self) -> int:
        """Rows of the embedding table: ``vocab_size`` rounded up to the padding multiple."""
        multiple = self.pad_vocab_size_multiple
        return math.ceil(self.vocab_size / multiple) * multiple

    @property
    def resolved_n_kv_head(self) -> int:
        """Number of key/value heads, ``n_head`` when unset."""
        return self.n_head if self.n_kv_head is None else self.n_kv_head

    @property
    def resolved_head_dim(self) -> int:
        """Width of one attention head, ``n_embd // n_head`` when unset."""
        return self.n_embd // self.n_head if self.head_dim is None else self.head_dim

    @property
    def resolved_mlp_hidden(self) -> int:
        """SwiGLU hidden width; Meta's rule (``8/3 * n_embd``, multiple of 256) when unset."""
        if self.mlp_hidden is not None:
            return self.mlp_hidden
        return 256 * math.ceil(int(8 * self.n_embd / 3) / 256)


class Llama(DecoderLM):
    """Llama language model: token ids ``(B, T)`` in, next-token logits ``(B, T, vocab_size)`` out.

    Args:
        config: The model's shape; see :class:`LlamaConfig`.
    """

    def __init__(self, config: LlamaConfig) -> None:
        super().__init__()
        self.config = config
        head_dim = config.resolved_head_dim
        self.wte = nn.Embedding(config.padded_vocab_size, config.n_embd)
        self.drop = nn.Dropout(config.dropout)
        # One set of cos/sin tables, shared by every layer through the positional hook.
        self.rope = RotaryEmbedding(
            head_dim, config.block_size, config.rope_theta, config.rope_scaling
        )
        self.blocks = nn.ModuleList(
            TransformerBlock(
                attn=CausalSelfAttention(
                    config.n_embd,
                    config.n_head,
                    n_kv_head=config.resolved_n_kv_head,
                    head_dim=head_dim,
                    bias=False,
                    dropout=config.dropout,
                ),
                mlp=SwiGLUMLP(config.n_embd, config.resolved_mlp_hidden, dropout=config.dropout),
                norm_1=nn.RMSNorm(config.n_embd, eps=config.norm_eps),
                norm_2=nn.RMSNorm(config.n_embd, eps=config.norm_eps),
            )
            for _ in range(config.n_layer)
        )
        # Named ln_f like GPT's (and litgpt's) so engine code can treat both models alike.
        self.ln_f = nn.RMSNorm(config.n_embd, eps=config.norm_eps)
        self.lm_head = nn.Linear(config.n_embd, config.padded_vocab_size, bias=False)
        self._init_parameters()  # RotaryEmbedding built its tables already

    def init_weights(self) -> None:
        """Initialise every weight and rebuild the RoPE tables.

        Meant for meta-device construction: ``to_empty(device=...)`` leaves weights and tables
        uninitialised and unties a tied head (it swaps tensors per module), and this call restores
        all three.
        """
        self._init_parameters()
        self.rope.reset_buffers()

    def _init_parameters(self) -> None:
        """Tie the head if configured, then initialise weights.

        Weights follow GPT-2's scheme, which nanoGPT-style Llama training uses too: N(0, 0.02)
        everywhere, with the residual-stream output projections scaled by
        ``1 / sqrt(2 * n_layer)`` so the stream's variance does not grow with depth; RMSNorms
        start at identity.
        """
        if self.config.tie_embeddings:
            self.lm_head.weight = self.wte.weight
        for module in self.modules():
            if isinstance(module, nn.Linear | nn.Embedding):
                nn.init.normal_(module.weight, mean=0.0, std=0.02)
            elif isinstance(module, nn.RMSNorm) and module.weight is not None:
                nn.init.ones_(module.weight)
        self._scale_residual_projections()

    def hidden_states(self, idx: Tensor, input_pos: int | None = None) -> Tensor:
        """Token embeddings, then the blocks with RoPE (see :meth:`DecoderLM.forward`)."""
        x = self.drop(self.wte(idx))
        rope = self.rope if input_pos is None else partial(self.rope, offset=input_pos)
        for block in self.blocks:
            x = block(x, rope, input_pos)
        return x

    def num_params(self, exclude_embeddings: bool = False) -> int:
        """Count parameters, each shared tensor once.

        Args:
            exclude_embeddings: Leave out tables whose rows are only looked up: the token
                embedding when it is untied. A tied table stays, since as the LM head it does the
                output matmul and so counts towards compute (GPT's convention too). RoPE has no
                parameters.
        """
        total = sum(p.numel() for p in self.parameters())  # parameters() yields a tied tensor once
        if exclude_embeddings and not self.config.tie_embeddings:
            total -= self.wte.weight.numel()
        return total
