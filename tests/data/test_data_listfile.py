"""List-file datasets (ImageNet-LT / Places-LT / iNaturalist) on a tiny tree of PNGs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from nclt.data import DATASETS, dataset_counts
from nclt.data.listfile import ListFileDataset, check_split, detect_layout
from nclt.data.views import build_view
from nclt.errors import ConfigError, DataError

WNIDS = ["n01440764", "n01443537", "n01484850"]
COUNTS = [4, 2, 1]


def _png(path: Path, value: int, channels: int = 3, size: tuple[int, int] = (12, 10)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    img = np.full((*size, channels), value, dtype=np.uint8)
    img[0, 0] = 255 - value
    Image.fromarray(img[..., 0] if channels == 1 else img).save(path, format="PNG")


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """ImageNet-style tree with 4 / 2 / 1 images and ImageNet_LT_{train,test}.txt."""
    lines = []
    for label, (wnid, n) in enumerate(zip(WNIDS, COUNTS, strict=True)):
        for k in range(n):
            rel = f"train/{wnid}/{wnid}_{k}.JPEG"  # PNG bytes: decoding sniffs the content
            _png(tmp_path / rel, 10 * label + k, channels=1 if (label, k) == (1, 0) else 3)
            lines.append(f"{rel} {label}")
    (tmp_path / "ImageNet_LT_train.txt").write_text("\n".join(lines) + "\n")
    (tmp_path / "ImageNet_LT_test.txt").write_text(lines[0] + "\n" + lines[-1] + "\n")
    return tmp_path


def test_list_dataset_reads_images(tree: Path) -> None:
    ds = ListFileDataset(tree, "ImageNet_LT_train.txt", num_classes=3)
    assert len(ds) == 7 and ds.class_counts.tolist() == COUNTS
    assert ds.targets == [0, 0, 0, 0, 1, 1, 2]
    x, y = ds[1]
    assert x.dtype == torch.uint8 and x.shape == (3, 12, 10) and y == 0
    assert int(x[0, 1, 1]) == 1 and int(x[0, 0, 0]) == 254
    grey, y = ds[4]  # a one-channel PNG comes back as RGB
    assert grey.shape == (3, 12, 10) and y == 1 and torch.equal(grey[0], grey[2])
    assert ds.classes == ["0", "1", "2"] and len(ds.mean) == len(ds.std) == 3


def test_list_dataset_views(tree: Path) -> None:
    views = [build_view("rrc_flip", image_size=8), build_view("center_crop", image_size=8)]
    ds = ListFileDataset(tree, tree / "ImageNet_LT_train.txt", views=views)
    (a, b), _ = ds[0]
    assert a.shape == b.shape == (3, 8, 8) and a.dtype == b.dtype == torch.uint8


@pytest.mark.parametrize(
    "line, match",
    [
        ("../outside.png 0", "leaves the image root"),
        ("train/../../outside.png 0", "leaves the image root"),
        ("/etc/passwd 0", "absolute path"),
        ("C:\\data\\x.png 0", "absolute path"),
        ("train/x.png", "expected 'relative/path label'"),
        ("train/x.png -1", "expected 'relative/path label'"),
    ],
)
def test_bad_lines_are_data_errors(tree: Path, line: str, match: str) -> None:
    split = tree / "bad.txt"
    split.write_text(f"train/{WNIDS[0]}/{WNIDS[0]}_0.JPEG 0\n{line}\n")
    with pytest.raises(DataError, match=match) as err:
        ListFileDataset(tree, split)
    assert "bad.txt:2" in str(err.value)


def test_missing_and_corrupt_images(tree: Path) -> None:
    ds = ListFileDataset(tree, "ImageNet_LT_train.txt")
    (tree / ds.paths[6]).unlink()
    with pytest.raises(DataError, match=f"image file not found: .*{WNIDS[2]}_0.JPEG"):
        ds[6]
    (tree / ds.paths[5]).write_bytes(b"\x89PNG garbage")
    with pytest.raises(DataError, match=f"cannot decode image .*{WNIDS[1]}_1.JPEG"):
        ds[5]


def test_check_split_report(tree: Path) -> None:
    report = check_split(tree, "ImageNet_LT_train.txt")
    assert report.ok and report.missing == 0 and report.layout == "imagenet_lt"
    assert (report.num_images, report.num_classes) == (7, 3)
    assert (report.min_count, report.max_count, report.imbalance) == (1, 4, 4.0)
    gone = f"train/{WNIDS[0]}/{WNIDS[0]}_2.JPEG"
    (tree / gone).unlink()
    split = tree / "ImageNet_LT_train.txt"
    split.write_text(split.read_text() + "../escape.png 1\n")
    report = check_split(tree, split)
    assert not report.ok and report.missing == 1 and report.missing_examples == [gone]
    assert len(report.problems) == 1 and "leaves the image root" in report.problems[0]
    text = str(report)
    assert "missing:    1 file(s)" in text and gone in text and "PROBLEMS" in text
    assert "train/n01440764/n01440764_10026.JPEG" in text  # the layout's example
    assert "1..4 images" in text


def test_detect_layout() -> None:
    assert detect_layout(["train/n01440764/n01440764_1.JPEG"]) == "imagenet_lt"
    assert detect_layout(["data_256/a/abbey/00000001.jpg", "val_256/x.jpg"]) == "places_lt"
    assert detect_layout(["a/abbey/00000001.jpg"]) == "places_lt"
    assert detect_layout(["train_val2018/Plantae/7477/abc.jpg"]) == "inaturalist"
    assert detect_layout(["images/cat.png"]) == "unknown"


def _inat_tree(root: Path) -> None:
    images, annotations = [], []
    for i, (cat, kingdom) in enumerate([(0, "Plantae"), (0, "Plantae"), (1, "Animalia")]):
        rel = f"train_val2018/{kingdom}/{cat}/img{i}.jpg"
        _png(root / rel, i)
        images.append({"id": 100 + i, "file_name": rel, "width": 10, "height": 12})
        annotations.append({"id": i, "image_id": 100 + i, "category_id": cat})
    doc = {
        "images": images,
        "annotations": annotations,
        "categories": [{"id": 0, "name": "Quercus"}, {"id": 1, "name": "Felis"}],
    }
    (root / "train2018.json").write_text(json.dumps(doc))
    (root / "test2018.json").write_text(json.dumps({"images": images}))


def test_inaturalist_json(tmp_path: Path) -> None:
    _inat_tree(tmp_path)
    ds = DATASETS.build("inaturalist", root=tmp_path, train=True, num_classes=2)
    assert len(ds) == 3 and ds.targets == [0, 0, 1] and ds.class_counts.tolist() == [2, 1]
    assert ds.classes == ["Quercus", "Felis"]
    assert ds[2][0].shape == (3, 12, 10)
    assert check_split(tmp_path, "train2018.json").layout == "inaturalist"
    with pytest.raises(DataError, match="no annotations"):
        ListFileDataset(tmp_path, "test2018.json")


def test_registered_builders(tree: Path) -> None:
    train = DATASETS.build("imagenet_lt", root=tree, train=True, imbalance=100, subset_seed=3)
    assert train.num_classes == 1000 and train.class_counts[:3].tolist() == COUNTS
    test = DATASETS.build("imagenet_lt", root=tree, train=False, train_list=None)
    assert len(test) == 2
    other = DATASETS.build("places_lt", root=tree, train=True, train_list="ImageNet_LT_train.txt")
    assert other.num_classes == 365 and len(other) == 7
    with pytest.raises(DataError, match=r"Places_LT_test\.txt"):
        DATASETS.build("places_lt", root=tree, train=False)
    with pytest.raises(ConfigError, match="unknown argument"):
        DATASETS.build("imagenet_lt", root=tree, split="train")
    counts = dataset_counts("imagenet_lt", split_file="ImageNet_LT_train.txt", root=tree)
    assert len(counts) == 1000 and counts[:3] == COUNTS and sum(counts) == 7
    with pytest.raises(ConfigError, match="split file"):
        dataset_counts("places_lt")


def test_strip_leading_slash(tree: Path) -> None:
    rel = f"train/{WNIDS[0]}/{WNIDS[0]}_0.JPEG"
    split = tree / "slash.txt"
    split.write_text(f"/{rel} 0\n")
    with pytest.raises(DataError, match="strip_leading_slash=True"):
        ListFileDataset(tree, split)
    ds = DATASETS.build("places_lt", root=tree, split_file=split, strip_leading_slash=True)
    assert ds.paths == [rel] and ds[0][0].shape == (3, 12, 10)
    assert check_split(tree, split, strip_leading_slash=True).ok
    assert dataset_counts("places_lt", split_file=split)[:2] == [1, 0]


def test_missing_split_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="split file not found"):
        ListFileDataset(tmp_path, "nope.txt")
