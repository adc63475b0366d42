"""Accuracy by class group: the group rules, empty groups, hand-built values, DDP-free state."""

from __future__ import annotations

import pytest
import torch

from nclt.errors import ConfigError
from nclt.metrics import LongTailAccuracy, accuracy_from_confusion, class_groups


def cifar_lt_counts(num_classes: int, per_class: int, imbalance: float = 100.0) -> list[int]:
    """Exponential long-tail profile of CIFAR-LT (Cao et al.): n_i = n_max * IF^(-i/(C-1))."""
    return [int(per_class * imbalance ** (-i / (num_classes - 1))) for i in range(num_classes)]


def test_cifar100_if100_default_vs_allnc_rule() -> None:
    counts = cifar_lt_counts(100, 500)
    assert counts.count(20) == 1 and counts.index(20) == 69  # the one class the rules disagree on
    default = class_groups(counts)
    allnc = class_groups(counts, rule="allnc")
    assert len(default["few"]) == 30 and len(allnc["few"]) == 31
    assert 69 in default["medium"].tolist() and 69 in allnc["few"].tolist()
    assert len(default["many"]) == len(allnc["many"]) == 35
    assert len(default["medium"]) == 35 and len(allnc["medium"]) == 34
    for groups in (default, allnc):  # a partition of the classes, each group sorted
        assert sorted(torch.cat(list(groups.values())).tolist()) == list(range(100))
        assert all(
            g.dtype == torch.long and g.tolist() == sorted(g.tolist()) for g in groups.values()
        )
    t = torch.tensor(counts)
    assert bool((t[default["many"]] > 100).all()) and bool((t[default["few"]] < 20).all())
    mid = t[default["medium"]]
    assert bool(((mid >= 20) & (mid <= 100)).all())


def test_cifar10_if100_has_no_few_class_and_reports_none() -> None:
    counts = cifar_lt_counts(10, 5000)
    groups = class_groups(counts)
    assert [len(groups[g]) for g in ("many", "medium", "few")] == [8, 2, 0]
    metric = LongTailAccuracy(10, counts)
    labels = torch.arange(10).repeat(3)
    metric.update(labels, labels)
    out = metric.compute()
    assert out["few"] is None  # never 0
    assert out["many"] == out["medium"] == out["top1"] == 100.0


def test_unknown_rule_suggests_the_closest() -> None:
    with pytest.raises(ConfigError, match="allnc"):
        class_groups([5, 50, 500], rule="alnc")


def test_hand_built_example() -> None:
    # Training counts: class 0 many, 1 medium, 2 and 3 few.
    metric = LongTailAccuracy(4, [200, 50, 10, 5])
    labels = torch.tensor([0, 0, 0, 0, 1, 1, 2, 2, 2, 3])
    preds = torch.tensor([0, 0, 0, 1, 1, 0, 2, 3, 3, 3])
    metric.update(preds[:4], labels[:4])  # two batches
    metric.update(preds[4:], labels[4:])
    out = metric.compute()
    assert out["per_class"] == pytest.approx([75.0, 50.0, 100.0 / 3, 100.0])
    assert out["top1"] == pytest.approx(60.0)  # 6 of 10
    assert out["mean_per_class"] == pytest.approx((75 + 50 + 100 / 3 + 100) / 4)
    assert out["many"] == pytest.approx(75.0)
    assert out["medium"] == pytest.approx(50.0)
    assert out["few"] == pytest.approx((100 / 3 + 100) / 2)  # mean of per-class, not pooled
    assert out["confusion"] == [[3, 1, 0, 0], [1, 1, 0, 0], [0, 0, 1, 2], [0, 0, 0, 1]]
    assert out["num_samples"] == 10 and out["rule"] == "default"
    metric.reset()
    with pytest.warns(UserWarning, match="before the ``update``"):
        assert metric.compute()["top1"] is None


def test_logits_give_the_same_as_predictions() -> None:
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(50, 5, generator=g)
    labels = torch.randint(0, 5, (50,), generator=g)
    counts = [300, 120, 60, 19, 3]
    a, b = LongTailAccuracy(5, counts), LongTailAccuracy(5, counts)
    a.update(logits, labels)
    b.update(logits.argmax(1), labels)
    assert a.compute() == b.compute()


def test_top1_equals_mean_per_class_on_a_balanced_set() -> None:
    g = torch.Generator().manual_seed(1)
    labels = torch.arange(7).repeat_interleave(13)
    preds = torch.where(
        torch.rand(len(labels), generator=g) < 0.6,
        labels,
        torch.randint(0, 7, labels.shape, generator=g),
    )
    metric = LongTailAccuracy(7, cifar_lt_counts(7, 500))
    metric.update(preds, labels)
    out = metric.compute()
    assert out["top1"] == pytest.approx(out["mean_per_class"], abs=1e-12)
    assert out["top1"] == pytest.approx(100.0 * float((preds == labels).double().mean()))


def test_class_without_test_samples_is_skipped_and_group_without_any_is_none() -> None:
    # Class 2 (the only few class) never appears in the evaluation set.
    confusion = torch.tensor([[4, 0, 0], [1, 1, 0], [0, 0, 0]])
    out = accuracy_from_confusion(confusion, class_groups([500, 50, 5]))
    assert out["per_class"] == [100.0, 50.0, None]
    assert out["few"] is None and out["many"] == 100.0 and out["medium"] == 50.0
    assert out["mean_per_class"] == pytest.approx(75.0)


def test_counts_must_match_num_classes() -> None:
    with pytest.raises(ConfigError):
        LongTailAccuracy(3, [1, 2])
