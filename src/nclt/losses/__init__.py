"""Losses and regularizers of the five papers and of their baselines.

Every loss is a ``torch.nn.Module`` registered in ``LOSSES`` under a short name. Call shapes
(one per family, see docs/ARCHITECTURE.md):

* logit losses: ``loss(logits, labels, weight=None)`` with logits ``(N, C)`` or ``(N, C, H, W)``;
* feature regularizers: ``loss(features, labels)``;
* geometry losses: ``loss(features, labels, head_weight)``;
* contrastive losses: see each class.
"""

from nclt.registry import Registry

LOSSES: Registry = Registry("loss")

# importing the modules registers their losses
from nclt.losses import contrastive, geometry, logit, regularizers  # noqa: E402,F401
