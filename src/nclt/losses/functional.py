"""Pure tensor math shared by the loss modules (no state, no registry)."""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from nclt import dist
from nclt.errors import ConfigError

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
            raise ConfigError(f"beta must lie in [0, 1), got {beta}")
        beta_t = torch.tensor(beta, dtype=n.dtype, device=n.device)
        raw = (1.0 - beta) / (1.0 - torch.pow(beta_t, n))
    else:
        raise ConfigError(f"unknown class weight kind {kind!r}; use inverse, effective or power")
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
        raise ConfigError(f"scope must be 'global' or 'local', got {scope!r}")
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
    scope: Literal["global", "local"] = "global",
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
        scope: under DDP, the weighted mean's denominator: ``"global"`` (default) divides by
            ``sum_i w_i`` over every rank / world size (one scalar all-reduce; DDP's average
            over ranks is then the global batch's weighted mean, value and gradient),
            ``"local"`` by this rank's. Only with ``sample_weight`` and ``weighted_mean``:
            otherwise the denominator is the rank's element count, equal on every rank.

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
        denom = w.sum() if weighted_mean else mask.sum()
        if sample_weight is not None and weighted_mean and scope == "global" and dist.is_dist():
            denom = dist.all_reduce_sum(denom.detach()) / dist.world_size()
        return total / denom
    raise ConfigError(f"reduction must be 'mean', 'sum' or 'none', got {reduction!r}")


# ---------------------------------------------------------------------------------------------
# Neural-collapse regularizers, geometry and contrastive losses (INC, AllNC, DisA, ETF-DR, BCL).
# The functions below see tensors that the loss modules (losses/regularizers.py, geometry.py,
# contrastive.py) have already gathered over ranks where the statistic is global; they do no
# communication themselves.
# ---------------------------------------------------------------------------------------------


def class_sums(features: Tensor, labels: Tensor, num_classes: int) -> tuple[Tensor, Tensor]:
    """Per-class feature sums and counts.

    Args:
        features: (B, D).
        labels: (B,) class indices in [0, K).
        num_classes: K.

    Returns:
        sums (K, D) (differentiable in ``features``) and counts (K,) in the features' dtype.
    """
    sums = features.new_zeros(num_classes, features.shape[1]).index_add(0, labels, features)
    counts = torch.bincount(labels, minlength=num_classes).to(features.dtype)
    return sums, counts


def class_means(features: Tensor, labels: Tensor, num_classes: int) -> tuple[Tensor, Tensor]:
    """Per-class means (K, D) (zero rows for absent classes) and counts (K,)."""
    sums, counts = class_sums(features, labels, num_classes)
    return sums / counts.clamp_min(1.0)[:, None], counts


def within_class_distance(
    features: Tensor, labels: Tensor, centres: Tensor, class_weight: Tensor
) -> Tensor:
    """``sum_i w_{y_i} ||h_i - c_{y_i}||^2`` (INC Eq. 13 with ``w_k = 1/n_k``).

    Args:
        features: (B, D).
        labels: (B,).
        centres: (K, D) class centres (batch means or learnable).
        class_weight: (K,) per-class weight, e.g. ``1/n_k``.

    Returns:
        Scalar sum over the batch (the caller divides by K for a class mean).
    """
    sq = (features - centres[labels]).pow(2).sum(dim=1)
    return (class_weight[labels] * sq).sum()


def min_angle_loss(vectors: Tensor, eps: float = 1e-6) -> Tensor:
    """INC Eq. 15 on class means: ``-1/C sum_k min_{k' != k} angle(mu_k - mu_C, mu_k' - mu_C)``.

    Args:
        vectors: (C, D) class means (C >= 2), centred here by their mean ``mu_C``.
        eps: the largest cosine is clamped to ``[-1 + eps, 1 - eps]`` before ``arccos``, so
            value and gradient stay finite when two means coincide or are opposite (the
            gradient is zero beyond the clamp; the official code uses eps = 1e-5).

    Returns:
        Scalar in ``[-pi, 0]``; ``-arccos(-1/(C-1))`` on a simplex ETF.
    """
    c = vectors.shape[0]
    unit = F.normalize(vectors - vectors.mean(dim=0, keepdim=True), dim=1)
    cos = unit @ unit.T
    # The diagonal (cos = 1) must never be the maximum: push it below any real cosine.
    cos = cos - 3.0 * torch.eye(c, dtype=cos.dtype, device=cos.device)
    largest = cos.max(dim=1).values.clamp(-1.0 + eps, 1.0 - eps)
    return -torch.acos(largest).mean()


def p2p_penalty(vectors: Tensor) -> Tensor:
    """AllNC Eq. 10/11: ``1/C^2 sum_ij (v_i . v_j - rho_ij)^2``, ``rho = C/(C-1) I - 1/(C-1)``.

    Args:
        vectors: (C, D), already centred and normalized as the caller's variant requires
            (C >= 2).

    Returns:
        Scalar, 0 exactly when the vectors form a unit simplex ETF.
    """
    c = vectors.shape[0]
    gram = vectors @ vectors.T
    eye = torch.eye(c, dtype=gram.dtype, device=gram.device)
    rho = c / (c - 1) * eye - 1.0 / (c - 1)
    return (gram - rho).pow(2).sum() / (c * c)


def dr_target_lengths(counts: Tensor) -> Tensor:
    """ETF-DR per-batch target lengths (Yang et al. 2022, ``produce_Ew``): (K,).

    Class ``c`` present in the batch gets ``sqrt((B / number of classes present) / n_c)``;
    absent classes get 1. With ``counts`` the dataset counts this is their global variant.
    """
    present = counts > 0
    total = counts.sum()
    gamma = total / present.sum().clamp_min(1)
    return torch.where(present, torch.sqrt(gamma / counts.clamp_min(1)), torch.ones_like(counts))


def dot_regression(features: Tensor, targets: Tensor) -> Tensor:
    """Per-sample DR loss ``1/2 (h . m - ||m|| ||h||)^2 / ||h||`` (DisA Eq. 19): (B,).

    ``||h||`` is a constant (detached, clamped at 1e-8) as in Yang et al.'s code, so the
    gradient is ``(h.m - ||m|| ||h||) m / ||h||``; the loss is 0 iff ``h`` is parallel to ``m``.

    Args:
        features: (B, D) features ``h``.
        targets: (B, D) target vectors ``m_{y_i}`` (their length sets the regression target).
    """
    h_len = features.detach().norm(dim=1).clamp_min(1e-8)
    m_len = targets.norm(dim=1)
    dot = (features * targets).sum(dim=1)
    per_sample: Tensor = 0.5 * (dot - m_len * h_len).pow(2) / h_len
    return per_sample


def sinkhorn_log(
    cost: Tensor,
    epsilon: float,
    iterations: int = 100,
    tol: float | None = 1e-6,
    check_every: int = 10,
    log_a: Tensor | None = None,
    log_b: Tensor | None = None,
) -> tuple[Tensor, int]:
    """Log-domain Sinkhorn for entropic OT: ``min_T <T, C> - eps H(T)``, ``T 1 = a, T^T 1 = b``.

    Works with scaled dual potentials ``alpha = f/eps``, ``beta = g/eps`` and
    ``log T_ij = -C_ij/eps + alpha_i + beta_j``; every update is a ``logsumexp``, so
    ``eps`` down to 1e-3 stays finite (the plain-domain kernel ``exp(-C/eps)`` underflows
    below eps ~ 0.02 in float32). Differentiable through the iterations if ``cost`` requires
    grad (callers that want only the envelope gradient pass ``cost.detach()``).

    Args:
        cost: (N, M).
        epsilon: entropic regularization ``eps > 0``.
        iterations: maximum number of (alpha, beta) updates.
        tol: stop when the row marginals match ``a`` to this max relative error (checked every
            ``check_every`` iterations; the column marginals are exact after each update).
            ``None`` runs exactly ``iterations`` updates (no host synchronisation).
        check_every: iterations between tolerance checks.
        log_a: (N,) log of the row marginal; uniform ``1/N`` if None.
        log_b: (M,) log of the column marginal; uniform ``1/M`` if None.

    Returns:
        ``log T`` (N, M) and the number of iterations run.
    """
    n, m = cost.shape
    if log_a is None:
        log_a = cost.new_full((n,), 1.0 / n).log()
    if log_b is None:
        log_b = cost.new_full((m,), 1.0 / m).log()
    scaled = cost / (-epsilon)
    beta = log_b.new_zeros(m)
    alpha = log_a.new_zeros(n)
    done = 0
    for it in range(1, iterations + 1):
        alpha = log_a - torch.logsumexp(scaled + beta[None, :], dim=1)
        beta = log_b - torch.logsumexp(scaled + alpha[:, None], dim=0)
        done = it
        if tol is not None and it % check_every == 0:
            row = torch.logsumexp(scaled + alpha[:, None] + beta[None, :], dim=1)
            if float((row - log_a).detach().abs().max().expm1().abs()) < tol:
                break
    return scaled + alpha[:, None] + beta[None, :], done


def contrastive_log_denominator(
    sim: Tensor,
    contrast_labels: Tensor,
    self_mask: Tensor,
    num_classes: int,
    averaging: Literal["none", "outside", "inside"],
) -> Tensor:
    """Log of the contrastive denominator of each anchor: (N,).

    Args:
        sim: (N, M) similarities already divided by the temperature.
        contrast_labels: (M,) class of each contrast element.
        self_mask: (N, M) True where the contrast element is the anchor itself (excluded).
        num_classes: K.
        averaging: ``"none"``: ``log sum_k exp(s_ik)`` (SupCon); ``"outside"``: BCL Eq. 6/9,
            ``log sum_j 1/|S_j| sum_{k in S_j} exp(s_ik)``; ``"inside"``: BCL Eq. 7,
            ``log sum_j exp(1/|S_j| sum_{k in S_j} s_ik)``. ``S_j`` is class ``j`` in the
            contrast set without the anchor; classes with empty ``S_j`` are left out.
    """
    # An anchor whose contrast set is only itself (one sample, one view) keeps itself, so its
    # (unused) denominator and gradient stay finite.
    self_mask = self_mask & ~self_mask.all(dim=1, keepdim=True)
    masked = sim.masked_fill(self_mask, float("-inf"))
    if averaging == "none":
        return torch.logsumexp(masked, dim=1)
    n = sim.shape[0]
    keep = (~self_mask).to(sim.dtype)
    counts = sim.new_zeros(n, num_classes).index_add(1, contrast_labels, keep)  # |S_j| per anchor
    present = counts > 0
    if averaging == "inside":
        sums = sim.new_zeros(n, num_classes).index_add(1, contrast_labels, sim * keep)
        means = sums / counts.clamp_min(1.0)
        return torch.logsumexp(means.masked_fill(~present, float("-inf")), dim=1)
    # "outside": log sum_j (1/|S_j|) sum_k exp(s_ik), stabilised by the row maximum.
    top = masked.max(dim=1, keepdim=True).values.detach()
    expd = torch.exp(masked - top)  # exp(-inf) = 0 removes the anchor itself
    sums = sim.new_zeros(n, num_classes).index_add(1, contrast_labels, expd)
    per_class = torch.where(present, sums / counts.clamp_min(1.0), torch.zeros_like(sums))
    return top.squeeze(1) + torch.log(per_class.sum(dim=1))


def contrastive_loss(
    anchors: Tensor,
    anchor_labels: Tensor,
    contrast: Tensor,
    contrast_labels: Tensor,
    anchor_index: Tensor,
    temperature: float,
    num_classes: int,
    averaging: Literal["none", "outside", "inside"] = "none",
) -> tuple[Tensor, Tensor]:
    """Per-anchor supervised contrastive loss (SupCon, BCL Eq. 6/7/9 depending on the inputs).

    ``loss_i = -1/|P_i| sum_{p in P_i} (s_ip - log denominator_i)`` with ``s = z_i . z_k / tau``
    and ``P_i`` the contrast elements of the anchor's class other than itself.

    Args:
        anchors: (N, D) normalized anchors.
        anchor_labels: (N,).
        contrast: (M, D) normalized contrast set (BCL's class-complement appends prototypes).
        contrast_labels: (M,).
        anchor_index: (N,) position of each anchor in ``contrast`` (-1 if absent).
        temperature: ``tau``.
        num_classes: K (labels lie in [0, K)).
        averaging: see :func:`contrastive_log_denominator`.

    Returns:
        loss (N,) (0 where the anchor has no positive) and valid (N,) bool (has a positive).
    """
    sim = anchors @ contrast.T / temperature
    cols = torch.arange(contrast.shape[0], device=sim.device)
    self_mask = anchor_index[:, None] == cols[None, :]
    positive = (anchor_labels[:, None] == contrast_labels[None, :]) & ~self_mask
    log_den = contrastive_log_denominator(sim, contrast_labels, self_mask, num_classes, averaging)
    n_pos = positive.sum(dim=1)
    pos_sim = torch.where(positive, sim, torch.zeros_like(sim)).sum(dim=1)
    valid = n_pos > 0
    loss = torch.where(valid, log_den - pos_sim / n_pos.clamp_min(1), torch.zeros_like(log_den))
    return loss, valid


def hycon_per_sample(pred: Tensor, proj: Tensor, view_means: Tensor) -> Tensor:
    """AllNC Eq. 8, per sample: (B,).

    ``sum_b [ -1/(V-1) sum_{a != b} cos(h_a, sg(z_b)) - cos(u_b, sg(z_b)) ]``; for two views
    exactly ``sim(h1, u2, sg z2) + sim(h2, u1, sg z1)``.

    Args:
        pred: (B, V, D) predictor outputs ``h``.
        proj: (B, V, D) projections ``z`` (used only through a stop-gradient here).
        view_means: (B, V, D) ``u``: the class mean of ``z`` of view ``b`` for each sample's class
            (carries gradient to ``z`` through the mean, as in the paper).
    """
    v = pred.shape[1]
    z = F.normalize(proj.detach(), dim=2)
    h = F.normalize(pred, dim=2)
    u = F.normalize(view_means, dim=2)
    cos_hz = torch.einsum("bad,bcd->bac", h, z)  # (B, V_a, V_b)
    off = ~torch.eye(v, dtype=torch.bool, device=pred.device)
    pull_pred = (cos_hz * off).sum(dim=(1, 2)) / (v - 1)
    pull_mean = (u * z).sum(dim=2).sum(dim=1)
    return -pull_pred - pull_mean


def gather_for_scope(t: Tensor, scope: Literal["global", "local"]) -> Tensor:
    """``t`` over the global batch (this rank's rows keep their gradient) or as is (``local``).

    With ``"global"`` a loss computed on the result is the global-batch loss; the caller
    multiplies its gradient by :func:`scope_world_size` (``scale_grad(loss, world)``: the value
    stays the global-batch loss) to undo DDP's gradient averaging (see
    ``nclt.dist.gather_keep_grad``). Labels (no gradient) gather the same way.
    """
    if scope == "global":
        return dist.gather_keep_grad(t) if t.requires_grad else dist.all_gather_cat(t)
    if scope != "local":
        raise ValueError(f"scope must be 'global' or 'local', got {scope!r}")
    return t


def scope_world_size(scope: Literal["global", "local"]) -> int:
    """Factor that turns a global-batch loss into the right DDP gradient: world size or 1."""
    return dist.world_size() if scope == "global" else 1


def scale_grad(t: Tensor, factor: float) -> Tensor:
    """``t`` unchanged in the forward pass, its gradient multiplied by ``factor``.

    Shared tensors (prototypes, learnable centres) that enter a global-batch loss scaled by
    the world size use ``factor = 1 / world_size`` so their gradient is not counted W times.
    """
    if factor == 1.0:
        return t
    frozen = t.detach()
    return frozen + (t - frozen) * factor


def sinkhorn_scaling(
    cost: Tensor,
    epsilon: float,
    iterations: int = 100,
    tol: float | None = 1e-5,
    check_every: int = 10,
) -> tuple[Tensor, int]:
    """Plain-domain Sinkhorn (matrix scaling) with uniform marginals; returns ``log T``.

    The same fixed point as :func:`sinkhorn_log`, but each iteration is two matrix-vector
    products with the kernel ``exp(-(C - min C)/eps)`` instead of two ``logsumexp`` passes
    over (N, M) (about 10x faster on CPU). Only safe while the kernel and the scalings stay
    within floating range: callers use it when ``(max C - min C)/eps <= 30``
    (see :func:`entropic_log_plan`). Differentiable through the iterations.

    Args:
        cost: (N, M).
        epsilon: entropic regularization.
        iterations: maximum number of (u, v) updates.
        tol: stop when the row sums match ``1/N`` to this max relative error (checked every
            ``check_every`` iterations); None runs all iterations.
        check_every: iterations between checks.

    Returns:
        ``log T`` (N, M) and the number of iterations run.
    """
    n, m = cost.shape
    scaled = (cost - cost.detach().min()) / (-epsilon)
    kernel = scaled.exp()
    a = 1.0 / n
    b = 1.0 / m
    v = cost.new_full((m,), 1.0)
    u = cost.new_full((n,), 1.0)
    done = 0
    for it in range(1, iterations + 1):
        u = a / (kernel @ v)
        v = b / (kernel.T @ u)
        done = it
        if tol is not None and it % check_every == 0:
            rows = u * (kernel @ v)
            if float((rows.detach() * n - 1.0).abs().max()) < tol:
                break
    return scaled + u.log()[:, None] + v.log()[None, :], done


def entropic_log_plan(
    cost: Tensor,
    epsilon: float,
    iterations: int = 100,
    tol: float | None = 1e-5,
    check_every: int = 10,
    method: Literal["auto", "log", "scaling"] = "auto",
) -> tuple[Tensor, int]:
    """``log T`` of the entropic OT plan with uniform marginals: (N, M), and iterations run.

    ``method="auto"`` uses :func:`sinkhorn_scaling` when ``(max C - min C)/eps <= 30`` (e.g.
    cosine costs in [0, 2] with eps >= 0.07) and the log-domain :func:`sinkhorn_log` otherwise
    (small eps: finite down to eps = 1e-3).
    """
    if method == "auto":
        spread = float((cost.detach().max() - cost.detach().min()) / epsilon)
        method = "scaling" if spread <= 30.0 else "log"
    if method == "scaling":
        return sinkhorn_scaling(cost, epsilon, iterations, tol, check_every)
    if method != "log":
        raise ValueError(f"method must be 'auto', 'log' or 'scaling', got {method!r}")
    return sinkhorn_log(cost, epsilon, iterations, tol, check_every)


def present_class_means(features: Tensor, labels: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Means of the classes present in the batch only (P of them, P <= B), cheaper than K.

    Args:
        features: (B, D).
        labels: (B,).

    Returns:
        means (P, D) in increasing class order (differentiable), counts (P,) in the features'
        dtype, and inverse (B,): the row of ``means`` of each sample.
    """
    _, inverse, counts = torch.unique(labels, return_inverse=True, return_counts=True)
    sums = features.new_zeros(counts.shape[0], features.shape[1]).index_add(0, inverse, features)
    counts = counts.to(features.dtype)
    return sums / counts[:, None], counts, inverse
