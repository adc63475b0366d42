"""Classifier heads: features ``(B, D)`` -> logits ``(B, C)``.

Every head exposes ``weight`` (``(C, D)``, the classifier vectors that the neural-collapse
metrics and geometry losses read). Registered in ``HEADS``; other issues add the fixed-ETF
head and projection MLPs.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from nclt.registry import Registry

HEADS: Registry = Registry("head")


@HEADS.register("linear")
class LinearHead(nn.Linear):
    """Plain linear classifier ``W h + b``.

    Weights are Kaiming-normal initialised, as the LDAM-DRW code (whose CIFAR protocol the
    papers reuse) initialises every Linear and Conv2d layer; the bias keeps PyTorch's default.
    """

    def __init__(self, feature_dim: int, num_classes: int, bias: bool = True, **_: object):
        super().__init__(feature_dim, num_classes, bias=bias)
        nn.init.kaiming_normal_(self.weight)


@HEADS.register("cosine")
class CosineHead(nn.Module):
    """Cosine classifier: ``scale * <h/|h|, w_c/|w_c|>`` (LDAM-DRW's NormedLinear with scale 1).

    LDAM-DRW applies its scale s=30 inside the loss, so its configs use ``scale=1`` here;
    BCL's head uses scale 30 directly. Initialisation as LDAM-DRW's NormedLinear: uniform in
    [-1, 1], then every class vector rescaled to unit norm (the norm of the raw weights sets
    the effective learning rate of a normalised classifier, so it matters).
    """

    def __init__(self, feature_dim: int, num_classes: int, scale: float = 1.0, **_: object):
        super().__init__()
        w = torch.empty(num_classes, feature_dim).uniform_(-1.0, 1.0)
        self.weight = nn.Parameter(F.normalize(w, dim=1))
        self.scale = scale

    def forward(self, features: Tensor) -> Tensor:
        return self.scale * F.linear(F.normalize(features, dim=1), F.normalize(self.weight, dim=1))


@HEADS.register("etf")
class FixedETFHead(nn.Module):
    """Fixed simplex-ETF classifier (Yang et al., NeurIPS 2022), as DisA uses it.

    ``embed``: a learnable BatchNorm1d, then (``normalize=True``) L2 normalisation, as Yang
    et al.'s code does before its dot-regression loss; ``classify``: ``scale * h M^T`` with
    M the fixed ``(K, D)`` ETF (a buffer, never trained). The network exposes the embedded
    features as ``head_features``, which is what DR and DisA align with the ETF.

    Args:
        feature_dim: D (>= K - 1, else :func:`nclt.geometry.simplex_etf` raises).
        num_classes: K.
        normalize: L2-normalise the embedded features (``etf-dr``); ``etf-ce`` keeps the
            BatchNorm output unnormalised so that CE sees unbounded logits.
        scale: logit scale.
        seed: seed of the ETF's random rotation.
    """

    def __init__(
        self,
        feature_dim: int,
        num_classes: int,
        normalize: bool = True,
        scale: float = 1.0,
        seed: int = 0,
        **_: object,
    ) -> None:
        super().__init__()
        from nclt.geometry import simplex_etf

        self.register_buffer("etf", simplex_etf(feature_dim, num_classes, seed=seed).T.contiguous())
        self.bn = nn.BatchNorm1d(feature_dim)
        self.normalize = normalize
        self.scale = scale

    @property
    def weight(self) -> Tensor:
        return self.etf

    def embed(self, features: Tensor) -> Tensor:
        h = self.bn(features)
        return F.normalize(h, dim=1) if self.normalize else h

    def classify(self, head_features: Tensor) -> Tensor:
        return self.scale * head_features @ self.etf.to(head_features.dtype).T

    def forward(self, features: Tensor) -> Tensor:
        return self.classify(self.embed(features))


@HEADS.register("lws")
class LWSHead(nn.Linear):
    """Learnable weight scaling (Kang et al., ICLR 2020): ``f_c * (w_c . h + b_c)``.

    A second-stage head: ``weight`` and ``bias`` come from the first stage and stay frozen;
    only the per-class scales ``scales`` (initialised to 1) are trained.
    """

    def __init__(self, feature_dim: int, num_classes: int, bias: bool = True, **_: object):
        super().__init__(feature_dim, num_classes, bias=bias)
        self.scales = nn.Parameter(torch.ones(num_classes))

    def forward(self, features: Tensor) -> Tensor:
        return super().forward(features) * self.scales


@HEADS.register("tau_norm")
class TauNormHead(nn.Linear):
    """tau-normalised classifier (Kang et al., ICLR 2020): ``w_c / ||w_c||^tau``, no training.

    The bias is dropped (as Kang et al. do); ``weight`` keeps the first stage's vectors.
    """

    def __init__(self, feature_dim: int, num_classes: int, tau: float = 1.0, **_: object):
        super().__init__(feature_dim, num_classes, bias=True)
        self.tau = tau

    def forward(self, features: Tensor) -> Tensor:
        w = self.weight / self.weight.norm(dim=1, keepdim=True).clamp_min(1e-12).pow(self.tau)
        return F.linear(features, w)
