"""Shared pieces of the generation tests: greedy decoding without a KV cache, as a reference."""

import torch

from llm_torch.architectures import GPT, GPTConfig, Llama, LlamaConfig


def greedy_reference(model: GPT | Llama, prompt: list[int], steps: int) -> list[int]:
    """Greedy decoding spelled out: full forward over the cropped context, argmax, append."""
    ids = list(prompt)
    block_size = model.config.block_size
    with torch.no_grad():
        for _ in range(steps):
            logits = model(torch.tensor([ids[-block_size:]]))
            ids.append(int(logits[0, -1].argmax()))
    return ids


#: Vocabulary of the tiny generation models.
VOCAB = 97


def tiny(arch: str = "gpt", block_size: int = 64, n_layer: int = 2) -> GPT | Llama:
    """A random tiny model with weights scaled up, so next-token choices are not near-ties."""
    torch.manual_seed(0)
    model: GPT | Llama
    if arch == "gpt":
        model = GPT(
            GPTConfig(vocab_size=VOCAB, block_size=block_size, n_layer=n_layer, n_head=4, n_embd=32)
        )
    else:
        config = LlamaConfig(
            vocab_size=VOCAB,
            block_size=block_size,
            n_layer=n_layer,
            n_head=4,
            n_kv_head=2,
            n_embd=32,
            mlp_hidden=48,
        )
        model = Llama(config)
    with torch.no_grad():
        for param in model.parameters():
            param.mul_(10)
    return model.eval()
