"""Named methods as declarative compositions of loss terms, schedules and samplers.

A method name is a ``+``-joined list of components: one *base* (``ce``, ``ldam-drw``, ...)
that supplies the classification loss, then any number of *add-ons* (``inc``, ``disa``, ...)
that add terms. ``ldam-drw+inc+disa`` therefore needs no code of its own. Each component is a
builder ``(ctx, **args) -> MethodParts`` whose keyword arguments (with their defaults) are the
component's hyper-parameters; a config sets them under ``method.args.<component>``.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import Tensor

from nclt.errors import ConfigError, closest
from nclt.losses import LOSSES
from nclt.methods.objective import Objective, Term
from nclt.methods.schedules import Constant, Schedule, SwitchAt
from nclt.registry import Registry


@dataclass
class BuildContext:
    """Runtime facts a component may use (never typed in a config)."""

    class_counts: Tensor
    num_classes: int
    feature_dim: int
    epochs: int


@dataclass
class MethodParts:
    """What one component contributes."""

    terms: list[Term] = field(default_factory=list)
    schedules: dict[str, Schedule] = field(default_factory=dict)  # context key -> schedule
    sampler: str | None = None  # overrides data.sampler
    head: str | None = None  # overrides model.head
    head_args: dict[str, Any] = field(default_factory=dict)


@dataclass
class Component:
    name: str
    kind: Literal["base", "addon"]
    paper: str
    summary: str
    build: Callable[..., MethodParts]

    def defaults(self) -> dict[str, Any]:
        sig = inspect.signature(self.build)
        return {
            k: p.default for k, p in list(sig.parameters.items())[1:]
            if p.default is not inspect.Parameter.empty
        }


METHODS: Registry = Registry("method")


def component(name: str, kind: Literal["base", "addon"], paper: str, summary: str):
    """Register ``build(ctx, **hyperparameters) -> MethodParts`` as a method component."""

    def deco(fn: Callable[..., MethodParts]) -> Callable[..., MethodParts]:
        METHODS.register(name)(Component(name, kind, paper, summary, fn))
        return fn

    return deco


@dataclass
class Method:
    """A built method: the objective and what the engine needs around it."""

    name: str
    objective: Objective
    schedules: dict[str, Schedule]
    sampler: str | None
    head: str | None
    head_args: dict[str, Any]
    args: dict[str, dict[str, Any]]  # resolved hyper-parameters per component


def split_name(name: str) -> list[str]:
    parts = [p.strip() for p in name.split("+")]
    if not all(parts):
        raise ConfigError(f"method {name!r}: empty component in a '+'-joined name")
    return parts


def build_method(name: str, args: dict[str, dict[str, Any]], ctx: BuildContext) -> Method:
    """Resolve ``name`` (``base[+addon...]``) and ``args`` into a :class:`Method`."""
    names = split_name(name)
    comps = [METHODS.get(n) for n in names]
    if comps[0].kind != "base":
        bases = [n for n in METHODS if METHODS.get(n).kind == "base"]
        raise ConfigError(
            f"method {name!r} must start with a base method (one of {', '.join(bases)}); "
            f"{names[0]!r} is an add-on"
        )
    for c in comps[1:]:
        if c.kind != "addon":
            raise ConfigError(f"method {name!r}: {c.name!r} is a base method; use only one base")
    unknown = set(args) - set(names)
    if unknown:
        k = sorted(unknown)[0]
        raise ConfigError(
            f"method.args.{k}: {k!r} is not a component of method {name!r}.{closest(k, names)}"
        )
    parts: list[MethodParts] = []
    resolved: dict[str, dict[str, Any]] = {}
    for c in comps:
        given = dict(args.get(c.name, {}))
        allowed = c.defaults()
        for k in given:
            if k not in allowed:
                raise ConfigError(
                    f"method.args.{c.name}.{k}: unknown hyper-parameter.{closest(k, allowed)} "
                    f"Allowed: {', '.join(allowed) or 'none'}"
                )
        resolved[c.name] = {**allowed, **given}
        parts.append(c.build(ctx, **given))
    return _merge(name, parts, resolved)


def _merge(name: str, parts: list[MethodParts], resolved: dict[str, dict[str, Any]]) -> Method:
    terms: list[Term] = []
    schedules: dict[str, Schedule] = {}
    sampler = head = None
    head_args: dict[str, Any] = {}
    for p in parts:
        terms.extend(p.terms)
        for k, s in p.schedules.items():
            if k in schedules and schedules[k] != s:
                raise ConfigError(f"method {name!r}: two components set the schedule {k!r}")
            schedules[k] = s
        for attr, value in (("sampler", p.sampler), ("head", p.head)):
            current = sampler if attr == "sampler" else head
            if value is not None and current is not None and value != current:
                raise ConfigError(f"method {name!r}: components disagree on the {attr}")
        sampler = p.sampler or sampler
        head = p.head or head
        head_args.update(p.head_args)
    return Method(name, Objective(terms), schedules, sampler, head, head_args, resolved)


def describe_methods() -> list[tuple[str, str, str, str]]:
    """(name, kind, paper, summary) for every registered component."""
    return [
        (n, METHODS.get(n).kind, METHODS.get(n).paper, METHODS.get(n).summary) for n in METHODS
    ]


# ----------------------------------------------------------------------------- helpers


def drw_weights(class_counts: Tensor, beta: float) -> Tensor:
    """LDAM-DRW's deferred re-weighting: (1 - beta) / (1 - beta^n_c), normalised to sum to K."""
    counts = class_counts.double()
    w = (1.0 - beta) / (1.0 - torch.pow(torch.tensor(beta, dtype=torch.float64), counts))
    return (w / w.sum() * len(counts)).float()


def inverse_weights(class_counts: Tensor) -> Tensor:
    """1 / n_c normalised to sum to K (CE-RW)."""
    w = 1.0 / class_counts.double().clamp(min=1)
    return (w / w.sum() * len(class_counts)).float()


def _drw_switch(ctx: BuildContext, epoch: int | None, beta: float) -> dict[str, Schedule]:
    at = round(0.8 * ctx.epochs) if epoch is None else epoch
    return {"class_weight": SwitchAt(at, None, drw_weights(ctx.class_counts, beta))}


def _logit_term(name: str, loss: str, ctx: BuildContext, **kw: Any) -> Term:
    module = LOSSES.build(loss, class_counts=ctx.class_counts, **kw)
    return Term(name, module, ("logits", "labels"), kwargs={"weight": "class_weight"})


# ----------------------------------------------------------------------------- baselines

_CE = "standard practice"
_LDAM = "Cao et al., NeurIPS 2019 (LDAM-DRW)"


@component("ce", "base", _CE, "cross-entropy")
def _ce(ctx: BuildContext) -> MethodParts:
    return MethodParts([_logit_term("ce", "ce", ctx)])


@component("ce-rs", "base", _CE, "cross-entropy with class-balanced re-sampling")
def _ce_rs(ctx: BuildContext) -> MethodParts:
    return MethodParts([_logit_term("ce", "ce", ctx)], sampler="class_balanced")


@component("ce-rw", "base", _CE, "cross-entropy re-weighted by inverse class frequency")
def _ce_rw(ctx: BuildContext) -> MethodParts:
    return MethodParts(
        [_logit_term("ce", "ce", ctx)],
        schedules={"class_weight": Constant(inverse_weights(ctx.class_counts))},
    )


@component("ce-drw", "base", _LDAM, "cross-entropy, deferred re-weighting (effective number)")
def _ce_drw(ctx: BuildContext, drw_epoch: int | None = None, beta: float = 0.9999) -> MethodParts:
    return MethodParts([_logit_term("ce", "ce", ctx)], schedules=_drw_switch(ctx, drw_epoch, beta))
