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


def closest(name: str, choices: Iterable[str]) -> str:
    """Return ' Did you mean X?' for the closest choice, or '' when none is close."""
    match = difflib.get_close_matches(name, list(choices), n=1, cutoff=0.5)
    return f" Did you mean {match[0]!r}?" if match else ""
