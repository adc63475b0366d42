"""Pure tensor math shared by the loss modules (no state, no registry)."""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from nclt import dist

# ---------------------------------------------------------------------------------------------
# Logit losses: shapes, class weights, per-element losses and reductions.
# Every per-element function below takes flattened logits (M, C) and labels (M,) holding valid
# class indices (the caller replaces ignored labels by a valid index and masks them afterwards),
# and returns unreduced values (M,).
# ---------------------------------------------------------------------------------------------

Reduction = Literal["mean", "sum", "none"]
WeightKind = Literal["inverse", "effective", "power"]


def flatten_logits(logits: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
    """Flatten dense logits to one row per element.

    Args:
        logits: (N, C) or (N, C, d1, ..., dk), e.g. (N, C, H, W) for segmentation.
        labels: (N,) or (N, d1, ..., dk).

    Returns:
        logits (M, C) and labels (M,) with M = N * d1 * ... * dk, rows in the order of
        ``labels.reshape(-1)``.
    """
    if logits.dim() < 2:
        raise ValueError(f"logits must be (N, C) or (N, C, ...), got shape {tuple(logits.shape)}")
    expected = (logits.shape[0], *logits.shape[2:])
    if tuple(labels.shape) != expected:
        raise ValueError(
            f"labels of shape {tuple(labels.shape)} do not match logits of shape "
            f"{tuple(logits.shape)} (expected {expected})"
        )
    num_classes = logits.shape[1]
    if logits.dim() == 2:
        return logits, labels
    return logits.movedim(1, -1).reshape(-1, num_classes), labels.reshape(-1)


def class_weights(
    class_counts: Tensor,
    kind: WeightKind = "inverse",
    beta: float = 0.999,
    power: float = 1.0,
) -> Tensor:
    """Per-class loss weights from class counts, normalized to sum to C (mean weight 1).

    * ``"inverse"``: w_c proportional to 1 / n_c.
    * ``"power"``: w_c proportional to n_c^(-power) (generalized re-weighting, Zhang et al. 2021);
      power=1 is ``"inverse"``, power=0 gives all ones.
    * ``"effective"``: w_c proportional to 1 / E_{n_c} = (1 - beta) / (1 - beta^{n_c}), the
      effective number of samples of Cui et al. (CVPR 2019); beta=0 gives all ones and
      beta -> 1 tends to ``"inverse"``.

    The raw weights are computed in float64 (``1 - beta^n`` loses digits in float32 for beta
    near 1), then scaled by C / sum(raw) as Cui et al. and LDAM-DRW's DRW do.

    Args:
        class_counts: (C,) positive counts.
        kind: ``"inverse"``, ``"effective"`` or ``"power"``.
        beta: effective-number parameter in [0, 1).
        power: exponent of ``"power"``.

    Returns:
        (C,) float64 weights summing to C.
    """
    n = class_counts.to(torch.float64)
    if kind == "inverse":
        raw = n.reciprocal()
    elif kind == "power":
        raw = n.pow(-power)
    elif kind == "effective":
        if not 0.0 <= beta < 1.0:
            raise ValueError(f"beta must lie in [0, 1), got {beta}")
        beta_t = torch.tensor(beta, dtype=n.dtype, device=n.device)
        raw = (1.0 - beta) / (1.0 - torch.pow(beta_t, n))
    else:
        raise ValueError(f"unknown class weight kind {kind!r}; use inverse, effective or power")
    return raw * (n.numel() / raw.sum())


def log_prior_shift(class_counts: Tensor, tau: float = 1.0) -> Tensor:
    """The logit shift ``tau * log(n_c / sum_k n_k)`` of balanced softmax / logit adjustment.

    A class with n_c = 0 gets -inf (it drops out of every softmax denominator).

    Args:
        class_counts: (C,) non-negative counts.
        tau: strength; 0 gives zeros.

    Returns:
        (C,) float64 shift.
    """
    n = class_counts.to(torch.float64)
    if tau == 0:
        return torch.zeros_like(n)
    return tau * (n / n.sum()).log()


def ldam_margins(class_counts: Tensor, max_margin: float = 0.5) -> Tensor:
    """LDAM margins ``Delta_c = C' / n_c^(1/4)`` with C' set so that ``max_c Delta_c = max_margin``.

    Equivalently ``Delta_c = max_margin * (min_k n_k / n_c)^(1/4)`` (Cao et al., NeurIPS 2019).

    Args:
        class_counts: (C,) positive counts.
        max_margin: the margin of the rarest class.

    Returns:
        (C,) margins, float64.
    """
    n = class_counts.to(torch.float64)
    return max_margin * (n.min() / n).pow(0.25)


def margin_logits(logits: Tensor, labels: Tensor, margins: Tensor, scale: float = 1.0) -> Tensor:
    """``scale * (z - Delta_y e_y)``: subtract the true class's margin from its logit, then scale.

    Args:
        logits: (M, C).
        labels: (M,) class indices.
        margins: (C,) per-class margins (no gradient is taken through them).
        scale: the factor s applied to all logits after the subtraction.

    Returns:
        (M, C).
    """
    index = labels.unsqueeze(1)
    delta = margins.to(logits.dtype)[labels].unsqueeze(1)
    return scale * logits.scatter_add(1, index, -delta)


def arb_log_denominator(logits: Tensor, labels: Tensor, class_counts: Tensor) -> Tensor:
    """``log sum_j (n_j / n_y) exp(z_j)``, the log-denominator of ARB-Loss (Xie et al., Eq. 14).

    Classes with n_j = 0 drop out of the sum exactly (their term is exp(-inf) = 0). The value
    is finite whenever n_y > 0.

    Args:
        logits: (M, C).
        labels: (M,) class indices y.
        class_counts: (C,) non-negative counts n.

    Returns:
        (M,) so that the ARB loss of element i is ``arb_log_denominator(...)[i] - z_{i, y_i}``.
    """
    log_n = class_counts.to(logits.dtype).log()
    return torch.logsumexp(logits + log_n, dim=1) - log_n[labels]


def batch_class_counts(
    labels: Tensor,
    num_classes: int,
    valid: Tensor | None = None,
    scope: Literal["global", "local"] = "global",
) -> Tensor:
    """Number of (valid) elements per class in the batch; under DDP, in the global batch.

    Args:
        labels: (M,) class indices (entries where ``valid`` is False may hold any valid index).
        num_classes: C.
        valid: (M,) bool, or None when every element counts.
        scope: ``"global"`` sums the counts over ranks with ``nclt.dist.all_reduce_sum`` (a
            no-op on one process); ``"local"`` keeps this rank's counts.

    Returns:
        (C,) int64 counts (no gradient).
    """
    ones = torch.ones_like(labels) if valid is None else valid.to(labels.dtype)
    counts = torch.zeros(num_classes, dtype=labels.dtype, device=labels.device)
    counts = counts.scatter_add(0, labels, ones)
    if scope == "global":
        return dist.all_reduce_sum(counts)
    if scope != "local":
        raise ValueError(f"scope must be 'global' or 'local', got {scope!r}")
    return counts


def softmax_focal(logits: Tensor, labels: Tensor, gamma: float = 2.0) -> Tensor:
    """Softmax focal loss per element, ``-(1 - p_y)^gamma log p_y`` (Lin et al., ICCV 2017).

    Written as in DisA's appendix A (Eq. 15); gamma=0 is cross-entropy.

    Args:
        logits: (M, C).
        labels: (M,).
        gamma: focusing parameter, >= 0.

    Returns:
        (M,).
    """
    log_p = F.log_softmax(logits, dim=1).gather(1, labels.unsqueeze(1)).squeeze(1)
    if gamma == 0:
        return -log_p
    # 1 - p computed as -expm1(log p): exact near p = 1, where 1 - exp(log p) cancels.
    one_minus_p = (-torch.expm1(log_p)).clamp_min(0.0)
    return -one_minus_p.pow(gamma) * log_p


def sigmoid_focal(logits: Tensor, labels: Tensor, gamma: float = 0.0) -> Tensor:
    """One-vs-all sigmoid loss per element, summed over classes, with an optional focal factor.

    ``sum_c -(1 - p^t_c)^gamma log p^t_c`` with ``p^t_c = sigmoid(z^t_c)``, ``z^t_c = z_c`` for
    the true class and ``-z_c`` for the others (Cui et al., CVPR 2019, Sec. 4). gamma=0 is the
    binary cross-entropy against one-hot targets summed over the C classes.

    Args:
        logits: (M, C).
        labels: (M,).
        gamma: focusing parameter, >= 0.

    Returns:
        (M,).
    """
    targets = torch.zeros_like(logits).scatter_(1, labels.unsqueeze(1), 1.0)
    bce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    if gamma != 0:
        signed = logits * (2.0 * targets - 1.0)  # z^t
        # (1 - p^t)^gamma = sigmoid(-z^t)^gamma = exp(gamma * logsigmoid(-z^t)), stable for any z.
        bce = torch.exp(gamma * F.logsigmoid(-signed)) * bce
    return bce.sum(dim=1)


def one_hot_squared_error(logits: Tensor, labels: Tensor) -> Tensor:
    """``1/2 ||z - e_y||^2`` per element (the MSE loss of INC Eq. 7, per sample).

    Args:
        logits: (M, C).
        labels: (M,).

    Returns:
        (M,).
    """
    targets = torch.zeros_like(logits).scatter_(1, labels.unsqueeze(1), 1.0)
    return 0.5 * (logits - targets).pow(2).sum(dim=1)


def reduce_loss(
    loss: Tensor,
    valid: Tensor,
    sample_weight: Tensor | None = None,
    reduction: Reduction = "mean",
    weighted_mean: bool = True,
) -> Tensor:
    """Weight, mask and reduce per-element losses as ``F.cross_entropy`` does.

    Ignored elements contribute exactly 0 (whatever ``loss`` holds there, inf included).

    Args:
        loss: (M,) per-element losses.
        valid: (M,) bool, False for ignored elements.
        sample_weight: (M,) weight of each element (w_{y_i}), or None for ones.
        reduction: ``"none"`` returns ``w_i * loss_i`` (0 where ignored); ``"sum"`` their sum;
            ``"mean"`` divides that sum by ``sum_i w_i`` over valid elements when
            ``weighted_mean`` (F.cross_entropy's convention), else by the number of valid
            elements. A batch with no valid element gives nan under ``"mean"``, like
            F.cross_entropy.
        weighted_mean: see ``reduction``.

    Returns:
        A scalar, or (M,) for ``"none"``.
    """
    mask = valid.to(loss.dtype)
    w = mask if sample_weight is None else sample_weight.to(loss.dtype) * mask
    weighted = torch.where(valid, loss, torch.zeros_like(loss)) * w
    if reduction == "none":
        return weighted
    total = weighted.sum()
    if reduction == "sum":
        return total
    if reduction == "mean":
        return total / (w.sum() if weighted_mean else mask.sum())
    raise ValueError(f"reduction must be 'mean', 'sum' or 'none', got {reduction!r}")
