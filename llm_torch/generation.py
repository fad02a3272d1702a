"""Autoregressive generation from any llm-torch architecture, with a KV cache.

With the cache, the prompt is run once (prefill) and every later step feeds only the newest token,
whose query attends to the cached keys and values of all earlier ones: a step costs one token's
forward pass instead of the whole context's. Without it, every step re-reads the last
``block_size`` tokens, which also lets generation run past ``block_size`` by sliding the window.

Prompts of different lengths are run in groups of equal length, one group after another, each
as one batch. That needs no padding, attention masks or per-row positions, so every sequence
computes exactly what it would alone; the price is fewer sequences per forward pass when lengths
vary (padded batching is a throughput optimisation that can come later).
"""

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, nullcontext
from functools import partial

import torch
from torch import Tensor

from llm_torch.architectures.registry import Model

#: Called as ``on_token(batch_index, token_id)`` for each new token as soon as it is sampled;
#: ``batch_index`` is the prompt's index in ``prompt_ids``.
TokenCallback = Callable[[int, int], None]

#: One prompt of ``llm-torch predict``: its index in the prompts file, its text and its token
#: ids. ``CausalLMModule.predict_step`` returns the same triple with the new ids in their place.
Prompt = tuple[int, str, list[int]]


@contextmanager
def kv_cache(model: Model, batch_size: int, max_len: int | None = None) -> Iterator[Model]:
    """Give ``model`` KV caches for the ``with`` block, and free them after it.

    Args:
        model: A GPT or Llama.
        batch_size: Largest batch decoded inside the block.
        max_len: Positions to hold; ``None`` means the model's ``block_size``.
    """
    model.setup_cache(batch_size, max_len)
    try:
        yield model
    finally:
        model.clear_cache()


def sample_next(
    logits: Tensor,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Pick one token per row of ``logits`` ``(B, vocab)``; returns ``(B,)`` ids.

    Filters apply in ``transformers``' order: temperature, then top-k, then top-p.

    Args:
        logits: Next-token logits (float32 for a faithful softmax).
        temperature: Divides the logits; ``0`` means greedy (argmax, no randomness).
        top_k: Keep only the ``k`` most likely tokens.
        top_p: Nucleus sampling: keep the smallest set of most likely tokens whose probability
            reaches ``top_p`` (always at least the most likely one).
        generator: RNG for the draw; ``None`` uses the global one.
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
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


@torch.no_grad()
def generate(
    model: Model,
    prompt_ids: Sequence[Sequence[int] | Tensor] | Tensor,
    max_new_tokens: int,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    eos_id: int | None = None,
    seed: int | None = None,
    use_cache: bool = True,
    on_token: TokenCallback | None = None,
) -> list[list[int]]:
    """Continue each prompt by up to ``max_new_tokens`` tokens.

    Prompts may differ in length: they run in groups of equal length (see the module docstring),
    so ``on_token`` streams one group after another. Put the model in eval mode first (dropout
    would apply otherwise); the mode is left as it is.

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
        seed: Seed of a private ``torch.Generator``; the global RNG, which training depends on,
            is never drawn from. ``None`` seeds it nondeterministically.
        use_cache: Decode with a KV cache. Prompt plus new tokens must then fit ``block_size``;
            without the cache the context is cropped to the last ``block_size`` tokens.
        on_token: Called with ``(batch_index, token_id)`` for every new token, as produced.

    Returns:
        One list per prompt: the prompt's ids followed by the new ones, without padding.

    Raises:
        ValueError: For malformed prompts or sampling settings, or, with the cache, prompts that
            leave no room for ``max_new_tokens`` within ``block_size``.
    """
    vocab_size, block_size = model.config.vocab_size, model.config.block_size
    prompts = [_prompt_list(prompt, index, vocab_size) for index, prompt in enumerate(prompt_ids)]
    _check_sampling(max_new_tokens, temperature, top_k, top_p)
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
    generator = torch.Generator(device=device)
    if seed is None:
        generator.seed()
    else:
        generator.manual_seed(seed)
    pick = partial(
        sample_next, temperature=temperature, top_k=top_k, top_p=top_p, generator=generator
    )
    groups: dict[int, list[int]] = {}
    for index, prompt in enumerate(prompts):
        groups.setdefault(len(prompt), []).append(index)

    batch_size = max(len(indices) for indices in groups.values())
    with kv_cache(model, batch_size, longest + max_new_tokens) if use_cache else nullcontext():
        for indices in groups.values():
            ids = torch.tensor([prompts[index] for index in indices], device=device)
            new = _extend(model, ids, indices, max_new_tokens, pick, eos_id, on_token, use_cache)
            for index, tokens in zip(indices, new, strict=True):
                outputs[index] += tokens
    return outputs


def _extend(
    model: Model,
    ids: Tensor,
    batch_indices: list[int],
    max_new_tokens: int,
    pick: Callable[[Tensor], Tensor],
    eos_id: int | None,
    on_token: TokenCallback | None,
    use_cache: bool,
) -> list[list[int]]:
    """Generate for one batch of equal-length prompts ``ids`` ``(B, T)``; return the new ids.

    ``batch_indices`` are the rows' indices in the caller's prompt list, for ``on_token``.

    A finished row keeps being fed (the batch keeps its shape) but its tokens are dropped. The
    step's tokens come to the host each step: streaming and the stop test need them there.
    """
    block_size = model.config.block_size
    new: list[list[int]] = [[] for _ in range(ids.size(0))]
    done = [False] * ids.size(0)
    tokens, input_pos = ids, 0
    for _ in range(max_new_tokens):
        if use_cache:  # prefill with the prompt, then one token per step
            logits = model(tokens, input_pos=input_pos)
            input_pos += tokens.size(1)
        else:
            logits = model(ids[:, -block_size:])
        next_ids = pick(logits[:, -1].float())
        for row, token in enumerate(next_ids.tolist()):
            if not done[row]:
                new[row].append(token)
                if on_token is not None:
                    on_token(batch_indices[row], token)
                done[row] = token == eos_id
        if all(done):
            break
        tokens = next_ids[:, None]
        if not use_cache:
            ids = torch.cat([ids, tokens], dim=1)
    return new


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
