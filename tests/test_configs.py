"""Every shipped config file validates and builds its method (no data needed)."""

from pathlib import Path

import pytest
import torch

from nclt.cli import build_parser, config_from_args
from nclt.methods.recipes import BuildContext, build_method
from nclt.models import BACKBONES
from nclt.models.backbones import count_parameters

ROOT = Path(__file__).parents[1]
CONFIGS = sorted(
    p for p in (ROOT / "configs").rglob("*.yaml") if "protocols" not in p.parts
) + sorted((ROOT / "results" / "checks").rglob("short.yaml"))  # the diagnostic runs' configs
NUM_CLASSES = {
    "cifar10": 10,
    "cifar100": 100,
    "imagenet_lt": 1000,
    "places_lt": 365,
    "inaturalist": 8142,
}


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_config_loads_and_builds(path):
    cfg = config_from_args(build_parser().parse_args(["train", "--config", str(path)]))
    k = NUM_CLASSES[cfg.data.dataset]
    kw = {"width": cfg.model.width} if cfg.model.width else {}
    dim = BACKBONES.get(cfg.model.arch)(**kw).feature_dim if k <= 100 else 2048
    counts = torch.linspace(500, 5, k).long()
    ctx = BuildContext(counts, k, dim, cfg.epochs)
    method = build_method(cfg.method.name, cfg.method.args, ctx)
    assert method.objective.terms


def test_imbalance_is_a_parameter():
    path = next(p for p in CONFIGS if p.parent.name == "cifar10_lt" and p.stem == "ldam_drw")
    cfg = config_from_args(
        build_parser().parse_args(["train", "--config", str(path), "--imbalance", "50"])
    )
    assert cfg.data.imbalance == 50 and cfg.optim.gamma == 0.01 and cfg.epochs == 200


def _cifar_resnet_params(width: int, n: int = 5) -> int:
    """Parameters of a CIFAR ResNet-(6n+2) backbone counted by hand: 3x3 convs without bias,
    BatchNorm (2 per channel), option-A shortcuts (no parameters)."""
    total, c_in = 3 * width * 9 + 2 * width, width
    for c in (width, 2 * width, 4 * width):
        for _ in range(n):
            total += c_in * c * 9 + c * c * 9 + 2 * 2 * c
            c_in = c
    return total


def _load(stem: str):
    path = ROOT / "configs" / "cifar10_lt" / f"{stem}.yaml"
    return config_from_args(build_parser().parse_args(["train", "--config", str(path)]))


def test_allnc_glmc_is_allnc_wb_on_glmcs_wide_resnet32():
    """allnc_glmc changes allnc_wb in the network only, and that network is GLMC's released
    "resnet32" (64-128-256 channels, 256-d features, 7,383,616 backbone parameters)."""
    glmc, wb, allnc = _load("allnc_glmc"), _load("allnc_wb"), _load("allnc")
    assert glmc.method == wb.method == allnc.method and glmc.data == allnc.data
    assert glmc.optim == wb.optim and glmc.optim.schedule == "cosine"
    assert glmc.optim.warmup_epochs == 0 and glmc.optim.min_lr == 0.0
    assert (glmc.model.arch, glmc.model.width, wb.model.width) == ("resnet32", 64, None)
    backbone = BACKBONES.get("resnet32")(width=glmc.model.width)
    assert backbone.feature_dim == 256
    assert count_parameters(backbone) == _cifar_resnet_params(64) == 7_383_616
    standard = BACKBONES.get("resnet32")()
    assert count_parameters(standard) == _cifar_resnet_params(16) == 463_504


def test_allnc_augmentation_override_documented_in_reproduction():
    """docs/REPRODUCTION.md names `--set method.args.allnc.view=autoaugment_cutout` as the
    untested PaCo / BCL CIFAR augmentation for AllNC: it puts that view on both AllNC views
    and changes nothing else."""
    path = ROOT / "configs" / "cifar10_lt" / "allnc.yaml"
    override = "method.args.allnc.view=autoaugment_cutout"
    assert f"`--set {override}`" in (ROOT / "docs" / "REPRODUCTION.md").read_text()
    args = ["train", "--config", str(path), "--set", override]
    cfg, base = config_from_args(build_parser().parse_args(args)), _load("allnc")
    ctx = BuildContext(torch.linspace(500, 5, 10).long(), 10, 64, cfg.epochs)
    views = build_method(cfg.method.name, cfg.method.args, ctx).views
    assert views == ["autoaugment_cutout", "autoaugment_cutout"]
    assert build_method(base.method.name, base.method.args, ctx).views == ["randaugment"] * 2
    assert (cfg.data, cfg.optim, cfg.model) == (base.data, base.optim, base.model)
