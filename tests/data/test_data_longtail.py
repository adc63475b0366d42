"""Count profiles, the LDAM-DRW subset selection, groups and the counts table."""

from __future__ import annotations

import itertools
import json
import math

import numpy as np
import pytest
import torch

from nclt.data.longtail import (
    describe_counts,
    export_indices,
    group_of_counts,
    group_sizes,
    indices_checksum,
    longtail_counts,
    longtail_indices,
)
from nclt.errors import ConfigError


def test_cifar10_if100_counts() -> None:
    counts = longtail_counts(5000, 10, 100)
    assert counts == [5000, 2997, 1796, 1077, 645, 387, 232, 139, 83, 50]
    assert sum(counts) == 12406


def test_cifar100_if100_counts() -> None:
    counts = longtail_counts(500, 100, 100)
    assert sum(counts) == 10847
    assert counts[0] == 500 and counts[-1] == 5
    assert counts[69] == 20  # ERRATA: the class that splits the two group rules


def test_exp_formula_and_monotone() -> None:
    for K, IF in [(10, 10), (10, 50), (100, 10), (7, 3.5)]:
        counts = longtail_counts(1000, K, IF)
        assert counts == [int(1000 * (1 / IF) ** (i / (K - 1))) for i in range(K)]
        assert all(a >= b for a, b in itertools.pairwise(counts))
        assert counts[-1] == int(1000 / IF)


def test_step_profile() -> None:
    assert longtail_counts(5000, 10, 100, "step") == [5000] * 5 + [50] * 5
    assert longtail_counts(500, 100, 10, "step") == [500] * 50 + [50] * 50
    # odd K: the middle class is a tail class
    assert longtail_counts(100, 5, 10, "step") == [100, 100, 10, 10, 10]


def test_balanced_and_reverse() -> None:
    assert longtail_counts(5000, 10, 1) == [5000] * 10
    assert longtail_counts(500, 100, 1.0, "step") == [500] * 100
    fwd = longtail_counts(5000, 10, 100)
    assert longtail_counts(5000, 10, 100, reverse=True) == fwd[::-1]
    assert longtail_counts(5000, 10, 100, "step", reverse=True) == [50] * 5 + [5000] * 5


@pytest.mark.parametrize("bad", [0.5, 0.01, 0, -3, math.inf, math.nan, "x"])
def test_bad_imbalance_raises(bad: object) -> None:
    with pytest.raises(ConfigError, match="imbalance"):
        longtail_counts(5000, 10, bad)  # type: ignore[arg-type]


def test_imbalance_below_one_suggests_inverse() -> None:
    with pytest.raises(ConfigError, match="did you mean 100"):
        longtail_counts(5000, 10, 0.01)


def test_imbalance_that_empties_a_class_raises() -> None:
    assert longtail_counts(500, 100, 500)[-1] == 1
    with pytest.raises(ConfigError, match="no image"):
        longtail_counts(500, 100, 501)
    with pytest.raises(ConfigError, match="no image"):
        longtail_counts(500, 10, 1000, "step")


def test_bad_profile_raises() -> None:
    with pytest.raises(ConfigError, match="profile"):
        longtail_counts(5000, 10, 100, "linear")


def _reference_selection(targets: np.ndarray, counts: list[int], seed: int) -> np.ndarray:
    """The LDAM-DRW procedure written out directly (legacy global RNG, seeded once)."""
    np.random.seed(seed)
    kept = []
    for c in np.unique(targets):
        idx = np.where(targets == c)[0]
        np.random.shuffle(idx)
        kept.append(idx[: counts[c]])
    return np.concatenate(kept)


def test_indices_match_legacy_procedure_and_leave_rng_alone() -> None:
    rng = np.random.default_rng(1)
    targets = rng.permutation(np.repeat(np.arange(10), 300))
    counts = longtail_counts(300, 10, 30)
    np.random.seed(12345)
    before = np.random.get_state()
    ours = longtail_indices(targets, counts, seed=0)
    after = np.random.get_state()
    assert before[0] == after[0] and np.array_equal(before[1], after[1])
    assert before[2:] == after[2:]

    expected = _reference_selection(targets, counts, 0)
    assert ours.dtype == np.int64
    np.testing.assert_array_equal(ours, expected)
    # grouped by class in label order, with the requested counts
    np.testing.assert_array_equal(np.bincount(targets[ours]), counts)
    assert (np.diff(targets[ours]) >= 0).all()
    # another seed, another subset; same seed, same subset
    assert not np.array_equal(longtail_indices(targets, counts, seed=1), ours)
    np.testing.assert_array_equal(longtail_indices(list(targets), counts, 0), ours)
    np.testing.assert_array_equal(longtail_indices(torch.from_numpy(targets), counts, 0), ours)


def test_indices_too_few_images_raise() -> None:
    targets = np.repeat(np.arange(3), 5)
    with pytest.raises(ConfigError, match="class 0 has 5"):
        longtail_indices(targets, [6, 1, 1])


def test_checksum_and_export(tmp_path) -> None:
    idx = np.array([3, 1, 2], dtype=np.int64)
    assert indices_checksum(idx) == indices_checksum([3, 1, 2])
    assert indices_checksum(idx) != indices_checksum([1, 2, 3])
    import hashlib

    assert indices_checksum(idx) == hashlib.sha256(idx.astype("<i8").tobytes()).hexdigest()
    meta = {"dataset": "toy", "imbalance": 2.0, "profile": "exp", "seed": 0, "counts": [2, 1]}
    rec = export_indices(tmp_path / "s.json", idx, meta)
    loaded = json.loads((tmp_path / "s.json").read_text())
    assert loaded == rec
    assert loaded["indices"] == [3, 1, 2] and loaded["checksum"] == indices_checksum(idx)
    assert {"indices", "counts", "checksum", "dataset", "imbalance", "profile", "seed"} <= set(
        loaded
    )
    with pytest.raises(ConfigError, match="lacks"):
        export_indices(tmp_path / "t.json", idx, {"dataset": "toy"})


def test_groups_default_and_allnc() -> None:
    counts = [500, 101, 100, 20, 19, 21, 1]
    assert group_of_counts(counts) == ["many", "many", "medium", "medium", "few", "medium", "few"]
    assert group_of_counts(counts, "allnc") == [
        "many", "many", "medium", "few", "few", "medium", "few",
    ]  # fmt: skip
    c100 = longtail_counts(500, 100, 100)
    assert group_sizes(c100) == {"many": 35, "medium": 35, "few": 30}
    assert group_sizes(c100, "allnc") == {"many": 35, "medium": 34, "few": 31}
    assert group_of_counts(torch.tensor(c100)) == group_of_counts(c100)
    with pytest.raises(ConfigError):
        group_of_counts(counts, "oltr")


def test_cifar10_has_no_few_class() -> None:
    for IF in (10, 50, 100, 200):
        assert group_sizes(longtail_counts(5000, 10, IF))["few"] is None
    assert group_sizes(longtail_counts(5000, 10, 100)) == {"many": 8, "medium": 2, "few": None}


def test_describe_counts_table() -> None:
    counts = longtail_counts(5000, 10, 100)
    text = describe_counts(counts, classes=[f"c{i}" for i in range(10)], title="T")
    lines = text.splitlines()
    assert lines[0] == "T"
    assert "12406" in text and "few: -" in text and "many: 8" in text and "medium: 2" in text
    row = next(line for line in lines if line.split()[:2] == ["9", "c9"])
    assert row.split()[2:] == ["50", "medium"]
    assert "imbalance (max/min): 100" in text
