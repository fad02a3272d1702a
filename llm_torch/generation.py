"""Autoregressive sampling from any llm-torch architecture (``forward(idx) -> logits``)."""

import torch
from torch import Tensor, nn


@torch.no_grad()
def generate(
    model: nn.Module,
    prompt_ids: Tensor,
    max_new_tokens: int,
    block_size: int,
    temperature: float = 1.0,
    top_k: int | None = None,
    seed: int | None = None,
) -> Tensor:
    """Extend ``prompt_ids`` ``(B, T)`` by ``max_new_tokens`` sampled tokens.

    Each step re-reads at most the last ``block_size`` tokens (no KV cache yet), which is fine for
    the short samples the training loop writes to TensorBoard.

    Args:
        model: Maps ``(B, T)`` ids to ``(B, T, vocab)`` logits.
        prompt_ids: Prompt token ids on the model's device.
        max_new_tokens: Number of tokens to append.
        block_size: The model's context length; older tokens are cropped.
        temperature: Softmax temperature; ``0`` picks the most likely token (greedy).
        top_k: Sample only among the ``k`` most likely tokens.
        seed: Seed for a private generator, so sampling does not disturb the global RNG that
            training depends on.

    Returns:
        ``(B, T + max_new_tokens)`` ids: the prompt followed by the new tokens.
    """
    generator = None
    if seed is not None:
        generator = torch.Generator(device=prompt_ids.device).manual_seed(seed)
    ids = prompt_ids
    for _ in range(max_new_tokens):
        logits = model(ids[:, -block_size:])[:, -1, :].float()
        if temperature == 0:
            next_id = logits.argmax(dim=-1, keepdim=True)
        else:
            logits = logits / temperature
            if top_k is not None:
                kth = torch.topk(logits, min(top_k, logits.size(-1))).values[:, -1:]
                logits = logits.masked_fill(logits < kth, float("-inf"))
            next_id = torch.multinomial(logits.softmax(dim=-1), 1, generator=generator)
        ids = torch.cat([ids, next_id], dim=1)
    return ids
