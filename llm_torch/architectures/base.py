"""``DecoderLM``: what every llm-torch architecture shares beyond its own layers."""

import math
from abc import ABC, abstractmethod
from collections.abc import Callable
from functools import partial

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from llm_torch.architectures.config import DecoderConfig
from llm_torch.components import CausalSelfAttention, LearnedPositionEmbedding, RotaryEmbedding
from llm_torch.components.attention import PositionalHook
from llm_torch.components.kv_cache import check_range


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
    """Base of decoder-only language models: forward, loss, init, KV caches, size and FLOPs.

    A subclass builds, from its :class:`DecoderConfig`, the modules ``wte``, ``blocks``,
    ``ln_f`` and ``lm_head`` (plus whatever positions it uses), calls :meth:`init_weights`, and
    runs the embeddings and blocks in :meth:`hidden_states`. Everything else is shared.
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
    #: Positions the KV caches hold (set by :meth:`setup_cache`): the static cache's key count.
    _cache_len: int | None = None

    @abstractmethod
    def hidden_states(
        self,
        idx: Tensor,
        input_pos: int | Tensor | None = None,
        positions: Tensor | None = None,
        attn_mask: Tensor | None = None,
    ) -> Tensor:
        """Embed ``idx`` ``(B, T)`` and run the blocks: the last block's output, before ``ln_f``.

        ``positions`` (``(T,)`` or ``(B, T)``), when given, replace the contiguous positions
        that start at ``input_pos``; ``attn_mask`` goes to every attention layer. Both come from
        :meth:`_positions_and_mask`.
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
        self,
        idx: Tensor,
        input_pos: int | Tensor | None = None,
        targets: Tensor | None = None,
        pad: Tensor | None = None,
        last_only: bool = False,
    ) -> Tensor:
        """Next-token logits ``(B, T, vocab_size)`` for ids ``idx`` ``(B, T)``, or the loss.

        The loss lives inside ``forward`` (as in nanoGPT) so that sharded models gather the
        head's weights through their usual forward hooks, and so it can be compiled with them.

        Args:
            idx: Token ids.
            input_pos: ``None`` for whole sequences (training, evaluation): no cache is read or
                written. For incremental decoding after :meth:`setup_cache`: the cache slot of
                ``idx[:, 0]``, i.e. ``0`` for the prompt, then the number of tokens already fed.
                An ``int`` reads the cache's written prefix; a 0-d integer tensor reads the
                whole cache under a mask, so every decode step has the same shapes and can be
                compiled (see :class:`~llm_torch.components.KVCache`).
            targets: Next-token ids ``(B, T)``; given, the mean cross-entropy is returned
                instead of the logits.
            pad: Left padding per row ``(B,)``, for batches of prompts of different lengths:
                row ``b``'s first ``pad[b]`` slots are ignored and its positions start after
                them, so each row computes what it would alone. Keep passing it while decoding.
            last_only: Return the logits of the last position only, ``(B, 1, vocab_size)``:
                all that generation needs, and the LM head over a whole prompt is a large share
                of prefill (over 30% of the FLOPs for GPT-2 124M at 512 tokens).

        Raises:
            ValueError: If the positions run past the model's ``block_size``, or ``pad`` does
                not have one entry per row.
        """
        self._check_positions(idx.size(1), input_pos)
        positions, mask = self._positions_and_mask(idx, input_pos, pad)
        x = self.hidden_states(idx, input_pos, positions, mask)
        if last_only:
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

    def _check_positions(self, seq_len: int, input_pos: int | Tensor | None) -> None:
        """Raise if positions ``input_pos .. input_pos + seq_len - 1`` pass ``block_size``.

        A tensor position is checked against the cache's length (at most ``block_size``) here,
        once per forward pass rather than in every layer's cache: reading it is a host sync.
        Compiled steps skip the check (they cannot read it without a graph break).
        """
        if isinstance(input_pos, Tensor):
            if self._cache_len is not None and not torch.compiler.is_compiling():
                check_range(int(input_pos), seq_len, self._cache_len)
            return
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

    def _positions_and_mask(
        self, idx: Tensor, input_pos: int | Tensor | None, pad: Tensor | None
    ) -> tuple[Tensor | None, Tensor | None]:
        """Per-token positions and the attention mask, or ``(None, None)`` when causal suffices.

        Query ``t`` sits in cache slot ``i = start + t``. It sees slot ``j`` when ``j <= i``
        and ``j`` is not its row's padding. A padding query sees itself only: a row with no key
        at all would give NaN, which would leak through the values (``0 * NaN``) into real rows.
        Positions are slots minus the row's padding, so RoPE and learned tables see exactly the
        positions of the prompt run alone.

        Raises:
            ValueError: If ``pad`` is not ``(B,)``.
        """
        static = isinstance(input_pos, Tensor)
        if pad is None and not static:
            return None, None  # contiguous positions from the int offset, causal masking
        batch, seq_len = idx.shape
        if pad is not None and (pad.dim() != 1 or pad.size(0) != batch):
            raise ValueError(
                f"pad must hold one left-padding count per row, shape ({batch},); got "
                f"{tuple(pad.shape)}."
            )
        start = 0 if input_pos is None else input_pos
        slots = start + torch.arange(seq_len, device=idx.device)
        if isinstance(input_pos, Tensor):
            if self._cache_len is None:
                raise RuntimeError("A tensor input_pos needs a KV cache: call setup_cache first.")
            keys = torch.arange(self._cache_len, device=idx.device)
        else:
            keys = torch.arange(seq_len + (input_pos or 0), device=idx.device)
        visible = keys <= slots[:, None]  # (T, keys)
        if pad is None:
            return slots, visible[None, None]
        pad = pad.to(idx.device)[:, None, None]
        visible = visible & ((keys >= pad) | (keys == slots[:, None]))  # (B, T, keys)
        positions = (slots - pad[:, :, 0]).clamp(min=0)
        return positions, visible[:, None]

    @staticmethod
    def _rotary(
        rope: RotaryEmbedding, input_pos: int | Tensor | None, positions: Tensor | None
    ) -> PositionalHook:
        """``rope`` as the positional hook for this forward pass's positions."""
        if positions is not None:
            return partial(rope, positions=positions)
        if isinstance(input_pos, int):
            return partial(rope, offset=input_pos)
        return rope

    def _logits(self, x: Tensor) -> Tensor:
        """Final norm, LM head and soft-capping; padded vocabulary columns are dropped."""
        logits = capped_logits(self.lm_head(self.ln_f(x)), self.config.logit_softcap)
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
        self._cache_len = max_len

    def clear_cache(self) -> None:
        """Free the KV caches that :meth:`setup_cache` allocated.

        :func:`~llm_torch.generation.generate` leaves its cache in place for the next call of
        the same shape; this is how to give that memory back.
        """
        for attention in self._attention_layers():
            attention.clear_cache()
        self._cache_len = None

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
