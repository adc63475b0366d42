"""``nclt reproduce --run``: train the reproduction's rows one after another, resumably.

A reproduction is many long runs (1.5-4 h each on a 2-core CPU) that outlive any one working
session, so the queue is built to be started again with the same command as often as needed.
Every (row, seed) has one fixed folder, ``RUNS/cifar10_lt/IF<factor>/<row>/seed<k>`` (a
second stage in ``stage2_<name>/`` below its first stage's), and what happens to it is decided
from the files when its turn comes:

- results/ already holds the seed: nothing (``done``);
- the run finished (results.json in its folder) but was not collected: ``collect``;
- the folder holds ``last.pt``: ``resume`` (``nclt train --resume``: exactly as it was
  configured; ``--set`` values given now do not change a run already started);
- a row of ``BRANCH_ROWS`` whose sibling kept ``epoch_E.pt``: ``branch`` (``nclt train
  --branch-from``; only the epochs after E are trained, checked by :mod:`nclt.branch`);
- a second stage (``STAGE2_ROWS``): ``stage2`` on its first stage's finished run, which the
  queue trains first when it is not there (needed even when results/ holds that seed, since
  results/ keeps no checkpoint);
- anything else: ``train`` from the row's config file (and its ``row_overrides``).

Each finished run is collected into results/ at once (``nclt reproduce --collect``), so an
interrupted queue loses at most the epoch in progress. SIGINT / SIGTERM stop the run in
progress cleanly (:mod:`nclt.interrupt`) and the queue with it; a run that fails (NaN loss,
bad data) is reported and the queue goes on with the rows that do not depend on it. Rows are
ordered first stages first, then branch rows (after their siblings), then second stages.

The plan (``--dry-run``) estimates each job's wall time from the row's CPU runs in results/
(:func:`paces`, :func:`estimate`), so a user can tell which rows fit in a working session.

Under ``torchrun`` every rank runs the same queue (each run is the usual DDP run); rank 0
alone writes, collects and prints, and the ranks meet at a barrier after each job, so all of
them decide the next job from the same files (a shared file system is assumed, as for
``--resume``).
"""

from __future__ import annotations

import argparse
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nclt import reproduce as rp
from nclt.errors import ConfigError, NcltError, RunInterrupted, closest
from nclt.reproduce.markdown import duration

log = logging.getLogger("nclt")

#: what the queue does with a job, in the words of ``--dry-run`` and the log.
ACTIONS = ("done", "collect", "resume", "branch", "stage2", "train")


@dataclass(frozen=True)
class Job:
    """One (row, seed) at one imbalance factor; ``needed`` when a second stage needs its run."""

    row: str
    imbalance: float
    seed: int
    needed: bool = False

    @property
    def label(self) -> str:
        return f"{self.row} IF {self.imbalance:g} seed {self.seed}"


def run_folder(runs: str | Path, row: str, imbalance: float, seed: int) -> Path:
    """Where the queue trains ``row``: RUNS/cifar10_lt/IF<f>/<row>/seed<k> (second stages:
    stage2_<name>/ inside their first stage's folder, where ``nclt train --stage2`` writes)."""
    if row in rp.STAGE2_ROWS:
        first, stage = rp.STAGE2_ROWS[row]
        return run_folder(runs, first, imbalance, seed) / f"stage2_{stage}"
    return Path(runs) / f"{rp.DATASET}_lt" / rp.if_folder(imbalance) / row / f"seed{seed}"


def _config_file(row: str) -> Path:
    d = rp.configs_dir()
    if d is None:
        raise ConfigError(
            "--run needs the configs/cifar10_lt/ folder of a source checkout (pip install -e .)"
        )
    return d / f"{row}.yaml"


def check_rows(rows: list[str]) -> None:
    """Every row is a config of configs/cifar10_lt or a second stage; else a clear error."""
    for row in rows:
        if row in rp.STAGE2_ROWS:
            continue
        if not _config_file(row).is_file():
            known = rp.known_rows()
            raise ConfigError(
                f"--run: {row!r} is not a row (a configs/cifar10_lt/<row>.yaml or "
                f"{' / '.join(rp.STAGE2_ROWS)}).{closest(row, known)}"
            )


def plan(
    rows: list[str],
    imbalance: float,
    seeds: list[int],
    runs: str | Path = "runs",
    results: str | Path = "results",
) -> list[Job]:
    """The jobs in training order: first stages, then branch rows, then second stages (the
    given order within each). A second stage that is still to run needs its first stage's
    finished run: that job is added when not asked for, and marked ``needed``."""
    check_rows(rows)
    wanted = list(dict.fromkeys(rows))

    def rank(row: str) -> int:
        return 2 if row in rp.STAGE2_ROWS else 1 if row in rp.BRANCH_ROWS else 0

    jobs: list[Job] = []
    for seed in seeds:
        needed = {
            rp.STAGE2_ROWS[r][0]
            for r in wanted
            if r in rp.STAGE2_ROWS and action(Job(r, imbalance, seed), runs, results) != "done"
        }
        rows_s = sorted(dict.fromkeys(wanted + sorted(needed)), key=rank)  # sort is stable
        jobs += [Job(r, imbalance, seed, needed=r in needed) for r in rows_s]
    return sorted(jobs, key=lambda j: rank(j.row))  # every seed's first stages first


def action(job: Job, runs: str | Path, results: str | Path, ahead: Sequence[Job] = ()) -> str:
    """What the queue does with ``job`` now (one of ACTIONS), from the files alone; ``ahead``
    are the jobs that run before it (a branch row whose sibling trains first will branch)."""
    out = run_folder(runs, job.row, job.imbalance, job.seed)
    collected = job.seed in rp.collected_seeds(results, job.row, job.imbalance)
    if (out / "results.json").is_file():
        return "done" if collected else "collect"
    if collected and not job.needed:
        return "done"
    if (out / "last.pt").is_file():
        return "resume"
    if job.row in rp.STAGE2_ROWS:
        return "stage2"
    if job.row in rp.BRANCH_ROWS:
        sibling, _ = rp.BRANCH_ROWS[job.row]
        if branch_source(job, runs).is_file() or any(
            j.row == sibling
            and j.seed == job.seed
            and action(j, runs, results) in ("resume", "train")
            for j in ahead
        ):
            return "branch"
    return "train"


def branch_source(job: Job, runs: str | Path) -> Path:
    sibling, epoch = rp.BRANCH_ROWS[job.row]
    return run_folder(runs, sibling, job.imbalance, job.seed) / f"epoch_{epoch}.pt"


def _cli_config(**given: Any) -> Any:
    """A TrainConfig exactly as ``nclt train`` builds it from these flags."""
    from nclt.cli import config_from_args

    flags: dict[str, Any] = dict.fromkeys(
        ("config", "method", "dataset", "imbalance", "data_root", "epochs", "out"),
        None,
    )
    flags.update(branch_from=None, stage2=None, from_run=None, sweep=None, set=[])
    flags.update(given)
    return config_from_args(argparse.Namespace(**flags))


def job_config(
    job: Job,
    verb: str,
    runs: str | Path,
    data_root: str | None = None,
    sets: list[str] | tuple[str, ...] = (),
) -> Any:
    """The config of ``job`` for ``verb`` (resume / branch / stage2 / train). A resumed row
    keeps its own config: ``--set`` may move it (``cli.RESUME_SETTABLE``: a row begun on a
    lent GPU finishes here with ``--set device=cpu``), any other ``--set`` must agree."""
    from nclt.cli import resume_config

    out = run_folder(runs, job.row, job.imbalance, job.seed)
    if verb == "resume":
        return resume_config(out, data_root, sets)
    if verb == "stage2":
        first, stage = rp.STAGE2_ROWS[job.row]
        first_out = run_folder(runs, first, job.imbalance, job.seed)
        if not (first_out / "results.json").is_file():
            raise NcltError(f"{job.label}: its first stage {first} has not finished in {first_out}")
        return _cli_config(stage2=stage, from_run=str(first_out), data_root=data_root, set=[*sets])
    extra = {"branch_from": str(branch_source(job, runs))} if verb == "branch" else {}
    return _cli_config(
        config=str(_config_file(job.row)),
        imbalance=job.imbalance,
        data_root=data_root,
        out=str(out),
        set=[*rp.row_overrides(job.row, job.imbalance), *sets, f"seed={job.seed}"],
        **extra,
    )


#: keys the queue sets itself, per job.
QUEUE_KEYS = ("seed", "out", "branch_from", "init_from", "data.imbalance", "data.dataset")


def check_sets(sets: list[str] | tuple[str, ...]) -> None:
    """``--set`` may change anything of every row except what the queue sets per job; a key
    outside ``NON_PROTOCOL_KEYS`` is warned about (the rows' runs become variants)."""
    for s in sets:
        if s.split("=", 1)[0].strip() in QUEUE_KEYS:
            raise ConfigError(
                f"--set {s}: the queue sets this itself (use --seeds / --runs / --imbalance)"
            )
    protocol = [s for s in sets if s.split("=", 1)[0].strip() not in rp.NON_PROTOCOL_KEYS]
    if protocol:
        log.warning(
            "--set %s: changes what the rows train; their runs are variants of the rows, "
            'flagged as "not the row\'s config" in the tables',
            ", ".join(protocol),
        )


@dataclass
class Outcome:
    job: Job
    action: str
    status: str  # "ok", "failed: ...", "skipped: ..."
    best: float | None = None
    last: float | None = None
    seconds: float = 0.0


def run_queue(
    jobs: list[Job],
    runs: str | Path = "runs",
    results: str | Path = "results",
    data_root: str | None = None,
    sets: list[str] | tuple[str, ...] = (),
    train: Callable[..., dict[str, Any]] | None = None,
) -> list[Outcome]:
    """Run ``jobs`` in order (see the module docstring); returns one Outcome per job.

    ``train`` is :func:`nclt.runner.train` unless given. RunInterrupted (SIGINT / SIGTERM)
    propagates after the queue logs how to continue; any other NcltError of a job is reported
    in its Outcome, and the second stages of a failed first stage are skipped.
    """
    from nclt import dist

    if train is None:
        from nclt import runner

        train = runner.train  # looked up now: tests replace it
    check_sets(sets)
    outcomes: list[Outcome] = []
    failed: set[tuple[str, int]] = set()
    for i, job in enumerate(jobs):
        verb = action(job, runs, results)
        head = f"[{i + 1}/{len(jobs)}] {job.label}"
        first = rp.STAGE2_ROWS.get(job.row, (None,))[0]
        if first is not None and (first, job.seed) in failed and verb != "done":
            log.info("%s: skipped (its first stage %s failed)", head, first)
            outcomes.append(Outcome(job, verb, f"skipped: {first} failed"))
            continue
        out = run_folder(runs, job.row, job.imbalance, job.seed)
        log.info("%s: %s (%s)", head, verb, out)
        t0 = time.perf_counter()
        try:
            if verb in ("resume", "branch", "stage2", "train"):
                cfg = job_config(job, verb, runs, data_root, sets)
                train(cfg, resume=verb == "resume")
            res = _finish(job, out, results, collect=verb != "done")
        except RunInterrupted:
            log.info(
                "queue stopped at %s; the same `nclt reproduce --run` command continues it "
                "(finished rows are skipped, this one resumes)",
                job.label,
            )
            raise
        except NcltError as e:
            log.error("%s failed: %s", head, e)
            failed.add((job.row, job.seed))
            outcomes.append(Outcome(job, verb, f"failed: {e}", seconds=time.perf_counter() - t0))
            continue
        outcomes.append(
            Outcome(job, verb, "ok", res.get("best"), res.get("last"), time.perf_counter() - t0)
        )
        dist.barrier()
    return outcomes


def _finish(job: Job, out: Path, results: str | Path, collect: bool = True) -> dict[str, Any]:
    """Collect the finished run into results/ (rank 0; unless results/ holds that seed) and
    return its best / last top-1."""
    from nclt import dist

    if not (out / "results.json").is_file():
        return {}  # a row done elsewhere (results/ only)
    res = rp.read_results(out)
    if collect and dist.is_main():
        if job.seed in rp.collected_seeds(results, job.row, job.imbalance):
            log.info(
                "%s: results/ already holds seed %d; this run stays in %s "
                "(nclt reproduce --collect %s --row %s --imbalance %g --force replaces it)",
                job.label,
                job.seed,
                out,
                out,
                job.row,
                job.imbalance,
            )
        else:
            for folder in rp.collect(out, job.row, job.imbalance, results):
                log.info("%s: collected into %s", job.label, folder)
    best = res.get("best")
    return {"best": best.get("top1") if isinstance(best, dict) else None, "last": res.get("top1")}


def _done_epochs(out: Path) -> tuple[int, int] | None:
    """(epochs done, epochs) of a stopped run, from its metrics.csv and config.yaml."""
    import csv

    from nclt.config import load_yaml

    try:
        with (out / "metrics.csv").open(newline="") as f:
            done = max(int(r["epoch"]) for r in csv.DictReader(f))
        epochs = int(load_yaml(out / "config.yaml")["epochs"])
    except (OSError, ValueError, KeyError, TypeError, NcltError):
        return None
    return done, epochs


def _progress(out: Path) -> str:
    """ ", after epoch E of N" from a stopped run's files ("" if unread)."""
    got = _done_epochs(out)
    return f", after epoch {got[0]}/{got[1]}" if got else ""


def paces(results: str | Path) -> dict[str, float]:
    """Wall-clock seconds per training image of a whole run of each row (all its epochs,
    tests included; a branch row's and a resumed run's earlier parts too), the mean over the
    row's runs in results/ that trained on the CPU, at any imbalance factor. Rows trained on a
    GPU, or whose times are unknown, have none."""
    per_row: dict[str, list[float]] = {}
    for (row, _), m in rp.measure(results).items():
        if m.device_mark:
            continue  # GPU times say nothing about this CPU
        wall = m.wall_seconds or m.seconds  # training time where the wall time is partial
        images = sum(m.runs[0].results.get("class_counts") or [])
        if wall and images:
            per_row.setdefault(row, []).append(wall / images)
    return {row: sum(v) / len(v) for row, v in per_row.items()}


def estimate(job: Job, verb: str, runs: str | Path, pace: dict[str, float]) -> float | None:
    """Seconds ``job`` would take now at its row's ``pace`` (:func:`paces`): the pace times
    the training images at the job's factor, for the share of the epochs left to train
    (a resumed run's, a branch row's after its branch point); 0 for ``done`` / ``collect``;
    None without a pace."""
    if verb in ("done", "collect"):
        return 0.0
    if job.row not in pace:
        return None
    from nclt.data import dataset_counts

    share = 1.0
    if verb == "resume":
        got = _done_epochs(run_folder(runs, job.row, job.imbalance, job.seed))
        if got:
            share = max(got[1] - got[0], 0) / got[1]
    elif verb == "branch":
        epochs = rp.expected_run(job.row)["epochs"]
        if epochs:
            share = max(epochs - rp.BRANCH_ROWS[job.row][1], 0) / epochs
    images = sum(dataset_counts(rp.DATASET, job.imbalance))
    return pace[job.row] * images * share


def describe(jobs: list[Job], runs: str | Path, results: str | Path) -> str:
    """The plan as ``--dry-run`` prints it: one line per job with what would happen and, for
    rows that results/ holds CPU runs of, about how long it would take (:func:`estimate`);
    then the total."""
    pace = paces(results)
    lines, total, unknown = [], 0.0, 0
    for i, job in enumerate(jobs):
        verb = action(job, runs, results, ahead=jobs[:i])
        out = run_folder(runs, job.row, job.imbalance, job.seed)
        detail = {
            "done": "results/ holds it",
            "collect": f"finished in {out}",
            "resume": f"continues {out}/last.pt{_progress(out)}",
            "branch": f"from {branch_source(job, runs)}" if job.row in rp.BRANCH_ROWS else "",
            "stage2": f"on {out.parent}",
            "train": f"into {out}",
        }[verb]
        note = " (needed by a second stage)" if job.needed else ""
        secs = estimate(job, verb, runs, pace)
        if secs is None:
            unknown += 1
        else:
            total += secs
        took = f" [~{duration(secs)}]" if secs else ""
        lines.append(f"{i + 1:>3}. {job.label}: {verb} {detail}{note}{took}")
    if total:
        lines.append(
            f"about {duration(total)} in all"
            + (f" and {unknown} job(s) of unknown length" if unknown else "")
            + ", at the pace of the rows' CPU runs in results/ (wall time per training image;"
            " another machine or day can be 40% faster or slower)"
        )
    return "\n".join(lines) + "\n"


def summary(outcomes: list[Outcome]) -> str:
    """One line per job: action, status, best / last top-1, time."""

    def pct(v: float | None) -> str:
        return "-" if v is None else f"{v:.2f}"

    rows = [
        f"{o.job.label}: {o.action}, {o.status}, best {pct(o.best)}, last {pct(o.last)}, "
        f"{o.seconds / 60:.1f} min"
        for o in outcomes
    ]
    return "\n".join(rows) + "\n"
