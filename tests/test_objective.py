"""Objective: weighted terms, schedules, MixUp combination, early failure on bad reads."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from nclt.errors import ConfigError
from nclt.methods.objective import Objective, Term
from nclt.methods.schedules import GBBNEta, OneMinus, Progress


class _CE(nn.Module):
    def forward(self, logits, labels, weight=None):
        return F.cross_entropy(logits, labels, weight=weight)


class _Norm(nn.Module):
    def forward(self, features):
        return features.pow(2).mean()


P = Progress(2, 3, 10, 10)


def test_weighted_sum_and_parts():
    logits, labels, feats = torch.randn(6, 4), torch.randint(0, 4, (6,)), torch.randn(6, 3)
    obj = Objective([Term("ce", _CE()), Term("reg", _Norm(), ("features",), weight=0.5)])
    out = obj({"logits": logits, "labels": labels, "features": feats}, P)
    ce = F.cross_entropy(logits, labels)
    assert torch.allclose(out.total, ce + 0.5 * feats.pow(2).mean())
    assert set(out.parts) == {"ce", "reg"}


def test_schedule_weights_and_zero_weight_skips_term():
    eta = GBBNEta(2.0)
    calls = []

    class Spy(_Norm):
        def forward(self, features):
            calls.append(1)
            return super().forward(features)

    obj = Objective(
        [
            Term("a", _Norm(), ("features",), weight=eta),
            Term("b", Spy(), ("features",), weight=OneMinus(eta)),
        ]
    )
    out = obj({"features": torch.ones(2, 2)}, Progress(0, 0, 10, 10))
    assert out.weights == {"a": 1.0, "b": 0.0} and not calls and "b" not in out.parts


def test_mixup_combines_over_both_label_sets():
    logits, ya, yb = torch.randn(5, 3), torch.randint(0, 3, (5,)), torch.randint(0, 3, (5,))
    obj = Objective([Term("ce", _CE())])
    out = obj({"logits": logits, "labels": ya, "labels_b": yb, "lam": 0.3}, P)
    ref = 0.3 * F.cross_entropy(logits, ya) + 0.7 * F.cross_entropy(logits, yb)
    assert torch.allclose(out.total, ref)


def test_class_weight_passed_only_when_set():
    logits, y = torch.randn(5, 3), torch.randint(0, 3, (5,))
    w = torch.tensor([1.0, 2.0, 3.0])
    obj = Objective([Term("ce", _CE(), kwargs={"weight": "class_weight"})])
    no = obj({"logits": logits, "labels": y, "class_weight": None}, P).total
    yes = obj({"logits": logits, "labels": y, "class_weight": w}, P).total
    assert torch.allclose(no, F.cross_entropy(logits, y))
    assert torch.allclose(yes, F.cross_entropy(logits, y, weight=w))


def test_bad_reads_fail_before_training():
    obj = Objective([Term("reg", _Norm(), ("proj",))])
    with pytest.raises(ConfigError, match="reads \\['proj'\\]"):
        obj.check_reads({"logits", "labels", "features"})


def test_duplicate_term_names_refused():
    with pytest.raises(ConfigError, match="duplicate"):
        Objective([Term("a", _Norm(), ("features",)), Term("a", _Norm(), ("features",))])
