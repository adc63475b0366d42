"""SGD and the learning-rate schedule (warm-up, then step or cosine)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import nn

from nclt.methods.schedules import Progress


def build_optimizer(
    modules: list[nn.Module],
    lr: float,
    momentum: float,
    weight_decay: float,
    nesterov: bool = False,
    separate: dict[str, float] | None = None,
) -> torch.optim.SGD:
    """SGD with momentum and weight decay on every trainable parameter (as the papers' code).

    ``modules`` are the network and the objective: loss modules with parameters (learnable
    class centres of INC's code and of center loss) train with the network.
    ``separate``: SGD settings for the parameters of ``modules[1:]`` (the objective's) when they
    differ from the network's, e.g. ``{"fixed_lr": 50.0, "momentum": 0.0, "weight_decay": 0.0}``
    for INC's official centre optimizer; a ``fixed_lr`` group ignores the lr schedule.
    """
    params = [p for p in modules[0].parameters() if p.requires_grad]
    rest = [p for m in modules[1:] for p in m.parameters() if p.requires_grad]
    groups: list[dict[str, Any]] = [{"params": params}]
    if separate is None:
        params += rest
    elif rest:
        group = {"params": rest, **separate}
        if "fixed_lr" in group:
            group["lr"] = group["fixed_lr"]
        groups.append(group)
    groups = [g for g in groups if g["params"]]
    return torch.optim.SGD(
        groups, lr=lr, momentum=momentum, weight_decay=weight_decay, nesterov=nesterov
    )


@dataclass(frozen=True)
class LRSchedule:
    """Learning rate as a function of the progress.

    Warm-up is linear per epoch as in the LDAM-DRW code: epoch e < warmup_epochs trains at
    ``lr * (e + 1) / warmup_epochs``. ``step`` multiplies by ``gamma`` at each milestone epoch
    (LDAM-DRW: gamma 0.01 at 160 and 180 gives 0.1 -> 1e-3 -> 1e-5); ``cosine`` decays per
    iteration from the end of warm-up to ``min_lr``; ``constant`` keeps ``lr``.
    """

    lr: float
    schedule: Literal["step", "cosine", "constant"] = "step"
    milestones: tuple[int, ...] = (160, 180)
    gamma: float = 0.01
    warmup_epochs: int = 5
    min_lr: float = 0.0

    def __call__(self, p: Progress) -> float:
        if p.epoch < self.warmup_epochs:
            return self.lr * (p.epoch + 1) / self.warmup_epochs
        if self.schedule == "step":
            n = sum(1 for m in self.milestones if p.epoch >= m)
            return self.lr * self.gamma**n
        if self.schedule == "cosine":
            start = self.warmup_epochs * p.steps_per_epoch
            span = max(1, p.total_iterations - start)
            t = min(1.0, (p.iteration - start) / span)
            return self.min_lr + 0.5 * (self.lr - self.min_lr) * (1 + math.cos(math.pi * t))
        return self.lr


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        fixed = group.get("fixed_lr")
        group["lr"] = fixed if fixed is not None else lr * group.get("lr_scale", 1.0)
