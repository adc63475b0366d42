"""What a run writes next to its checkpoints: config.yaml, metrics.csv, results.json, TensorBoard.

Only rank 0 writes (the callers check ``nclt.dist.is_main()``).
"""

from __future__ import annotations

import csv
import json
import math
import os
import platform
import subprocess
from pathlib import Path
from typing import Any

import torch
import yaml

import nclt


def environment() -> dict[str, Any]:
    """Versions and commit that produced a run (written into config.yaml)."""
    import torchvision

    return {
        "nclt": nclt.__version__,
        "git_commit": _git_commit(),
        "python": platform.python_version(),
        "torch": str(torch.__version__),
        "torchvision": str(torchvision.__version__),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        # the GPU a run could use (which one it did use: its ``device`` key)
        "accelerator": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }


def _git_commit() -> str | None:
    here = Path(__file__).resolve().parent
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def write_yaml(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(yaml.safe_dump(data, sort_keys=False))
    os.replace(tmp, path)


def write_json(path: Path, data: Any) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(_jsonable(data), indent=2, allow_nan=False))
    os.replace(tmp, path)


def _jsonable(x: Any) -> Any:
    """Tensors to lists, non-finite floats to None (JSON has no NaN)."""
    if isinstance(x, torch.Tensor):
        return _jsonable(x.tolist())
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_jsonable(v) for v in x]
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x


class MetricsCSV:
    """A row per epoch; columns grow as new keys appear; resume truncates rows past a point."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.rows: list[dict[str, Any]] = []
        if path.exists():
            with path.open(newline="") as f:
                self.rows = list(csv.DictReader(f))

    def truncate_after(self, epoch: int) -> None:
        """Drop rows of epochs after ``epoch`` (written before a crash, never checkpointed)."""
        self.rows = [r for r in self.rows if int(r["epoch"]) <= epoch]
        self._write()

    def append(self, row: dict[str, Any]) -> None:
        self.rows.append({k: _fmt(v) for k, v in row.items()})
        self._write()

    def _write(self) -> None:
        cols: list[str] = []
        for r in self.rows:
            cols.extend(k for k in r if k not in cols)
        tmp = self.path.with_suffix(".csv.tmp")
        with tmp.open("w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=cols)
            w.writeheader()
            w.writerows(self.rows)
        os.replace(tmp, self.path)


def _fmt(v: Any) -> Any:
    if isinstance(v, float):
        return f"{v:.6g}"
    if v is None:
        return ""
    return v
