"""Shared fixtures. Tests run on the CPU; under pytest-xdist each worker uses one thread."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"

if os.environ.get("PYTEST_XDIST_WORKER"):
    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def shared_cifar10(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A root holding cifar-10-batches-py built from ../shared (skips when it is absent)."""
    tool = SHARED / "tools" / "cifar10_batches.py"
    if not tool.is_file() or not (SHARED / "data" / "cifar10-jpeg.tar.gz").is_file():
        pytest.skip("../shared/data/cifar10-jpeg.tar.gz is not available")
    import subprocess
    import sys

    root = tmp_path_factory.mktemp("cifar")
    subprocess.run([sys.executable, str(tool), str(root)], check=True, capture_output=True)
    return root


@pytest.fixture(scope="session")
def tiny_cifar10(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A root holding cifar-10-batches-py in the official pickle layout with random pixels:
    10 classes x 4 images per training batch (20 per class), 2 per class in the test batch."""
    root = tmp_path_factory.mktemp("tiny_cifar")
    folder = root / "cifar-10-batches-py"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for b in range(5):
        labels = np.repeat(np.arange(10), 4)
        data = rng.integers(0, 256, (40, 3072), dtype=np.uint8)
        with open(folder / f"data_batch_{b + 1}", "wb") as f:
            pickle.dump({b"labels": labels.tolist(), b"data": data}, f, protocol=2)
    with open(folder / "test_batch", "wb") as f:
        data = rng.integers(0, 256, (20, 3072), dtype=np.uint8)
        pickle.dump({b"labels": np.repeat(np.arange(10), 2).tolist(), b"data": data}, f, 2)
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({b"label_names": [f"c{i}".encode() for i in range(10)]}, f, protocol=2)
    return root


@pytest.fixture(scope="session")
def tiny_sets() -> list[str]:
    """``--set`` values that shrink a shipped CIFAR config to run on ``tiny_cifar10`` in
    seconds: a small CNN, one thread, no workers, fp32."""
    return [
        "progress=false",
        "threads=1",
        "model.arch=small_cnn",
        "data.batch_size=32",
        "data.num_workers=0",
        "precision=fp32",
        "channels_last=false",
    ]
