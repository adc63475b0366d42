"""``nclt compare RUN_DIR...``: one table across runs, mean +- std over seeds.

Runs are read from their ``results.json`` and ``config.yaml``. Runs whose configs differ only
by the seed (and by settings that do not change results: output folder, data root, device,
threads, progress bar, workers) form one group; a group's numbers are the mean and the
sample standard deviation (n - 1) over its runs, for the best and the last epoch. Config keys
that differ between groups (a sweep's keys) become columns. An empty class group (no few-shot
class) is "-" in the table and empty in the CSV, never 0.
"""

from __future__ import annotations

import csv
import json
import math
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from nclt.errors import NcltError

#: config keys (dotted) that never separate groups: they do not change a run's results.
IGNORED_KEYS = (
    "seed",
    "out",
    "progress",
    "threads",
    "device",
    "data.root",
    "data.download",
    "data.num_workers",
    "environment",
    "earlier_environments",
    "resolved_method_args",
)
#: config keys always shown as their own columns.
SHOWN_KEYS = ("method.name", "data.dataset", "data.imbalance")
ACCURACY = ("top1", "many", "medium", "few")
NC_KEYS = ("nc1", "equiangular_means", "equiangular_w", "self_duality", "nc4")


@dataclass
class RunRecord:
    """One finished run: its folder, results.json and flattened config."""

    path: Path
    results: dict[str, Any]
    config: dict[str, Any]  # dotted key -> value

    @property
    def seed(self) -> Any:
        return self.config.get("seed", self.results.get("seed"))


@dataclass
class Group:
    """Runs that differ only by seed."""

    key: tuple[tuple[str, str], ...]
    runs: list[RunRecord] = field(default_factory=list)


def flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"a": {"b": 1}} -> {"a.b": 1} (lists stay values)."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}.{k}" if prefix else str(k)
        if isinstance(v, dict) and v:
            out.update(flatten(v, key))
        else:
            out[key] = v
    return out


def _ignored(key: str) -> bool:
    return any(key == k or key.startswith(k + ".") for k in IGNORED_KEYS)


def find_runs(paths: list[str | Path]) -> list[Path]:
    """Run folders among ``paths``: a folder with results.json, else every folder below it
    that has one (so ``nclt compare SWEEP_OUT`` finds the whole grid)."""
    found: list[Path] = []
    for p in map(Path, paths):
        if (p / "results.json").is_file():
            found.append(p)
        elif p.is_dir():
            below = sorted(r.parent for r in p.rglob("results.json"))
            if not below:
                raise NcltError(f"{p}: no results.json in it or below it (a finished run?)")
            found.extend(below)
        else:
            raise NcltError(f"{p}: not a run folder")
    seen: set[Path] = set()
    return [p for p in found if not (p.resolve() in seen or seen.add(p.resolve()))]


def load_run(path: Path) -> RunRecord:
    try:
        results = json.loads((path / "results.json").read_text())
    except (OSError, ValueError) as e:
        raise NcltError(f"{path}/results.json cannot be read: {e}") from None
    cfg_path = path / "config.yaml"
    if cfg_path.is_file():
        config = yaml.safe_load(cfg_path.read_text()) or {}
    else:  # older or foreign run: the few keys results.json has
        config = {
            "method": {"name": results.get("method")},
            "data": {"dataset": results.get("dataset"), "imbalance": results.get("imbalance")},
            "epochs": results.get("epochs"),
            "seed": results.get("seed"),
        }
    return RunRecord(path, results, flatten(config))


def group_runs(runs: list[RunRecord]) -> list[Group]:
    """Group by every config key except the seed and the IGNORED_KEYS, in first-seen order."""
    groups: dict[tuple, Group] = {}
    for r in runs:
        key = tuple(
            sorted(
                (k, json.dumps(v, sort_keys=True, default=str))
                for k, v in r.config.items()
                if not _ignored(k)
            )
        )
        groups.setdefault(key, Group(key)).runs.append(r)
    return list(groups.values())


def varying_keys(groups: list[Group]) -> list[str]:
    """Config keys whose value differs between groups (a sweep's keys), SHOWN_KEYS excluded."""
    keys: dict[str, set[str]] = {}
    for g in groups:
        for k, v in g.key:
            keys.setdefault(k, set()).add(v)
    all_keys = set(keys)
    out = []
    for k in sorted(all_keys):
        if k in SHOWN_KEYS:
            continue
        present_in_all = all(any(k == gk for gk, _ in g.key) for g in groups)
        if len(keys[k]) > 1 or not present_in_all:
            out.append(k)
    return out


def mean_std(values: list[float | None]) -> tuple[float | None, float | None, int]:
    """(mean, sample std or None for one value, count) over the non-None finite values."""
    xs = [float(v) for v in values if isinstance(v, int | float) and math.isfinite(v)]
    if not xs:
        return None, None, 0
    return statistics.fmean(xs), (statistics.stdev(xs) if len(xs) > 1 else None), len(xs)


def summarize(groups: list[Group]) -> tuple[list[dict[str, Any]], list[str]]:
    """One row per group: shown keys, swept keys, seeds, and mean/std of every metric.

    Metric columns are ``{last|best}_{top1|many|medium|few}`` and ``nc_{key}`` (training
    features at the end of training), each with ``_mean`` and ``_std``.
    """
    swept = varying_keys(groups)
    rows = []
    for g in groups:
        cfg = dict(g.key)
        row: dict[str, Any] = {
            "method": g.runs[0].results.get("method") or json.loads(cfg.get("method.name", "null")),
            "dataset": g.runs[0].results.get("dataset"),
            "imbalance": g.runs[0].results.get("imbalance"),
        }
        for k in swept:
            row[k] = json.loads(cfg[k]) if k in cfg else None
        row["seeds"] = ",".join(str(r.seed) for r in g.runs)
        row["runs"] = len(g.runs)
        for which in ("last", "best"):
            for m in ACCURACY:
                vals = [(r.results.get(which) or {}).get(m) for r in g.runs]
                row[f"{which}_{m}_mean"], row[f"{which}_{m}_std"], _ = mean_std(vals)
            if which == "best":
                eps = [(r.results.get("best") or {}).get("epoch") for r in g.runs]
                row["best_epochs"] = ",".join("-" if e is None else str(e) for e in eps)
        for m in NC_KEYS:
            vals = [(r.results.get("nc") or {}).get(m) for r in g.runs]
            row[f"nc_{m}_mean"], row[f"nc_{m}_std"], _ = mean_std(vals)
        row["paths"] = ";".join(str(r.path) for r in g.runs)
        rows.append(row)
    return rows, swept


def _pm(mean: float | None, std: float | None, digits: int) -> str:
    if mean is None:
        return "-"
    return f"{mean:.{digits}f}" if std is None else f"{mean:.{digits}f} ± {std:.{digits}f}"


def _cell(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:g}"
    if isinstance(v, list | dict):
        return json.dumps(v)
    return str(v)


def format_table(rows: list[dict[str, Any]], swept: list[str]) -> str:
    """The printed table: mean ± std (std over seeds, n - 1) or the single value; "-" empty."""
    heads = ["method", "dataset", "IF", *swept, "n"]
    acc = [f"{w} {m}" for w in ("last", "best") for m in ACCURACY]
    nc = list(NC_KEYS)
    lines_data = []
    for r in rows:
        cells = [
            _cell(r["method"]),
            _cell(r["dataset"]),
            _cell(r["imbalance"]),
            *[_cell(r[k]) for k in swept],
            str(r["runs"]),
        ]
        cells += [
            _pm(r[f"{w}_{m}_mean"], r[f"{w}_{m}_std"], 2)
            for w in ("last", "best")
            for m in ACCURACY
        ]
        cells += [_pm(r[f"nc_{m}_mean"], r[f"nc_{m}_std"], 3) for m in NC_KEYS]
        lines_data.append(cells)
    header = heads + acc + nc
    widths = [
        max(len(h), *(len(c[i]) for c in lines_data)) if lines_data else len(h)
        for i, h in enumerate(header)
    ]
    n_left = len(heads) - 1

    def fmt(cells: list[str]) -> str:
        return "  ".join(
            c.ljust(w) if i < n_left else c.rjust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        )

    out = [fmt(header), fmt(["-" * w for w in widths])]
    out += [fmt(c) for c in lines_data]
    return "\n".join(out)


def write_csv(rows: list[dict[str, Any]], path: Path) -> None:
    """compare.csv: one row per group, numbers unrounded, empty cell for None."""
    if not rows:
        return
    cols = list(rows[0])
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=cols)
        w.writeheader()
        for r in rows:
            w.writerow(
                {
                    k: "" if v is None else (json.dumps(v) if isinstance(v, list | dict) else v)
                    for k, v in r.items()
                }
            )


def group_label(row: dict[str, Any], swept: list[str], vary: set[str]) -> str:
    parts = [str(row[k]) for k in ("method", "dataset", "imbalance") if k in vary]
    parts += [f"{k.split('.')[-1]}={_cell(row[k])}" for k in swept]
    return " ".join(parts) or str(row["method"])


def write_figure(rows: list[dict[str, Any]], swept: list[str], path: Path) -> Path:
    """compare.png: last and best top-1 / many / medium / few, one bar per group (+- std)."""
    from nclt.report.figures import bars_side_by_side

    vary = {
        k for k in ("method", "dataset", "imbalance") if len({_cell(r[k]) for r in rows}) > 1
    } or {"method"}
    labels = [group_label(r, swept, vary) for r in rows]
    means: dict[str, list[float | None]] = {}
    stds: dict[str, list[float | None]] = {}
    titles = ["last epoch", "best epoch"]
    for title, which in zip(titles, ("last", "best"), strict=True):
        means[title] = [r[f"{which}_{m}_mean"] for r in rows for m in ACCURACY]
        stds[title] = [r[f"{which}_{m}_std"] for r in rows for m in ACCURACY]
    return bars_side_by_side(labels, list(ACCURACY), means, stds, titles, path)


def compare(paths: list[str | Path], out: str | Path = ".") -> tuple[str, list[dict[str, Any]]]:
    """``nclt compare``: find, group and summarize runs; write compare.csv and compare.png.

    Returns:
        (the printed table, the rows of compare.csv).
    """
    runs = [load_run(p) for p in find_runs(paths)]
    if not runs:
        raise NcltError("no run to compare")
    groups = group_runs(runs)
    rows, swept = summarize(groups)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    write_csv(rows, out / "compare.csv")
    write_figure(rows, swept, out / "compare.png")
    return format_table(rows, swept), rows
