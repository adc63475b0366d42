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

from torch import Tensor

from nclt.errors import ConfigError, closest
from nclt.losses import LOSSES
from nclt.losses.functional import class_weights
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


def _drw_switch(ctx: BuildContext, epoch: int | None, beta: float) -> dict[str, Schedule]:
    at = round(0.8 * ctx.epochs) if epoch is None else epoch
    weights = class_weights(ctx.class_counts, "effective", beta=beta).float()
    return {"class_weight": SwitchAt(at, None, weights)}


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
        schedules={"class_weight": Constant(class_weights(ctx.class_counts, "inverse").float())},
    )


@component("ce-drw", "base", _LDAM, "cross-entropy, deferred re-weighting (effective number)")
def _ce_drw(ctx: BuildContext, drw_epoch: int | None = None, beta: float = 0.9999) -> MethodParts:
    return MethodParts([_logit_term("ce", "ce", ctx)], schedules=_drw_switch(ctx, drw_epoch, beta))


@component("focal", "base", "Lin et al., ICCV 2017", "softmax focal loss")
def _focal(ctx: BuildContext, gamma: float = 2.0) -> MethodParts:
    return MethodParts([_logit_term("focal", "focal", ctx, gamma=gamma)])


_CB = "Cui et al., CVPR 2019"


@component("cb-softmax", "base", _CB, "class-balanced softmax CE (effective number)")
def _cb_softmax(ctx: BuildContext, beta: float = 0.999) -> MethodParts:
    return MethodParts([_logit_term("cb", "cb", ctx, form="softmax", beta=beta)])


@component("cb-sigmoid", "base", _CB, "class-balanced sigmoid (one-vs-all) loss")
def _cb_sigmoid(ctx: BuildContext, beta: float = 0.999) -> MethodParts:
    return MethodParts([_logit_term("cb", "cb", ctx, form="sigmoid", beta=beta)])


@component("cb-focal", "base", _CB, "class-balanced sigmoid focal loss")
def _cb_focal(ctx: BuildContext, beta: float = 0.999, gamma: float = 2.0) -> MethodParts:
    return MethodParts([_logit_term("cb", "cb", ctx, form="focal", beta=beta, gamma=gamma)])


@component("ldam", "base", _LDAM, "LDAM margins (cosine classifier, scale 30)")
def _ldam(ctx: BuildContext, max_margin: float = 0.5, scale: float = 30.0) -> MethodParts:
    term = _logit_term("ldam", "ldam", ctx, max_margin=max_margin, scale=scale)
    return MethodParts([term], head="cosine")


@component("ldam-drw", "base", _LDAM, "LDAM with deferred re-weighting")
def _ldam_drw(
    ctx: BuildContext, max_margin: float = 0.5, scale: float = 30.0,
    drw_epoch: int | None = None, beta: float = 0.9999,
) -> MethodParts:
    term = _logit_term("ldam", "ldam", ctx, max_margin=max_margin, scale=scale)
    return MethodParts([term], schedules=_drw_switch(ctx, drw_epoch, beta), head="cosine")


@component("balanced-softmax", "base", "Ren et al., NeurIPS 2020 (BALMS)",
           "softmax with the log prior added to the logits")
def _balanced_softmax(ctx: BuildContext, tau: float = 1.0) -> MethodParts:
    return MethodParts([_logit_term("balanced_softmax", "balanced_softmax", ctx, tau=tau)])


@component("logit-adjust", "base", "Menon et al., ICLR 2021", "logit-adjusted loss, tau * log prior")
def _logit_adjust(ctx: BuildContext, tau: float = 1.0) -> MethodParts:
    return MethodParts([_logit_term("logit_adjust", "logit_adjust", ctx, tau=tau)])


_ARB = "Xie et al., ARB-Loss (attraction-repulsion-balanced loss)"


@component("arb", "base", _ARB, "ARB-Loss with the class counts of the current batch")
def _arb(ctx: BuildContext, clamp: float | None = None) -> MethodParts:
    return MethodParts([_logit_term("arb", "arb", ctx, counts="batch", clamp=clamp)])


@component("arb-global", "base", _ARB, "ARB-Loss with the training-set class counts")
def _arb_global(ctx: BuildContext, clamp: float | None = None) -> MethodParts:
    return MethodParts([_logit_term("arb", "arb", ctx, counts="global", clamp=clamp)])
