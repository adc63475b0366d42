"""Evaluation metrics: accuracy by class group, and neural-collapse diagnostics.

See docs/METRICS.md for every formula, option and default.
"""

from nclt.metrics.accuracy import (
    GROUP_NAMES,
    LongTailAccuracy,
    accuracy_from_confusion,
    class_groups,
)
from nclt.metrics.collapse import (
    CollapseAccumulator,
    CollapseStats,
    NC4Accumulator,
    balance_metrics,
    class_stats,
    collapse_from_stats,
    collapse_metrics,
    collapse_metrics_from_loader,
    equiangularity,
    equinorm,
    max_equiangularity,
    mean_pairwise_angle,
    nc1_from_covariances,
    nc4,
    pairwise_cosines,
    self_duality,
)

__all__ = [
    "GROUP_NAMES",
    "CollapseAccumulator",
    "CollapseStats",
    "LongTailAccuracy",
    "NC4Accumulator",
    "accuracy_from_confusion",
    "balance_metrics",
    "class_groups",
    "class_stats",
    "collapse_from_stats",
    "collapse_metrics",
    "collapse_metrics_from_loader",
    "equiangularity",
    "equinorm",
    "max_equiangularity",
    "mean_pairwise_angle",
    "nc1_from_covariances",
    "nc4",
    "pairwise_cosines",
    "self_duality",
]
