"""Optimizer groups and learning-rate schedule against hand computations."""

import math

import pytest
import torch
from torch import nn

from llm_torch.architectures import GPT, GPTConfig
from llm_torch.engine.optim import OptimizerConfig, adamw_groups, warmup_cosine


def test_only_linear_weight_matrices_are_decayed() -> None:
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=50, block_size=8, n_layer=2, n_head=2, n_embd=16))
    decay, no_decay = adamw_groups(model, OptimizerConfig(), lr=0.5, weight_decay=0.1)
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    everything = decay["params"] + no_decay["params"]
    assert len(everything) == len(list(model.parameters()))  # each tensor once, none forgotten
    # A step of AdamW with zero gradients moves a tensor only by its weight decay:
    # p <- p * (1 - lr * weight_decay) where decayed, p unchanged elsewhere.
    optimizer = torch.optim.AdamW([decay, no_decay], lr=0.5)
    with torch.no_grad():  # no zeros or ones (biases, norms), which would hide a wrong decay
        for param in model.parameters():
            param.copy_(torch.randn_like(param))
            param.grad = torch.zeros_like(param)
    before = [p.detach().clone() for p in model.parameters()]
    optimizer.step()
    # Per block: qkv, attention output, MLP in and out projections. Not the tied head/embedding,
    # the position table, the norms or the biases.
    tied = model.wte.weight
    linear = {id(m.weight) for m in model.modules() if isinstance(m, nn.Linear)} - {id(tied)}
    assert len(linear) == 2 * 4
    for param, old in zip(model.parameters(), before, strict=True):
        expected = old * (1 - 0.5 * 0.1) if id(param) in linear else old
        torch.testing.assert_close(param.detach(), expected, rtol=0, atol=1e-7)


def test_frozen_parameters_are_left_out() -> None:
    model = nn.Sequential(nn.Linear(3, 3), nn.Linear(3, 3))
    model[0].weight.requires_grad_(False)
    decay, no_decay = adamw_groups(model, OptimizerConfig(), lr=0.5, weight_decay=0.1)
    assert decay["params"] == [model[1].weight]
    assert no_decay["params"] == [model[0].bias, model[1].bias]


def _torch_warmup_cosine(steps: int, warmup: int, decay: int, min_ratio: float) -> list[float]:
    """Multipliers of torch's own schedulers: ``LinearLR`` warmup, then ``CosineAnnealingLR``."""
    optimizer = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1.0)
    warm = torch.optim.lr_scheduler.LinearLR(
        optimizer, start_factor=1 / (warmup + 1), end_factor=1.0, total_iters=warmup
    )
    cosine = torch.optim.lr_scheduler.CosineAnnealingLR(
        optimizer, T_max=decay - warmup, eta_min=min_ratio
    )
    schedule = torch.optim.lr_scheduler.SequentialLR(optimizer, [warm, cosine], [warmup])
    factors = []
    for _ in range(steps):
        factors.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        schedule.step()
    return factors


def test_warmup_then_cosine_matches_torchs_linear_then_cosine_schedulers() -> None:
    # torch's cosine rises again after T_max; ours stays at the minimum (checked below).
    expected = _torch_warmup_cosine(111, warmup=10, decay=110, min_ratio=0.1)
    ours = [
        warmup_cosine(step, warmup_steps=10, decay_steps=110, min_ratio=0.1) for step in range(111)
    ]
    assert ours == pytest.approx(expected, rel=1e-6, abs=1e-9)


@pytest.mark.parametrize(
    ("step", "expected"),
    [
        (0, 1 / 11),  # warmup: (step + 1) / (warmup + 1)
        (4, 5 / 11),
        (10, 1.0),  # peak at the end of warmup
        (35, 0.1 + 0.9 * (2 + math.sqrt(2)) / 4),  # a quarter through: (1 + cos(pi/4)) / 2
        (60, 0.55),  # halfway through the cosine: midway between peak and min
        (110, 0.1),  # reaches min at decay_steps
        (500, 0.1),  # and stays there
    ],
)
def test_warmup_then_cosine_to_min(step: int, expected: float) -> None:
    assert warmup_cosine(step, warmup_steps=10, decay_steps=110, min_ratio=0.1) == pytest.approx(
        expected
    )
