"""GPT-2, assembled from the shared components.

The model computes what OpenAI's GPT-2 (and ``transformers.GPT2LMHeadModel``) computes: learned
absolute positions, pre-LayerNorm blocks with GELU MLPs, a final LayerNorm and an LM head tied to
the token embedding. ``forward`` returns logits; the loss belongs to the training engine.
"""

import math
from dataclasses import dataclass, replace
from typing import Any

from torch import Tensor, nn

from llm_torch.architectures.base import DecoderLM
from llm_torch.components import (
    GELUMLP,
    CausalSelfAttention,
    LearnedPositionEmbedding,
    TransformerBlock,
)

#: Shapes of the released GPT-2 checkpoints.
GPT_PRESETS: dict[str, dict[str, Any]] = {
    "gpt2": {"n_layer": 12, "n_head": 12, "n_embd": 768},
    "gpt2-medium": {"n_layer": 24, "n_head": 16, "n_embd": 1024},
    "gpt2-large": {"n_layer": 36, "n_head": 20, "n_embd": 1280},
    "gpt2-xl": {"n_layer": 48, "n_head": 25, "n_embd": 1600},
}


@dataclass
class GPTConfig:
    """Everything that determines a GPT's shape and regularisation.

    Attributes:
        vocab_size: Number of real tokens (logits have exactly this many columns).
        block_size: Maximum sequence length (number of learned positions).
        n_layer: Number of transformer blocks.
        n_head: Number of attention heads.
        n_embd: Model width.
        mlp_hidden: Width of the MLP's hidden layer; ``None`` means ``4 * n_embd``.
        dropout: Dropout on embeddings, attention probabilities and residual branches.
        bias: Biases in linear layers and LayerNorms (GPT-2: ``True``; ``False`` is a little
            faster and, per nanoGPT, no worse).
        layer_norm_eps: LayerNorm epsilon.
        pad_vocab_size_multiple: Round the embedding table up to a multiple of this (64 speeds up
            the LM head matmul on GPUs). Padded rows never appear in the returned logits.
    """

    vocab_size: int = 50257
    block_size: int = 1024
    n_layer: int = 12
    n_head: int = 12
    n_embd: int = 768
    mlp_hidden: int | None = None
    dropout: float = 0.0
    bias: bool = True
    layer_norm_eps: float = 1e-5
    pad_vocab_size_multiple: int = 1

    def __post_init__(self) -> None:
        for name in ("vocab_size", "block_size", "n_layer", "n_head", "n_embd"):
            if getattr(self, name) <= 0:
                raise ValueError(f"GPTConfig.{name} must be positive, got {getattr(self, name)}.")
        if self.n_embd % self.n_head:
            raise ValueError(
                f"GPTConfig.n_embd ({self.n_embd}) must be divisible by n_head ({self.n_head})."
            )
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"GPTConfig.dropout must be in [0, 1), got {self.dropout}.")
        if self.pad_vocab_size_multiple <= 0:
            raise ValueError("GPTConfig.pad_vocab_size_multiple must be positive (1: no padding).")

    @classmethod
    def from_name(cls, name: str, **overrides: Any) -> "GPTConfig":
        """Build a named preset (``gpt2``, ``gpt2-medium``, ...) with field overrides."""
        if name not in GPT_PRESETS:
            raise ValueError(f"Unknown GPT preset {name!r}; choose one of {sorted(GPT_PRESETS)}.")
        return replace(cls(**GPT_PRESETS[name]), **overrides)

    @property
    def padded_vocab_size(self) -> int:
        """Rows of the embedding table: ``vocab_size`` rounded up to the padding multiple."""
        multiple = self.pad_vocab_size_multiple
        return math.ceil(self.vocab_size / multiple) * multiple

    @property
    def head_dim(self) -> int:
        """Width of one attention head."""
        return self.n_embd // self.n_head


class GPT(DecoderLM):
    """GPT-2 language model: token ids ``(B, T)`` in, next-token logits ``(B, T, vocab_size)`` out.

    Args:
        config: The model's shape; see :class:`GPTConfig`.
    """

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.config = config
        self.wte = nn.Embedding(config.padded_vocab_size, config.n_embd)
        self.wpe = LearnedPositionEmbedding(config.block_size, config.n_embd)
        self.drop = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList(
            TransformerBlock(
                attn=CausalSelfAttention(
                    config.n_embd, config.n_head, bias=config.bias, dropout=config.dropout
                ),
                mlp=GELUMLP(
                    config.n_embd,
                    config.mlp_hidden or 4 * config.n_embd,
                    bias=config.bias,
                    dropout=config.dropout,
                ),
                norm_1=nn.LayerNorm(config.n_embd, eps=config.layer_norm_eps, bias=config.bias),
                norm_2=nn.LayerNorm(config.n_embd, eps=config.layer_norm_eps, bias=config.bias),
            )
            for _ in range(config.n_layer)
        )
        self.ln_f = nn.LayerNorm(config.n_embd, eps=config.layer_norm_eps, bias=config.bias)
        self.lm_head = nn.Linear(config.n_embd, config.padded_vocab_size, bias=False)
        self.lm_head.weight = self.wte.weight  # one tensor: the head reads the embedding table
        self.init_weights()

    def init_weights(self) -> None:
        """Initialise as GPT-2 did: N(0, 0.02) everywhere, residual projections scaled down.

        The output projections of attention and MLP feed the residual stream, which sums
        ``2 * n_layer`` of them; scaling their std by ``1 / sqrt(2 * n_layer)`` keeps the stream's
        variance independent of depth. Biases start at zero, LayerNorms at identity. The head is
        tied again first: ``to_empty`` after meta-device construction unties it.
        """
        self.lm_head.weight = self.wte.weight
        for module in self.modules():
            if isinstance(module, nn.Linear | nn.Embedding):
                nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if isinstance(module, nn.Linear | nn.LayerNorm) and module.bias is not None:
                nn.init.zeros_(module.bias)
            if isinstance(module, nn.LayerNorm):
                nn.init.ones_(module.weight)
        nn.init.normal_(self.wpe.weight, mean=0.0, std=0.02)
        self._scale_residual_projections()

    def hidden_states(self, idx: Tensor, input_pos: int | None = None) -> Tensor:
        """Token plus position embeddings, then the blocks (see :meth:`DecoderLM.forward`)."""
        x = self.drop(self.wte(idx) + self.wpe(idx.size(1), input_pos or 0))
        for block in self.blocks:
            x = block(x, input_pos=input_pos)
        return x

    def num_params(self, exclude_embeddings: bool = False) -> int:
        """Count parameters, each shared tensor once.

        Args:
            exclude_embeddings: Leave out the position table, whose rows are only looked up. The
                token table stays: tied to the LM head, it does the output matmul, so it counts
                towards compute (the convention of nanoGPT and of ``flops_per_token``).
        """
        total = sum(p.numel() for p in self.parameters())  # parameters() yields a tied tensor once
        return total - self.wpe.weight.numel() if exclude_embeddings else total
