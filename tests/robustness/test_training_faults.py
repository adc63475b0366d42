"""Faults during training: NaN / Inf losses, absent classes, tiny classes and batches, ETF width.

Already tested elsewhere: a NaN loss with on_nonfinite=stop names the epoch, step and term
and keeps the last good checkpoint (tests/test_train_e2e.py::
test_non_finite_loss_names_the_term_and_keeps_checkpoint); a class absent from a batch
keeps every loss finite (tests/losses/*::test_absent_and_single*); collapse metrics skip and
list absent classes (tests/metrics/test_metrics_collapse.py::
test_absent_classes_are_excluded_and_recorded).
"""

from __future__ import annotations

import csv
import json
import logging
import math

import pytest
import torch

import nclt.runner as runner
from nclt import checkpoint as ckpt
from nclt.data.samplers import build_sampler
from nclt.errors import ConfigError, NonFiniteLossError
from nclt.geometry import simplex_etf
from nclt.methods.recipes import METHODS
from nclt.metrics.accuracy import LongTailAccuracy

from ._helpers import assert_one_clear_line, digits_args, digits_cfg


def _poison(monkeypatch, bad_calls, value=float("nan")):
    """Make the first loss term return ``value`` on the given (1-based) calls."""
    real = runner.build_run
    calls = [0]

    def build(cfg):
        run = real(cfg)
        loss = run.method.objective.terms[0].loss
        forward = loss.forward

        def maybe_bad(*a, **k):
            calls[0] += 1
            out = forward(*a, **k)
            return out * value if calls[0] in bad_calls else out

        loss.forward = maybe_bad
        return run

    monkeypatch.setattr(runner, "build_run", build)
    return calls


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_skip_skips_one_bad_step_and_completes(tmp_path, monkeypatch, caplog, value):
    _poison(monkeypatch, {2}, value)
    out = tmp_path / "run"
    with caplog.at_level(logging.WARNING, logger="nclt"):
        res = runner.train(digits_cfg(out, "--set", "on_nonfinite=skip", epochs=2))
    rows = list(csv.DictReader((out / "metrics.csv").open()))
    assert [int(float(r["skipped_steps"])) for r in rows] == [1, 0]
    assert all(math.isfinite(float(r["loss"])) for r in rows)
    assert "epoch 1, step 2: term(s) ['ce']" in caplog.text and "step skipped" in caplog.text
    state = ckpt.load(out / "last.pt")
    assert all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())
    assert math.isfinite(res["top1"])


def test_skip_of_every_step_is_an_error(tmp_path, monkeypatch):
    _poison(monkeypatch, set(range(1, 10_000)))
    with pytest.raises(NonFiniteLossError, match=r"every step of epoch 1 \(\d+\) had a non-fin"):
        runner.train(digits_cfg(tmp_path / "run", "--set", "on_nonfinite=skip"))
    assert not (tmp_path / "run" / "last.pt").exists()


def test_non_finite_stop_through_the_cli(cli, tmp_path, monkeypatch):
    _poison(monkeypatch, {3})
    res = cli(*digits_args(tmp_path / "run"))
    assert_one_clear_line(
        res, "non-finite loss at epoch 1, step 3: term(s) ['ce']", "last good checkpoint is kept"
    )


# ----------------------------------------------------------------------------- absent classes

ABSENT = 9  # digits-LT's rarest class


def _without_class(monkeypatch, absent):
    """Remove every sample of ``absent`` from every training batch (the whole epoch)."""
    real = runner.train_one_epoch
    seen = []

    def filtered(env, loader, *a, **k):
        def batches():
            for x, y in loader:
                keep = y != absent
                seen.append(y[keep])
                yield x[keep], y[keep]

        return real(env, batches(), *a, **k)

    monkeypatch.setattr(runner, "train_one_epoch", filtered)
    return seen


@pytest.mark.parametrize("method", ["ce", "ce-drw", "arb", "inc-drw", "etf-dr", "ce+disa"])
def test_class_absent_from_a_whole_epoch(tmp_path, monkeypatch, method):
    if method.split("+")[0] not in METHODS:
        pytest.skip(f"{method} is not registered")
    seen = _without_class(monkeypatch, ABSENT)
    out = tmp_path / "run"
    drw = ["--set", f"method.args.{method}.drw_epoch=1"] if method.endswith("-drw") else []
    res = runner.train(digits_cfg(out, "--method", method, *drw, epochs=2))
    assert ABSENT not in torch.cat(seen).tolist()
    for row in csv.DictReader((out / "metrics.csv").open()):
        assert all(math.isfinite(float(v)) for k, v in row.items() if v not in ("", None)), row
    assert len(res["per_class"]) == 10 and res["per_class"][ABSENT] is not None
    assert all(math.isfinite(v) for v in res["per_class"])
    assert res["few"] is not None and math.isfinite(res["few"])
    nc = {k: v for k, v in res["nc"].items() if isinstance(v, float)}
    assert nc and all(math.isfinite(v) for v in nc.values()), nc


def test_class_absent_from_the_test_set_is_reported_as_none():
    metric = LongTailAccuracy(4, torch.tensor([200, 50, 10, 5]))
    metric.update(torch.eye(4)[[0, 0, 1, 2, 2, 3]][:5], torch.tensor([0, 0, 1, 2, 2]))
    out = metric.compute()
    assert out["per_class"][3] is None and out["few"] == 100.0 and out["top1"] == 100.0
    assert json.loads(json.dumps(out))["per_class"][3] is None  # null in results.json


@pytest.mark.parametrize(
    ("kind", "q", "expected"),
    [
        ("class_balanced", None, 1 / 3),
        ("sqrt", None, 1 / (60**0.5 + 9**0.5 + 1)),
        ("power", 0.0, 1 / 3),
    ],
)
def test_sampler_with_a_class_of_one_image(kind, q, expected):
    targets = [0] * 60 + [1] * 9 + [2]
    sampler = build_sampler(kind, targets, seed=0, q=q)
    draws = []
    for epoch in range(30):
        sampler.set_epoch(epoch)
        idx = list(sampler)
        assert len(idx) == len(sampler) == len(targets)
        draws += idx
    freq = torch.bincount(torch.tensor([targets[i] for i in draws]), minlength=3).double()
    freq /= freq.sum()
    assert abs(float(freq[2]) - expected) < 0.05, freq


def test_class_balanced_run_with_single_image_classes(tmp_path):
    """digits-LT at IF 100 has two classes of one image; ce-rs draws them ~1/10 of the time."""
    res = runner.train(digits_cfg(tmp_path / "run", "--method", "ce-rs", "--imbalance", "100"))
    assert res["class_counts"][-2:] == [1, 1]
    assert math.isfinite(res["top1"])


# ----------------------------------------------------------------------------- batch size


def test_batch_size_one_is_refused_at_config_time(cli, tmp_path):
    res = cli(*digits_args(tmp_path / "run", "--set", "data.batch_size=1"))
    assert_one_clear_line(res, "data.batch_size must be >= 2", "BatchNorm")


def test_last_batch_of_one_sample_is_dropped(tmp_path, monkeypatch, caplog):
    """digits-LT IF 50 has 287 training images: batch 13 leaves one (287 = 22 * 13 + 1),
    which BatchNorm cannot train on; it is dropped, a different image each epoch."""
    sizes = []
    real = runner.train_one_epoch

    def spy(env, loader, *a, **k):
        def batches():
            for x, y in loader:
                sizes.append(len(y))
                yield x, y

        return real(env, batches(), *a, **k)

    monkeypatch.setattr(runner, "train_one_epoch", spy)
    with caplog.at_level(logging.INFO, logger="nclt"):
        runner.train(digits_cfg(tmp_path / "a", "--set", "data.batch_size=13"))
    assert sizes == [13] * 22 and "would hold 1 sample" in caplog.text
    sizes.clear()
    runner.train(digits_cfg(tmp_path / "b", "--set", "data.batch_size=12"))
    assert sizes == [12] * 23 + [11]  # a last batch of 11 is kept


# ----------------------------------------------------------------------------- ETF width


def test_simplex_etf_needs_k_minus_1_dims():
    with pytest.raises(ConfigError, match="at least K-1 = 99, got 64"):
        simplex_etf(64, 100)
    assert simplex_etf(99, 100).shape == (99, 100)
    with pytest.raises(ConfigError, match="at least 2 classes"):
        simplex_etf(8, 1)


@pytest.mark.parametrize("method", ["etf-ce", "etf-dr", "ce+disa"])
def test_etf_method_with_narrow_features(cli, tmp_path, method):
    """ResNet-32 of width 2 has 8-d features; 10 digit classes need 9."""
    if method.split("+")[0] not in METHODS:
        pytest.skip(f"{method} is not registered")
    res = cli(
        *digits_args(
            tmp_path / "run",
            "--method",
            method,
            "--set",
            "model.arch=resnet32",
            "--set",
            "model.width=2",
        )
    )
    assert_one_clear_line(res, "needs feature dimension at least K-1 = 9, got 8")
