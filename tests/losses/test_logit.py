"""Classification (logit) losses: each against a slow loop written from its paper's formula,
reductions to cross-entropy, ARB's properties (ERRATA), dense inputs, gradcheck, and a sweep
over every registered logit loss."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor

import nclt.dist
import nclt.losses.logit  # registers the logit losses
from nclt.errors import ConfigError
from nclt.losses import LOSSES
from nclt.losses import functional as LF
from nclt.losses.logit import (
    ARBLoss,
    BalancedSoftmaxLoss,
    ClassBalancedLoss,
    CrossEntropyLoss,
    FocalLoss,
    GeneralizedReweightLoss,
    LDAMLoss,
    LogitAdjustedLoss,
    LogitLoss,
    MSELoss,
)

F64 = torch.float64
TIGHT = {"rtol": 1e-10, "atol": 1e-12}

LOGIT_LOSSES = sorted(
    name
    for name in LOSSES.names()
    if isinstance(LOSSES.get(name), type) and issubclass(LOSSES.get(name), LogitLoss)
)

# Non-default settings per loss so that every code path is swept (the default is {}).
VARIANTS: dict[str, list[dict]] = {
    "cb": [{"form": "softmax"}, {"form": "sigmoid"}, {"form": "focal"}],
    "arb": [{"counts": "batch"}, {"counts": "global"}, {"counts": "batch", "clamp": 30.0}],
    "ce": [{}, {"reweight": "effective"}, {"reweight": "inverse", "weight": [1.0, 2.0, 0.5]}],
}


def variants(num_classes: int = 3) -> list[tuple[str, dict]]:
    out = []
    for name in LOGIT_LOSSES:
        for kw in VARIANTS.get(name, [{}]):
            kw = dict(kw)
            if "weight" in kw:
                kw["weight"] = torch.linspace(0.5, 2.0, num_classes, dtype=F64)
            out.append((name, kw))
    return out


def case_id(case: tuple[str, dict]) -> str:
    name, kw = case
    return name + "".join(f"-{k}={v}" for k, v in kw.items() if k != "weight")


def make(seed: int, n: int, c: int, scale: float = 2.0) -> tuple[Tensor, Tensor]:
    g = torch.Generator().manual_seed(seed)
    logits = scale * torch.randn(n, c, generator=g, dtype=F64)
    labels = torch.randint(0, c, (n,), generator=g)
    return logits, labels


COUNTS = torch.tensor([60, 25, 9, 3, 1])  # long-tailed training counts, C = 5


def imbalanced_batch(seed: int = 0) -> tuple[Tensor, Tensor]:
    """12 samples of 5 classes: 6 / 3 / 1 / 2 / 0 (class 4 absent, class 2 a singleton)."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.tensor([0, 0, 0, 0, 0, 0, 1, 1, 1, 2, 3, 3])
    labels = labels[torch.randperm(len(labels), generator=g)]
    return 2.0 * torch.randn(len(labels), 5, generator=g, dtype=F64), labels


# ----------------------------------------------------------------------- slow references
# Plain Python over floats, one sample at a time, as the papers write the formulas.


def ref_log_softmax(row: list[float], y: int) -> float:
    return row[y] - math.log(sum(math.exp(v) for v in row))


def ref_mean(losses: list[float], weights: list[float] | None = None) -> float:
    weights = weights or [1.0] * len(losses)
    return sum(w * v for w, v in zip(weights, losses, strict=True)) / sum(weights)


def ref_effective_weights(counts: list[float], beta: float) -> list[float]:
    raw = [1.0 / ((1.0 - beta**n) / (1.0 - beta)) for n in counts]  # 1 / E_n
    return [len(counts) * r / sum(raw) for r in raw]


def rows(logits: Tensor, labels: Tensor) -> list[tuple[list[float], int]]:
    return [(r.tolist(), int(y)) for r, y in zip(logits, labels, strict=True)]


# ----------------------------------------------------------------------- cross-entropy, DRW


def test_ce_matches_loop_and_f_cross_entropy() -> None:
    logits, labels = make(0, 10, 4)
    ref = ref_mean([-ref_log_softmax(r, y) for r, y in rows(logits, labels)])
    assert CrossEntropyLoss()(logits, labels).item() == pytest.approx(ref, rel=1e-12)
    for red in ("mean", "sum", "none"):
        torch.testing.assert_close(
            CrossEntropyLoss(reduction=red)(logits, labels),
            F.cross_entropy(logits, labels, reduction=red),
            **TIGHT,
        )


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_ce_per_call_weight_equals_f_cross_entropy_with_weight(reduction: str) -> None:
    """DRW passes a per-class weight per call: same as F.cross_entropy(weight=...)."""
    logits, labels = make(1, 12, 4)
    labels[[2, 7]] = -100
    w = torch.tensor([0.2, 1.0, 2.5, 0.3], dtype=F64)
    got = CrossEntropyLoss(reduction=reduction)(logits, labels, weight=w)
    want = F.cross_entropy(logits, labels, weight=w, reduction=reduction)
    torch.testing.assert_close(got, want, **TIGHT)
    # A fixed construction weight multiplies the per-call one.
    w0 = torch.tensor([1.0, 3.0, 1.0, 0.5], dtype=F64)
    got = CrossEntropyLoss(weight=w0, reduction=reduction)(logits, labels, weight=w)
    want = F.cross_entropy(logits, labels, weight=w0 * w, reduction=reduction)
    torch.testing.assert_close(got, want, **TIGHT)


def test_weighted_mean_false_divides_by_element_count() -> None:
    logits, labels = make(2, 9, 4)
    labels[0] = -100
    w = torch.tensor([0.2, 1.0, 2.5, 0.3], dtype=F64)
    total = F.cross_entropy(logits, labels, weight=w, reduction="sum")
    got = CrossEntropyLoss(weighted_mean=False)(logits, labels, weight=w)
    torch.testing.assert_close(got, total / 8, **TIGHT)


def test_class_weights_kinds() -> None:
    counts = torch.tensor([100, 10, 1])
    inv = LF.class_weights(counts, "inverse")
    torch.testing.assert_close(inv.sum(), torch.tensor(3.0, dtype=F64), **TIGHT)
    torch.testing.assert_close(inv[0] / inv[1], torch.tensor(0.1, dtype=F64), **TIGHT)
    torch.testing.assert_close(LF.class_weights(counts, "power", power=1.0), inv, **TIGHT)
    torch.testing.assert_close(
        LF.class_weights(counts, "power", power=0.0), torch.ones(3, dtype=F64), **TIGHT
    )
    torch.testing.assert_close(
        LF.class_weights(counts, "effective", beta=0.0), torch.ones(3, dtype=F64), **TIGHT
    )
    # beta -> 1: the effective number tends to n, i.e. inverse-frequency weights.
    torch.testing.assert_close(
        LF.class_weights(counts, "effective", beta=1 - 1e-9), inv, rtol=1e-6, atol=0
    )


def test_ce_reweight_uses_class_weights() -> None:
    logits, labels = make(3, 10, 5)
    for kind in ("inverse", "effective", "power"):
        loss = CrossEntropyLoss(class_counts=COUNTS, reweight=kind, beta=0.99, power=0.5)
        w = LF.class_weights(COUNTS, kind, beta=0.99, power=0.5)
        torch.testing.assert_close(
            loss(logits, labels), F.cross_entropy(logits, labels, weight=w), **TIGHT
        )
    # class_counts per call overrides the buffer.
    other = torch.tensor([1, 2, 3, 4, 5])
    loss = CrossEntropyLoss(class_counts=COUNTS, reweight="inverse")
    torch.testing.assert_close(
        loss(logits, labels, class_counts=other),
        F.cross_entropy(logits, labels, weight=LF.class_weights(other, "inverse")),
        **TIGHT,
    )


# ----------------------------------------------------------------------- focal


@pytest.mark.parametrize("gamma", [0.5, 2.0, 3.0])
def test_focal_matches_loop(gamma: float) -> None:
    logits, labels = make(4, 10, 4)
    ref = []
    for r, y in rows(logits, labels):
        lp = ref_log_softmax(r, y)
        ref.append(-((1.0 - math.exp(lp)) ** gamma) * lp)
    got = FocalLoss(gamma=gamma)(logits, labels)
    assert got.item() == pytest.approx(ref_mean(ref), rel=1e-12)


def test_focal_gamma0_is_ce() -> None:
    logits, labels = make(5, 10, 4)
    w = torch.tensor([0.5, 1.0, 2.0, 1.5], dtype=F64)
    torch.testing.assert_close(
        FocalLoss(gamma=0.0)(logits, labels, weight=w),
        F.cross_entropy(logits, labels, weight=w),
        **TIGHT,
    )


# ----------------------------------------------------------------------- class-balanced


def test_cb_weights_follow_effective_number() -> None:
    counts = [60.0, 25.0, 9.0, 3.0, 1.0]
    for beta in (0.9, 0.999, 0.9999):
        ref = ref_effective_weights(counts, beta)
        got = LF.class_weights(torch.tensor(counts), "effective", beta=beta)
        torch.testing.assert_close(got, torch.tensor(ref, dtype=F64), **TIGHT)
        assert got.sum().item() == pytest.approx(5.0, rel=1e-12)
        # Ratios are ratios of effective numbers E_n = (1 - beta^n) / (1 - beta).
        e = [(1 - beta**n) / (1 - beta) for n in counts]
        assert (got[0] / got[4]).item() == pytest.approx(e[4] / e[0], rel=1e-10)


def test_cb_softmax_matches_loop() -> None:
    logits, labels = make(6, 14, 5)
    beta = 0.999
    w = ref_effective_weights([float(n) for n in COUNTS], beta)
    losses = [-ref_log_softmax(r, y) for r, y in rows(logits, labels)]
    ref = ref_mean(losses, [w[y] for _, y in rows(logits, labels)])
    got = ClassBalancedLoss(COUNTS, form="softmax", beta=beta)(logits, labels)
    assert got.item() == pytest.approx(ref, rel=1e-12)


@pytest.mark.parametrize("gamma", [0.0, 2.0])
def test_cb_sigmoid_and_focal_match_loop(gamma: float) -> None:
    logits, labels = make(7, 14, 5)
    beta = 0.99
    w = ref_effective_weights([float(n) for n in COUNTS], beta)

    def sig(v: float) -> float:
        return 1.0 / (1.0 + math.exp(-v))

    losses, ws = [], []
    for r, y in rows(logits, labels):
        total = 0.0
        for c, z in enumerate(r):
            p_t = sig(z) if c == y else 1.0 - sig(z)
            total += -((1.0 - p_t) ** gamma) * math.log(p_t)
        losses.append(total)
        ws.append(w[y])
    form = "sigmoid" if gamma == 0 else "focal"
    got = ClassBalancedLoss(COUNTS, form=form, beta=beta, gamma=gamma)(logits, labels)
    assert got.item() == pytest.approx(ref_mean(losses, ws), rel=1e-10)


def test_cb_reductions() -> None:
    logits, labels = make(8, 10, 5)
    torch.testing.assert_close(
        ClassBalancedLoss(COUNTS, form="softmax", beta=0.0)(logits, labels),
        F.cross_entropy(logits, labels),
        **TIGHT,
    )
    torch.testing.assert_close(
        ClassBalancedLoss(COUNTS, form="focal", beta=0.9, gamma=0.0)(logits, labels),
        ClassBalancedLoss(COUNTS, form="sigmoid", beta=0.9)(logits, labels),
        **TIGHT,
    )
    onehot = F.one_hot(labels, 5).to(F64)
    bce = F.binary_cross_entropy_with_logits(logits, onehot, reduction="sum") / len(labels)
    torch.testing.assert_close(
        ClassBalancedLoss(COUNTS, form="sigmoid", beta=0.0)(logits, labels), bce, **TIGHT
    )


# ----------------------------------------------------------------------- LDAM


def test_ldam_margins() -> None:
    m = LF.ldam_margins(COUNTS, 0.5)
    assert m.max().item() == pytest.approx(0.5, rel=1e-14)
    assert int(m.argmax()) == 4  # the rarest class
    # Delta_c * n_c^(1/4) is the same constant C' for every class.
    const = m * COUNTS.double().pow(0.25)
    torch.testing.assert_close(const, const[0].expand(5), **TIGHT)


def test_ldam_matches_loop() -> None:
    logits, labels = make(9, 12, 5, scale=0.3)  # cosine-classifier range
    m = [0.5 * (1.0 / n) ** 0.25 for n in COUNTS.tolist()]  # C' = 0.5 * n_min^(1/4), n_min = 1
    s = 30.0
    ref = []
    for r, y in rows(logits, labels):
        num = math.exp(s * (r[y] - m[y]))
        den = num + sum(math.exp(s * v) for j, v in enumerate(r) if j != y)
        ref.append(-math.log(num / den))
    got = LDAMLoss(COUNTS, max_margin=0.5, scale=s)(logits, labels)
    assert got.item() == pytest.approx(ref_mean(ref), rel=1e-11)


def test_ldam_applies_exactly_its_margins() -> None:
    logits, labels = make(10, 12, 5, scale=0.5)
    w = torch.tensor([0.3, 0.7, 1.0, 2.0, 4.0], dtype=F64)
    loss = LDAMLoss(COUNTS, max_margin=0.4, scale=16.0)
    margins = LF.ldam_margins(COUNTS, 0.4)
    shifted = logits.clone()
    for i, y in enumerate(labels.tolist()):
        shifted[i, y] -= margins[y]
    torch.testing.assert_close(
        loss(logits, labels, weight=w), F.cross_entropy(16.0 * shifted, labels, weight=w), **TIGHT
    )
    torch.testing.assert_close(loss.margins(), margins, **TIGHT)
    # Per-call counts override the buffer (different margins).
    other = torch.tensor([1, 1, 1, 1, 16])
    m2 = LF.ldam_margins(other, 0.4)
    shifted = logits.clone()
    for i, y in enumerate(labels.tolist()):
        shifted[i, y] -= m2[y]
    torch.testing.assert_close(
        loss(logits, labels, class_counts=other),
        F.cross_entropy(16.0 * shifted, labels),
        **TIGHT,
    )


def test_ldam_zero_margin_unit_scale_is_ce() -> None:
    logits, labels = make(11, 12, 5)
    torch.testing.assert_close(
        LDAMLoss(COUNTS, max_margin=0.0, scale=1.0)(logits, labels),
        F.cross_entropy(logits, labels),
        **TIGHT,
    )


# ----------------------------------------------------------------------- balanced softmax


@pytest.mark.parametrize("tau", [0.5, 1.0, 2.0])
def test_balanced_softmax_matches_loop(tau: float) -> None:
    logits, labels = make(12, 12, 5)
    n = COUNTS.tolist()
    ref = []
    for r, y in rows(logits, labels):  # -log( n_y^tau e^{z_y} / sum_k n_k^tau e^{z_k} )
        num = n[y] ** tau * math.exp(r[y])
        ref.append(-math.log(num / sum(n[k] ** tau * math.exp(v) for k, v in enumerate(r))))
    got = BalancedSoftmaxLoss(COUNTS, tau=tau)(logits, labels)
    assert got.item() == pytest.approx(ref_mean(ref), rel=1e-12)


def test_balanced_softmax_reductions_and_logit_adjust() -> None:
    logits, labels = make(13, 12, 5)
    torch.testing.assert_close(
        BalancedSoftmaxLoss(COUNTS, tau=0.0)(logits, labels),
        F.cross_entropy(logits, labels),
        **TIGHT,
    )
    log_prior = (COUNTS.double() / COUNTS.sum()).log()
    for tau in (0.7, 1.0):
        want = F.cross_entropy(logits + tau * log_prior, labels)
        torch.testing.assert_close(
            BalancedSoftmaxLoss(COUNTS, tau=tau)(logits, labels), want, **TIGHT
        )
        torch.testing.assert_close(
            LogitAdjustedLoss(COUNTS, tau=tau)(logits, labels), want, **TIGHT
        )
    assert issubclass(LogitAdjustedLoss, BalancedSoftmaxLoss)
    assert LOSSES.get("logit_adjust") is LogitAdjustedLoss


# ----------------------------------------------------------------------- ARB


def test_arb_matches_loop_with_batch_counts() -> None:
    logits, labels = imbalanced_batch(0)
    n = torch.bincount(labels, minlength=5).tolist()
    ref = []
    for r, y in rows(logits, labels):  # Eq. 14, one sample
        den = sum(n[k] / n[y] * math.exp(v) for k, v in enumerate(r))
        ref.append(-math.log(math.exp(r[y]) / den))
    loss = ARBLoss(counts="batch", reduction="sum")
    assert loss(logits, labels).item() == pytest.approx(sum(ref), rel=1e-12)
    # Mean reduction divides the paper's batch sum (and its gradients) by b.
    mean = ARBLoss(counts="batch")(logits, labels)
    assert mean.item() == pytest.approx(sum(ref) / len(ref), rel=1e-12)


def test_arb_equal_counts_is_ce() -> None:
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(12, 4, generator=g, dtype=F64)
    labels = torch.arange(4).repeat(3)[torch.randperm(12, generator=g)]  # 3 per class
    want = F.cross_entropy(logits, labels)
    torch.testing.assert_close(ARBLoss(counts="batch")(logits, labels), want, **TIGHT)
    equal = torch.full((4,), 7)
    torch.testing.assert_close(ARBLoss(equal, counts="global")(logits, labels), want, **TIGHT)


def test_arb_global_counts_equal_balanced_softmax() -> None:
    logits, labels = imbalanced_batch(2)
    w = torch.linspace(0.5, 2.0, 5, dtype=F64)
    for red in ("mean", "sum", "none"):
        torch.testing.assert_close(
            ARBLoss(COUNTS, counts="global", reduction=red)(logits, labels, weight=w),
            BalancedSoftmaxLoss(COUNTS, tau=1.0, reduction=red)(logits, labels, weight=w),
            **TIGHT,
        )
    # Per-call counts override (both modes).
    other = torch.tensor([5, 4, 3, 2, 1])
    for mode in ("batch", "global"):
        torch.testing.assert_close(
            ARBLoss(COUNTS, counts=mode)(logits, labels, class_counts=other),
            BalancedSoftmaxLoss(other)(logits, labels),
            **TIGHT,
        )


def test_arb_absent_class_has_no_effect() -> None:
    logits, labels = imbalanced_batch(3)  # class 4 absent
    loss = ARBLoss(counts="batch")
    base = loss(logits, labels)
    for value in (-50.0, 0.0, 3.0, 80.0):
        moved = logits.clone()
        moved[:, 4] = value
        torch.testing.assert_close(loss(moved, labels), base, **TIGHT)
    z = logits.clone().requires_grad_(True)
    loss(z, labels).backward()
    assert z.grad is not None
    assert torch.all(z.grad[:, 4] == 0)
    # With cross-entropy the absent class's logit does matter.
    moved = logits.clone()
    moved[:, 4] = 5.0
    assert not torch.allclose(F.cross_entropy(moved, labels), F.cross_entropy(logits, labels))


def test_arb_gradient_decomposition_eq15() -> None:
    """ARB Eq. 15 (ERRATA: the repulsion sums run over j in pi(k)).

    For a linear classifier z = W h and the batch-sum loss, the gradient on w_i from the
    samples of class k is ``-n_i hbar_(i)`` (k = i, attraction) or ``n_i hbar_(k)`` (k != i,
    repulsion), with ``hbar_(k) = 1/n_k sum_{j in pi(k)} q~_{j,i} h_j``: every component
    carries the same coefficient n_i. Cross-entropy's components carry n_k instead (Eq. 10).
    """
    g = torch.Generator().manual_seed(4)
    C, D = 5, 3
    labels = torch.tensor([0, 0, 0, 0, 0, 0, 1, 1, 1, 2, 3, 3])  # class 4 absent
    H = torch.randn(len(labels), D, generator=g, dtype=F64)
    W = torch.randn(C, D, generator=g, dtype=F64, requires_grad=True)
    n = torch.bincount(labels, minlength=C).double()

    for name, loss in (
        ("arb", ARBLoss(counts="batch", reduction="none")),
        ("ce", CrossEntropyLoss(reduction="none")),
    ):
        per = loss(H @ W.T, labels)
        total = torch.zeros_like(W)
        z = (H @ W.T).detach()
        for k in range(C):
            members = (labels == k).nonzero().flatten().tolist()
            if not members:
                continue
            (grad_k,) = torch.autograd.grad(per[labels == k].sum(), W, retain_graph=True)
            total += grad_k
            for i in range(C):
                hbar = torch.zeros(D, dtype=F64)
                for j in members:
                    if name == "arb":  # p~^{(k)}_{j,i} = e^{z_ji} / sum_l (n_l / n_k) e^{z_jl}
                        p = math.exp(z[j, i]) / sum(
                            n[m].item() / n[k].item() * math.exp(z[j, m]) for m in range(C)
                        )
                    else:
                        p = math.exp(z[j, i]) / sum(math.exp(z[j, m]) for m in range(C))
                    q = 1.0 - p if i == k else p
                    hbar += q * H[j]
                hbar /= len(members)
                coeff = n[i] if name == "arb" else n[k]
                want = -coeff * hbar if i == k else coeff * hbar
                torch.testing.assert_close(grad_k[i], want, **TIGHT)
        (full,) = torch.autograd.grad(per.sum(), W)
        torch.testing.assert_close(full, total, **TIGHT)
        if name == "arb":
            assert torch.all(full[4] == 0)  # n_4 = 0: no attraction, no repulsion


def test_arb_clamp() -> None:
    logits, labels = imbalanced_batch(5)
    logits = logits * 40  # many entries beyond +-30
    clamped = ARBLoss(counts="batch", clamp=30.0)(logits, labels)
    torch.testing.assert_close(
        clamped, ARBLoss(counts="batch")(logits.clamp(-30, 30), labels), **TIGHT
    )
    assert not torch.allclose(clamped, ARBLoss(counts="batch")(logits, labels))


def test_arb_batch_counts_scope(monkeypatch: pytest.MonkeyPatch) -> None:
    """scope="global" takes counts through nclt.dist.all_reduce_sum; "local" does not."""
    logits, labels = imbalanced_batch(6)
    other_rank = torch.tensor([0, 5, 5, 0, 4])  # the counts another rank would add

    def fake_all_reduce_sum(t: Tensor) -> Tensor:
        return t + other_rank.to(t)

    monkeypatch.setattr(nclt.dist, "all_reduce_sum", fake_all_reduce_sum)
    local_counts = torch.bincount(labels, minlength=5)
    torch.testing.assert_close(
        ARBLoss(counts="batch", scope="global")(logits, labels),
        BalancedSoftmaxLoss(local_counts + other_rank)(logits, labels),
        **TIGHT,
    )
    torch.testing.assert_close(
        ARBLoss(counts="batch", scope="local")(logits, labels),
        ARBLoss(counts="batch", class_counts=None)(logits, labels, class_counts=local_counts),
        **TIGHT,
    )


# ----------------------------------------------------------------------- GR and MSE


@pytest.mark.parametrize("rho", [0.3, 1.0, 1.5])
def test_gr_matches_loop(rho: float) -> None:
    logits, labels = make(14, 12, 5)
    raw = [n ** (-rho) for n in COUNTS.tolist()]
    w = [5 * r / sum(raw) for r in raw]
    losses = [-ref_log_softmax(r, y) for r, y in rows(logits, labels)]
    ref = ref_mean(losses, [w[y] for y in labels.tolist()])
    assert GeneralizedReweightLoss(COUNTS, rho=rho)(logits, labels).item() == pytest.approx(
        ref, rel=1e-12
    )


def test_gr_reductions() -> None:
    logits, labels = make(15, 12, 5)
    torch.testing.assert_close(
        GeneralizedReweightLoss(COUNTS, rho=0.0)(logits, labels),
        F.cross_entropy(logits, labels),
        **TIGHT,
    )
    torch.testing.assert_close(
        GeneralizedReweightLoss(COUNTS, rho=1.0)(logits, labels),
        CrossEntropyLoss(class_counts=COUNTS, reweight="inverse")(logits, labels),
        **TIGHT,
    )


def test_mse_matches_loop() -> None:
    logits, labels = make(16, 10, 4)
    ref = [
        0.5 * sum((v - (1.0 if c == y else 0.0)) ** 2 for c, v in enumerate(r))
        for r, y in rows(logits, labels)
    ]
    assert MSELoss()(logits, labels).item() == pytest.approx(ref_mean(ref), rel=1e-12)
    onehot = F.one_hot(labels, 4).to(F64)
    torch.testing.assert_close(
        MSELoss()(logits, labels) * 2 / 4, F.mse_loss(logits, onehot), **TIGHT
    )


# ----------------------------------------------------------------------- every logit loss


def test_registry_holds_the_logit_losses() -> None:
    assert set(LOGIT_LOSSES) >= {
        "ce",
        "focal",
        "cb",
        "ldam",
        "balanced_softmax",
        "logit_adjust",
        "arb",
        "gr",
        "mse",
    }


def build(name: str, kw: dict, counts: Tensor, **extra: object) -> LogitLoss:
    loss = LOSSES.build(name, class_counts=counts, **kw, **extra)
    assert isinstance(loss, LogitLoss)
    return loss


@pytest.mark.parametrize("case", variants(3), ids=case_id)
def test_dense_equals_flattened_without_ignored(case: tuple[str, dict]) -> None:
    name, kw = case
    counts = torch.tensor([40, 9, 2])
    g = torch.Generator().manual_seed(17)
    logits = torch.randn(2, 3, 4, 5, generator=g, dtype=F64)
    labels = torch.randint(0, 3, (2, 4, 5), generator=g)
    labels[0, 1, :3] = -100
    labels[1, 3, 2] = -100
    w = torch.tensor([0.5, 1.0, 2.0], dtype=F64)
    flat_logits = logits.movedim(1, -1).reshape(-1, 3)  # pixel-major, like labels.reshape(-1)
    flat_labels = labels.reshape(-1)
    keep = flat_labels != -100
    labels_255 = labels.masked_fill(labels == -100, 255)  # the same with ignore_index=255
    for red in ("mean", "sum"):
        for weight in (None, w):
            want = build(name, kw, counts, reduction=red)(
                flat_logits[keep], flat_labels[keep], weight=weight
            )
            got = build(name, kw, counts, reduction=red)(logits, labels, weight=weight)
            torch.testing.assert_close(got, want, **TIGHT)
            got = build(name, kw, counts, reduction=red, ignore_index=255)(
                logits, labels_255, weight=weight
            )
            torch.testing.assert_close(got, want, **TIGHT)
    none = build(name, kw, counts, reduction="none")(logits, labels, weight=w)
    assert none.shape == labels.shape
    want = build(name, kw, counts, reduction="none")(flat_logits[keep], flat_labels[keep], weight=w)
    torch.testing.assert_close(none.reshape(-1)[keep], want, **TIGHT)
    assert torch.all(none.reshape(-1)[~keep] == 0)


@pytest.mark.parametrize("case", variants(3), ids=case_id)
def test_gradcheck(case: tuple[str, dict]) -> None:
    name, kw = case
    loss = build(name, kw, torch.tensor([5, 3, 1]))
    g = torch.Generator().manual_seed(18)
    logits = torch.randn(4, 3, generator=g, dtype=F64, requires_grad=True)
    labels = torch.tensor([0, 1, 2, 0])
    w = torch.tensor([1.0, 0.5, 2.0], dtype=F64)
    assert torch.autograd.gradcheck(lambda z: loss(z, labels), (logits,))
    assert torch.autograd.gradcheck(lambda z: loss(z, labels, weight=w), (logits,))


@pytest.mark.parametrize("case", variants(6), ids=case_id)
def test_absent_and_singleton_classes_are_finite(case: tuple[str, dict]) -> None:
    name, kw = case
    counts = torch.tensor([100, 50, 20, 10, 5, 1])
    labels = torch.tensor([0, 0, 0, 0, 0, 3, 5, 0])  # 1, 2, 4 absent; 3 and 5 single
    g = torch.Generator().manual_seed(19)
    for scale in (1.0, 60.0):  # moderate and very large logits
        logits = (scale * torch.randn(8, 6, generator=g)).requires_grad_(True)
        out = build(name, kw, counts)(logits, labels)
        assert out.dim() == 0 and torch.isfinite(out)
        out.backward()
        assert logits.grad is not None and torch.isfinite(logits.grad).all()


@pytest.mark.parametrize("case", variants(4), ids=case_id)
def test_registry_sweep_forward_backward(case: tuple[str, dict]) -> None:
    """Every registered logit loss builds from class counts and trains (float32)."""
    name, kw = case
    loss = build(name, kw, torch.tensor([30, 10, 3, 1]))
    logits = torch.randn(16, 4, requires_grad=True)
    labels = torch.randint(0, 4, (16,))
    out = loss(logits, labels, weight=torch.tensor([0.5, 1.0, 1.5, 2.0]))
    assert out.shape == () and out.dtype == torch.float32 and torch.isfinite(out)
    out.backward()
    assert logits.grad is not None and torch.isfinite(logits.grad).all()
    assert logits.grad.abs().sum() > 0
    per = build(name, kw, torch.tensor([30, 10, 3, 1]), reduction="none")(logits, labels)
    assert per.shape == (16,)


@pytest.mark.parametrize("case", variants(4), ids=case_id)
def test_bf16_autocast_and_float64(case: tuple[str, dict]) -> None:
    name, kw = case
    loss = build(name, kw, torch.tensor([30, 10, 3, 1]))
    labels = torch.tensor([0, 0, 1, 3, 0, 2, 1, 0])
    logits16 = torch.randn(8, 4).to(torch.bfloat16).requires_grad_(True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = loss(logits16, labels)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, loss(logits16.detach().float(), labels))
    out.backward()
    assert logits16.grad is not None and logits16.grad.dtype == torch.bfloat16
    assert torch.isfinite(logits16.grad.float()).all()
    assert loss(logits16.detach().double(), labels).dtype == F64


def test_errors() -> None:
    with pytest.raises(ConfigError):
        LDAMLoss(torch.tensor([5, 0, 1]))  # margins divide by n_c
    with pytest.raises(ConfigError):
        CrossEntropyLoss(reduction="avg")  # type: ignore[arg-type]
    with pytest.raises(ConfigError):
        ARBLoss(counts="global")  # global counts need class_counts
    with pytest.raises(ConfigError):
        CrossEntropyLoss(reweight="inverse")  # needs counts
    logits, labels = make(20, 4, 3)
    with pytest.raises(ConfigError):
        BalancedSoftmaxLoss(COUNTS)(logits, labels)  # 5 counts, 3 classes
    with pytest.raises(ConfigError):
        CrossEntropyLoss()(logits, labels, weight=torch.ones(4))
