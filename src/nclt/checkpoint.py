"""Checkpoints: written atomically, read with ``weights_only=True``.

A checkpoint is a dict of tensors and plain Python values only (numpy RNG state converted to
a tensor), so that ``torch.load(..., weights_only=True)`` reads it and a malicious pickle in
a checkpoint file cannot run code. Writing goes to a temporary file in the same folder,
flushed and fsynced, then ``os.replace``-d over the old file: a crash or a full disk during
the write leaves the previous checkpoint intact.
"""

from __future__ import annotations

import os
import random
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from nclt.errors import CheckpointError, CheckpointWriteError

FORMAT_VERSION = 1


def save_atomic(obj: dict[str, Any], path: str | Path) -> None:
    """``torch.save`` to ``path`` atomically (temp file + fsync + rename).

    Raises:
        CheckpointWriteError: (an ``OSError`` too) the write failed, for example on a full
            disk; the message says so and that the previous file at ``path`` is untouched.
    """
    path = Path(path)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        if isinstance(e, OSError) and not isinstance(e, CheckpointWriteError):
            kept = (
                f"the previous {path.name} is intact"
                if path.exists()
                else f"no {path.name} was written"
            )
            raise CheckpointWriteError(
                e.errno,
                f"cannot write checkpoint {str(path)!r} ({e.strerror or e}); {kept} "
                "(nclt writes a temporary file and renames it). Free some space, then continue "
                "the run with `nclt train --resume RUN_DIR`",
            ) from e
        raise
    try:  # make the rename itself durable
        dfd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError:  # pragma: no cover - not every filesystem allows fsync on a directory
        pass


def load(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint safely; a missing, truncated or foreign file is a CheckpointError."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {str(path)!r} does not exist")
    try:
        obj = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:
        raise CheckpointError(
            f"cannot read checkpoint {str(path)!r} ({type(e).__name__}: {str(e)[:300]}). "
            "It is truncated, corrupt, or not an nclt checkpoint (nclt loads with "
            "weights_only=True and never unpickles arbitrary objects)."
        ) from None
    if not isinstance(obj, dict) or obj.get("format") != FORMAT_VERSION or "model" not in obj:
        raise CheckpointError(f"{str(path)!r} is not an nclt checkpoint (format {FORMAT_VERSION})")
    return obj


def rng_state() -> dict[str, Any]:
    """Every RNG state nclt relies on, as tensors and plain values."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "kind": str(kind),
            "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached": float(cached),
        },
        "python": _py_state_to_plain(random.getstate()),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state(
        (n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached"])
    )
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _py_state_to_plain(st: tuple) -> list:
    version, internal, gauss = st
    return [version, list(internal), gauss]
