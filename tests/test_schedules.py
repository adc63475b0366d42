"""Schedules are exact: GBBN eta, the DRW switch, the learning rate."""

import math

import pytest
import torch

from nclt.errors import ConfigError
from nclt.methods.schedules import GBBNEta, OneMinus, Progress, SwitchAt
from nclt.optim import LRSchedule


def test_gbbn_eta_in_iterations():
    eta = GBBNEta(gamma=3.0)
    for epoch, step in [(0, 0), (3, 7), (9, 9)]:
        p = Progress(epoch, step, steps_per_epoch=10, epochs=10)
        assert eta(p) == 1.0 - ((epoch * 10 + step) / 100) ** 3.0
    assert eta(Progress(0, 0, 10, 10)) == 1.0
    assert OneMinus(eta)(Progress(5, 0, 10, 10)) == pytest.approx(0.5**3.0)


def test_gbbn_eta_in_epochs():
    eta = GBBNEta(gamma=2.0, unit="epoch")
    assert eta(Progress(4, 9, 10, 8)) == 1.0 - (4 / 8) ** 2


def test_gbbn_rejects_bad_gamma():
    with pytest.raises(ConfigError):
        GBBNEta(gamma=0.0)


def test_drw_switch_is_exact():
    w = torch.tensor([1.0, 2.0])
    s = SwitchAt(160, None, w)
    assert s(Progress(159, 99, 100, 200)) is None
    assert s(Progress(160, 0, 100, 200)) is w


def test_ldam_step_schedule():
    lr = LRSchedule(0.1, "step", (160, 180), 0.01, 5)
    at = lambda e: lr(Progress(e, 0, 10, 200))  # noqa: E731
    assert [at(e) for e in range(5)] == pytest.approx([0.02, 0.04, 0.06, 0.08, 0.1])
    assert at(159) == pytest.approx(0.1)
    assert at(160) == pytest.approx(1e-3)
    assert at(180) == pytest.approx(1e-5)


def test_cosine_schedule_ends_at_min_lr():
    lr = LRSchedule(0.1, "cosine", warmup_epochs=0, min_lr=0.001)
    assert lr(Progress(0, 0, 10, 10)) == pytest.approx(0.1)
    half = 0.001 + 0.5 * 0.099 * (1 + math.cos(math.pi * 0.5))
    assert lr(Progress(5, 0, 10, 10)) == pytest.approx(half)
    assert lr(Progress(9, 9, 10, 10)) > 0.001
