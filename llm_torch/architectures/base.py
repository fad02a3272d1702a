"""``DecoderLM``: what every llm-torch architecture shares beyond its own layers."""

import math
from abc import ABC, abstractmethod
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from llm_torch.architectures.config import DecoderConfig
from llm_torch.components import Context, KVCache, LearnedPositionEmbedding


def capped_logits(logits: Tensor, softcap: float | None) -> Tensor:
    """``softcap * tanh(logits / softcap)``, or ``logits`` unchanged when ``softcap`` is None."""
    return logits if softcap is None else softcap * torch.tanh(logits / softcap)


def next_token_loss(
    hidden: Tensor,
    norm: nn.Module,
    head: nn.Linear,
    targets: Tensor,
    vocab_size: int,
    softcap: float | None = None,
) -> Tensor:
    """Mean cross-entropy of the final norm and LM head's logits against ``targets``.

    Written as one function so ``torch.compile`` can fuse the norm, the head's output, the
    float32 upcast and the log-softmax into a few kernels, instead of materialising float32
    logits, a saved log-softmax and a zero-padded gradient per micro-batch (at GPT-2 124M,
    32 x 1024 x 50304 logits are 6.6 GB in float32). Padded vocabulary columns are masked to
    ``-inf`` rather than sliced off, which keeps the logits contiguous.

    Args:
        hidden: Last block's output ``(B, T, n_embd)``.
        norm: The final norm.
        head: The LM head, ``padded_vocab_size`` outputs.
        targets: Next-token ids ``(B, T)``.
        vocab_size: Real vocabulary size; columns from here on are padding.
        softcap: Logit soft-capping (see :func:`capped_logits`), applied in float32.
    """
    logits = capped_logits(head(norm(hidden)).float(), softcap)
    if logits.size(-1) != vocab_size:
        padding = torch.arange(logits.size(-1), device=logits.device) >= vocab_size
        logits = logits.masked_fill(padding, float("-inf"))
    return F.cross_entropy(logits.flatten(0, 1), targets.flatten())


class DecoderLM(nn.Module, ABC):
    """Base of decoder-only language models: forward, loss, init, size and FLOPs.

    A subclass builds, from its :class:`DecoderConfig`, the modules ``wte``, ``blocks``,
    ``ln_f`` and ``lm_head`` (plus whatever positions it uses), calls :meth:`init_weights`, and
    runs the embeddings and blocks in :meth:`hidden_states`. Everything else is shared.

    The forward pass is the training one, over whole sequences. Incremental decoding state
    (buffers, positions, padding) lives in a :class:`~llm_torch.components.KVCache` that the
    caller creates and passes in; the model only turns it into a per-pass ``Context``.
    """

    config: DecoderConfig
    wte: nn.Embedding
    blocks: nn.ModuleList
    ln_f: nn.Module
    lm_head: nn.Linear
    #: The loss head; :meth:`compile_for_training` swaps in a compiled version.
    _loss_fn: Callable[[Tensor, nn.Module, nn.Linear, Tensor, int, float | None], Tensor] = (
        staticmethod(next_token_loss)
    )
    #: The cache :func:`~llm_torch.generation.generate` keeps for its next call of the same
    #: shape; the model never reads it (see :meth:`clear_cache`).
    kv_cache: KVCache | None = None

    @abstractmethod
    def hidden_states(self, idx: Tensor, ctx: Context) -> Tensor:
        """Embed ``idx`` ``(B, T)`` and run the blocks: the last block's output, before ``ln_f``.

        ``ctx`` holds what every layer shares: token positions (``ctx.offset`` or
        ``ctx.positions``), the attention mask (``ctx.mask``) and, when decoding with a cache,
        each attention layer's view of it (``ctx.layer(i)``). Block ``i`` gets
        ``block(x, positional, ctx.layer(i), ctx.mask)``.
        """

    def init_weights(self) -> None:
        """Initialise as GPT-2 did: N(0, 0.02) matrices, zero biases, identity norms.

        The residual projections are then scaled down (see
        :meth:`_scale_residual_projections`). A tied head is tied again first: ``to_empty``
        after meta-device construction unties it. Subclasses add their own tables.
        """
        if self.config.tie_embeddings:
            self.lm_head.weight = self.wte.weight
        for module in self.modules():
            if isinstance(module, nn.Linear | nn.Embedding):
                nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if isinstance(module, nn.Linear | nn.LayerNorm) and module.bias is not None:
                nn.init.zeros_(module.bias)
            if isinstance(module, nn.LayerNorm | nn.RMSNorm) and module.weight is not None:
                nn.init.ones_(module.weight)
        self._scale_residual_projections()

    def num_params(self, exclude_embeddings: bool = False) -> int:
        """Count parameters, each shared tensor once.

        Args:
            exclude_embeddings: Leave out tables whose rows are only looked up: position tables
                and an untied token embedding. A tied token table stays, since as the LM head it
                does the output matmul and so counts towards compute (nanoGPT's convention, and
                that of :meth:`flops_per_token`).
        """
        total = sum(p.numel() for p in self.parameters())  # yields a tied tensor once
        if exclude_embeddings:
            lookups = (nn.Embedding, LearnedPositionEmbedding)
            total -= sum(
                module.weight.numel()
                for module in self.modules()
                if isinstance(module, lookups) and module.weight is not self.lm_head.weight
            )
        return total

    def forward(
        self, idx: Tensor, targets: Tensor | None = None, cache: KVCache | None = None
    ) -> Tensor:
        """Next-token logits ``(B, T, vocab_size)`` for ids ``idx`` ``(B, T)``, or the loss.

        The loss lives inside ``forward`` (as in nanoGPT) so that sharded models gather the
        head's weights through their usual forward hooks, and so it can be compiled with them.

        Args:
            idx: Token ids.
            targets: Next-token ids ``(B, T)``; given, the mean cross-entropy is returned
                instead of the logits.
            cache: ``None`` for whole sequences (training, evaluation). For incremental
                decoding, a :class:`~llm_torch.components.KVCache`: ``idx`` is written to it
                from its current slot (``cache.seek``), attends to what it holds, and gets its
                rows' padding masked; ``cache.last_only`` keeps the last position's logits only.

        Raises:
            ValueError: If the positions run past the model's ``block_size``, or the cache's
                ``pad`` does not have one entry per row.
        """
        batch, seq_len = idx.shape
        self._check_positions(seq_len, cache)
        ctx = Context() if cache is None else cache.context(batch, seq_len, idx.device)
        x = self.hidden_states(idx, ctx)
        if cache is not None and cache.last_only:
            x = x[:, -1:]
        if targets is not None:
            cfg = self.config
            return self._loss_fn(
                x, self.ln_f, self.lm_head, targets, cfg.vocab_size, cfg.logit_softcap
            )
        return self._logits(x)

    def compile_for_training(self) -> None:
        """``torch.compile`` each block and the loss head, torchtitan's granularity.

        Blocks compile once and are reused ``n_layer`` times; the loss head (norm, LM head,
        cross-entropy) compiles separately. Parameter names, and so checkpoints, are unchanged.
        Logits for generation still come from the eager head.
        """
        for block in self.blocks:
            block.compile()
        self._loss_fn = torch.compile(next_token_loss)

    def _scale_residual_projections(self) -> None:
        """Re-draw the residual-stream output projections with std ``0.02 / sqrt(2 * n_layer)``.

        The residual stream sums ``2 * n_layer`` of them (attention and MLP per block); scaling
        keeps its variance independent of depth (GPT-2's initialisation, also used for Llama).
        """
        residual_std = 0.02 / math.sqrt(2 * self.config.n_layer)
        for name, param in self.named_parameters():
            if name.endswith(("attn.proj.weight", "mlp.proj.weight")):
                nn.init.normal_(param, mean=0.0, std=residual_std)

    def _check_positions(self, seq_len: int, cache: KVCache | None) -> None:
        """Raise if the positions of ``seq_len`` tokens from the cache's slot pass ``block_size``.

        A compiled decode step skips the check: reading the cache's host position would make
        it recompile for every token (the cache checks its own range eagerly).
        """
        if cache is not None and torch.compiler.is_compiling():
            return
        start = None if cache is None or not cache.layers else cache.pos
        block_size = self.config.block_size
        if (start or 0) + seq_len <= block_size:
            return
        if start is None:
            raise ValueError(
                f"Sequence length {seq_len} exceeds this model's block_size ({block_size}). Crop "
                f"the input to its last {block_size} tokens, or use a model configured with a "
                "larger block_size."
            )
        raise ValueError(
            f"Positions {start}..{start + seq_len - 1} exceed this model's block_size "
            f"({block_size}): a KV cache holds at most block_size tokens. Generate fewer tokens, "
            "or generate without the cache, which crops the context to the last block_size tokens."
        )

    def _logits(self, x: Tensor) -> Tensor:
        """Final norm, LM head and soft-capping; padded vocabulary columns are dropped."""
        logits = capped_logits(self.lm_head(self.ln_f(x)), self.config.logit_softcap)
        if self.config.padded_vocab_size != self.config.vocab_size:
            logits = logits[..., : self.config.vocab_size]
        return logits

    def clear_cache(self) -> None:
        """Free the KV cache that :func:`~llm_torch.generation.generate` keeps on the model.

        ``generate`` leaves its cache here for the next call of the same shape (see
        :attr:`kv_cache`); this is how to give that memory back.
        """
        self.kv_cache = None

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
        attention = 12 * cfg.n_layer * cfg.n_head * cfg.resolved_head_dim * seq_len
        return 6 * self.num_params(exclude_embeddings=True) + attention
