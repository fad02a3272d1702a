"""Optimizer parameter groups and the learning-rate schedule."""

import math

from torch import nn


def weight_decay_groups(model: nn.Module, weight_decay: float) -> list[dict[str, object]]:
    """Split parameters into decayed weight matrices and everything else, as GPT-2 trained.

    Weight decay regularises the matrices of linear layers. Biases, normalisation gains and
    embedding tables are left alone: shrinking a gain or an embedding row towards zero changes
    what it represents rather than regularising it. A tied LM head is the token embedding, so it
    is not decayed either.

    Args:
        model: The architecture (``GPT``, ``Llama``, ...).
        weight_decay: Decay applied to the linear-layer weights.

    Returns:
        Two parameter groups for ``torch.optim.AdamW``; each shared tensor appears once.
    """
    embeddings = {
        id(param)
        for module in model.modules()
        if not isinstance(module, nn.Linear)
        for param in module.parameters(recurse=False)
    }
    decay: list[nn.Parameter] = []
    no_decay: list[nn.Parameter] = []
    for param in model.parameters():  # yields a tied tensor once
        if not param.requires_grad:
            continue
        (decay if param.dim() >= 2 and id(param) not in embeddings else no_decay).append(param)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


def warmup_cosine(step: int, warmup_steps: int, decay_steps: int, min_ratio: float) -> float:
    """Learning-rate multiplier: linear warmup, then cosine decay to ``min_ratio``, then flat.

    Args:
        step: Optimizer steps taken so far (not micro-batches).
        warmup_steps: Steps of linear warmup from ``1 / (warmup_steps + 1)`` up to 1.
        decay_steps: Step at which the cosine reaches ``min_ratio``; constant afterwards.
        min_ratio: Final learning rate as a fraction of the peak (``min_lr / lr``).
    """
    if step < warmup_steps:
        return (step + 1) / (warmup_steps + 1)
    if step >= decay_steps:
        return min_ratio
    progress = (step - warmup_steps) / max(1, decay_steps - warmup_steps)
    return min_ratio + 0.5 * (1.0 - min_ratio) * (1.0 + math.cos(math.pi * progress))
