"""Log-likelihood scoring of token sequences, shared by ``llm-torch evaluate`` and training.

Nothing here imports lm-evaluation-harness: the training callback and the perplexity of a text
file use the same code as :class:`~llm_torch.evaluation.LLMTorchLM`, so a number reported during
training is the number ``llm-torch evaluate`` reports for the same items.

A request is ``(context_ids, continuation_ids)``; its score is the summed log-probability of the
continuation given the context, and whether greedy decoding would have produced it. Requests are
sorted longest first (the first batch is the largest, so memory errors surface at once), run in
right-padded batches (padding after a causal sequence cannot change its logits), and returned in
the caller's order.
"""

import math
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass

import torch
from torch import Tensor

from llm_torch.architectures.base import DecoderLM
from llm_torch.tokenizer import Tokenizer

#: ``(context_ids, continuation_ids)``: the continuation is scored given the context.
Request = tuple[list[int], list[int]]


def encode_pair(tokenizer: Tokenizer, context: str, continuation: str) -> Request:
    """Token ids of a context and its continuation, exactly as lm-evaluation-harness splits them.

    Trailing whitespace of the context moves to the continuation, and the two are encoded
    together then split at the context's length, so a word keeps the token it has in running
    text (``" dog"``, not ``" "`` + ``"dog"``). An empty context becomes the end-of-text token,
    which every document follows in training. Matching lm-eval's ``TemplateLM`` keeps the
    training callback's accuracy equal to ``llm-torch evaluate``'s on the same items.
    """
    if not context:
        ids = tokenizer.encode(continuation)
        if ids and ids[0] == tokenizer.eot_id:
            return ids[:1], ids[1:]
        return [tokenizer.eot_id], ids
    spaces = len(context) - len(context.rstrip())
    if spaces:
        context, continuation = context[:-spaces], context[-spaces:] + continuation
    whole = tokenizer.encode(context + continuation)
    context_ids = tokenizer.encode(context)
    return context_ids, whole[len(context_ids) :]


def rolling_windows(tokens: Sequence[int], prefix: int, max_len: int) -> list[Request]:
    """Split a long document into requests that score each of its tokens exactly once.

    The first window predicts the first ``max_len`` tokens after ``prefix``; each later one
    predicts up to ``max_len`` new tokens with the full ``max_len`` tokens before the first as
    context, so every prediction sees as much context as the model allows (lm-eval's
    ``get_rolling_token_windows`` with ``context_len=1`` and disjoint windows).
    """
    tokens = list(tokens)
    if not tokens:
        return []
    first = min(max_len, len(tokens))
    windows: list[Request] = [([prefix], tokens[:first])]
    done = first
    while done < len(tokens):
        end = min(len(tokens), done + max_len)
        windows.append((tokens[max(0, end - max_len - 1) : done], tokens[done:end]))
        done = end
    return windows


def _batches(order: list[int], batch_size: int) -> Iterator[list[int]]:
    for start in range(0, len(order), batch_size):
        yield order[start : start + batch_size]


@torch.no_grad()
def score_batch(model: DecoderLM, requests: Sequence[Request]) -> tuple[Tensor, Tensor]:
    """Summed continuation log-probabilities and greedy flags of one batch, on the device.

    Contexts longer than the model's ``block_size`` lose their oldest tokens. Nothing is read
    back to the host: the caller decides when to synchronise.

    Returns:
        ``(logprobs, greedy)``, float32 and bool tensors of shape ``(len(requests),)``.
    """
    block_size = model.config.block_size
    device = next(model.parameters()).device
    inputs = [
        (context + continuation)[-(block_size + 1) :][:-1] for context, continuation in requests
    ]
    width = max(len(ids) for ids in inputs)
    batch = torch.zeros(len(inputs), width, dtype=torch.long)
    targets = torch.zeros(len(inputs), width, dtype=torch.long)
    mask = torch.zeros(len(inputs), width, dtype=torch.bool)
    for row, (ids, (_, continuation)) in enumerate(zip(inputs, requests, strict=True)):
        n, m = len(ids), len(continuation)
        if not 0 < m <= n:
            raise ValueError(
                f"Cannot score a continuation of {m} tokens after a context of "
                f"{len(requests[row][0])} with a model of block_size {block_size}: the context "
                "needs at least one token, the continuation 1..block_size."
            )
        batch[row, :n] = torch.tensor(ids)
        targets[row, n - m : n] = torch.tensor(continuation)
        mask[row, n - m : n] = True
    batch, targets, mask = (t.to(device, non_blocking=True) for t in (batch, targets, mask))
    logits = model(batch).float()
    # log_softmax at the targets only: no second (B, T, vocab) tensor.
    picked = logits.gather(-1, targets[..., None]).squeeze(-1) - logits.logsumexp(dim=-1)
    sums = (picked * mask).sum(dim=1)
    greedy = ((logits.argmax(dim=-1) == targets) | ~mask).all(dim=1)
    return sums, greedy


def score_requests(
    model: DecoderLM,
    requests: Sequence[Request],
    batch_size: int,
    autocast: AbstractContextManager[object] | None = None,
) -> list[tuple[float, bool]]:
    """Score every request: ``(summed log-probability, is_greedy)`` each, in the given order.

    Requests run longest first in batches of ``batch_size`` and are read back in one transfer.

    Args:
        model: A GPT or Llama in eval mode.
        requests: ``(context_ids, continuation_ids)`` pairs; the context must not be empty.
        batch_size: Requests per forward pass.
        autocast: A context for the forward passes (e.g. Lightning's precision context).
    """
    if not requests:
        return []
    order = sorted(range(len(requests)), key=lambda i: -len(requests[i][0] + requests[i][1]))
    sums, flags = [], []
    with autocast or nullcontext():
        for indices in _batches(order, batch_size):
            batch_sums, batch_greedy = score_batch(model, [requests[i] for i in indices])
            sums.append(batch_sums)
            flags.append(batch_greedy)
    values = torch.cat(sums).tolist()
    greedy = torch.cat(flags).tolist()
    results: list[tuple[float, bool]] = [(0.0, False)] * len(requests)
    for position, index in enumerate(order):
        results[index] = (values[position], bool(greedy[position]))
    return results


@dataclass(frozen=True)
class Perplexity:
    """How well a model predicts a text, in units that compare across tokenizers.

    Attributes:
        loss: Mean negative log-likelihood per token (nats).
        perplexity: ``exp(loss)``; depends on the tokenizer.
        bits_per_byte: Total negative log-likelihood in bits over the text's UTF-8 bytes: the
            same text costs the same bytes whatever the tokenizer, so models compare.
        tokens: Tokens scored.
        bytes: UTF-8 bytes of the text.
    """

    loss: float
    perplexity: float
    bits_per_byte: float
    tokens: int
    bytes: int


def perplexity(
    model: DecoderLM, tokenizer: Tokenizer, texts: Sequence[str], batch_size: int = 8
) -> Perplexity:
    """Score ``texts`` as documents: each starts after an end-of-text token, as in training.

    Documents longer than the context are scored in overlapping windows (see
    :func:`rolling_windows`), every token exactly once.
    """
    windows: list[Request] = []
    tokens = 0
    for text in texts:
        ids = tokenizer.encode(text)
        tokens += len(ids)
        windows += rolling_windows(ids, tokenizer.eot_id, model.config.block_size)
    if tokens == 0:
        raise ValueError("The text is empty: there is nothing to score.")
    nll = -sum(logprob for logprob, _ in score_requests(model, windows, batch_size))
    size = sum(len(text.encode("utf-8")) for text in texts)
    return Perplexity(
        loss=nll / tokens,
        perplexity=math.exp(nll / tokens),
        bits_per_byte=nll / (size * math.log(2)),
        tokens=tokens,
        bytes=size,
    )
