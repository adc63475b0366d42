"""Exceptions that carry an actionable message for the user."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class NcltError(Exception):
    """Base class of every error nclt raises on purpose (bad input, missing data, ...)."""


class ConfigError(NcltError, ValueError):
    """A configuration value or key is invalid."""


class DataError(NcltError):
    """A dataset is missing, incomplete or corrupt."""


class CheckpointError(NcltError):
    """A checkpoint cannot be read or does not match the run."""


class NonFiniteLossError(NcltError, FloatingPointError):
    """A loss term became NaN or Inf."""


class CheckpointWriteError(CheckpointError, OSError):
    """Writing a checkpoint failed (disk full, permissions); the previous one is intact."""


class RunInterrupted(NcltError):
    """SIGINT or SIGTERM stopped a run at a step boundary; ``exit_code`` is 128 + signal."""

    def __init__(self, message: str, signum: int) -> None:
        super().__init__(message)
        self.signum = int(signum)
        self.exit_code = 128 + self.signum


def user_message(error: BaseException) -> str:
    """The message of ``error`` for the one-line ``nclt: error: ...`` report.

    An exception raised in a DataLoader worker is re-raised by PyTorch with the worker's
    whole traceback in its message ("Caught DataError in DataLoader worker process 0.
    Original Traceback ..."); the user needs only the original message, its last line.
    """
    text = str(error)
    if "Original Traceback" in text:
        last = [line for line in text.splitlines() if line.strip()][-1]
        name = type(error).__name__
        for prefix in (f"{type(error).__module__}.{name}: ", f"{name}: "):
            if last.startswith(prefix):
                return last[len(prefix) :]
        return last
    return text


def closest(name: str, choices: Iterable[str]) -> str:
    """Return ' Did you mean X?' for the closest choice, or '' when none is close."""
    match = difflib.get_close_matches(name, list(choices), n=1, cutoff=0.5)
    return f" Did you mean {match[0]!r}?" if match else ""
