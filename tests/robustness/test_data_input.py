"""Bad data through the CLI: imbalance factors, missing / truncated / corrupt files, lists.

Reader-level tests of the same cases: tests/data/test_data_cifar.py, test_data_listfile.py
and test_data_longtail.py.
"""

from __future__ import annotations

import os
import pickle

import pytest

from ._helpers import assert_one_clear_line, digits_args, write_fake_cifar10, write_imagenet_lt

# ----------------------------------------------------------------------------- imbalance


@pytest.mark.parametrize(
    ("extra", "fragments"),
    [
        (["--imbalance", "0.01"], ["must be >= 1", "100, not 0.01"]),
        (["--imbalance", "0"], ["must be >= 1"]),
        (["--imbalance", "1000"], ["leaves class 7 with no image", "at most 104"]),
        (["--imbalance", "200", "--set", "data.profile=step"], ["leaves class 5 with no image"]),
        (["--set", "data.imbalance=.inf"], ["data.imbalance must be a finite number"]),
    ],
)
def test_imbalance_out_of_range(cli, tmp_path, extra, fragments):
    assert_one_clear_line(cli(*digits_args(tmp_path / "run", *extra)), *fragments)


def test_imbalance_in_nclt_data(cli):
    assert_one_clear_line(cli("data", "cifar10", "--imbalance", "0.5"), "did you mean 2?")
    assert_one_clear_line(
        cli("data", "cifar100", "--imbalance", "1000"), "leaves class", "at most 500"
    )
    assert cli("data", "cifar100", "--imbalance", "500").code == 0  # the largest that fits
    assert cli("data", "digits", "--imbalance", "1").code == 0


# ----------------------------------------------------------------------------- CIFAR files


def _cifar_args(root, out, *extra):
    return [
        "train",
        "--dataset",
        "cifar10",
        "--data-root",
        str(root),
        "--imbalance",
        "10",
        "--epochs",
        "1",
        "--out",
        str(out),
        "--set",
        "progress=false",
        "--set",
        "model.arch=small_cnn",
        "--set",
        "precision=fp32",
        "--set",
        "channels_last=false",
        "--set",
        "data.num_workers=0",
        "--set",
        "data.batch_size=16",
        *extra,
    ]


def test_fake_cifar_control_trains(cli, tmp_path):
    write_fake_cifar10(tmp_path / "data")
    res = cli(*_cifar_args(tmp_path / "data", tmp_path / "run"))
    assert res.code == 0, res.err


def test_cifar_missing(cli, tmp_path):
    res = cli(*_cifar_args(tmp_path / "empty", tmp_path / "run"))
    assert_one_clear_line(
        res,
        "CIFAR-10 not found",
        "cifar-10-batches-py",
        "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
    )
    assert not (tmp_path / "run" / "last.pt").exists()


@pytest.mark.parametrize(
    "damage", ["truncated", "garbage", "huge_length", "empty", "wrong_shape", "deleted"]
)
def test_cifar_damaged_file_is_named(cli, tmp_path, damage):
    folder = write_fake_cifar10(tmp_path / "data")
    victim = folder / "data_batch_3"
    data = victim.read_bytes()
    if damage == "truncated":
        victim.write_bytes(data[: len(data) // 2])
    elif damage == "garbage":
        victim.write_bytes(os.urandom(len(data)))
    elif damage == "huge_length":
        # a protocol-5 BYTEARRAY8 whose length field overflows: pickle raises OverflowError
        victim.write_bytes(b"\x80\x05\x96" + b"\xff" * 8 + data[:64])
    elif damage == "empty":
        victim.write_bytes(b"")
    elif damage == "wrong_shape":
        with open(victim, "wb") as f:
            pickle.dump({b"labels": [0, 1], b"data": b"\x00" * 10}, f, protocol=2)
    else:
        victim.unlink()
    res = cli(*_cifar_args(tmp_path / "data", tmp_path / "run"))
    assert_one_clear_line(res, "data_batch_3")
    assert not (tmp_path / "run" / "last.pt").exists()


class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_cifar_malicious_pickle_runs_no_code(cli, tmp_path):
    folder = write_fake_cifar10(tmp_path / "data")
    marker = tmp_path / "pwned"
    with open(folder / "test_batch", "wb") as f:
        pickle.dump({"labels": [0], "data": _Evil(marker)}, f)
    res = cli(*_cifar_args(tmp_path / "data", tmp_path / "run"))
    assert_one_clear_line(res, "test_batch", "refusing to load global")
    assert not marker.exists()


# ----------------------------------------------------------------------------- split lists


def _list_args(root, out, *extra):
    return [
        "train",
        "--dataset",
        "imagenet_lt",
        "--data-root",
        str(root),
        "--epochs",
        "1",
        "--out",
        str(out),
        "--set",
        "progress=false",
        "--set",
        "model.arch=small_cnn",
        "--set",
        "precision=fp32",
        "--set",
        "channels_last=false",
        "--set",
        "data.batch_size=4",
        "--set",
        "data.test_batch_size=4",
        "--set",
        "data.num_workers=0",
        *extra,
    ]


@pytest.mark.parametrize(
    ("line", "fragments"),
    [
        ("../outside.png 0", ["leaves the image root", "ImageNet_LT_train.txt:12"]),
        ("train/../../outside.png 0", ["leaves the image root"]),
        ("/etc/passwd 0", ["absolute path '/etc/passwd'"]),
        ("C:\\\\images\\\\x.png 0", ["absolute path"]),
        ("train/n00000000/n00000000_0.JPEG", ["expected 'relative/path label'"]),
        ("train/n00000000/n00000000_0.JPEG -1", ["expected 'relative/path label'"]),
        ("train/n00000000/n00000000_0.JPEG 1000", ["label 1000 does not fit 1000 classes"]),
    ],
)
def test_bad_split_lines(cli, tmp_path, line, fragments):
    lines = write_imagenet_lt(tmp_path / "data")
    (tmp_path / "data" / "ImageNet_LT_train.txt").write_text("\n".join([*lines, line]) + "\n")
    assert_one_clear_line(cli(*_list_args(tmp_path / "data", tmp_path / "run")), *fragments)


def test_missing_and_unreadable_split_files(cli, tmp_path):
    (tmp_path / "data").mkdir()
    assert_one_clear_line(
        cli(*_list_args(tmp_path / "data", tmp_path / "a")),
        "no training list for 'imagenet_lt'",
        "ImageNet_LT_train.txt",
    )
    assert_one_clear_line(
        cli(*_list_args(tmp_path / "nowhere", tmp_path / "b")), "no training list"
    )
    assert_one_clear_line(
        cli(*_list_args(tmp_path / "data", tmp_path / "c", "--set", "data.train_list=nope.txt")),
        "split file not found",
        "nope.txt",
    )
    write_imagenet_lt(tmp_path / "data")
    (tmp_path / "data" / "ImageNet_LT_train.txt").write_bytes(b"\xff\xfe\x00bad")
    assert_one_clear_line(
        cli(*_list_args(tmp_path / "data", tmp_path / "d")), "cannot read split file"
    )
    (tmp_path / "data" / "ImageNet_LT_train.txt").write_text("# only a comment\n")
    assert_one_clear_line(cli(*_list_args(tmp_path / "data", tmp_path / "e")), "lists no image")


@pytest.mark.parametrize("workers", [0, 2])
def test_missing_image_mid_epoch_is_one_line(cli, tmp_path, workers):
    """A listed image that is gone is found when it is read; with DataLoader workers the
    worker's traceback is not shown, only the original message."""
    lines = write_imagenet_lt(tmp_path / "data")
    (tmp_path / "data" / lines[4].split()[0]).unlink()
    res = cli(
        *_list_args(tmp_path / "data", tmp_path / "run", "--set", f"data.num_workers={workers}")
    )
    assert_one_clear_line(res, "image file not found", lines[4].split()[0])
    assert "DataLoader worker" not in res.err


def test_corrupt_image_is_named(cli, tmp_path):
    lines = write_imagenet_lt(tmp_path / "data")
    (tmp_path / "data" / lines[2].split()[0]).write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    res = cli(*_list_args(tmp_path / "data", tmp_path / "run"))
    assert_one_clear_line(res, "cannot decode image", lines[2].split()[0])
