"""CIFAR-10 / CIFAR-100 and their long-tailed training subsets (CIFAR-LT).

Reads the standard python layout of the official archives::

    ROOT/cifar-10-batches-py/{data_batch_1..5, test_batch, batches.meta}
    ROOT/cifar-100-python/{train, test, meta}            (fine labels)

A whole split lives in memory as one contiguous uint8 tensor ``(N, 3, 32, 32)``; the training
split of CIFAR-LT keeps only the images that LDAM-DRW's selection keeps
(:func:`nclt.data.longtail.longtail_indices`), so nclt trains on the same images as the
papers' code. The test split stays balanced (all 10,000 images).
"""

from __future__ import annotations

import os
import pickle
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from nclt.data.longtail import export_indices, longtail_counts, longtail_indices
from nclt.data.views import View, apply_views, check_views
from nclt.errors import ConfigError, DataError

CIFAR10_CLASSES = [
    "airplane", "automobile", "bird", "cat", "deer",
    "dog", "frog", "horse", "ship", "truck",
]  # fmt: skip

CIFAR100_CLASSES = [
    "apple", "aquarium_fish", "baby", "bear", "beaver", "bed", "bee", "beetle", "bicycle",
    "bottle", "bowl", "boy", "bridge", "bus", "butterfly", "camel", "can", "castle",
    "caterpillar", "cattle", "chair", "chimpanzee", "clock", "cloud", "cockroach", "couch",
    "crab", "crocodile", "cup", "dinosaur", "dolphin", "elephant", "flatfish", "forest", "fox",
    "girl", "hamster", "house", "kangaroo", "keyboard", "lamp", "lawn_mower", "leopard", "lion",
    "lizard", "lobster", "man", "maple_tree", "motorcycle", "mountain", "mouse", "mushroom",
    "oak_tree", "orange", "orchid", "otter", "palm_tree", "pear", "pickup_truck", "pine_tree",
    "plain", "plate", "poppy", "porcupine", "possum", "rabbit", "raccoon", "ray", "road",
    "rocket", "rose", "sea", "seal", "shark", "shrew", "skunk", "skyscraper", "snail", "snake",
    "spider", "squirrel", "streetcar", "sunflower", "sweet_pepper", "table", "tank",
    "telephone", "television", "tiger", "tractor", "train", "trout", "tulip", "turtle",
    "wardrobe", "whale", "willow_tree", "wolf", "woman", "worm",
]  # fmt: skip

# Per-channel mean and standard deviation of the training pixels in [0, 1] (over all pixels
# of the 50,000 original training images). The LDAM-DRW code normalises CIFAR with std
# (0.2023, 0.1994, 0.2010) instead, a widespread value that is not the pixel std; it is kept
# here as LDAM_CIFAR10_STD for a run that wants their exact input scale.
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)
CIFAR100_MEAN = (0.5071, 0.4865, 0.4409)
CIFAR100_STD = (0.2673, 0.2564, 0.2762)
LDAM_CIFAR10_STD = (0.2023, 0.1994, 0.2010)

_SHARED_TOOL = "python ../shared/tools/cifar10_batches.py ROOT"


class _Spec:
    """Where a CIFAR variant lives and how its files are named."""

    def __init__(
        self,
        name: str,
        folder: str,
        train_files: list[str],
        test_files: list[str],
        meta_file: str,
        label_key: str,
        names_key: str,
        url: str,
        md5: str,
        classes: list[str],
        mean: tuple[float, ...],
        std: tuple[float, ...],
    ) -> None:
        self.name = name
        self.folder = folder
        self.train_files = train_files
        self.test_files = test_files
        self.meta_file = meta_file
        self.label_key = label_key
        self.names_key = names_key
        self.url = url
        self.md5 = md5
        self.classes = classes
        self.mean = mean
        self.std = std

    @property
    def all_files(self) -> list[str]:
        return [*self.train_files, *self.test_files, self.meta_file]


SPECS = {
    10: _Spec(
        name="CIFAR-10",
        folder="cifar-10-batches-py",
        train_files=[f"data_batch_{i}" for i in range(1, 6)],
        test_files=["test_batch"],
        meta_file="batches.meta",
        label_key="labels",
        names_key="label_names",
        url="https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
        md5="c58f30108f718f92721af3b95e74349a",
        classes=CIFAR10_CLASSES,
        mean=CIFAR10_MEAN,
        std=CIFAR10_STD,
    ),
    100: _Spec(
        name="CIFAR-100",
        folder="cifar-100-python",
        train_files=["train"],
        test_files=["test"],
        meta_file="meta",
        label_key="fine_labels",
        names_key="fine_label_names",
        url="https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
        md5="eb9058c3a382ffc7106e4002c42a8d85",
        classes=CIFAR100_CLASSES,
        mean=CIFAR100_MEAN,
        std=CIFAR100_STD,
    ),
}

# Training images per class of the full (balanced) training split.
TRAIN_PER_CLASS = {10: 5000, 100: 500}


def _spec(num_classes: int) -> _Spec:
    if num_classes not in SPECS:
        raise ConfigError(f"CIFAR has 10 or 100 classes, got num_classes={num_classes!r}")
    return SPECS[num_classes]


class _CifarUnpickler(pickle.Unpickler):
    """Unpickler that only rebuilds numpy arrays (and bytes): a batch file cannot run code.

    The CIFAR batches are dicts of lists, strings and one numpy array; nothing else is needed,
    so any other global in the file is refused rather than imported.
    """

    _ALLOWED: ClassVar[frozenset[tuple[str, str]]] = frozenset(
        {
            ("numpy.core.multiarray", "_reconstruct"),
            ("numpy._core.multiarray", "_reconstruct"),
            ("numpy.core.multiarray", "scalar"),
            ("numpy._core.multiarray", "scalar"),
            ("numpy", "ndarray"),
            ("numpy", "dtype"),
            ("_codecs", "encode"),  # how protocol-2 pickles written by Python 3 store bytes
        }
    )

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in self._ALLOWED:
            if module.startswith("numpy.core.") and hasattr(np, "_core"):
                # numpy 2 moved numpy.core to numpy._core; the old name warns on import
                module = "numpy._core." + module[len("numpy.core.") :]
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load global {module}.{name}")


def _str(key: Any) -> Any:
    return key.decode("latin1") if isinstance(key, bytes) else key


def _load_pickle(path: Path) -> dict[str, Any]:
    """Load one batch file; keys may be str or bytes (Python 2 pickles)."""
    try:
        with open(path, "rb") as f:
            obj = _CifarUnpickler(f, encoding="latin1").load()
    except (OSError, EOFError, pickle.UnpicklingError, ValueError, TypeError) as e:
        raise DataError(f"cannot read CIFAR file {path}: {type(e).__name__}: {e}") from e
    except Exception as e:  # damaged bytes can raise nearly anything in pickle
        # (AttributeError, IndexError, KeyError, MemoryError, OverflowError for a huge
        # length field, RecursionError, ...); every one of them means the same thing here.
        raise DataError(f"cannot read CIFAR file {path} (corrupt pickle): {e!r}") from e
    if not isinstance(obj, dict):
        raise DataError(f"{path} does not hold a CIFAR batch (a dict), got {type(obj).__name__}")
    return {_str(k): v for k, v in obj.items()}


def _read_batch(path: Path, label_key: str) -> tuple[np.ndarray, np.ndarray]:
    batch = _load_pickle(path)
    if "data" not in batch or label_key not in batch:
        raise DataError(
            f"{path} lacks the key {'data' if 'data' not in batch else label_key!r} of a CIFAR "
            f"batch; keys: {sorted(map(str, batch))}"
        )
    data = np.asarray(batch["data"])
    labels = np.asarray(batch[label_key], dtype=np.int64).reshape(-1)
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        raise DataError(
            f"{path}: 'data' must be uint8 of shape (N, 3072), got {data.dtype} {data.shape}"
        )
    if data.shape[0] != labels.shape[0]:
        raise DataError(f"{path}: {data.shape[0]} images but {labels.shape[0]} labels")
    return data, labels


def _missing_message(spec: _Spec, root: Path, missing: list[str], reason: str = "") -> str:
    folder = root / spec.folder
    lines = [
        f"{spec.name} not found{reason}: expected the directory {folder} holding "
        f"{', '.join(spec.all_files)} (missing: {', '.join(missing)}).",
        f"Download the official archive {spec.url} (md5 {spec.md5}) and extract it under "
        f"{root}, or build with download=True.",
    ]
    if spec.name == "CIFAR-10":
        lines.append(
            f"From the shared copy, `{_SHARED_TOOL.replace('ROOT', str(root))}` writes this "
            "layout (run it from the repository root)."
        )
    return " ".join(lines)


def _ensure_files(spec: _Spec, root: Path, needed: list[str], download: bool) -> None:
    folder = root / spec.folder
    missing = [f for f in needed if not (folder / f).is_file()]
    if not missing:
        return
    if not download:
        raise DataError(_missing_message(spec, root, missing))
    from torchvision.datasets.utils import download_and_extract_archive

    try:
        root.mkdir(parents=True, exist_ok=True)
        download_and_extract_archive(spec.url, download_root=str(root), md5=spec.md5)
    except Exception as e:  # network, md5 mismatch, disk: all end in the same advice
        raise DataError(
            _missing_message(spec, root, missing, f" and the download failed ({e!r})")
        ) from e
    missing = [f for f in needed if not (folder / f).is_file()]
    if missing:
        raise DataError(_missing_message(spec, root, missing, " after the download"))


def load_cifar(
    root: str | os.PathLike[str], num_classes: int = 10, train: bool = True, download: bool = False
) -> tuple[Tensor, np.ndarray, list[str]]:
    """Read a whole CIFAR split.

    Args:
        root: directory holding ``cifar-10-batches-py`` or ``cifar-100-python``.
        num_classes: 10 or 100 (CIFAR-100 uses the fine labels).
        train: the training split (50,000 images) or the test split (10,000).
        download: fetch and extract the official archive when files are missing.

    Returns:
        ``(images, targets, classes)``: uint8 ``(N, 3, 32, 32)`` contiguous, int64 ``(N,)``
        in file order (``data_batch_1`` to ``5``, as torchvision and LDAM-DRW read them), and
        the class names.

    Raises:
        DataError: files missing (the message names the directory, files, URL and the shared
            tool), a corrupt or truncated file (named), or a failed download.
    """
    spec = _spec(num_classes)
    root = Path(root).expanduser()
    files = spec.train_files if train else spec.test_files
    _ensure_files(spec, root, files, download)
    folder = root / spec.folder
    parts = [_read_batch(folder / name, spec.label_key) for name in files]
    data = np.concatenate([p[0] for p in parts]) if len(parts) > 1 else parts[0][0]
    targets = np.concatenate([p[1] for p in parts]) if len(parts) > 1 else parts[0][1]
    if targets.size and (targets.min() < 0 or targets.max() >= num_classes):
        raise DataError(
            f"{folder}: labels must lie in 0..{num_classes - 1}, found "
            f"{targets.min()}..{targets.max()}"
        )
    images = torch.from_numpy(np.ascontiguousarray(data)).view(-1, 3, 32, 32)
    classes = list(spec.classes)
    meta_path = folder / spec.meta_file
    if meta_path.is_file():
        meta = _load_pickle(meta_path)
        names = meta.get(spec.names_key)
        if names is not None and len(names) == num_classes:
            classes = [str(_str(n)) for n in names]
    return images, targets, classes


class CIFARLT(Dataset):
    """CIFAR-10 / CIFAR-100, with a long-tailed training split.

    The training split keeps ``longtail_counts(n_max, K, imbalance, profile, reverse)`` images
    per class (``n_max`` = 5000 / 500), chosen by :func:`longtail_indices` with
    ``subset_seed``: with the defaults (seed 0) the same images as LDAM-DRW, ARB-Loss, ETF-DR
    and BCL. ``imbalance=1`` keeps every image (grouped by class). The test split is always
    the full balanced test set; its ``class_counts`` are the test counts, so pass the training
    set's counts wherever a loss or metric needs them.

    Attributes:
        num_classes: 10 or 100.
        class_counts: images per class of this split, LongTensor ``(C,)``.
        targets: label of every kept image, ``list[int]``.
        classes: class names, ``list[str]``.
        mean, std: per-channel statistics of the training pixels in [0, 1] (3-tuples).
        indices: int64 ``(M,)``, kept indices into the original split (file order).
        images: uint8 ``(M, 3, 32, 32)``, the kept images.
        views: the transforms applied in ``__getitem__`` (may be reassigned between stages).
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        train: bool = True,
        num_classes: int = 10,
        imbalance: float = 1.0,
        profile: str = "exp",
        reverse: bool = False,
        subset_seed: int = 0,
        views: View | Sequence[View] | None = None,
        download: bool = False,
    ) -> None:
        spec = _spec(num_classes)
        self.views = check_views(views)
        if train:
            # Validate the profile before reading 150 MB of pickles.
            n_max = TRAIN_PER_CLASS[num_classes]
            counts = longtail_counts(n_max, num_classes, imbalance, profile, reverse)
        images, targets, classes = load_cifar(root, num_classes, train, download)
        if train:
            n_max = len(targets) // num_classes  # LDAM-DRW: img_max = len(data) / K
            counts = longtail_counts(n_max, num_classes, imbalance, profile, reverse)
            indices = longtail_indices(targets, counts, subset_seed)
            images = images[torch.from_numpy(indices)]
        else:
            indices = np.arange(len(targets), dtype=np.int64)
        self.root = str(root)
        self.train = train
        self.num_classes = num_classes
        self.imbalance = float(imbalance) if train else 1.0
        self.profile = profile
        self.reverse = bool(reverse) if train else False
        self.subset_seed = subset_seed
        self.indices = indices
        self.images = images.contiguous()
        kept = targets[indices]
        self.targets: list[int] = kept.tolist()
        self.class_counts = torch.bincount(torch.from_numpy(kept), minlength=num_classes)
        self.classes = classes
        self.mean = spec.mean
        self.std = spec.std

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, i: int) -> tuple[Any, int]:
        # clone: a view into the split tensor would drag the whole storage along when the
        # sample is pickled (worker queues) or modified in place by a transform.
        return apply_views(self.images[i].clone(), self.views), self.targets[i]

    def subset_meta(self) -> dict[str, Any]:
        """What :func:`nclt.data.longtail.export_indices` records about this subset."""
        return {
            "dataset": f"cifar{self.num_classes}" + ("" if self.train else "-test"),
            "imbalance": self.imbalance,
            "profile": self.profile,
            "reverse": self.reverse,
            "seed": self.subset_seed,
            "counts": self.class_counts.tolist(),
        }

    def export_indices(self, path: str | os.PathLike[str]) -> dict[str, Any]:
        """Write the kept indices and their checksum to ``path`` (JSON); returns the record."""
        return export_indices(path, self.indices, self.subset_meta())
