"""The report's figures (per-class accuracy, ours against the papers, NC against accuracy)
and the Markdown block that links them."""

from __future__ import annotations

from pathlib import Path

from nclt.reproduce.nc import nc_correlations
from nclt.reproduce.offsets import TOLERANCE
from nclt.reproduce.rows import if_rank
from nclt.reproduce.tables import Report


def per_class_figures(report: Report, out_dir: str | Path) -> dict[float, Path]:
    """One PNG per imbalance factor with measured rows: each row's per-class test accuracy at
    its best epoch (mean over seeds), head to tail. Returns {IF: path}."""
    import numpy as np

    from nclt.report.figures import per_class_lines

    by_if: dict[float, dict[str, list[float]]] = {}
    counts: dict[float, list[int]] = {}
    for (row, imbalance), m in sorted(report.found.items(), key=lambda kv: kv[0]):
        per_run = [(r.results.get("best") or {}).get("per_class") for r in m.runs]
        per_run = [pc for pc in per_run if pc]
        if not per_run:
            continue
        mean = np.nanmean(np.array(per_run, dtype=np.float64), axis=0)
        seeds = f"{len(per_run)} seed" + ("s" if len(per_run) > 1 else "")
        label = f"{row} (mean {float(np.nanmean(mean)):.1f}, {seeds})"
        by_if.setdefault(imbalance, {})[label] = mean.tolist()
        counts.setdefault(imbalance, list(m.runs[0].results.get("class_counts") or []))
    out_dir = Path(out_dir)
    paths: dict[float, Path] = {}
    for imbalance in sorted(by_if, key=if_rank):
        if len(counts[imbalance]) != len(next(iter(by_if[imbalance].values()))):
            continue  # results without class_counts: nothing to order the classes by
        out_dir.mkdir(parents=True, exist_ok=True)
        paths[imbalance] = per_class_lines(
            by_if[imbalance],
            counts[imbalance],
            out_dir / f"per_class_IF{imbalance:g}.png",
            f"CIFAR-10-LT IF {imbalance:g}: per-class top-1 at the best epoch (mean over seeds)",
        )
    return paths


def paper_figures(report: Report, out_dir: str | Path) -> dict[float, Path]:
    """One PNG per imbalance factor with measured rows: ours against each paper's number
    (a point per paper that publishes the row), with the JPEG offset and its tolerance band.
    Returns {IF: path}."""
    from nclt.report.figures import paper_vs_ours

    # one point per (row, published number, ours): papers quoting the same number share it
    merged: dict[tuple[float, str, float, float, bool], list[str]] = {}
    for key in report.papers:
        for ln in report.lines[key]:
            if ln.ours is not None:
                at = (ln.pub.imbalance, ln.pub.row, ln.pub.top1, ln.ours, ln.flagged)
                merged.setdefault(at, []).append(key)
    by_if: dict[float, list[tuple[str, float, float, bool]]] = {}
    for (imbalance, row, paper, ours, flagged), keys in merged.items():
        label = f"{row} ({', '.join(keys)})"
        by_if.setdefault(imbalance, []).append((label, paper, ours, flagged))
    out_dir = Path(out_dir)
    paths: dict[float, Path] = {}
    for imbalance in sorted(by_if, key=if_rank):
        out_dir.mkdir(parents=True, exist_ok=True)
        offset = report.offsets[imbalance].used
        paths[imbalance] = paper_vs_ours(
            by_if[imbalance],
            offset,
            TOLERANCE,
            out_dir / f"paper_vs_ours_IF{imbalance:g}.png",
            f"CIFAR-10-LT IF {imbalance:g}: ours ({report.basis} epoch where the paper does not "
            "say) against the paper",
        )
    return paths


def nc_accuracy_figures(report: Report, out_dir: str | Path) -> dict[float, Path]:
    """One PNG per imbalance factor with at least ``NC_CORR_MIN_ROWS`` rows: each NC column
    against the best-epoch top-1, a labelled point per row, rho in each panel's title.
    Returns {IF: path}."""
    from nclt.report.figures import metric_vs_accuracy

    out_dir = Path(out_dir)
    paths: dict[float, Path] = {}
    for imbalance, (pts, corr) in nc_correlations(report.found).items():
        panels = [
            (c.title + ("" if c.rho is None else f"  (ρ {c.rho:+.2f})"), c.values) for c in corr
        ]
        out_dir.mkdir(parents=True, exist_ok=True)
        paths[imbalance] = metric_vs_accuracy(
            [p[0] for p in pts],
            [p[1] for p in pts],
            panels,
            out_dir / f"nc_vs_accuracy_IF{imbalance:g}.png",
            f"CIFAR-10-LT IF {imbalance:g}: neural collapse of the training features (last "
            "epoch) against test top-1 (best epoch), one point per row",
        )
    return paths


def figures_block(
    paths: dict[float, Path],
    doc: str | Path,
    against: dict[float, Path] | None = None,
    nc_accuracy: dict[float, Path] | None = None,
) -> str:
    """Markdown linking the figures (per-class accuracy, ``against``: ours against the
    papers, ``nc_accuracy``: NC metrics against accuracy), relative to ``doc``'s folder."""
    base = Path(doc).resolve().parent
    out = []
    for title, figs, alt in (
        ("Ours against the papers", against or {}, "ours against the papers"),
        ("Per-class accuracy", paths, "per-class accuracy"),
        ("Neural collapse against accuracy, drawn", nc_accuracy or {}, "NC against accuracy"),
    ):
        if figs:
            out += ["", f"### {title}", ""]
            for imbalance, path in figs.items():
                rel = Path(path).resolve().relative_to(base).as_posix()
                out.append(f"![{alt}, IF {imbalance:g}]({rel})")
    return "\n".join(out) + "\n" if out else ""
