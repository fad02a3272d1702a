"""Llama (Llama 2, Llama 3.x, TinyLlama), assembled from the shared components.

The model computes what ``transformers.LlamaForCausalLM`` computes: rotary positions (optionally
with Llama 3.1 frequency scaling), pre-RMSNorm blocks with grouped-query attention and SwiGLU MLPs,
no biases, a final RMSNorm and an LM head that is tied to the token embedding or not.
``forward`` returns logits; the loss belongs to the training engine.
"""

import math
from dataclasses import dataclass
from typing import Any, ClassVar

from torch import Tensor, nn

from llm_torch.architectures.base import DecoderLM
from llm_torch.architectures.config import DecoderConfig
from llm_torch.components import (
    MLP,
    CausalSelfAttention,
    Context,
    RotaryEmbedding,
    SwiGLUMLP,
    TransformerBlock,
)
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
class LlamaConfig(DecoderConfig):
    """Llama's shape: the :class:`DecoderConfig` fields, plus key/value heads and RoPE.

    ``mlp_hidden`` defaults to Meta's rule, ``8 * n_embd / 3`` rounded up to a multiple of 256
    (``4 * n_embd`` for the ungated ``relu2`` MLP); the embeddings are untied unless
    ``tie_embeddings`` (Llama 3.2 ties them). ``mlp_activation`` is ``swiglu`` (Llama's gated
    MLP) or ``relu2``.

    Attributes:
        n_kv_head: Number of key/value heads (``n_head``: MHA, fewer: GQA, 1: MQA); ``None``
            means ``n_head``.
        rope_scaling: ``None`` or Llama 3.1 scaling, ``{"rope_type": "llama3", "factor",
            "low_freq_factor", "high_freq_factor", "original_max_position_embeddings"}``.
    """

    n_kv_head: int | None = None
    rope_scaling: dict[str, Any] | None = None

    arch_defaults: ClassVar[dict[str, Any]] = {
        "vocab_size": 32000,
        "block_size": 2048,
        "tie_embeddings": False,
    }
    presets: ClassVar[dict[str, dict[str, Any]]] = LLAMA_PRESETS
    mlp_activations: ClassVar[tuple[str, ...]] = ("swiglu", "relu2")

    def validate(self) -> None:
        """The shared checks, then grouped-query heads and RoPE."""
        super().validate()
        if self.n_kv_head is not None and self.n_kv_head <= 0:
            raise ValueError(f"n_kv_head must be positive or None, got {self.n_kv_head}.")
        if self.n_head % self.resolved_n_kv_head:
            raise ValueError(
                f"n_kv_head ({self.n_kv_head}) must divide n_head ({self.n_head}): each "
                "key/value head serves an equal group of query heads."
            )
        if self.resolved_head_dim % 2:
            raise ValueError(
                f"head_dim: the head dimension ({self.resolved_head_dim}) must be even: RoPE "
                "rotates pairs of dimensions."
            )
        validate_rope_scaling(self.rope_scaling)

    @property
    def resolved_n_kv_head(self) -> int:
        """Number of key/value heads, ``n_head`` when unset."""
        return self.n_head if self.n_kv_head is None else self.n_kv_head

    @property
    def resolved_mlp_hidden(self) -> int:
        """MLP hidden width: Meta's rule for SwiGLU (``8/3 * n_embd``, multiple of 256) if unset."""
        if self.mlp_hidden is not None:
            return self.mlp_hidden
        if self.resolved_mlp_activation != "swiglu":
            return 4 * self.n_embd
        return 256 * math.ceil(int(8 * self.n_embd / 3) / 256)


class Llama(DecoderLM):
    """Llama language model: token ids ``(B, T)`` in, next-token logits ``(B, T, vocab_size)`` out.

    Args:
        config: The model's shape; see :class:`LlamaConfig`.
    """

    config: LlamaConfig

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
                    qk_norm=config.qk_norm,
                    norm_eps=config.norm_eps,
                ),
                mlp=self._mlp(config),
                norm_1=nn.RMSNorm(config.n_embd, eps=config.norm_eps),
                norm_2=nn.RMSNorm(config.n_embd, eps=config.norm_eps),
            )
            for _ in range(config.n_layer)
        )
        # Named ln_f like GPT's (and litgpt's) so engine code can treat both models alike.
        self.ln_f = nn.RMSNorm(config.n_embd, eps=config.norm_eps)
        self.lm_head = nn.Linear(config.n_embd, config.padded_vocab_size, bias=False)
        self.init_weights()

    @staticmethod
    def _mlp(config: LlamaConfig) -> nn.Module:
        hidden = config.resolved_mlp_hidden
        activation = config.resolved_mlp_activation
        if activation == "swiglu":
            return SwiGLUMLP(config.n_embd, hidden, dropout=config.dropout)
        return MLP(config.n_embd, hidden, False, config.dropout, activation)

    def init_weights(self) -> None:
        """GPT-2's initialisation (see :meth:`DecoderLM.init_weights`), and the RoPE tables.

        nanoGPT-style Llama training uses the same scheme. The tables are rebuilt because
        meta-device construction followed by ``to_empty`` leaves them uninitialised.
        """
        super().init_weights()
        self.rope.reset_buffers()

    def hidden_states(self, idx: Tensor, ctx: Context) -> Tensor:
        """Token embeddings, then the blocks with RoPE (see :meth:`DecoderLM.forward`)."""
        x = self.drop(self.wte(idx))
        rope = self.rope.at(idx.size(1), ctx.offset, ctx.positions)
        for i, block in enumerate(self.blocks):
            x = block(x, rope, ctx.layer(i), ctx.mask)
        return x
