"""A training objective as a weighted list of loss terms.

The engine builds a context dict every step (the network's outputs such as ``logits``,
``features``, ``head_weight``; the batch's ``labels``; schedule values such as
``class_weight``) and calls :class:`Objective`; each :class:`Term` reads the keys it names.
Under MixUp/CutMix the context also holds ``labels_b`` and ``lam``, and a term that reads
``labels`` is evaluated as ``lam * L(..., labels) + (1 - lam) * L(..., labels_b)``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from torch import Tensor, nn

from nclt.errors import ConfigError
from nclt.methods.schedules import Progress, evaluate


@dataclass
class Term:
    """One weighted loss term.

    Args:
        name: the name logged for this term (``ce``, ``inc_within``, ``disa`` ...).
        loss: the loss module.
        reads: context keys passed positionally to ``loss``.
        weight: a float or a schedule (callable of :class:`Progress`); a term whose weight is 0
            at a step is not evaluated at that step.
        kwargs: ``{forward keyword: context key}``; a context value of None is not passed.
    """

    name: str
    loss: nn.Module
    reads: tuple[str, ...] = ("logits", "labels")
    weight: Any = 1.0
    kwargs: dict[str, str] = field(default_factory=dict)


@dataclass
class LossOutput:
    total: Tensor
    parts: dict[str, Tensor]  # unweighted value of each evaluated term (detached)
    weights: dict[str, float]


class Objective(nn.Module):
    """Sum of weighted terms; ``forward(ctx, progress) -> LossOutput``."""

    def __init__(self, terms: list[Term]) -> None:
        super().__init__()
        names = [t.name for t in terms]
        if len(set(names)) != len(names):
            raise ConfigError(f"duplicate loss term names: {names}")
        if not terms:
            raise ConfigError("an objective needs at least one loss term")
        self.terms = terms
        self.losses = nn.ModuleDict({t.name: t.loss for t in terms})

    def check_reads(self, available: set[str]) -> None:
        """Fail before training when a term reads a key the network/batch never provides."""
        for t in self.terms:
            missing = [k for k in (*t.reads, *t.kwargs.values()) if k not in available]
            if missing:
                raise ConfigError(
                    f"loss term {t.name!r} reads {missing}, which this method does not provide "
                    f"(available: {sorted(available)})"
                )

    def forward(self, ctx: Mapping[str, Any], progress: Progress) -> LossOutput:
        total: Tensor | None = None
        parts: dict[str, Tensor] = {}
        weights: dict[str, float] = {}
        for t in self.terms:
            w = float(evaluate(t.weight, progress))
            weights[t.name] = w
            if w == 0.0:
                continue
            value = self._term_value(t, ctx)
            parts[t.name] = value.detach()
            total = w * value if total is None else total + w * value
        if total is None:
            raise ConfigError("every loss term has weight 0 at this step")
        return LossOutput(total, parts, weights)

    @staticmethod
    def _term_value(t: Term, ctx: Mapping[str, Any]) -> Tensor:
        kwargs = {k: ctx[key] for k, key in t.kwargs.items() if ctx.get(key) is not None}
        args = [ctx[k] for k in t.reads]
        if "labels" in t.reads and ctx.get("labels_b") is not None:
            lam = float(ctx["lam"])
            i = t.reads.index("labels")
            args_b = list(args)
            args_b[i] = ctx["labels_b"]
            return lam * t.loss(*args, **kwargs) + (1.0 - lam) * t.loss(*args_b, **kwargs)
        return t.loss(*args, **kwargs)
