"""``nclt report``: figures and one self-contained ``report.html`` for a run or checkpoint.

:func:`write_report` draws every figure of :class:`~nclt.report.data.ReportData` into a folder
and writes ``report.html`` beside them (relative PNG links, inline CSS, no script). A figure
whose data is missing (per-epoch NC columns not logged, no ETF possible) becomes a note in the
page instead of an error. docs/REPORT.md describes each figure.
"""

from __future__ import annotations

import html
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from nclt.report import figures as F
from nclt.report.data import ReportData, collect

log = logging.getLogger("nclt")

#: metrics.csv columns of the per-epoch NC curves (written when ``nc_every`` > 0).
NC_CURVES = ("nc/equiangular_means", "nc/equiangular_w", "nc/self_duality", "nc/nc1")
TRACE_COLUMNS = ("nc/trace_sw", "nc/trace_sb", "nc/trace_st")


@dataclass
class FigureEntry:
    """One section of the page: a PNG, or a note saying why there is none."""

    key: str
    title: str
    caption: str  # what the figure shows and what the ideal looks like (one line)
    source: str  # the paper figure it reproduces
    file: str | None = None
    note: str | None = None


def _series(history: list[dict[str, Any]], column: str) -> tuple[np.ndarray, np.ndarray]:
    pts = [(r.get("epoch"), r.get(column)) for r in history]
    pts = [(e, v) for e, v in pts if e is not None and v is not None]
    return np.array([e for e, _ in pts]), np.array([v for _, v in pts], dtype=np.float64)


def curve_figures(data: ReportData, out: Path) -> list[FigureEntry]:
    """The per-epoch figures from metrics.csv; a note instead of a PNG for missing columns."""
    out.mkdir(parents=True, exist_ok=True)
    entries: list[FigureEntry] = []
    h = data.history
    hint = "train with --set nc_every=N to log NC metrics every N epochs into metrics.csv"
    # NC curves (AllNC Fig. 3-4)
    e = FigureEntry(
        "nc_curves",
        "Equiangularity, self-duality and NC1 over training",
        "std of pairwise cosines of centered class means and classifier vectors (AllNC Eq. 6-7), "
        "self-duality (Eq. 4) and NC1 on the training features; ideal: all fall to 0.",
        "AllNC Fig. 3 and 4",
    )
    cols = [c for c in NC_CURVES if len(_series(h, c)[0])]
    if not h:
        e.note = f"No metrics.csv in {data.run_dir}: no per-epoch curves."
    elif not cols:
        e.note = f"metrics.csv has no per-epoch NC columns ({', '.join(NC_CURVES)}); {hint}."
    else:
        labels = {
            "nc/equiangular_means": ("std cos, class means", "-"),
            "nc/equiangular_w": ("std cos, classifier", "--"),
            "nc/self_duality": ("self-duality (NC3)", "-"),
            "nc/nc1": ("NC1", "-"),
        }
        series, epochs, panels = [], [], []
        groups = [
            [c for c in ("nc/equiangular_means", "nc/equiangular_w") if c in cols],
            [c for c in ("nc/self_duality",) if c in cols],
            [c for c in ("nc/nc1",) if c in cols],
        ]
        titles = []
        for g, t in zip(groups, ("std of cosines", "self-duality", "NC1"), strict=True):
            if not g:
                continue
            panels.append([])
            titles.append(t)
            for c in g:
                x, y = _series(h, c)
                panels[-1].append(len(series))
                series.append((labels[c][0], y, labels[c][1]))
                epochs.append(x)
        F.epoch_curves(
            epochs,
            series,
            "training features, per logged epoch",
            "",
            out / "nc_curves.png",
            log=True,
            panels=panels,
            panel_titles=titles,
        )
        e.file = "nc_curves.png"
        missing = [c for c in NC_CURVES if c not in cols]
        if missing:
            e.note = f"not logged: {', '.join(missing)}"
    entries.append(e)
    # covariance traces (DisA Fig. 3)
    e = FigureEntry(
        "covariance_traces",
        "Covariance traces over training",
        "Tr(Sigma_W) dotted, Tr(Sigma_B) solid, Tr(Sigma_T) dashed (averages, not sums; "
        "docs/METRICS.md); ideal: Tr(Sigma_W) falls toward 0 while Tr(Sigma_B) stays.",
        "DisA Fig. 3",
    )
    cols = [c for c in TRACE_COLUMNS if len(_series(h, c)[0])]
    if not h:
        e.note = f"No metrics.csv in {data.run_dir}: no per-epoch curves."
    elif not cols:
        e.note = (
            f"metrics.csv has no covariance-trace columns ({', '.join(TRACE_COLUMNS)}); {hint}."
        )
    else:
        style = {"nc/trace_sw": ":", "nc/trace_sb": "-", "nc/trace_st": "--"}
        name = {
            "nc/trace_sw": "Tr Sigma_W",
            "nc/trace_sb": "Tr Sigma_B",
            "nc/trace_st": "Tr Sigma_T",
        }
        xs, series = [], []
        for c in cols:
            x, y = _series(h, c)
            xs.append(x)
            series.append((name[c], y, style[c]))
        F.epoch_curves(
            xs,
            series,
            "as logged in metrics.csv (training features)",
            "trace",
            out / "covariance_traces.png",
            log=True,
        )
        e.file = "covariance_traces.png"
    entries.append(e)
    # accuracy curves
    e = FigureEntry(
        "accuracy_curves",
        "Accuracy over training",
        "test top-1 and many / medium / few per evaluated epoch, train top-1; ideal: "
        "the few-shot curve close to the many-shot one.",
        "-",
    )
    cols = [
        c for c in ("test_top1", "many", "medium", "few", "train_top1") if len(_series(h, c)[0])
    ]
    if not cols:
        e.note = (
            "No accuracy columns in metrics.csv."
            if h
            else f"No metrics.csv in {data.run_dir}: no per-epoch curves."
        )
    else:
        xs, series = [], []
        for c in cols:
            x, y = _series(h, c)
            xs.append(x)
            series.append((c, y, "--" if c == "train_top1" else "-"))
        F.epoch_curves(xs, series, "", "accuracy (%)", out / "accuracy_curves.png")
        e.file = "accuracy_curves.png"
    entries.append(e)
    return entries


def transport_matrices(data: ReportData) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """DisA's align matrix A = mean over batches of L_b^T T_b (K, K), and one batch's plan.

    The seeded subsample of training features is shuffled (seed ``data.sample_seed``) and cut
    into batches of the run's batch size (a trailing partial batch is dropped when a full one
    exists); each batch's plan T_b (B, K) sums to 1, so A sums to 1. The displayed plan is the
    first min(B, 64) samples of the shuffled order, solved on their own.

    Returns:
        (A (K, K), plan (b, K), labels (b,), number of batches).
    """
    import torch

    from nclt.losses.geometry import transport_plan

    assert data.etf is not None
    k = data.num_classes
    feats = torch.as_tensor(data.sample_features, dtype=torch.float64)
    labels = torch.as_tensor(data.sample_labels, dtype=torch.long)
    etf = torch.as_tensor(data.etf, dtype=torch.float64)
    perm = torch.as_tensor(np.random.default_rng(data.sample_seed).permutation(len(labels)))
    b = max(1, min(data.batch_size, len(labels)))
    starts = list(range(0, len(labels) - b + 1, b)) or [0]
    a = torch.zeros(k, k, dtype=torch.float64)
    for s in starts:
        idx = perm[s : s + b]
        plan = transport_plan(feats[idx], etf, data.ot_epsilon, data.ot_iterations)
        a += torch.nn.functional.one_hot(labels[idx], k).double().T @ plan
    a /= len(starts)
    idx = perm[: min(b, 64)]
    plan = transport_plan(feats[idx], etf, data.ot_epsilon, data.ot_iterations)
    return a.numpy(), plan.numpy(), labels[idx].numpy(), len(starts)


def tsne_points(data: ReportData) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None:
    """t-SNE of the feature subsample plus the class means and classifier markers (2-D).

    Classifier vector k is placed at mu_G + ||mu_k - mu_G|| * w_k / ||w_k|| (w centered when
    ``center_w``): the point where mu_k would be under exact self-duality, so that the gap
    between a star and its triangle shows how far the classifier is from its class mean.

    Returns:
        (feature points (M, 2), mean points (P, 2), classifier points (P, 2), present classes
        (P,)), or None with fewer than 5 features.
    """
    from sklearn.manifold import TSNE
    from threadpoolctl import threadpool_limits

    x = data.sample_features.astype(np.float64)
    if len(x) < 5:
        return None
    present = np.flatnonzero(np.isfinite(data.class_means).all(axis=1))
    centered = data.centered_means()[present]
    w = data.classifier_vectors()[present]
    w_unit = w / np.maximum(np.linalg.norm(w, axis=1, keepdims=True), 1e-300)
    w_pts = data.global_mean[None, :] + np.linalg.norm(centered, axis=1, keepdims=True) * w_unit
    allx = np.concatenate([x, data.class_means[present], w_pts])
    perplexity = float(min(30.0, max(2.0, (len(allx) - 1) / 3.0)))
    # One thread: OpenMP's spinning threads make Barnes-Hut t-SNE 30x slower on a shared,
    # loaded CPU (measured: 0.8 s vs 30 s for 274 points on 2 busy cores); one thread is
    # also reproducible whatever the machine.
    with threadpool_limits(limits=1):
        emb = TSNE(
            n_components=2,
            perplexity=perplexity,
            init="pca",
            learning_rate="auto",
            random_state=data.sample_seed,
        ).fit_transform(allx)
    m, p = len(x), len(present)
    return emb[:m], emb[m : m + p], emb[m + p :], present


#: metrics.csv column prefix of ARB Fig. 5's data: ``grad_w/<j>`` = norm of the component of
#: the gradient of the rarest class's classifier vector due to class j's samples (epoch mean),
#: written during training with ``grad_probe: true`` (nclt.runner.GradProbe).
GRAD_PREFIX = "grad_w/"


def gradient_figure(data: ReportData, out: Path) -> FigureEntry:
    """ARB Fig. 5 from ``grad_w/<j>`` columns of metrics.csv, or a note while not logged."""
    e = FigureEntry(
        "gradient_components",
        "Per-class gradient components of a minority classifier vector",
        "norms of the components of the gradient of the rarest class's classifier vector due "
        "to each other class's samples, over training; ideal: balanced components (no head "
        "class dominating the repulsion).",
        "ARB Fig. 5",
    )
    cols = sorted({c for r in data.history for c in r if c.startswith(GRAD_PREFIX)})
    cols = [c for c in cols if len(_series(data.history, c)[0])]
    if not cols:
        e.note = (
            "Not logged for this run: train with --set grad_probe=true to record the "
            f"per-class gradient components ({GRAD_PREFIX}<class> columns of metrics.csv)."
        )
        return e
    xs, series = [], []
    rarest = int(np.argmin(data.class_counts))
    for c in cols:
        x, y = _series(data.history, c)
        xs.append(x)
        j = c[len(GRAD_PREFIX) :]
        name = data.class_names[int(j)] if j.isdigit() and int(j) < data.num_classes else j
        role = " (attraction)" if j.isdigit() and int(j) == rarest else ""
        series.append((f"from {name}{role}", y, "-"))
    F.epoch_curves(
        xs,
        series,
        "gradient of the rarest class's classifier vector",
        "norm",
        out / "gradient_components.png",
        log=True,
    )
    e.file = "gradient_components.png"
    return e


def transport_figures(data: ReportData, out: Path) -> list[FigureEntry]:
    """DisA's align matrix and one batch's transport plan, or notes saying why not."""
    names, order = data.class_names, data.order
    out.mkdir(parents=True, exist_ok=True)
    e_align = FigureEntry("align_matrix", "DisA align matrix A = L^T T", "", "DisA Fig. 2")
    e_plan = FigureEntry("transport_plan", "Transport plan of one batch", "", "DisA Fig. 5")
    if data.etf is None:
        e_align.note = e_plan.note = f"Not drawn: {data.etf_source}."
        e_align.caption = e_plan.caption = "needs a simplex ETF of the feature dimension."
    elif len(data.sample_labels) == 0:
        e_align.note = e_plan.note = "Not drawn: no training feature."
    else:
        a, plan, plan_labels, nb = transport_matrices(data)
        F.align_matrix(a, names, order, out / "align_matrix.png")
        F.transport_plan(plan, plan_labels, names, order, out / "transport_plan.png")
        common = (
            f"entropic OT (epsilon {data.ot_epsilon:g}, {data.ot_iterations} iterations) "
            f"between batches of {min(data.batch_size, len(data.sample_labels))} training "
            f"features and the ETF vertices; ETF from {data.etf_source}"
        )
        e_align.caption = (
            f"A_(k,k') = transported mass from class k's samples to vertex k', "
            f"mean of {nb} batches; {common}; ideal: a diagonal with equal "
            f"entries whatever the class size."
        )
        e_plan.caption = (
            f"T_ik for {len(plan_labels)} samples sorted by label; {common}; "
            "ideal: each row's mass on its own class's column, more mass per "
            "sample for minority samples."
        )
        e_align.file, e_plan.file = "align_matrix.png", "transport_plan.png"
        if data.ot_epsilon >= 0.5:
            e_align.note = e_plan.note = (
                f"At epsilon {data.ot_epsilon:g} the plan is nearly "
                "uniform (costs lie in [0, 2]); use --ot-epsilon 0.1 "
                "for a sharper picture."
            )
    return [e_align, e_plan]


def draw_figures(data: ReportData, out: Path) -> list[FigureEntry]:
    """Write every PNG into ``out``; returns the page's sections in order."""
    out.mkdir(parents=True, exist_ok=True)
    names, order, k = data.class_names, data.order, data.num_classes
    opts = data.nc_options
    gm = "mean of class means" if opts["global_mean"] == "class" else "sample mean"
    wc = "centered by their mean" if opts["center_w"] else "raw"
    entries: list[FigureEntry] = []
    opt = F.etf_angle_deg(k) if k > 1 else float("nan")

    F.angle_heatmap(
        data.centered_means(),
        names,
        order,
        f"centered class means (mu_G = {gm})",
        out / "angles_means.png",
    )
    entries.append(
        FigureEntry(
            "angles_means",
            "Pairwise angles of the centered class means",
            f"degrees between mu_k - mu_G (mu_G = {gm}); ideal: every cell at arccos(-1/(K-1)) = "
            f"{opt:.1f} deg (white); blue cells are compressed pairs (minority collapse).",
            "AllNC Fig. 2(a-b) and 7, INC Fig. 2, DisA Fig. 7",
            "angles_means.png",
        )
    )
    F.angle_heatmap(
        data.classifier_vectors(),
        names,
        order,
        f"classifier vectors ({wc})",
        out / "angles_classifier.png",
    )
    entries.append(
        FigureEntry(
            "angles_classifier",
            "Pairwise angles of the classifier vectors",
            f"degrees between classifier vectors ({wc}); "
            f"ideal: every cell at {opt:.1f} deg (white).",
            "AllNC Fig. 2(c-d) and 7",
            "angles_classifier.png",
        )
    )

    entries += curve_figures(data, out)

    w_label = "||w_k - w_G||" if opts["center_w"] else "||w_k||"
    F.norms_by_class_size(
        np.linalg.norm(data.centered_means(), axis=1),
        np.linalg.norm(data.classifier_vectors(), axis=1),
        data.class_counts,
        names,
        order,
        w_label,
        out / "norms.png",
    )
    entries.append(
        FigureEntry(
            "norms",
            "Norms of centered class means and classifier vectors by class size",
            "bars over classes by decreasing training count (count under each name); ideal: equal "
            "bars (equinorm, NC2); minority classes usually get shorter ones.",
            "INC Fig. 3",
            "norms.png",
        )
    )

    F.accuracy_vs_size(
        data.test["per_class"],
        data.class_counts,
        data.groups,
        out / "per_class_accuracy.png",
        names,
    )
    entries.append(
        FigureEntry(
            "per_class_accuracy",
            "Per-class test accuracy against class size",
            f"one dot per class, log training count, coloured by group ({data.group_rule} rule); "
            "ideal: a flat line, no drop toward the small classes.",
            "-",
            "per_class_accuracy.png",
        )
    )

    F.confusion_matrix(np.asarray(data.test["confusion"]), names, order, out / "confusion.png")
    entries.append(
        FigureEntry(
            "confusion",
            "Confusion matrix (row-normalized)",
            "rows: true class, columns: predicted class, classes by decreasing training count; "
            "ideal: the identity (no mass left of the diagonal pulled toward head classes).",
            "DisA Fig. 6",
            "confusion.png",
        )
    )

    if k > 1:
        balance = {key: data.nc.get(key) for key in ("B_D", "B_A", "B_L")}
        F.arb_similarity_matrix(
            F.arb_similarity(data.head_weight), names, order, balance, out / "arb_similarity.png"
        )
        entries.append(
            FigureEntry(
                "arb_similarity",
                "Normalized classifier-weight similarity (ARB Eq. 20)",
                f"M_ij = w_i.w_j / sum_(j' != i) w_i.w_j' on the raw classifier, diagonal blank, "
                f"ARB balance metrics below (variance form, docs/METRICS.md); ideal: every cell "
                f"1/(K-1) = {1 / (k - 1):.3g} (white) and B_D = B_A = B_L = 0.",
                "ARB Fig. 4, Eq. 20-22",
                "arb_similarity.png",
            )
        )

    entries += transport_figures(data, out)

    e = FigureEntry(
        "tsne",
        "t-SNE of training features",
        f"{len(data.sample_labels)} of {data.num_train} un-augmented training features "
        f"(seeded uniform subsample, seed {data.sample_seed}), class means (stars) and classifier "
        "vectors (triangles, placed at mu_G + ||mu_k - mu_G|| w_k/||w_k||); ideal: tight, "
        "well separated clusters with each triangle on its star.",
        "DisA Fig. 4",
    )
    pts = tsne_points(data)
    if pts is None:
        e.note = "Not drawn: fewer than 5 training features."
    else:
        fp, mp, wp, present = pts
        F.embedding_2d(fp, data.sample_labels, mp, present, wp, names, out / "tsne.png")
        e.file = "tsne.png"
    entries.append(e)

    entries.append(gradient_figure(data, out))
    return entries


def _fmt(v: Any, digits: int = 2) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        if not np.isfinite(v):
            return "-"
        return f"{v:.{digits}f}" if abs(v) >= 1e-3 or v == 0 else f"{v:.3g}"
    return html.escape(str(v))


NC_ROWS = (
    ("nc1", "NC1: Tr(Sigma_W Sigma_B^+)/K", "0"),
    ("equinorm_means", "equinorm of centered means (std/mean of norms)", "0"),
    ("equiangular_means", "std of cosines, centered means (AllNC Eq. 6)", "0"),
    ("maxangle_means", "mean |cos + 1/(K-1)|, centered means", "0"),
    ("equinorm_w", "equinorm of classifier vectors", "0"),
    ("equiangular_w", "std of cosines, classifier vectors (AllNC Eq. 7)", "0"),
    ("maxangle_w", "mean |cos + 1/(K-1)|, classifier vectors", "0"),
    ("self_duality", "self-duality NC3 (AllNC Eq. 4)", "0"),
    ("nc4", "NC4: share agreeing with the nearest class mean", "1"),
    ("trace_sw", "Tr Sigma_W", "0"),
    ("trace_sb", "Tr Sigma_B", "-"),
    ("trace_st", "Tr Sigma_T", "-"),
    ("B_D", "ARB B_D (dot products)", "0"),
    ("B_A", "ARB B_A (cosines)", "0"),
    ("B_L", "ARB B_L (norms)", "0"),
)

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:1.5em auto;
max-width:1100px;color:#222;padding:0 1em}
h1{font-size:1.4em}h2{font-size:1.15em;margin-top:1.6em;border-bottom:1px solid #ddd}
table{border-collapse:collapse;margin:.6em 0;font-size:.9em}
td,th{border:1px solid #ccc;padding:.25em .6em;text-align:right}
th{background:#f4f4f4}td:first-child,th:first-child,td.l{text-align:left}
figure{margin:1em 0}img{max-width:100%;height:auto;border:1px solid #eee}
figcaption{font-size:.9em;color:#444}.note{background:#fff8e1;border-left:4px solid #f0b400;
padding:.4em .8em;font-size:.9em}.src{color:#777;font-size:.85em}code{font-size:.95em}
"""


def render_html(data: ReportData, entries: list[FigureEntry]) -> str:
    """The page (a string): summary tables, then every figure with its caption or note."""
    esc = html.escape
    k = data.num_classes
    t = data.test
    rows = [(f"checkpoint {data.checkpoint.name} (epoch {data.epoch}), measured now", t)]
    if data.best is not None:
        rows.append((f"best (epoch {data.best.get('epoch')}), as recorded", data.best))
    res = data.results or {}
    if res.get("last") and data.checkpoint.name != "last.pt":
        rows.append((f"last (epoch {res.get('epochs')}), results.json", res["last"]))
    acc = "".join(
        f"<tr><td>{esc(name)}</td>"
        + "".join(f"<td>{_fmt(d.get(c))}</td>" for c in ("top1", "many", "medium", "few"))
        + "</tr>"
        for name, d in rows
    )
    groups = ", ".join(f"{g} {len(v)}" for g, v in data.groups.items())
    nc = data.nc
    opts = data.nc_options
    nc_rows = "".join(
        f'<tr><td><code>{key}</code></td><td class="l">{esc(desc)}</td>'
        f"<td>{_fmt(nc.get(key), 4)}</td><td>{ideal}</td></tr>"
        for key, desc, ideal in NC_ROWS
        if key in nc
    )
    grp = nc.get("groups") or {}
    grp_rows = "".join(
        f"<tr><td>{g}</td><td>{_fmt((grp.get(g) or {}).get('num_classes'))}</td>"
        f"<td>{_fmt((grp.get(g) or {}).get('nc1'), 4)}</td>"
        f"<td>{_fmt((grp.get(g) or {}).get('angle_means'), 1)}</td>"
        f"<td>{_fmt((grp.get(g) or {}).get('angle_w'), 1)}</td></tr>"
        for g in ("many", "medium", "few")
    )
    opt_txt = (
        f"global_mean = {opts['global_mean']}, within = {opts['within']}, center_w = "
        f"{opts['center_w']}, rtol = 1e-10; un-augmented training features the "
        f"classifier reads ({data.num_train} images, feature dimension "
        f"{data.feature_dim})"
    )
    body = []
    for e in entries:
        parts = [f'<section id="{e.key}"><h2>{esc(e.title)}</h2>']
        if e.file:
            parts.append(
                f'<figure><img src="{esc(e.file)}" alt="{esc(e.title)}">'
                f'<figcaption>{esc(e.caption)} <span class="src">[{esc(e.source)}]'
                "</span></figcaption></figure>"
            )
        else:
            parts.append(f'<p>{esc(e.caption)} <span class="src">[{esc(e.source)}]</span></p>')
        if e.note:
            parts.append(f'<p class="note">{esc(e.note)}</p>')
        parts.append("</section>")
        body.append("".join(parts))
    toc = " &middot; ".join(
        f'<a href="#{e.key}">{esc(e.title.split(" (")[0])}</a>' for e in entries
    )
    title = (
        f"nclt report: {data.method} on {data.dataset} (IF {data.imbalance:g}, seed {data.seed})"
    )
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{esc(title)}</title><style>{CSS}</style></head>
<body>
<h1>{esc(title)}</h1>
<p>Run folder <code>{esc(str(data.run_dir))}</code>, checkpoint <code>{esc(data.checkpoint.name)}
</code> (epoch {data.epoch}); {k} classes ({esc(groups)}; {esc(data.group_rule)} rule),
training counts {int(data.class_counts.max())} to {int(data.class_counts.min())}.</p>
<h2>Summary</h2>
<table><tr><th>test accuracy (%)</th><th>top-1</th><th>many</th><th>medium</th><th>few</th></tr>
{acc}</table>
<p>Neural collapse of the checkpoint ({esc(opt_txt)}):</p>
<table><tr><th>metric</th><th>meaning</th><th>value</th><th>ideal</th></tr>{nc_rows}</table>
<table><tr><th>group</th><th>classes</th><th>NC1</th><th>mean angle, means (deg)</th>
<th>mean angle, classifier (deg)</th></tr>{grp_rows}</table>
<p class="src">ETF angle arccos(-1/(K-1)) = {F.etf_angle_deg(k) if k > 1 else float("nan"):.1f}
deg. An empty group is "-".</p>
<p>{toc}</p>
{"".join(body)}
</body></html>
"""


def write_report(data: ReportData, out: str | Path) -> Path:
    """Draw the figures and write ``out/report.html``; returns the page's path."""
    out = Path(out)
    entries = draw_figures(data, out)
    page = out / "report.html"
    page.write_text(render_html(data, entries), encoding="utf-8")
    return page


def build_report(path: str | Path, out: str | Path | None = None, **collect_kwargs: Any) -> Path:
    """``nclt report``: collect a run folder or checkpoint, then :func:`write_report`.

    ``out`` defaults to ``<folder of the checkpoint>/report``.
    """
    data = collect(path, **collect_kwargs)
    return write_report(data, Path(out) if out else data.run_dir / "report")
