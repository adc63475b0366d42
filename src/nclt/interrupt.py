"""Stop a run cleanly on SIGINT or SIGTERM.

nclt writes a checkpoint at the end of every epoch (atomically) and replays an epoch exactly
on resume, so the state worth keeping when a signal arrives is the last finished epoch's,
which is already in ``last.pt``. Finishing the current epoch first would delay the exit by up
to an epoch (a scheduler sends SIGKILL after a grace period), so the run stops promptly:
the handler only sets a flag, the training loop checks it before each step and raises
:class:`~nclt.errors.RunInterrupted`, whose message says which epoch ``--resume`` continues
from; the CLI exits with ``128 + signal`` (130 for SIGINT, 143 for SIGTERM). A second signal
stops at once (SIGINT: ``KeyboardInterrupt``); an atomic write in progress is then abandoned
and the previous checkpoint stays. The handlers are installed in the main thread, and the
previous handlers are restored afterwards.

Under DDP (``torchrun`` forwards SIGINT / SIGTERM to every worker) the ranks must stop at the
same step, or the others would wait forever in the next collective: before each step every
rank contributes its flag to one small all-reduce, and all of them stop together as soon as
any of them has received a signal.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import logging
import multiprocessing
import os
import signal
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path
from types import FrameType, TracebackType
from typing import Any, TypeVar

from nclt import dist
from nclt.errors import RunInterrupted

log = logging.getLogger("nclt")

T = TypeVar("T")

SIGNALS = (signal.SIGINT, signal.SIGTERM)


def workers_leave_signals_to_main(worker_id: int) -> None:
    """DataLoader ``worker_init_fn``: the workers ignore SIGINT and SIGTERM.

    A terminal's Ctrl-C, ``timeout`` and a scheduler's ``scancel`` signal the whole process
    group, DataLoader workers included. PyTorch's workers die of a SIGTERM that does not come
    from their parent, and the main process then raises "DataLoader worker ... killed by
    signal" wherever it is (in evaluation, in the middle of a step), which would bypass the
    clean stop of :class:`StopOnSignal`. Ignoring the signals in the workers leaves the decision
    to the main process: it stops at the next step boundary and shuts its workers down the
    usual way; workers also exit by themselves once the main process is gone (PyTorch's
    watchdog). The cost: the loader's last-resort ``terminate()`` of a worker hung at shutdown
    no longer works (a scheduler's SIGKILL still does). A signal that lands while a worker is
    still starting (workers start with each epoch's loader, before this function runs) kills
    that worker as before, unless the loader was started under :func:`signals_blocked` (as
    :meth:`StopOnSignal.batches` does): then the worker inherits the blocked mask, and a signal
    pending in it is discarded here, when SIG_IGN is set before the mask is lifted. The same
    SIG_IGN makes multiprocessing's exit-time ``terminate()`` of daemonic children a no-op, so
    the parent calls :func:`kill_workers_at_exit`.
    """
    for s in SIGNALS:
        signal.signal(s, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, SIGNALS)


@contextlib.contextmanager
def signals_blocked(signals: Iterable[int] = SIGNALS) -> Iterator[None]:
    """Block ``signals`` in the calling thread while the body runs (e.g. forks workers).

    A child forked inside inherits the blocked mask, so a group-wide SIGTERM cannot kill it
    before its ``worker_init_fn`` has set its handlers; in this process the signal stays
    pending and is handled when the block ends.
    """
    old = signal.pthread_sigmask(signal.SIG_BLOCK, signals)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


@functools.cache
def kill_workers_at_exit() -> None:
    """Make sure this process can exit while loader workers that ignore SIGTERM are alive.

    At interpreter exit multiprocessing sends SIGTERM to its daemonic children (DataLoader
    workers are) and then joins them. A worker running :func:`workers_leave_signals_to_main`
    ignores that SIGTERM and only leaves when its loader shuts it down or its parent is gone,
    so a loader iterator that was never shut down (one abandoned half-built by an exception,
    or still referenced at exit) would hold the exit forever: the parent waits for the
    worker, the worker for the parent. The handler registered here (once per process) runs
    before multiprocessing's, being registered after it, and SIGKILLs the daemonic children
    still alive, which is what multiprocessing's SIGTERM would have done to PyTorch's workers.
    Call it in the process that builds the loaders.
    """
    atexit.register(_kill_daemonic_children)


def _kill_daemonic_children() -> None:
    # PyTorch's SIGCHLD handler raises "DataLoader worker ... killed" for each of them, which
    # would break off this loop; the process is exiting, so its report is not wanted
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    children = [c for c in multiprocessing.active_children() if c.daemon]
    for child in children:
        child.kill()
    for child in children:
        child.join(5)


def resume_hint(out: str | Path, epoch: int, epochs: int) -> str:
    """Where a run stopped during the 0-based ``epoch`` can continue from."""
    if epoch == 0:
        return (
            f"no epoch had finished, so {out} holds no checkpoint: run the same command "
            "again to start over"
        )
    return (
        f"{out}/last.pt holds epoch {epoch}/{epochs}; `nclt train --resume {out}` "
        f"continues with epoch {epoch + 1}"
    )


class StopOnSignal:
    """Context manager: SIGINT / SIGTERM set a flag that :meth:`batches` turns into a stop."""

    def __init__(self, signals: Iterable[int] = SIGNALS) -> None:
        self.signals = tuple(signals)
        self.signum: int | None = None
        self._previous: dict[int, Any] = {}
        self._pid = os.getpid()

    def __enter__(self) -> StopOnSignal:
        self._pid = os.getpid()
        if threading.current_thread() is threading.main_thread():
            for s in self.signals:
                self._previous[s] = signal.signal(s, self._handle)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        for s, handler in self._previous.items():
            signal.signal(s, handler)
        self._previous.clear()

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if os.getpid() != self._pid:
            return  # a forked DataLoader worker inherited the handler: the main process stops
        name = signal.Signals(signum).name
        if self.signum is not None:  # a second signal: stop now
            if signum == signal.SIGINT:
                raise KeyboardInterrupt
            raise RunInterrupted(f"stopped at once by a second {name}; last.pt is kept", signum)
        self.signum = signum
        log.warning(
            "%s received: stopping before the next step (send it again to stop at once)", name
        )

    def check(self, where: str) -> None:
        """Raise RunInterrupted (``where`` says how to continue) when a signal has arrived.

        Under DDP: when it has arrived on any rank (every rank takes part in the all-reduce,
        so every rank raises at the same step).
        """
        if dist.all_true(self.signum is None):
            return
        signum = self.signum if self.signum is not None else int(signal.SIGTERM)
        where_from = "" if self.signum is not None else " (on another rank)"
        name = signal.Signals(signum).name
        raise RunInterrupted(f"stopped by {name}{where_from}; {where}", signum)

    def batches(self, loader: Iterable[T], where: str) -> Iterator[T]:
        """``loader``'s batches, stopping before the next one once a signal has arrived."""
        with signals_blocked(self.signals):  # new workers start with the signals held
            it = iter(loader)
        while True:
            self.check(where)
            try:
                batch = next(it)
            except StopIteration:
                return
            except Exception:
                # Ctrl-C in a terminal also reaches DataLoader workers, which exit; the
                # loader then reports them as dead. The signal is the cause: report that
                # (a local check: this rank may be the only one in this path).
                if self.signum is not None:
                    name = signal.Signals(self.signum).name
                    raise RunInterrupted(f"stopped by {name}; {where}", self.signum) from None
                raise
            yield batch
