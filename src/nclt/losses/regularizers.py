"""Feature regularizers: INC's L_W and L_B, center loss, AllNC's Peer-to-Peer (P2P) loss.

Call shape ``loss(features (B, D), labels (B,)) -> scalar`` (``P2PClassifierLoss`` reads the
classifier instead: ``loss(head_weight (C, D))``).

Batch statistics (class means, class counts, the sample mean) are taken over the global batch
when ``scope="global"`` (default): the features are gathered with
``nclt.dist.gather_keep_grad`` (this rank's rows keep their gradient), the value is the loss of
the global batch and its gradient is multiplied by the world size (``scale_grad``; DDP averages
gradients over ranks, the product gives every rank's features the global-batch gradient), and
shared learnable centres enter with their gradient divided by the world size. On one process
all of this is a no-op.

Learnable centres are ``nn.Parameter``s of the loss module: the optimizer must see them
(INC's code gives them their own SGD at lr 0.5 with the gradient divided by lambda_1), and
under DDP their gradients must be averaged over ranks like the model's.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from nclt.errors import ConfigError
from nclt.losses import LOSSES
from nclt.losses import functional as NF

Scope = Literal["global", "local"]

__all__ = [
    "BetweenClassLoss",
    "CenterLoss",
    "INCLoss",
    "P2PClassifierLoss",
    "P2PLoss",
    "WithinClassLoss",
]


def _check_choice(name: str, value: object, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ConfigError(f"{name} must be one of {', '.join(map(repr, choices))}, got {value!r}")


def _learnable_centres(num_classes: int, feature_dim: int | None, what: str) -> nn.Parameter:
    if feature_dim is None:
        raise ConfigError(f"{what} with learnable centres needs feature_dim")
    # Standard-normal init, as INC's official NC1Loss / CenterLoss.
    return nn.Parameter(torch.randn(num_classes, feature_dim))


@LOSSES.register("inc_within")
class WithinClassLoss(nn.Module):
    """INC's within-class regularizer L_W (Liu et al., ICML 2023, Eq. 13).

    ``L_W = sum_k sum_{y_i = k} 1/n_k ||h_i - mu_k||^2``: each class's mean squared distance
    to its centre, so every class weighs the same whatever its size (center loss weighs every
    sample the same instead).

    Args:
        num_classes: K.
        feature_dim: D; needed only with ``centres="learnable"``.
        centres: ``"batch"`` (default): ``mu_k`` is the mean of class k in the (global) batch,
            as the paper's text ("updated in each mini-batch"); ``"learnable"``: K learnable
            centres (an ``nn.Parameter``, random normal init), as INC's official code; or an
            existing ``nn.Parameter`` (K, D) to share centres with another loss.
        counts: which ``n_k`` (the paper leaves it unstated, ERRATA): ``"batch"`` (default;
            the official code's choice: ``n_k`` is the count of class k in the batch, so L_W
            is a sum of per-class mean squared distances) or ``"dataset"`` (``class_counts``).
        class_counts: (K,) training images per class; required for ``counts="dataset"``.
        class_reduction: ``"sum"`` over classes (default, Eq. 13 as printed) or ``"mean"``
            (divided by K, as the official code's ``NC1Loss``; the lambda_1 of INC Table 1 may
            have been tuned with that form: a factor K between the two).
        scope: ``"global"`` or ``"local"`` batch statistics.

    Forward:
        features (B, D), labels (B,) -> scalar. Absent classes contribute nothing; a class
        with one sample contributes 0 with batch centres.

    With learnable centres shared with ``CenterLoss`` and every class of the batch counted n
    times, ``L_W = (2B/n) x`` center loss: only the weighting of the classes differs.
    """

    def __init__(
        self,
        num_classes: int,
        feature_dim: int | None = None,
        centres: Literal["batch", "learnable"] | nn.Parameter = "batch",
        counts: Literal["batch", "dataset"] = "batch",
        class_counts: Tensor | None = None,
        class_reduction: Literal["sum", "mean"] = "sum",
        scope: Scope = "global",
    ) -> None:
        super().__init__()
        _check_choice("counts", counts, ("batch", "dataset"))
        _check_choice("class_reduction", class_reduction, ("sum", "mean"))
        _check_choice("scope", scope, ("global", "local"))
        self.num_classes = int(num_classes)
        self.counts = counts
        self.class_reduction = class_reduction
        self.scope = scope
        if isinstance(centres, nn.Parameter):
            self.centres: nn.Parameter | None = centres
        else:
            _check_choice("centres", centres, ("batch", "learnable"))
            self.centres = (
                _learnable_centres(self.num_classes, feature_dim, "inc_within")
                if centres == "learnable"
                else None
            )
        if counts == "dataset":
            if class_counts is None:
                raise ConfigError("inc_within with counts='dataset' needs class_counts")
            cc = torch.as_tensor(class_counts, dtype=torch.float32)
            if cc.shape != (self.num_classes,) or bool((cc <= 0).any()):
                raise ConfigError(f"class_counts must be {self.num_classes} positive counts")
            self.register_buffer("class_counts", cc, persistent=False)
        else:
            self.class_counts = None

    def forward(self, features: Tensor, labels: Tensor) -> Tensor:
        """features (B, D), labels (B,) -> scalar."""
        world = NF.scope_world_size(self.scope)
        feats = NF.gather_for_scope(features, self.scope)
        labs = NF.gather_for_scope(labels, self.scope)
        if self.centres is None:
            # Only the classes present matter: work on P <= B rows, not K.
            means, present_counts, inverse = NF.present_class_means(feats, labs)
            if self.class_counts is None:
                weight = 1.0 / present_counts
            else:
                weight = 1.0 / self.class_counts.to(feats.dtype)[labs.unique()]
            loss = NF.within_class_distance(feats, inverse, means, weight)
        else:
            centres = NF.scale_grad(self.centres, 1.0 / world).to(feats.dtype)
            n = (
                torch.bincount(labs, minlength=self.num_classes).to(feats.dtype)
                if self.class_counts is None
                else self.class_counts.to(feats.dtype)
            )
            weight = torch.where(n > 0, 1.0 / n.clamp_min(1e-12), torch.zeros_like(n))
            loss = NF.within_class_distance(feats, labs, centres, weight)
        if self.class_reduction == "mean":
            loss = loss / self.num_classes
        return NF.scale_grad(loss, world)


@LOSSES.register("inc_between")
class BetweenClassLoss(nn.Module):
    """INC's between-class regularizer L_B (Liu et al., ICML 2023, Eq. 15).

    Centre the class means by their mean ``mu_C``, normalize, and return minus the mean over
    classes of the smallest angle to another class. On a simplex ETF with all K classes
    present it equals ``-arccos(-1/(K-1))`` (-1.6821 at K=10), its minimum; it is invariant to
    uniform scaling and translation of the features.

    Args:
        num_classes: K.
        feature_dim: D; needed only with ``centres="learnable"``.
        centres: ``"batch"`` (default): the means of the classes present in the (global)
            batch (fewer than 2 present gives 0); ``"learnable"``: K learnable centres as INC's
            code (then the loss does not read the features; to let L_W and L_B share the same
            centres, pass ``WithinClassLoss(...).centres`` here, or use ``INCLoss``); or an
            ``nn.Parameter`` (K, D).
        eps: the largest cosine is clamped to ``[-1 + eps, 1 - eps]`` before ``arccos``: value
            and gradient stay finite when two means coincide (the value is then off by at most
            ``arccos(1 - eps) / C``, 1.4e-3 / C for 1e-6).
        scope: ``"global"`` or ``"local"`` batch statistics.

    Forward:
        features (B, D), labels (B,) -> scalar.
    """

    def __init__(
        self,
        num_classes: int,
        feature_dim: int | None = None,
        centres: Literal["batch", "learnable"] | nn.Parameter = "batch",
        eps: float = 1e-6,
        scope: Scope = "global",
    ) -> None:
        super().__init__()
        _check_choice("scope", scope, ("global", "local"))
        if not 0.0 < eps < 1.0:
            raise ConfigError(f"eps must lie in (0, 1), got {eps}")
        self.num_classes = int(num_classes)
        self.eps = float(eps)
        self.scope = scope
        if isinstance(centres, nn.Parameter):
            self.centres: nn.Parameter | None = centres
        else:
            _check_choice("centres", centres, ("batch", "learnable"))
            self.centres = (
                _learnable_centres(self.num_classes, feature_dim, "inc_between")
                if centres == "learnable"
                else None
            )

    def forward(self, features: Tensor, labels: Tensor) -> Tensor:
        """features (B, D), labels (B,) -> scalar."""
        if self.centres is not None:
            # Depends on the centres only: identical on every rank, no batch statistics.
            return NF.min_angle_loss(self.centres.to(features.dtype), self.eps)
        world = NF.scope_world_size(self.scope)
        feats = NF.gather_for_scope(features, self.scope)
        labs = NF.gather_for_scope(labels, self.scope)
        means, _, _ = NF.present_class_means(feats, labs)
        if means.shape[0] < 2:
            return features.sum() * 0.0
        return NF.scale_grad(NF.min_angle_loss(means, self.eps), world)


@LOSSES.register("center")
class CenterLoss(nn.Module):
    """Center loss (Wen et al., ECCV 2016): ``1/2 ||h_i - c_{y_i}||^2`` with learnable centres.

    Every sample weighs the same (INC Table 7 compares it with L_W, which weighs every class
    the same). The centres are an ``nn.Parameter`` (K, D) trained by gradient descent on this
    loss, as in INC's code, not by Wen et al.'s separate update rule. Per-sample, so it needs
    no global statistics: DDP's gradient averaging already gives the global-batch gradient.

    Args:
        num_classes: K.
        feature_dim: D.
        reduction: ``"mean"`` over the batch (default; Wen et al. sum over the mini-batch,
            INC's code takes the mean without the 1/2), ``"sum"`` or ``"none"`` (B,).
        centres: an existing ``nn.Parameter`` (K, D) to share, or None for new ones.

    Forward:
        features (B, D), labels (B,) -> scalar (or (B,)).
    """

    def __init__(
        self,
        num_classes: int,
        feature_dim: int,
        reduction: Literal["mean", "sum", "none"] = "mean",
        centres: nn.Parameter | None = None,
    ) -> None:
        super().__init__()
        _check_choice("reduction", reduction, ("mean", "sum", "none"))
        self.num_classes = int(num_classes)
        self.reduction = reduction
        self.centres = (
            centres
            if centres is not None
            else _learnable_centres(self.num_classes, feature_dim, "center")
        )

    def forward(self, features: Tensor, labels: Tensor) -> Tensor:
        """features (B, D), labels (B,) -> scalar (or (B,) with reduction="none")."""
        per_sample = 0.5 * (features - self.centres.to(features.dtype)[labels]).pow(2).sum(dim=1)
        if self.reduction == "none":
            return per_sample
        return per_sample.sum() if self.reduction == "sum" else per_sample.mean()


@LOSSES.register("inc")
class INCLoss(nn.Module):
    """INC's feature regularization ``lambda_w L_W + lambda_b L_B`` with shared centres.

    Needed when the centres are learnable (INC's official code): L_W pulls the features to the
    centres and L_B spreads the same centres apart. Also covers INC Table 7's "center loss &
    L_B" row (``within="center"``).

    Args:
        num_classes: K.
        feature_dim: D (needed with learnable centres or ``within="center"``).
        lambda_w: weight of the within-class term (INC Table 1: 0.01 on CIFAR).
        lambda_b: weight of L_B (INC Table 1: 0.1 on CIFAR-10, 0.5 on CIFAR-100).
        within: ``"inc_within"`` (L_W) or ``"center"`` (center loss, learnable centres).
        centres: ``"batch"`` or ``"learnable"`` (forced to learnable with center loss).
        counts, class_counts, class_reduction: as ``WithinClassLoss``.
        eps: as ``BetweenClassLoss``.
        scope: ``"global"`` or ``"local"`` batch statistics.

    Forward:
        features (B, D), labels (B,) -> scalar.
    """

    def __init__(
        self,
        num_classes: int,
        feature_dim: int | None = None,
        lambda_w: float = 0.01,
        lambda_b: float = 0.1,
        within: Literal["inc_within", "center"] = "inc_within",
        centres: Literal["batch", "learnable"] = "batch",
        counts: Literal["batch", "dataset"] = "batch",
        class_counts: Tensor | None = None,
        class_reduction: Literal["sum", "mean"] = "sum",
        eps: float = 1e-6,
        scope: Scope = "global",
    ) -> None:
        super().__init__()
        _check_choice("within", within, ("inc_within", "center"))
        _check_choice("centres", centres, ("batch", "learnable"))
        self.lambda_w = float(lambda_w)
        self.lambda_b = float(lambda_b)
        self.within: nn.Module
        if within == "center":
            if feature_dim is None:
                raise ConfigError("inc with within='center' needs feature_dim")
            self.within = CenterLoss(num_classes, feature_dim)
            shared: Literal["batch", "learnable"] | nn.Parameter = self.within.centres
        else:
            self.within = WithinClassLoss(
                num_classes,
                feature_dim,
                centres=centres,
                counts=counts,
                class_counts=class_counts,
                class_reduction=class_reduction,
                scope=scope,
            )
            shared = self.within.centres if self.within.centres is not None else "batch"
        self.between = BetweenClassLoss(num_classes, centres=shared, eps=eps, scope=scope)

    def forward(self, features: Tensor, labels: Tensor) -> Tensor:
        """features (B, D), labels (B,) -> scalar."""
        loss = features.new_zeros(())
        if self.lambda_w:
            loss = loss + self.lambda_w * self.within(features, labels)
        if self.lambda_b:
            loss = loss + self.lambda_b * self.between(features, labels)
        return loss


@LOSSES.register("p2p")
class P2PLoss(nn.Module):
    """AllNC's Peer-to-Peer loss on class means (Eq. 10): pull them to a simplex ETF.

    ``L = 1/C^2 sum_ij (mu~_i . mu~_j - rho_ij)^2``, ``rho = C/(C-1) I - 1/(C-1) 11^T``, over
    the C classes present in the (global) batch, with ``mu~_c = (mu_c - m)/||mu_c - m||``.

    Args:
        num_classes: K; accepted for uniformity (the loss uses the classes present).
        center: the centre ``m``: ``"sample"`` (default, the paper's ``mu_G = Ave_{i,c} z_ic``,
            the mean of all batch features) or ``"class"`` (the mean of the present class
            means, INC's ``mu_C``). With "class" the loss is exactly 0 on any simplex ETF of the
            present classes; with "sample" collapsed features on the vertices of an imbalanced
            batch are not at 0 (0.0619 for K=10 in CIFAR-10-LT IF=200 proportions, ERRATA).
        scope: ``"global"`` or ``"local"`` batch statistics.

    Forward:
        features (B, D), labels (B,) -> scalar (0 when fewer than 2 classes are present).

    C is the number of classes present: K vertices of a K-simplex restricted to C of them and
    re-centred by their own mean form a C-simplex, so the target stays reachable.
    """

    def __init__(
        self,
        num_classes: int,
        center: Literal["sample", "class"] = "sample",
        scope: Scope = "global",
    ) -> None:
        super().__init__()
        _check_choice("center", center, ("sample", "class"))
        _check_choice("scope", scope, ("global", "local"))
        self.num_classes = int(num_classes)
        self.center = center
        self.scope = scope

    def forward(self, features: Tensor, labels: Tensor) -> Tensor:
        """features (B, D), labels (B,) -> scalar."""
        world = NF.scope_world_size(self.scope)
        feats = NF.gather_for_scope(features, self.scope)
        labs = NF.gather_for_scope(labels, self.scope)
        means, _, _ = NF.present_class_means(feats, labs)
        if means.shape[0] < 2:
            return features.sum() * 0.0
        origin = feats.mean(dim=0) if self.center == "sample" else means.mean(dim=0)
        unit = F.normalize(means - origin, dim=1)
        return NF.scale_grad(NF.p2p_penalty(unit), world)


@LOSSES.register("p2p_classifier")
class P2PClassifierLoss(nn.Module):
    """AllNC's Peer-to-Peer loss on the classifier vectors (Eq. 11).

    ``L = 1/C^2 sum_ij (w_i . w_j - rho_ij)^2`` on the rows of the classifier, as printed: raw
    vectors, neither centred nor normalized, so the diagonal terms also pull every ``||w_i||``
    to 1 (a unit-norm, zero-mean simplex ETF is then the only zero). AllNC's Eq. 7 metric
    centres the classifier by its mean; ``center=True`` / ``normalize=True`` give that
    variant (normalized: only the angles are penalized).

    Args:
        center: subtract the mean classifier vector first.
        normalize: L2-normalize the rows first.

    Forward:
        head_weight (C, D) -> scalar.
    """

    def __init__(self, center: bool = False, normalize: bool = False) -> None:
        super().__init__()
        self.center = bool(center)
        self.normalize = bool(normalize)

    def forward(self, head_weight: Tensor) -> Tensor:
        """head_weight (C, D) -> scalar."""
        w = head_weight
        if self.center:
            w = w - w.mean(dim=0, keepdim=True)
        if self.normalize:
            w = F.normalize(w, dim=1)
        return NF.p2p_penalty(w)
