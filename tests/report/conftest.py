"""One short digits run shared by the report tests (2 epochs, a few seconds on the CPU)."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def digits_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    """(run folder, results) of a 2-epoch CE run on digits-LT."""
    from nclt.cli import build_parser, config_from_args
    from nclt.runner import train

    out = tmp_path_factory.mktemp("report") / "run"
    args = build_parser().parse_args(
        ["train", "--epochs", "2", "--out", str(out), "--set", "progress=false"]
    )
    results = train(config_from_args(args))
    return out, results


@pytest.fixture(scope="session")
def report_data(digits_run):
    from nclt.report import collect

    return collect(digits_run[0])


@pytest.fixture(scope="session")
def report_dir(digits_run) -> Path:
    """The run's report written by the ``nclt report`` command."""
    from nclt.cli import main

    run = digits_run[0]
    assert main(["report", str(run)]) == 0
    return run / "report"
