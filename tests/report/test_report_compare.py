"""``nclt compare``: groups runs that differ only by seed; mean ± std (n - 1); "-" when empty."""

from __future__ import annotations

import csv
import json
import statistics

import pytest
import yaml
from matplotlib.image import imread

from nclt.cli import main
from nclt.report.compare import compare


def _fake_run(path, method, seed, last, best, nc1, lr=0.1):
    """A finished run folder: results.json and config.yaml as nclt writes them."""
    path.mkdir(parents=True)
    results = {
        "method": method,
        "dataset": "cifar10",
        "imbalance": 100.0,
        "epochs": 200,
        "seed": seed,
        "top1": last[0],
        "many": last[1],
        "medium": last[2],
        "few": last[3],
        "last": dict(zip(("top1", "many", "medium", "few"), last, strict=True)),
        "best": {
            "epoch": 190 + seed,
            **dict(zip(("top1", "many", "medium", "few"), best, strict=True)),
        },
        "nc": {
            "nc1": nc1,
            "equiangular_means": 0.1,
            "equiangular_w": None,
            "self_duality": 0.5,
            "nc4": 0.9,
        },
    }
    (path / "results.json").write_text(json.dumps(results))
    config = {
        "method": {"name": method, "args": {}},
        "data": {"dataset": "cifar10", "imbalance": 100.0, "root": f"/data{seed}"},
        "optim": {"lr": lr},
        "epochs": 200,
        "seed": seed,
        "out": str(path),
        "environment": {"git_commit": f"c{seed}"},
    }
    if seed == 1:  # begun on a lent GPU, finished elsewhere: where it ran does not split
        config["earlier_environments"] = [{"through_epoch": 3, "device": "cuda", "torch": "x"}]
    (path / "config.yaml").write_text(yaml.safe_dump(config))


def test_mean_and_std_over_seeds(tmp_path, capsys):
    runs = tmp_path / "runs"
    # CIFAR-10-LT has no few-shot class: few is None (null in JSON) and must print "-"
    _fake_run(runs / "a0", "ce", 0, (70.0, 90.0, 60.0, None), (71.0, 91.0, 61.0, None), 1.0)
    _fake_run(runs / "a1", "ce", 1, (74.0, 94.0, 50.0, None), (75.5, 93.0, 62.0, None), 2.0)
    _fake_run(runs / "a2", "ce", 2, (72.0, 92.0, 55.0, None), (74.0, 92.0, 60.0, None), 4.0)
    _fake_run(runs / "b0", "ce-drw", 0, (80.0, 85.0, 70.0, None), (81.0, 86.0, 71.0, None), 0.5)
    out = tmp_path / "cmp"
    table, rows = compare([runs], out)
    assert len(rows) == 2  # the three seeds of ce are one group; root, commit, device do not split
    ce, drw = rows
    assert ce["method"] == "ce" and ce["runs"] == 3 and ce["seeds"] == "0,1,2"
    for which, idx, vals in (
        ("last", "top1", [70.0, 74.0, 72.0]),
        ("best", "top1", [71.0, 75.5, 74.0]),
        ("last", "medium", [60.0, 50.0, 55.0]),
    ):
        assert ce[f"{which}_{idx}_mean"] == pytest.approx(statistics.fmean(vals))
        assert ce[f"{which}_{idx}_std"] == pytest.approx(statistics.stdev(vals))  # n - 1
    assert ce["last_top1_std"] == pytest.approx(2.0)  # by hand: mean 72, sample std 2
    assert ce["nc_nc1_mean"] == pytest.approx(7 / 3)
    assert ce["last_few_mean"] is None and ce["nc_equiangular_w_mean"] is None
    assert drw["runs"] == 1 and drw["last_top1_std"] is None  # one run: no std
    # printed: mean ± std, the single value alone, "-" for the empty few group
    line = next(s for s in table.splitlines() if s.startswith("ce "))
    assert "72.00 ± 2.00" in line and "73.50 ± 2.29" in line
    assert line.split().count("-") >= 2  # last few and best few
    drw_line = next(s for s in table.splitlines() if s.startswith("ce-drw"))
    assert "80.00" in drw_line and "±" not in drw_line.split("0.500")[0]
    # compare.csv: unrounded numbers, empty cells for None; compare.png readable
    with (out / "compare.csv").open() as f:
        csv_rows = list(csv.DictReader(f))
    assert float(csv_rows[0]["last_top1_std"]) == pytest.approx(2.0)
    assert csv_rows[0]["last_few_mean"] == "" and csv_rows[1]["last_top1_std"] == ""
    assert imread(out / "compare.png").shape[0] > 100


def test_swept_keys_become_columns_and_cli(tmp_path, capsys):
    runs = tmp_path / "sweep"
    for lr in (0.05, 0.1):
        for s in (0, 1):
            _fake_run(
                runs / f"optim.lr={lr}" / f"seed{s}",
                "ce",
                s,
                (60 + 10 * lr + s, 80, 50, None),
                (61, 81, 51, None),
                1.0,
                lr=lr,
            )
    assert main(["compare", str(runs), "--out", str(tmp_path / "o")]) == 0
    printed = capsys.readouterr().out
    header = printed.splitlines()[0].split()
    assert "optim.lr" in header and "epochs" not in header  # only the keys that vary
    assert printed.count("± 0.71") >= 2  # two seeds each: std of (x, x + 1) = 0.7071
    rows = list(csv.DictReader((tmp_path / "o" / "compare.csv").open()))
    assert [r["optim.lr"] for r in rows] == ["0.05", "0.1"]
    assert [r["runs"] for r in rows] == ["2", "2"]


def test_compare_refuses_a_folder_without_runs(tmp_path, capsys):
    assert main(["compare", str(tmp_path), "--out", str(tmp_path)]) == 2
    assert "no results.json" in capsys.readouterr().err
