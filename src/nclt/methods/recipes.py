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

from torch import Tensor, nn

from nclt.config import check_kwargs
from nclt.errors import ConfigError, closest
from nclt.losses import LOSSES
from nclt.losses.functional import class_weights
from nclt.methods.objective import Objective, Term
from nclt.methods.schedules import Constant, Schedule, StepWeight, SwitchAt
from nclt.registry import Registry


@dataclass
class BuildContext:
    """Runtime facts a component may use (never typed in a config)."""

    class_counts: Tensor
    num_classes: int
    feature_dim: int
    epochs: int
    head: str | None = None  # the base method's head, set before add-ons are built
    seed: int = 0  # the run's seed: default of the random ETF orientations


@dataclass
class MethodParts:
    """What one component contributes."""

    terms: list[Term] = field(default_factory=list)
    schedules: dict[str, Schedule] = field(default_factory=dict)  # context key -> schedule
    sampler: str | None = None  # overrides data.sampler
    head: str | None = None  # overrides model.head
    head_args: dict[str, Any] = field(default_factory=dict)
    views: list[str] | None = None  # view names (data/views.py); the first is classified
    extra_heads: dict[str, nn.Module] = field(default_factory=dict)  # name -> module
    # called with the network after every optimizer step (e.g. a max-norm projection)
    post_step: list[Callable[[nn.Module], None]] = field(default_factory=list)
    # second stages: parameter-name prefixes that train (all others frozen; None = all train)
    trainable: tuple[str, ...] | None = None
    reinit_head: bool = False  # do not take the head's weights from init_from
    # second stages: a frozen backbone's BatchNorm statistics keep updating (train mode)
    update_frozen_bn: bool = False
    # SGD settings of the objective's own parameters (learnable centres) when they differ from
    # the network's: {"fixed_lr", "momentum", "weight_decay"}; None = train with the network
    objective_optim: dict[str, float] | None = None


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
            k: p.default
            for k, p in list(sig.parameters.items())[1:]
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
    views: list[str] | None = None
    extra_heads: dict[str, nn.Module] = field(default_factory=dict)
    post_step: list[Callable[[nn.Module], None]] = field(default_factory=list)
    trainable: tuple[str, ...] | None = None
    reinit_head: bool = False
    update_frozen_bn: bool = False
    objective_optim: dict[str, float] | None = None


def split_name(name: str) -> list[str]:
    # "++" ends a component's own name (allnc++); a single "+" joins components
    parts = [p.strip().replace("\0", "++") for p in name.replace("++", "\0").split("+")]
    if not all(parts):
        raise ConfigError(f"method {name!r}: empty component in a '+'-joined name")
    return parts


def build_method(name: str, args: dict[str, dict[str, Any]], ctx: BuildContext) -> Method:
    """Resolve ``name`` (``base[+addon...]``) and ``args`` into a :class:`Method`.

    ``args`` maps a component name (without the ``+`` of add-ons) to its hyper-parameters.
    """
    names = split_name(name)
    if f"+{names[0]}" in METHODS and names[0] not in METHODS:
        bases = [n for n in METHODS if not n.startswith("+")]
        raise ConfigError(
            f"method {name!r} must start with a base method (one of {', '.join(bases)}); "
            f"{names[0]!r} is an add-on"
        )
    comps = [METHODS.get(names[0])]
    for n in names[1:]:
        if n in METHODS and f"+{n}" not in METHODS:
            raise ConfigError(f"method {name!r}: {n!r} is a base method; use only one base")
        if f"+{n}" not in METHODS:
            addons = [a[1:] for a in METHODS if a.startswith("+")]
            raise ConfigError(
                f"method {name!r}: unknown add-on {n!r}.{closest(n, addons)} "
                f"Add-ons: {', '.join(addons)}"
            )
        comps.append(METHODS.get(f"+{n}"))
    if len(set(names)) != len(names):
        raise ConfigError(f"method {name!r}: a component appears twice")
    unknown = set(args) - set(names)
    if unknown:
        k = sorted(unknown)[0]
        raise ConfigError(
            f"method.args.{k}: {k!r} is not a component of method {name!r}.{closest(k, names)}"
        )
    parts: list[MethodParts] = []
    resolved: dict[str, dict[str, Any]] = {}
    for short, c in zip(names, comps, strict=True):
        given = dict(args.get(short, {}))
        allowed = c.defaults()
        # every component accepts ``scope`` (docs/DISTRIBUTED.md): its batch statistics over
        # the global batch (default) or per process, as some papers' code did
        scope = given.pop("scope", None) if "scope" not in allowed else None
        for k in given:
            if k not in allowed:
                raise ConfigError(
                    f"method.args.{short}.{k}: unknown hyper-parameter.{closest(k, allowed)} "
                    f"Allowed: {', '.join(allowed) or 'none'}"
                )
        given = check_kwargs(c.build, given, f"method.args.{short}")  # types, as config keys
        resolved[short] = {**allowed, **given}
        parts.append(c.build(ctx, **given))
        if scope is not None:
            resolved[short]["scope"] = _set_scope(parts[-1], scope, f"method.args.{short}.scope")
        if c.kind == "base":
            ctx.head = parts[0].head
    return _merge(name, parts, resolved)


def _set_scope(part: MethodParts, scope: Any, key: str) -> str:
    """Set ``scope`` on every loss of ``part``'s terms that takes batch statistics."""
    if scope not in ("global", "local"):
        raise ConfigError(f"{key}: {scope!r} is not allowed. Allowed: 'global' | 'local'")
    found = 0
    for t in part.terms:
        for m in t.loss.modules():
            if getattr(m, "scope", None) in ("global", "local"):
                m.scope = scope
                found += 1
    if not found:
        raise ConfigError(
            f"{key}: this component takes no statistic over the batch, so it has "
            "no scope (its losses are per-sample means)"
        )
    return scope


def _merge(name: str, parts: list[MethodParts], resolved: dict[str, dict[str, Any]]) -> Method:
    terms: list[Term] = []
    schedules: dict[str, Schedule] = {}
    sampler = head = None
    head_args: dict[str, Any] = {}
    views: list[str] | None = None
    extra_heads: dict[str, nn.Module] = {}
    post_step: list[Callable[[nn.Module], None]] = []
    for p in parts:
        post_step.extend(p.post_step)
        if p.views is not None:
            if views is not None and views != p.views:
                raise ConfigError(f"method {name!r}: components disagree on the views")
            views = p.views
        for k, module in p.extra_heads.items():
            if k in extra_heads:
                raise ConfigError(f"method {name!r}: two components add the head {k!r}")
            extra_heads[k] = module
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
    trainable = next((p.trainable for p in parts if p.trainable is not None), None)
    reinit = any(p.reinit_head for p in parts)
    update_bn = any(p.update_frozen_bn for p in parts)
    objective_optim = next((p.objective_optim for p in parts if p.objective_optim), None)
    return Method(
        name,
        Objective(terms),
        schedules,
        sampler,
        head,
        head_args,
        resolved,
        views,
        extra_heads,
        post_step,
        trainable,
        reinit,
        update_bn,
        objective_optim,
    )


def describe_methods() -> list[tuple[str, str, str, str]]:
    """(name, kind, paper, summary) for every registered component."""
    return [(n, METHODS.get(n).kind, METHODS.get(n).paper, METHODS.get(n).summary) for n in METHODS]


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
def _ce_drw(
    ctx: BuildContext,
    drw_epoch: int | None = None,
    beta: float = 0.9999,
    weighted_mean: bool = True,
) -> MethodParts:
    """``weighted_mean``: divide the re-weighted sum by the sum of the batch's weights, as
    ``F.cross_entropy`` and the LDAM-DRW code do (True), or by the batch size, as DisA Eq. 17
    prints it (False)."""
    term = _logit_term("ce", "ce", ctx, weighted_mean=weighted_mean)
    return MethodParts([term], schedules=_drw_switch(ctx, drw_epoch, beta))


@component("focal", "base", "Lin et al., ICCV 2017", "softmax focal loss")
def _focal(ctx: BuildContext, gamma: float = 2.0) -> MethodParts:
    return MethodParts([_logit_term("focal", "focal", ctx, gamma=gamma)])


_CB = "Cui et al., CVPR 2019"


@component("cb-softmax", "base", _CB, "class-balanced softmax CE (effective number)")
def _cb_softmax(ctx: BuildContext, beta: float = 0.999, weighted_mean: bool = False) -> MethodParts:
    """``weighted_mean``: divide the class-weighted sum by the batch size, as Cui et al.'s CB loss
    and DisA Eq. 16-17 write it (False, default), or by the sum of the batch's weights, as
    ``F.cross_entropy`` does (True; what nclt used before this argument existed). The weights
    sum to C either way (Cui et al.'s normalization), so on a long-tailed batch the 1/N form
    makes the term several times smaller (0.27x at CIFAR-10-LT IF 100, beta 0.999), which
    shifts its balance with an add-on such as DisA."""
    term = _logit_term("cb", "cb", ctx, form="softmax", beta=beta, weighted_mean=weighted_mean)
    return MethodParts([term])


@component("cb-sigmoid", "base", _CB, "class-balanced sigmoid (one-vs-all) loss")
def _cb_sigmoid(ctx: BuildContext, beta: float = 0.999, weighted_mean: bool = False) -> MethodParts:
    """``weighted_mean``: as ``cb-softmax``."""
    term = _logit_term("cb", "cb", ctx, form="sigmoid", beta=beta, weighted_mean=weighted_mean)
    return MethodParts([term])


@component("cb-focal", "base", _CB, "class-balanced sigmoid focal loss")
def _cb_focal(
    ctx: BuildContext, beta: float = 0.999, gamma: float = 2.0, weighted_mean: bool = False
) -> MethodParts:
    """``weighted_mean``: as ``cb-softmax``."""
    term = _logit_term(
        "cb", "cb", ctx, form="focal", beta=beta, gamma=gamma, weighted_mean=weighted_mean
    )
    return MethodParts([term])


@component("ldam", "base", _LDAM, "LDAM margins (cosine classifier, scale 30)")
def _ldam(ctx: BuildContext, max_margin: float = 0.5, scale: float = 30.0) -> MethodParts:
    term = _logit_term("ldam", "ldam", ctx, max_margin=max_margin, scale=scale)
    return MethodParts([term], head="cosine")


@component("ldam-drw", "base", _LDAM, "LDAM with deferred re-weighting")
def _ldam_drw(
    ctx: BuildContext,
    max_margin: float = 0.5,
    scale: float = 30.0,
    drw_epoch: int | None = None,
    beta: float = 0.9999,
) -> MethodParts:
    term = _logit_term("ldam", "ldam", ctx, max_margin=max_margin, scale=scale)
    return MethodParts([term], schedules=_drw_switch(ctx, drw_epoch, beta), head="cosine")


@component(
    "balanced-softmax",
    "base",
    "Ren et al., NeurIPS 2020 (BALMS)",
    "softmax with the log prior added to the logits",
)
def _balanced_softmax(ctx: BuildContext, tau: float = 1.0) -> MethodParts:
    return MethodParts([_logit_term("balanced_softmax", "balanced_softmax", ctx, tau=tau)])


@component(
    "logit-adjust", "base", "Menon et al., ICLR 2021", "logit-adjusted loss, tau * log prior"
)
def _logit_adjust(ctx: BuildContext, tau: float = 1.0) -> MethodParts:
    return MethodParts([_logit_term("logit_adjust", "logit_adjust", ctx, tau=tau)])


_ARB = "Xie et al., 2023 (ARB-Loss)"


@component("arb", "base", _ARB, "ARB-Loss with the class counts of the current batch")
def _arb(ctx: BuildContext, clamp: float | None = None) -> MethodParts:
    return MethodParts([_logit_term("arb", "arb", ctx, counts="batch", clamp=clamp)])


@component("arb-global", "base", _ARB, "ARB-Loss with the training-set class counts")
def _arb_global(ctx: BuildContext, clamp: float | None = None) -> MethodParts:
    return MethodParts([_logit_term("arb", "arb", ctx, counts="global", clamp=clamp)])


# ----------------------------------------------------------------------------- fixed ETF

_ETF = "Yang et al., NeurIPS 2022 (fixed ETF classifier), as DisA uses it"


@component("etf-ce", "base", _ETF, "fixed simplex-ETF classifier (BatchNorm before it) with CE")
def _etf_ce(ctx: BuildContext, seed: int | None = None) -> MethodParts:
    """seed: of the ETF's random rotation; None (default) takes the run's seed."""
    head_args = {"normalize": False, "seed": ctx.seed if seed is None else seed}
    return MethodParts([_logit_term("ce", "ce", ctx)], head="etf", head_args=head_args)


@component("etf-dr", "base", _ETF, "fixed simplex-ETF classifier with the dot-regression loss")
def _etf_dr(ctx: BuildContext, lengths: str = "batch", seed: int | None = None) -> MethodParts:
    """seed: of the ETF's random rotation; None (default) takes the run's seed."""
    loss = LOSSES.build("dr", lengths=lengths, class_counts=ctx.class_counts)
    term = Term("dr", loss, ("head_features", "labels", "head_weight"))
    head_args = {"normalize": True, "seed": ctx.seed if seed is None else seed}
    return MethodParts([term], head="etf", head_args=head_args)


# ----------------------------------------------------------------------------- INC

_INC = "Liu et al., 2023 (INC)"


def _inc_terms(
    ctx: BuildContext,
    lambda_w: float,
    lambda_b: float,
    start_epoch: int,
    centres: str,
    counts: str,
    class_reduction: str,
    within: str = "inc_within",
) -> list[Term]:
    """L_W and L_B as two logged terms; one combined term when the centres are learnable
    (the official code) or L_W is replaced by center loss (INC Table 7, ``within: center``)."""
    if centres == "learnable" or within == "center":
        loss = LOSSES.build(
            "inc",
            num_classes=ctx.num_classes,
            feature_dim=ctx.feature_dim,
            lambda_w=lambda_w,
            lambda_b=lambda_b,
            within=within,
            centres="learnable",
            counts=counts,
            class_counts=ctx.class_counts,
            class_reduction=class_reduction,
        )
        return [Term("inc", loss, ("features", "labels"), StepWeight(1.0, start_epoch))]
    within = LOSSES.build(
        "inc_within",
        num_classes=ctx.num_classes,
        counts=counts,
        class_counts=ctx.class_counts,
        class_reduction=class_reduction,
    )
    between = LOSSES.build("inc_between", num_classes=ctx.num_classes)
    return [
        Term("inc_within", within, ("features", "labels"), StepWeight(lambda_w, start_epoch)),
        Term("inc_between", between, ("features", "labels"), StepWeight(lambda_b, start_epoch)),
    ]


def _inc(
    ctx: BuildContext,
    lambda_w: float = 0.01,
    lambda_b: float = 0.1,
    start_epoch: int = 0,
    centres: str = "batch",
    counts: str = "batch",
    class_reduction: str = "sum",
    within: str = "inc_within",
    centre_lr: float | None = None,
) -> MethodParts:
    """``centre_lr``: INC's official optimizer for learnable centres (``centres: learnable``):
    their gradient is divided by lambda_w and they take plain SGD steps at this constant rate
    (0.5 in the code: ``--alpha``), without momentum, weight decay or the lr schedule. None:
    they train with the network's optimizer."""
    terms = _inc_terms(
        ctx, lambda_w, lambda_b, start_epoch, centres, counts, class_reduction, within
    )
    if centre_lr is None:
        return MethodParts(terms)
    if centres != "learnable":
        raise ConfigError("inc: centre_lr applies to learnable centres; set centres: learnable")
    if centre_lr <= 0 or lambda_w <= 0:
        raise ConfigError(f"inc: centre_lr and lambda_w must be > 0, got {centre_lr}, {lambda_w}")
    optim = {"fixed_lr": centre_lr / lambda_w, "momentum": 0.0, "weight_decay": 0.0}
    return MethodParts(terms, objective_optim=optim)


component("+inc", "addon", _INC, "INC regularizers L_W (Eq. 13) and L_B (Eq. 15)")(_inc)


@component("inc", "base", _INC, "CE + INC regularizers (INC Table 1: lambda_1, lambda_2, start)")
def _inc_base(
    ctx: BuildContext,
    lambda_w: float = 0.01,
    lambda_b: float = 0.1,
    start_epoch: int = 0,
    centres: str = "batch",
    counts: str = "batch",
    class_reduction: str = "sum",
    within: str = "inc_within",
    centre_lr: float | None = None,
) -> MethodParts:
    parts = _inc(
        ctx, lambda_w, lambda_b, start_epoch, centres, counts, class_reduction, within, centre_lr
    )
    parts.terms.insert(0, _logit_term("ce", "ce", ctx))
    return parts


@component("inc-drw", "base", _INC, "CE-DRW + INC regularizers")
def _inc_drw(
    ctx: BuildContext,
    lambda_w: float = 0.01,
    lambda_b: float = 0.1,
    start_epoch: int = 0,
    centres: str = "batch",
    counts: str = "batch",
    class_reduction: str = "sum",
    drw_epoch: int | None = None,
    beta: float = 0.9999,
    within: str = "inc_within",
    centre_lr: float | None = None,
) -> MethodParts:
    parts = _inc_base(
        ctx, lambda_w, lambda_b, start_epoch, centres, counts, class_reduction, within, centre_lr
    )
    parts.schedules.update(_drw_switch(ctx, drw_epoch, beta))
    return parts


# ----------------------------------------------------------------------------- DisA


@component(
    "+disa",
    "addon",
    "Gao et al., ICML 2024 (DisA)",
    "optimal-transport alignment of batch features with a simplex ETF (Eq. 8-10)",
)
def _disa(
    ctx: BuildContext,
    weight: float = 0.1,
    epsilon: float = 1.0,
    iterations: int = 100,
    gradient: str = "envelope",
    objective: str = "cost",
    seed: int | None = None,
    standardize: bool = False,
) -> MethodParts:
    """With a learnable classifier DisA aligns the backbone features with its own fixed ETF
    (its random rotation drawn from ``seed``; None, the default, takes the run's seed); with a
    fixed-ETF head the ETF is both classifier and target (the head's features and weight are
    used). ``standardize``: batch-standardize the features before the cost, as the official
    script's parameter-free BatchNorm does (``DisALoss``)."""
    common = {
        "epsilon": epsilon,
        "iterations": iterations,
        "gradient": gradient,
        "objective": objective,
        "standardize": standardize,
    }
    if ctx.head == "etf":
        loss = LOSSES.build("disa", **common)
        term = Term("disa", loss, ("head_features",), weight, {"head_weight": "head_weight"})
    else:
        loss = LOSSES.build(
            "disa",
            num_classes=ctx.num_classes,
            feature_dim=ctx.feature_dim,
            seed=ctx.seed if seed is None else seed,
            **common,
        )
        term = Term("disa", loss, ("features",), weight)
    return MethodParts([term])


# ----------------------------------------------------------------------------- second stages
# Run on a finished first stage: ``nclt train --stage2 crt --from RUN_DIR`` (the backbone is
# frozen and kept in eval mode; presets/stage2.yaml holds the stage's protocol).

_DECOUPLE = "Kang et al., ICLR 2020 (decoupling)"


@component(
    "crt",
    "base",
    _DECOUPLE,
    "second stage: re-train a fresh classifier on the frozen backbone, class-balanced",
)
def _crt(
    ctx: BuildContext, reinit: bool = True, bn_stats: Literal["frozen", "update"] = "frozen"
) -> MethodParts:
    """cRT as Kang et al. describe it: a fresh classifier (``reinit``) on the frozen backbone,
    whose BatchNorm statistics stay the first stage's (``bn_stats: frozen``). INC's official
    code keeps the first-stage classifier (``reinit: false``) and leaves the backbone in train
    mode, re-estimating the statistics under class-balanced sampling (``bn_stats: update``)."""
    return MethodParts(
        [_logit_term("ce", "ce", ctx)],
        sampler="class_balanced",
        trainable=("head.",),
        reinit_head=reinit,
        update_frozen_bn=bn_stats == "update",
    )


@component(
    "lws",
    "base",
    _DECOUPLE,
    "second stage: learn one scale per class on the frozen classifier, class-balanced",
)
def _lws(ctx: BuildContext) -> MethodParts:
    return MethodParts(
        [_logit_term("ce", "ce", ctx)],
        sampler="class_balanced",
        head="lws",
        trainable=("head.scales",),
    )


@component(
    "tau-norm",
    "base",
    _DECOUPLE,
    "second stage, no training: classifier vectors divided by their norm^tau",
)
def _tau_norm(ctx: BuildContext, tau: float = 1.0) -> MethodParts:
    return MethodParts(
        [_logit_term("ce", "ce", ctx)], head="tau_norm", head_args={"tau": tau}, trainable=()
    )
