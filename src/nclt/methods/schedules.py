"""Coefficients that change during training: callables of the training progress.

A method never writes ``if epoch >= 160`` in the loop; it hands the engine a schedule, and the
engine evaluates every schedule once per step with the current :class:`Progress`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, Protocol

from nclt.errors import ConfigError


@dataclass(frozen=True)
class Progress:
    """Where training is: ``epoch`` is 0-based, ``step`` the 0-based iteration in the epoch."""

    epoch: int
    step: int
    steps_per_epoch: int
    epochs: int

    @property
    def iteration(self) -> int:
        return self.epoch * self.steps_per_epoch + self.step

    @property
    def total_iterations(self) -> int:
        return self.epochs * self.steps_per_epoch


class Schedule(Protocol):
    def __call__(self, p: Progress) -> Any: ...


@dataclass(frozen=True)
class Constant:
    value: Any

    def __call__(self, p: Progress) -> Any:
        return self.value


@dataclass(frozen=True)
class SwitchAt:
    """``before`` until epoch ``epoch`` (0-based), then ``after`` (DRW's deferred weights)."""

    epoch: int
    before: Any
    after: Any

    def __call__(self, p: Progress) -> Any:
        return self.after if p.epoch >= self.epoch else self.before


@dataclass(frozen=True)
class StepWeight:
    """A loss weight that is 0 before epoch ``start`` (0-based) and ``value`` from then on.

    INC starts its regularizers at epoch 100 on CIFAR-100 (INC Table 1).
    """

    value: float
    start: int = 0

    def __call__(self, p: Progress) -> float:
        return self.value if p.epoch >= self.start else 0.0


@dataclass(frozen=True)
class GBBNEta:
    """AllNC's progressive decoupling: eta = 1 - (T / Tmax) ** gamma (AllNC Eq. 13).

    AllNC calls T "the current iteration count" but Tmax "total epochs" (ERRATA). Both are
    taken in one unit: ``unit="iteration"`` (default) uses T = iterations done so far and
    Tmax = total iterations; ``unit="epoch"`` uses the 0-based epoch over the epoch count.
    """

    gamma: float
    unit: Literal["iteration", "epoch"] = "iteration"

    def __post_init__(self) -> None:
        if self.gamma <= 0:
            raise ConfigError(f"GBBN gamma must be > 0, got {self.gamma}")

    def __call__(self, p: Progress) -> float:
        if self.unit == "epoch":
            t, tmax = p.epoch, p.epochs
        else:
            t, tmax = p.iteration, p.total_iterations
        return 1.0 - (t / tmax) ** self.gamma


@dataclass(frozen=True)
class OneMinus:
    """1 - inner(p): the weight of the re-balancing branch when ``inner`` is GBBN's eta."""

    inner: Schedule

    def __call__(self, p: Progress) -> float:
        return 1.0 - float(self.inner(p))


def evaluate(value: Any, p: Progress) -> Any:
    """A plain value stays itself; a schedule is evaluated at ``p``."""
    return value(p) if callable(value) else value
