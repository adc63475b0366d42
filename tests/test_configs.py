"""Every shipped config file validates and builds its method (no data needed)."""

from pathlib import Path

import pytest
import torch

from nclt.cli import build_parser, config_from_args
from nclt.methods.recipes import BuildContext, build_method
from nclt.models import BACKBONES

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
