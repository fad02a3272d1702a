"""``DecoderLM``: what every llm-torch architecture shares beyond its own layers."""

import math
from abc import ABC, abstractmethod
from typing import Any

from torch import Tensor, nn

from llm_torch.components import CausalSelfAttention


class DecoderLM(nn.Module, ABC):
    """Base of decoder-only language models: the output head, position checks, KV caches, FLOPs.

    Subclasses build ``config`` (with ``vocab_size``, ``padded_vocab_size``, ``block_size``,
    ``n_layer``, ``n_head``), ``wte``, ``ln_f`` and ``lm_head``, and count their parameters.
    """

    config: Any
    wte: nn.Embedding
    ln_f: nn.Module
    lm_head: nn.Linear

    @abstractmethod
    def num_params(self, exclude_embeddings: bool = False) -> int:
        """Count parameters, each shared tensor once (see the subclass for the convention)."""

    def _scale_residual_projections(self) -> None:
        """Re-draw the residual-stream output projections with std ``0.02 / sqrt(2 * n_layer)``.

        The residual stream sums ``2 * n_layer`` of them (attention and MLP per block); scaling
        keeps its variance independent of depth (GPT-2's initialisation, also used for Llama).
        """
        residual_std = 0.02 / math.sqrt(2 * self.config.n_layer)
        for name, param in self.named_parameters():
            if name.endswith(("attn.proj.weight", "mlp.proj.weight")):
                nn.init.normal_(param, mean=0.0, std=residual_std)

    def _check_positions(self, seq_len: int, input_pos: int | None) -> None:
        """Raise if positions ``input_pos .. input_pos + seq_len - 1`` pass ``block_size``."""
        block_size = self.config.block_size
        if (input_pos or 0) + seq_len <= block_size:
            return
        if input_pos is None:
            raise ValueError(
                f"Sequence length {seq_len} exceeds this model's block_size ({block_size}). Crop "
                f"the input to its last {block_size} tokens, or use a model configured with a "
                "larger block_size."
            )
        raise ValueError(
            f"Positions {input_pos}..{input_pos + seq_len - 1} exceed this model's block_size "
            f"({block_size}): a KV cache holds at most block_size tokens. Generate fewer tokens, "
            "or generate without the cache, which crops the context to the last block_size tokens."
        )

    def _logits(self, x: Tensor) -> Tensor:
        """Final norm and LM head; padded vocabulary columns are dropped."""
        logits: Tensor = self.lm_head(self.ln_f(x))
        if self.config.padded_vocab_size != self.config.vocab_size:
            logits = logits[..., : self.config.vocab_size]
        return logits

    def _attention_layers(self) -> list[CausalSelfAttention]:
        return [module for module in self.modules() if isinstance(module, CausalSelfAttention)]

    def setup_cache(self, batch_size: int, max_len: int | None = None) -> None:
        """Allocate a KV cache in every attention layer, for ``forward(idx, input_pos)``.

        Buffers take the model's dtype and device, so call this after moving the model.

        Args:
            batch_size: Largest batch that will be decoded.
            max_len: Positions to hold, prompt plus new tokens; ``None`` means ``block_size``.
                Memory is ``2 * n_layer * batch_size * max_len * n_kv_head * head_dim`` elements.

        Raises:
            ValueError: If ``max_len`` is not in ``1 .. block_size``.
        """
        max_len = self.config.block_size if max_len is None else max_len
        if not 0 < max_len <= self.config.block_size:
            raise ValueError(
                f"KV cache max_len must be in 1..block_size ({self.config.block_size}), got "
                f"{max_len}: positions past block_size have no embedding."
            )
        weight = self.wte.weight
        for attention in self._attention_layers():
            attention.setup_cache(batch_size, max_len, weight.dtype, weight.device)

    def clear_cache(self) -> None:
        """Free the KV caches that :meth:`setup_cache` allocated."""
        for attention in self._attention_layers():
            attention.clear_cache()

    def flops_per_token(self, seq_len: int | None = None) -> int:
        """Estimate training FLOPs (forward + backward) per token, for MFU.

        ``6 * N`` covers the matmuls with the ``N`` non-embedding parameters (2 FLOPs per weight
        forward, 4 backward); ``12 * n_layer * n_head * head_dim * seq_len`` covers attention
        scores and their weighted sum (PaLM appendix B, as in nanoGPT; the causal mask's skipped
        half is counted, so figures compare with those publications). Grouped-query attention
        shares keys and values but still scores every query head, hence ``n_head``.

        Args:
            seq_len: Training sequence length; defaults to ``block_size``.
        """
        cfg = self.config
        seq_len = cfg.block_size if seq_len is None else seq_len
        head_dim = self._attention_layers()[0].head_dim
        attention = 12 * cfg.n_layer * cfg.n_head * head_dim * seq_len
        return 6 * self.num_params(exclude_embeddings=True) + attention
