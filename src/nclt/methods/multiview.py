"""Multi-view methods: BCL (Zhu et al., CVPR 2022) and AllNC / AllNC++ (AllNC, Eq. 8-14).

Both run several augmented views of each image through the shared backbone as one batch
(``MethodParts.views``; the network concatenates them, so BatchNorm sees every view) and add
MLP heads on the per-view features (``MethodParts.extra_heads``). docs/METHODS.md (section
"BCL" and "AllNC / AllNC++") lists equations, defaults and the choices made here.

* ``bcl``: view 0 (AutoAugment + Cutout) is classified by a cosine classifier (scale 30) with
  logit compensation (``lc``, Eq. 10: CE on ``z + log prior``, weight lambda = 2.0); views 1
  and 2 (SimAugment) go through the contrastive MLP into the balanced contrastive loss
  (``bcl``, Eq. 9, weight mu = 0.6, temperature 0.1), whose prototypes are the classifier
  weights passed through an MLP (class-complement).
* ``allnc``: two RandAugment views; each is classified (Eq. 12:
  ``eta * ce + (1 - eta) * (gr + p2p_classifier)`` per branch, ``eta = 1 - (T/Tmax)^gamma``),
  and ``alpha * (hycon + p2p)`` acts on the projections / class means (Eq. 14).
* ``allnc++``: ``allnc`` plus weight balancing (Alshammari et al., CVPR 2022): every
  classifier vector is projected back into the ball ``||w_c|| <= max_norm`` after each
  optimizer step; the tuned weight decay is the config's ``optim.weight_decay``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from nclt.errors import ConfigError
from nclt.losses import LOSSES
from nclt.methods.objective import Term
from nclt.methods.recipes import BuildContext, MethodParts, component
from nclt.methods.schedules import GBBNEta, OneMinus, Progress, Schedule
from nclt.models.projection import MLPHead, ViewMLP

__all__ = [
    "BCLProjection",
    "MaxNorm",
    "PooledViews",
    "PrototypeBCL",
    "Scaled",
    "SumOverViews",
]


def _choice(name: str, value: object, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ConfigError(f"{name} must be one of {', '.join(map(repr, choices))}, got {value!r}")


def _positive(name: str, value: float) -> None:
    if not value > 0:
        raise ConfigError(f"{name} must be > 0, got {value!r}")


# ----------------------------------------------------------------------------- building blocks


@dataclass(frozen=True)
class Scaled:
    """``factor * inner(p)``: a schedule times a constant (AllNC's ``(1 - eta)`` on
    ``L_p(omega)``, which each of the two branches of Eq. 14 adds once)."""

    inner: Schedule
    factor: float

    def __call__(self, p: Progress) -> float:
        return self.factor * float(self.inner(p))


class SumOverViews(nn.Module):
    """A logit loss summed over views: ``sum_v loss(view_logits[:, v], labels)``.

    AllNC classifies both views (Algorithm 1, line 6) and adds the two branch losses
    (Eq. 14: ``L_cls^(1) + L_cls^(2)``).

    Forward:
        view_logits (B, V, K), labels (B,), ``**kwargs`` passed to the loss -> scalar.
    """

    def __init__(self, loss: nn.Module) -> None:
        super().__init__()
        self.loss = loss

    def forward(self, view_logits: Tensor, labels: Tensor, **kwargs: Any) -> Tensor:
        if view_logits.dim() != 3:
            raise ValueError(f"view_logits must be (B, V, K), got {tuple(view_logits.shape)}")
        parts = [
            self.loss(view_logits[:, v], labels, **kwargs) for v in range(view_logits.shape[1])
        ]
        return torch.stack(parts).sum()


class PooledViews(nn.Module):
    """A feature regularizer on the views pooled: ``loss((B*V, D) features, (B*V,) labels)``.

    AllNC's P2P on class means (Eq. 10): the class means are taken over both views' features.

    Forward:
        view_features (B, V, D), labels (B,) -> scalar.
    """

    def __init__(self, loss: nn.Module) -> None:
        super().__init__()
        self.loss = loss

    def forward(self, view_features: Tensor, labels: Tensor) -> Tensor:
        if view_features.dim() != 3:
            raise ValueError(f"expected (B, V, D) features, got {tuple(view_features.shape)}")
        b, v, d = view_features.shape
        return self.loss(view_features.reshape(b * v, d), labels.repeat_interleave(v))


class BCLProjection(nn.Module):
    """BCL's contrastive MLP (extra head ``proj``) and its prototype MLP.

    ``forward``: the MLP on all views of ``(B, V, D)`` (BatchNorm over the whole multi-view
    batch, as BCL's code applies its head to the concatenated three views), returning the
    contrastive views ``1..V-1`` as ``(B, V-1, out_dim)``, unnormalized (the loss normalizes).

    ``prototypes(head_weight)``: the classifier weights ``(K, D)`` through the prototype MLP,
    ``(K, out_dim)``. ``prototype_head="separate"`` (default) gives the prototypes their own
    MLP of the same shape, as BCL Fig. 4 ("the classifier weights are separately transformed by
    a MLP") and its released code (``head_fc`` beside ``head``) do; ``"shared"`` passes the
    weights through the contrastive MLP itself (with BatchNorm, its batch statistics then
    come from the K weight rows in that call). Either way the MLP is a submodule of this head
    only, so its parameters are in the network once.

    Args:
        feature_dim: D.
        hidden_dim: hidden width (BCL CIFAR: 512).
        out_dim: projection width (BCL CIFAR: 128).
        batchnorm: BatchNorm1d after the hidden layer (BCL's code).
        prototype_head: ``"separate"`` or ``"shared"``.
        first_view: first contrastive view (1: view 0 is the classification view).
    """

    def __init__(
        self,
        feature_dim: int,
        hidden_dim: int = 512,
        out_dim: int = 128,
        batchnorm: bool = True,
        prototype_head: str = "separate",
        first_view: int = 1,
    ) -> None:
        super().__init__()
        _choice("prototype_head", prototype_head, ("separate", "shared"))
        self.proj = ViewMLP(MLPHead(feature_dim, hidden_dim, out_dim, batchnorm), first_view)
        self.prototype_mlp = (
            MLPHead(feature_dim, hidden_dim, out_dim, batchnorm)
            if prototype_head == "separate"
            else None
        )
        self.prototype_head = prototype_head

    def forward(self, view_features: Tensor) -> Tensor:
        return self.proj(view_features)

    def prototypes(self, head_weight: Tensor) -> Tensor:
        """Classifier weights ``(K, D)`` -> prototypes ``(K, out_dim)`` (unnormalized)."""
        mlp = self.prototype_mlp if self.prototype_mlp is not None else self.proj.mlp
        return mlp(head_weight)


class PrototypeBCL(nn.Module):
    """The ``bcl`` term: the balanced contrastive loss with prototypes = MLP(classifier weights).

    Holds the loss and a *reference* to the network's :class:`BCLProjection` (not registered as
    a submodule: its parameters belong to the network, and the optimizer and the checkpoint
    see them there, once).

    Forward:
        proj (B, V', d) the contrastive projections, labels (B,), head_weight (K, D) -> scalar.
    """

    def __init__(self, loss: nn.Module, projection: BCLProjection) -> None:
        super().__init__()
        self.loss = loss
        self._projection = (projection,)  # a tuple: not a registered submodule

    @property
    def projection(self) -> BCLProjection:
        return self._projection[0]

    def forward(self, proj: Tensor, labels: Tensor, head_weight: Tensor) -> Tensor:
        return self.loss(proj, labels, self.projection.prototypes(head_weight))


class AllNCPrediction(nn.Module):
    """AllNC's prediction MLP ``h = proj_2(z)`` on ``z = proj_1(features)`` (Algorithm 1, l. 7).

    Extra heads all read the backbone features, so this head recomputes ``z`` with a
    reference to the projection head (not a submodule: its parameters are registered once,
    under ``proj``); gradients from ``h`` reach ``proj_1`` as in SimSiam.
    """

    def __init__(self, predictor: nn.Module, projection: nn.Module) -> None:
        super().__init__()
        self.predictor = predictor
        self._projection = (projection,)

    def forward(self, view_features: Tensor) -> Tensor:
        return self.predictor(self._projection[0](view_features))


class MaxNorm:
    """Weight balancing's MaxNorm (Alshammari et al., CVPR 2022) as a post-step projection.

    After every optimizer step, each classifier vector (row of ``head.weight``) longer than
    ``max_norm`` is scaled back onto the sphere of radius ``max_norm`` (projected gradient
    descent); shorter rows are left alone. The bias, if any, is not constrained.
    """

    def __init__(self, max_norm: float) -> None:
        _positive("max_norm", max_norm)
        self.max_norm = float(max_norm)

    @torch.no_grad()
    def __call__(self, network: nn.Module) -> None:
        net = getattr(network, "module", network)  # DDP-wrapped or not
        weight = net.head.weight
        if not isinstance(weight, nn.Parameter):
            raise ConfigError("MaxNorm needs a learnable classifier (head.weight a Parameter)")
        norms = weight.norm(dim=1, keepdim=True)
        weight.mul_((self.max_norm / norms.clamp_min(1e-12)).clamp(max=1.0))

    def __repr__(self) -> str:
        return f"MaxNorm(max_norm={self.max_norm})"


# ----------------------------------------------------------------------------- BCL

_BCL = "Zhu et al., CVPR 2022 (BCL)"


@component(
    "bcl",
    "base",
    _BCL,
    "balanced contrastive learning: logit-compensated cosine classifier + BCL loss "
    "with classifier prototypes (3 views)",
)
def _bcl(
    ctx: BuildContext,
    lambda_lc: float = 2.0,
    mu_bcl: float = 0.6,
    temperature: float = 0.1,
    lc_tau: float = 1.0,
    scale: float = 30.0,
    hidden_dim: int = 512,
    proj_dim: int = 128,
    mlp_batchnorm: bool = True,
    prototype_head: str = "separate",
    class_complement: bool = True,
    class_averaging: bool = True,
    variant: str = "bcl",
    cls_view: str = "autoaugment_cutout",
    contrastive_view: str = "simclr",
) -> MethodParts:
    """BCL (Eq. 11): ``lambda_lc * L_LC + mu_bcl * L_BCL``, logged as ``lc`` and ``bcl``.

    Defaults are BCL's CIFAR values (section 4.2); ImageNet-LT / iNaturalist use
    ``lambda_lc=1.0, mu_bcl=0.35, proj_dim=1024, cls_view=randaugment`` (ERRATA).
    ``class_complement=False`` drops the prototypes (Eq. 6 with ``variant="l1"``);
    ``class_averaging=False`` and ``variant`` give the Table 1/2 ablations.
    """
    _positive("temperature", temperature)
    _choice("variant", variant, ("bcl", "l1", "l2", "l3"))
    if variant == "l1" and class_complement:
        raise ConfigError(
            "bcl variant 'l1' (Eq. 6) has no prototypes: set class_complement: "
            "false, or use variant 'bcl' (Eq. 9)"
        )
    if variant == "l3" and not class_complement:
        raise ConfigError("bcl variant 'l3' (Eq. 8) needs the prototypes (class_complement)")
    head = BCLProjection(ctx.feature_dim, hidden_dim, proj_dim, mlp_batchnorm, prototype_head)
    lc = LOSSES.build("logit_adjust", class_counts=ctx.class_counts, tau=lc_tau)
    bcl = LOSSES.build(
        "bcl",
        num_classes=ctx.num_classes,
        temperature=temperature,
        variant=variant,
        class_averaging=class_averaging,
    )
    if class_complement:
        bcl_term = Term("bcl", PrototypeBCL(bcl, head), ("proj", "labels", "head_weight"), mu_bcl)
    else:
        bcl_term = Term("bcl", bcl, ("proj", "labels"), mu_bcl)
    terms = [Term("lc", lc, ("logits", "labels"), lambda_lc), bcl_term]
    return MethodParts(
        terms,
        head="cosine",
        head_args={"scale": scale},
        views=[cls_view, contrastive_view, contrastive_view],
        extra_heads={"proj": head},
    )


# ----------------------------------------------------------------------------- AllNC

_ALLNC = "AllNC: All-around Neural Collapse for imbalanced classification (2024)"


def _allnc_parts(
    ctx: BuildContext,
    gamma: float,
    alpha: float,
    rho: float,
    gr_weighted_mean: bool,
    eta_unit: str,
    p2p_center: str,
    p2p_features: str,
    proj_hidden: int,
    proj_dim: int,
    pred_hidden: int,
    view: str,
) -> MethodParts:
    _positive("gamma", gamma)
    _choice("eta_unit", eta_unit, ("iteration", "epoch"))
    _choice("p2p_center", p2p_center, ("sample", "class"))
    _choice("p2p_features", p2p_features, ("backbone", "projection"))
    if alpha < 0:
        raise ConfigError(f"alpha must be >= 0, got {alpha}")
    views = [view, view]
    proj = ViewMLP(MLPHead(ctx.feature_dim, proj_hidden, proj_dim, last_bn=True))
    pred = AllNCPrediction(MLPHead(proj_dim, pred_hidden, proj_dim), proj)
    eta = GBBNEta(gamma, eta_unit)  # type: ignore[arg-type]
    ce = SumOverViews(LOSSES.build("ce"))
    gr = SumOverViews(
        LOSSES.build("gr", class_counts=ctx.class_counts, rho=rho, weighted_mean=gr_weighted_mean)
    )
    p2p = PooledViews(LOSSES.build("p2p", num_classes=ctx.num_classes, center=p2p_center))
    p2p_reads = "view_features" if p2p_features == "backbone" else "proj"
    terms = [
        Term("ce", ce, ("view_logits", "labels"), eta),
        Term("gr", gr, ("view_logits", "labels"), OneMinus(eta)),
        # (1 - eta) * L_p(omega) in each of the len(views) branches of Eq. 14
        Term(
            "p2p_classifier",
            LOSSES.build("p2p_classifier"),
            ("head_weight",),
            Scaled(OneMinus(eta), float(len(views))),
        ),
        Term(
            "hycon",
            LOSSES.build("hycon", num_classes=ctx.num_classes),
            ("pred", "proj", "labels"),
            alpha,
        ),
        Term("p2p", p2p, (p2p_reads, "labels"), alpha),
    ]
    return MethodParts(terms, head="linear", views=views, extra_heads={"proj": proj, "pred": pred})


@component(
    "allnc",
    "base",
    _ALLNC,
    "HyCon + P2P on class means and classifier, GBBN eta*CE + (1-eta)*GR (2 views)",
)
def _allnc(
    ctx: BuildContext,
    gamma: float = 3.0,
    alpha: float = 1.0,
    rho: float = 1.0,
    gr_weighted_mean: bool = False,
    eta_unit: str = "iteration",
    p2p_center: str = "sample",
    p2p_features: str = "backbone",
    proj_hidden: int = 512,
    proj_dim: int = 128,
    pred_hidden: int = 32,
    view: str = "randaugment",
) -> MethodParts:
    """AllNC (Eq. 14, Algorithm 1). gamma: Table VI (3.0 at IF 100, 2.0 at IF 200).

    gr_weighted_mean: False (default) averages GR over the N samples as Eq. 12 prints it;
    True divides by the batch's summed class weights, as DisAlign's GR code does.
    """
    return _allnc_parts(
        ctx,
        gamma,
        alpha,
        rho,
        gr_weighted_mean,
        eta_unit,
        p2p_center,
        p2p_features,
        proj_hidden,
        proj_dim,
        pred_hidden,
        view,
    )


@component(
    "allnc++",
    "base",
    _ALLNC + " + weight balancing (Alshammari et al., CVPR 2022)",
    "AllNC with a max-norm bound on the classifier vectors (set optim.weight_decay)",
)
def _allnc_pp(
    ctx: BuildContext,
    gamma: float = 3.0,
    alpha: float = 1.0,
    rho: float = 1.0,
    gr_weighted_mean: bool = False,
    eta_unit: str = "iteration",
    p2p_center: str = "sample",
    p2p_features: str = "backbone",
    proj_hidden: int = 512,
    proj_dim: int = 128,
    pred_hidden: int = 32,
    view: str = "randaugment",
    max_norm: float = 1.0,
) -> MethodParts:
    """AllNC++: AllNC plus MaxNorm (``||w_c|| <= max_norm`` after every step)."""
    parts = _allnc_parts(
        ctx,
        gamma,
        alpha,
        rho,
        gr_weighted_mean,
        eta_unit,
        p2p_center,
        p2p_features,
        proj_hidden,
        proj_dim,
        pred_hidden,
        view,
    )
    parts.post_step.append(MaxNorm(max_norm))
    return parts
