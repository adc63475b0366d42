"""STYLE.md's typing rule: ``mypy --strict`` passes on losses/, metrics/ and dist.py."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.skipif(
    shutil.which("mypy") is None and not any((Path(p) / "mypy").is_dir() for p in sys.path),
    reason="mypy is not installed",
)
def test_mypy_strict_on_the_typed_modules():
    res = subprocess.run(
        [sys.executable, "-m", "mypy", "--no-incremental"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-2000:]
