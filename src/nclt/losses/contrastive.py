"""Contrastive losses: SupCon, BCL (balanced contrastive), AllNC's HyCon (negative-free).

Views are stacked as ``(B, V, D)``: sample ``i`` of the batch has ``V`` augmented views. Every
view of every sample is an anchor. Projections are L2-normalized inside the losses.

Under DDP (``scope="global"``, default) the contrast set and the class statistics are those
of the global batch: the views are gathered with ``nclt.dist.gather_keep_grad`` (this rank's
rows keep their gradient), the value is the global-batch loss (the same on every rank) and
its gradient is multiplied by the world size (``scale_grad``, undoing DDP's gradient averaging,
so every rank's features get the global-batch gradient), and shared inputs (BCL's prototypes)
enter with their gradient divided by the world size.
With ``reduction="none"`` the per-anchor values of this rank's samples are returned, unscaled.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from nclt import dist
from nclt.errors import ConfigError
from nclt.losses import LOSSES
from nclt.losses import functional as NF

Scope = Literal["global", "local"]

__all__ = ["BCLLoss", "HyConLoss", "SupConLoss"]


def _check_choice(name: str, value: object, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ConfigError(f"{name} must be one of {', '.join(map(repr, choices))}, got {value!r}")


def _check_views(proj: Tensor, labels: Tensor | None, what: str) -> None:
    if proj.dim() != 3:
        raise ValueError(
            f"{what} must be (B, V, D) (views stacked on dim 1), got {tuple(proj.shape)}"
        )
    if labels is not None and tuple(labels.shape) != (proj.shape[0],):
        raise ValueError(f"labels must be ({proj.shape[0]},), got {tuple(labels.shape)}")


def _local_rows(values: Tensor, local_batch: int, scope: Scope) -> Tensor:
    """This rank's rows of a tensor computed over the gathered batch."""
    if scope == "global" and dist.is_dist():
        return values[dist.local_rows(local_batch)]  # ranks may hold different batch sizes
    return values


def _reduce(
    per_anchor: Tensor,
    valid: Tensor,
    batch: int,
    views: int,
    world: int,
    scope: Scope,
    reduction: str,
) -> Tensor:
    """(N,) per-anchor losses over the gathered batch -> scalar or this rank's (B, V)."""
    if reduction == "none":
        return _local_rows(per_anchor.reshape(-1, views), batch, scope)
    total = per_anchor.sum()
    if reduction == "sum":
        return NF.scale_grad(total, world)
    return NF.scale_grad(total / valid.sum().clamp_min(1), world)


def _present_means_per_sample(values: Tensor, labels: Tensor) -> Tensor:
    """(N, D) -> (N, D): each row replaced by the mean of its class's rows."""
    means, _, inverse = NF.present_class_means(values, labels)
    return means[inverse]


@LOSSES.register("supcon")
class SupConLoss(nn.Module):
    """Supervised contrastive loss (Khosla et al., NeurIPS 2020, L^sup_out).

    ``loss_i = -1/|P(i)| sum_{p in P(i)} log( exp(z_i.z_p/tau) / sum_{k != i} exp(z_i.z_k/tau) )``
    over all ``B*V`` views, ``P(i)`` the other views of the same class; the mean over anchors
    with at least one positive (an anchor alone in its class, possible only with V = 1, is
    left out). ``labels=None`` gives SimCLR's NT-Xent (each sample its own class).

    Args:
        temperature: ``tau`` (Khosla et al.: 0.1).
        reduction: ``"mean"`` (default), ``"sum"`` or ``"none"`` ((B, V), 0 for anchors
            without positives).
        scope: ``"global"`` or ``"local"`` contrast set.

    Forward:
        proj (B, V, D), labels (B,) or None -> scalar.
    """

    def __init__(
        self,
        temperature: float = 0.1,
        reduction: Literal["mean", "sum", "none"] = "mean",
        scope: Scope = "global",
    ) -> None:
        super().__init__()
        _check_choice("reduction", reduction, ("mean", "sum", "none"))
        _check_choice("scope", scope, ("global", "local"))
        if temperature <= 0:
            raise ConfigError(f"temperature must be positive, got {temperature}")
        self.temperature = float(temperature)
        self.reduction = reduction
        self.scope = scope

    def forward(self, proj: Tensor, labels: Tensor | None = None) -> Tensor:
        """proj (B, V, D), labels (B,) or None -> scalar (or (B, V))."""
        _check_views(proj, labels, "proj")
        batch, views, _ = proj.shape
        world = NF.scope_world_size(self.scope)
        if labels is None:  # SimCLR: one class per sample, unique over ranks
            offset = dist.local_rows(batch).start if self.scope == "global" else 0
            labels = torch.arange(batch, device=proj.device) + offset
        z = NF.gather_for_scope(F.normalize(proj, dim=2), self.scope)
        labs = NF.gather_for_scope(labels, self.scope)
        z = z.reshape(-1, z.shape[2])
        labs = labs.repeat_interleave(views)
        index = torch.arange(z.shape[0], device=z.device)
        per_anchor, valid = NF.contrastive_loss(
            z, labs, z, labs, index, self.temperature, int(labs.max()) + 1, "none"
        )
        return _reduce(per_anchor, valid, batch, views, world, self.scope, self.reduction)


@LOSSES.register("bcl")
class BCLLoss(nn.Module):
    """Balanced contrastive loss (Zhu et al., CVPR 2022, Eq. 9) and its ablations (Eq. 6-8).

    ``variant="bcl"`` (Eq. 9): class-averaging and class-complement. The contrast set is all
    ``B*V`` views plus one prototype per class (``prototypes``; they join the contrast set and
    the positives but are never anchors). For anchor ``i`` of class ``y``::

        loss_i = -1/|B_y| sum_{p in B_y \\ {i} + {c_y}} log( exp(s_ip) /
                 sum_j 1/(|B_j|+1) sum_{k in B_j + {c_j}} exp(s_ik) ),  s = z.z'/tau

    where ``|B_j|`` counts the views of class j in the batch, minus one (the anchor) for
    ``j = y``: each class weighs the same in the denominator whatever its batch count. With
    collapsed features on a simplex and the prototypes on its vertices, every anchor's loss is
    ``log(1 + (K-1) exp(-K/((K-1) tau)))`` (Eq. 5 at tau = 1), head and tail alike, and also
    when classes are absent from the batch (their prototype alone stands for them).
    Without prototypes (None) only class-averaging over the classes present is applied
    (Eq. 6).

    Ablations: ``"l1"`` is Eq. 6 (class-averaging over the batch only; prototypes are
    rejected), ``"l2"`` is Eq. 7 (the class average inside the exponential; prototypes, when
    given, join their class as in Eq. 9), ``"l3"`` is Eq. 8 (``-log softmax`` of the anchor
    against the K prototypes; needs prototypes). ``class_averaging=False`` turns the
    ``"bcl"`` variant into SupCon over batch + prototypes (BCL Table 2, class-complement only);
    with prototypes None as well it is exactly ``SupConLoss``.

    Args:
        num_classes: K (None: ``prototypes.shape[0]``, else ``max label + 1``).
        temperature: ``tau`` (BCL CIFAR: 0.1; ImageNet code default 0.07).
        variant: ``"bcl"`` (default), ``"l1"``, ``"l2"`` or ``"l3"``.
        class_averaging: apply class-averaging (variants "bcl" and "l2").
        reduction: ``"mean"`` (default, over anchors with a positive), ``"sum"``, ``"none"``.
        scope: ``"global"`` or ``"local"`` contrast set.

    Forward:
        proj (B, V, D), labels (B,), prototypes (K, D) or None -> scalar (or (B, V)).
        BCL builds ``prototypes`` by passing the classifier weights through the contrastive
        MLP head; they are normalized here.
    """

    def __init__(
        self,
        num_classes: int | None = None,
        temperature: float = 0.1,
        variant: Literal["bcl", "l1", "l2", "l3"] = "bcl",
        class_averaging: bool = True,
        reduction: Literal["mean", "sum", "none"] = "mean",
        scope: Scope = "global",
    ) -> None:
        super().__init__()
        _check_choice("variant", variant, ("bcl", "l1", "l2", "l3"))
        _check_choice("reduction", reduction, ("mean", "sum", "none"))
        _check_choice("scope", scope, ("global", "local"))
        if temperature <= 0:
            raise ConfigError(f"temperature must be positive, got {temperature}")
        self.num_classes = None if num_classes is None else int(num_classes)
        self.temperature = float(temperature)
        self.variant = variant
        self.class_averaging = bool(class_averaging)
        self.reduction = reduction
        self.scope = scope

    def forward(self, proj: Tensor, labels: Tensor, prototypes: Tensor | None = None) -> Tensor:
        """proj (B, V, D), labels (B,), prototypes (K, D) or None -> scalar (or (B, V))."""
        _check_views(proj, labels, "proj")
        if self.variant == "l1" and prototypes is not None:
            raise ConfigError(
                "bcl variant 'l1' is Eq. 6 (class-averaging without class-complement): do not "
                "pass prototypes, or use variant='bcl' (Eq. 9)"
            )
        if self.variant == "l3" and prototypes is None:
            raise ConfigError("bcl variant 'l3' (Eq. 8) needs prototypes (K, D)")
        batch, views, _ = proj.shape
        world = NF.scope_world_size(self.scope)
        z = NF.gather_for_scope(F.normalize(proj, dim=2), self.scope)
        labs = NF.gather_for_scope(labels, self.scope)
        z = z.reshape(-1, z.shape[2])
        labs = labs.repeat_interleave(views)
        if self.num_classes is not None:
            num_classes = self.num_classes
        elif prototypes is not None:
            num_classes = prototypes.shape[0]
        else:
            num_classes = int(labs.max()) + 1
        protos = None
        if prototypes is not None:
            if prototypes.shape != (num_classes, z.shape[1]):
                raise ValueError(
                    f"prototypes must be ({num_classes}, {z.shape[1]}), "
                    f"got {tuple(prototypes.shape)}"
                )
            protos = NF.scale_grad(F.normalize(prototypes.to(z.dtype), dim=1), 1.0 / world)

        if self.variant == "l3":
            assert protos is not None
            per_anchor = F.cross_entropy(z @ protos.T / self.temperature, labs, reduction="none")
            valid = torch.ones_like(labs, dtype=torch.bool)
        else:
            averaging: Literal["none", "outside", "inside"] = "none"
            if self.class_averaging:
                averaging = "inside" if self.variant == "l2" else "outside"
            contrast, contrast_labels = z, labs
            if protos is not None:
                contrast = torch.cat([z, protos], dim=0)
                contrast_labels = torch.cat(
                    [labs, torch.arange(num_classes, device=labs.device, dtype=labs.dtype)]
                )
            index = torch.arange(z.shape[0], device=z.device)
            per_anchor, valid = NF.contrastive_loss(
                z,
                labs,
                contrast,
                contrast_labels,
                index,
                self.temperature,
                num_classes,
                averaging,
            )
        return _reduce(per_anchor, valid, batch, views, world, self.scope, self.reduction)


@LOSSES.register("hycon")
class HyConLoss(nn.Module):
    """AllNC's hybrid contrastive loss HyCon (Eq. 8): negative-free, SimSiam-style + class mean.

    With ``z`` the projection-head outputs of the views (``proj``), ``h`` the predictor-MLP
    outputs ``h = proj_2(z)`` (``pred``), and ``u_b`` the mean of ``z`` of view ``b`` over the
    sample's class in the (global) batch::

        sim(h, u, sg(z)) = -cos(h, sg(z)) - cos(u, sg(z))
        L_con = sim(h1, u2, sg z2) + sim(h2, u1, sg z1)          (two views)

    The stop-gradient is on ``z`` only: ``h`` is pulled to the other view's projection, and
    the class mean ``u`` -- which keeps its gradient, so it reaches every ``z`` of the class --
    is pulled to each member's projection (through ``u``, the projections of a class are drawn
    together; without it the term would have no gradient at all). With V > 2 views the loss
    is ``sum_b [ -1/(V-1) sum_{a != b} cos(h_a, sg z_b) - cos(u_b, sg z_b) ]``, which is Eq. 8
    for V = 2. The loss is averaged over the batch.

    Its minimum is ``-2V`` (-4 for two views), reached when every ``h`` and ``u`` is parallel
    to ``z`` (variability collapse); it is not 0 there. A class with one sample in the batch
    has ``u = z`` and its mean term has zero gradient.

    Args:
        num_classes: K; accepted for uniformity, not needed (the class means are taken over
            the classes present).
        reduction: ``"mean"`` (default), ``"sum"`` or ``"none"`` ((B,)).
        scope: ``"global"`` or ``"local"`` class means.

    Forward:
        pred (B, V, D) predictor outputs ``h``, proj (B, V, D) projections ``z``, labels (B,)
        -> scalar. AllNC's algorithm computes ``z`` with ``proj_1`` and ``h = proj_2(z)``.
    """

    def __init__(
        self,
        num_classes: int | None = None,
        reduction: Literal["mean", "sum", "none"] = "mean",
        scope: Scope = "global",
    ) -> None:
        super().__init__()
        _check_choice("reduction", reduction, ("mean", "sum", "none"))
        _check_choice("scope", scope, ("global", "local"))
        self.num_classes = None if num_classes is None else int(num_classes)
        self.reduction = reduction
        self.scope = scope

    def forward(self, pred: Tensor, proj: Tensor, labels: Tensor) -> Tensor:
        """pred (B, V, D), proj (B, V, D), labels (B,) -> scalar (or (B,))."""
        _check_views(proj, labels, "proj")
        _check_views(pred, labels, "pred")
        if pred.shape[1] != proj.shape[1] or pred.shape[1] < 2:
            raise ValueError(
                f"pred and proj need the same number V >= 2 of views, got "
                f"{pred.shape[1]} and {proj.shape[1]}"
            )
        batch, views, _ = proj.shape
        world = NF.scope_world_size(self.scope)
        h = NF.gather_for_scope(pred, self.scope)
        z = NF.gather_for_scope(proj, self.scope)
        labs = NF.gather_for_scope(labels, self.scope)
        view_means = torch.stack(
            [_present_means_per_sample(z[:, b], labs) for b in range(views)], dim=1
        )
        per_sample = NF.hycon_per_sample(h, z, view_means)
        if self.reduction == "none":
            return _local_rows(per_sample, batch, self.scope)
        if self.reduction == "sum":
            return NF.scale_grad(per_sample.sum(), world)
        return NF.scale_grad(per_sample.mean(), world)
