"""Our runs of each row, read from results/: their top-1 over seeds, times, device, and what
is wrong with them (wrong factor or method, short runs, configs off the row's protocol)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nclt.report.compare import RunRecord, group_runs, load_run, mean_std, varying_keys
from nclt.reproduce.rows import (
    DATASET,
    STAGE2_ROWS,
    expected_run,
    protocol_differences,
    row_runs,
)


@dataclass
class Measured:
    """Our runs of one row at one imbalance factor."""

    row: str
    imbalance: float
    runs: list[RunRecord]
    problems: list[str] = field(default_factory=list)

    def top1(self, which: str) -> tuple[float | None, float | None, int]:
        """(mean, sample std or None, n) of the ``which`` ("best"/"last") top-1 over seeds."""
        vals = []
        for r in self.runs:
            d = r.results.get(which) or {}
            v = d.get("top1")
            if which == "best" and not d.get("epoch"):  # no epoch evaluated: best is a -1 stub
                v = None
            if v is None and which == "last":
                v = r.results.get("top1")
            vals.append(v)
        return mean_std(vals)

    @property
    def seconds(self) -> float | None:
        """Mean training time of one run (training steps; resumed parts included)."""
        return mean_std([r.results.get("seconds") for r in self.runs])[0]

    @property
    def wall_seconds(self) -> float | None:
        """Mean wall-clock time of one run (epochs, evaluation, final metrics), resumed parts
        included; None when a run does not know its whole time (resumed from a checkpoint
        written before nclt kept per-epoch wall times: flagged ``wall_seconds_partial``, or
        older results whose wall time is below their training time)."""
        walls = []
        for r in self.runs:
            wall, train = r.results.get("wall_seconds"), r.results.get("seconds")
            partial = r.results.get("wall_seconds_partial") or (
                wall is not None and train is not None and wall < train
            )
            walls.append(None if partial else wall)
        if any(w is None for w in walls):
            return None
        return mean_std(walls)[0]

    @property
    def device_mark(self) -> str:
        """ " (GPU)" when the runs trained on a GPU (a config's device, or ``auto`` where its
        environment names an accelerator), " (GPU + CPU)" when part of them did (a run begun
        on a lent GPU and resumed here: config.yaml's ``earlier_environments``), "" when all
        ran on the CPU: GPU times are not this CPU's."""

        def gpu(device: Any, env: Any) -> bool:
            device = str(device or "auto")
            accelerator = env.get("accelerator") if isinstance(env, dict) else None
            return device.startswith("cuda") or (device == "auto" and bool(accelerator))

        parts = set()
        for r in self.runs:  # the flattened config (dotted keys)
            env = {
                k.split(".", 1)[1]: v for k, v in r.config.items() if k.startswith("environment.")
            }
            parts.add(gpu(r.config.get("device"), env))
            for e in r.config.get("earlier_environments") or []:
                if isinstance(e, dict):
                    parts.add(gpu(e.get("device"), e))
        if parts == {True}:
            return " (GPU)"
        return " (GPU + CPU)" if True in parts else ""

    @property
    def mixup(self) -> bool | None:
        """Whether our runs used MixUp (None for a second stage, which never does)."""
        if self.row in STAGE2_ROWS:
            return None
        alphas = {float(r.config.get("mixup_alpha") or 0.0) for r in self.runs}
        return None if len(alphas) != 1 else alphas.pop() > 0


def _check_runs(row: str, imbalance: float, runs: list[RunRecord]) -> list[str]:
    """What is wrong with the runs of a row: wrong dataset / factor / method, short runs,
    seeds whose configs differ by more than the seed."""
    problems = []
    want = expected_run(row)
    for r in runs:
        res = r.results
        where = r.path.name if r.path.name.startswith("seed") else "run"
        if res.get("dataset") not in (None, DATASET):
            problems.append(f"{where}: dataset {res.get('dataset')}")
        if res.get("imbalance") is not None and float(res["imbalance"]) != imbalance:
            problems.append(f"{where}: imbalance {res['imbalance']:g}")
        if want["method"] and res.get("method") not in (None, want["method"]):
            problems.append(f"{where}: method {res.get('method')} (expected {want['method']})")
        if want["epochs"] and res.get("epochs") not in (None, want["epochs"]):
            problems.append(f"short run ({res.get('epochs')} of {want['epochs']} epochs)")
        differ = protocol_differences(row, imbalance, r.config)
        if differ:
            more = f" and {len(differ) - 1} more" if len(differ) > 1 else ""
            problems.append(f"{where}: not the row's config: {differ[0]}{more}")
    # a second stage's init_from names its own first-stage folder: not a setting
    plain = [
        RunRecord(r.path, r.results, {k: v for k, v in r.config.items() if k != "init_from"})
        for r in runs
    ]
    groups = group_runs(plain)
    if len(groups) > 1:
        problems.append("seeds differ in " + ", ".join(varying_keys(groups)[:4]))
    seeds = [r.seed for r in runs]
    if len(set(map(str, seeds))) != len(seeds):
        problems.append("a seed is there twice")
    return list(dict.fromkeys(problems))


def measure(results: str | Path) -> dict[tuple[str, float], Measured]:
    """Every row found under ``results/cifar10_lt/IF*/``, keyed by (row, imbalance)."""
    base = Path(results) / f"{DATASET}_lt"
    found: dict[tuple[str, float], Measured] = {}
    if not base.is_dir():
        return found
    for if_dir in sorted(base.iterdir()):
        m = re.fullmatch(r"IF(\d+(?:\.\d+)?)", if_dir.name)
        if not (if_dir.is_dir() and m):
            continue
        imbalance = float(m.group(1))
        for folder in sorted(p for p in if_dir.iterdir() if p.is_dir()):
            paths = row_runs(folder)
            if not paths:
                continue
            runs = [load_run(p) for p in paths]
            found[(folder.name, imbalance)] = Measured(
                folder.name, imbalance, runs, _check_runs(folder.name, imbalance, runs)
            )
    return found
