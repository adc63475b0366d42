"""Class-aware samplers (frequencies, determinism, rank shares)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from nclt.data.samplers import (
    ClassAwareSampler,
    ShuffleSampler,
    build_sampler,
    power_probs,
)
from nclt.errors import ConfigError

COUNTS = [900, 90, 9, 1]


def _targets() -> np.ndarray:
    return np.random.default_rng(0).permutation(np.repeat(np.arange(4), COUNTS))


def _class_freq(sampler, targets: np.ndarray) -> np.ndarray:
    drawn = np.fromiter(iter(sampler), dtype=np.int64)
    return np.bincount(targets[drawn], minlength=4) / len(drawn)


def test_class_balanced_is_uniform_over_classes() -> None:
    targets = _targets()
    s = build_sampler("class_balanced", targets, num_samples=40000, seed=0)
    assert len(s) == 40000
    np.testing.assert_allclose(_class_freq(s, targets), 0.25, atol=0.01)


def test_default_epoch_length_is_dataset_length() -> None:
    targets = _targets()
    assert len(build_sampler("class_balanced", targets)) == len(targets)
    assert len(build_sampler("sqrt", targets)) == len(targets)
    assert len(build_sampler("instance", targets)) == len(targets)


def test_sqrt_and_power_frequencies() -> None:
    targets = _targets()
    expected = np.sqrt(COUNTS) / np.sqrt(COUNTS).sum()
    s = build_sampler("sqrt", targets, num_samples=40000, seed=1)
    np.testing.assert_allclose(_class_freq(s, targets), expected, atol=0.01)
    s = build_sampler("power", targets, num_samples=40000, seed=2, q=1.0)
    np.testing.assert_allclose(_class_freq(s, targets), np.array(COUNTS) / 1000, atol=0.01)
    np.testing.assert_allclose(power_probs(COUNTS, 0.0).numpy(), 0.25)
    np.testing.assert_allclose(power_probs([4, 0, 1], 0.0).numpy(), [0.5, 0, 0.5])


def test_images_uniform_within_a_class() -> None:
    targets = _targets()
    s = build_sampler("class_balanced", targets, num_samples=40000, seed=3)
    drawn = np.fromiter(iter(s), dtype=np.int64)
    tail = np.flatnonzero(targets == 2)  # 9 images, ~1111 draws each
    per_image = np.array([(drawn == i).sum() for i in tail])
    assert per_image.min() > 0.8 * per_image.mean() and per_image.max() < 1.2 * per_image.mean()
    assert set(np.unique(drawn[targets[drawn] == 3])) == set(np.flatnonzero(targets == 3))


def test_deterministic_per_seed_and_epoch() -> None:
    targets = _targets()
    for kind in ("instance", "class_balanced", "sqrt"):
        a, b = build_sampler(kind, targets, seed=5), build_sampler(kind, targets, seed=5)
        first = list(a)
        assert first == list(b) == list(a)
        a.set_epoch(1)
        second = list(a)
        assert second != first
        b.set_epoch(1)
        assert list(b) == second
        a.set_epoch(0)
        assert list(a) == first
        assert list(build_sampler(kind, targets, seed=6)) != first


def test_instance_sampler_is_a_permutation() -> None:
    s = build_sampler(None, _targets(), seed=0)
    assert isinstance(s, ShuffleSampler)
    order = list(s)
    assert sorted(order) == list(range(1000)) and order != list(range(1000))


@pytest.mark.parametrize("kind", ["instance", "class_balanced", "sqrt"])
def test_rank_shares_are_disjoint_parts_of_one_draw(kind: str) -> None:
    targets = _targets()[:998]  # not a multiple of 3
    R = 3
    ranks = [build_sampler(kind, targets, seed=7, num_replicas=R, rank=r) for r in range(R)]
    for s in ranks:
        s.set_epoch(4)
    shares = [list(s) for s in ranks]
    assert all(len(sh) == len(ranks[0]) == 333 for sh in shares)
    full = ranks[0].global_draw().tolist()
    assert len(full) == 999
    for r, sh in enumerate(shares):
        assert sh == full[r::R]  # rank r owns positions r, r+R, ...: disjoint positions
    if kind == "instance":
        interleaved = [i for trio in zip(*shares, strict=True) for i in trio]
        assert sorted(set(interleaved)) == list(range(998))  # every image, one padded repeat
    # together the shares are the one-process epoch of the same length
    n = None if kind == "instance" else 999
    single = build_sampler(kind, targets, num_samples=n, seed=7, num_replicas=1, rank=0)
    single.set_epoch(4)
    assert list(single) == (full[:998] if kind == "instance" else full)


def test_sampler_errors() -> None:
    targets = _targets()
    with pytest.raises(ConfigError, match="class_balanced"):
        build_sampler("class_balance", targets)
    with pytest.raises(ConfigError, match="needs q"):
        build_sampler("power", targets)
    with pytest.raises(ConfigError, match="rank"):
        build_sampler("sqrt", targets, num_replicas=2, rank=2)
    with pytest.raises(ConfigError, match="no image"):
        ClassAwareSampler([0, 0, 2], [1, 1, 1])


def test_sampler_in_a_dataloader() -> None:
    targets = _targets()
    data = torch.utils.data.TensorDataset(torch.arange(1000), torch.as_tensor(targets))
    s = build_sampler("class_balanced", targets, num_samples=64, seed=0)
    batches = list(torch.utils.data.DataLoader(data, batch_size=16, sampler=s))
    assert len(batches) == 4 and sum(len(b[0]) for b in batches) == 64
