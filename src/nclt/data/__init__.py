"""Datasets, long-tailed profiles, samplers and views.

``DATASETS`` maps a name to a builder. Every builder takes the same keywords::

    DATASETS.build(name, root=..., train=True, imbalance=None, profile="exp", reverse=False,
                   subset_seed=0, views=None, download=False, **extra)

and returns a dataset that keeps the contract of docs/ARCHITECTURE.md (``num_classes``,
``class_counts``, ``targets``, ``classes``, ``mean``, ``std``; ``__getitem__ -> (x, label)``).
Arguments that do not apply are ignored (``download`` for digits; ``imbalance``, ``profile``,
``reverse`` and ``subset_seed`` for the list-file datasets, which are long-tailed by their
split files). ``imbalance=None`` means the dataset's default, ``DEFAULT_IMBALANCE`` (100 for
CIFAR and digits). ``extra`` may hold ``split_file`` (the list of the requested split),
``train_list`` / ``test_list`` and ``strip_leading_slash`` (list-file datasets) and
``num_classes`` (checked against the dataset's); any other key, or one of these set (not None
or False) for a dataset that does not use it, is a ConfigError.

=============== ==================================================== =======================
name            dataset                                              default split files
=============== ==================================================== =======================
``digits``      scikit-learn digits, long-tailed (embedded, no file)  -
``cifar10``     CIFAR-10(-LT)                                         cifar-10-batches-py/
``cifar100``    CIFAR-100(-LT)                                        cifar-100-python/
``imagenet_lt`` ImageNet-LT, 1000 classes                             ImageNet_LT_{train,test}.txt
``places_lt``   Places-LT, 365 classes                                Places_LT_{train,test}.txt
``inaturalist`` iNaturalist 2018, 8142 classes                        {train,val}2018.json or
                                                                      iNaturalist18_{train,val}.txt
=============== ==================================================== =======================

:func:`dataset_counts` gives a profile's training counts without reading any image.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from nclt.data.cifar import CIFARLT, SPECS, TRAIN_PER_CLASS
from nclt.data.digits import DIGITS_CLASSES, DIGITS_IMBALANCE, DigitsLT, digits_counts
from nclt.data.listfile import ListFileDataset, parse_split, resolve_split_file
from nclt.data.longtail import (
    describe_counts,
    group_of_counts,
    group_sizes,
    longtail_counts,
    longtail_indices,
)
from nclt.data.samplers import build_sampler
from nclt.data.views import (
    BATCH_VIEWS,
    BatchCropFlip,
    BatchRandAugment,
    MultiView,
    batch_mix,
    build_batch_view,
    build_view,
)
from nclt.errors import ConfigError, DataError, closest
from nclt.registry import Registry

DATASETS: Registry[Any] = Registry("dataset")

DEFAULT_IMBALANCE = {"digits": DIGITS_IMBALANCE, "cifar10": 100.0, "cifar100": 100.0}

# name -> (num_classes, candidate train lists, candidate test lists), relative to the root
LIST_DATASETS: dict[str, tuple[int, tuple[str, ...], tuple[str, ...]]] = {
    "imagenet_lt": (1000, ("ImageNet_LT_train.txt",), ("ImageNet_LT_test.txt",)),
    "places_lt": (365, ("Places_LT_train.txt",), ("Places_LT_test.txt",)),
    "inaturalist": (
        8142,
        ("train2018.json", "iNaturalist18_train.txt"),
        ("val2018.json", "iNaturalist18_val.txt"),
    ),
}

_EXTRA = ("split_file", "train_list", "test_list", "num_classes", "strip_leading_slash")


def _check_extra(name: str, kw: dict[str, Any], accepted: Sequence[str]) -> None:
    for key, value in kw.items():
        if key not in _EXTRA:
            raise ConfigError(
                f"dataset {name!r} got an unknown argument {key!r}.{closest(key, _EXTRA)} "
                f"Extra arguments: {', '.join(_EXTRA)}"
            )
        if key not in accepted and value is not None and value is not False:
            raise ConfigError(f"dataset {name!r} does not take {key!r}")


def _imbalance(name: str, imbalance: float | None) -> float:
    return DEFAULT_IMBALANCE[name] if imbalance is None else float(imbalance)


@DATASETS.register("digits")
def build_digits(
    root: str | os.PathLike[str] | None = None,
    train: bool = True,
    imbalance: float | None = None,
    profile: str = "exp",
    reverse: bool = False,
    subset_seed: int = 0,
    views: Any = None,
    download: bool = False,
    **kw: Any,
) -> DigitsLT:
    """Digits-LT (:class:`nclt.data.digits.DigitsLT`); ``root`` and ``download`` are unused."""
    _check_extra("digits", kw, ("num_classes",))
    _check_num_classes("digits", kw.get("num_classes"), 10)
    return DigitsLT(train, _imbalance("digits", imbalance), profile, reverse, subset_seed, views)


def _check_num_classes(name: str, given: int | None, actual: int) -> None:
    if given is not None and int(given) != actual:
        raise ConfigError(f"dataset {name!r} has {actual} classes, not {given}")


def _cifar_builder(name: str, num_classes: int) -> Any:
    def build(
        root: str | os.PathLike[str] | None = None,
        train: bool = True,
        imbalance: float | None = None,
        profile: str = "exp",
        reverse: bool = False,
        subset_seed: int = 0,
        views: Any = None,
        download: bool = False,
        **kw: Any,
    ) -> CIFARLT:
        _check_extra(name, kw, ("num_classes",))
        _check_num_classes(name, kw.get("num_classes"), num_classes)
        if root is None:
            raise ConfigError(
                f"dataset {name!r} needs root (the directory holding {SPECS[num_classes].folder})"
            )
        return CIFARLT(
            root,
            train=train,
            num_classes=num_classes,
            imbalance=_imbalance(name, imbalance),
            profile=profile,
            reverse=reverse,
            subset_seed=subset_seed,
            views=views,
            download=download,
        )

    build.__name__ = f"build_{name}"
    build.__doc__ = f"{SPECS[num_classes].name}(-LT) (:class:`nclt.data.cifar.CIFARLT`)."
    return build


build_cifar10 = DATASETS.register("cifar10")(_cifar_builder("cifar10", 10))
build_cifar100 = DATASETS.register("cifar100")(_cifar_builder("cifar100", 100))


def _find_list(name: str, root: Path, train: bool, kw: dict[str, Any]) -> Path:
    """The split file of a list-file dataset: ``split_file``, else train/test_list, else default."""
    chosen = kw.get("split_file") or kw.get("train_list" if train else "test_list")
    if chosen:
        return resolve_split_file(root, chosen)
    _, train_names, test_names = LIST_DATASETS[name]
    candidates = train_names if train else test_names
    for candidate in candidates:
        if (root / candidate).is_file():
            return root / candidate
    raise DataError(
        f"no {'training' if train else 'test'} list for {name!r} under {root}: looked for "
        f"{', '.join(candidates)}; pass split_file= (or train_list= / test_list=)"
    )


def _list_builder(name: str) -> Any:
    num_classes = LIST_DATASETS[name][0]

    def build(
        root: str | os.PathLike[str] | None = None,
        train: bool = True,
        imbalance: float | None = None,
        profile: str = "exp",
        reverse: bool = False,
        subset_seed: int = 0,
        views: Any = None,
        download: bool = False,
        **kw: Any,
    ) -> ListFileDataset:
        _check_extra(name, kw, _EXTRA)
        if root is None:
            raise ConfigError(f"dataset {name!r} needs root (the image root of its split files)")
        root_path = Path(root).expanduser()
        split = _find_list(name, root_path, train, kw)
        return ListFileDataset(
            root_path,
            split,
            views=views,
            num_classes=kw.get("num_classes") or num_classes,
            strip_leading_slash=bool(kw.get("strip_leading_slash")),
        )

    build.__name__ = f"build_{name}"
    build.__doc__ = f"{name} from its split file (:class:`nclt.data.listfile.ListFileDataset`)."
    return build


for _name in LIST_DATASETS:
    DATASETS.register(_name)(_list_builder(_name))


def dataset_counts(
    name: str,
    imbalance: float | None = None,
    profile: str = "exp",
    reverse: bool = False,
    split_file: str | os.PathLike[str] | None = None,
    root: str | os.PathLike[str] = ".",
) -> list[int]:
    """Training images per class of a dataset's profile, without reading any image.

    CIFAR-10: 5000 per class before the profile, CIFAR-100: 500, digits: ``n_max = 104``, the
    smallest class of its stratified training part (from scikit-learn's bundled data). ImageNet-LT,
    Places-LT and iNaturalist are long-tailed by their split files: their counts come from
    ``split_file`` (``imbalance``/``profile``/``reverse`` do not apply).

    Args:
        name: a registered dataset name.
        imbalance: ``IF`` (None: the dataset's default, see ``DEFAULT_IMBALANCE``).
        profile: ``"exp"`` or ``"step"``.
        reverse: reverse the class order.
        split_file: list file of a list-file dataset.
        root: where a relative ``split_file`` is also looked for.

    Returns:
        Per-class counts, ``(C,)``.
    """
    DATASETS.get(name)  # unknown names: ConfigError with a suggestion
    if name == "digits":
        return digits_counts(_imbalance(name, imbalance), profile, reverse)
    if name in ("cifar10", "cifar100"):
        K = 10 if name == "cifar10" else 100
        return longtail_counts(TRAIN_PER_CLASS[K], K, _imbalance(name, imbalance), profile, reverse)
    if split_file is None:
        raise ConfigError(
            f"the counts of {name!r} come from its split file (it is long-tailed by its list, "
            "not by a profile): pass split_file"
        )
    labels = parse_split(root, split_file, strict=False, strip_leading_slash=True).labels
    K = LIST_DATASETS[name][0]
    return np.bincount(np.asarray(labels, dtype=np.int64), minlength=K).tolist()


def dataset_classes(name: str) -> list[str] | None:
    """Class names known without files (digits, CIFAR), else None."""
    if name == "digits":
        return list(DIGITS_CLASSES)
    if name in ("cifar10", "cifar100"):
        return list(SPECS[10 if name == "cifar10" else 100].classes)
    DATASETS.get(name)
    return None


__all__ = [
    "BATCH_VIEWS",
    "CIFARLT",
    "DATASETS",
    "DEFAULT_IMBALANCE",
    "BatchCropFlip",
    "BatchRandAugment",
    "DigitsLT",
    "ListFileDataset",
    "MultiView",
    "batch_mix",
    "build_batch_view",
    "build_sampler",
    "build_view",
    "dataset_classes",
    "dataset_counts",
    "describe_counts",
    "group_of_counts",
    "group_sizes",
    "longtail_counts",
    "longtail_indices",
]
