"""``torchrun --nproc_per_node 2 -m nclt train``: a run killed mid-epoch and resumed under
torchrun ends with the same weights (and the same logged epochs) as an uninterrupted one.

Digits-LT at imbalance 1 with a global batch of 8 (4 per process) makes an epoch of about a
second; the run is ce-drw with MixUp (per-rank random streams) whose DRW weights switch on
in the second epoch, the one replayed after the resume, and NC tracking every epoch
(all-reduced metrics). The whole process group of the second run (torchrun and both workers)
gets SIGKILL during its second epoch; the resumed run replays it from epoch 1's last.pt.
The interrupted runs are paced (20 ms a step, ~4 s an epoch) so that the kill lands in the
second epoch however loaded the machine is.
"""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from nclt import checkpoint as ckpt

pytestmark = pytest.mark.dist

ARGS = ["--epochs", "2", "--imbalance", "1", "--method", "ce-drw",
        "--set", "method.args={ce-drw: {drw_epoch: 1}}",
        "--set", "data.num_workers=0", "--set", "progress=false", "--set", "threads=1",
        "--set", "data.batch_size=8", "--set", "mixup_alpha=1.0", "--set", "nc_every=1",
        "--set", "grad_probe=true"]
TIMING = ("seconds", "images_per_second", "wall_seconds")


PACED = Path(__file__).parent.parent / "robustness" / "_paced_nclt.py"


def _torchrun(*args: str, paced: bool = False) -> list[str]:
    """torchrun's command line; ``paced`` runs the CLI with every step paced by 20 ms
    (_paced_nclt.py: the same weights, an epoch of ~4 s), so that a kill timed from the
    first epoch's length lands inside the second even when the first paid for start-up."""
    entry = [str(PACED)] if paced else ["-m", "nclt"]
    return [sys.executable, "-m", "torch.distributed.run", "--standalone",
            "--nproc_per_node", "2", *entry, "train", *args]


def _env() -> dict[str, str]:
    return {**os.environ, "GLOO_SOCKET_IFNAME": "lo", "OMP_NUM_THREADS": "1",
            "PYTHONUNBUFFERED": "1"}


def _rows(path: Path) -> list[dict[str, str]]:
    if not path.is_file():
        return []
    with path.open() as f:
        return list(csv.DictReader(f))


def _run(args: list[str], cwd: Path) -> None:
    res = subprocess.run(_torchrun(*args), cwd=cwd, env=_env(), capture_output=True, text=True,
                         timeout=240)
    if res.returncode != 0 and "SIGABRT" in res.stderr and "--resume" not in args:
        # Once (in ~15 runs, on a heavily loaded machine) a gloo worker of an uninterrupted
        # run aborted; it never reproduced (docs/DISTRIBUTED.md). Start such a run once more
        # from scratch rather than fail on an infrastructure abort; every assertion still
        # applies to the run that completes.
        out = args[args.index("--out") + 1]
        import shutil

        shutil.rmtree(cwd / out, ignore_errors=True)
        print(f"torchrun worker aborted; retrying once:\n{res.stderr[-2000:]}")
        res = subprocess.run(_torchrun(*args), cwd=cwd, env=_env(), capture_output=True,
                             text=True, timeout=240)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]


def test_killed_mid_epoch_and_resumed_under_torchrun_matches(tmp_path: Path) -> None:
    _run(["--out", "full", *ARGS], tmp_path)

    out = tmp_path / "killed"
    cmd = _torchrun("--out", "killed", *ARGS, paced=True)
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        deadline = time.monotonic() + 180
        while not (_rows(out / "metrics.csv") and (out / "last.pt").is_file()):
            assert proc.poll() is None, "the run ended before its first epoch was logged"
            assert time.monotonic() < deadline, "no epoch logged in time"
            time.sleep(0.01)
        epoch_seconds = float(_rows(out / "metrics.csv")[0]["seconds"])
        time.sleep(0.4 * epoch_seconds)  # well inside the second epoch
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # torchrun and both workers, without warning
        proc.wait(timeout=60)
    assert len(_rows(out / "metrics.csv")) == 1, "the kill did not land in the second epoch"
    assert ckpt.load(out / "last.pt")["epoch"] == 0

    _run(["--resume", "killed"], tmp_path)

    want = ckpt.load(tmp_path / "full" / "last.pt")
    got = ckpt.load(out / "last.pt")
    assert got["epoch"] == want["epoch"] == 1
    assert want["model"].keys() == got["model"].keys()
    for k, v in want["model"].items():
        assert torch.equal(got["model"][k], v), k
    for a, b in zip(_rows(tmp_path / "full" / "metrics.csv"), _rows(out / "metrics.csv"),
                    strict=True):
        assert {k: v for k, v in a.items() if k not in TIMING} == {
            k: v for k, v in b.items() if k not in TIMING}
    # the evaluation shards cover the test set once, without padding (summed over ranks)
    from nclt.config import build_config
    from nclt.runner import build_datasets

    _, test_set, _ = build_datasets(build_config(None, ["data.imbalance=1"]), ["none"])
    res = json.loads((out / "results.json").read_text())
    assert sum(map(sum, res["confusion"])) == len(test_set)


def test_sigterm_under_torchrun_stops_every_rank_and_resume_matches(tmp_path: Path) -> None:
    """torchrun forwards SIGTERM to both workers; they agree on the step, stop, keep last.pt."""
    _run(["--out", "full", *ARGS], tmp_path)
    out = tmp_path / "stopped"
    cmd = _torchrun("--out", "stopped", *ARGS, paced=True)
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    try:
        deadline = time.monotonic() + 180
        while not (_rows(out / "metrics.csv") and (out / "last.pt").is_file()):
            assert proc.poll() is None, "the run ended before its first epoch was logged"
            assert time.monotonic() < deadline, "no epoch logged in time"
            time.sleep(0.01)
        epoch_seconds = float(_rows(out / "metrics.csv")[0]["seconds"])
        time.sleep(0.4 * epoch_seconds)  # inside the second epoch
        os.kill(proc.pid, signal.SIGTERM)  # to torchrun, which forwards it to the workers
        log, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode != 0
    assert "stopped by SIGTERM" in log, log[-3000:]
    assert len(_rows(out / "metrics.csv")) == 1
    assert ckpt.load(out / "last.pt")["epoch"] == 0

    _run(["--resume", "stopped"], tmp_path)
    want = ckpt.load(tmp_path / "full" / "last.pt")["model"]
    got = ckpt.load(out / "last.pt")["model"]
    for k, v in want.items():
        assert torch.equal(got[k], v), k
