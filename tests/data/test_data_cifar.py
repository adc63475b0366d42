"""CIFAR readers on tiny files written here in the official pickle layout, and the real copy."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from nclt.data import DATASETS
from nclt.data.cifar import CIFAR10_MEAN, CIFAR10_STD, CIFARLT, load_cifar
from nclt.data.longtail import longtail_counts, longtail_indices
from nclt.data.views import build_view
from nclt.errors import ConfigError, DataError

PER_CLASS_BATCH = 4  # CIFAR-10 fake: 10 classes x 4 images in each of 5 batches


def _images_with_ids(ids: np.ndarray) -> np.ndarray:
    """uint8 (N, 3072) whose first two bytes encode the image's global id."""
    data = np.random.default_rng(0).integers(0, 256, (len(ids), 3072), dtype=np.uint8)
    data[:, 0] = ids // 256
    data[:, 1] = ids % 256
    return data


def _ids_of(images: torch.Tensor) -> np.ndarray:
    flat = images.reshape(len(images), -1).numpy().astype(np.int64)
    return flat[:, 0] * 256 + flat[:, 1]


def write_fake_cifar10(root: Path) -> tuple[np.ndarray, np.ndarray]:
    """cifar-10-batches-py with bytes keys (as Python 2 pickles read with encoding=bytes).

    Returns the training labels in file order and the test labels.
    """
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(1)
    train_labels = []
    for b in range(5):
        labels = rng.permutation(np.repeat(np.arange(10), PER_CLASS_BATCH))
        ids = np.arange(len(labels)) + b * len(labels)
        batch = {
            b"batch_label": b"training batch",
            b"labels": labels.tolist(),
            b"data": _images_with_ids(ids),
            b"filenames": [b"x.png"] * len(labels),
        }
        with open(folder / f"data_batch_{b + 1}", "wb") as f:
            pickle.dump(batch, f, protocol=2)
        train_labels.append(labels)
    test_labels = np.repeat(np.arange(10), 3)
    with open(folder / "test_batch", "wb") as f:
        pickle.dump(
            {b"labels": test_labels.tolist(), b"data": _images_with_ids(np.arange(30))}, f, 2
        )
    names = [b"plane", b"car", b"bird", b"cat", b"deer", b"dog", b"frog", b"horse", b"ship", b"x"]
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({b"label_names": names, b"num_vis": 3072}, f, protocol=2)
    return np.concatenate(train_labels), test_labels


def write_fake_cifar100(root: Path) -> np.ndarray:
    """cifar-100-python with str keys, 3 training images per fine class."""
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True)
    labels = np.random.default_rng(2).permutation(np.repeat(np.arange(100), 3))
    train = {
        "data": _images_with_ids(np.arange(300)),
        "fine_labels": labels.tolist(),
        "coarse_labels": (labels // 5).tolist(),
    }
    with open(folder / "train", "wb") as f:
        pickle.dump(train, f, protocol=4)
    test = {"data": _images_with_ids(np.arange(100)), "fine_labels": list(range(100))}
    with open(folder / "test", "wb") as f:
        pickle.dump(test, f, protocol=4)
    with open(folder / "meta", "wb") as f:
        pickle.dump({"fine_label_names": [f"f{i}" for i in range(100)]}, f, protocol=4)
    return labels


@pytest.fixture
def fake10(tmp_path: Path) -> tuple[Path, np.ndarray, np.ndarray]:
    train, test = write_fake_cifar10(tmp_path)
    return tmp_path, train, test


def test_load_cifar10_file_order(fake10) -> None:
    root, train_labels, _ = fake10
    images, targets, classes = load_cifar(root, 10, train=True)
    assert images.dtype == torch.uint8 and images.shape == (200, 3, 32, 32)
    assert images.is_contiguous()
    np.testing.assert_array_equal(targets, train_labels)
    np.testing.assert_array_equal(_ids_of(images), np.arange(200))  # batches 1..5 in order
    assert classes[0] == "plane" and classes[-1] == "x"


def test_cifar10_lt_subset(fake10) -> None:
    root, train_labels, _ = fake10
    ds = CIFARLT(root, train=True, num_classes=10, imbalance=10)
    counts = longtail_counts(20, 10, 10)
    assert ds.class_counts.dtype == torch.long
    assert ds.class_counts.tolist() == counts
    assert len(ds) == sum(counts) == len(ds.targets)
    expected = longtail_indices(train_labels, counts, 0)
    np.testing.assert_array_equal(ds.indices, expected)
    np.testing.assert_array_equal(_ids_of(ds.images), expected)  # the right pixels were kept
    assert ds.targets == train_labels[expected].tolist()
    x, y = ds[len(ds) - 1]
    assert x.dtype == torch.uint8 and x.shape == (3, 32, 32) and y == 9
    assert ds.num_classes == 10 and len(ds.classes) == 10
    assert ds.mean == CIFAR10_MEAN and len(ds.std) == 3
    assert all(0 < v < 1 for v in (*ds.mean, *ds.std))
    other = CIFARLT(root, imbalance=10, subset_seed=1)
    assert other.class_counts.tolist() == counts and not np.array_equal(other.indices, ds.indices)
    rev = CIFARLT(root, imbalance=10, reverse=True)
    assert rev.class_counts.tolist() == counts[::-1]
    meta = ds.subset_meta()
    assert meta["counts"] == counts and meta["imbalance"] == 10 and meta["seed"] == 0


def test_cifar10_test_split_stays_balanced(fake10) -> None:
    root, _, test_labels = fake10
    ds = CIFARLT(root, train=False, imbalance=10)
    assert len(ds) == 30 and ds.class_counts.tolist() == [3] * 10
    np.testing.assert_array_equal(ds.indices, np.arange(30))
    assert ds.targets == test_labels.tolist()


def test_cifar_views(fake10) -> None:
    root, _, _ = fake10
    v = build_view("crop_flip")
    ds = CIFARLT(root, imbalance=10, views=[v, v])
    (a, b), _ = ds[0]
    assert a.dtype == b.dtype == torch.uint8 and a.shape == b.shape == (3, 32, 32)
    one = CIFARLT(root, imbalance=10, views=[v])
    x, _ = one[0]
    assert isinstance(x, torch.Tensor) and x.shape == (3, 32, 32)
    with pytest.raises(ConfigError):
        CIFARLT(root, views=["crop_flip"])


def test_cifar100_str_keys(tmp_path: Path) -> None:
    labels = write_fake_cifar100(tmp_path)
    ds = CIFARLT(tmp_path, num_classes=100, imbalance=3)
    counts = longtail_counts(3, 100, 3)
    assert ds.class_counts.tolist() == counts
    np.testing.assert_array_equal(ds.indices, longtail_indices(labels, counts, 0))
    assert ds.classes[5] == "f5" and len(ds.mean) == 3
    test = DATASETS.build("cifar100", root=tmp_path, train=False)
    assert len(test) == 100 and test.class_counts.tolist() == [1] * 100


def test_missing_root_names_expected_directory(tmp_path: Path) -> None:
    root = tmp_path / "nowhere"
    with pytest.raises(DataError) as err:
        CIFARLT(root, imbalance=100)
    msg = str(err.value)
    assert str(root / "cifar-10-batches-py") in msg
    assert "data_batch_1" in msg and "test_batch" in msg and "batches.meta" in msg
    assert "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz" in msg
    assert "cifar10_batches.py" in msg
    with pytest.raises(DataError, match="cifar-100-python"):
        CIFARLT(root, num_classes=100)


def test_partial_layout_lists_missing_files(fake10) -> None:
    root, _, _ = fake10
    (root / "cifar-10-batches-py" / "data_batch_4").unlink()
    with pytest.raises(DataError, match=r"missing: data_batch_4\)"):
        CIFARLT(root)
    assert len(CIFARLT(root, train=False)) == 30  # the test split does not need it


def test_corrupt_batch_names_the_file(fake10) -> None:
    root, _, _ = fake10
    path = root / "cifar-10-batches-py" / "data_batch_3"
    path.write_bytes(path.read_bytes()[:500])  # truncated
    with pytest.raises(DataError, match="data_batch_3"):
        CIFARLT(root)
    path.write_bytes(b"not a pickle at all")
    with pytest.raises(DataError, match="data_batch_3"):
        CIFARLT(root)


def test_pickle_with_foreign_globals_is_refused(fake10) -> None:
    root, _, _ = fake10

    class Evil:
        def __reduce__(self):
            return (print, ("should not run",))

    with open(root / "cifar-10-batches-py" / "data_batch_2", "wb") as f:
        pickle.dump({"data": Evil()}, f)
    with pytest.raises(DataError, match=r"data_batch_2.*builtins\.print"):
        CIFARLT(root)


def test_wrong_shape_is_a_data_error(fake10) -> None:
    root, _, _ = fake10
    with open(root / "cifar-10-batches-py" / "test_batch", "wb") as f:
        pickle.dump({"data": np.zeros((2, 10), np.uint8), "labels": [0, 1]}, f)
    with pytest.raises(DataError, match="3072"):
        CIFARLT(root, train=False)


def test_download_failure_and_success(tmp_path: Path, monkeypatch) -> None:
    import torchvision.datasets.utils as tv_utils

    calls = []

    def failing(url, download_root, md5=None, **kw):
        calls.append((url, md5))
        raise OSError("network unreachable")

    monkeypatch.setattr(tv_utils, "download_and_extract_archive", failing)
    with pytest.raises(DataError, match=r"download failed.*network unreachable"):
        CIFARLT(tmp_path, download=True)
    assert calls == [
        (
            "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
            "c58f30108f718f92721af3b95e74349a",
        )
    ]

    def fake_download(url, download_root, md5=None, **kw):
        write_fake_cifar10(Path(download_root))

    monkeypatch.setattr(tv_utils, "download_and_extract_archive", fake_download)
    assert len(CIFARLT(tmp_path, train=False, download=True)) == 30


def test_bad_num_classes() -> None:
    with pytest.raises(ConfigError, match="10 or 100"):
        CIFARLT("x", num_classes=20)


@pytest.mark.cifar
def test_real_cifar10_lt(shared_cifar10: Path) -> None:
    ds = CIFARLT(shared_cifar10, imbalance=100)
    assert len(ds) == 12406
    assert ds.class_counts.tolist() == [5000, 2997, 1796, 1077, 645, 387, 232, 139, 83, 50]
    assert ds.images.shape == (12406, 3, 32, 32) and ds.images.dtype == torch.uint8
    full_images, full_targets, _ = load_cifar(shared_cifar10, 10, train=True)
    np.testing.assert_array_equal(
        ds.indices, longtail_indices(full_targets, ds.class_counts.tolist(), 0)
    )
    assert ds.classes[0] == "airplane" and ds.classes[9] == "truck"
    test = CIFARLT(shared_cifar10, train=False)
    assert len(test) == 10000 and test.class_counts.tolist() == [1000] * 10
    # the declared statistics are those of the training pixels (JPEG moves them a little)
    pixels = full_images[::10].float().div_(255).transpose(0, 1).reshape(3, -1)
    assert torch.allclose(pixels.mean(1), torch.tensor(CIFAR10_MEAN), atol=0.005)
    assert torch.allclose(pixels.std(1), torch.tensor(CIFAR10_STD), atol=0.005)
