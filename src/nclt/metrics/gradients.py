"""ARB Fig. 5: the per-class components of a classifier vector's gradient."""

from __future__ import annotations

import torch
from torch import Tensor


def class_gradient_components(
    logits_grad: Tensor, features: Tensor, labels: Tensor, target_class: int, num_classes: int
) -> Tensor:
    """Split the gradient of classifier vector ``w_c`` by the label of the samples.

    For ``logits = features @ W.T + b`` the gradient of ``w_c`` is
    ``sum_i dL/dz_ic h_i``. Row k of the result is the part contributed by the samples of
    class k: the attraction for k = c, a repulsion for every other k (ARB Eq. 15); the rows
    sum to ``dL/dw_c``.

    Args:
        logits_grad: dL/dlogits, (B, K).
        features: the features the classifier reads, (B, D).
        labels: (B,).
        target_class: c.
        num_classes: K.

    Returns:
        (K, D) components.
    """
    contrib = logits_grad[:, target_class : target_class + 1] * features
    out = torch.zeros(num_classes, features.shape[1], dtype=contrib.dtype, device=contrib.device)
    return out.index_add_(0, labels, contrib)
