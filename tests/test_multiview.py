"""BCL, AllNC and AllNC++: end-to-end digits runs, prototypes, GBBN weights, MaxNorm, configs."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import pytest
import torch
from torch import nn

import nclt.runner as runner
from nclt import checkpoint as ckpt
from nclt.cli import build_parser, config_from_args
from nclt.data import dataset_counts
from nclt.data.views import build_view
from nclt.losses import LOSSES
from nclt.methods.multiview import MaxNorm, PrototypeBCL
from nclt.methods.recipes import BuildContext, build_method, split_name
from nclt.methods.schedules import Progress

REPO = Path(__file__).resolve().parents[1]
CONFIGS = [
    REPO / "configs" / d / f"{n}.yaml"
    for d in ("cifar10_lt", "cifar100_lt")
    for n in ("bcl", "bcl_400ep", "allnc", "allnc_pp")
]
# the terms each method logs, as its paper names them: BCL Eq. 11 (L_LC, L_BCL); AllNC
# Eq. 12-14 (L_ce, L_re = GR, L_p(omega), L_con = HyCon, L_p(mu))
TERMS = {
    "bcl": {"lc", "bcl"},
    "allnc": {"ce", "gr", "p2p_classifier", "hycon", "p2p"},
    "allnc++": {"ce", "gr", "p2p_classifier", "hycon", "p2p"},
}


def _ctx(k: int = 10, d: int = 16, epochs: int = 10) -> BuildContext:
    return BuildContext(torch.tensor([100, 60, 30, 20, 10, 8, 6, 4, 3, 2])[:k], k, d, epochs)


@pytest.fixture(autouse=True)
def _keep_threads():
    """The runs below set torch's thread count (threads=1); restore it for other tests."""
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)


def _cfg(tmp_path: Path, method: str, *extra: str, epochs: int = 2):
    args = build_parser().parse_args(
        [
            "train",
            "--method",
            method,
            "--epochs",
            str(epochs),
            "--out",
            str(tmp_path / "r"),
            "--set",
            "progress=false",
            "--set",
            "threads=1",
            *extra,
        ]
    )
    return config_from_args(args)


@pytest.mark.parametrize("method", ["bcl", "allnc", "allnc++"])
def test_trains_two_epochs_on_digits(tmp_path, method):
    # allnc++ with a bound that is active from the first step (the init rows are ~0.58 long)
    extra = ["--set", "method.args.allnc++.max_norm=0.3"] if method == "allnc++" else []
    runner.train(_cfg(tmp_path, method, *extra))
    rows = list(csv.DictReader((tmp_path / "r" / "metrics.csv").open()))
    assert len(rows) == 2
    for r in rows:
        assert math.isfinite(float(r["loss"]))
        for name in TERMS[method] - {"gr", "p2p_classifier"}:  # 1 - eta is 0 at the 1st step
            assert math.isfinite(float(r[name])), (name, r)
    assert TERMS[method] <= set(rows[-1])
    assert all(math.isfinite(float(rows[-1][n])) for n in TERMS[method])
    assert set(build_method(method, {}, _ctx()).objective.losses) == TERMS[method]
    if method == "allnc++":  # the max-norm bound holds after training
        state = ckpt.load(tmp_path / "r" / "last.pt")
        norms = state["model"]["head.weight"].norm(dim=1)
        assert (norms <= 0.3 + 1e-6).all(), norms
        assert norms.max() > 0.3 - 1e-4  # the bound was active, not vacuous


@pytest.mark.parametrize("config", ["bcl", "allnc_pp"])
def test_cifar_config_trains_on_a_tiny_cifar_file(tmp_path, config, tiny_cifar10, tiny_sets):
    """The shipped configs with their real views (AutoAugment + Cutout, SimAugment colour
    jitter, RandAugment) on 3-channel 32x32 images, with a small CNN to stay fast."""
    path = REPO / "configs" / "cifar10_lt" / f"{config}.yaml"
    sets = tiny_sets
    args = build_parser().parse_args(
        [
            "train",
            "--config",
            str(path),
            "--imbalance",
            "10",
            "--epochs",
            "2",
            "--data-root",
            str(tiny_cifar10),
            "--out",
            str(tmp_path / "r"),
            *[a for s in sets for a in ("--set", s)],
        ]
    )
    runner.train(config_from_args(args))
    rows = list(csv.DictReader((tmp_path / "r" / "metrics.csv").open()))
    name = "bcl" if config == "bcl" else "allnc++"
    assert len(rows) == 2 and TERMS[name] <= set(rows[-1])
    assert all(math.isfinite(float(rows[-1][n])) for n in (*TERMS[name], "loss"))


@pytest.mark.parametrize("prototype_head", ["separate", "shared"])
def test_bcl_prototypes_are_the_mlp_of_the_classifier_weights(prototype_head):
    torch.manual_seed(0)
    m = build_method(
        "bcl", {"bcl": {"prototype_head": prototype_head, "proj_dim": 8, "hidden_dim": 12}}, _ctx()
    )
    head = m.extra_heads["proj"]
    term = next(t for t in m.objective.terms if t.name == "bcl")
    assert isinstance(term.loss, PrototypeBCL) and term.reads == ("proj", "labels", "head_weight")
    assert m.head == "cosine" and m.head_args == {"scale": 30.0}
    assert m.views == ["autoaugment_cutout", "simclr", "simclr"]
    # the loss module only references the projection head: no parameter is duplicated
    assert not list(m.objective.parameters())
    labels = torch.tensor([0, 0, 1, 2, 3, 3, 4, 5])
    feats = torch.randn(8, 3, 16)  # (B, V, D): view 0 classified, views 1-2 contrasted
    proj = head(feats)
    assert proj.shape == (8, 2, 8)
    weight = nn.Parameter(torch.randn(10, 16))
    mlp = head.prototype_mlp if prototype_head == "separate" else head.proj.mlp
    if prototype_head == "shared":
        assert head.prototype_mlp is None
    value = term.loss(proj, labels, weight)
    expected = LOSSES.build("bcl", num_classes=10, temperature=0.1)(proj, labels, mlp(weight))
    assert torch.allclose(value, expected, atol=1e-6)
    head.zero_grad()
    term.loss(proj.detach(), labels, weight).backward()  # the BCL term alone
    assert weight.grad is not None and weight.grad.abs().sum() > 0
    assert all(
        p.grad is not None and p.grad.abs().sum() > 0 for p in mlp.parameters() if p.dim() == 2
    )


def test_bcl_network_shapes_and_single_registration(tmp_path):
    run = runner.build_run(_cfg(tmp_path, "bcl"))
    params = list(run.model.parameters())
    assert len({id(p) for p in params}) == len(params)
    assert not {id(p) for p in run.method.objective.parameters()} & {id(p) for p in params}
    assert run.model.head.scale == 30.0
    x, _ = next(iter(torch.utils.data.DataLoader(run.train_set, batch_size=6)))
    assert len(x) == 3
    out = run.model(list(x))
    assert out["proj"].shape == (6, 2, 128) and out["view_logits"].shape == (6, 3, 10)


def test_allnc_network_shapes(tmp_path):
    run = runner.build_run(_cfg(tmp_path, "allnc"))
    x, _ = next(iter(torch.utils.data.DataLoader(run.train_set, batch_size=6)))
    out = run.model(list(x))
    assert out["proj"].shape == (6, 2, 128) and out["pred"].shape == (6, 2, 128)
    assert out["view_logits"].shape == (6, 2, 10)
    params = list(run.model.parameters())
    assert len({id(p) for p in params}) == len(params)  # pred reuses proj, registered once


@pytest.mark.parametrize("unit", ["iteration", "epoch"])
def test_gbbn_eta_weights_are_exact(unit):
    m = build_method(
        "allnc", {"allnc": {"gamma": 2.0, "alpha": 0.7, "eta_unit": unit}}, _ctx(epochs=10)
    )
    p = Progress(epoch=3, step=5, steps_per_epoch=10, epochs=10)
    t = 35 / 100 if unit == "iteration" else 3 / 10
    eta = 1.0 - t**2.0
    w = {term.name: term.weight for term in m.objective.terms}
    assert w["ce"](p) == pytest.approx(eta, abs=1e-15)
    assert w["gr"](p) == pytest.approx(1.0 - eta, abs=1e-15)
    assert w["p2p_classifier"](p) == pytest.approx(2.0 * (1.0 - eta), abs=1e-15)
    assert w["hycon"] == 0.7 and w["p2p"] == 0.7
    start = Progress(0, 0, 10, 10)
    assert w["ce"](start) == 1.0 and w["gr"](start) == 0.0


def test_allnc_terms_read_both_views():
    m = build_method("allnc", {}, _ctx())
    reads = {t.name: t.reads for t in m.objective.terms}
    assert reads["ce"] == reads["gr"] == ("view_logits", "labels")
    assert reads["hycon"] == ("pred", "proj", "labels")
    assert reads["p2p"] == ("view_features", "labels")
    assert reads["p2p_classifier"] == ("head_weight",)
    assert m.head == "linear" and m.views == ["randaugment", "randaugment"]
    # per branch: the summed CE of the two views
    torch.manual_seed(0)
    logits, labels = torch.randn(5, 2, 10), torch.randint(0, 10, (5,))
    ce = next(t.loss for t in m.objective.terms if t.name == "ce")
    ref = sum(nn.functional.cross_entropy(logits[:, v], labels) for v in range(2))
    assert torch.allclose(ce(logits, labels), ref)


def test_max_norm_projects_only_long_rows():
    net = nn.Module()
    net.head = nn.Linear(4, 3)
    with torch.no_grad():
        net.head.weight.copy_(torch.tensor([[3.0, 4, 0, 0], [0.1, 0, 0, 0], [0, 0, 1, 1]]))
    MaxNorm(1.0)(net)
    norms = net.head.weight.norm(dim=1)
    assert (norms <= 1.0 + 1e-6).all()
    assert torch.allclose(net.head.weight[0], torch.tensor([0.6, 0.8, 0, 0]))
    assert torch.allclose(net.head.weight[1], torch.tensor([0.1, 0, 0, 0]))
    assert build_method("allnc++", {}, _ctx()).post_step[0].max_norm == 1.0


def test_allnc_pp_is_one_component_name():
    assert split_name("allnc++") == ["allnc++"]
    assert split_name("allnc+++disa") == ["allnc++", "disa"]


def test_digits_views_keep_the_image():
    """CIFAR's 16x16 Cutout would blank an 8x8 digit: it is capped at half the side."""
    torch.manual_seed(0)
    img = torch.full((1, 8, 8), 200, dtype=torch.uint8)
    view = build_view("autoaugment_cutout", image_size=8)
    outs = [view(img) for _ in range(20)]
    assert all(o.shape == (1, 8, 8) and o.dtype == torch.uint8 for o in outs)
    assert all(not (o == 0).all() for o in outs)


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_config_loads_and_builds(path):
    cfg = config_from_args(build_parser().parse_args(["train", "--config", str(path)]))
    assert cfg.data.imbalance == 100
    counts = torch.tensor(dataset_counts(cfg.data.dataset, cfg.data.imbalance))
    m = build_method(
        cfg.method.name, cfg.method.args, BuildContext(counts, len(counts), 64, cfg.epochs)
    )
    assert set(m.objective.losses) == TERMS[cfg.method.name]
    if cfg.method.name == "bcl":
        assert (cfg.data.batch_size, cfg.optim.lr, cfg.optim.weight_decay) == (256, 0.15, 5e-4)
        assert cfg.optim.gamma == 0.1
        long = path.stem.endswith("400ep")
        assert cfg.epochs == (400 if long else 200)
        assert cfg.optim.milestones == ([360, 380] if long else [160, 180])
        assert cfg.optim.warmup_epochs == (10 if long else 5)
    else:
        assert (cfg.data.batch_size, cfg.optim.lr, cfg.optim.weight_decay) == (64, 0.01, 5e-3)
        assert m.args[cfg.method.name]["gamma"] == 3.0 and cfg.data.group_rule == "allnc"
    over = config_from_args(
        build_parser().parse_args(["train", "--config", str(path), "--imbalance", "50"])
    )
    assert over.data.imbalance == 50


def test_crt_after_bcl(tmp_path):
    """A second stage runs on a multi-view first stage (its projection heads are dropped)."""
    from nclt import checkpoint as ckpt
    from nclt.cli import build_parser, config_from_args
    from nclt.runner import train

    first = tmp_path / "bcl"
    train(
        config_from_args(
            build_parser().parse_args(
                [
                    "train",
                    "--method",
                    "bcl",
                    "--epochs",
                    "1",
                    "--out",
                    str(first),
                    "--set",
                    "progress=false",
                ]
            )
        )
    )
    train(
        config_from_args(
            build_parser().parse_args(
                [
                    "train",
                    "--stage2",
                    "crt",
                    "--from",
                    str(first),
                    "--epochs",
                    "1",
                    "--set",
                    "progress=false",
                ]
            )
        )
    )
    before = ckpt.load(first / "last.pt")["model"]
    after = ckpt.load(first / "stage2_crt" / "last.pt")["model"]
    assert not any(k.startswith("extra_heads.") for k in after)
    for k, v in after.items():
        if k.startswith("backbone."):
            assert torch.equal(v, before[k]), k


@pytest.mark.parametrize("method", ["allnc", "allnc++"])
def test_allnc_gr_averages_over_n_as_eq_12_unless_asked(method):
    """Default: (1/N) sum_i w_{y_i} CE_i per view (Eq. 12); gr_weighted_mean: true divides by
    sum_i w_{y_i} (DisAlign's code)."""
    ctx = _ctx()
    w = ctx.class_counts.double() ** -1.0
    w = w * len(w) / w.sum()
    torch.manual_seed(0)
    logits, labels = torch.randn(6, 2, 10, dtype=torch.float64), torch.tensor([0, 0, 1, 3, 9, 9])
    ce = torch.stack(
        [nn.functional.cross_entropy(logits[:, v], labels, reduction="none") for v in range(2)]
    )  # (views, N)
    for args, denom in (({}, len(labels)), ({"gr_weighted_mean": True}, w[labels].sum())):
        m = build_method(method, {method: args}, ctx)
        gr = next(t.loss for t in m.objective.terms if t.name == "gr")
        ref = (ce * w[labels]).sum() / denom
        assert torch.allclose(gr(logits, labels), ref, rtol=1e-12), args
