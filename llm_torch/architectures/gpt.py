"""GPT-2, assembled from the shared components.

By default the model computes what OpenAI's GPT-2 (and ``transformers.GPT2LMHeadModel``)
computes: learned absolute positions, pre-LayerNorm blocks with GELU MLPs, a final LayerNorm and
an LM head tied to the token embedding. Options from the speedrun recipe (rotary positions,
QK-norm, ReLU^2, untied embeddings, logit soft-capping) change that, one config field each.
"""

import warnings
from dataclasses import InitVar, dataclass
from typing import Any, ClassVar

from torch import Tensor, nn

from llm_torch.architectures.base import DecoderLM
from llm_torch.architectures.config import DecoderConfig
from llm_torch.components import (
    MLP,
    CausalSelfAttention,
    Context,
    LearnedPositionEmbedding,
    RotaryEmbedding,
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
class GPTConfig(DecoderConfig):
    """GPT-2's shape: the :class:`DecoderConfig` fields, plus biases and the position scheme.

    ``mlp_hidden`` defaults to ``4 * n_embd``; ``mlp_activation`` is ``gelu`` or ``relu2``.

    Attributes:
        bias: Biases in linear layers and LayerNorms (GPT-2: ``True``; ``False`` is a little
            faster and, per nanoGPT, no worse).
        positions: ``learned`` (GPT-2's table of absolute positions) or ``rope`` (rotary
            positions on queries and keys, base ``rope_theta``, and no table).
        layer_norm_eps: The former name of ``norm_eps``, still accepted (with a warning) so
            configs and checkpoints written before the rename keep working.
    """

    bias: bool = True
    positions: str = "learned"
    layer_norm_eps: InitVar[float | None] = None

    presets: ClassVar[dict[str, dict[str, Any]]] = GPT_PRESETS

    def __post_init__(self, layer_norm_eps: float | None) -> None:
        if layer_norm_eps is not None:
            warnings.warn(
                "GPTConfig.layer_norm_eps is deprecated and read as norm_eps, its name for every "
                "architecture: rename it in your config (checkpoints that use it load as they "
                "are).",
                FutureWarning,
                stacklevel=3,
            )
            self.norm_eps = layer_norm_eps
        super().__post_init__()

    def validate(self) -> None:
        """The shared checks, then the position scheme."""
        super().validate()
        if self.positions not in ("learned", "rope"):
            raise ValueError(f"positions must be 'learned' or 'rope', got {self.positions!r}.")
        if self.positions == "rope" and self.resolved_head_dim % 2:
            raise ValueError(
                f"head_dim: rotary positions need an even head dimension, got "
                f"{self.resolved_head_dim}."
            )

    @property
    def resolved_mlp_hidden(self) -> int:
        """MLP hidden width: ``4 * n_embd`` when unset."""
        return 4 * self.n_embd if self.mlp_hidden is None else self.mlp_hidden


class GPT(DecoderLM):
    """GPT-2 language model: token ids ``(B, T)`` in, next-token logits ``(B, T, vocab_size)`` out.

    Args:
        config: The model's shape; see :class:`GPTConfig`.
    """

    config: GPTConfig

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.config = config
        self.wte = nn.Embedding(config.padded_vocab_size, config.n_embd)
        self.wpe: LearnedPositionEmbedding | None = None
        self.rope: RotaryEmbedding | None = None
        if config.positions == "rope":
            self.rope = RotaryEmbedding(
                config.resolved_head_dim, config.block_size, config.rope_theta
            )
        else:
            self.wpe = LearnedPositionEmbedding(config.block_size, config.n_embd)
        self.drop = nn.Dropout(config.dropout)

        def norm() -> nn.LayerNorm:
            return nn.LayerNorm(config.n_embd, eps=config.norm_eps, bias=config.bias)

        self.blocks = nn.ModuleList(
            TransformerBlock(
                attn=CausalSelfAttention(
                    config.n_embd,
                    config.n_head,
                    head_dim=config.resolved_head_dim,
                    bias=config.bias,
                    dropout=config.dropout,
                    qk_norm=config.qk_norm,
                    norm_eps=config.norm_eps,
                ),
                mlp=MLP(
                    config.n_embd,
                    config.resolved_mlp_hidden,
                    config.bias,
                    config.dropout,
                    config.resolved_mlp_activation,
                ),
                norm_1=norm(),
                norm_2=norm(),
            )
            for _ in range(config.n_layer)
        )
        self.ln_f = norm()
        self.lm_head = nn.Linear(config.n_embd, config.padded_vocab_size, bias=False)
        self.init_weights()

    def init_weights(self) -> None:
        """GPT-2's initialisation (see :meth:`DecoderLM.init_weights`), positions N(0, 0.02).

        Rotary tables are rebuilt instead: ``to_empty`` leaves buffers uninitialised.
        """
        super().init_weights()
        if self.wpe is not None:
            nn.init.normal_(self.wpe.weight, mean=0.0, std=0.02)
        if self.rope is not None:
            self.rope.reset_buffers()

    def hidden_states(self, idx: Tensor, ctx: Context) -> Tensor:
        """Token (plus position) embeddings, then the blocks (see :meth:`DecoderLM.forward`)."""
        seq_len = idx.size(1)
        x = self.wte(idx)
        if self.wpe is not None:
            if ctx.positions is None:
                x = x + self.wpe(seq_len, ctx.offset)
            else:  # per-row or tensor positions: a gather instead of a slice
                x = x + self.wpe.weight[ctx.positions]
        x = self.drop(x)
        rope = None if self.rope is None else self.rope.at(seq_len, ctx.offset, ctx.positions)
        for i, block in enumerate(self.blocks):
            x = block(x, rope, ctx.layer(i), ctx.mask)
        return x
