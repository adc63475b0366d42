"""Shared fixtures. Tests run on the CPU; under pytest-xdist each worker uses one thread."""

from __future__ import annotations

import os
from pathlib import Path

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
