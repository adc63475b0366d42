"""Fixtures of the robustness suite."""

from __future__ import annotations

import pytest
import torch

from nclt.cli import main

from ._helpers import CliResult


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str]):
    """Run ``nclt ARGS`` in-process; returns exit code, stdout and stderr."""

    def run(*argv: str) -> CliResult:
        capsys.readouterr()
        try:
            code = main(list(argv))
        except SystemExit as e:  # argparse's own errors
            code = int(e.code or 0)
        captured = capsys.readouterr()
        return CliResult(code, captured.out, captured.err)

    return run


@pytest.fixture(autouse=True)
def one_thread():
    """Single-threaded torch: these tiny runs are faster and steadier on a shared CPU, and
    results compare bit for bit with subprocesses run with ``threads=1``; restored after."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
