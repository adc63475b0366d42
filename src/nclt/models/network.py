"""The network: input normalisation -> backbone -> heads, for one or several views."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn


class Normalize(nn.Module):
    """uint8 images (0..255) or floats in [0, 1] -> per-channel standardised floats.

    Normalisation lives in the network rather than in the data pipeline so that workers move
    uint8 tensors (4x less memory traffic) and batched augmentation can run on the device.

    Images are converted to the buffers' dtype (float32, or float64 after ``.double()``)
    before the division by 255: a float64 model then normalises in float64, where dividing
    (the CPU) and multiplying by the reciprocal (CUDA's kernel for a scalar divisor) agree to
    the last bit that matters. In float32 they differ by one ulp on some pixels, which moved
    every float64 loss by 1e-9 to 2e-8 (relative) between CUDA and the CPU (the H200 run of
    tests/cuda, 2026-12-04).
    """

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1), persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        dtype = self.mean.dtype if self.mean.dtype == torch.float64 else torch.float32
        x = x.to(dtype).div_(255.0) if x.dtype == torch.uint8 else x.to(dtype)
        return (x - self.mean) / self.std


class Network(nn.Module):
    """Backbone plus classifier head (plus optional extra heads for multi-branch methods).

    ``forward`` takes one batch ``(B, C, H, W)`` or a list of V views of the same B images,
    runs the backbone once on their concatenation (BatchNorm sees every view, as BCL's code
    does), and returns a dict:

    * ``features`` ``(B, D)`` and ``logits`` ``(B, K)`` of the first view (the classification
      view); ``head_weight`` ``(K, D)``; ``head_features`` ``(B, D)`` for heads with an
      ``embed`` step (the fixed-ETF head's BatchNorm + normalisation);
    * with V > 1 views: ``view_features`` ``(B, V, D)`` and ``view_logits`` ``(B, V, K)``;
    * one entry per extra head: ``extra_heads[name](view_features or features)``.
    """

    def __init__(
        self,
        backbone: nn.Module,
        head: nn.Module,
        mean: Sequence[float],
        std: Sequence[float],
        extra_heads: dict[str, nn.Module] | None = None,
    ) -> None:
        super().__init__()
        self.normalize = Normalize(mean, std)
        self.backbone = backbone
        self.head = head
        self.extra_heads = nn.ModuleDict(extra_heads or {})
        self.feature_dim: int = backbone.feature_dim  # type: ignore[assignment]

    def forward(self, x: Tensor | Sequence[Tensor]) -> dict[str, Tensor]:
        views = [x] if isinstance(x, Tensor) else list(x)
        n = views[0].shape[0]
        batch = views[0] if len(views) == 1 else torch.cat(views, dim=0)
        feats = self.backbone(self.normalize(batch))
        with _full_precision(feats):
            feats = upcast_low_precision(feats)
            out: dict[str, Tensor] = {"features": feats[:n]}
            if hasattr(self.head, "embed"):  # heads that transform features before classifying
                head_feats = self.head.embed(feats)
                logits = self.head.classify(head_feats)
                out["head_features"] = head_feats[:n]
            else:
                logits = self.head(feats)
            out.update(logits=logits[:n], head_weight=self.head.weight)
            per_view = feats
            if len(views) > 1:
                per_view = feats.view(len(views), n, -1).transpose(0, 1)
                out["view_features"] = per_view
                out["view_logits"] = logits.view(len(views), n, -1).transpose(0, 1)
            for name, extra in self.extra_heads.items():
                out[name] = extra(per_view)
        return out

    @torch.no_grad()
    def embed(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Features and logits of one batch (evaluation helper).

        The features are the ones the classifier reads: the backbone's, or, for a head with
        an ``embed`` step (fixed ETF), the embedded ones, so that NC metrics compare the
        classifier with the features it actually classifies.
        """
        feats = self.backbone(self.normalize(x))
        with _full_precision(feats):
            feats = upcast_low_precision(feats)
            if hasattr(self.head, "embed"):
                feats = self.head.embed(feats)
                return feats, self.head.classify(feats)
            return feats, self.head(feats)


def upcast_low_precision(t: Tensor) -> Tensor:
    """float16 / bfloat16 (autocast outputs) become float32; float32 and float64 stay."""
    return t.float() if t.dtype in (torch.float16, torch.bfloat16) else t


def _full_precision(t: Tensor) -> torch.autocast:
    """Autocast off: the heads (classifier, ETF BatchNorm, projection MLPs) run in float32.

    Under bf16 autocast the backbone's features come out in bf16 (8-bit mantissa). The heads
    cost well under 1% of a step, but in bf16 their outputs are coarse where it matters: a
    cosine logit near 1 moves in steps of 2^-8, which a scale of 30 (LDAM, BCL) turns into
    steps of ~0.12 in the logits. In float32 the only rounding left is that of the features.
    """
    return torch.autocast(t.device.type, enabled=False)
