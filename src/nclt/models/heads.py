"""Classifier heads: features ``(B, D)`` -> logits ``(B, C)``.

Every head exposes ``weight`` (``(C, D)``, the classifier vectors that the neural-collapse
metrics and geometry losses read). Registered in ``HEADS``; other issues add the fixed-ETF
head and projection MLPs.
"""

from __future__ import annotations

import math

import torch.nn.functional as F
from torch import Tensor, nn

from nclt.registry import Registry

HEADS: Registry = Registry("head")


@HEADS.register("linear")
class LinearHead(nn.Linear):
    """Plain linear classifier ``W h + b``."""

    def __init__(self, feature_dim: int, num_classes: int, bias: bool = True, **_: object):
        super().__init__(feature_dim, num_classes, bias=bias)


@HEADS.register("cosine")
class CosineHead(nn.Module):
    """Cosine classifier: ``scale * <h/|h|, w_c/|w_c|>`` (LDAM-DRW's NormedLinear with scale 1).

    LDAM-DRW applies its scale s=30 inside the loss, so its configs use ``scale=1`` here;
    BCL's head uses scale 30 directly.
    """

    def __init__(self, feature_dim: int, num_classes: int, scale: float = 1.0, **_: object):
        super().__init__()
        self.weight = nn.Parameter(torch_empty_uniform(num_classes, feature_dim))
        self.scale = scale

    def forward(self, features: Tensor) -> Tensor:
        return self.scale * F.linear(F.normalize(features, dim=1), F.normalize(self.weight, dim=1))


def torch_empty_uniform(rows: int, cols: int) -> Tensor:
    """Uniform(-1/sqrt(cols), 1/sqrt(cols)) init, as nn.Linear's weight."""
    import torch

    bound = 1.0 / math.sqrt(cols)
    return torch.empty(rows, cols).uniform_(-bound, bound)
