"""Backbones, heads and the network that joins them."""

from nclt.models.backbones import BACKBONES
from nclt.models.heads import HEADS
from nclt.models.network import Network, Normalize

__all__ = ["BACKBONES", "HEADS", "Network", "Normalize", "build_network"]


def build_network(
    arch: str,
    head: str,
    num_classes: int,
    in_channels: int,
    mean: list[float],
    std: list[float],
    width: int | None = None,
    head_bias: bool = True,
    head_scale: float = 1.0,
    extra_heads: dict | None = None,
) -> Network:
    """Backbone + head from registry names; feature width is read off the backbone."""
    kwargs: dict = {"in_channels": in_channels}
    if width is not None:  # None: the architecture's own default width
        kwargs["width"] = width
    backbone = BACKBONES.build(arch, **kwargs)
    cls_head = HEADS.build(
        head,
        feature_dim=backbone.feature_dim,
        num_classes=num_classes,
        bias=head_bias,
        scale=head_scale,
    )
    return Network(backbone, cls_head, mean, std, extra_heads)
