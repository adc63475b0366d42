"""Geometry losses: ETF-DR's dot regression and DisA's entropic OT alignment."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
import torch.nn.functional as F
from torch.autograd import gradcheck

from nclt.errors import ConfigError
from nclt.geometry import simplex_etf
from nclt.losses import LOSSES
from nclt.losses import functional as NF
from nclt.losses.geometry import DisALoss, DotRegressionLoss, transport_plan

D64 = torch.float64


def etf_rows(k: int, dim: int) -> torch.Tensor:
    return simplex_etf(dim, k, dtype=D64).T.contiguous()  # (K, D)


def labels_from(counts: list[int]) -> torch.Tensor:
    return torch.repeat_interleave(torch.arange(len(counts)), torch.tensor(counts))


# ---- dot regression ------------------------------------------------------------------------


def slow_dr(feats, labels, etf, normalize=True, lengths="batch"):
    b = len(labels)
    present = sorted(set(labels.tolist()))
    total = 0.0
    for i in range(b):
        h = feats[i] / feats[i].norm() if normalize else feats[i]
        y = int(labels[i])
        scale = 1.0
        if lengths == "batch":
            n_y = int((labels == y).sum())
            scale = math.sqrt((b / len(present)) / n_y)
        m = etf[y] * scale
        h_len = float(h.norm())
        total += 0.5 * (float(h @ m) - float(m.norm()) * h_len) ** 2 / h_len
    return total / b


def test_dr_zero_on_matching_etf_vectors() -> None:
    etf = etf_rows(6, 8)
    labels = labels_from([5, 3, 1, 0, 2, 1])
    lengths = NF.dr_target_lengths(torch.bincount(labels, minlength=6).to(D64))
    on_vertex = etf[labels] * lengths[labels, None]  # the per-batch target, at its own length
    for loss in (DotRegressionLoss(), DotRegressionLoss(normalize=False)):
        assert loss(on_vertex, labels, etf).item() == pytest.approx(0.0, abs=1e-24)
    # any positive length along the right direction is also a zero
    assert DotRegressionLoss()(3.0 * etf[labels], labels, etf).item() == pytest.approx(0, abs=1e-24)
    wrong = etf[(labels + 1) % 6]
    assert DotRegressionLoss()(wrong, labels, etf).item() > 0.1


@pytest.mark.parametrize("normalize", [True, False])
@pytest.mark.parametrize("lengths", ["batch", "unit"])
def test_dr_matches_slow_loop(normalize: bool, lengths: str) -> None:
    g = torch.Generator().manual_seed(0)
    etf = etf_rows(5, 7)
    labels = torch.tensor([0, 0, 0, 1, 3, 3, 4, 0, 1])
    feats = torch.randn(len(labels), 7, generator=g, dtype=D64)
    loss = DotRegressionLoss(lengths=lengths, normalize=normalize)(feats, labels, etf)
    want = slow_dr(feats, labels, etf, normalize, lengths)
    assert loss.item() == pytest.approx(want, rel=1e-12)


def test_dr_batch_lengths_and_dataset_lengths() -> None:
    counts = torch.tensor([6.0, 2.0, 0.0, 1.0])  # B=9, 3 classes present, gamma = 3
    want = torch.tensor([math.sqrt(3 / 6), math.sqrt(3 / 2), 1.0, math.sqrt(3.0)])
    torch.testing.assert_close(NF.dr_target_lengths(counts), want)
    etf = etf_rows(4, 5)
    labels = torch.tensor([0, 1, 3])
    feats = torch.randn(3, 5, dtype=D64)
    ds = DotRegressionLoss(lengths="dataset", class_counts=torch.tensor([100, 10, 10, 1]))
    ref = DotRegressionLoss(lengths="unit")(
        feats, labels, etf * ds.dataset_lengths[:, None].double()
    )
    assert ds(feats, labels, etf).item() == pytest.approx(ref.item(), rel=1e-6)
    with pytest.raises(ConfigError, match="class_counts"):
        DotRegressionLoss(lengths="dataset")


def test_dr_gradient_treats_feature_norm_as_constant() -> None:
    etf = etf_rows(4, 6)
    labels = torch.tensor([0, 1, 1, 2, 3])
    feats = torch.randn(5, 6, dtype=D64, requires_grad=True)
    loss = DotRegressionLoss(lengths="unit", normalize=False, reduction="sum")
    loss(feats, labels, etf).backward()
    h = feats.detach()
    m = etf[labels]
    h_len = h.norm(dim=1, keepdim=True)
    resid = (h * m).sum(1, keepdim=True) - m.norm(dim=1, keepdim=True) * h_len
    torch.testing.assert_close(feats.grad, resid * m / h_len)
    # with normalized features the norm is 1 anyway: gradcheck against finite differences
    small = torch.randn(4, 6, dtype=D64, requires_grad=True)
    dr = DotRegressionLoss()
    assert gradcheck(lambda f: dr(f, labels[:4], etf), (small,), eps=1e-6, atol=1e-7)


def test_dr_absent_and_single_classes_finite() -> None:
    etf = etf_rows(6, 6)
    labels = torch.tensor([0, 0, 1, 0, 3, 0, 3])
    feats = torch.randn(7, 6, dtype=D64, requires_grad=True)
    value = DotRegressionLoss()(feats, labels, etf)
    value.backward()
    assert torch.isfinite(value) and torch.isfinite(feats.grad).all()
    assert DotRegressionLoss(reduction="none")(feats, labels, etf).shape == (7,)
    with pytest.raises(ConfigError, match=r"\(K, D\)"):
        DotRegressionLoss()(feats, labels, etf.T[:, :5])


# ---- DisA: the transport plan ---------------------------------------------------------------


def slow_sinkhorn_loss(feats, etf, eps, iterations):
    """Algorithm 1 of DisA, written out in the plain domain (float64, small eps-free sizes)."""
    b, k = feats.shape[0], etf.shape[0]
    cost = [
        [1.0 - float(F.cosine_similarity(feats[i], etf[j], dim=0)) for j in range(k)]
        for i in range(b)
    ]
    kern = [[math.exp(-cost[i][j] / eps) for j in range(k)] for i in range(b)]
    u = [1.0 / b] * b
    v = [1.0 / k] * k
    for _ in range(iterations):
        u = [(1.0 / b) / sum(kern[i][j] * v[j] for j in range(k)) for i in range(b)]
        v = [(1.0 / k) / sum(kern[i][j] * u[i] for i in range(b)) for j in range(k)]
    return sum(u[i] * kern[i][j] * v[j] * cost[i][j] for i in range(b) for j in range(k))


@pytest.mark.parametrize("eps", [1.0, 0.1, 0.01])
def test_plan_meets_both_marginals(eps: float) -> None:
    g = torch.Generator().manual_seed(0)
    etf = etf_rows(10, 16)
    feats = torch.randn(37, 16, generator=g, dtype=D64)
    plan = transport_plan(feats, etf, epsilon=eps, iterations=3000, tol=1e-9)
    assert plan.shape == (37, 10)
    torch.testing.assert_close(plan.sum(1) * 37, torch.ones(37, dtype=D64), atol=1e-4, rtol=0)
    torch.testing.assert_close(plan.sum(0) * 10, torch.ones(10, dtype=D64), atol=1e-4, rtol=0)
    with pytest.raises(ConfigError, match=r"\.T"):
        transport_plan(feats, etf.T.contiguous(), epsilon=eps)


def test_scaling_and_log_domain_agree_and_match_pot() -> None:
    g = torch.Generator().manual_seed(1)
    cost = torch.rand(20, 7, generator=g, dtype=D64) * 2
    log_a, _ = NF.sinkhorn_log(cost, 0.2, 500, 1e-12)
    log_b, _ = NF.sinkhorn_scaling(cost, 0.2, 500, 1e-12)
    torch.testing.assert_close(log_a.exp(), log_b.exp(), atol=1e-12, rtol=1e-9)
    ot = pytest.importorskip("ot")
    ref = ot.bregman.sinkhorn_log(
        torch.full((20,), 1 / 20, dtype=D64),
        torch.full((7,), 1 / 7, dtype=D64),
        cost,
        0.2,
        numItermax=500,
        stopThr=1e-12,
    )
    torch.testing.assert_close(log_a.exp(), ref, atol=1e-12, rtol=1e-8)


def test_disa_matches_algorithm_one_loop_and_pot_backend() -> None:
    g = torch.Generator().manual_seed(2)
    etf = etf_rows(4, 5)
    feats = torch.randn(6, 5, generator=g, dtype=D64)
    for eps in (1.0, 0.3):
        loss = DisALoss(etf=etf, epsilon=eps, iterations=50, tol=None, scope="local")
        assert loss(feats).item() == pytest.approx(
            slow_sinkhorn_loss(feats, etf, eps, 50), rel=1e-10
        )
    pytest.importorskip("ot")
    pot = DisALoss(etf=etf, epsilon=0.3, iterations=300, tol=1e-12, backend="pot")
    mine = DisALoss(etf=etf, epsilon=0.3, iterations=300, tol=1e-12)
    assert pot(feats).item() == pytest.approx(mine(feats).item(), rel=1e-9)


@pytest.mark.parametrize("method", ["auto", "log"])
def test_disa_small_epsilon_is_finite(method: str) -> None:
    etf = simplex_etf(16, 10).T.contiguous()  # float32, as in training
    labels = labels_from([9, 5, 3, 2, 1, 1, 1, 1, 1, 0])
    feats = etf[labels].clone().requires_grad_(True)  # collapsed: the hardest costs (0 or 10/9)
    for eps in (0.01, 0.001):
        loss = DisALoss(etf=etf, epsilon=eps, iterations=200, method=method)
        value = loss(feats, labels)
        (grad,) = torch.autograd.grad(value, feats)
        assert torch.isfinite(value) and torch.isfinite(grad).all()
    value = DisALoss(etf=etf, epsilon=0.01, gradient="unrolled", iterations=50)(feats)
    (grad,) = torch.autograd.grad(value, feats)
    assert torch.isfinite(value) and torch.isfinite(grad).all()


# ---- DisA: what the loss rewards ------------------------------------------------------------


def path_values(loss, start, target, ts=(0.0, 0.25, 0.5, 0.75, 1.0)):
    return [loss((1 - t) * start + t * target).item() for t in ts]


@pytest.mark.parametrize("eps", [1.0, 0.1])
def test_disa_decreases_toward_own_vertex_on_balanced_batch(eps: float) -> None:
    k, d = 10, 16
    etf = etf_rows(k, d)
    labels = torch.arange(k).repeat(4)  # class-balanced: 4 per class
    loss = DisALoss(etf=etf, epsilon=eps, iterations=3000, tol=1e-10)
    ts = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)
    for seed in range(3):
        start = torch.randn(40, d, generator=torch.Generator().manual_seed(seed), dtype=D64)
        values = path_values(loss, start, etf[labels], ts)
        # Strictly decreasing from 1/5 of the way on; right at a random start the entropic
        # value is flat to ~1e-3 (eps 0.1) and may wobble.
        assert all(a > b for a, b in itertools.pairwise(values[1:])), values
        assert values[0] > values[1] - 2e-3
        # at the vertices: (K-1) c e^{-c/eps} / (1 + (K-1) e^{-c/eps}), c = K/(K-1) the cost
        # to a foreign vertex (0.8307 at eps 1, 1.49e-4 at eps 0.1)
        c = k / (k - 1)
        at_vertex = (k - 1) * c * math.exp(-c / eps) / (1 + (k - 1) * math.exp(-c / eps))
        assert values[-1] == pytest.approx(at_vertex, rel=1e-9)
        if eps == 1.0:  # at the paper's eps the plan is nearly uniform: the loss barely moves
            assert values[0] - values[-1] < 0.15
        else:
            assert values[0] - values[-1] > 0.5


def test_disa_uniform_plan_limit_is_one() -> None:
    # With a huge eps the plan is uniform and <T, C> = 1 - mean_k cos(h, m_k) = 1 exactly,
    # because the ETF vectors sum to zero.
    etf = etf_rows(10, 12)
    feats = torch.randn(8, 12, dtype=D64)
    assert DisALoss(etf=etf, epsilon=1e6)(feats).item() == pytest.approx(1.0, abs=1e-6)


def test_disa_real_minimum_is_even_spread_not_labels() -> None:
    k, d = 10, 12
    etf = etf_rows(k, d)
    labels = labels_from([16, 8, 5, 3, 2, 2, 1, 1, 1, 1])  # B = 40, long-tailed
    loss = DisALoss(etf=etf, epsilon=0.1, iterations=5000, tol=1e-10)
    even = etf[torch.arange(40) % k].clone()  # 4 features per vertex, whatever the labels
    own = etf[labels]
    assert loss(even, labels).item() < 1e-3 < 0.4 < loss(own, labels).item()
    # the even spread is a local minimum: small perturbations only increase the loss
    g = torch.Generator().manual_seed(0)
    base = loss(even).item()
    for _ in range(5):
        assert loss(even + 0.05 * torch.randn(40, d, generator=g, dtype=D64)).item() > base
    # and moving the long-tailed batch to its own vertices is not monotone (ERRATA: K=10, a
    # long-tailed batch of 89, eps 0.1): 3/4 of the way is lower than the vertices
    labels = labels_from([40, 22, 12, 6, 3, 2, 1, 1, 1, 1])
    start = torch.randn(89, d, generator=torch.Generator().manual_seed(0), dtype=D64)
    values = path_values(loss, start, etf[labels])
    assert values[3] < values[4] - 0.03


def test_disa_gradient_envelope_vs_unrolled() -> None:
    g = torch.Generator().manual_seed(3)
    etf = etf_rows(4, 5)
    feats = torch.randn(6, 5, generator=g, dtype=D64, requires_grad=True)
    kw = {"etf": etf, "epsilon": 0.5, "iterations": 400, "tol": None}
    # default: the plan is detached, the gradient is <T*, dC/dh>
    (g_env,) = torch.autograd.grad(DisALoss(**kw)(feats), feats)
    cost = 1 - F.normalize(feats, dim=1) @ F.normalize(etf, dim=1).T
    log_plan, _ = NF.sinkhorn_log(cost.detach(), 0.5, 400, None)
    (g_ref,) = torch.autograd.grad((log_plan.exp() * cost).sum(), feats)
    torch.testing.assert_close(g_env, g_ref)
    # ... which is the exact gradient of the entropic value (envelope theorem) at convergence
    entropic = DisALoss(objective="entropic", **kw)
    assert gradcheck(lambda f: entropic(f), (feats,), eps=1e-6, atol=1e-7)
    # "unrolled" differentiates through Sinkhorn: the exact gradient of Eq. 9's <T*, C>
    unrolled = DisALoss(gradient="unrolled", **{**kw, "iterations": 60})
    assert gradcheck(lambda f: unrolled(f), (feats,), eps=1e-6, atol=1e-7)
    (g_unr,) = torch.autograd.grad(DisALoss(gradient="unrolled", **kw)(feats), feats)
    # the two gradients of the cost objective really differ (the <dT*/dC, C> term)
    assert (g_unr - g_env).norm() > 0.05 * g_env.norm()
    # the value does not depend on the gradient mode
    assert DisALoss(gradient="unrolled", **kw)(feats).item() == pytest.approx(
        DisALoss(**kw)(feats).item(), rel=1e-12
    )


def test_disa_standardize_is_a_parameter_free_batchnorm() -> None:
    """standardize=True: the value and gradient of DisA on BatchNorm1d(affine identity, train
    mode) features, as the official script computes them; invariant to any positive
    per-dimension scale and shift of the features, which the raw cost is not."""
    g = torch.Generator().manual_seed(4)
    etf = etf_rows(5, 8)
    feats = (torch.randn(12, 8, generator=g, dtype=D64) * 3 + 1).relu().requires_grad_(True)
    for gradient in ("envelope", "unrolled"):
        kw = {"etf": etf, "epsilon": 0.5, "iterations": 300, "tol": None, "gradient": gradient}
        mine = DisALoss(standardize=True, **kw)(feats)
        bn = torch.nn.BatchNorm1d(8, affine=False, eps=1e-5).double().train()
        ref = DisALoss(**kw)(bn(feats))
        assert mine.item() == pytest.approx(ref.item(), rel=1e-12)
        (g_mine,) = torch.autograd.grad(mine, feats)
        (g_ref,) = torch.autograd.grad(DisALoss(**kw)(bn(feats)), feats)
        torch.testing.assert_close(g_mine, g_ref)
    scale = torch.rand(8, generator=g, dtype=D64) * 5 + 0.5
    shift = torch.randn(8, generator=g, dtype=D64) * 4
    h = torch.randn(12, 8, generator=g, dtype=D64) * 10
    std = DisALoss(etf=etf, epsilon=0.5, standardize=True, iterations=300, tol=None)
    raw = DisALoss(etf=etf, epsilon=0.5)
    assert std(h * scale + shift).item() == pytest.approx(std(h).item(), rel=1e-7)  # eps 1e-5
    assert abs(raw(h * scale + shift).item() - raw(h).item()) > 1e-3


def test_disa_etf_sources() -> None:
    etf = etf_rows(5, 8)
    feats = torch.randn(9, 8, dtype=D64)
    built = DisALoss(num_classes=5, feature_dim=8)
    assert built.etf.shape == (5, 8)
    given = DisALoss(etf=etf)
    via_head = DisALoss()
    assert via_head(feats, None, etf).item() == pytest.approx(given(feats).item(), rel=1e-12)
    with pytest.raises(ConfigError, match="needs the ETF"):
        DisALoss()(feats)
    with pytest.raises(ConfigError):
        DisALoss(etf=etf, epsilon=0.0)


def test_disa_awkward_batch_finite() -> None:
    etf = etf_rows(6, 6)
    labels = torch.tensor([0, 0, 1, 0, 3, 0, 3])
    feats = torch.randn(7, 6, dtype=D64, requires_grad=True)
    value = DisALoss(etf=etf, epsilon=0.1)(feats, labels, etf)
    value.backward()
    assert torch.isfinite(value) and torch.isfinite(feats.grad).all()


def test_registered() -> None:
    assert LOSSES.get("dr") is DotRegressionLoss
    assert LOSSES.get("disa") is DisALoss
