"""Plain helpers of the robustness suite (fixtures are in conftest.py)."""

from __future__ import annotations

import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from nclt.cli import build_parser, config_from_args


@dataclass
class CliResult:
    code: int
    out: str
    err: str

    @property
    def error(self) -> str:
        """The ``nclt: ...`` report line(s) on stderr (log lines excluded)."""
        return "\n".join(line for line in self.err.splitlines() if line.startswith("nclt:"))


def assert_one_clear_line(res: CliResult, *fragments: str) -> None:
    """Exit code 2, exactly one ``nclt: error:`` line holding ``fragments``, no traceback."""
    assert res.code == 2, (res.code, res.err)
    assert "Traceback" not in res.err, res.err
    lines = res.error.splitlines()
    assert len(lines) == 1 and lines[0].startswith("nclt: error: "), res.err
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])


def digits_args(out: Path, *extra: str, epochs: int = 1) -> list[str]:
    return ["train", "--out", str(out), "--epochs", str(epochs), "--set", "progress=false", *extra]


def digits_cfg(out: Path, *extra: str, epochs: int = 1):
    return config_from_args(build_parser().parse_args(digits_args(out, *extra, epochs=epochs)))


def write_fake_cifar10(root: Path, per_class_batch: int = 4) -> Path:
    """cifar-10-batches-py in the official pickle layout (bytes keys), tiny: 20 per class."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for b in range(5):
        labels = rng.permutation(np.repeat(np.arange(10), per_class_batch))
        data = rng.integers(0, 256, (len(labels), 3072), dtype=np.uint8)
        with open(folder / f"data_batch_{b + 1}", "wb") as f:
            pickle.dump({b"labels": labels.tolist(), b"data": data}, f, protocol=2)
    test_labels = np.repeat(np.arange(10), 3)
    test = rng.integers(0, 256, (len(test_labels), 3072), dtype=np.uint8)
    with open(folder / "test_batch", "wb") as f:
        pickle.dump({b"labels": test_labels.tolist(), b"data": test}, f, protocol=2)
    names = [n.encode() for n in "abcdefghij"]
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({b"label_names": names}, f, protocol=2)
    return folder


def write_png(path: Path, value: int, size: tuple[int, int] = (20, 24)) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((*size, 3), value, dtype=np.uint8)).save(path, format="PNG")


def write_imagenet_lt(root: Path, counts: tuple[int, ...] = (6, 3, 2)) -> list[str]:
    """A tiny ImageNet-LT tree and its two lists; returns the training lines."""
    lines = []
    for label, n in enumerate(counts):
        for k in range(n):
            rel = f"train/n{label:08d}/n{label:08d}_{k}.JPEG"  # PNG bytes; decoding sniffs
            write_png(root / rel, 10 * label + k)
            lines.append(f"{rel} {label}")
    (root / "ImageNet_LT_train.txt").write_text("\n".join(lines) + "\n")
    (root / "ImageNet_LT_test.txt").write_text("\n".join(lines[:3]) + "\n")
    return lines
