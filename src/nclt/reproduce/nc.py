"""The neural-collapse sections of the report: each row's NC metrics, and their rank
correlation with accuracy across the rows of one imbalance factor."""

from __future__ import annotations

from dataclasses import dataclass

from nclt.report.compare import mean_std
from nclt.reproduce.markdown import markdown_table, pm
from nclt.reproduce.measure import Measured
from nclt.reproduce.rows import if_rank

# (results.json ``nc`` key, column title): training features at the last epoch
NC_COLUMNS = (
    ("nc1", "NC1"),
    ("equinorm_means", "equinorm μ"),
    ("equiangular_means", "equiangular μ"),
    ("maxangle_means", "max-angle μ"),
    ("equinorm_w", "equinorm W"),
    ("equiangular_w", "equiangular W"),
    ("self_duality", "self-duality"),
    ("nc4", "NC4"),
)
# the settings a results.json ``nc`` records, and how the NC section names them
NC_SETTINGS = (
    ("global_mean", "global mean"),
    ("within", "Σ_W averaged"),
    ("center_w", "classifier rows centred"),
)
NC_VALUES = {
    ("global_mean", "class"): "the mean of the class means",
    ("global_mean", "sample"): "the sample mean",
    ("within", "sample"): "over samples",
    ("within", "class"): "per class, then over classes",
    ("center_w", "True"): "yes",
    ("center_w", "False"): "no (raw W)",
}


def nc_section(found: dict[tuple[str, float], Measured]) -> str:
    """Markdown: the neural-collapse metrics of every measured row (mean over its seeds of
    the training features' metrics at the last epoch, results.json ``nc``), IF 100 first,
    then the rows by name. Empty when nothing was measured."""
    if not found:
        return ""
    keys = sorted(found, key=lambda k: (if_rank(k[1]), k[0]))
    rows = []
    settings: dict[str, set[str]] = {name: set() for name, _ in NC_SETTINGS}
    for key in keys:
        m = found[key]
        ncs = [r.results.get("nc") or {} for r in m.runs]
        for nc in ncs:
            for name, _ in NC_SETTINGS:
                if name in nc:
                    value = str(nc[name])
                    settings[name].add(NC_VALUES.get((name, value), value))
        cells = []
        for name, _ in NC_COLUMNS:
            mean, std, _n = mean_std([nc.get(name) for nc in ncs])
            cells.append(pm(mean, std, digits=3))
        rows.append([f"`{key[0]}`", f"{key[1]:g}", str(len(m.runs)), *cells])
    said = ", ".join(
        f"{title}: {' / '.join(sorted(settings[name])) or 'not recorded'}"
        + (" (differs between runs: see each results.json)" if len(settings[name]) > 1 else "")
        for name, title in NC_SETTINGS
    )
    return "\n".join(
        [
            "### Neural collapse of our runs",
            "",
            "The geometry each row ends with: metrics of the training features at the last "
            "epoch (results.json `nc`; definitions in docs/METRICS.md), mean over seeds "
            "(± sample std). Every column is 0 under exact collapse except NC4, the share of "
            "training samples whose classifier prediction is the nearest class mean (1 under "
            f"collapse). Settings: {said}.",
            "",
            markdown_table(["row", "IF", "seeds"] + [t for _, t in NC_COLUMNS], rows),
        ]
    )


#: a factor's NC-against-accuracy correlations are computed from this many rows on
NC_CORR_MIN_ROWS = 6
#: NC columns where a larger value means more collapse (every other: smaller)
_NC_LARGER_IS_COLLAPSE = frozenset({"nc4"})


def nc_points(
    found: dict[tuple[str, float], Measured], imbalance: float
) -> list[tuple[str, float, dict[str, float]]]:
    """(row, best-epoch top-1, {NC column: value}) of every row at ``imbalance`` whose runs
    recorded the NC metrics; both means over the row's seeds."""
    out = []
    for (row, f), m in sorted(found.items()):
        if f != imbalance:
            continue
        top1 = m.top1("best")[0]
        ncs = [r.results.get("nc") or {} for r in m.runs]
        values = {name: mean_std([nc.get(name) for nc in ncs])[0] for name, _ in NC_COLUMNS}
        if top1 is not None and all(v is not None for v in values.values()):
            out.append((row, top1, values))  # type: ignore[arg-type]  # no None left
    return out


def spearman(xs: list[float], ys: list[float]) -> tuple[float | None, float | None]:
    """Spearman's rank correlation and its two-sided p-value (scipy); (None, None) when
    either side is constant."""
    from scipy.stats import spearmanr

    if len(set(xs)) < 2 or len(set(ys)) < 2:
        return None, None
    res = spearmanr(xs, ys)
    return float(res.statistic), float(res.pvalue)


@dataclass
class NCCorrelation:
    """One NC column against the best-epoch top-1 across the rows of one imbalance factor."""

    name: str  # results.json ``nc`` key
    title: str
    values: list[float]  # one per row, in the order of ``nc_correlations``' rows
    rho: float | None
    p: float | None


def nc_correlations(
    found: dict[tuple[str, float], Measured],
) -> dict[float, tuple[list[tuple[str, float, dict[str, float]]], list[NCCorrelation]]]:
    """Per imbalance factor with at least ``NC_CORR_MIN_ROWS`` rows (factors in the papers'
    order): its rows (:func:`nc_points`) and each NC column's Spearman rho with their top-1."""
    out = {}
    for f in sorted({f for _, f in found}, key=if_rank):
        pts = nc_points(found, f)
        if len(pts) < NC_CORR_MIN_ROWS:
            continue
        acc = [p[1] for p in pts]
        corr = []
        for name, title in NC_COLUMNS:
            values = [p[2][name] for p in pts]
            corr.append(NCCorrelation(name, title, values, *spearman(values, acc)))
        out[f] = (pts, corr)
    return out


def nc_accuracy_section(found: dict[tuple[str, float], Measured]) -> str:
    """Markdown: does more collapse of the training features go with more test accuracy
    across our rows? Per imbalance factor with at least ``NC_CORR_MIN_ROWS`` rows, Spearman's
    rho between each NC column and the best-epoch top-1. Empty without such a factor."""
    parts = []
    for f, (pts, corr) in nc_correlations(found).items():
        rows, signif = [], []
        for c in corr:
            larger = c.name in _NC_LARGER_IS_COLLAPSE
            if c.rho is not None and c.p is not None and c.p < 0.05:
                agrees = (c.rho > 0) == larger
                signif.append(f"{c.title} (ρ {c.rho:+.2f}, {'with' if agrees else 'against'} NC)")
            rows.append(
                [
                    c.title,
                    "higher" if larger else "lower",
                    "-" if c.rho is None else f"{c.rho:+.2f}",
                    "-" if c.p is None else f"{c.p:.3f}",
                ]
            )
        parts += [
            "",
            f"IF {f:g}, {len(pts)} rows. Significant at p < 0.05: "
            + ("; ".join(signif) if signif else "none")
            + ".",
            "",
            markdown_table(["metric", "more collapse is", "ρ with top-1", "p"], rows),
        ]
    if not parts:
        return ""
    return "\n".join(
        [
            "### Neural collapse against accuracy",
            "",
            "The papers' premise is that imbalance keeps the features from collapsing and that "
            "restoring collapse restores accuracy. Across our rows at one imbalance factor: "
            "Spearman's ρ between each metric of the section above (training features, last "
            "epoch) and the best-epoch test top-1, with its two-sided p-value (scipy). If more "
            "collapse went with more accuracy, ρ would be negative (positive for NC4). The rows "
            "are not independent samples: a DRW row shares its sibling's first 160-180 epochs, "
            "a second stage its first stage's features.",
            *parts,
        ]
    )
