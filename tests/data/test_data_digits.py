"""Digits-LT (the embedded default) and the dataset registry."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from nclt.data import DATASETS, DEFAULT_IMBALANCE, dataset_classes, dataset_counts
from nclt.data.digits import DIGITS_N_MAX, DigitsLT, digits_train_counts
from nclt.data.longtail import group_sizes, longtail_counts
from nclt.data.views import build_view
from nclt.errors import ConfigError

DIGITS_IF100 = [104, 62, 37, 22, 13, 8, 4, 2, 1, 1]


def test_digits_split_sizes() -> None:
    counts = digits_train_counts()
    assert sum(counts) == 1078 and min(counts) == DIGITS_N_MAX == 104


def test_digits_lt_is_long_tailed() -> None:
    ds = DigitsLT()
    assert ds.class_counts.tolist() == DIGITS_IF100 == longtail_counts(104, 10, 100)
    assert len(ds) == 254 == len(ds.targets) and ds.num_classes == 10
    assert np.bincount(ds.targets, minlength=10).tolist() == DIGITS_IF100
    assert group_sizes(ds.class_counts) == {"many": 1, "medium": 3, "few": 6}
    x, y = ds[0]
    assert x.dtype == torch.uint8 and x.shape == (1, 8, 8) and y == 0
    assert ds.images.max() == 255 and ds.images.min() == 0
    assert len(ds.mean) == len(ds.std) == 1 and 0.2 < ds.mean[0] < 0.4
    assert ds.classes == [str(i) for i in range(10)]


def test_digits_pixels_follow_the_sklearn_data() -> None:
    from sklearn.datasets import load_digits

    raw = load_digits().images
    scaled = {tuple(np.rint(im * 255 / 16).astype(np.uint8).ravel()) for im in raw}
    ds = DigitsLT(train=False)
    assert all(tuple(im.ravel().tolist()) in scaled for im in ds.images.numpy()[:50])


def test_digits_test_is_balanced() -> None:
    test = DigitsLT(train=False, imbalance=50)
    assert test.class_counts.tolist() == [70] * 10 and len(test) == 700
    train_ids = {tuple(im.ravel().tolist()) for im in DigitsLT(imbalance=1).images.numpy()}
    test_ids = [tuple(im.ravel().tolist()) for im in test.images.numpy()]
    assert sum(t in train_ids for t in test_ids) < 10  # disjoint splits (a few duplicates exist)


def test_digits_deterministic_and_options() -> None:
    a, b = DigitsLT(), DigitsLT()
    assert torch.equal(a.images, b.images) and a.targets == b.targets
    np.testing.assert_array_equal(a.indices, b.indices)
    c = DigitsLT(subset_seed=1)
    assert c.class_counts.tolist() == DIGITS_IF100 and not np.array_equal(c.indices, a.indices)
    assert DigitsLT(imbalance=1).class_counts.tolist() == [104] * 10
    assert DigitsLT(reverse=True).class_counts.tolist() == DIGITS_IF100[::-1]
    assert DigitsLT(profile="step", imbalance=10).class_counts.tolist() == [104] * 5 + [10] * 5
    with pytest.raises(ConfigError, match="no image"):
        DigitsLT(imbalance=105)


def test_digits_views() -> None:
    view = build_view("crop_flip", image_size=8, padding=1)
    ds = DigitsLT(views=[view, view])
    (v1, v2), _ = ds[0]
    assert v1.shape == v2.shape == (1, 8, 8) and v1.dtype == torch.uint8
    loader = torch.utils.data.DataLoader(DigitsLT(), batch_size=64)
    x, y = next(iter(loader))
    assert x.shape == (64, 1, 8, 8) and x.dtype == torch.uint8 and y.dtype == torch.long


def test_registry_and_dataset_counts() -> None:
    assert DATASETS.names() == [
        "cifar10", "cifar100", "digits", "imagenet_lt", "inaturalist", "places_lt",
    ]  # fmt: skip
    ds = DATASETS.build("digits", root="ignored", train=True, imbalance=None, download=True,
                        train_list=None, test_list=None)  # fmt: skip
    assert ds.class_counts.tolist() == DIGITS_IF100 and DEFAULT_IMBALANCE["digits"] == 100
    assert dataset_counts("digits", 100) == DIGITS_IF100
    assert dataset_counts("cifar10", 100) == [5000, 2997, 1796, 1077, 645, 387, 232, 139, 83, 50]
    assert sum(dataset_counts("cifar100", 100)) == 10847
    assert dataset_counts("cifar10", 10, "step", reverse=True) == [500] * 5 + [5000] * 5
    assert dataset_classes("cifar100")[:2] == ["apple", "aquarium_fish"]
    assert len(dataset_classes("cifar100")) == 100 and dataset_classes("imagenet_lt") is None
    with pytest.raises(ConfigError, match="cifar10"):
        DATASETS.build("cifar_10")
    with pytest.raises(ConfigError, match="needs root"):
        DATASETS.build("cifar10")
    with pytest.raises(ConfigError, match="does not take 'split_file'"):
        DATASETS.build("digits", split_file="x.txt")
    with pytest.raises(ConfigError, match="has 10 classes"):
        DATASETS.build("digits", num_classes=100)
    with pytest.raises(ConfigError, match="imbalance"):
        dataset_counts("cifar10", 0.01)
