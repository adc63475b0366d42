"""Every method composes, trains end to end with finite losses, and logs its paper's terms."""

from __future__ import annotations

import csv
import math

import pytest
import torch

import nclt.runner as runner
from nclt.cli import build_parser, config_from_args
from nclt.errors import ConfigError
from nclt.methods.recipes import METHODS, BuildContext, build_method

STAGE2 = ["crt", "lws", "tau-norm"]
BASES = [n for n in METHODS if not n.startswith("+") and n not in STAGE2]
DISA_BASES = [
    "ce",
    "ce-drw",
    "ldam-drw",
    "balanced-softmax",
    "focal",
    "cb-softmax",
    "cb-sigmoid",
    "inc-drw",
    "etf-ce",
    "etf-dr",
    "ldam",
]
# the loss terms each method logs, named as its paper names them
EXPECTED_TERMS = {
    "ce": {"ce"},
    "ce-drw": {"ce"},
    "ldam-drw": {"ldam"},
    "arb": {"arb"},
    "etf-dr": {"dr"},
    "inc-drw": {"ce", "inc_within", "inc_between"},
    "ldam-drw+inc+disa": {"ldam", "inc_within", "inc_between", "disa"},
}


def _ctx(k: int = 10, d: int = 64) -> BuildContext:
    return BuildContext(torch.tensor([100, 60, 30, 20, 10, 8, 6, 4, 3, 2])[:k], k, d, 10)


def _train(tmp_path, method: str, *extra: str, epochs: int = 2) -> list[dict]:
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
            *extra,
        ]
    )
    runner.train(config_from_args(args))
    return list(csv.DictReader((tmp_path / "r" / "metrics.csv").open()))


@pytest.mark.parametrize(
    "method", BASES + [f"{b}+disa" for b in DISA_BASES] + ["ldam-drw+inc+disa", "ce+inc"]
)
def test_every_method_trains_on_digits(tmp_path, method):
    rows = _train(tmp_path, method)
    assert len(rows) == 2
    for r in rows:
        assert math.isfinite(float(r["loss"])), r
    names = set(build_method(method, {}, _ctx()).objective.losses)
    for name in names:  # each term is logged in metrics.csv
        assert name in rows[0] and math.isfinite(float(rows[-1][name]))
    if method in EXPECTED_TERMS:
        assert names == EXPECTED_TERMS[method]


@pytest.fixture(scope="module")
def tiny_cifar(tmp_path_factory):
    from nclt.bench import write_synthetic_cifar10

    return write_synthetic_cifar10(
        tmp_path_factory.mktemp("cifar"), train_per_class=20, test_per_class=2
    )


@pytest.mark.parametrize("method", BASES + [f"{b}+disa" for b in DISA_BASES])
def test_every_method_trains_on_a_tiny_cifar_file(tmp_path, tiny_cifar, method):
    # the real CIFAR path (pickle layout, LT subset, 32x32 RGB views) with a small CNN
    rows = _train(
        tmp_path,
        method,
        *_tiny_cifar_flags(tiny_cifar),
        "--set",
        "data.batch_size=32",
        "--set",
        "data.num_workers=0",
        "--set",
        "channels_last=false",
        "--set",
        "precision=fp32",
    )
    assert len(rows) == 2 and all(math.isfinite(float(r["loss"])) for r in rows)


def test_composition_in_config_file_equals_flag(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text(
        "method:\n  name: ldam-drw+inc+disa\n  args:\n    disa: {weight: 0.5}\n"
        "    inc: {lambda_b: 0.2}\n"
    )
    cfg = config_from_args(build_parser().parse_args(["train", "--config", str(f)]))
    m = build_method(cfg.method.name, cfg.method.args, _ctx())
    weights = {t.name: t.weight for t in m.objective.terms}
    assert weights["disa"] == 0.5 and m.args["inc"]["lambda_b"] == 0.2
    assert m.head == "cosine" and "class_weight" in m.schedules


def test_bad_compositions_are_clear_errors():
    with pytest.raises(ConfigError, match="must start with a base"):
        build_method("disa+ce", {}, _ctx())
    with pytest.raises(ConfigError, match="is a base method"):
        build_method("ce+ldam", {}, _ctx())
    with pytest.raises(ConfigError, match="Did you mean 'lambda_w'"):
        build_method("inc", {"inc": {"lambda_ww": 1}}, _ctx())
    with pytest.raises(ConfigError, match="not a component"):
        build_method("ce", {"disa": {"weight": 1}}, _ctx())
    with pytest.raises(ConfigError, match="unknown add-on 'disaa'. Did you mean 'disa'"):
        build_method("ce+disaa", {}, _ctx())


def test_etf_method_needs_wide_enough_features():
    with pytest.raises(ConfigError, match="K-1|K - 1"):
        m = build_method("etf-dr", {}, _ctx(d=4))
        from nclt.models import HEADS

        HEADS.build(m.head, feature_dim=4, num_classes=10, **m.head_args)


def test_inc_start_epoch_is_exact():
    m = build_method("inc", {"inc": {"start_epoch": 3, "lambda_w": 0.5}}, _ctx())
    from nclt.methods.schedules import Progress

    w = next(t.weight for t in m.objective.terms if t.name == "inc_within")
    assert w(Progress(2, 99, 100, 10)) == 0.0 and w(Progress(3, 0, 100, 10)) == 0.5


def test_disa_uses_the_fixed_etf_as_target_with_an_etf_head():
    m = build_method("etf-dr+disa", {}, _ctx())
    t = next(t for t in m.objective.terms if t.name == "disa")
    assert t.reads == ("head_features",) and t.kwargs == {"head_weight": "head_weight"}
    m = build_method("ce+disa", {}, _ctx())
    t = next(t for t in m.objective.terms if t.name == "disa")
    assert t.reads == ("features",) and t.loss.etf.shape == (10, 64)


def test_etf_head_is_fixed(tmp_path):
    args = build_parser().parse_args(["train", "--method", "etf-dr", "--out", str(tmp_path)])
    run = runner.build_run(config_from_args(args))
    etf = run.model.head.weight.clone()
    assert not any(p is run.model.head.etf for p in run.model.parameters())
    g = etf @ etf.T
    assert torch.allclose(g.diagonal(), torch.ones(10), atol=1e-5)
    assert torch.allclose(g[0, 1], torch.tensor(-1 / 9), atol=1e-5)


def _two_epochs(method: str, out, *extra: str):
    """The config of a 2-epoch digits run of ``method`` into ``out``."""
    argv = ["train", "--method", method, "--epochs", "2", "--out", str(out)]
    return config_from_args(build_parser().parse_args([*argv, "--set", "progress=false", *extra]))


@pytest.fixture(scope="module")
def first_stage(tmp_path_factory):
    out = tmp_path_factory.mktemp("stage1") / "run"
    runner.train(_two_epochs("ce-drw", out))
    return out


def _stage2(name: str, first, *extra: str):
    args = build_parser().parse_args(
        ["train", "--stage2", name, "--from", str(first), "--set", "progress=false", *extra]
    )
    return config_from_args(args)


@pytest.mark.parametrize("weighted_mean", [True, False])
def test_ce_drw_normalisation_of_the_reweighted_sum(weighted_mean):
    """DRW's weighted CE divides by the sum of the batch's weights (F.cross_entropy, LDAM-DRW
    code) or, with weighted_mean=False, by the batch size (DisA Eq. 17 as printed)."""
    torch.manual_seed(0)
    term = build_method("ce-drw", {"ce-drw": {"weighted_mean": weighted_mean}}, _ctx())
    loss = term.objective.terms[0].loss
    logits, labels = torch.randn(16, 10, dtype=torch.float64), torch.randint(0, 10, (16,))
    w = torch.rand(10, dtype=torch.float64) + 0.5
    per = torch.nn.functional.cross_entropy(logits, labels, reduction="none") * w[labels]
    expected = per.sum() / (w[labels].sum() if weighted_mean else len(labels))
    torch.testing.assert_close(loss(logits, labels, weight=w), expected)


@pytest.mark.parametrize("form", ["softmax", "sigmoid", "focal"])
@pytest.mark.parametrize("weighted_mean", [None, True, False])
def test_cb_losses_divide_by_the_batch_size_as_printed(form, weighted_mean):
    """Cui et al.'s CB loss (DisA Eq. 16-17): (1/N) sum_i w_{y_i} l_i with effective-number
    weights summing to C, by default; weighted_mean=True divides by sum_i w_{y_i} instead."""
    counts = _ctx().class_counts.double()
    args = {} if weighted_mean is None else {"weighted_mean": weighted_mean}
    method = build_method(f"cb-{form}", {f"cb-{form}": args}, _ctx())
    loss = method.objective.terms[0].loss
    torch.manual_seed(0)
    logits, labels = torch.randn(16, 10, dtype=torch.float64), torch.randint(0, 10, (16,))
    w = (1 - 0.999) / (1 - 0.999**counts)
    w = w / w.sum() * 10
    if form == "softmax":
        per = torch.nn.functional.cross_entropy(logits, labels, reduction="none")
    else:
        onehot = torch.nn.functional.one_hot(labels, 10).double()
        p_t = torch.where(onehot > 0, logits.sigmoid(), 1 - logits.sigmoid())
        gamma = 2.0 if form == "focal" else 0.0
        per = (-((1 - p_t) ** gamma) * p_t.log()).sum(dim=1)
    per = per * w[labels]
    expected = per.sum() / (w[labels].sum() if weighted_mean else len(labels))
    torch.testing.assert_close(loss(logits, labels), expected)


def test_crt_official_variant_keeps_the_classifier_and_updates_bn_stats(
    first_stage, tmp_path, monkeypatch
):
    """INC's code: cRT starts from the first stage's classifier and re-estimates the frozen
    backbone's BatchNorm statistics (train mode) while its weights stay fixed."""
    from nclt import checkpoint as ckpt

    cfg = _stage2(
        "crt",
        first_stage,
        "--epochs",
        "1",
        "--set",
        "method.args.crt.reinit=false",
        "--set",
        "method.args.crt.bn_stats=update",
        "--out",
        str(tmp_path / "crt_official"),
    )
    before = ckpt.load(first_stage / "last.pt")["model"]
    seen = {}
    real = runner.train_one_epoch

    def spy(env, loader, *a, **k):
        seen["head"] = env.model.head.weight.detach().clone()
        seen["backbone_training"] = env.model.backbone.training
        return real(env, loader, *a, **k)

    monkeypatch.setattr(runner, "train_one_epoch", spy)
    runner.train(cfg)
    after = ckpt.load(tmp_path / "crt_official" / "last.pt")["model"]
    assert torch.equal(seen["head"], before["head.weight"])  # not re-initialised
    assert seen["backbone_training"] is True
    for k, v in before.items():
        if not k.startswith("backbone."):
            continue
        if "running_" in k:
            assert not torch.equal(v, after[k]), k  # statistics re-estimated
        elif v.is_floating_point():
            assert torch.equal(v, after[k]), k  # weights frozen
    with pytest.raises(ConfigError, match="bn_stats"):
        build_method("crt", {"crt": {"bn_stats": "train"}}, _ctx())


def test_stage2_resets_the_first_stage_eval_schedule_and_crt_weight_decay(tmp_path):
    """A first stage with a sparse test schedule and INC's wd 5e-3: cRT tests every epoch and
    trains the classifier without weight decay (INC's code); LWS keeps the first stage's."""
    import yaml

    first = tmp_path / "first"
    first.mkdir()
    conf = {"method": {"name": "inc-drw"}, "eval_every": 5, "eval_all_from": 160}
    conf["optim"] = {"weight_decay": 5.0e-3}
    (first / "config.yaml").write_text(yaml.safe_dump(conf))
    crt = _stage2("crt", first)
    assert (crt.eval_every, crt.eval_all_from, crt.optim.weight_decay) == (1, 0, 0.0)
    assert [e for e in range(1, 11) if runner.evaluates(crt, e)] == list(range(1, 11))
    assert _stage2("lws", first).optim.weight_decay == 5.0e-3


def test_crt_freezes_backbone_and_samples_classes_uniformly(first_stage, monkeypatch):
    from nclt import checkpoint as ckpt

    cfg = _stage2("crt", first_stage, "--epochs", "2")
    assert cfg.out.endswith("stage2_crt") and cfg.init_from.endswith("last.pt")
    labels = []
    real = runner.train_one_epoch

    def spy(env, loader, *a, **k):
        def record():
            for x, y in loader:
                # BatchNorm statistics stay the first stage's; the head trains
                assert not env.model.backbone.training and env.model.head.training
                labels.append(y)
                yield x, y

        return real(env, record(), *a, **k)

    monkeypatch.setattr(runner, "train_one_epoch", spy)
    runner.train(cfg)
    before = ckpt.load(first_stage / "last.pt")["model"]
    after = ckpt.load(first_stage / "stage2_crt" / "last.pt")["model"]
    for k, v in before.items():
        if k.startswith("backbone."):
            assert torch.equal(v, after[k]), k
    assert not torch.equal(before["head.weight"], after["head.weight"])
    freq = torch.bincount(torch.cat(labels), minlength=10).double()
    assert (freq / freq.sum()).max() < 0.2  # the head class holds 36% of the images


def test_lws_trains_only_the_scales(first_stage):
    from nclt import checkpoint as ckpt

    runner.train(_stage2("lws", first_stage, "--epochs", "1"))
    before = ckpt.load(first_stage / "last.pt")["model"]
    after = ckpt.load(first_stage / "stage2_lws" / "last.pt")["model"]
    for k, v in before.items():
        assert torch.equal(v, after[k]), k
    assert not torch.equal(after["head.scales"], torch.ones(10))


def test_tau_norm_trains_nothing_and_normalises(first_stage):
    from nclt import checkpoint as ckpt

    cfg = _stage2("tau-norm", first_stage)
    assert cfg.epochs == 0
    runner.train(cfg)
    run = runner.build_run(cfg)
    w = ckpt.load(first_stage / "last.pt")["model"]["head.weight"]
    f = torch.randn(3, w.shape[1])
    expected = f @ (w / w.norm(dim=1, keepdim=True)).T
    assert torch.allclose(run.model.head(f), expected, atol=1e-5)


@pytest.mark.parametrize("method", STAGE2)
def test_second_stage_methods_need_a_first_stage(tmp_path, method):
    with pytest.raises(ConfigError, match=f"--stage2 {method} --from RUN_DIR"):
        _train(tmp_path, method)


def test_stage2_needs_a_linear_first_stage_for_lws(tmp_path):
    args = build_parser().parse_args(
        [
            "train",
            "--method",
            "ldam",
            "--epochs",
            "1",
            "--out",
            str(tmp_path / "r"),
            "--set",
            "progress=false",
        ]
    )
    runner.train(config_from_args(args))
    with pytest.raises(ConfigError, match="linear classifier"):
        runner.train(_stage2("lws", tmp_path / "r"))


def test_inc_center_loss_variant_of_table_7():
    m = build_method("inc-drw", {"inc-drw": {"within": "center"}}, _ctx())
    names = [t.name for t in m.objective.terms]
    assert names == ["ce", "inc"]
    assert any(p.requires_grad for p in m.objective.parameters())  # learnable centres


def test_inc_official_centre_optimizer():
    """centre_lr: the centres take plain SGD steps of centre_lr * grad / lambda_w (INC's code:
    grad divided by lambda_1, SGD at --alpha), outside the lr schedule, without momentum or
    weight decay, while the network keeps its own settings."""
    from nclt.methods.schedules import Progress
    from nclt.optim import build_optimizer, set_lr

    args = {"centres": "learnable", "centre_lr": 0.5, "lambda_w": 0.01, "lambda_b": 0.1}
    m = build_method("inc-drw", {"inc-drw": args}, _ctx(d=8))
    net = torch.nn.Linear(4, 8)
    opt = build_optimizer([net, m.objective], 0.1, 0.9, 5e-3, separate=m.objective_optim)
    net_group, centre_group = opt.param_groups
    assert (centre_group["momentum"], centre_group["weight_decay"]) == (0.0, 0.0)
    set_lr(opt, 1e-3)  # a scheduled lr reaches the network only
    assert net_group["lr"] == 1e-3 and centre_group["lr"] == pytest.approx(50.0)
    torch.manual_seed(0)
    features = net(torch.randn(32, 4))
    labels = torch.arange(32) % 10
    ctx = {"features": features, "labels": labels, "logits": torch.randn(32, 10)}
    out = m.objective(ctx, Progress(epoch=0, step=0, steps_per_epoch=1, epochs=10))
    out.total.backward()
    centres = [p for p in m.objective.parameters() if p.requires_grad]
    before = [c.detach().clone() for c in centres]
    grads = [c.grad.clone() for c in centres]
    opt.step()
    for c, b, g in zip(centres, before, grads, strict=True):
        torch.testing.assert_close(c.detach(), b - 0.5 * g / 0.01)
    with pytest.raises(ConfigError, match="centres: learnable"):
        build_method("inc", {"inc": {"centre_lr": 0.5}}, _ctx())


@pytest.mark.parametrize("method", ["etf-dr", "etf-ce", "ce+disa"])
def test_etf_orientation_follows_the_run_seed_unless_fixed(method):
    """Seeds 0, 1, 2 train three ETF orientations (Yang et al.'s code draws one per run);
    ``seed: N`` pins it."""

    def etf(run_seed: int, args: dict) -> torch.Tensor:
        ctx = BuildContext(
            torch.tensor([100, 60, 30, 20, 10, 8, 6, 4, 3, 2]), 10, 64, 10, seed=run_seed
        )
        m = build_method(method, args, ctx)
        if method == "ce+disa":
            loss = next(t.loss for t in m.objective.terms if t.name == "disa")
            return loss.etf.clone()
        assert m.head == "etf"
        from nclt.geometry import simplex_etf

        return simplex_etf(64, 10, seed=m.head_args["seed"])

    a, b = etf(0, {}), etf(1, {})
    assert not torch.allclose(a, b)
    assert torch.equal(etf(1, {}), b)  # reproducible
    name = method.split("+")[-1]
    assert torch.equal(etf(0, {name: {"seed": 5}}), etf(1, {name: {"seed": 5}}))


def test_fixed_head_stays_at_its_initialization_and_crt_retrains_it(tmp_path):
    """model.head_trainable=false (the official DisA CIFAR script gives only the backbone to
    SGD): the classifier keeps its seeded initialization while the backbone trains; a cRT
    stage on that run trains the classifier again."""
    from nclt import checkpoint as ckpt

    out = tmp_path / "fixed_head"
    sets = ["model.head_trainable=false", "method.args.disa.standardize=true"]
    cfg = _two_epochs("ce+disa", out, *(a for kv in sets for a in ("--set", kv)))
    init = {k: v.clone() for k, v in runner.build_run(cfg).model.state_dict().items()}
    runner.train(cfg)
    after = ckpt.load(out / "last.pt")["model"]
    assert torch.equal(after["head.weight"], init["head.weight"])
    assert torch.equal(after["head.bias"], init["head.bias"])
    changed = [
        k
        for k, v in init.items()
        if k.startswith("backbone.") and v.is_floating_point() and not torch.equal(v, after[k])
    ]
    assert changed  # the backbone did train
    runner.train(_stage2("crt", out, "--epochs", "1", "--set", "method.args.crt.reinit=false"))
    crt = ckpt.load(out / "stage2_crt" / "last.pt")["model"]
    assert not torch.equal(crt["head.weight"], init["head.weight"])


def _tiny_cifar_flags(tiny_cifar) -> list[str]:
    """The tiny CIFAR file at IF 10 with a small CNN."""
    flags = ["--dataset", "cifar10", "--imbalance", "10", "--data-root", str(tiny_cifar)]
    return [*flags, "--set", "model.arch=small_cnn"]


_BATCHED = ["--set", "data.num_workers=0", "--set", "data.batch_augment=true"]


def _tiny_cifar_args(tiny_cifar, method: str, *extra: str) -> list[str]:
    """`nclt train` argv: ``method`` on the tiny CIFAR file with batch-wise views."""
    return ["train", "--method", method, *_tiny_cifar_flags(tiny_cifar), *_BATCHED, *extra]


def test_batch_augment_makes_a_multiview_methods_views_in_the_training_step(tiny_cifar):
    # AllNC with data.batch_augment: the loader yields the raw images and the training step
    # makes both RandAugment views, each sample with its own draws
    from nclt.data.views import BatchCropFlip, BatchRandAugment
    from nclt.engine import _to_device

    cfg = config_from_args(build_parser().parse_args(_tiny_cifar_args(tiny_cifar, "allnc")))
    run = runner.build_run(cfg)
    setup = runner.build_training(run)
    assert run.method.views == ["randaugment", "randaugment"]
    views = setup.env.batch_views
    assert len(views) == 2 and views[0] is not views[1]
    for v in views:
        assert [type(m) for m in v] == [BatchCropFlip, BatchRandAugment]
        assert all(m.generator is setup.batch_gen for m in v)
    x, _ = next(iter(setup.train_loader))
    raw = torch.stack([torch.as_tensor(run.train_set[i][0]) for i in range(3)])
    assert isinstance(x, torch.Tensor) and x.dtype == torch.uint8 and x.dim() == 4
    assert any(torch.equal(x[j], raw[i]) for i in range(3) for j in range(len(x)))  # unaugmented
    a, b = _to_device([x], setup.env)
    assert a.shape == b.shape == x.shape and not torch.equal(a, b)


@pytest.mark.parametrize("method", ["ce", "allnc"])
def test_methods_train_with_batch_augment(tmp_path, tiny_cifar, method):
    rows = _train(tmp_path, method, *_tiny_cifar_flags(tiny_cifar), *_BATCHED, epochs=1)
    assert len(rows) == 1 and math.isfinite(float(rows[0]["loss"]))


@pytest.mark.parametrize(
    ("method", "extra", "per_image"),
    [
        # a train_view without a batched twin used to be replaced by crop + flip in silence
        ("ce", ["--set", "data.train_view=autoaugment"], "autoaugment"),
        ("bcl", [], "autoaugment_cutout, simclr"),
        (
            "allnc",
            ["--set", "method.args.allnc.view=autoaugment_cutout"],
            "autoaugment_cutout",
        ),
    ],
)
def test_batch_augment_leaves_views_it_cannot_batch_to_the_workers(
    tiny_cifar, caplog, method, extra, per_image
):
    # same distribution, per-image cost: the run goes on and the log says why
    cfg = config_from_args(build_parser().parse_args(_tiny_cifar_args(tiny_cifar, method, *extra)))
    with caplog.at_level("WARNING", logger="nclt"):
        run = runner.build_run(cfg)
    assert run.batch_views is None
    assert runner.build_training(run).env.batch_views is None
    assert f"view(s) {per_image} have no batched version" in caplog.text
    names = run.method.views or [cfg.data.train_view]
    assert len(run.train_set.views) == len(names)
    assert "AutoAugment" in repr(run.train_set.views[0])  # the per-image view, not crop + flip
    sample = run.train_set[0][0]
    views = sample if isinstance(sample, tuple) else (sample,)
    assert len(views) == len(names) and all(v.shape == (3, 32, 32) for v in views)
