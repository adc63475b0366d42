"""Classification (logit) losses: cross-entropy and its long-tailed variants.

Every loss here is a ``LogitLoss``: ``loss(logits, labels, weight=None)`` with

* ``logits`` (N, C) or dense (N, C, H, W) (any number of trailing dimensions);
* ``labels`` (N,) or (N, H, W) class indices, ``ignore_index`` (default -100) marking elements
  that do not count;
* ``weight`` an optional per-class weight (C,) for this call (DRW passes it), multiplied with
  any class weight the loss fixes at construction (CB, GR, ``ce`` with ``weight``/``reweight``).

Reduction (the same for every loss): ``"none"`` returns ``w_{y_i} * l_i`` with the shape of
``labels`` (0 where ignored), ``"sum"`` its sum, ``"mean"`` divides that sum by
``sum_i w_{y_i}`` over non-ignored elements (``weighted_mean=True``, default: exactly
``F.cross_entropy``'s weighted mean) or by the number of non-ignored elements
(``weighted_mean=False``: the ``1/N sum_i w_{y_i} l_i`` that Cui et al., DisA appendix A and
AllNC Eq. 12 write). Without any class weight both are the plain mean. A batch with every
element ignored gives nan under ``"mean"``, as ``F.cross_entropy`` does.

Under DDP the weighted mean is the global batch's (attribute ``scope="global"``, default):
each rank divides its weighted sum by ``sum_i w_{y_i}`` over all ranks divided by the world
size, so that the average over ranks that DDP takes (of the values and of the gradients) is
``sum_all w l / sum_all w``; a rank's own value is then its share, not its local mean.
``scope="local"`` divides by the rank's own weights (what per-GPU code does).

Class counts (C,) come at construction and are kept as a (non-persistent) buffer
``class_counts``; losses that use them also take ``class_counts=`` per call, which overrides
the buffer for that call. Float16/bfloat16 logits are computed in float32 (autocast is switched
off inside the loss); float64 stays float64. No state changes between calls.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from nclt.errors import ConfigError
from nclt.losses import LOSSES
from nclt.losses import functional as LF

__all__ = [
    "ARBLoss",
    "BalancedSoftmaxLoss",
    "ClassBalancedLoss",
    "CrossEntropyLoss",
    "FocalLoss",
    "GeneralizedReweightLoss",
    "LDAMLoss",
    "LogitAdjustedLoss",
    "LogitLoss",
    "MSELoss",
]

CountsLike = Tensor | Sequence[float] | Sequence[int]
PerElement = Callable[[Tensor, Tensor, Tensor], Tensor]

_LOW_PRECISION = (torch.float16, torch.bfloat16)
_REDUCTIONS = ("mean", "sum", "none")


def _as_counts(class_counts: CountsLike | None, positive: bool, owner: str) -> Tensor | None:
    """Validate counts once at construction: 1-D, finite, >= 0 (> 0 when ``positive``)."""
    if class_counts is None:
        return None
    counts = torch.as_tensor(class_counts).detach()
    if counts.dim() != 1 or counts.numel() == 0:
        raise ConfigError(
            f"{owner}: class_counts must be a non-empty (C,) vector, got shape "
            f"{tuple(counts.shape)}"
        )
    counts = counts.to(torch.float64) if counts.is_floating_point() else counts.to(torch.int64)
    as_float = counts.to(torch.float64)
    if not bool(torch.isfinite(as_float).all()) or bool((as_float < 0).any()):
        raise ConfigError(f"{owner}: class_counts must be finite and non-negative")
    if positive and bool((as_float <= 0).any()):
        raise ConfigError(f"{owner}: every class needs a positive count (got a zero)")
    if float(as_float.sum()) <= 0:
        raise ConfigError(f"{owner}: class_counts sum to zero")
    return counts.clone()


def _no_autocast(device_type: str) -> contextlib.AbstractContextManager[Any]:
    available = getattr(torch.amp, "is_autocast_available", None)
    if available is not None and not available(device_type):
        return contextlib.nullcontext()
    return torch.autocast(device_type=device_type, enabled=False)


class LogitLoss(nn.Module):
    """Base of the classification losses: flattening, ignore_index, weights, reduction.

    Subclasses compute per-element losses on flattened logits (M, C); this class handles the
    rest identically for all of them (see the module docstring for the reduction rule).

    Args:
        class_counts: training samples per class (C,), or None for losses that do not use it.
        ignore_index: label value of elements that do not count.
        reduction: ``"mean"``, ``"sum"`` or ``"none"``.
        weighted_mean: with ``"mean"``, divide by the sum of element weights (True,
            F.cross_entropy) or by the number of non-ignored elements (False).
        counts_positive: require every count > 0 (losses that divide by n_c).
    """

    class_counts: Tensor | None
    scope: Literal["global", "local"] = "global"  # weighted-mean denominator: global or local batch

    def __init__(
        self,
        class_counts: CountsLike | None = None,
        *,
        ignore_index: int = -100,
        reduction: LF.Reduction = "mean",
        weighted_mean: bool = True,
        counts_positive: bool = False,
    ) -> None:
        super().__init__()
        if reduction not in _REDUCTIONS:
            raise ConfigError(f"reduction must be one of {_REDUCTIONS}, got {reduction!r}")
        self.ignore_index = ignore_index
        self.reduction: LF.Reduction = reduction
        self.weighted_mean = weighted_mean
        counts = _as_counts(class_counts, counts_positive, type(self).__name__)
        self.register_buffer("class_counts", counts, persistent=False)

    def _counts(
        self, override: CountsLike | None, num_classes: int, device: torch.device
    ) -> Tensor:
        """The counts for this call: ``override`` if given, else the buffer; shape-checked."""
        counts = override if override is not None else self.class_counts
        if counts is None:
            raise ConfigError(
                f"{type(self).__name__} needs class_counts (at construction or per call)"
            )
        counts = torch.as_tensor(counts, device=device)
        if tuple(counts.shape) != (num_classes,):
            raise ConfigError(
                f"{type(self).__name__}: class_counts has shape "
                f"{tuple(counts.shape)} but the logits have {num_classes} classes"
            )
        return counts

    @staticmethod
    def _class_vector(vec: Tensor, num_classes: int, what: str) -> Tensor:
        if tuple(vec.shape) != (num_classes,):
            raise ConfigError(f"{what} must have shape ({num_classes},), got {tuple(vec.shape)}")
        return vec

    def _compute(
        self,
        logits: Tensor,
        labels: Tensor,
        weight: Tensor | None,
        per_element: PerElement,
        class_weight: Callable[[int, torch.device], Tensor | None] | None = None,
    ) -> Tensor:
        """Shared pipeline. ``per_element(z (M, C), y (M,), valid (M,)) -> (M,)`` gets labels
        where ignored entries are replaced by class 0; they are masked out afterwards."""
        with _no_autocast(logits.device.type):
            z, y = LF.flatten_logits(logits, labels)
            if z.dtype in _LOW_PRECISION:
                z = z.float()
            num_classes = z.shape[1]
            valid = y != self.ignore_index
            y_safe = torch.where(valid, y, torch.zeros_like(y))
            loss = per_element(z, y_safe, valid)
            cw = class_weight(num_classes, z.device) if class_weight is not None else None
            if weight is not None:
                w = self._class_vector(
                    torch.as_tensor(weight, device=z.device), num_classes, "weight"
                )
                cw = w if cw is None else cw.to(z.dtype) * w.to(z.dtype)
            sample_weight = None if cw is None else cw.to(z.dtype)[y_safe]
            out = LF.reduce_loss(
                loss, valid, sample_weight, self.reduction, self.weighted_mean, self.scope
            )
            return out.reshape(labels.shape) if self.reduction == "none" else out

    def extra_repr(self) -> str:
        return f"reduction={self.reduction!r}, ignore_index={self.ignore_index}"


def _cross_entropy(z: Tensor, y: Tensor, valid: Tensor) -> Tensor:
    return F.cross_entropy(z, y, reduction="none")


@LOSSES.register("ce")
class CrossEntropyLoss(LogitLoss):
    """Softmax cross-entropy, optionally with fixed or count-derived class weights.

    ``l_i = -log softmax(z_i)_{y_i}``, weighted by ``w_{y_i}`` where ``w`` is the product of
    ``weight`` (fixed), the re-weighting from class counts (``reweight``) and the per-call
    ``weight``. The mean is the weighted mean of F.cross_entropy (``weighted_mean=True``).

    Args:
        weight: fixed per-class weights (C,), or None.
        class_counts: training samples per class (C,); needed when ``reweight`` is set.
        reweight: None, or ``"inverse"`` (w ∝ 1/n_c), ``"effective"`` (w ∝ (1-beta)/(1-beta^n_c),
            Cui et al. 2019) or ``"power"`` (w ∝ n_c^-power), each normalized to sum to C
            (see ``functional.class_weights``).
        beta: effective-number parameter (``reweight="effective"``). Default 0.999 as DisA's
            appendix A; LDAM-DRW's DRW uses 0.9999.
        power: exponent of ``reweight="power"``.
        ignore_index, reduction, weighted_mean: see ``LogitLoss``.

    Forward:
        logits (N, C) or (N, C, H, W), labels (N,) or (N, H, W), weight (C,) or None,
        class_counts (C,) or None (overrides the buffer for the re-weighting of this call)
        -> scalar, or per-element values shaped like labels with ``reduction="none"``.

    With no weight at all this is ``F.cross_entropy``.
    """

    weight: Tensor | None

    def __init__(
        self,
        weight: Tensor | Sequence[float] | None = None,
        class_counts: CountsLike | None = None,
        reweight: Literal["inverse", "effective", "power"] | None = None,
        beta: float = 0.999,
        power: float = 1.0,
        *,
        ignore_index: int = -100,
        reduction: LF.Reduction = "mean",
        weighted_mean: bool = True,
    ) -> None:
        super().__init__(
            class_counts,
            ignore_index=ignore_index,
            reduction=reduction,
            weighted_mean=weighted_mean,
            counts_positive=reweight is not None,
        )
        if reweight not in (None, "inverse", "effective", "power"):
            raise ConfigError(
                f"reweight must be None, 'inverse', 'effective' or 'power', got {reweight!r}"
            )
        if reweight is not None and self.class_counts is None:
            raise ConfigError(f"reweight={reweight!r} needs class_counts")
        if reweight == "effective" and not 0.0 <= beta < 1.0:
            raise ConfigError(f"beta must lie in [0, 1), got {beta}")
        self.reweight = reweight
        self.beta = beta
        self.power = power
        fixed = None if weight is None else torch.as_tensor(weight, dtype=torch.float64)
        self.register_buffer("weight", fixed, persistent=False)

    def _class_weight(
        self, counts: CountsLike | None
    ) -> Callable[[int, torch.device], Tensor | None]:
        def build(num_classes: int, device: torch.device) -> Tensor | None:
            w: Tensor | None = None
            if self.reweight is not None:
                n = self._counts(counts, num_classes, device)
                w = LF.class_weights(n, self.reweight, beta=self.beta, power=self.power)
            if self.weight is not None:
                fixed = self._class_vector(self.weight, num_classes, "weight (construction)")
                w = fixed if w is None else w * fixed.to(w.dtype)
            return w

        return build

    def forward(
        self,
        logits: Tensor,
        labels: Tensor,
        weight: Tensor | None = None,
        class_counts: CountsLike | None = None,
    ) -> Tensor:
        """logits (N, C[, H, W]), labels (N[, H, W]), weight (C,) -> scalar (or per element)."""
        return self._compute(
            logits, labels, weight, _cross_entropy, self._class_weight(class_counts)
        )

    def extra_repr(self) -> str:
        return f"reweight={self.reweight!r}, {super().extra_repr()}"


@LOSSES.register("gr")
class GeneralizedReweightLoss(CrossEntropyLoss):
    """Generalized re-weighting (GR): cross-entropy with class weights ∝ n_c^(-rho).

    AllNC (Sec. V-B) uses "Generalized Re-weighting [45]" as its re-balancing loss L_re in
    GBBN (Eq. 12) and gives neither the formula nor the exponent; [45] is DisAlign (Zhang et
    al., CVPR 2021), whose weights are ``w_c ∝ (1 / r_c)^rho`` with r_c the class frequency.

    Open choices (made here, not by the paper):

    * Normalization: ``w_c = C * n_c^-rho / sum_k n_k^-rho`` (weights sum to C, mean 1). This
      is the normalization of DisAlign's released code and of Cui et al.'s class-balanced
      weights, keeps rho=0 exactly cross-entropy, and keeps the loss on the scale of the CE term
      it is mixed with in GBBN (eta * L_ce + (1 - eta) * L_re). Frequencies r_c or counts n_c
      give the same normalized weights.
    * Default exponent ``rho = 1.0`` (inverse frequency): AllNC does not state it. DisAlign's
      segmentation code uses 0.3; set ``rho`` in the config to match a paper.
    * Mean: F.cross_entropy's weighted mean (``weighted_mean=True``). AllNC Eq. 12 divides by
      N, i.e. ``weighted_mean=False``; under a long-tailed batch that is a much smaller loss
      (sum_i w_{y_i} / N < 1), which changes the CE/GR balance of Eq. 12.

    Args:
        class_counts: training samples per class (C,), all positive.
        rho: the exponent; 0 gives cross-entropy, 1 inverse-frequency weights.
        weight: extra fixed per-class weights (C,), or None.
        ignore_index, reduction, weighted_mean: see ``LogitLoss``.

    Forward: as ``CrossEntropyLoss`` (``class_counts=`` per call overrides).
    """

    def __init__(
        self,
        class_counts: CountsLike,
        rho: float = 1.0,
        weight: Tensor | Sequence[float] | None = None,
        *,
        ignore_index: int = -100,
        reduction: LF.Reduction = "mean",
        weighted_mean: bool = True,
    ) -> None:
        super().__init__(
            weight,
            class_counts,
            reweight="power",
            power=rho,
            ignore_index=ignore_index,
            reduction=reduction,
            weighted_mean=weighted_mean,
        )
        self.rho = rho


@LOSSES.register("focal")
class FocalLoss(LogitLoss):
    """Softmax focal loss ``-(1 - p_y)^gamma log p_y`` (Lin et al., ICCV 2017).

    As DisA's appendix A (Eq. 15) writes it, with DisA's gamma = 2 as the default. gamma=0 is
    cross-entropy.

    Args:
        gamma: focusing parameter, >= 0.
        class_counts: accepted so that builders can inject it uniformly; unused.
        ignore_index, reduction, weighted_mean: see ``LogitLoss``.

    Forward:
        logits (N, C[, H, W]), labels (N[, H, W]), weight (C,) or None -> scalar (or per
        element). ``weight`` multiplies each element's loss by w_y (alpha-balancing).
    """

    def __init__(
        self,
        gamma: float = 2.0,
        class_counts: CountsLike | None = None,
        *,
        ignore_index: int = -100,
        reduction: LF.Reduction = "mean",
        weighted_mean: bool = True,
    ) -> None:
        super().__init__(
            class_counts,
            ignore_index=ignore_index,
            reduction=reduction,
            weighted_mean=weighted_mean,
        )
        if gamma < 0:
            raise ConfigError(f"gamma must be >= 0, got {gamma}")
        self.gamma = gamma

    def forward(self, logits: Tensor, labels: Tensor, weight: Tensor | None = None) -> Tensor:
        """logits (N, C[, H, W]), labels (N[, H, W]), weight (C,) -> scalar (or per element)."""
        gamma = self.gamma
        return self._compute(
            logits, labels, weight, lambda z, y, valid: LF.softmax_focal(z, y, gamma)
        )

    def extra_repr(self) -> str:
        return f"gamma={self.gamma}, {super().extra_repr()}"


@LOSSES.register("cb")
class ClassBalancedLoss(LogitLoss):
    """Class-balanced loss with effective-number weights (Cui et al., CVPR 2019).

    Class weights ``w_c = (1 - beta) / (1 - beta^{n_c})`` (inverse effective number),
    normalized so that ``sum_c w_c = C`` (Cui et al.'s normalization; ``functional.
    class_weights(kind="effective")``). The per-element loss is, by ``form``:

    * ``"softmax"``: ``-w_y log softmax(z)_y`` (DisA appendix A, Eq. 17);
    * ``"sigmoid"``: ``w_y sum_c BCE(z_c, [c = y])``, one-vs-all sigmoid with one-hot targets
      summed over the C classes (Cui et al. Sec. 4; DisA Eq. 16 prints a garbled form of it);
    * ``"focal"``: ``w_y sum_c -(1 - p^t_c)^gamma log p^t_c``, the sigmoid focal loss of Cui et
      al. (p^t_c = sigmoid(z_c) for the true class, sigmoid(-z_c) otherwise).

    The mean is F.cross_entropy's weighted mean ``sum_i w_{y_i} l_i / sum_i w_{y_i}``
    (``weighted_mean=True``, as LDAM-DRW's DRW); Cui et al. and DisA Eq. 16-17 divide by the
    batch size instead: ``weighted_mean=False``.

    beta=0 gives all weights 1: ``"softmax"`` is then cross-entropy, ``"sigmoid"`` plain
    one-vs-all BCE and ``"focal"`` plain sigmoid focal loss.

    Args:
        class_counts: training samples per class (C,), all positive.
        form: ``"softmax"``, ``"sigmoid"`` or ``"focal"``.
        beta: in [0, 1); default 0.999 (DisA appendix A).
        gamma: focusing parameter of ``form="focal"`` (default 2, DisA); unused otherwise.
        ignore_index, reduction, weighted_mean: see ``LogitLoss``.

    Forward:
        logits (N, C[, H, W]), labels (N[, H, W]), weight (C,) or None (multiplied with the
        class-balanced weights), class_counts (C,) or None (overrides the buffer) -> scalar.
    """

    def __init__(
        self,
        class_counts: CountsLike,
        form: Literal["softmax", "sigmoid", "focal"] = "softmax",
        beta: float = 0.999,
        gamma: float = 2.0,
        *,
        ignore_index: int = -100,
        reduction: LF.Reduction = "mean",
        weighted_mean: bool = True,
    ) -> None:
        super().__init__(
            class_counts,
            ignore_index=ignore_index,
            reduction=reduction,
            weighted_mean=weighted_mean,
            counts_positive=True,
        )
        if self.class_counts is None:
            raise ConfigError("ClassBalancedLoss needs class_counts")
        if form not in ("softmax", "sigmoid", "focal"):
            raise ConfigError(f"form must be 'softmax', 'sigmoid' or 'focal', got {form!r}")
        if not 0.0 <= beta < 1.0:
            raise ConfigError(f"beta must lie in [0, 1), got {beta}")
        if gamma < 0:
            raise ConfigError(f"gamma must be >= 0, got {gamma}")
        self.form = form
        self.beta = beta
        self.gamma = gamma

    def forward(
        self,
        logits: Tensor,
        labels: Tensor,
        weight: Tensor | None = None,
        class_counts: CountsLike | None = None,
    ) -> Tensor:
        """logits (N, C[, H, W]), labels (N[, H, W]), weight (C,) -> scalar (or per element)."""

        def class_weight(num_classes: int, device: torch.device) -> Tensor:
            n = self._counts(class_counts, num_classes, device)
            return LF.class_weights(n, "effective", beta=self.beta)

        per_element: PerElement
        if self.form == "softmax":
            per_element = _cross_entropy
        else:
            gamma = self.gamma if self.form == "focal" else 0.0

            def per_element(z: Tensor, y: Tensor, valid: Tensor) -> Tensor:
                return LF.sigmoid_focal(z, y, gamma)

        return self._compute(logits, labels, weight, per_element, class_weight)

    def extra_repr(self) -> str:
        return f"form={self.form!r}, beta={self.beta}, gamma={self.gamma}, {super().extra_repr()}"


@LOSSES.register("ldam")
class LDAMLoss(LogitLoss):
    """Label-distribution-aware margin loss (Cao et al., NeurIPS 2019).

    ``l_i = CE(s * (z_i - Delta_{y_i} e_{y_i}), y_i)`` with ``Delta_c = C' / n_c^(1/4)`` and
    C' chosen so that the largest margin (rarest class) is ``max_margin``. That is
    ``-log( e^{s(z_y - Delta_y)} / (e^{s(z_y - Delta_y)} + sum_{j != y} e^{s z_j}) )``; DisA's
    appendix A Eq. 13 writes the denominator sum over all k', a misprint for j != y. LDAM-DRW
    pairs it with a cosine (normalized) classifier head; the loss takes whatever logits it
    gets. max_margin=0 and scale=1 give cross-entropy.

    Args:
        class_counts: training samples per class (C,), all positive.
        max_margin: margin of the rarest class (0.5 in LDAM-DRW).
        scale: s, applied to all logits after the margin (30 in LDAM-DRW).
        ignore_index, reduction, weighted_mean: see ``LogitLoss``.

    Forward:
        logits (N, C[, H, W]), labels (N[, H, W]), weight (C,) or None (DRW weights; the mean
        is F.cross_entropy's weighted mean, as LDAM-DRW), class_counts (C,) or None
        (overrides the buffer) -> scalar (or per element).
    """

    def __init__(
        self,
        class_counts: CountsLike,
        max_margin: float = 0.5,
        scale: float = 30.0,
        *,
        ignore_index: int = -100,
        reduction: LF.Reduction = "mean",
        weighted_mean: bool = True,
    ) -> None:
        super().__init__(
            class_counts,
            ignore_index=ignore_index,
            reduction=reduction,
            weighted_mean=weighted_mean,
            counts_positive=True,
        )
        if self.class_counts is None:
            raise ConfigError("LDAMLoss needs class_counts")
        if max_margin < 0 or scale <= 0:
            raise ConfigError(f"need max_margin >= 0 and scale > 0, got {max_margin}, {scale}")
        self.max_margin = max_margin
        self.scale = scale

    def margins(self, class_counts: CountsLike | None = None) -> Tensor:
        """The margins Delta (C,) used for these counts (float64)."""
        counts = class_counts if class_counts is not None else self.class_counts
        assert counts is not None
        return LF.ldam_margins(torch.as_tensor(counts), self.max_margin)

    def forward(
        self,
        logits: Tensor,
        labels: Tensor,
        weight: Tensor | None = None,
        class_counts: CountsLike | None = None,
    ) -> Tensor:
        """logits (N, C[, H, W]), labels (N[, H, W]), weight (C,) -> scalar (or per element)."""

        def per_element(z: Tensor, y: Tensor, valid: Tensor) -> Tensor:
            n = self._counts(class_counts, z.shape[1], z.device)
            margins = LF.ldam_margins(n, self.max_margin)
            return F.cross_entropy(LF.margin_logits(z, y, margins, self.scale), y, reduction="none")

        return self._compute(logits, labels, weight, per_element)

    def extra_repr(self) -> str:
        return f"max_margin={self.max_margin}, scale={self.scale}, {super().extra_repr()}"


@LOSSES.register("balanced_softmax")
class BalancedSoftmaxLoss(LogitLoss):
    """Balanced softmax: cross-entropy on ``z + tau * log(prior)`` (Ren et al., NeurIPS 2020).

    ``prior_c = n_c / sum_k n_k``. With tau=1 this is ``-log(n_y e^{z_y} / sum_k n_k e^{z_k})``
    (DisA appendix A, Eq. 14); with a free tau it is the logit-adjusted loss of Menon et al.
    (ICLR 2021). tau=0 gives cross-entropy. It equals ``arb`` with global counts when tau=1.
    A class with n_c = 0 drops out of every denominator (and a label of that class costs inf).

    Args:
        class_counts: training samples per class (C,), non-negative.
        tau: strength of the shift.
        ignore_index, reduction, weighted_mean: see ``LogitLoss``.

    Forward:
        logits (N, C[, H, W]), labels (N[, H, W]), weight (C,) or None, class_counts (C,) or
        None (overrides the buffer) -> scalar (or per element).
    """

    def __init__(
        self,
        class_counts: CountsLike,
        tau: float = 1.0,
        *,
        ignore_index: int = -100,
        reduction: LF.Reduction = "mean",
        weighted_mean: bool = True,
    ) -> None:
        super().__init__(
            class_counts,
            ignore_index=ignore_index,
            reduction=reduction,
            weighted_mean=weighted_mean,
        )
        if self.class_counts is None:
            raise ConfigError(f"{type(self).__name__} needs class_counts")
        self.tau = tau

    def forward(
        self,
        logits: Tensor,
        labels: Tensor,
        weight: Tensor | None = None,
        class_counts: CountsLike | None = None,
    ) -> Tensor:
        """logits (N, C[, H, W]), labels (N[, H, W]), weight (C,) -> scalar (or per element)."""

        def per_element(z: Tensor, y: Tensor, valid: Tensor) -> Tensor:
            n = self._counts(class_counts, z.shape[1], z.device)
            shift = LF.log_prior_shift(n, self.tau).to(z.dtype)
            return F.cross_entropy(z + shift, y, reduction="none")

        return self._compute(logits, labels, weight, per_element)

    def extra_repr(self) -> str:
        return f"tau={self.tau}, {super().extra_repr()}"


@LOSSES.register("logit_adjust")
class LogitAdjustedLoss(BalancedSoftmaxLoss):
    """Logit-adjusted loss (Menon et al., ICLR 2021): CE on ``z + tau * log(prior)``.

    The same loss as ``BalancedSoftmaxLoss`` (registered separately under the paper's name);
    tau=1 is balanced softmax, tau=0 cross-entropy. BCL uses it with tau=1.
    """


@LOSSES.register("arb")
class ARBLoss(LogitLoss):
    """Attraction-Repulsion-Balanced loss (Xie et al., ARB-Loss Eq. 14).

    ``l_i = -log( e^{z_{i,y}} / sum_j (n_j / n_y) e^{z_{i,j}} )`` (computed as
    ``functional.arb_log_denominator - z_y``). For each classifier vector w_i its gradient then
    has the attraction term and every repulsion term with the same coefficient n_i (Eq. 15,
    read with "j in pi(k)", see ERRATA).

    Counts:

    * ``counts="batch"`` (the paper's CIFAR setting, default): n_j is the number of
      non-ignored elements of class j in the current batch; under DDP with
      ``scope="global"`` (default) in the global batch (``nclt.dist.all_reduce_sum``), with
      ``scope="local"`` this rank's. A class absent from the batch has n_j = 0 and drops out
      of the denominator exactly: its logit does not affect the loss. Under MixUp give the
      un-mixed labels (the objective evaluates y_a and y_b, which have the same counts).
    * ``counts="global"`` (the paper's large-scale setting): n_j = the training counts given
      at construction. Then ARB equals ``balanced_softmax`` with tau=1 exactly (the
      1/n_y factor and the normalization of the prior cancel).
    * ``class_counts=`` per call overrides both.

    Reduction: Eq. 14 sums over the batch; ``reduction="mean"`` (default) divides the loss and
    its gradients by b (the number of non-ignored elements), so ``reduction="sum"`` is the
    paper's scale (a learning rate b times smaller).

    clamp: the official code clamps the logits to [-30, 30] before the loss; ``clamp=None``
    (default) follows the paper (no clamp), ``clamp=30.0`` the code. Clamped logits get no
    gradient.

    With equal counts for all classes (e.g. a class-balanced batch) ARB is cross-entropy.

    Args:
        class_counts: training samples per class (C,); required for ``counts="global"``.
        counts: ``"batch"`` or ``"global"``.
        scope: ``"global"`` or ``"local"``, the batch over which batch counts are taken.
        clamp: None, or a bound c > 0 applied as ``z.clamp(-c, c)``.
        ignore_index, reduction, weighted_mean: see ``LogitLoss``.

    Forward:
        logits (N, C[, H, W]), labels (N[, H, W]), weight (C,) or None, class_counts (C,) or
        None -> scalar (or per element).
    """

    def __init__(
        self,
        class_counts: CountsLike | None = None,
        counts: Literal["batch", "global"] = "batch",
        scope: Literal["global", "local"] = "global",
        clamp: float | None = None,
        *,
        ignore_index: int = -100,
        reduction: LF.Reduction = "mean",
        weighted_mean: bool = True,
    ) -> None:
        super().__init__(
            class_counts,
            ignore_index=ignore_index,
            reduction=reduction,
            weighted_mean=weighted_mean,
        )
        if counts not in ("batch", "global"):
            raise ConfigError(f"counts must be 'batch' or 'global', got {counts!r}")
        if scope not in ("global", "local"):
            raise ConfigError(f"scope must be 'global' or 'local', got {scope!r}")
        if counts == "global" and self.class_counts is None:
            raise ConfigError("ARBLoss(counts='global') needs class_counts")
        if clamp is not None and clamp <= 0:
            raise ConfigError(f"clamp must be positive or None, got {clamp}")
        self.counts = counts
        self.scope = scope
        self.clamp = clamp

    def forward(
        self,
        logits: Tensor,
        labels: Tensor,
        weight: Tensor | None = None,
        class_counts: CountsLike | None = None,
    ) -> Tensor:
        """logits (N, C[, H, W]), labels (N[, H, W]), weight (C,) -> scalar (or per element)."""

        def per_element(z: Tensor, y: Tensor, valid: Tensor) -> Tensor:
            num_classes = z.shape[1]
            if self.clamp is not None:
                z = z.clamp(-self.clamp, self.clamp)
            if class_counts is not None or self.counts == "global":
                n = self._counts(class_counts, num_classes, z.device)
            else:
                n = LF.batch_class_counts(y, num_classes, valid, self.scope)
                # A batch with every element ignored counts nothing; use ones there so that the
                # (masked) values and their gradients stay finite.
                n = torch.where(n.sum() > 0, n, torch.ones_like(n))
            log_den = LF.arb_log_denominator(z, y, n)
            return log_den - z.gather(1, y.unsqueeze(1)).squeeze(1)

        return self._compute(logits, labels, weight, per_element)

    def extra_repr(self) -> str:
        return (
            f"counts={self.counts!r}, scope={self.scope!r}, clamp={self.clamp}, "
            f"{super().extra_repr()}"
        )


@LOSSES.register("mse")
class MSELoss(LogitLoss):
    """Squared error to one-hot targets, ``l_i = 1/2 ||z_i - e_{y_i}||^2``.

    The MSE loss of INC (Eq. 7, ``1/(2n) ||Y - Z||_F^2``, and Table 2): the mean over
    elements of half the squared distance summed over classes. ``F.mse_loss(z, onehot)``
    (mean over N * C entries) equals this times 2 / C.

    Args:
        class_counts: accepted so that builders can inject it uniformly; unused.
        ignore_index, reduction, weighted_mean: see ``LogitLoss``.

    Forward:
        logits (N, C[, H, W]), labels (N[, H, W]), weight (C,) or None -> scalar (or per
        element).
    """

    def __init__(
        self,
        class_counts: CountsLike | None = None,
        *,
        ignore_index: int = -100,
        reduction: LF.Reduction = "mean",
        weighted_mean: bool = True,
    ) -> None:
        super().__init__(
            class_counts,
            ignore_index=ignore_index,
            reduction=reduction,
            weighted_mean=weighted_mean,
        )

    def forward(self, logits: Tensor, labels: Tensor, weight: Tensor | None = None) -> Tensor:
        """logits (N, C[, H, W]), labels (N[, H, W]), weight (C,) -> scalar (or per element)."""
        return self._compute(
            logits, labels, weight, lambda z, y, valid: LF.one_hot_squared_error(z, y)
        )
