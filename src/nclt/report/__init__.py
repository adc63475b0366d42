"""Visual diagnostics: ``nclt report`` (figures + report.html) and ``nclt compare`` (tables).

See docs/REPORT.md for every figure, what it shows and which paper figure it reproduces.
The exports are imported on first use, so that ``nclt.report.compare`` (used by ``nclt
reproduce``) loads without torch and matplotlib.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "ReportData": "nclt.report.data",
    "collect": "nclt.report.data",
    "read_metrics_csv": "nclt.report.data",
    "resolve_checkpoint": "nclt.report.data",
    "build_report": "nclt.report.html",
    "write_report": "nclt.report.html",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'nclt.report' has no attribute {name!r}")
