"""Visual diagnostics: ``nclt report`` (figures + report.html) and ``nclt compare`` (tables).

See docs/REPORT.md for every figure, what it shows and which paper figure it reproduces.
"""

from nclt.report.data import ReportData, collect, read_metrics_csv, resolve_checkpoint
from nclt.report.html import build_report, write_report

__all__ = [
    "ReportData",
    "build_report",
    "collect",
    "read_metrics_csv",
    "resolve_checkpoint",
    "write_report",
]
