"""Optimizers (AdamW, or Muon with AdamW), their parameter groups, and the learning-rate schedule.

Parameters fall into four roles (see :func:`parameter_roles`): hidden weight ``matrices``, the
``embeddings`` tables, an untied LM ``head``, and ``scalars`` (biases, norm gains). AdamW trains
all of them by default; with ``name: muon`` the matrices go to ``torch.optim.Muon`` and the rest
stay with AdamW. Each role's learning rate and weight decay can be set in YAML.
"""

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn
from torch.optim import Optimizer

#: Roles of :func:`parameter_roles`, in the order their tensors first appear in a model.
ROLES = ("matrices", "embeddings", "head", "scalars")
#: Roles decayed by ``model.weight_decay`` when not set, as GPT-2 trained. Shrinking a bias, a
#: norm gain or an embedding row towards zero changes what it represents rather than
#: regularising it; a tied head is the token table, so it is not decayed either.
_DECAYED = {"matrices", "head"}


@dataclass
class GroupConfig:
    """Learning rate and weight decay of one AdamW parameter role; ``None`` keeps the default.

    Attributes:
        lr: Peak learning rate; ``None``: ``model.lr``. The schedule scales it like the others.
        weight_decay: ``None``: ``model.weight_decay`` for the head, 0 for embeddings and
            scalars.
    """

    lr: float | None = None
    weight_decay: float | None = None


@dataclass
class MuonConfig:
    """``torch.optim.Muon`` settings for the hidden weight matrices.

    Attributes:
        lr: Peak learning rate (the schedule scales it like AdamW's).
        weight_decay: Decoupled weight decay.
        momentum: Momentum of the averaged gradient that is orthogonalised.
        nesterov: Nesterov momentum.
        ns_steps: Newton-Schulz iterations.
        adjust_lr_fn: ``original`` (Keller Jordan's scaling, ``lr`` around 0.02) or
            ``match_rms_adamw`` (Moonshot's, which reuses an AdamW learning rate).
    """

    lr: float = 0.02
    weight_decay: float = 0.0
    momentum: float = 0.95
    nesterov: bool = True
    ns_steps: int = 5
    adjust_lr_fn: str = "original"


@dataclass
class OptimizerConfig:
    """Which optimizer trains which parameters (``model.optimizer`` in YAML).

    ``model.lr``, ``betas``, ``eps`` and ``weight_decay`` stay AdamW's settings.

    Attributes:
        name: ``adamw`` (every parameter) or ``muon`` (Muon on hidden weight matrices, AdamW on
            embeddings, head and scalars).
        muon: Muon's settings, used with ``name: muon``.
        embeddings: Overrides for the token (and position) tables.
        head: Overrides for an untied LM head (a tied one is the token table).
        scalars: Overrides for biases and normalisation gains.
    """

    name: str = "adamw"
    muon: MuonConfig = field(default_factory=MuonConfig)
    embeddings: GroupConfig = field(default_factory=GroupConfig)
    head: GroupConfig = field(default_factory=GroupConfig)
    scalars: GroupConfig = field(default_factory=GroupConfig)

    def __post_init__(self) -> None:
        if self.name not in ("adamw", "muon"):
            raise ValueError(f"model.optimizer.name must be 'adamw' or 'muon', got {self.name!r}.")
        if self.muon.adjust_lr_fn not in ("original", "match_rms_adamw"):
            raise ValueError(
                "model.optimizer.muon.adjust_lr_fn must be 'original' or 'match_rms_adamw', got "
                f"{self.muon.adjust_lr_fn!r}."
            )


def parameter_roles(model: nn.Module) -> dict[str, list[nn.Parameter]]:
    """Sort trainable parameters into :data:`ROLES`, each shared tensor once, in model order.

    ``matrices`` are the 2-D weights of linear layers other than the LM head: the hidden
    weights, which Muon orthogonalises. ``embeddings`` are tables that are only looked up, a
    tied head included. ``scalars`` are everything of fewer than two dimensions.
    """
    head = getattr(model, "lm_head", None)
    linear = {
        id(module.weight)
        for module in model.modules()
        if isinstance(module, nn.Linear) and module is not head
    }
    tables = {
        id(param)
        for module in model.modules()
        if not isinstance(module, nn.Linear)
        for param in module.parameters(recurse=False)
        if param.dim() >= 2
    }
    roles: dict[str, list[nn.Parameter]] = {role: [] for role in ROLES}
    for param in model.parameters():  # yields a tied tensor once
        if not param.requires_grad:
            continue
        if param.dim() < 2:
            role = "scalars"
        elif id(param) in tables:
            role = "embeddings"
        elif id(param) in linear:
            role = "matrices"
        else:
            role = "head"
        roles[role].append(param)
    return roles


def adamw_groups(
    model: nn.Module, config: OptimizerConfig, lr: float, weight_decay: float
) -> list[dict[str, Any]]:
    """AdamW's parameter groups: one per distinct (lr, weight decay), parameters in model order.

    Roles with equal settings share a group, so the default configuration gives GPT-2's two
    groups, decayed matrices then the rest, as before roles existed (older checkpoints resume).
    With ``name: muon`` the matrices are Muon's and left out.

    Args:
        model: The architecture.
        config: The optimizer choice and per-role overrides.
        lr: ``model.lr``, for roles without their own.
        weight_decay: ``model.weight_decay``, for matrices and an untied head.
    """
    roles = parameter_roles(model)
    if config.name == "muon":
        roles["matrices"] = []
    order = {id(p): i for i, p in enumerate(model.parameters())}
    groups: dict[tuple[float, float], list[nn.Parameter]] = {}
    for role, params in roles.items():  # groups in role order: decayed matrices first
        override = getattr(config, role, GroupConfig())
        group_lr = lr if override.lr is None else override.lr
        default_decay = weight_decay if role in _DECAYED else 0.0
        decay = default_decay if override.weight_decay is None else override.weight_decay
        if params:
            groups.setdefault((group_lr, decay), []).extend(params)
    for params in groups.values():
        params.sort(key=lambda param: order[id(param)])
    return [
        {"params": params, "lr": group_lr, "weight_decay": decay}
        for (group_lr, decay), params in groups.items()
    ]


def newton_schulz(
    matrix: Tensor, coefficients: tuple[float, float, float], steps: int, eps: float
) -> Tensor:
    """Muon's quintic Newton-Schulz iteration towards the nearest orthogonal matrix, in float32.

    The same iteration as ``torch.optim.Muon``'s (Keller Jordan's coefficients), which runs it in
    bfloat16: right for GPUs, but CPUs without bfloat16 matrix units run it about 20x slower than
    in float32 (236 vs 11 ms for a 512 x 128 gradient on this project's 2-core CI machine).
    """
    a, b, c = coefficients
    wide = matrix.size(0) <= matrix.size(1)
    x = matrix.float() if wide else matrix.float().T
    x = x / x.norm().clamp(min=eps)  # spectral norm at most 1
    for _ in range(steps):
        gram = x @ x.T
        x = torch.addmm(x, torch.addmm(gram, gram, gram, beta=b, alpha=c), x, beta=a)
    return x if wide else x.T


class Muon(torch.optim.Muon):
    """``torch.optim.Muon``, orthogonalising in float32 on the CPU (see :func:`newton_schulz`).

    On other devices ``step`` is torch's own. The CPU step follows it line for line, with the
    same state (``momentum_buffer``), so checkpoints move between devices.
    """

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:  # type: ignore[override]
        """One Muon update of every parameter with a gradient."""
        params = [p for group in self.param_groups for p in group["params"]]
        if any(p.device.type != "cpu" for p in params):
            return super().step(closure)
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            for param in group["params"]:
                if param.grad is None:
                    continue
                state = self.state[param]
                if "momentum_buffer" not in state:
                    state["momentum_buffer"] = torch.zeros_like(param.grad)
                buffer = state["momentum_buffer"]
                buffer.lerp_(param.grad, 1 - group["momentum"])
                update = param.grad.lerp(buffer, group["momentum"]) if group["nesterov"] else buffer
                update = newton_schulz(
                    update, group["ns_coefficients"], group["ns_steps"], group["eps"]
                )
                rows, cols = param.shape[:2]
                if group["adjust_lr_fn"] == "match_rms_adamw":
                    ratio = 0.2 * math.sqrt(max(rows, cols))
                else:  # "original" (torch's default)
                    ratio = math.sqrt(max(1.0, rows / cols))
                param.mul_(1 - group["lr"] * group["weight_decay"])
                param.add_(update.to(param.dtype), alpha=-group["lr"] * ratio)
        return loss


class OptimizerChain(Optimizer):
    """Several optimizers stepped as one, so Lightning's automatic optimisation drives them.

    ``param_groups`` is the concatenation of the children's groups (the same dicts), so a
    learning-rate scheduler, gradient clipping and the AMP grad scaler see every parameter, and
    the schedule's changes reach the children. The state dict holds each child's.

    Args:
        optimizers: The optimizers, each over its own parameters.
    """

    def __init__(self, *optimizers: Optimizer) -> None:
        params = [p for opt in optimizers for group in opt.param_groups for p in group["params"]]
        super().__init__(params, {})
        self.optimizers = optimizers
        self.param_groups = [group for opt in optimizers for group in opt.param_groups]

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:  # type: ignore[override]
        """Run ``closure`` (forward and backward) once, then step every optimizer."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for optimizer in self.optimizers:
            optimizer.step()
        return loss

    def state_dict(self) -> dict[str, Any]:
        """Every child's state dict."""
        return {"optimizers": [optimizer.state_dict() for optimizer in self.optimizers]}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore every child from :meth:`state_dict`'s output."""
        states = state_dict.get("optimizers")
        if states is None or len(states) != len(self.optimizers):
            raise ValueError(
                f"This optimizer state holds {len(states or [])} optimizers' states, while the "
                f"run uses {len(self.optimizers)}: resume with the model.optimizer it was "
                "trained with."
            )
        for optimizer, state in zip(self.optimizers, states, strict=True):
            optimizer.load_state_dict(state)
        # Loading gives each child new group dicts: share those, or the schedule stops reaching
        # the children after a resume.
        self.param_groups = [group for opt in self.optimizers for group in opt.param_groups]


def build_optimizer(
    model: nn.Module,
    config: OptimizerConfig,
    lr: float,
    weight_decay: float,
    betas: tuple[float, float],
    eps: float,
    fused: bool,
) -> Optimizer:
    """AdamW, or Muon on the hidden matrices chained with AdamW on the rest.

    Args:
        model: The architecture.
        config: Which optimizer, and the per-role overrides.
        lr: AdamW's peak learning rate.
        weight_decay: AdamW's decay on matrices and an untied head.
        betas: AdamW's betas.
        eps: AdamW's epsilon.
        fused: Use AdamW's fused kernel.
    """
    adamw = torch.optim.AdamW(
        adamw_groups(model, config, lr, weight_decay), lr=lr, betas=betas, eps=eps, fused=fused
    )
    if config.name == "adamw":
        return adamw
    muon = config.muon
    matrices: Iterable[Tensor] = parameter_roles(model)["matrices"]
    return OptimizerChain(
        Muon(
            matrices,
            lr=muon.lr,
            weight_decay=muon.weight_decay,
            momentum=muon.momentum,
            nesterov=muon.nesterov,
            ns_steps=muon.ns_steps,
            adjust_lr_fn=muon.adjust_lr_fn,
        ),
        adamw,
    )


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
