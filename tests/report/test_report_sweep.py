"""``nclt train --sweep``: the grid's folders and configs, then ``nclt compare`` over them."""

from __future__ import annotations

import csv

import pytest
import yaml

from nclt.cli import build_parser, main, split_values, sweep_configs, sweep_folder, sweep_grid
from nclt.errors import ConfigError


def test_grid_parsing_and_folder_names():
    assert split_values("0.1, [160,180],'a,b'") == ["0.1", "[160,180]", "'a,b'"]
    grid = sweep_grid(["optim.lr=0.1,0.05", "optim.milestones=[1,2],[3]"])
    assert grid == [
        [("optim.lr", "0.1"), ("optim.milestones", "[1,2]")],
        [("optim.lr", "0.1"), ("optim.milestones", "[3]")],
        [("optim.lr", "0.05"), ("optim.milestones", "[1,2]")],
        [("optim.lr", "0.05"), ("optim.milestones", "[3]")],
    ]
    assert sweep_folder("optim.milestones", "[1, 2]") == "optim.milestones=_1__2_"
    assert sweep_folder("method.name", "ce/../x") == "method.name=ce_.._x"
    for bad in (["seed=0,1"], ["optim.lr"], ["optim.lr=0.1,0.1"], ["a=1", "a=2"]):
        with pytest.raises(ConfigError):
            sweep_grid(bad)


def test_sweep_configs_with_seeds(tmp_path):
    args = build_parser().parse_args(
        [
            "train",
            "--epochs",
            "1",
            "--out",
            str(tmp_path),
            "--set",
            "optim.lr=0.2",
            "--sweep",
            "optim.lr=0.05,0.1",
            "--sweep",
            "mixup_alpha=0,1",
            "--seeds",
            "3,4",
        ]
    )
    cfgs = sweep_configs(args)
    assert len(cfgs) == 8
    first = cfgs[0]
    assert first.out == str(tmp_path / "optim.lr=0.05" / "mixup_alpha=0" / "seed3")
    assert first.optim.lr == 0.05 and first.mixup_alpha == 0 and first.seed == 3
    last = cfgs[-1]
    assert last.out == str(tmp_path / "optim.lr=0.1" / "mixup_alpha=1" / "seed4")
    assert last.optim.lr == 0.1 and last.mixup_alpha == 1.0 and last.seed == 4
    # an unknown key fails before any training, naming the closest one
    bad = build_parser().parse_args(["train", "--out", str(tmp_path), "--sweep", "optim.rl=1,2"])
    with pytest.raises(ConfigError, match="optim.rl"):
        sweep_configs(bad)


def test_sweep_runs_the_grid_and_compare_tabulates_it(tmp_path, capsys):
    out = tmp_path / "sweep"
    assert (
        main(
            [
                "train",
                "--epochs",
                "1",
                "--out",
                str(out),
                "--set",
                "progress=false",
                "--sweep",
                "optim.lr=0.05,0.1",
            ]
        )
        == 0
    )
    for lr in (0.05, 0.1):
        run = out / f"optim.lr={lr}"
        for f in ("config.yaml", "results.json", "last.pt"):
            assert (run / f).is_file(), (run, f)
        cfg = yaml.safe_load((run / "config.yaml").read_text())
        assert cfg["optim"]["lr"] == lr and cfg["epochs"] == 1 and cfg["out"] == str(run)
    # a second sweep into the same folder is refused before anything trains
    assert main(["train", "--epochs", "1", "--out", str(out), "--sweep", "optim.lr=0.05"]) == 2
    capsys.readouterr()
    assert main(["compare", str(out), "--out", str(tmp_path / "cmp")]) == 0
    printed = capsys.readouterr().out
    assert "optim.lr" in printed.splitlines()[0]
    rows = list(csv.DictReader((tmp_path / "cmp" / "compare.csv").open()))
    assert sorted(float(r["optim.lr"]) for r in rows) == [0.05, 0.1]
    assert all(0 <= float(r["last_top1_mean"]) <= 100 for r in rows)
