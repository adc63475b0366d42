"""The report's figures: plain functions of numpy arrays that write one PNG each.

Every function builds a ``matplotlib.figure.Figure`` directly (the Agg canvas, no pyplot
state, safe in scripts, tests and threads), writes ``path`` and returns it. Classes are drawn
in decreasing order of training count (``order``), as INC Fig. 2-3 and AllNC Fig. 2 do.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib.colors import TwoSlopeNorm
from matplotlib.figure import Figure

GROUP_COLORS = {"many": "#1f77b4", "medium": "#ff7f0e", "few": "#d62728"}
DPI = 110
ANNOTATE_MAX = 12  # write the value in each cell up to this many classes
TICKS_MAX = 40  # label every class up to this many


def etf_angle_deg(num_classes: int) -> float:
    """arccos(-1/(K-1)) in degrees (96.38 for K = 10)."""
    return math.degrees(math.acos(-1.0 / (num_classes - 1)))


def pairwise_angles_deg(vectors: np.ndarray) -> np.ndarray:
    """(K, K) angles in degrees between the rows; NaN on the diagonal and for NaN/zero rows."""
    v = np.asarray(vectors, dtype=np.float64)
    norms = np.linalg.norm(v, axis=1, keepdims=True)
    bad = ~np.isfinite(norms[:, 0]) | (norms[:, 0] == 0)
    unit = np.where(bad[:, None], np.nan, v / np.where(norms == 0, 1.0, norms))
    cos = np.clip(unit @ unit.T, -1.0, 1.0)
    ang = np.degrees(np.arccos(cos))
    np.fill_diagonal(ang, np.nan)
    return ang


def arb_similarity(head_weight: np.ndarray) -> np.ndarray:
    """ARB Eq. 20: M_ij = w_i.w_j / sum_{j' != i} w_i.w_j' (i != j), M_ii = 0.

    Rows whose denominator is (numerically) zero are NaN. On a simplex ETF every off-diagonal
    entry is 1/(K-1) (ARB Eq. 21).
    """
    w = np.asarray(head_weight, dtype=np.float64)
    dots = w @ w.T
    np.fill_diagonal(dots, 0.0)
    denom = dots.sum(axis=1, keepdims=True)
    scale = np.abs(dots).sum(axis=1, keepdims=True)
    ok = np.abs(denom) > 1e-12 * np.maximum(scale, 1e-300)
    m = np.where(ok, dots / np.where(ok, denom, 1.0), np.nan)
    np.fill_diagonal(m, 0.0)
    return m


def _class_ticks(ax, names: Sequence[str], order: np.ndarray, axis: str = "both") -> None:
    k = len(order)
    if k > TICKS_MAX:
        return
    labels = [names[i] for i in order]
    if axis in ("both", "x"):
        ax.set_xticks(range(k))
        ax.set_xticklabels(labels, rotation=90 if max(map(len, labels)) > 3 else 0, fontsize=7)
    if axis in ("both", "y"):
        ax.set_yticks(range(k))
        ax.set_yticklabels(labels, fontsize=7)


def _annotate(ax, mat: np.ndarray, fmt: str) -> None:
    if len(mat) > ANNOTATE_MAX:
        return
    for i in range(mat.shape[0]):
        for j in range(mat.shape[1]):
            if np.isfinite(mat[i, j]):
                ax.text(j, i, format(mat[i, j], fmt), ha="center", va="center", fontsize=6)


def _save(fig: Figure, path: Path) -> Path:
    path = Path(path)
    fig.savefig(path, dpi=DPI, format="png")
    return path


def angle_heatmap(
    vectors: np.ndarray, names: Sequence[str], order: np.ndarray, title: str, path: Path
) -> Path:
    """Pairwise angles (degrees) of the rows, diverging colours centered on the ETF angle.

    AllNC Fig. 2 / 7, INC Fig. 2, DisA Fig. 7: white = arccos(-1/(K-1)); blue = narrower
    (compressed, minority collapse), red = wider.
    """
    k = len(order)
    ang = pairwise_angles_deg(np.asarray(vectors)[order])
    opt = etf_angle_deg(k)
    fig = Figure(figsize=(5.6, 4.8) if k <= 20 else (7.5, 6.5))
    ax = fig.add_subplot()
    im = ax.imshow(
        ang,
        cmap="RdBu_r",
        norm=TwoSlopeNorm(vmin=0.0, vcenter=opt, vmax=180.0),
        interpolation="nearest",
    )
    cb = fig.colorbar(im, ax=ax)
    cb.set_ticks(sorted({0.0, 45.0, 135.0, 180.0, round(opt, 1)}))
    cb.ax.axhline(opt, color="k", lw=1.5)
    cb.set_label(f"angle (degrees); ETF optimum {opt:.1f}")
    _annotate(ax, ang, ".0f")
    _class_ticks(ax, names, order)
    finite = ang[np.isfinite(ang)]
    dev = np.abs(finite - opt).mean() if finite.size else float("nan")
    ax.set_title(f"{title}\nmean |angle - {opt:.1f}| = {dev:.1f} deg", fontsize=9)
    ax.set_xlabel("class (decreasing training count)")
    ax.set_ylabel("class")
    fig.tight_layout()
    return _save(fig, path)


def epoch_curves(
    epochs: Sequence[np.ndarray],
    series: Sequence[tuple[str, np.ndarray, str]],
    title: str,
    ylabel: str,
    path: Path,
    log: bool = False,
    panels: Sequence[Sequence[int]] | None = None,
    panel_titles: Sequence[str] | None = None,
) -> Path:
    """Lines over epochs. ``series`` = (label, values, linestyle), ``epochs`` aligned with it;
    ``panels`` groups series indices into side-by-side axes (default: one axis); ``log``
    allows a log y axis where the values span more than a decade."""
    panels = panels or [list(range(len(series)))]
    fig = Figure(figsize=(4.2 * len(panels), 3.4))
    for p, idx in enumerate(panels):
        ax = fig.add_subplot(1, len(panels), p + 1)
        for i in idx:
            label, values, style = series[i]
            ax.plot(epochs[i], values, style, label=label, marker="." if len(values) < 30 else None)
        vals = np.concatenate([np.asarray(series[i][1], dtype=np.float64) for i in idx])
        # log scale only where it helps: positive values spanning more than a decade
        if log and vals.size and (vals > 0).all() and vals.max() > 10 * vals.min():
            ax.set_yscale("log")
        ax.set_xlabel("epoch")
        ax.set_ylabel(ylabel if not panel_titles else panel_titles[p])
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return _save(fig, path)


def norms_by_class_size(
    mean_norms: np.ndarray,
    w_norms: np.ndarray,
    counts: np.ndarray,
    names: Sequence[str],
    order: np.ndarray,
    w_label: str,
    path: Path,
) -> Path:
    """INC Fig. 3: norms of the centered class means and of the classifier vectors, classes by
    decreasing size; equal bars are the ideal (NC2 equinorm)."""
    k = len(order)
    x = np.arange(k)
    fig = Figure(figsize=(max(6.0, min(14.0, 0.35 * k)), 3.8))
    axes = [fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)]
    for ax, vals, lab in ((axes[0], mean_norms, "||mu_k - mu_G||"), (axes[1], w_norms, w_label)):
        v = np.asarray(vals, dtype=np.float64)[order]
        ax.bar(x, np.nan_to_num(v), color="#4c72b0", width=0.8)
        if np.isfinite(v).any():
            ax.axhline(np.nanmean(v), color="k", ls="--", lw=1, label="mean")
            ax.legend(fontsize=7)
        ax.set_ylabel(lab)
        ax.set_xlabel("class (decreasing training count)")
        if k <= TICKS_MAX:
            ax.set_xticks(x)
            ax.set_xticklabels([f"{names[i]}\n{counts[i]}" for i in order], fontsize=6)
        ax.grid(alpha=0.3, axis="y")
    axes[0].set_title("centered class means", fontsize=9)
    axes[1].set_title("classifier vectors", fontsize=9)
    fig.tight_layout()
    return _save(fig, path)


def accuracy_vs_size(
    per_class: Sequence[float | None],
    counts: np.ndarray,
    groups: dict[str, list[int]],
    path: Path,
    names: Sequence[str],
) -> Path:
    """Per-class test accuracy against training count (log x), coloured by group."""
    fig = Figure(figsize=(5.6, 3.8))
    ax = fig.add_subplot()
    acc = np.array([np.nan if a is None else a for a in per_class], dtype=np.float64)
    for g, idx in groups.items():
        if not idx:
            continue
        idx = np.asarray(idx)
        ax.scatter(
            counts[idx], acc[idx], s=18, color=GROUP_COLORS.get(g), label=f"{g} ({len(idx)})"
        )
    if len(counts) <= 20:
        for i, (c, a) in enumerate(zip(counts, acc, strict=True)):
            if np.isfinite(a):
                ax.annotate(names[i], (c, a), fontsize=6, xytext=(3, 2), textcoords="offset points")
    ax.set_xscale("log")
    ax.set_ylim(-3, 103)
    ax.set_xlabel("training images of the class (log)")
    ax.set_ylabel("test accuracy (%)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return _save(fig, path)


def confusion_matrix(
    confusion: np.ndarray, names: Sequence[str], order: np.ndarray, path: Path
) -> Path:
    """Row-normalized confusion matrix (rows: true class), classes by decreasing size."""
    c = np.asarray(confusion, dtype=np.float64)[np.ix_(order, order)]
    rows = c.sum(axis=1, keepdims=True)
    norm = np.divide(c, rows, out=np.full_like(c, np.nan), where=rows > 0)
    k = len(order)
    fig = Figure(figsize=(5.4, 4.8) if k <= 20 else (7.5, 6.5))
    ax = fig.add_subplot()
    im = ax.imshow(norm, cmap="Blues", vmin=0.0, vmax=1.0, interpolation="nearest")
    fig.colorbar(im, ax=ax, label="share of the true class")
    _annotate(ax, norm, ".2f")
    _class_ticks(ax, names, order)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    fig.tight_layout()
    return _save(fig, path)


def arb_similarity_matrix(
    m: np.ndarray,
    names: Sequence[str],
    order: np.ndarray,
    balance: dict[str, float | None],
    path: Path,
) -> Path:
    """ARB Fig. 4: Eq. 20's matrix, diverging colours centered on the ideal 1/(K-1) (Eq. 21)."""
    k = len(order)
    mo = np.asarray(m, dtype=np.float64)[np.ix_(order, order)].copy()
    np.fill_diagonal(mo, np.nan)  # meaningless (0 by definition): left blank
    ideal = 1.0 / (k - 1)
    finite = mo[np.isfinite(mo)]
    # the 95th percentile, not the max: a row whose denominator is near 0 would wash out the rest
    spread = float(np.percentile(np.abs(finite - ideal), 95)) if finite.size else ideal
    spread = max(spread, 1e-3 * ideal)
    fig = Figure(figsize=(5.6, 5.0) if k <= 20 else (7.5, 6.8))
    ax = fig.add_subplot()
    im = ax.imshow(
        mo,
        cmap="PuOr_r",
        interpolation="nearest",
        norm=TwoSlopeNorm(vmin=ideal - spread, vcenter=ideal, vmax=ideal + spread),
    )
    cb = fig.colorbar(im, ax=ax, extend="both")
    cb.ax.axhline(ideal, color="k", lw=1.5)
    cb.set_label(f"M_ij; ideal 1/(K-1) = {ideal:.3g}")
    _annotate(ax, mo, ".2f")
    _class_ticks(ax, names, order)
    txt = ", ".join(f"{k_}={v:.3g}" if v is not None else f"{k_}=-" for k_, v in balance.items())
    ax.set_xlabel(f"class j\n{txt}", fontsize=8)
    ax.set_ylabel("class i")
    fig.tight_layout()
    return _save(fig, path)


def align_matrix(a: np.ndarray, names: Sequence[str], order: np.ndarray, path: Path) -> Path:
    """DisA Fig. 2: A = L^T T (rows: classes of the samples, columns: ETF vertices)."""
    ao = np.asarray(a, dtype=np.float64)[np.ix_(order, order)]
    fig = Figure(figsize=(5.4, 4.8) if len(order) <= 20 else (7.5, 6.5))
    ax = fig.add_subplot()
    im = ax.imshow(ao, cmap="viridis", interpolation="nearest")
    fig.colorbar(im, ax=ax, label="transported mass")
    _annotate(ax, ao, ".3f")
    _class_ticks(ax, names, order)
    ax.set_xlabel("ETF vertex (class)")
    ax.set_ylabel("class of the samples")
    fig.tight_layout()
    return _save(fig, path)


def transport_plan(
    plan: np.ndarray, labels: np.ndarray, names: Sequence[str], order: np.ndarray, path: Path
) -> Path:
    """DisA Fig. 5: one batch's plan T (rows: samples sorted by class, columns: ETF vertices)."""
    rank = np.empty(len(order), dtype=np.int64)
    rank[order] = np.arange(len(order))
    rows = np.argsort(rank[labels], kind="stable")
    t = np.asarray(plan, dtype=np.float64)[rows][:, order]
    fig = Figure(figsize=(5.4, max(3.5, min(12.0, 0.12 * len(rows) + 1.5))))
    ax = fig.add_subplot()
    im = ax.imshow(t, cmap="viridis", aspect="auto", interpolation="nearest")
    fig.colorbar(im, ax=ax, label="T_ik")
    if len(rows) <= 64:
        ax.set_yticks(range(len(rows)))
        ax.set_yticklabels([names[i] for i in labels[rows]], fontsize=5)
    _class_ticks(ax, names, order, axis="x")
    ax.set_xlabel("ETF vertex (class)")
    ax.set_ylabel("samples of the batch (label)")
    fig.tight_layout()
    return _save(fig, path)


def embedding_2d(
    points: np.ndarray,
    labels: np.ndarray,
    mean_pts: np.ndarray,
    mean_classes: np.ndarray,
    w_pts: np.ndarray,
    names: Sequence[str],
    path: Path,
) -> Path:
    """DisA Fig. 4: 2-D embedding of features (dots), class means (stars), classifiers (^)."""
    k = len(names)
    cmap = _class_cmap(k)
    fig = Figure(figsize=(6.2, 5.2))
    ax = fig.add_subplot()
    ax.scatter(
        points[:, 0], points[:, 1], c=[cmap(i) for i in labels], s=6, alpha=0.5, linewidths=0
    )
    for pts, marker, size, lab in (
        (mean_pts, "*", 160, "class mean"),
        (w_pts, "^", 70, "classifier"),
    ):
        ax.scatter(
            pts[:, 0],
            pts[:, 1],
            c=[cmap(i) for i in mean_classes],
            marker=marker,
            s=size,
            edgecolors="k",
            linewidths=0.8,
            label=lab,
        )
    if k <= 20:
        for p, c in zip(mean_pts, mean_classes, strict=True):
            ax.annotate(names[c], p, fontsize=7, xytext=(4, 4), textcoords="offset points")
    ax.set_xticks([])
    ax.set_yticks([])
    ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    return _save(fig, path)


def _class_cmap(k: int):
    from matplotlib import colormaps

    base = colormaps["tab10" if k <= 10 else "tab20" if k <= 20 else "turbo"]
    if k <= 20:
        return lambda i: base(i % base.N)
    return lambda i: base(i / max(k - 1, 1))


def bars_side_by_side(
    labels: Sequence[str],
    metrics: Sequence[str],
    means: dict[str, Sequence[float | None]],
    stds: dict[str, Sequence[float | None]],
    titles: Sequence[str],
    path: Path,
) -> Path:
    """Grouped bars (one group per metric, one bar per run group) with +-std error bars.

    ``means[title]`` / ``stds[title]`` hold len(labels) * len(metrics) values, run-major.
    Missing values (empty groups) are drawn as no bar.
    """
    n, m = len(labels), len(metrics)
    fig = Figure(figsize=(max(6.0, 1.1 * m * max(n, 2) * 0.6) * len(titles) * 0.7, 4.2))
    width = 0.8 / max(n, 1)
    cmap = _class_cmap(max(n, 1))
    for p, title in enumerate(titles):
        ax = fig.add_subplot(1, len(titles), p + 1)
        for r in range(n):
            vals = [means[title][r * m + j] for j in range(m)]
            errs = [stds[title][r * m + j] for j in range(m)]
            x = np.arange(m) + (r - (n - 1) / 2) * width
            ax.bar(
                x,
                [np.nan if v is None else v for v in vals],
                width,
                yerr=[0.0 if e is None else e for e in errs],
                capsize=2,
                color=cmap(r),
                label=labels[r] if p == 0 else None,
            )
        ax.set_xticks(np.arange(m))
        ax.set_xticklabels(metrics)
        ax.set_ylim(0, 100)
        ax.set_ylabel("test accuracy (%)")
        ax.set_title(title, fontsize=9)
        ax.grid(alpha=0.3, axis="y")
    fig.legend(fontsize=7, loc="lower center", ncol=min(n, 3), bbox_to_anchor=(0.5, 0.0))
    fig.tight_layout(rect=(0, 0.08 + 0.04 * ((n - 1) // 3), 1, 1))
    return _save(fig, path)


def per_class_lines(
    curves: dict[str, Sequence[float]],
    counts: Sequence[int],
    path: Path,
    title: str = "",
) -> Path:
    """Per-class test accuracy of several runs, classes head to tail (one line per run).

    ``curves[label]`` holds one accuracy per class in the order of ``counts`` (the training
    images per class, printed under each class index).
    """
    order = np.argsort(-np.asarray(counts), kind="stable")
    k = len(order)
    fig = Figure(figsize=(max(5.6, 0.45 * min(k, TICKS_MAX) + 2.0), 3.8))
    ax = fig.add_subplot()
    cmap = _class_cmap(max(len(curves), 1))
    for i, (label, acc) in enumerate(curves.items()):
        y = np.array([np.nan if a is None else a for a in acc], dtype=np.float64)[order]
        ax.plot(np.arange(k), y, marker="o", ms=3, lw=1.4, color=cmap(i), label=label)
    if k <= TICKS_MAX:
        ax.set_xticks(np.arange(k))
        ax.set_xticklabels([f"{c}\n{counts[c]}" for c in order], fontsize=7)
        ax.set_xlabel("class (index, training images), head to tail")
    else:
        ax.set_xlabel("classes, head to tail")
    ax.set_ylim(-3, 103)
    ax.set_ylabel("test accuracy (%)")
    if title:
        ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower left")
    fig.tight_layout()
    return _save(fig, path)


def paper_vs_ours(
    points: Sequence[tuple[str, float, float, bool]],
    offset: float,
    tolerance: float,
    path: Path,
    title: str = "",
) -> Path:
    """Our top-1 against the paper's, one labelled point per (row, paper).

    ``points`` are (label, paper, ours, flagged). Drawn: y = x (the paper's number), y = x -
    ``offset`` (what a faithful run on a copy that costs ``offset`` points would give) and the
    band down to ``offset + tolerance`` below the paper; a point under the band is flagged (red).
    """
    fig = Figure(figsize=(6.4, 5.4))
    ax = fig.add_subplot()
    xs = [p[1] for p in points]
    ys = [p[2] for p in points]
    lo = math.floor(min(xs + ys) - offset - tolerance - 1)
    hi = math.ceil(max(xs + ys) + 1)
    grid = np.array([lo, hi], dtype=np.float64)
    ax.plot(grid, grid, ls="--", lw=1, color="0.5", label="ours = paper")
    if offset:
        ax.plot(
            grid, grid - offset, lw=1.2, color="tab:blue", label=f"paper - offset ({offset:.1f})"
        )
    ax.fill_between(
        grid,
        grid - offset - tolerance,
        grid - offset + tolerance,
        color="tab:blue",
        alpha=0.12,
        label=f"offset ± {tolerance:g} point",
    )
    placed: list[tuple[float, float]] = []  # label anchors so far (data units)
    span = hi - lo
    for label, x, y, flagged in sorted(points, key=lambda p: (-p[2], p[1])):
        ax.scatter([x], [y], s=22, color="tab:red" if flagged else "tab:blue", zorder=3)
        ly = y
        # labels of nearby points go one line lower each, joined to their point by a line
        while any(abs(px - x) < 0.2 * span and abs(py - ly) < 0.022 * span for px, py in placed):
            ly -= 0.025 * span
        placed.append((x, ly))
        ax.annotate(
            label,
            (x, y),
            xytext=(x + 0.012 * span, ly - 0.006 * span),
            textcoords="data",
            fontsize=6.5,
            arrowprops=None if ly == y else {"arrowstyle": "-", "lw": 0.4, "color": "0.6"},
        )
    ax.set_xlim(lo, hi)
    ax.set_ylim(lo, hi)
    ax.set_aspect("equal")
    ax.set_xlabel("paper's top-1 (%)")
    ax.set_ylabel("ours, top-1 (%)")
    if title:
        ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    return _save(fig, path)


def metric_vs_accuracy(
    labels: Sequence[str],
    accuracy: Sequence[float],
    panels: Sequence[tuple[str, Sequence[float]]],
    path: Path,
    title: str = "",
) -> Path:
    """A grid of scatter plots, one panel per metric: the metric (x) against ``accuracy`` (y),
    a point per entry of ``labels``, each labelled. ``panels`` are (panel title, values)."""
    cols = min(4, len(panels))
    rows = math.ceil(len(panels) / cols)
    fig = Figure(figsize=(3.4 * cols, 3.0 * rows + 0.4))
    acc = np.asarray(accuracy, dtype=np.float64)
    for i, (name, values) in enumerate(panels):
        ax = fig.add_subplot(rows, cols, i + 1)
        xs = np.asarray(values, dtype=np.float64)
        ax.scatter(xs, acc, s=14, color="tab:blue", zorder=3)
        for label, x, y in zip(labels, xs, acc, strict=True):
            ax.annotate(label, (x, y), xytext=(2, 2), textcoords="offset points", fontsize=4.5)
        ax.set_title(name, fontsize=8)
        ax.tick_params(labelsize=6)
        ax.grid(alpha=0.3)
        if i % cols == 0:
            ax.set_ylabel("test top-1 (%)", fontsize=7)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return _save(fig, path)


__all__ = [
    "accuracy_vs_size",
    "align_matrix",
    "angle_heatmap",
    "arb_similarity",
    "arb_similarity_matrix",
    "bars_side_by_side",
    "confusion_matrix",
    "embedding_2d",
    "epoch_curves",
    "etf_angle_deg",
    "metric_vs_accuracy",
    "norms_by_class_size",
    "pairwise_angles_deg",
    "paper_vs_ours",
    "per_class_lines",
    "transport_plan",
]
