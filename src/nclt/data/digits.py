"""Digits-LT: the embedded default dataset, built from scikit-learn's bundled ``load_digits``.

1,797 grey 8x8 images of the digits 0-9 (values 0..16) ship inside scikit-learn, so this
dataset needs no download and no file: it is what tests, examples and ``nclt`` smoke runs use.

Construction (fixed, deterministic):

1. ``train_test_split(test_size=0.4, stratify=y, random_state=0)``: 1,078 training images
   (104..110 per class) and 719 test images (70..73 per class). 0.4 rather than 0.5 so that
   the smallest training class has ``n_max = 104 >= 100`` images: IF = 100, the CIFAR-LT
   default, is then valid here too.
2. Test: the first 70 images of each class in split order (70 = the smallest class), so the
   test set is exactly balanced: 700 images.
3. Training: the long-tailed subset of the stratified training part, chosen by
   :func:`nclt.data.longtail.longtail_indices` with the exp profile, ``n_max = 104`` (the
   smallest training class, so every profile and ``reverse`` fit) and, by default,
   ``IF = 100``: ``[104, 62, 37, 22, 13, 8, 4, 2, 1, 1]`` = 254 images. IF can go up to 104.

Why IF = 100: a small CNN (two 3x3 conv layers, 16 and 32 channels, max-pool, linear) trained
with plain cross-entropy (SGD 0.05, momentum 0.9, 60 epochs, batch 32, two seeds) reaches
98.7% mean per-class test accuracy on the 1,040 images of IF = 1, 90% at IF = 20 (classes 8
and 9 at 65-74%), 81-83% at IF = 50 (class 9 at 8-11%) and 74-76% at IF = 100, where classes
8 and 9 fall to 11-29% while classes 0-2 stay at 94-100%. The tail visibly suffers and
long-tailed methods have room to help. No class has more than 104 training images, so the
default many / medium / few rule gives 1 / 3 / 6 classes at IF = 100.

Images are uint8 ``(1, 8, 8)``: ``round(value * 255 / 16)``, the same uint8 contract as the
RGB datasets (one channel); ``mean``/``std`` are 1-tuples computed on the whole stratified
training part (1,078 images) in [0, 1].
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from nclt.data.longtail import longtail_counts, longtail_indices
from nclt.data.views import View, apply_views, check_views

DIGITS_N_MAX = 104  # the smallest class of the stratified training part (tested)
DIGITS_IMBALANCE = 100.0
DIGITS_TEST_SIZE = 0.4
DIGITS_CLASSES = [str(d) for d in range(10)]


@functools.lru_cache(maxsize=1)
def _split() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(train images, train labels, test images, test labels) before the long-tailed subset.

    Images are uint8 ``(N, 1, 8, 8)``; the arrays are read-only (shared by the cache).
    """
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    images = np.rint(digits.images * (255.0 / 16.0)).astype(np.uint8)[:, None]
    labels = digits.target.astype(np.int64)
    order = np.arange(len(labels))
    train_idx, test_idx = train_test_split(
        order, test_size=DIGITS_TEST_SIZE, stratify=labels, random_state=0
    )
    test_labels = labels[test_idx]
    per_class = np.bincount(test_labels).min()
    balanced = np.concatenate([np.flatnonzero(test_labels == c)[:per_class] for c in range(10)])
    balanced.sort()  # keep split order
    test_idx = test_idx[balanced]
    out = (images[train_idx], labels[train_idx], images[test_idx], labels[test_idx])
    for a in out:
        a.setflags(write=False)
    return out


def digits_train_counts() -> list[int]:
    """Per-class counts of the full stratified training part (before the long tail)."""
    return np.bincount(_split()[1], minlength=10).tolist()


def digits_counts(
    imbalance: float = DIGITS_IMBALANCE, profile: str = "exp", reverse: bool = False
) -> list[int]:
    """Training images per class of Digits-LT for a profile (no dataset object needed).

    ``n_max`` is the smallest class of the stratified training part (104).
    """
    return longtail_counts(min(digits_train_counts()), 10, imbalance, profile, reverse)


class DigitsLT(Dataset):
    """scikit-learn's digits, long-tailed training split and balanced test split.

    Args:
        train: the long-tailed training split, or the balanced test split (700 images).
        imbalance: ``IF = n_max / n_min`` of the training split (default 100, at most 104;
            1 keeps 104 per class).
        profile: ``"exp"`` or ``"step"``.
        reverse: reverse the class order of the counts.
        subset_seed: seed of the subset selection (:func:`longtail_indices`).
        views: None, a view, or a list of views (see :mod:`nclt.data.views`).

    Attributes:
        num_classes, class_counts, targets, classes, mean, std, indices, images, views: as
        :class:`nclt.data.cifar.CIFARLT`; ``indices`` index the stratified training part.
    """

    def __init__(
        self,
        train: bool = True,
        imbalance: float = DIGITS_IMBALANCE,
        profile: str = "exp",
        reverse: bool = False,
        subset_seed: int = 0,
        views: View | Sequence[View] | None = None,
    ) -> None:
        self.views = check_views(views)
        train_images, train_labels, test_images, test_labels = _split()
        if train:
            counts = digits_counts(imbalance, profile, reverse)
            indices = longtail_indices(train_labels, counts, subset_seed)
            images, labels = train_images[indices], train_labels[indices]
        else:
            indices = np.arange(len(test_labels), dtype=np.int64)
            images, labels = test_images, test_labels
        pixels = train_images.astype(np.float64) / 255.0
        self.train = train
        self.num_classes = 10
        self.imbalance = float(imbalance) if train else 1.0
        self.profile = profile
        self.reverse = bool(reverse) if train else False
        self.subset_seed = subset_seed
        self.indices = indices
        self.images: Tensor = torch.from_numpy(np.array(images, dtype=np.uint8))
        self.targets: list[int] = labels.tolist()
        self.class_counts = torch.bincount(torch.from_numpy(labels.copy()), minlength=10)
        self.classes = list(DIGITS_CLASSES)
        self.mean = (float(pixels.mean()),)
        self.std = (float(pixels.std()),)

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, i: int) -> tuple[Any, int]:
        return apply_views(self.images[i].clone(), self.views), self.targets[i]
