"""Backbones: image batch -> pooled feature vectors ``(B, D)``.

Every backbone exposes ``feature_dim``. Registered in ``BACKBONES``:

* ``resnet20/32/44/56/110``: the CIFAR ResNets of He et al. (2016) as the LDAM-DRW code builds
  them (3 stages of basic blocks, zero-padding "option A" shortcuts, Kaiming-normal init).
  ``width`` is the first stage's channels: 16 gives 64-d features, 32 gives 128-d (DisA's
  CIFAR-100 ETF models, ERRATA).
* ``resnet18_cifar``: ResNet-18 with a 3x3 stem and no max-pool (INC Table 6, AllNC Fig. 3).
* ``resnet50``, ``resnext50_32x4d``, ``resnet152``: torchvision's, without the fc layer.
* ``small_cnn``: a small CNN for the embedded 8x8 digits.

The CIFAR ResNets are written here because torchvision has no CIFAR variant (its ResNets
downsample 4x in the stem and use projection shortcuts).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from nclt.registry import Registry

BACKBONES: Registry = Registry("backbone")


def _kaiming_init(module: nn.Module) -> None:
    for m in module.modules():
        if isinstance(m, nn.Conv2d | nn.Linear):
            nn.init.kaiming_normal_(m.weight)


class _ShortcutA(nn.Module):
    """Parameter-free shortcut: subsample by 2 and zero-pad the new channels ("option A")."""

    def __init__(self, extra: int) -> None:
        super().__init__()
        self.pad = extra // 2

    def forward(self, x: Tensor) -> Tensor:
        return F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, self.pad, self.pad))


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, c_in: int, c_out: int, stride: int = 1, option: str = "A") -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or c_in != c_out:
            if option == "A":
                self.shortcut = _ShortcutA(c_out - c_in)
            else:
                self.shortcut = nn.Sequential(
                    nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out)
                )

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class CifarResNet(nn.Module):
    """ResNet-(6n+2) for 32x32 inputs (He et al. 2016, section 4.2)."""

    def __init__(self, depth: int, width: int = 16, in_channels: int = 3) -> None:
        super().__init__()
        if (depth - 2) % 6:
            raise ValueError(f"CIFAR ResNet depth must be 6n+2, got {depth}")
        n = (depth - 2) // 6
        self.conv1 = nn.Conv2d(in_channels, width, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        layers, c_in = [], width
        for i, c_out in enumerate((width, 2 * width, 4 * width)):
            for j in range(n):
                stride = 2 if (i > 0 and j == 0) else 1
                layers.append(BasicBlock(c_in, c_out, stride))
                c_in = c_out
        self.layers = nn.Sequential(*layers)
        self.feature_dim = 4 * width
        _kaiming_init(self)

    def forward(self, x: Tensor) -> Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        x = self.layers(x)
        return F.adaptive_avg_pool2d(x, 1).flatten(1)


class ResNet18Cifar(nn.Module):
    """ResNet-18 with a 3x3 stride-1 stem and no max-pool, for 32x32 inputs (512-d)."""

    def __init__(self, width: int = 64, in_channels: int = 3) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, width, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        layers, c_in = [], width
        for i, c_out in enumerate((width, 2 * width, 4 * width, 8 * width)):
            for j in range(2):
                stride = 2 if (i > 0 and j == 0) else 1
                layers.append(BasicBlock(c_in, c_out, stride, option="B"))
                c_in = c_out
        self.layers = nn.Sequential(*layers)
        self.feature_dim = 8 * width
        _kaiming_init(self)

    def forward(self, x: Tensor) -> Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        return F.adaptive_avg_pool2d(self.layers(x), 1).flatten(1)


class SmallCNN(nn.Module):
    """Two conv blocks and a linear layer for tiny images (the embedded 8x8 digits)."""

    def __init__(self, width: int = 32, in_channels: int = 1, feature_dim: int = 64) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(in_channels, width, 3, padding=1, bias=False),
            nn.BatchNorm2d(width),
            nn.ReLU(inplace=True),
            nn.Conv2d(width, 2 * width, 3, padding=1, bias=False),
            nn.BatchNorm2d(2 * width),
            nn.ReLU(inplace=True),
            nn.AdaptiveAvgPool2d(2),
            nn.Flatten(),
            nn.Linear(8 * width, feature_dim),
            nn.BatchNorm1d(feature_dim),
            nn.ReLU(inplace=True),
        )
        self.feature_dim = feature_dim
        _kaiming_init(self)

    def forward(self, x: Tensor) -> Tensor:
        return self.body(x)


class TorchvisionBackbone(nn.Module):
    """A torchvision ImageNet model with its classifier removed (random init, no download)."""

    def __init__(self, name: str, in_channels: int = 3) -> None:
        super().__init__()
        import torchvision

        if in_channels != 3:
            raise ValueError(f"{name} expects 3-channel images")
        net = getattr(torchvision.models, name)(weights=None)
        self.feature_dim = net.fc.in_features
        net.fc = nn.Identity()
        self.net = net

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


for _depth in (20, 32, 44, 56, 110):

    def _make(width: int = 16, in_channels: int = 3, _d: int = _depth, **_: object) -> nn.Module:
        return CifarResNet(_d, width, in_channels)

    BACKBONES.register(f"resnet{_depth}")(_make)


@BACKBONES.register("resnet18_cifar")
def _resnet18_cifar(width: int = 64, in_channels: int = 3, **_: object) -> nn.Module:
    return ResNet18Cifar(width, in_channels)


@BACKBONES.register("small_cnn")
def _small_cnn(width: int = 32, in_channels: int = 1, **_: object) -> nn.Module:
    return SmallCNN(width, in_channels)


for _name in ("resnet50", "resnext50_32x4d", "resnet152"):

    def _make_tv(in_channels: int = 3, _n: str = _name, **_: object) -> nn.Module:
        return TorchvisionBackbone(_n, in_channels)

    BACKBONES.register(_name)(_make_tv)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


__all__ = ["BACKBONES", "CifarResNet", "ResNet18Cifar", "SmallCNN", "count_parameters", "torch"]
