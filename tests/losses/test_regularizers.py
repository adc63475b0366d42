"""Feature regularizers: INC's L_W / L_B, center loss, AllNC's P2P (float64 where exact)."""

from __future__ import annotations

import math

import pytest
import torch
from torch.autograd import gradcheck

from nclt.errors import ConfigError
from nclt.geometry import etf_angle, simplex_etf
from nclt.losses import LOSSES
from nclt.losses.regularizers import (
    BetweenClassLoss,
    CenterLoss,
    INCLoss,
    P2PClassifierLoss,
    P2PLoss,
    WithinClassLoss,
)

D64 = torch.float64
# CIFAR-10-LT IF=200 class counts (LDAM-DRW profile): 5000 ... 25
LT200 = [int(5000 * (1 / 200) ** (k / 9)) for k in range(10)]


def etf_rows(k: int, dim: int | None = None) -> torch.Tensor:
    return simplex_etf(dim or k, k, dtype=D64).T  # (K, D)


def collapsed(counts: list[int], dim: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Features on the ETF vertex of their class, ``counts[k]`` samples of class k."""
    k = len(counts)
    labels = torch.repeat_interleave(torch.arange(k), torch.tensor(counts))
    return etf_rows(k, dim)[labels].clone(), labels


def random_batch(b: int = 12, d: int = 5, k: int = 4, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    feats = torch.randn(b, d, generator=g, dtype=D64)
    labels = torch.randint(0, k, (b,), generator=g)
    return feats, labels


def awkward_batch(d: int = 6, seed: int = 1):
    """K=6: class 0 x4, class 1 x1 (single), class 3 x2, classes 2, 4, 5 absent."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.tensor([0, 0, 1, 0, 3, 0, 3])
    return torch.randn(len(labels), d, generator=g, dtype=D64), labels


# ---- slow references written from the papers' formulas -----------------------------------


def slow_within(feats, labels, k, centres=None, counts=None, reduce="sum"):
    total = 0.0
    for c in range(k):
        members = [feats[i] for i in range(len(labels)) if labels[i] == c]
        if not members:
            continue
        mu = centres[c] if centres is not None else sum(members) / len(members)
        n = len(members) if counts is None else counts[c]
        total = total + sum(((h - mu) ** 2).sum() for h in members) / n
    return total / k if reduce == "mean" else total


def slow_between(means: list[torch.Tensor]):
    mu_c = sum(means) / len(means)
    hat = [m - mu_c for m in means]
    total = 0.0
    for i, a in enumerate(hat):
        angles = []
        for j, b in enumerate(hat):
            if i != j:
                cos = (a @ b) / (a.norm() * b.norm())
                angles.append(math.acos(max(-1.0, min(1.0, float(cos)))))
        total += min(angles)
    return -total / len(means)


def slow_p2p(vectors: list[torch.Tensor]):
    c = len(vectors)
    total = 0.0
    for i in range(c):
        for j in range(c):
            rho = 1.0 if i == j else -1.0 / (c - 1)
            total += (float(vectors[i] @ vectors[j]) - rho) ** 2
    return total / c**2


def present_means(feats, labels):
    classes = sorted(set(labels.tolist()))
    return [feats[labels == c].mean(0) for c in classes]


# ---- L_W ---------------------------------------------------------------------------------


def test_within_zero_when_collapsed() -> None:
    feats, labels = collapsed([*LT200[:6], 1, 0, 3, 0])
    assert WithinClassLoss(10)(feats, labels).item() == pytest.approx(0.0, abs=1e-20)


@pytest.mark.parametrize("reduce", ["sum", "mean"])
def test_within_matches_slow_loop(reduce: str) -> None:
    feats, labels = random_batch(k=4)
    loss = WithinClassLoss(4, class_reduction=reduce)(feats, labels)
    assert loss.item() == pytest.approx(
        float(slow_within(feats, labels, 4, reduce=reduce)), rel=1e-12
    )


def test_within_dataset_counts_and_learnable_centres() -> None:
    feats, labels = random_batch(k=4)
    counts = torch.tensor([50.0, 20.0, 7.0, 3.0])
    loss = WithinClassLoss(4, counts="dataset", class_counts=counts)(feats, labels)
    want = slow_within(feats, labels, 4, counts=counts.tolist())
    assert loss.item() == pytest.approx(float(want), rel=1e-12)

    learn = WithinClassLoss(4, feature_dim=5, centres="learnable").double()
    assert isinstance(learn.centres, torch.nn.Parameter)
    loss = learn(feats, labels)
    want = slow_within(feats, labels, 4, centres=learn.centres.detach())
    assert loss.item() == pytest.approx(float(want), rel=1e-12)
    loss.backward()
    assert learn.centres.grad is not None and learn.centres.grad.abs().sum() > 0


def test_within_rejects_bad_config() -> None:
    with pytest.raises(ConfigError, match="class_counts"):
        WithinClassLoss(4, counts="dataset")
    with pytest.raises(ConfigError, match="feature_dim"):
        WithinClassLoss(4, centres="learnable")
    with pytest.raises(ConfigError, match="counts"):
        WithinClassLoss(4, counts="epoch")  # type: ignore[arg-type]


# ---- L_B ---------------------------------------------------------------------------------


@pytest.mark.parametrize("k", [3, 10, 25])
def test_between_on_simplex_etf_is_minus_etf_angle(k: int) -> None:
    counts = [1 + (7 * c) % 5 for c in range(k)]  # imbalanced, every class present
    feats, labels = collapsed(counts, dim=k + 3)
    loss = BetweenClassLoss(k)(feats, labels)
    assert loss.item() == pytest.approx(-etf_angle(k), abs=1e-10)


def test_between_invariant_to_uniform_scale_and_translation() -> None:
    feats, labels = random_batch(b=20, d=6, k=5, seed=3)
    loss = BetweenClassLoss(5)
    shift = torch.randn(6, dtype=D64)
    base = loss(feats, labels).item()
    assert loss(3.7 * feats + shift, labels).item() == pytest.approx(base, abs=1e-12)
    assert loss(0.01 * feats - shift, labels).item() == pytest.approx(base, abs=1e-12)


def test_between_two_means_merged_is_larger() -> None:
    k, eps = 10, 1e-6
    m = etf_rows(k)
    etf_value = BetweenClassLoss(k, eps=eps)(m, torch.arange(k)).item()
    # Classes 0 and 1 merged at their midpoint (the projection that squeezes v0 - v1 out):
    # mu_C stays 0, the others keep their min angle arccos(-1/9) (their cosine to the midpoint
    # is -1/6), the merged pair has angle 0 (clamped to arccos(1 - eps)).
    merged = m.clone()
    merged[0] = merged[1] = (m[0] + m[1]) / 2
    value = BetweenClassLoss(k, eps=eps)(merged, torch.arange(k)).item()
    want = -(8 * math.acos(-1 / 9) + 2 * math.acos(1 - eps)) / 10
    assert value == pytest.approx(want, abs=1e-9)  # -1.3454; ERRATA's -1.449 is not this
    assert value > etf_value
    # Class 1 merged onto class 0: also larger.
    onto = m.clone()
    onto[1] = m[0]
    assert BetweenClassLoss(k)(onto, torch.arange(k)).item() == pytest.approx(-1.32657, abs=1e-5)


def test_between_matches_slow_loop() -> None:
    feats, labels = random_batch(b=15, d=4, k=6, seed=5)
    loss = BetweenClassLoss(6)(feats, labels)
    assert loss.item() == pytest.approx(slow_between(present_means(feats, labels)), abs=1e-12)


def test_between_few_classes_and_learnable() -> None:
    feats = torch.randn(3, 4, dtype=D64, requires_grad=True)
    assert BetweenClassLoss(5)(feats, torch.tensor([2, 2, 2])).item() == 0.0
    # two classes: centred means are opposite, angle pi (clamped)
    two = BetweenClassLoss(5)(feats, torch.tensor([0, 1, 1]))
    assert two.item() == pytest.approx(-math.pi, abs=2e-3)
    two.backward()
    assert torch.isfinite(feats.grad).all()
    learn = BetweenClassLoss(5, feature_dim=4, centres="learnable").double()
    value = learn(feats.detach(), torch.tensor([0, 1, 1]))
    assert value.item() == pytest.approx(slow_between(list(learn.centres.detach())), abs=1e-12)


def test_between_gradient_finite_at_coinciding_means() -> None:
    m = etf_rows(5).clone()
    m[1] = m[0]
    m.requires_grad_(True)
    BetweenClassLoss(5)(m, torch.arange(5)).backward()
    assert torch.isfinite(m.grad).all()


# ---- center loss and INC ------------------------------------------------------------------


def test_center_loss_matches_formula() -> None:
    feats, labels = random_batch(k=4)
    loss = CenterLoss(4, 5).double()
    c = loss.centres.detach()
    want = sum(0.5 * ((feats[i] - c[labels[i]]) ** 2).sum() for i in range(len(labels))) / len(
        labels
    )
    assert loss(feats, labels).item() == pytest.approx(float(want), rel=1e-12)
    assert loss.__class__(4, 5, reduction="none")(feats, labels).shape == (12,)


def test_within_is_reweighted_center_loss() -> None:
    feats, _ = random_batch(b=12, k=4)
    labels = torch.arange(4).repeat(3)  # every class 3 times
    center = CenterLoss(4, 5).double()
    within = WithinClassLoss(4, centres=center.centres)
    want = (2 * 12 / 3) * center(feats, labels)
    assert within(feats, labels).item() == pytest.approx(want.item(), rel=1e-12)


def test_inc_shares_learnable_centres() -> None:
    feats, labels = random_batch(k=4)
    inc = INCLoss(4, feature_dim=5, lambda_w=0.3, lambda_b=0.7, centres="learnable").double()
    assert inc.within.centres is inc.between.centres
    assert len(list(inc.parameters())) == 1
    want = 0.3 * inc.within(feats, labels) + 0.7 * inc.between(feats, labels)
    assert inc(feats, labels).item() == pytest.approx(want.item(), rel=1e-12)
    center = INCLoss(4, feature_dim=5, within="center")
    assert center.between.centres is center.within.centres
    batch = INCLoss(4)  # batch centres: plain sum of the two batch terms
    want = 0.01 * WithinClassLoss(4)(feats, labels) + 0.1 * BetweenClassLoss(4)(feats, labels)
    assert batch(feats, labels).item() == pytest.approx(want.item(), rel=1e-12)


# ---- P2P ----------------------------------------------------------------------------------


def test_p2p_class_centering_zero_on_etf() -> None:
    feats, labels = collapsed(LT200)
    assert P2PLoss(10, center="class")(feats, labels).item() == pytest.approx(0.0, abs=1e-20)
    # a subset of the vertices (absent classes) re-centred by its own mean is a smaller simplex
    feats, labels = collapsed([5, 0, 3, 1, 0, 2, 0, 0, 4, 1])
    assert P2PLoss(10, center="class")(feats, labels).item() == pytest.approx(0.0, abs=1e-20)


def test_p2p_sample_centering_value_on_imbalanced_collapse() -> None:
    # ERRATA: collapsed features on the ETF vertices of an imbalanced batch give 0.062 (K=10)
    # with AllNC's sample-mean centering; here the batch has CIFAR-10-LT IF=200 proportions.
    feats, labels = collapsed(LT200)
    value = P2PLoss(10, center="sample")(feats, labels).item()
    assert value == pytest.approx(0.0619, abs=1e-4)
    # a balanced batch: the sample mean is the mean of class means, so 0 again
    feats, labels = collapsed([3] * 10)
    assert P2PLoss(10)(feats, labels).item() == pytest.approx(0.0, abs=1e-20)


def test_p2p_positive_otherwise_and_slow_loop() -> None:
    feats, labels = random_batch(b=16, d=6, k=5, seed=7)
    for center in ("sample", "class"):
        value = P2PLoss(5, center=center)(feats, labels).item()
        means = present_means(feats, labels)
        origin = feats.mean(0) if center == "sample" else sum(means) / len(means)
        unit = [(m - origin) / (m - origin).norm() for m in means]
        assert value > 0.01
        assert value == pytest.approx(slow_p2p(unit), rel=1e-12)


def test_p2p_classifier() -> None:
    w = etf_rows(6, dim=8)
    assert P2PClassifierLoss()(w).item() == pytest.approx(0.0, abs=1e-20)
    assert P2PClassifierLoss()(2 * w).item() > 0.1  # raw Eq. 11 also pins the norms to 1
    assert P2PClassifierLoss(normalize=True)(2 * w).item() == pytest.approx(0.0, abs=1e-20)
    shifted = w + torch.randn(8, dtype=D64)
    assert P2PClassifierLoss(center=True, normalize=True)(shifted).item() == pytest.approx(
        0.0, abs=1e-20
    )
    g = torch.Generator().manual_seed(0)
    rand = torch.randn(5, 7, generator=g, dtype=D64)
    assert P2PClassifierLoss()(rand).item() == pytest.approx(slow_p2p(list(rand)), rel=1e-12)


# ---- every regularizer: awkward batches and gradients --------------------------------------

BUILDERS = {
    "inc_within": lambda: WithinClassLoss(6),
    "inc_within_learnable": lambda: WithinClassLoss(6, feature_dim=6, centres="learnable"),
    "inc_within_dataset": lambda: WithinClassLoss(
        6, counts="dataset", class_counts=torch.arange(1.0, 7.0)
    ),
    "inc_between": lambda: BetweenClassLoss(6),
    "center": lambda: CenterLoss(6, 6),
    "inc": lambda: INCLoss(6, feature_dim=6, centres="learnable"),
    "p2p": lambda: P2PLoss(6),
    "p2p_class": lambda: P2PLoss(6, center="class"),
}


@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_absent_and_single_sample_classes_finite(name: str) -> None:
    loss = BUILDERS[name]().double()
    feats, labels = awkward_batch()
    feats.requires_grad_(True)
    value = loss(feats, labels)
    assert value.dim() == 0 and torch.isfinite(value)
    value.backward()
    assert torch.isfinite(feats.grad).all()
    for p in loss.parameters():
        assert p.grad is None or torch.isfinite(p.grad).all()


@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_gradcheck(name: str) -> None:
    loss = BUILDERS[name]().double()
    feats, labels = awkward_batch()
    feats = (feats[:6] * 0.7).requires_grad_(True)
    assert gradcheck(lambda f: loss(f, labels[:6]), (feats,), eps=1e-6, atol=1e-6)


def test_gradcheck_p2p_classifier() -> None:
    w = torch.randn(4, 3, dtype=D64, requires_grad=True)
    for kwargs in ({}, {"center": True, "normalize": True}):
        assert gradcheck(P2PClassifierLoss(**kwargs), (w,), eps=1e-6, atol=1e-6)


def test_registered() -> None:
    for name in ("inc_within", "inc_between", "center", "inc", "p2p", "p2p_classifier"):
        assert name in LOSSES
    assert LOSSES.get("p2p") is P2PLoss
