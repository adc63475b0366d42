"""SIGINT, SIGTERM and kill -9 during a run; resume ends with the weights of an uninterrupted run.

The runs are real ``python -m nclt train`` processes (``_paced_nclt.py``: the same CLI with
each step paced by 20 ms, so that a 12-epoch digits run can be hit in its third or fourth
epoch). The in-process variant of the kill test is
tests/test_train_e2e.py::test_resume_after_mid_epoch_crash_gives_identical_weights.
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import nclt.runner as runner
from nclt import checkpoint as ckpt
from nclt.errors import RunInterrupted
from nclt.interrupt import (
    StopOnSignal,
    kill_workers_at_exit,
    signals_blocked,
    workers_leave_signals_to_main,
)

from ._helpers import digits_cfg

PACED = Path(__file__).with_name("_paced_nclt.py")
EPOCHS = 12
CONFIG = ("--set", "threads=1")  # bit-exact across processes


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The weights of the uninterrupted run."""
    out = tmp_path_factory.mktemp("reference") / "run"
    runner.train(digits_cfg(out, *CONFIG, epochs=EPOCHS))
    return ckpt.load(out / "last.pt")["model"]


def _start(out: Path, *extra: str) -> subprocess.Popen:
    cmd = [
        sys.executable,
        str(PACED),
        "train",
        "--out",
        str(out),
        "--epochs",
        str(EPOCHS),
        "--set",
        "progress=false",
        *CONFIG,
        *extra,
    ]
    return subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
    )  # its own process group, as a shell job


def _wait_for_epoch(proc: subprocess.Popen, out: Path, epochs: int, timeout: float = 120) -> None:
    """Until metrics.csv records ``epochs`` finished epochs."""
    metrics = out / "metrics.csv"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"the run ended early ({proc.returncode}): {proc.communicate()[1]}")
        # the row is appended before last.pt is replaced: wait for the checkpoint too, or a
        # kill that follows at once can land while epoch ``epochs`` is still being saved
        if (
            metrics.exists()
            and len(metrics.read_text().splitlines()) > epochs
            and (out / "last.pt").is_file()
            and ckpt.load(out / "last.pt")["epoch"] + 1 >= epochs
        ):
            return
        time.sleep(0.01)
    proc.kill()
    pytest.fail("the run did not reach the epoch in time")


def _assert_same_weights(reference, out: Path) -> None:
    got = ckpt.load(out / "last.pt")
    assert got["epoch"] == EPOCHS - 1
    for k, v in reference.items():
        assert torch.equal(v, got["model"][k]), k


@pytest.mark.parametrize(
    ("sig", "code", "group", "workers"),
    [
        (signal.SIGTERM, 143, False, 0),  # a scheduler stopping the job
        (signal.SIGINT, 130, True, 2),  # Ctrl-C in a terminal: the DataLoader workers get it too
        (signal.SIGTERM, 143, True, 2),  # scancel / timeout: the whole job, workers included
    ],
    ids=["SIGTERM", "SIGINT-ctrl-c-with-workers", "SIGTERM-job-with-workers"],
)
def test_signal_stops_promptly_and_resume_matches(
    cli, tmp_path, reference, sig, code, group, workers
):
    out = tmp_path / "run"
    proc = _start(out, "--set", f"data.num_workers={workers}")
    _wait_for_epoch(proc, out, 3)
    sent = time.monotonic()
    (os.killpg if group else os.kill)(proc.pid, sig)
    _, err = proc.communicate(timeout=120)
    waited = time.monotonic() - sent
    assert proc.returncode == code, err
    assert "Traceback" not in err, err
    name = signal.Signals(sig).name
    m = re.search(
        rf"nclt: stopped by {name}; (.+)/last.pt holds epoch (\d+)/{EPOCHS}; "
        rf"`nclt train --resume (.+)` continues with epoch (\d+)",
        err,
    )
    assert m, err
    done = ckpt.load(out / "last.pt")["epoch"] + 1
    assert int(m.group(2)) == done and int(m.group(4)) == done + 1 and m.group(3) == str(out)
    assert done in (3, 4)  # stopped in the epoch it was in, not at the end of the run
    assert waited < 30, waited
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]
    assert cli("train", "--resume", str(out)).code == 0
    _assert_same_weights(reference, out)


def test_kill_9_mid_epoch_then_resume_matches(cli, tmp_path, reference):
    out = tmp_path / "run"
    proc = _start(out)
    _wait_for_epoch(proc, out, 3)
    time.sleep(0.06)  # a few steps into the next epoch
    proc.kill()
    proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    assert ckpt.load(out / "last.pt")["epoch"] + 1 in (3, 4)  # loadable, a finished epoch
    assert cli("train", "--resume", str(out)).code == 0
    _assert_same_weights(reference, out)


def test_signal_before_the_first_checkpoint(cli, tmp_path, monkeypatch):
    """Stopped in epoch 1: nothing to resume; the message says to start again, and the same
    command then runs (the folder holds no last.pt)."""
    real = runner.train_one_epoch

    def signal_at_step_2(env, loader, *a, **k):
        def batches():
            for i, batch in enumerate(loader):
                if i == 2:
                    os.kill(os.getpid(), signal.SIGTERM)
                yield batch

        return real(env, batches(), *a, **k)

    monkeypatch.setattr(runner, "train_one_epoch", signal_at_step_2)
    res = cli("train", "--out", str(tmp_path / "run"), "--epochs", "2", "--set", "progress=false")
    assert res.code == 143 and "holds no checkpoint: run the same command again" in res.err
    assert not (tmp_path / "run" / "last.pt").exists()
    monkeypatch.undo()
    assert (
        cli(
            "train", "--out", str(tmp_path / "run"), "--epochs", "2", "--set", "progress=false"
        ).code
        == 0
    )


def test_second_signal_stops_at_once_and_handlers_are_restored():
    before = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    with StopOnSignal() as stop:
        os.kill(os.getpid(), signal.SIGTERM)
        assert stop.signum == signal.SIGTERM
        with pytest.raises(RunInterrupted, match="second SIGTERM") as e:
            os.kill(os.getpid(), signal.SIGTERM)
        assert e.value.exit_code == 143
    with StopOnSignal() as stop:
        os.kill(os.getpid(), signal.SIGINT)
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
    assert {s: signal.getsignal(s) for s in before} == before


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_loader_workers_outlive_a_signal_sent_to_the_whole_job(tmp_path, sig):
    """scancel / timeout / Ctrl-C signal every process of the job: nclt's loader workers ignore
    it and keep serving batches (PyTorch's would die of SIGTERM, and the main process would
    then raise "DataLoader worker killed by signal" in the middle of a step or an evaluation,
    past the clean stop)."""
    cfg = digits_cfg(tmp_path, "--set", "data.num_workers=2", "--set", "data.batch_size=8")
    ds = torch.utils.data.TensorDataset(torch.arange(64.0))
    loader = runner.make_loader(
        ds, cfg, True, None, torch.Generator().manual_seed(0), torch.device("cpu")
    )
    it = iter(loader)
    # batch i comes from worker i % 2: after two batches both workers have run their
    # worker_init_fn (a signal during a worker's start-up, before it, still kills it)
    got = [next(it)[0], next(it)[0]]
    for w in it._workers:  # the job's signal, as the workers receive it
        os.kill(w.pid, sig)
    time.sleep(0.5)
    assert all(w.is_alive() for w in it._workers)
    got += [b[0] for b in it]
    assert torch.equal(torch.cat(got), torch.arange(64.0))
    assert kill_workers_at_exit.cache_info().currsize == 1  # make_loader registered the reaper


def _late_worker(ready: int, go: int) -> None:
    os.write(ready, b"r")
    os.read(go, 1)  # the group's SIGTERM arrives here, before the worker's init function ran
    workers_leave_signals_to_main(0)
    time.sleep(0.2)


@pytest.mark.parametrize("blocked", [True, False])
def test_worker_started_under_the_block_survives_a_signal_before_its_init(blocked):
    """The window `workers_leave_signals_to_main` leaves open: a SIGTERM that reaches a worker
    before its init function runs kills it, unless the worker was forked under
    `signals_blocked` (as StopOnSignal.batches starts the loader): then the pending signal
    is discarded when the init function sets SIG_IGN. (Pipes, not multiprocessing Events:
    a process killed inside Event.wait leaves the Event's locks held.)"""
    ready_r, ready_w = os.pipe()
    go_r, go_w = os.pipe()
    proc = mp.get_context("fork").Process(target=_late_worker, args=(ready_w, go_r))
    try:
        with signals_blocked() if blocked else contextlib.nullcontext():
            proc.start()
        assert os.read(ready_r, 1) == b"r"
        os.kill(proc.pid, signal.SIGTERM)
        os.write(go_w, b"g")
        proc.join(30)
    finally:
        if proc.is_alive():
            proc.kill()
        for fd in (ready_r, ready_w, go_r, go_w):
            os.close(fd)
    assert proc.exitcode == (0 if blocked else -signal.SIGTERM)
    assert not signal.pthread_sigmask(signal.SIG_BLOCK, [])  # this process's mask is restored


_ABANDONED_ITERATOR = """
import sys
import torch
from nclt.interrupt import kill_workers_at_exit, workers_leave_signals_to_main
if sys.argv[1] == "reaped":
    kill_workers_at_exit()
loader = torch.utils.data.DataLoader(
    list(range(64)), batch_size=4, num_workers=2, worker_init_fn=workers_leave_signals_to_main
)
IT = iter(loader)  # still referenced at exit: never shut down
next(IT)
print("exiting", flush=True)
"""


@pytest.mark.parametrize("reaped", [True, False], ids=["reaped", "not-reaped"])
def test_exit_with_an_abandoned_loader_iterator(tmp_path, reaped):
    """Workers that ignore SIGTERM survive multiprocessing's exit-time terminate(), and the
    parent then waits for them forever (what hung a signalled run in a loaded test run, after a
    starting worker had died). kill_workers_at_exit lets the process exit; without it the
    process is still there long after it printed its last line. (A subprocess: the reaper
    registers an atexit handler, once per process.)"""
    script = tmp_path / "abandon.py"
    script.write_text(_ABANDONED_ITERATOR)
    proc = subprocess.Popen(
        [sys.executable, str(script), "reaped" if reaped else "plain"],
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        assert proc.stdout.readline() == "exiting\n"
        try:
            rc = proc.wait(timeout=120 if reaped else 15)
        except subprocess.TimeoutExpired:
            rc = None
    finally:
        with contextlib.suppress(ProcessLookupError):  # gone: the workers too
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert rc == (0 if reaped else None)
