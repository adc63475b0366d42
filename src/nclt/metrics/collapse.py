"""Neural-collapse metrics (NC1-NC4), ARB balance metrics and DisA covariance traces.

A pure functional core (geometry functions of tensors, ``collapse_from_stats``) and two thin
stateful accumulators that keep sums which add across ranks:

* ``CollapseAccumulator``: per-class counts, feature sums and squared-norm sums, and D x D
  Gram matrices Σ h h^T (one per class group when groups are known, else one; they add up to
  the full Gram), plus, when the class counts of the data are given, the class-weighted Gram
  Σ_i h_i h_i^T / n_{y_i} that gives DisA's per-class-averaged Σ_W without a K x D x D
  tensor. Everything is float64. ``all_reduce()`` / ``compute()`` sum the states over ranks
  with one ``nclt.dist.all_reduce_sum`` call.
* ``NC4Accumulator``: agreement between the classifier and the nearest-class-mean rule, for
  fixed class means (a second pass over the data, or the previous epoch's means during
  training).

Definitions, options and defaults are in docs/METRICS.md; the main ones:

* global mean μ_G: ``"class"`` (default) = mean of the present class means (INC's μ_C, DisA);
  ``"sample"`` = mean of all samples (AllNC, Papyan et al.).
* within-class covariance Σ_W: ``"sample"`` (default) = average over samples,
  (1/N) Σ_k Σ_i (h - μ_k)(h - μ_k)^T (Papyan, AllNC Eq. 3); ``"class"`` = average over classes
  of the per-class covariances, (1/K) Σ_k (1/n_k) Σ_i (...)  (DisA 3.2).
* Σ_B = (1/K) Σ_k (μ_k - μ_G)(μ_k - μ_G)^T; NC1 = Tr(Σ_W Σ_B^+) / K.

Classes without any feature (count 0) are left out of every means-based metric; K then means
the number of present classes, and the result records it (``present_classes``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import Tensor

from nclt import dist
from nclt.errors import ConfigError, DataError, NcltError, closest
from nclt.metrics.accuracy import GROUP_NAMES, class_groups

GlobalMean = Literal["class", "sample"]
Within = Literal["sample", "class"]
GLOBAL_MEANS: tuple[str, str] = ("class", "sample")
WITHINS: tuple[str, str] = ("sample", "class")
DEFAULT_RTOL = 1e-10
"""Eigenvalues of Σ_B below ``rtol * λ_max`` are treated as zero in the pseudo-inverse."""

_F64 = torch.float64


# --------------------------------------------------------------------------------------------
# Geometry of a set of vectors (rows).
# --------------------------------------------------------------------------------------------


def _unit_rows(vectors: Tensor) -> Tensor:
    v = vectors.to(_F64)
    # A zero row gets cosine 0 with everything instead of NaN.
    unit: Tensor = v / v.norm(dim=1, keepdim=True).clamp_min(torch.finfo(_F64).tiny)
    return unit


def pairwise_cosines(vectors: Tensor) -> Tensor:
    """Cosines of all unordered pairs of rows.

    Args:
        vectors: (K, D).

    Returns:
        (K(K-1)/2,) float64, pairs (i, j) with i < j in row-major order.
    """
    unit = _unit_rows(vectors)
    i, j = torch.triu_indices(len(unit), len(unit), offset=1, device=unit.device)
    return (unit[i] * unit[j]).sum(dim=1)


def equinorm(vectors: Tensor) -> float | None:
    """std / mean of the row norms (population std); 0 when all norms are equal (NC2, Eq. 4 INC).

    Args:
        vectors: (K, D), e.g. centered class means or classifier vectors.

    Returns:
        The coefficient of variation, or None for fewer than 2 rows.
    """
    if len(vectors) < 2:
        return None
    norms = vectors.to(_F64).norm(dim=1)
    return float(norms.std(correction=0) / norms.mean())


def equiangularity(vectors: Tensor) -> float | None:
    """Population std of the pairwise cosines of the rows (AllNC Eq. 6 / 7, Papyan et al.).

    Args:
        vectors: (K, D), already centered as wanted.

    Returns:
        0 for equal pairwise angles (any simplex ETF); None for fewer than 2 rows.
    """
    if len(vectors) < 2:
        return None
    return float(pairwise_cosines(vectors).std(correction=0))


def max_equiangularity(vectors: Tensor) -> float | None:
    """Mean over pairs of |cos + 1/(K-1)| (Papyan et al.): 0 exactly on a simplex ETF.

    Args:
        vectors: (K, D), already centered as wanted.

    Returns:
        The mean deviation from the simplex angle, or None for fewer than 2 rows.
    """
    k = len(vectors)
    if k < 2:
        return None
    return float((pairwise_cosines(vectors) + 1.0 / (k - 1)).abs().mean())


def mean_pairwise_angle(vectors: Tensor) -> float | None:
    """Mean angle, in degrees, over the unordered pairs of rows (None for fewer than 2 rows).

    On a simplex ETF every pair is at arccos(-1/(K-1)) (96.4 degrees for K = 10); minority
    collapse shows as a small angle among the few-shot classes.
    """
    if len(vectors) < 2:
        return None
    cos = pairwise_cosines(vectors).clamp(-1.0, 1.0)
    return float(torch.rad2deg(torch.arccos(cos)).mean())


def self_duality(head_weight: Tensor, centered_means: Tensor) -> float:
    """NC3 of AllNC Eq. 4 / DisA Eq. 4: || W/||W||_F - M/||M||_F ||_F.

    Args:
        head_weight: (K, D) classifier vectors, raw (not centered), rows aligned with the means.
        centered_means: (K, D) rows μ_k - μ_G.

    Returns:
        0 when W is a positive multiple of the centered means; at most 2.
    """
    w = head_weight.to(_F64)
    m = centered_means.to(_F64)
    return float((w / w.norm() - m / m.norm()).norm())


def balance_metrics(head_weight: Tensor) -> tuple[float | None, float | None, float]:
    """ARB balance metrics B_D, B_A, B_L (ARB Eq. 19) in the corrected variance form.

    ARB Eq. 19 as printed normalizes by 1/(c-1)^2 over the c(c-1) ordered pairs, both in the
    prefactor and inside the mean; the "mean" is then not a mean and the value is not 0 on an
    exact ETF, contradicting ARB Eq. 22. Here each B^2 is the population variance, i.e. the
    printed formula with 1/(c(c-1)) in both places (ERRATA), which is 0 on an ETF:

    * B_D^2 = Var_{i != j}(w_i^T w_j), B_A^2 = Var_{i != j}(cos(w_i, w_j)),
    * B_L^2 = Var_i(||w_i||).

    The raw classifier vectors are used (as in ARB); B_A equals ``equiangularity(W)``.

    Args:
        head_weight: (C, D).

    Returns:
        (B_D, B_A, B_L), the square roots of the variances (same units as the dot products,
        cosines and norms); B_D and B_A are None for C < 2.
    """
    w = head_weight.to(_F64)
    b_l = float(w.norm(dim=1).std(correction=0))
    if len(w) < 2:
        return None, None, b_l
    i, j = torch.triu_indices(len(w), len(w), offset=1, device=w.device)
    dots = (w[i] * w[j]).sum(dim=1)
    # The variance over ordered pairs equals the one over unordered pairs (each appears twice).
    b_d = float(dots.std(correction=0))
    b_a = float(pairwise_cosines(w).std(correction=0))
    return b_d, b_a, b_l


def nc1_from_covariances(
    sigma_w: Tensor, sigma_b: Tensor, num_classes: int, rtol: float = DEFAULT_RTOL
) -> float | None:
    """NC1 = Tr(Σ_W Σ_B^+) / K with a rank-aware pseudo-inverse of Σ_B.

    Σ_B has rank at most min(D, K - 1); its eigenvalues below ``rtol * λ_max`` are treated
    as 0 (so K > D and K <= D both work). Computed as Σ_j v_j^T Σ_W v_j / λ_j over the kept
    eigenpairs (λ_j, v_j) of Σ_B.

    Args:
        sigma_w: (D, D) within-class covariance.
        sigma_b: (D, D) between-class covariance.
        num_classes: K, the number of classes the covariances were taken over.
        rtol: relative eigenvalue threshold.

    Returns:
        NC1 (0 when the features sit on their class means), or None when Σ_B is 0 (all class
        means equal, e.g. a single class).
    """
    sigma_b = 0.5 * (sigma_b + sigma_b.T).to(_F64)
    evals, evecs = torch.linalg.eigh(sigma_b)
    top = float(evals.max()) if evals.numel() else 0.0
    if top <= 0.0:
        return None
    keep = evals > rtol * top
    v = evecs[:, keep]
    quad = (v * (sigma_w.to(_F64) @ v)).sum(dim=0)
    return float((quad / evals[keep]).sum() / num_classes)


def nc4(features: Tensor, classifier_preds: Tensor, class_means: Tensor) -> float:
    """NC4: share of samples whose classifier prediction equals the nearest-class-mean one.

    Args:
        features: (N, D).
        classifier_preds: (N,) predicted labels, or (N, C) logits (arg-maxed).
        class_means: (C, D) class means (not centered; centering does not change the nearest
            mean). Rows that are NaN (classes absent when the means were taken, as returned by
            ``CollapseAccumulator.class_means()``) are never the nearest.

    Returns:
        The share in [0, 1] (1 under NC4); NaN for N = 0.
    """
    agree, total = _nc4_counts(features, classifier_preds, class_means)
    return agree / total if total > 0 else math.nan


def _nc4_counts(features: Tensor, classifier_preds: Tensor, class_means: Tensor) -> tuple[int, int]:
    if classifier_preds.ndim == 2:
        classifier_preds = classifier_preds.argmax(dim=1)
    if features.ndim != 2 or classifier_preds.shape != features.shape[:1]:
        raise ConfigError(
            f"nc4 expects features (N, D) and predictions (N,) or (N, C); got "
            f"{tuple(features.shape)} and {tuple(classifier_preds.shape)}."
        )
    if len(features) == 0:
        return 0, 0
    means = class_means.to(device=features.device, dtype=_F64)
    dists = torch.cdist(features.to(_F64), torch.nan_to_num(means, nan=0.0))
    dists[:, means.isnan().any(dim=1)] = math.inf
    ncc = dists.argmin(dim=1)
    agree = int((ncc == classifier_preds.to(ncc.device)).sum())
    return agree, len(features)


# --------------------------------------------------------------------------------------------
# Sufficient statistics and the metrics computed from them.
# --------------------------------------------------------------------------------------------


@dataclass
class CollapseStats:
    """Sums over samples that add across ranks (all float64) and the fixed slot layout.

    Attributes:
        counts: (K,) samples per class.
        sums: (K, D) per-class feature sums.
        sqnorms: (K,) per-class sums of ||h||^2.
        grams: (P, D, D) Σ h h^T over the samples of the classes in slot p.
        weighted_grams: (P, D, D) Σ h h^T / n_{y} (dataset count n), or None.
        slot_of_class: (K,) long, the Gram slot of each class (its group, or 0).
    """

    counts: Tensor
    sums: Tensor
    sqnorms: Tensor
    grams: Tensor
    weighted_grams: Tensor | None
    slot_of_class: Tensor


def slot_layout(num_classes: int, groups: dict[str, Tensor] | None) -> tuple[Tensor, int]:
    """Gram slot of each class: its group's index among the non-empty groups, or 0 (no groups).

    Returns:
        (slot_of_class (K,) long, number of slots).
    """
    slot_of_class = torch.zeros(num_classes, dtype=torch.long)
    if groups is None:
        return slot_of_class, 1
    filled = [name for name in GROUP_NAMES if groups[name].numel() > 0]
    for slot, name in enumerate(filled):
        slot_of_class[groups[name]] = slot
    return slot_of_class, len(filled)


@torch.no_grad()
def class_stats(
    features: Tensor,
    labels: Tensor,
    num_classes: int,
    class_counts: Tensor | None = None,
    slot_of_class: Tensor | None = None,
    num_slots: int = 1,
    device: torch.device | None = None,
) -> CollapseStats:
    """Sufficient statistics of one batch (float64, on ``device`` or the features' device).

    Args:
        features: (B, D).
        labels: (B,) in [0, K).
        num_classes: K.
        class_counts: (K,) dataset counts n_k for the class-weighted Gram, or None.
        slot_of_class: (K,) Gram slot per class (``slot_layout``); None puts all in slot 0.
        num_slots: P.
        device: where to compute.

    Returns:
        The batch's ``CollapseStats``; summing those of several batches gives the stats of
        their concatenation.
    """
    if features.ndim != 2 or labels.shape != features.shape[:1]:
        raise ConfigError(
            f"expected features (B, D) and labels (B,); got {tuple(features.shape)} and "
            f"{tuple(labels.shape)}."
        )
    dev = features.device if device is None else device
    x = features.detach().to(device=dev, dtype=_F64)
    y = labels.detach().to(dev).long()
    k, d = num_classes, x.shape[1]
    if slot_of_class is None:
        slot_of_class, num_slots = torch.zeros(k, dtype=torch.long), 1
    if y.numel() and (int(y.min()) < 0 or int(y.max()) >= k):
        raise DataError(f"labels must lie in [0, {k}); got {int(y.min())}..{int(y.max())}.")
    counts = torch.zeros(k, dtype=_F64, device=dev).index_add_(0, y, torch.ones_like(y, dtype=_F64))
    sums = torch.zeros(k, d, dtype=_F64, device=dev).index_add_(0, y, x)
    sqnorms = torch.zeros(k, dtype=_F64, device=dev).index_add_(0, y, x.pow(2).sum(dim=1))
    grams = torch.zeros(num_slots, d, d, dtype=_F64, device=dev)
    weighted = None if class_counts is None else torch.zeros_like(grams)
    weights = None
    if class_counts is not None:
        cc = class_counts.to(device=dev, dtype=_F64)
        weights = torch.where(cc > 0, 1.0 / cc.clamp_min(1), 0.0)[y]
    slots = slot_of_class.to(dev)[y]
    for p in range(num_slots):
        mask = slots == p
        xs = x if num_slots == 1 else x[mask]
        grams[p] = xs.T @ xs
        if weighted is not None and weights is not None:
            ws = weights if num_slots == 1 else weights[mask]
            weighted[p] = (xs * ws[:, None]).T @ xs
    return CollapseStats(counts, sums, sqnorms, grams, weighted, slot_of_class)


def _choice(value: str, choices: tuple[str, ...], what: str) -> None:
    if value not in choices:
        raise ConfigError(
            f"unknown {what} {value!r}; choose one of {choices}." + closest(value, choices)
        )


def _within_covariance(
    stats: CollapseStats, classes: Tensor, slots: list[int], within: str
) -> Tensor:
    """Σ_W over ``classes`` (present ones), whose samples are exactly those of ``slots``."""
    n = stats.counts[classes]
    s = stats.sums[classes]
    if within == "sample":
        gram = stats.grams[slots].sum(dim=0)
        sigma = (gram - (s / n[:, None]).T @ s) / n.sum()
    else:
        assert stats.weighted_grams is not None
        gram = stats.weighted_grams[slots].sum(dim=0)
        mu = s / n[:, None]
        sigma = (gram - mu.T @ mu) / len(classes)
    return 0.5 * (sigma + sigma.T)


def _center(stats: CollapseStats, classes: Tensor, global_mean: str) -> Tensor:
    mu = stats.sums[classes] / stats.counts[classes, None]
    if global_mean == "class":
        return mu.mean(dim=0)
    return stats.sums[classes].sum(dim=0) / stats.counts[classes].sum()


def _check_class_weights(stats: CollapseStats, class_counts: Tensor | None) -> None:
    if stats.weighted_grams is None or class_counts is None:
        raise ConfigError(
            "within='class' needs the class counts of the data passed to the accumulator "
            "(CollapseAccumulator(..., class_counts=...))."
        )
    seen = stats.counts > 0
    given = class_counts.to(stats.counts)
    bad = (stats.counts != given) & seen
    if bool(bad.any()):
        k = int(bad.nonzero()[0])
        raise ConfigError(
            "within='class' weights each sample by 1/n_k with the class_counts given, but they "
            f"differ from the counts seen (class {k}: {int(given[k])} given, "
            f"{int(stats.counts[k])} seen). Pass the counts of the data fed to update() "
            "(a full pass without drop_last or padding)."
        )


def collapse_from_stats(
    stats: CollapseStats,
    head_weight: Tensor | None = None,
    *,
    global_mean: GlobalMean = "class",
    within: Within = "sample",
    center_w: bool = True,
    class_counts: Tensor | None = None,
    groups: dict[str, Tensor] | None = None,
    group_rule: str | None = None,
    rtol: float = DEFAULT_RTOL,
) -> dict[str, Any]:
    """All NC metrics from (already all-reduced) sufficient statistics.

    Args:
        stats: the sums of ``CollapseAccumulator``.
        head_weight: (K, D) classifier vectors (rows aligned with classes), or None to skip
            the classifier metrics (their keys are then None).
        global_mean: ``"class"`` (mean of class means, INC μ_C / DisA) or ``"sample"``
            (mean of samples, AllNC / Papyan).
        within: ``"sample"`` (Σ_W averaged over samples, Papyan / AllNC) or ``"class"``
            (averaged per class, DisA); ``"class"`` needs ``class_counts`` equal to the counts
            seen.
        center_w: subtract the mean classifier vector ω_G before the equinorm / equiangular /
            max-angle / group-angle metrics of W (AllNC Eq. 7); False uses the raw vectors (ARB).
            NC3 and B_D / B_A / B_L always use the raw W.
        class_counts: (K,) counts of the data fed (for ``within="class"``).
        groups: class indices per group (``class_groups``) for the per-group metrics; the Gram
            slots of ``stats`` must be these groups, in ``GROUP_NAMES`` order, empty ones
            skipped.
        group_rule: recorded in the output.
        rtol: relative eigenvalue threshold of the pseudo-inverse of Σ_B.

    Returns:
        A JSON-serializable dict; see docs/METRICS.md for every key.
    """
    _choice(global_mean, GLOBAL_MEANS, "global_mean")
    _choice(within, WITHINS, "within")
    if within == "class":
        _check_class_weights(stats, class_counts)
    k_all = len(stats.counts)
    present = (stats.counts > 0).nonzero().flatten()
    kp = len(present)
    if kp == 0:
        raise NcltError("no features were accumulated; nothing to measure.")
    all_slots = list(range(len(stats.grams)))

    mu = stats.sums[present] / stats.counts[present, None]
    mu_g = _center(stats, present, global_mean)
    centered = mu - mu_g
    sigma_w = _within_covariance(stats, present, all_slots, within)
    sigma_b = centered.T @ centered / kp
    trace_sw = float(sigma_w.trace())
    trace_sb = float(sigma_b.trace())
    if within == "class":
        trace_st = trace_sw + trace_sb
    else:
        n = stats.counts[present]
        trace_st = trace_sw + float((n * centered.pow(2).sum(dim=1)).sum() / n.sum())

    mean_norms: list[float | None] = [None] * k_all
    within_var: list[float | None] = [None] * k_all
    var = (stats.sqnorms[present] / stats.counts[present] - mu.pow(2).sum(dim=1)).clamp_min(0)
    for row, k in enumerate(present.tolist()):
        mean_norms[k] = float(centered[row].norm())
        within_var[k] = float(var[row])

    out: dict[str, Any] = {
        "global_mean": global_mean,
        "within": within,
        "center_w": None,
        "num_classes": k_all,
        "present_classes": kp,
        "absent_classes": (stats.counts == 0).nonzero().flatten().tolist(),
        "num_samples": int(stats.counts.sum()),
        "nc1": nc1_from_covariances(sigma_w, sigma_b, kp, rtol) if kp > 1 else None,
        "trace_sw": trace_sw,
        "trace_sb": trace_sb,
        "trace_st": trace_st,
        "equinorm_means": equinorm(centered),
        "equiangular_means": equiangularity(centered),
        "maxangle_means": max_equiangularity(centered),
        "mean_norms": mean_norms,
        "within_var": within_var,
    }

    w_used: Tensor | None = None
    w_keys = ("equinorm_w", "equiangular_w", "maxangle_w", "self_duality", "B_D", "B_A", "B_L")
    out.update(dict.fromkeys(w_keys))
    out["w_norms"] = None
    if head_weight is not None:
        w = head_weight.detach().to(device=stats.sums.device, dtype=_F64)
        if w.shape != (k_all, stats.sums.shape[1]):
            raise ConfigError(
                f"head_weight must be (num_classes, dim) = {(k_all, stats.sums.shape[1])}; "
                f"got {tuple(w.shape)}."
            )
        w_used = w - w.mean(dim=0) if center_w else w
        b_d, b_a, b_l = balance_metrics(w)
        out.update(
            center_w=center_w,
            equinorm_w=equinorm(w_used),
            equiangular_w=equiangularity(w_used),
            maxangle_w=max_equiangularity(w_used),
            w_norms=w_used.norm(dim=1).tolist(),
            self_duality=self_duality(w[present], centered),
            B_D=b_d,
            B_A=b_a,
            B_L=b_l,
        )

    out["group_rule"] = group_rule if groups is not None else None
    out["groups"] = None
    if groups is not None:
        out["groups"] = _group_metrics(
            stats, groups, present, centered, w_used, global_mean, within, rtol
        )
    return out


def _group_metrics(
    stats: CollapseStats,
    groups: dict[str, Tensor],
    present: Tensor,
    centered: Tensor,
    w_used: Tensor | None,
    global_mean: str,
    within: str,
    rtol: float,
) -> dict[str, dict[str, Any] | None]:
    """Per group: NC1 of the group on its own, and mean pairwise angles within the group."""
    row_of_class = torch.full((len(stats.counts),), -1, dtype=torch.long)
    row_of_class[present.cpu()] = torch.arange(len(present))
    out: dict[str, dict[str, Any] | None] = {}
    for name in GROUP_NAMES:
        idx = groups[name].cpu()
        if idx.numel() == 0:
            out[name] = None
            continue
        rows = row_of_class[idx]
        g_present = idx[rows >= 0].to(stats.counts.device)
        rows = rows[rows >= 0].to(centered.device)
        nc1 = None
        if len(g_present) > 1:
            slot = int(stats.slot_of_class[int(idx[0])])
            mu = stats.sums[g_present] / stats.counts[g_present, None]
            c = mu - _center(stats, g_present, global_mean)
            sigma_w = _within_covariance(stats, g_present, [slot], within)
            nc1 = nc1_from_covariances(sigma_w, c.T @ c / len(g_present), len(g_present), rtol)
        out[name] = {
            "num_classes": int(idx.numel()),
            "present": len(g_present),
            "nc1": nc1,
            "angle_means": mean_pairwise_angle(centered[rows]),
            "angle_w": mean_pairwise_angle(w_used[idx.to(w_used.device)])
            if w_used is not None
            else None,
        }
    return out


# --------------------------------------------------------------------------------------------
# Stateful accumulators.
# --------------------------------------------------------------------------------------------


class CollapseAccumulator:
    """Streams (features, labels) into the sums that every NC metric needs; float64.

    Memory: K (D + 2) + P D^2 numbers (P = number of non-empty class groups when groups are
    known, else 1; doubled Grams when ``class_counts`` is given), never K D^2.

    Args:
        num_classes: K.
        dim: feature width D.
        class_counts: (K,) samples per class of the data that will be fed (the dataset being
            measured). Enables ``within="class"`` through the class-weighted Gram
            Σ_i h_i h_i^T / n_{y_i}; ``compute`` checks the counts seen equal these.
            Also defines the groups when ``group_counts`` is None.
        group_counts: (K,) training counts that define the many / medium / few groups
            (defaults to ``class_counts``; give it when measuring a test set).
        group_rule: ``"default"`` or ``"allnc"`` (see ``nclt.metrics.class_groups``).
        device: where the sums live; None adopts the device of the first ``update``. Under
            DDP with NCCL pass the rank's CUDA device, so that a rank that saw no batch still
            joins the all-reduce with CUDA tensors.

    Usage: ``update(features, labels)`` per batch, then ``compute(head_weight=W)``; under DDP
    every rank calls ``compute`` (one all-reduce of the packed state), or ``all_reduce()``
    once and then ``compute(sync=False)``. ``class_means()`` gives the means for
    ``NC4Accumulator``. ``reset()`` starts over.
    """

    def __init__(
        self,
        num_classes: int,
        dim: int,
        class_counts: Tensor | list[int] | None = None,
        group_counts: Tensor | list[int] | None = None,
        group_rule: str = "default",
        device: torch.device | str | None = None,
    ) -> None:
        self.num_classes = num_classes
        self.dim = dim
        self.class_counts = (
            None if class_counts is None else self._counts(class_counts, "class_counts")
        )
        gc = class_counts if group_counts is None else group_counts
        self.group_rule = group_rule
        self.groups = (
            None if gc is None else class_groups(self._counts(gc, "group_counts"), group_rule)
        )
        slot_of_class, self.num_slots = slot_layout(num_classes, self.groups)
        self._slot_of_class = slot_of_class
        self._device = None if device is None else torch.device(device)
        self.reset()

    def _counts(self, counts: Tensor | list[int], what: str) -> Tensor:
        t = torch.as_tensor(counts).detach().cpu().flatten()
        if t.numel() != self.num_classes:
            raise ConfigError(f"{what} has {t.numel()} entries but num_classes={self.num_classes}.")
        return t.to(_F64)

    def reset(self) -> None:
        """Zero every sum (keeps the device)."""
        dev = self._device or torch.device("cpu")
        k, d, p = self.num_classes, self.dim, self.num_slots
        self.counts = torch.zeros(k, dtype=_F64, device=dev)
        self.sums = torch.zeros(k, d, dtype=_F64, device=dev)
        self.sqnorms = torch.zeros(k, dtype=_F64, device=dev)
        self.grams = torch.zeros(p, d, d, dtype=_F64, device=dev)
        self.weighted_grams = (
            None if self.class_counts is None else torch.zeros(p, d, d, dtype=_F64, device=dev)
        )
        self._synced = False

    def _states(self) -> list[Tensor]:
        states = [self.counts, self.sums, self.sqnorms, self.grams]
        return states if self.weighted_grams is None else [*states, self.weighted_grams]

    def _move(self, device: torch.device) -> None:
        self._device = device
        self.counts, self.sums, self.sqnorms, self.grams = (
            t.to(device) for t in (self.counts, self.sums, self.sqnorms, self.grams)
        )
        if self.weighted_grams is not None:
            self.weighted_grams = self.weighted_grams.to(device)

    @torch.no_grad()
    def update(self, features: Tensor, labels: Tensor) -> None:
        """Add a batch: features (B, D) (any float dtype, any device), labels (B,)."""
        if self._synced:
            raise NcltError("update() after all_reduce(); call reset() first.")
        if (
            features.ndim != 2
            or features.shape[1] != self.dim
            or labels.shape != features.shape[:1]
        ):
            raise ConfigError(
                f"expected features (B, {self.dim}) and labels (B,); got "
                f"{tuple(features.shape)} and {tuple(labels.shape)}."
            )
        if self._device is None:
            self._move(features.device)
        batch = class_stats(
            features,
            labels,
            self.num_classes,
            self.class_counts,
            self._slot_of_class,
            self.num_slots,
            device=self.counts.device,
        )
        self.counts += batch.counts
        self.sums += batch.sums
        self.sqnorms += batch.sqnorms
        self.grams += batch.grams
        if self.weighted_grams is not None and batch.weighted_grams is not None:
            self.weighted_grams += batch.weighted_grams

    def _reduced(self) -> list[Tensor]:
        states = self._states()
        if self._synced:
            return states
        flat = dist.all_reduce_sum(torch.cat([t.flatten() for t in states]))
        out, start = [], 0
        for t in states:
            out.append(flat[start : start + t.numel()].view_as(t))
            start += t.numel()
        return out

    def all_reduce(self) -> None:
        """Replace this rank's sums by their sum over ranks (one collective); idempotent."""
        if self._synced:
            return
        reduced = self._reduced()
        self.counts, self.sums, self.sqnorms, self.grams = reduced[:4]
        if self.weighted_grams is not None:
            self.weighted_grams = reduced[4]
        self._synced = True

    def stats(self, sync: bool = True) -> CollapseStats:
        """The (reduced, when ``sync``) sums as a ``CollapseStats``."""
        states = self._reduced() if sync else self._states()
        return CollapseStats(
            counts=states[0],
            sums=states[1],
            sqnorms=states[2],
            grams=states[3],
            weighted_grams=states[4] if len(states) > 4 else None,
            slot_of_class=self._slot_of_class,
        )

    def class_means(self, sync: bool = True) -> Tensor:
        """(K, D) float64 class means; NaN rows for classes with no sample."""
        s = self.stats(sync)
        means = s.sums / s.counts[:, None]
        means[s.counts == 0] = math.nan
        return means

    def compute(
        self,
        head_weight: Tensor | None = None,
        global_mean: GlobalMean = "class",
        within: Within = "sample",
        center_w: bool = True,
        rtol: float = DEFAULT_RTOL,
        sync: bool = True,
    ) -> dict[str, Any]:
        """The NC metrics (``collapse_from_stats``) of everything seen, summed over ranks.

        Args:
            head_weight: (K, D) classifier weight, or None.
            global_mean: ``"class"`` (default, μ_C) or ``"sample"``.
            within: ``"sample"`` (default) or ``"class"`` (needs ``class_counts``).
            center_w: center W by its mean for the W-geometry metrics (default True).
            rtol: pseudo-inverse threshold.
            sync: all-reduce the sums first (a no-op on one process or after ``all_reduce()``).

        Returns:
            The dict of ``collapse_from_stats`` (keys in docs/METRICS.md).
        """
        return collapse_from_stats(
            self.stats(sync),
            head_weight,
            global_mean=global_mean,
            within=within,
            center_w=center_w,
            class_counts=self.class_counts,
            groups=self.groups,
            group_rule=self.group_rule,
            rtol=rtol,
        )


def collapse_metrics(
    features: Tensor,
    labels: Tensor,
    num_classes: int,
    head_weight: Tensor | None = None,
    *,
    class_counts: Tensor | list[int] | None = None,
    group_counts: Tensor | list[int] | None = None,
    group_rule: str = "default",
    **compute_kwargs: Any,
) -> dict[str, Any]:
    """One-shot NC metrics of in-memory features (B, D) and labels (B,) on this process.

    ``class_counts`` (for ``within="class"``) defaults to the counts of ``labels``. Groups
    come from ``group_counts``, else from ``class_counts`` when given explicitly; with neither,
    ``groups`` is None. Other arguments as ``CollapseAccumulator`` /
    ``CollapseAccumulator.compute``.
    """
    groups_from = class_counts if group_counts is None else group_counts
    groups = None if groups_from is None else class_groups(torch.as_tensor(groups_from), group_rule)
    counts = (
        torch.bincount(labels.detach().cpu().long(), minlength=num_classes)
        if class_counts is None
        else torch.as_tensor(class_counts)
    )
    slot_of_class, num_slots = slot_layout(num_classes, groups)
    stats = class_stats(features, labels, num_classes, counts, slot_of_class, num_slots)
    return collapse_from_stats(
        stats,
        head_weight,
        class_counts=counts,
        groups=groups,
        group_rule=group_rule,
        **compute_kwargs,
    )


class NC4Accumulator:
    """NC4 over a stream: share of samples where the classifier agrees with nearest class mean.

    The class means must be final before the pass, so the engine either runs a second pass
    over the data after ``CollapseAccumulator`` (exact), or, during training, uses the
    previous epoch's means (cheap, lags one epoch). Counts are summed over ranks in
    ``compute``.

    Args:
        class_means: (C, D) class means (``CollapseAccumulator.class_means()``); NaN rows
            (absent classes) are never the nearest.
    """

    def __init__(self, class_means: Tensor) -> None:
        self.class_means = class_means.detach().to(_F64)
        self.reset()

    def reset(self) -> None:
        """Zero the counts."""
        self.agree = 0
        self.total = 0

    @torch.no_grad()
    def update(self, features: Tensor, preds: Tensor) -> None:
        """features (B, D); preds: classifier predictions (B,) or logits (B, C)."""
        agree, total = _nc4_counts(features, preds, self.class_means)
        self.agree += agree
        self.total += total

    def compute(self, sync: bool = True) -> float | None:
        """The share in [0, 1] over all ranks (None when no sample was seen)."""
        counts = torch.tensor([self.agree, self.total], dtype=_F64, device=self.class_means.device)
        if sync:
            counts = dist.all_reduce_sum(counts)
        agree, total = float(counts[0]), float(counts[1])
        return agree / total if total > 0 else None


Batch = tuple[Tensor, Tensor, Tensor]


def collapse_metrics_from_loader(
    batches: Iterable[Batch] | Callable[[], Iterable[Batch]],
    *,
    num_classes: int,
    head_weight: Tensor | None = None,
    class_counts: Tensor | list[int] | None = None,
    group_counts: Tensor | list[int] | None = None,
    group_rule: str = "default",
    device: torch.device | str | None = None,
    sync: bool = True,
    **compute_options: Any,
) -> dict[str, Any]:
    """NC1-NC4 of a stream of (features (B, D), logits (B, K) or predictions (B,), labels (B,)).

    Args:
        batches: this rank's batches (its shard, no padding), e.g. ``engine.predict(...)``;
            or a zero-argument callable returning a fresh iterable of them. A callable is
            iterated twice (the second pass gives NC4 with the final class means) and keeps
            nothing; a plain iterable is iterated once and its features (float32, on
            ``device``) and predictions are kept for NC4, N x D numbers.
        num_classes: K.
        head_weight: (K, D) classifier weight for the classifier metrics, or None.
        class_counts: (K,) counts of the data streamed (enables ``within="class"``); also
            the group counts when ``group_counts`` is None.
        group_counts: (K,) training counts that define the groups.
        group_rule: ``"default"`` or ``"allnc"``.
        device: where to accumulate (None: the device of the first batch). Under NCCL give
            the rank's CUDA device.
        sync: sum over ranks; False when every rank streamed the whole data set.
        **compute_options: ``global_mean``, ``within``, ``center_w``, ``rtol``.

    Returns:
        The dict of ``CollapseAccumulator.compute`` plus ``nc4`` (share in [0, 1], or None
        without samples).
    """
    acc: CollapseAccumulator | None = None
    cached: list[tuple[Tensor, Tensor]] = []
    replay = callable(batches)
    for features, logits, labels in batches() if callable(batches) else batches:  # pass 1
        if acc is None:
            dim = features.shape[1]
            acc = CollapseAccumulator(
                num_classes, dim, class_counts, group_counts, group_rule, device=device
            )
        acc.update(features, labels)
        if not replay:
            preds = logits.argmax(dim=1) if logits.ndim == 2 else logits
            cached.append((features.detach().to(acc.counts.device, torch.float32), preds.detach()))
    if acc is None:
        raise NcltError("no batch to measure.")
    out = acc.compute(head_weight, sync=sync, **compute_options)
    nc4_acc = NC4Accumulator(acc.class_means(sync=sync))
    if callable(batches):  # pass 2, with the final means
        for features, logits, _ in batches():
            nc4_acc.update(features, logits)
    else:
        for features, preds in cached:
            nc4_acc.update(features, preds)
    out["nc4"] = nc4_acc.compute(sync=sync)
    return out
