"""Losses and regularizers of the five papers and of their baselines.

Every loss is a ``torch.nn.Module`` registered in ``LOSSES`` under a short name, and
importable by class name from this package. Call shapes (one per family, see
docs/ARCHITECTURE.md):

* logit losses: ``loss(logits, labels, weight=None)`` with logits ``(N, C)`` or ``(N, C, H, W)``;
* feature regularizers: ``loss(features, labels)``;
* geometry losses: ``loss(features, labels, head_weight)``;
* contrastive losses: see each class.
"""

from typing import Any

from nclt.registry import Registry

LOSSES: Registry[Any] = Registry("loss")

# importing the modules registers their losses
from nclt.losses.contrastive import BCLLoss, HyConLoss, SupConLoss  # noqa: E402
from nclt.losses.geometry import DisALoss, DotRegressionLoss, transport_plan  # noqa: E402
from nclt.losses.logit import (  # noqa: E402
    ARBLoss,
    BalancedSoftmaxLoss,
    ClassBalancedLoss,
    CrossEntropyLoss,
    FocalLoss,
    GeneralizedReweightLoss,
    LDAMLoss,
    LogitAdjustedLoss,
    MSELoss,
)
from nclt.losses.regularizers import (  # noqa: E402
    BetweenClassLoss,
    CenterLoss,
    INCLoss,
    P2PClassifierLoss,
    P2PLoss,
    WithinClassLoss,
)

__all__ = [
    "LOSSES",
    "ARBLoss",
    "BCLLoss",
    "BalancedSoftmaxLoss",
    "BetweenClassLoss",
    "CenterLoss",
    "ClassBalancedLoss",
    "CrossEntropyLoss",
    "DisALoss",
    "DotRegressionLoss",
    "FocalLoss",
    "GeneralizedReweightLoss",
    "HyConLoss",
    "INCLoss",
    "LDAMLoss",
    "LogitAdjustedLoss",
    "MSELoss",
    "P2PClassifierLoss",
    "P2PLoss",
    "SupConLoss",
    "WithinClassLoss",
    "transport_plan",
]
