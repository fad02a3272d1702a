"""Autoregressive generation from any llm-torch architecture, with a KV cache.

With the cache, the prompt is run once (prefill) and every later step feeds only the newest token,
whose query attends to the cached keys and values of all earlier ones: a step costs one token's
forward pass instead of the whole context's. Without it, every step re-reads the last
``block_size`` tokens, which also lets generation run past ``block_size`` by sliding the window.

Prompts of different lengths run as one batch: they are left-padded to the longest, and the
model is told each row's padding, which it masks out and subtracts from the positions. Every row
therefore computes what its prompt computes alone, up to float rounding (greedy decoding is
token-identical in the tests). Sampling draws each row from its own generator, seeded ``seed +
row``, so a row's sample does not depend on the other prompts in the batch either: it equals the
prompt run alone with seed ``seed + row``, unless rounding moves a draw across a probability
boundary.

Decoding with the cache comes in three flavours, all writing the same preallocated buffers:

- dynamic (default): step ``t`` attends to the ``t`` cached positions, a view that grows each
  step. Cheapest in eager mode, but no two steps have the same shapes.
- static (``static_cache=True``): every step attends to the whole cache under a mask, with the
  position passed as a tensor, so shapes never change.
- compiled (``compile=True``): the static step under ``torch.compile``, one graph for every step
  (``mode="reduce-overhead"`` on GPU, which replays it as a CUDA graph: one launch per token
  instead of dozens). Prefill stays an eager forward pass. Compiling costs seconds to minutes
  once per shape, so it is for long or repeated runs on GPU, never for a 20-token run; on CPU
  it is no faster than eager for GPT-2 124M (see the README's Performance section).

The cache is a :class:`~llm_torch.components.KVCache` that generation creates and passes to
the model (``model(idx, cache=cache)``): the model's forward pass itself knows only whole
sequences. It outlives the call, kept on the model as ``model.kv_cache``: the next ``generate``
with the same batch size and cache length (on the same dtype and device) zeroes and reuses the
same buffers instead of allocating new ones. A compiled step needs that: CUDA graphs read the
cache at the address they were recorded with, and a moved cache makes them record again, every
call (``--num_samples``, chat turns). Any other shape gets a new cache; ``model.clear_cache()``
frees it.
"""

from collections.abc import Callable, Sequence
from functools import partial

import torch
from torch import Tensor

from llm_torch.architectures.base import DecoderLM
from llm_torch.components import CausalSelfAttention, KVCache, LayerCache

#: Called as ``on_token(batch_index, token_id)`` for each new token as soon as it is sampled;
#: ``batch_index`` is the prompt's index in ``prompt_ids``.
TokenCallback = Callable[[int, int], None]


def new_cache(model: DecoderLM, batch_size: int, max_len: int | None = None) -> KVCache:
    """A zeroed KV cache for ``model``: one :class:`LayerCache` per attention layer.

    For driving ``model(idx, cache=cache)`` by hand (``cache.seek(pos)`` before each pass);
    :func:`generate` manages its own. Buffers take the model's dtype and device, so call this
    after moving the model.

    Args:
        model: A GPT, Llama or any :class:`~llm_torch.architectures.DecoderLM`.
        batch_size: Largest batch that will be decoded.
        max_len: Positions to hold, prompt plus new tokens; ``None`` means ``block_size``.
            Memory is ``2 * n_layer * batch_size * max_len * n_kv_head * head_dim`` elements.

    Raises:
        ValueError: If ``max_len`` is not in ``1 .. block_size``.
    """
    block_size = model.config.block_size
    max_len = block_size if max_len is None else max_len
    if not 0 < max_len <= block_size:
        raise ValueError(
            f"KV cache max_len must be in 1..block_size ({block_size}), got {max_len}: "
            "positions past block_size have no embedding."
        )
    weight = model.wte.weight
    layers = [
        LayerCache(batch_size, attn.n_kv_head, max_len, attn.head_dim, weight.dtype, weight.device)
        for attn in model.modules()
        if isinstance(attn, CausalSelfAttention)
    ]
    return KVCache(layers)


def _reuse_or_new_cache(model: DecoderLM, batch_size: int, max_len: int) -> KVCache:
    """``model.kv_cache`` zeroed if it has this shape, else a new one (kept there for next time).

    Reusing keeps the buffers at the addresses a compiled decode step was recorded with (see
    the module docstring). Only an exact match of batch size, length, dtype and device is
    reused: another shape needs another compiled step anyway, and a longer cache would make a
    static step read more keys than a fresh run (more work, and other rounding).

    Args:
        model: A GPT or Llama.
        batch_size: Rows the cache must hold.
        max_len: Positions the cache must hold.
    """
    weight = model.wte.weight
    wanted = (batch_size, max_len, weight.dtype, weight.device)
    cache = model.kv_cache
    if cache is not None and cache.layers:
        first = cache.layers[0].k
        if (cache.batch_size, cache.max_len, first.dtype, first.device) == wanted:
            cache.reset()
            return cache
    model.kv_cache = None  # free the old buffers before allocating new ones
    model.kv_cache = new_cache(model, batch_size, max_len)
    return model.kv_cache


def sample_next(
    logits: Tensor,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    generator: torch.Generator | Sequence[torch.Generator] | None = None,
) -> Tensor:
    """Pick one token per row of ``logits`` ``(B, vocab)``; returns ``(B,)`` ids.

    Filters apply in ``transformers``' order: temperature, then top-k, then top-p.

    Args:
        logits: Next-token logits (float32 for a faithful softmax).
        temperature: Divides the logits; ``0`` means greedy (argmax, no randomness).
        top_k: Keep only the ``k`` most likely tokens.
        top_p: Nucleus sampling: keep the smallest set of most likely tokens whose probability
            reaches ``top_p`` (always at least the most likely one).
        generator: RNG for the draw; ``None`` uses the global one. A sequence holds one
            generator per row, so that each row's draw is independent of the others.
    """
    if temperature == 0:
        return logits.argmax(dim=-1)
    logits = logits / temperature
    if top_k is not None:
        kth = torch.topk(logits, min(top_k, logits.size(-1))).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None and top_p < 1.0:
        sorted_logits, order = logits.sort(dim=-1, descending=True)
        probs = sorted_logits.softmax(dim=-1)
        # Drop a token once the more likely ones before it already reach top_p.
        outside = probs.cumsum(dim=-1) - probs >= top_p
        logits = logits.scatter(-1, order, sorted_logits.masked_fill(outside, float("-inf")))
    probs = logits.softmax(dim=-1)
    if isinstance(generator, Sequence):
        if len(generator) != probs.size(0):
            raise ValueError(f"{len(generator)} generators for {probs.size(0)} rows of logits.")
        draws = [
            torch.multinomial(probs[row : row + 1], 1, generator=rng)[0]
            for row, rng in enumerate(generator)
        ]
        return torch.cat(draws)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


@torch.no_grad()
def generate(
    model: DecoderLM,
    prompt_ids: Sequence[Sequence[int] | Tensor] | Tensor,
    max_new_tokens: int,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    eos_id: int | None = None,
    seed: int | None = None,
    use_cache: bool = True,
    on_token: TokenCallback | None = None,
    static_cache: bool = False,
    compile: bool = False,
) -> list[list[int]]:
    """Continue each prompt by up to ``max_new_tokens`` tokens.

    All prompts run as one batch, whatever their lengths (see the module docstring), so
    ``on_token`` streams step by step, rows in order. Put the model in eval mode first (dropout
    would apply otherwise); the mode is left as it is. With ``use_cache``, the KV cache stays on
    the model (``model.kv_cache``) for the next call of the same shape; ``model.clear_cache()``
    frees it.

    Args:
        model: A GPT or Llama.
        prompt_ids: Prompts, each a list or 1-D tensor of token ids (a ``(B, T)`` tensor also
            works: its rows are the prompts).
        max_new_tokens: Most tokens to add per prompt.
        temperature: Softmax temperature; ``0`` is greedy decoding.
        top_k: Sample among the ``k`` most likely tokens only.
        top_p: Nucleus sampling threshold in ``(0, 1]``.
        eos_id: End-of-text id: a sequence stops after producing it (it is included in the
            output), and generation stops once every sequence has.
        seed: Row ``i`` samples from a private ``torch.Generator`` seeded ``seed + i``; the
            global RNG, which training depends on, is never drawn from. ``None`` picks a seed
            nondeterministically.
        use_cache: Decode with a KV cache. Prompt plus new tokens must then fit ``block_size``;
            without the cache the context is cropped to the last ``block_size`` tokens.
        on_token: Called with ``(batch_index, token_id)`` for every new token, as produced.
        static_cache: Decode over the whole preallocated cache with tensor positions (the shapes
            ``compile`` needs); same tokens as the default dynamic decode, slower in eager mode.
        compile: Run the static decode step under ``torch.compile`` (CUDA graphs on GPU). The
            first call per shape compiles, which takes long; see the module docstring.

    Returns:
        One list per prompt: the prompt's ids followed by the new ones, without padding.

    Raises:
        ValueError: For malformed prompts or sampling settings, or, with the cache, prompts that
            leave no room for ``max_new_tokens`` within ``block_size``, or ``static_cache`` /
            ``compile`` without the cache.
    """
    vocab_size, block_size = model.config.vocab_size, model.config.block_size
    prompts = [_prompt_list(prompt, index, vocab_size) for index, prompt in enumerate(prompt_ids)]
    _check_sampling(max_new_tokens, temperature, top_k, top_p)
    if (static_cache or compile) and not use_cache:
        raise ValueError(
            "static_cache and compile decode through the KV cache; they need use_cache=True."
        )
    outputs = [list(prompt) for prompt in prompts]
    if not prompts or max_new_tokens == 0:
        return outputs
    longest = max(len(prompt) for prompt in prompts)
    if use_cache and longest + max_new_tokens > block_size:
        raise ValueError(
            f"A prompt of {longest} tokens plus max_new_tokens={max_new_tokens} exceeds the "
            f"model's block_size ({block_size}), the most a KV cache can hold. Lower "
            "max_new_tokens, shorten the prompt, or pass use_cache=False to slide the context "
            f"over the last {block_size} tokens."
        )

    device = next(model.parameters()).device
    if seed is None:
        seed = torch.Generator().seed() % 2**62
    generators = [
        torch.Generator(device=device).manual_seed(seed + row) for row in range(len(prompts))
    ]
    pick = partial(
        sample_next, temperature=temperature, top_k=top_k, top_p=top_p, generator=generators
    )
    stream = _Stream(len(prompts), eos_id, on_token)
    if use_cache:
        mode = "compiled" if compile else "static" if static_cache else "dynamic"
        _decode_cached(model, prompts, max_new_tokens, pick, stream, mode)
    else:
        _decode_sliding(model, prompts, max_new_tokens, pick, stream)
    for output, tokens in zip(outputs, stream.new, strict=True):
        output += tokens
    return outputs


#: Static caches are sized in multiples of this many positions (capped at ``block_size``), so
#: that compiled decode steps are shared by runs of similar lengths.
STATIC_CACHE_MULTIPLE = 256


class _Stream:
    """Collects each row's new tokens, calls ``on_token`` and tracks which rows are done.

    A finished row keeps being fed (the batch keeps its shape) but its tokens are dropped.
    """

    def __init__(self, rows: int, eos_id: int | None, on_token: TokenCallback | None) -> None:
        self.new: list[list[int]] = [[] for _ in range(rows)]
        self.done = [False] * rows
        self.eos_id = eos_id
        self.on_token = on_token

    def push(self, next_ids: Tensor) -> bool:
        """Record one step's tokens ``(B,)``; ``True`` once every row is done.

        The tokens come to the host every step: streaming and the stop test need them there.
        """
        for row, token in enumerate(next_ids.tolist()):
            if not self.done[row]:
                self.new[row].append(token)
                if self.on_token is not None:
                    self.on_token(row, token)
                self.done[row] = token == self.eos_id
        return all(self.done)


def _left_pad(rows: list[list[int]], device: torch.device) -> tuple[Tensor, Tensor | None]:
    """``rows`` left-padded (with id 0) into ``(B, T)``, and the padding per row.

    The padding is ``None`` when every row has the same length: the model then runs its plain
    causal path, exactly as for one prompt.
    """
    width = max(len(row) for row in rows)
    ids = torch.tensor([[0] * (width - len(row)) + row for row in rows], device=device)
    if all(len(row) == width for row in rows):
        return ids, None
    return ids, torch.tensor([width - len(row) for row in rows], device=device)


def _decode_step(model: DecoderLM, tokens: Tensor, cache: KVCache) -> Tensor:
    """One decode step: float32 next-token logits ``(B, vocab)`` for ``tokens`` ``(B, 1)``.

    After ``cache.seek(pos, static=True)`` every input keeps its shape from step to step (the
    position is a 0-d tensor), which is what lets ``torch.compile`` trace it once and CUDA
    graphs replay it.
    """
    return model(tokens, cache=cache)[:, -1].float()


_COMPILED_STEPS: dict[str, Callable[[DecoderLM, Tensor, KVCache], Tensor]] = {}


def compiled_decode_step(device: torch.device) -> Callable[[DecoderLM, Tensor, KVCache], Tensor]:
    """:func:`_decode_step` under ``torch.compile``, built once per process and device type.

    On CUDA, ``mode="reduce-overhead"`` captures the step as a CUDA graph (the static cache
    buffers keep their addresses, so each token replays one graph); elsewhere the default mode
    fuses kernels. ``dynamic=False``: shapes are fixed by design, and a new batch size or cache
    length gets its own graph rather than a slower shape-generic one.
    """
    mode = "reduce-overhead" if device.type == "cuda" else "default"
    if mode not in _COMPILED_STEPS:
        _COMPILED_STEPS[mode] = torch.compile(
            _decode_step, mode=mode, fullgraph=True, dynamic=False
        )
    return _COMPILED_STEPS[mode]


def _decode_cached(
    model: DecoderLM,
    prompts: list[list[int]],
    max_new_tokens: int,
    pick: Callable[[Tensor], Tensor],
    stream: _Stream,
    mode: str,
) -> None:
    """Prefill the left-padded prompts, then decode one token per step (``mode``: see module).

    Prefill always takes the dynamic path (an ``int`` position): a normal causal forward pass,
    whose keys and values land in the same buffers the static steps read. A static step reads no
    host integer from the device: its position is a view into the cache's slot tensor.
    """
    device = next(model.parameters()).device
    ids, pad = _left_pad(prompts, device)
    prompt_len = ids.size(1)
    cache_len = prompt_len + max_new_tokens
    if mode != "dynamic":
        multiple = STATIC_CACHE_MULTIPLE
        cache_len = min(model.config.block_size, -(-cache_len // multiple) * multiple)
    compiled = compiled_decode_step(device) if mode == "compiled" else None
    cache = _reuse_or_new_cache(model, ids.size(0), cache_len)  # kept for the next call
    cache.pad, cache.last_only = pad, True
    logits = _decode_step(model, ids, cache.seek(0))
    for step in range(max_new_tokens):
        next_ids = pick(logits)
        if stream.push(next_ids) or step == max_new_tokens - 1:
            break
        tokens = next_ids[:, None]
        cache.seek(prompt_len + step, static=mode != "dynamic")
        if compiled is None:
            logits = _decode_step(model, tokens, cache)
        else:
            if device.type == "cuda":  # the previous replay's outputs are consumed
                torch.compiler.cudagraph_mark_step_begin()
            logits = compiled(model, tokens, cache)


def _decode_sliding(
    model: DecoderLM,
    prompts: list[list[int]],
    max_new_tokens: int,
    pick: Callable[[Tensor], Tensor],
    stream: _Stream,
) -> None:
    """Decode without a cache: each step re-reads each row's last ``block_size`` tokens."""
    device = next(model.parameters()).device
    block_size = model.config.block_size
    sequences = [list(prompt) for prompt in prompts]
    for _ in range(max_new_tokens):
        ids, pad = _left_pad([sequence[-block_size:] for sequence in sequences], device)
        next_ids = pick(_decode_step(model, ids, KVCache(pad=pad, last_only=True)))
        if stream.push(next_ids):
            break
        for sequence, token in zip(sequences, next_ids.tolist(), strict=True):
            sequence.append(token)


def _prompt_list(prompt: Sequence[int] | Tensor, index: int, vocab_size: int) -> list[int]:
    """One prompt as a list of ints, checked here rather than failing inside an embedding."""
    if isinstance(prompt, Tensor):
        if prompt.dim() != 1:
            raise ValueError(
                f"Prompt {index} is a {prompt.dim()}-D tensor; each prompt must be 1-D. For one "
                "prompt pass [ids]; for a batch, a list of prompts or a (B, T) tensor."
            )
        ids = [int(token) for token in prompt.tolist()]
    elif isinstance(prompt, Sequence) and not isinstance(prompt, str):
        ids = [int(token) for token in prompt]
    else:
        raise ValueError(
            f"prompt_ids must be a list of prompts, each a list or 1-D tensor of token ids; item "
            f"{index} is a {type(prompt).__name__}. For one prompt pass [ids]."
        )
    if not ids:
        raise ValueError(
            f"Prompt {index} is empty; start it with at least one token (e.g. end-of-text)."
        )
    if min(ids) < 0 or max(ids) >= vocab_size:
        raise ValueError(
            f"Prompt {index} has token ids outside the model's vocabulary 0..{vocab_size - 1}."
        )
    return ids


def _check_sampling(
    max_new_tokens: int, temperature: float, top_k: int | None, top_p: float | None
) -> None:
    """Reject settings that would fail or silently misbehave deep inside sampling."""
    if max_new_tokens < 0:
        raise ValueError(f"max_new_tokens must be >= 0, got {max_new_tokens}.")
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0 (0: greedy), got {temperature}.")
    if top_k is not None and top_k < 1:
        raise ValueError(f"top_k must be >= 1 or None, got {top_k}.")
    if top_p is not None and not 0 < top_p <= 1:
        raise ValueError(f"top_p must be in (0, 1] or None, got {top_p}.")
