"""NC metrics on constructed geometries, against a slow reference, streamed and all-reduced."""

from __future__ import annotations

import itertools
import math
from typing import Any

import numpy as np
import pytest
import torch
from torch import Tensor

from nclt import dist
from nclt.errors import ConfigError, NcltError
from nclt.metrics import (
    CollapseAccumulator,
    NC4Accumulator,
    balance_metrics,
    collapse_metrics,
    collapse_metrics_from_loader,
    equiangularity,
    nc4,
)

F64 = torch.float64
K, D = 10, 16
ETF_ANGLE = math.degrees(math.acos(-1 / (K - 1)))  # 96.38


def lt_counts() -> list[int]:
    """A 10-class long tail with 4 many, 3 medium and 3 few classes (500 ... 5)."""
    return [int(500 * 100 ** (-i / (K - 1))) for i in range(K)]


def simplex_etf(k: int, d: int, seed: int = 0) -> Tensor:
    """(k, d) rows on a simplex ETF: unit norms, pairwise cosine -1/(k-1) (AllNC Eq. 1)."""
    g = torch.Generator().manual_seed(seed)
    u, _ = torch.linalg.qr(torch.randn(d, k, generator=g, dtype=F64))
    return ((k / (k - 1)) ** 0.5 * u @ (torch.eye(k, dtype=F64) - 1.0 / k)).T


def labels_for(counts: list[int]) -> Tensor:
    return torch.cat([torch.full((n,), c) for c, n in enumerate(counts)])


def features_around(means: Tensor, labels: Tensor, noise: float, seed: int = 1) -> Tensor:
    g = torch.Generator().manual_seed(seed)
    return means[labels] + noise * torch.randn(len(labels), means.shape[1], generator=g, dtype=F64)


def squeeze(means: Tensor, classes: list[int], factor: float) -> Tensor:
    """Pull the rows ``classes`` toward their common mean (minority collapse of those classes)."""
    out = means.clone()
    centre = means[classes].mean(0)
    out[classes] = centre + factor * (means[classes] - centre)
    return out


# ------------------------------------------------------------------------------------------
# Slow reference: explicit per-class covariance matrices, loops over pairs (numpy).
# ------------------------------------------------------------------------------------------


def slow_reference(
    features: Tensor,
    labels: Tensor,
    k: int,
    w: Tensor | None,
    global_mean: str,
    within: str,
    center_w: bool,
) -> dict[str, Any]:
    x, y = features.numpy(), labels.numpy()
    present = [c for c in range(k) if (y == c).any()]
    mus = {c: x[y == c].mean(0) for c in present}
    covs = {}
    for c in present:
        rows = x[y == c]
        cov = np.zeros((x.shape[1], x.shape[1]))
        for h in rows:
            cov += np.outer(h - mus[c], h - mus[c])
        covs[c] = cov / len(rows)
    n = {c: int((y == c).sum()) for c in present}
    mu_g = np.mean([mus[c] for c in present], 0) if global_mean == "class" else x.mean(0)
    if within == "sample":
        sw = sum(n[c] * covs[c] for c in present) / len(x)
        st = sum(np.outer(h - mu_g, h - mu_g) for h in x) / len(x)
    else:
        sw = sum(covs[c] for c in present) / len(present)
        st = sum(
            sum(np.outer(h - mu_g, h - mu_g) for h in x[y == c]) / n[c] for c in present
        ) / len(present)
    sb = sum(np.outer(mus[c] - mu_g, mus[c] - mu_g) for c in present) / len(present)
    kp = len(present)
    centred = np.stack([mus[c] - mu_g for c in present])

    def geometry(v: np.ndarray) -> tuple[float, float, float]:
        norms = np.linalg.norm(v, axis=1)
        cos = [
            v[i] @ v[j] / (norms[i] * norms[j])
            for i in range(len(v))
            for j in range(len(v))
            if i < j
        ]
        return (
            float(np.std(norms) / np.mean(norms)),
            float(np.std(cos)),
            float(np.mean([abs(c + 1 / (len(v) - 1)) for c in cos])),
        )

    ref: dict[str, Any] = {
        "nc1": float(np.trace(sw @ np.linalg.pinv(sb, rcond=1e-10, hermitian=True)) / kp),
        "trace_sw": float(np.trace(sw)),
        "trace_sb": float(np.trace(sb)),
        "trace_st": float(np.trace(st)),
    }
    ref["equinorm_means"], ref["equiangular_means"], ref["maxangle_means"] = geometry(centred)
    if w is not None:
        wn = w.numpy()
        wc = wn - wn.mean(0) if center_w else wn
        ref["equinorm_w"], ref["equiangular_w"], ref["maxangle_w"] = geometry(wc)
        wp = wn[present]
        ref["self_duality"] = float(
            np.linalg.norm(wp / np.linalg.norm(wp) - centred / np.linalg.norm(centred))
        )
    return ref


def slow_balance(w: Tensor, printed: bool = False) -> tuple[float, float, float]:
    """ARB Eq. 19 over ordered pairs; ``printed=True`` keeps the paper's 1/(c-1)^2 factors."""
    wn = w.numpy()
    c = len(wn)
    norms = np.linalg.norm(wn, axis=1)
    pairs = [(i, j) for i in range(c) for j in range(c) if i != j]
    dots = np.array([wn[i] @ wn[j] for i, j in pairs])
    coss = np.array([wn[i] @ wn[j] / (norms[i] * norms[j]) for i, j in pairs])
    scale = 1 / (c - 1) ** 2 if printed else 1 / (c * (c - 1))

    def b(values: np.ndarray) -> float:
        return float(np.sqrt(scale * ((values - scale * values.sum()) ** 2).sum()))

    return b(dots), b(coss), float(np.sqrt(((norms - norms.mean()) ** 2).mean()))


# ------------------------------------------------------------------------------------------
# Constructed geometries.
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("within", ["sample", "class"])
def test_collapsed_simplex_etf_is_perfect(within: str) -> None:
    v = simplex_etf(K, D)
    labels = labels_for(lt_counts())
    feats = features_around(3.0 * v, labels, noise=0.0)  # zero within-class scatter
    out = collapse_metrics(feats, labels, K, v, class_counts=lt_counts(), within=within)
    assert out["global_mean"] == "class" and out["within"] == within and out["center_w"] is True
    assert out["present_classes"] == K and out["absent_classes"] == []
    assert out["nc1"] == pytest.approx(0.0, abs=1e-9)
    for key in ("equinorm_means", "equiangular_means", "maxangle_means", "equinorm_w",
                "equiangular_w", "maxangle_w", "self_duality", "B_D", "B_A", "B_L"):  # fmt: skip
        assert out[key] == pytest.approx(0.0, abs=1e-9), key
    assert out["trace_sw"] == pytest.approx(0.0, abs=1e-9)
    assert out["trace_sb"] == pytest.approx(9.0 * 1.0)  # ||3 v_k||^2 averaged over classes
    assert out["mean_norms"] == pytest.approx([3.0] * K)
    assert out["w_norms"] == pytest.approx([1.0] * K)
    for name in ("many", "medium", "few"):
        group = out["groups"][name]
        assert group["nc1"] == pytest.approx(0.0, abs=1e-9)
        assert group["angle_w"] == pytest.approx(ETF_ANGLE)
        assert group["angle_means"] == pytest.approx(ETF_ANGLE)
    logits = feats @ v.T
    assert nc4(feats, logits, 3.0 * v) == 1.0
    acc = NC4Accumulator(3.0 * v)
    acc.update(feats[::2], logits[::2])
    acc.update(feats[1::2], logits[1::2].argmax(1))
    assert acc.compute() == 1.0


def test_tiny_noise_keeps_collapse_metrics_near_zero() -> None:
    v = simplex_etf(K, D)
    labels = labels_for(lt_counts())
    out = collapse_metrics(features_around(5 * v, labels, 1e-4), labels, K, v)
    assert 0 < out["nc1"] < 1e-6
    assert out["equiangular_means"] < 1e-3 and out["self_duality"] < 1e-3


def test_sample_global_mean_breaks_the_etf_of_imbalanced_means() -> None:
    """With imbalance, means on an ETF are an ETF about mu_C only (ERRATA: global mean)."""
    v = simplex_etf(K, D)
    labels = labels_for(lt_counts())
    feats = features_around(v, labels, 0.0)
    by_class = collapse_metrics(feats, labels, K, v, global_mean="class")
    by_sample = collapse_metrics(feats, labels, K, v, global_mean="sample")
    assert by_sample["global_mean"] == "sample"
    assert by_class["equiangular_means"] < 1e-9 < 0.05 < by_sample["equiangular_means"]
    assert by_sample["self_duality"] > 0.05
    assert by_sample["nc1"] == pytest.approx(0.0, abs=1e-9)  # NC1 does not depend on it here


def test_minority_collapse_is_clearly_worse() -> None:
    v = simplex_etf(K, D)
    counts = lt_counts()
    labels = labels_for(counts)
    few = [7, 8, 9]
    squeezed = squeeze(v, few, 0.05)
    etf = collapse_metrics(features_around(v, labels, 0.05), labels, K, v, class_counts=counts)
    bad = collapse_metrics(
        features_around(squeezed, labels, 0.05), labels, K, squeezed, class_counts=counts
    )
    assert [len(x) for x in (counts[:4], counts[4:7], counts[7:])] == [4, 3, 3]
    assert all(c < 20 for c in counts[7:]) and all(20 <= c <= 100 for c in counts[4:7])
    assert bad["nc1"] > 5 * etf["nc1"]
    for key in ("equinorm_means", "equiangular_means", "maxangle_means",
                "equinorm_w", "equiangular_w", "maxangle_w", "B_D", "B_A", "B_L"):  # fmt: skip
        assert bad[key] > etf[key] + 0.05, key
    assert bad["groups"]["few"]["angle_w"] < 10 < 90 < etf["groups"]["few"]["angle_w"]
    assert bad["groups"]["few"]["angle_means"] < 30
    assert bad["groups"]["many"]["angle_w"] > 90
    assert bad["groups"]["few"]["nc1"] > 100 * etf["groups"]["few"]["nc1"]
    # A classifier repaired to the ETF while the few means stay squeezed: NC3 fails (AllNC).
    fixed_w = collapse_metrics(features_around(squeezed, labels, 0.05), labels, K, v)
    assert etf["self_duality"] < 0.05 < 0.15 < fixed_w["self_duality"]


def test_random_features_give_positive_values() -> None:
    g = torch.Generator().manual_seed(3)
    labels = labels_for(lt_counts())
    feats = torch.randn(len(labels), D, generator=g, dtype=F64)
    w = torch.randn(K, D, generator=g, dtype=F64)
    out = collapse_metrics(feats, labels, K, w, class_counts=lt_counts())
    for key in ("nc1", "equinorm_means", "equiangular_means", "maxangle_means", "equinorm_w",
                "equiangular_w", "maxangle_w", "self_duality", "B_D", "B_A", "B_L",
                "trace_sw", "trace_sb"):  # fmt: skip
        assert out[key] > 0.01, key
    assert out["nc1"] > 1.0
    assert (
        0.0
        <= nc4(feats, feats @ w.T, torch.stack([feats[labels == c].mean(0) for c in range(K)]))
        < 1
    )


# ------------------------------------------------------------------------------------------
# Against the slow reference; options.
# ------------------------------------------------------------------------------------------


def _random_problem(k: int, d: int, counts: list[int], seed: int) -> tuple[Tensor, Tensor, Tensor]:
    g = torch.Generator().manual_seed(seed)
    labels = labels_for(counts)
    means = 2.0 * torch.randn(k, d, generator=g, dtype=F64)
    scales = 0.3 + torch.rand(k, 1, generator=g, dtype=F64)  # classes with different spreads
    feats = means[labels] + scales[labels] * torch.randn(len(labels), d, generator=g, dtype=F64)
    w = torch.randn(k, d, generator=g, dtype=F64) + 0.5  # an offset, so centering matters
    return feats, labels, w


@pytest.mark.parametrize("global_mean", ["class", "sample"])
@pytest.mark.parametrize("within", ["sample", "class"])
@pytest.mark.parametrize("center_w", [True, False])
def test_matches_slow_reference(global_mean: str, within: str, center_w: bool) -> None:
    counts = [60, 35, 20, 12, 7, 3]
    feats, labels, w = _random_problem(6, 5, counts, seed=4)
    out = collapse_metrics(
        feats, labels, 6, w, global_mean=global_mean, within=within, center_w=center_w
    )
    ref = slow_reference(feats, labels, 6, w, global_mean, within, center_w)
    for key, value in ref.items():
        assert out[key] == pytest.approx(value, rel=1e-9, abs=1e-12), key
    assert (out["global_mean"], out["within"], out["center_w"]) == (global_mean, within, center_w)


def test_options_change_the_values_under_imbalance() -> None:
    feats, labels, w = _random_problem(6, 5, [60, 35, 20, 12, 7, 3], seed=5)
    a = collapse_metrics(feats, labels, 6, w)
    b = collapse_metrics(feats, labels, 6, w, within="class")
    c = collapse_metrics(feats, labels, 6, w, global_mean="sample")
    d = collapse_metrics(feats, labels, 6, w, center_w=False)
    assert (
        abs(a["nc1"] - b["nc1"]) > 1e-3
        and abs(a["equiangular_means"] - c["equiangular_means"]) > 1e-3
    )
    assert abs(a["equiangular_w"] - d["equiangular_w"]) > 1e-3


def test_group_nc1_is_nc1_of_the_group_alone() -> None:
    counts = [150, 130, 110, 60, 40, 25, 15, 9, 4]
    feats, labels, w = _random_problem(9, 6, counts, seed=6)
    out = collapse_metrics(feats, labels, 9, w, class_counts=counts)
    groups = {"many": [0, 1, 2], "medium": [3, 4, 5], "few": [6, 7, 8]}
    for name, classes in groups.items():
        mask = torch.isin(labels, torch.tensor(classes))
        relabel = labels[mask] - classes[0]
        ref = slow_reference(feats[mask], relabel, 3, None, "class", "sample", True)
        assert out["groups"][name]["nc1"] == pytest.approx(ref["nc1"], rel=1e-9), name
        assert out["groups"][name]["num_classes"] == out["groups"][name]["present"] == 3
        wc = (w - w.mean(0))[classes]
        angles = [
            math.degrees(math.acos(float(wc[i] @ wc[j] / (wc[i].norm() * wc[j].norm()))))
            for i in range(3)
            for j in range(i + 1, 3)
        ]
        assert out["groups"][name]["angle_w"] == pytest.approx(sum(angles) / 3)
    within_class = collapse_metrics(feats, labels, 9, w, class_counts=counts, within="class")
    mask = labels >= 6
    ref = slow_reference(feats[mask], labels[mask] - 6, 3, None, "class", "class", True)
    assert within_class["groups"]["few"]["nc1"] == pytest.approx(ref["nc1"], rel=1e-9)


def test_more_classes_than_dimensions() -> None:
    counts = [30] * 5 + [12] * 10 + [4] * 5
    feats, labels, w = _random_problem(20, 8, counts, seed=7)
    for within in ("sample", "class"):
        out = collapse_metrics(feats, labels, 20, w, within=within)
        assert math.isfinite(out["nc1"]) and out["nc1"] > 0
        ref = slow_reference(feats, labels, 20, w, "class", within, True)
        assert out["nc1"] == pytest.approx(ref["nc1"], rel=1e-8)
        assert out["maxangle_w"] == pytest.approx(ref["maxangle_w"], rel=1e-9)


def test_absent_classes_are_excluded_and_recorded() -> None:
    counts = [40, 30, 0, 20, 10, 0, 8]
    feats, labels, w = _random_problem(7, 5, counts, seed=8)
    out = collapse_metrics(feats, labels, 7, w)
    assert out["present_classes"] == 5 and out["absent_classes"] == [2, 5]
    assert out["mean_norms"][2] is None and out["within_var"][5] is None
    assert len(out["w_norms"]) == 7  # the classifier keeps all its rows
    ref = slow_reference(feats, labels, 7, w, "class", "sample", True)
    for key in ("nc1", "equiangular_means", "maxangle_means", "equinorm_means", "self_duality"):
        assert out[key] == pytest.approx(ref[key], rel=1e-9), key
    means = torch.full((7, 5), math.nan, dtype=F64)
    for c in (0, 1, 3, 4, 6):
        means[c] = feats[labels == c].mean(0)
    near = torch.cdist(feats, torch.nan_to_num(means, nan=1e9)).argmin(1)
    assert nc4(feats, near, means) == 1.0  # NaN rows are never the nearest


# ------------------------------------------------------------------------------------------
# ARB balance metrics (corrected Eq. 19).
# ------------------------------------------------------------------------------------------


def test_balance_metrics_corrected_form() -> None:
    v = simplex_etf(K, D)
    assert balance_metrics(v) == pytest.approx((0.0, 0.0, 0.0), abs=1e-12)
    assert slow_balance(v, printed=True)[0] > 1e-3  # Eq. 19 as printed is not 0 on an ETF
    w = torch.randn(K, D, generator=torch.Generator().manual_seed(9), dtype=F64)
    assert balance_metrics(w) == pytest.approx(slow_balance(w), rel=1e-12)
    assert balance_metrics(w)[1] == pytest.approx(equiangularity(w))  # B_A: raw W
    labels = labels_for(lt_counts())
    out = collapse_metrics(features_around(v, labels, 0.1), labels, K, w, center_w=False)
    assert out["B_A"] == pytest.approx(out["equiangular_w"])


# ------------------------------------------------------------------------------------------
# Streaming and ranks.
# ------------------------------------------------------------------------------------------


def _assert_same(a: Any, b: Any, path: str = "") -> None:
    if isinstance(a, dict):
        assert a.keys() == b.keys(), path
        for key in a:
            _assert_same(a[key], b[key], f"{path}.{key}")
    elif isinstance(a, list):
        assert len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            _assert_same(x, y, f"{path}[{i}]")
    elif isinstance(a, float):
        assert a == pytest.approx(b, rel=1e-9, abs=1e-12), path
    else:
        assert a == b, path


@pytest.mark.parametrize("within", ["sample", "class"])
def test_streaming_equals_one_shot(within: str) -> None:
    counts = lt_counts()
    feats, labels, w = _random_problem(K, D, counts, seed=10)
    perm = torch.randperm(len(labels), generator=torch.Generator().manual_seed(0))
    feats32, labels = feats[perm].float(), labels[perm]  # float32 input, as from a network
    acc = CollapseAccumulator(K, D, class_counts=counts)
    bounds = [0, 7, 7, 100, 101, 600, len(labels)]  # uneven, one empty chunk
    for lo, hi in itertools.pairwise(bounds):
        acc.update(feats32[lo:hi], labels[lo:hi])
    one_shot = collapse_metrics(feats32, labels, K, w, class_counts=counts, within=within)
    _assert_same(acc.compute(w, within=within), one_shot)
    means = acc.class_means()
    assert means.dtype == F64 and means.shape == (K, D)
    acc.reset()
    assert acc.counts.sum() == 0 and acc.grams.abs().sum() == 0


def test_all_reduce_sums_states_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """Two identical 'ranks' (all_reduce_sum doubles) equal one process on the data twice."""
    counts = lt_counts()
    feats, labels, w = _random_problem(K, D, counts, seed=11)
    calls = []

    def doubled(t: Tensor) -> Tensor:
        calls.append(t.shape)
        return 2 * t

    twice = collapse_metrics(
        torch.cat([feats, feats]), torch.cat([labels, labels]), K, w,
        class_counts=[2 * c for c in counts], within="class",
    )  # fmt: skip
    monkeypatch.setattr(dist, "all_reduce_sum", doubled)
    acc = CollapseAccumulator(K, D, class_counts=[2 * c for c in counts])
    acc.update(feats, labels)
    _assert_same(acc.compute(w, within="class"), twice)
    assert len(calls) == 1  # one collective for the whole packed state
    acc.all_reduce()
    acc.all_reduce()  # idempotent
    _assert_same(acc.compute(w, within="class"), twice)  # no second reduction
    assert len(calls) == 2
    with pytest.raises(NcltError):
        acc.update(feats, labels)
    nc4_acc = NC4Accumulator(acc.class_means())
    nc4_acc.update(feats, feats @ w.T)
    local = nc4(feats, feats @ w.T, acc.class_means())
    assert nc4_acc.compute() == pytest.approx(local) and len(calls) == 3


def test_within_class_needs_matching_counts() -> None:
    feats, labels, w = _random_problem(4, 3, [10, 8, 6, 4], seed=12)
    acc = CollapseAccumulator(4, 3)
    acc.update(feats, labels)
    with pytest.raises(ConfigError, match="class_counts"):
        acc.compute(w, within="class")
    acc = CollapseAccumulator(4, 3, class_counts=[10, 8, 6, 5])
    acc.update(feats, labels)
    with pytest.raises(ConfigError, match="class 3"):
        acc.compute(w, within="class")
    assert acc.compute(w)["nc1"] > 0  # the sample average needs no counts
    with pytest.raises(ConfigError, match="sample"):
        acc.compute(w, global_mean="samples")
    with pytest.raises(ConfigError):
        acc.compute(torch.zeros(4, 5))


def test_from_loader_one_pass_and_two_passes() -> None:
    counts = lt_counts()
    feats, labels, w = _random_problem(K, D, counts, seed=13)
    logits = feats @ w.T

    def batches() -> Any:
        for lo in range(0, len(labels), 100):
            yield feats[lo : lo + 100].float(), logits[lo : lo + 100].float(), labels[lo : lo + 100]

    expected = collapse_metrics(feats.float(), labels, K, w, class_counts=counts, within="class")
    means = torch.stack([feats.float().double()[labels == c].mean(0) for c in range(K)])
    expected["nc4"] = nc4(feats, logits, means)
    assert 0.0 < expected["nc4"] < 1.0
    for source in (batches(), batches):  # a generator (cached), a callable (two passes)
        out = collapse_metrics_from_loader(
            source, num_classes=K, head_weight=w, class_counts=counts, within="class"
        )
        _assert_same(out, expected)
