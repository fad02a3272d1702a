"""Shared pieces of the generation tests: greedy decoding without a KV cache, as a reference."""

import torch

from llm_torch.architectures import GPT, Llama


def greedy_reference(model: GPT | Llama, prompt: list[int], steps: int) -> list[int]:
    """Greedy decoding spelled out: full forward over the cropped context, argmax, append."""
    ids = list(prompt)
    block_size = model.config.block_size
    with torch.no_grad():
        for _ in range(steps):
            logits = model(torch.tensor([ids[-block_size:]]))
            ids.append(int(logits[0, -1].argmax()))
    return ids
