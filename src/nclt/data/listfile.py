"""List-file datasets: ImageNet-LT, Places-LT and iNaturalist 2018.

A split is a text file of ``relative/path label`` lines (the OLTR / decoupling lists, e.g.
``ImageNet_LT_train.txt``), or for iNaturalist 2018 its official COCO-style JSON
(``images`` with ``id`` and ``file_name``, ``annotations`` with ``image_id`` and
``category_id``). Paths are relative to an image root and may not leave it. Images are decoded
lazily (Pillow), one per ``__getitem__``, into uint8 ``(3, H, W)`` RGB; sizes vary, so training and
evaluation need a view that fixes the size (``rrc_flip``, ``center_crop`` in
:mod:`nclt.data.views`).

:func:`check_split` inspects a split without decoding anything: counts, missing files and
which known directory layout the paths follow.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from nclt.data.views import View, apply_views, check_views
from nclt.errors import DataError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# name -> (pattern on the relative path, example shown in reports)
LAYOUTS: dict[str, tuple[re.Pattern[str], str]] = {
    "imagenet_lt": (
        re.compile(r"^(train|val|test)/n\d{8}/[^/]+$"),
        "ImageNet-LT: train/n01440764/n01440764_10026.JPEG",
    ),
    "places_lt": (
        re.compile(r"^((data|val|test)_(256|large)/|[a-z]/[a-z0-9_]+/)"),
        "Places-LT: data_256/a/abbey/00000001.jpg, val_256/Places365_val_00000001.jpg",
    ),
    "inaturalist": (
        re.compile(r"^train_val2018/[^/]+/\d+/[^/]+$"),
        "iNaturalist 2018: train_val2018/Plantae/7477/<hash>.jpg",
    ),
}


def _path_problem(path: str) -> str | None:
    """Why a listed path is refused (absolute, or escaping the root with ..), else None."""
    if not path:
        return "empty path"
    if (
        path.startswith(("/", "\\"))
        or PurePosixPath(path).is_absolute()
        or (PureWindowsPath(path).drive)
    ):
        return (
            f"absolute path {path!r} (paths must be relative to the image root; for a list "
            "whose root-relative paths start with '/', as Places365's own lists, pass "
            "strip_leading_slash=True)"
        )
    parts = re.split(r"[\\/]", path)
    if ".." in parts:
        return f"path {path!r} leaves the image root (contains '..')"
    return None


def resolve_split_file(root: str | os.PathLike[str], split_file: str | os.PathLike[str]) -> Path:
    """The split file as given if it exists, else relative to ``root``; DataError if neither."""
    given = Path(split_file).expanduser()
    if given.is_file():
        return given
    under_root = Path(root).expanduser() / split_file
    if not given.is_absolute() and under_root.is_file():
        return under_root
    tried = [str(given)] + ([] if given.is_absolute() else [str(under_root)])
    raise DataError(f"split file not found; tried {', '.join(tried)}")


@dataclass
class ParsedSplit:
    """Entries of a split file, and the lines that could not be used."""

    paths: list[str]
    labels: list[int]
    classes: list[str] | None = None
    problems: list[str] = field(default_factory=list)


def _parse_text(path: Path, strict: bool, strip_leading_slash: bool) -> ParsedSplit:
    out = ParsedSplit([], [])
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"cannot read split file {path}: {e}") from e
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        fields = line.rsplit(None, 1)  # the path may hold spaces; the label is last
        problem = None
        if len(fields) != 2 or not re.fullmatch(r"\d+", fields[-1]):
            problem = f"{path}:{lineno}: expected 'relative/path label', got {line!r}"
        else:
            if strip_leading_slash and fields[0].startswith("/"):
                fields[0] = fields[0].lstrip("/")
            why = _path_problem(fields[0])
            if why:
                problem = f"{path}:{lineno}: {why}"
        if problem:
            if strict:
                raise DataError(problem)
            out.problems.append(problem)
            continue
        out.paths.append(fields[0].replace("\\", "/"))
        out.labels.append(int(fields[1]))
    return out


def _parse_inat_json(path: Path, strict: bool) -> ParsedSplit:
    try:
        with open(path, encoding="utf-8") as f:
            doc = json.load(f)
        images = doc["images"]
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DataError(f"cannot read iNaturalist json {path}: {e}") from e
    except (KeyError, TypeError) as e:
        raise DataError(f"{path} is not a COCO-style json (no 'images' list)") from e
    annotations = doc.get("annotations") or []
    if not annotations:
        raise DataError(
            f"{path} has no annotations (iNaturalist's test2018.json is unlabeled; "
            "evaluate on val2018.json)"
        )
    try:
        label_of = {a["image_id"]: int(a["category_id"]) for a in annotations}
    except (KeyError, TypeError, ValueError) as e:
        raise DataError(f"{path}: annotations need 'image_id' and 'category_id': {e!r}") from e
    out = ParsedSplit([], [])
    for k, img in enumerate(images):
        try:
            image_id, file_name = img["id"], str(img["file_name"])
        except (KeyError, TypeError):
            problem = f"{path}: images[{k}] lacks 'id' or 'file_name'"
        else:
            problem = _path_problem(file_name)
            if problem:
                problem = f"{path}: images[{k}]: {problem}"
            elif image_id not in label_of:
                problem = f"{path}: image id {image_id!r} ({file_name}) has no annotation"
        if problem:
            if strict:
                raise DataError(problem)
            out.problems.append(problem)
            continue
        out.paths.append(file_name)
        out.labels.append(label_of[image_id])
    cats = doc.get("categories")
    if cats:
        try:
            by_id = {int(c["id"]): str(c.get("name", c["id"])) for c in cats}
        except (KeyError, TypeError, ValueError):
            by_id = {}
        if by_id and sorted(by_id) == list(range(len(by_id))):
            out.classes = [by_id[i] for i in range(len(by_id))]
    return out


def parse_split(
    root: str | os.PathLike[str],
    split_file: str | os.PathLike[str],
    strict: bool = True,
    strip_leading_slash: bool = False,
) -> ParsedSplit:
    """Read a split: a ``path label`` text file, or an iNaturalist-style ``.json``.

    Args:
        root: the image root (also where a relative ``split_file`` is looked for).
        split_file: the list file.
        strict: raise DataError at the first bad line (malformed, absolute, ``..``);
            otherwise skip it and record it in ``problems``.
        strip_leading_slash: read ``/a/abbey/x.jpg`` as ``a/abbey/x.jpg`` (text lists whose
            root-relative paths start with ``/``); off by default, so an absolute path is an
            error rather than a silent reinterpretation.

    Returns:
        The parsed entries.
    """
    path = resolve_split_file(root, split_file)
    if path.suffix.lower() == ".json":
        return _parse_inat_json(path, strict)
    return _parse_text(path, strict, strip_leading_slash)


def decode_rgb(path: str | os.PathLike[str]) -> Tensor:
    """Decode an image file into uint8 ``(3, H, W)`` RGB (grey, palette, CMYK converted).

    Pillow decodes (torchvision's own decoders are deprecated since 0.29). DataError names
    the file when it is missing or cannot be decoded.
    """
    from PIL import Image

    path = os.fspath(path)
    if not os.path.isfile(path):
        raise DataError(f"image file not found: {path} (run check_split to list missing files)")
    try:
        with Image.open(path) as im:
            arr = np.asarray(im.convert("RGB"), dtype=np.uint8)
    except Exception as e:  # Pillow raises many types for a broken file
        raise DataError(f"cannot decode image {path}: {e!r}") from e
    return torch.from_numpy(arr.copy()).permute(2, 0, 1).contiguous()


class ListFileDataset(Dataset):
    """Images listed in a split file, decoded lazily.

    Attributes:
        num_classes: number of classes (given, else from the file).
        class_counts: images per class of this split, LongTensor ``(C,)`` (for a test split
            these are test counts; pass the training set's counts to losses and metrics).
        targets: label per image, ``list[int]``.
        classes: class names (iNaturalist json: category names; else ``"0".."C-1"``).
        mean, std: per-channel statistics in [0, 1] (ImageNet's by default).
        paths: image paths relative to ``root``.
        views: the transforms applied in ``__getitem__``.

    Args:
        root: the image root; every listed path is relative to it.
        split_file: the list (``path label`` lines) or iNaturalist json; looked up as given,
            then under ``root``.
        views: None, a view, or a list of views (see :mod:`nclt.data.views`).
        num_classes: number of classes (ImageNet-LT 1000, Places-LT 365, iNaturalist 8142).
        classes: class names, optional.
        mean, std: per-channel statistics in [0, 1] given to the network.
        strip_leading_slash: see :func:`parse_split`.
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        split_file: str | os.PathLike[str],
        views: View | Sequence[View] | None = None,
        num_classes: int | None = None,
        classes: Sequence[str] | None = None,
        mean: tuple[float, ...] = IMAGENET_MEAN,
        std: tuple[float, ...] = IMAGENET_STD,
        strip_leading_slash: bool = False,
    ) -> None:
        self.root = Path(root).expanduser()
        if not self.root.is_dir():
            raise DataError(f"image root {self.root} is not a directory")
        self.split_file = resolve_split_file(self.root, split_file)
        parsed = parse_split(self.root, self.split_file, True, strip_leading_slash)
        if not parsed.paths:
            raise DataError(f"split file {self.split_file} lists no image")
        max_label = max(parsed.labels)
        if num_classes is None:
            num_classes = len(parsed.classes) if parsed.classes else max_label + 1
        if max_label >= num_classes:
            raise DataError(
                f"{self.split_file}: label {max_label} does not fit {num_classes} classes"
            )
        self.views = check_views(views)
        self.paths = parsed.paths
        self.targets: list[int] = parsed.labels
        self.num_classes = int(num_classes)
        self.class_counts = torch.bincount(
            torch.tensor(self.targets, dtype=torch.long), minlength=self.num_classes
        )
        if classes is not None:
            self.classes = list(classes)
        elif parsed.classes and len(parsed.classes) == self.num_classes:
            self.classes = parsed.classes
        else:
            self.classes = [str(i) for i in range(self.num_classes)]
        self.mean = tuple(mean)
        self.std = tuple(std)

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, i: int) -> tuple[Any, int]:
        image = decode_rgb(self.root / self.paths[i])
        return apply_views(image, self.views), self.targets[i]


def detect_layout(paths: Sequence[str]) -> str:
    """The known layout most of ``paths`` follow (a key of ``LAYOUTS``), or ``"unknown"``."""
    best, best_hits = "unknown", 0
    for name, (pattern, _) in LAYOUTS.items():
        hits = sum(1 for p in paths if pattern.search(p))
        if hits > best_hits:
            best, best_hits = name, hits
    return best


@dataclass
class SplitReport:
    """What :func:`check_split` found; ``str(report)`` is a readable summary."""

    root: str
    split_file: str
    num_images: int
    num_classes: int
    min_count: int
    max_count: int
    layout: str
    missing: int
    missing_examples: list[str]
    problems: list[str]
    class_counts: list[int]

    @property
    def ok(self) -> bool:
        """True when every listed file exists and every line parsed."""
        return self.missing == 0 and not self.problems and self.num_images > 0

    @property
    def imbalance(self) -> float | None:
        """``max_count / min_count`` over classes present, None when there is no image."""
        return self.max_count / self.min_count if self.min_count > 0 else None

    def __str__(self) -> str:
        layout = LAYOUTS[self.layout][1] if self.layout in LAYOUTS else "unknown layout"
        lines = [
            f"split file: {self.split_file}",
            f"image root: {self.root}",
            f"layout:     {self.layout} ({layout})",
            f"images:     {self.num_images} in {self.num_classes} classes",
        ]
        if self.num_images:
            imb = f", imbalance {self.imbalance:g}" if self.imbalance else ""
            lines.append(
                f"per class:  {self.min_count}..{self.max_count} images (classes present{imb})"
            )
        lines.append(f"missing:    {self.missing} file(s)")
        lines += [f"  - {p}" for p in self.missing_examples]
        if self.missing > len(self.missing_examples):
            lines.append(f"  ... and {self.missing - len(self.missing_examples)} more")
        if self.problems:
            lines.append(f"bad lines:  {len(self.problems)}")
            lines += [f"  - {p}" for p in self.problems[:5]]
        lines.append("status:     " + ("OK" if self.ok else "PROBLEMS"))
        return "\n".join(lines)


def check_split(
    root: str | os.PathLike[str],
    split_file: str | os.PathLike[str],
    max_listed: int = 5,
    strip_leading_slash: bool = False,
) -> SplitReport:
    """Check a split file against an image root without decoding any image.

    Bad lines (malformed, absolute or ``..`` paths) are reported, not raised.

    Args:
        root: the image root.
        split_file: the list file (or iNaturalist json).
        max_listed: how many missing files to name.
        strip_leading_slash: see :func:`parse_split`.

    Returns:
        A :class:`SplitReport`.
    """
    root_path = Path(root).expanduser()
    path = resolve_split_file(root_path, split_file)
    parsed = parse_split(root_path, path, False, strip_leading_slash)
    missing = [p for p in parsed.paths if not (root_path / p).is_file()]
    counts = np.bincount(np.asarray(parsed.labels, dtype=np.int64)) if parsed.labels else []
    present = [int(n) for n in counts if n > 0]
    num_classes = len(parsed.classes) if parsed.classes else len(counts)
    return SplitReport(
        root=str(root_path),
        split_file=str(path),
        num_images=len(parsed.paths),
        num_classes=max(num_classes, len(counts)),
        min_count=min(present) if present else 0,
        max_count=max(present) if present else 0,
        layout=detect_layout(parsed.paths),
        missing=len(missing),
        missing_examples=missing[:max_listed],
        problems=parsed.problems,
        class_counts=[int(n) for n in counts],
    )
