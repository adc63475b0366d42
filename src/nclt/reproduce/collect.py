"""``nclt reproduce --collect``: copy a finished run's committed files into results/."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from nclt.errors import NcltError, closest
from nclt.reproduce.rows import (
    DATASET,
    RUN_FILES,
    STAGE2_ROWS,
    expected_run,
    known_rows,
    row_dir,
    row_runs,
)


def read_results(run: Path) -> dict[str, Any]:
    try:
        return json.loads((run / "results.json").read_text())
    except (OSError, ValueError) as e:
        raise NcltError(f"{run}/results.json cannot be read: {e}") from None


def _source_runs(run_dir: Path) -> list[Path]:
    if (run_dir / "results.json").is_file():
        return [run_dir]
    runs = row_runs(run_dir)
    if not runs:
        raise NcltError(
            f"{run_dir}: no results.json in it nor in seed*/ below it (a finished nclt run?)"
        )
    return runs


def _collected(dest: Path) -> tuple[str | None, set[str]]:
    """The seed of the run at the top of a row folder (None) and the seeds of its seed*/."""
    top_seed = str(read_results(dest).get("seed")) if (dest / "results.json").is_file() else None
    seed_dirs = {p.name[4:] for p in dest.glob("seed*") if (p / "results.json").is_file()}
    return top_seed, seed_dirs


def collected_seeds(results: str | Path, row: str, imbalance: float) -> set[int]:
    """The seeds of ``row`` at ``imbalance`` that results/ already holds."""
    top_seed, seed_dirs = _collected(row_dir(results, row, imbalance))
    seeds = seed_dirs | ({top_seed} if top_seed is not None else set())
    return {int(s) for s in seeds if s.lstrip("-").isdigit()}


def collect(
    run_dir: str | Path,
    row: str,
    imbalance: float,
    results: str | Path = "results",
    force: bool = False,
) -> list[Path]:
    """Copy results.json, metrics.csv and config.yaml of a finished run (or of each
    ``seed<k>/`` run below ``run_dir``) into ``results/cifar10_lt/IF<factor>/<row>/``.

    One run of a row goes into the row folder itself; as soon as a row has two seeds, each run
    sits in ``seed<k>/`` (a run already at the top is moved into its seed folder). Everything
    is checked before anything is copied: the three files exist, the run is CIFAR-10 at this
    imbalance factor and of the row's method; a seed already collected is refused unless
    ``force``.

    Returns:
        the folders written.
    """
    run_dir = Path(run_dir)
    rows = known_rows()
    if row not in rows:
        raise NcltError(
            f"--row {row!r}: not a row of configs/cifar10_lt or a second stage "
            f"({', '.join(STAGE2_ROWS)}).{closest(row, rows)}"
        )
    sources = _source_runs(run_dir)
    want = expected_run(row)
    incoming: dict[str, Path] = {}
    for src in sources:
        lacking = [f for f in RUN_FILES if not (src / f).is_file()]
        if lacking:
            raise NcltError(
                f"{src}: {', '.join(lacking)} missing (a finished nclt run has "
                "all of results.json, metrics.csv, config.yaml)"
            )
        res = read_results(src)
        if res.get("dataset") != DATASET:
            raise NcltError(f"{src}: a {res.get('dataset')} run; results/ holds CIFAR-10-LT")
        if res.get("imbalance") is None or float(res["imbalance"]) != float(imbalance):
            raise NcltError(
                f"{src}: trained at imbalance {res.get('imbalance')}, not {imbalance:g}"
            )
        if want["method"] and res.get("method") != want["method"]:
            hint = ""
            if row in STAGE2_ROWS:
                hint = f" (the second stage is in RUN_DIR/stage2_{STAGE2_ROWS[row][1]})"
            raise NcltError(
                f"{src} is a {res.get('method')} run; row {row} needs a {want['method']} run{hint}"
            )
        seed = str(res.get("seed"))
        if seed in incoming:
            raise NcltError(f"{incoming[seed]} and {src} are both seed {seed}")
        incoming[seed] = src

    dest = row_dir(results, row, imbalance)
    top_seed, seed_dirs = _collected(dest)
    existing = seed_dirs | ({top_seed} if top_seed is not None else set())
    clash = sorted(set(incoming) & existing)
    if clash and not force:
        raise NcltError(f"{dest} already holds seed {', '.join(clash)}; pass --force to replace it")
    seeds_after = existing | set(incoming)
    # one run and no seed folder: the row folder itself holds it
    flat = len(seeds_after) == 1 and not seed_dirs
    if not flat and top_seed is not None:
        if top_seed in incoming:  # replaced by the new run below (force)
            for f in RUN_FILES:
                (dest / f).unlink(missing_ok=True)
        else:  # the single run so far moves into its seed folder
            target = dest / f"seed{top_seed}"
            target.mkdir(parents=True, exist_ok=True)
            for f in RUN_FILES:
                if (dest / f).is_file():
                    shutil.move(str(dest / f), str(target / f))
    written = []
    for seed, src in incoming.items():
        target = dest if flat else dest / f"seed{seed}"
        target.mkdir(parents=True, exist_ok=True)
        for f in RUN_FILES:
            shutil.copyfile(src / f, target / f)
        written.append(target)
    return written
