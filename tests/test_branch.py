"""Branching a run from another run's kept checkpoint (nclt.branch): equal to a fresh run when
the two train the same way up to the branch point, refused otherwise."""

from __future__ import annotations

import csv
import json

import pytest
import torch

import nclt.runner as runner
from nclt import checkpoint as ckpt
from nclt.branch import config_differences, method_differences
from nclt.cli import build_parser, config_from_args, main
from nclt.config import to_dict
from nclt.errors import ConfigError
from nclt.methods.recipes import BuildContext, build_method
from nclt.reproduce import BRANCH_ROWS, commands


def _cfg(tmp_path, name: str, *extra: str):
    args = build_parser().parse_args(
        ["train", "--out", str(tmp_path / name), "--epochs", "4", "--set", "progress=false", *extra]
    )
    return config_from_args(args)


def _weights(path):
    return ckpt.load(path)["model"]


def _ctx(epochs: int = 10) -> BuildContext:
    return BuildContext(torch.tensor([50, 20, 10]), 3, 16, epochs, seed=0)


def test_ce_to_ce_drw_branch_equals_a_fresh_ce_drw_run(tmp_path):
    """CE keeps epoch_2.pt; CE-DRW with DRW from epoch index 2, branched there, ends with the
    same weights, history and test accuracy as CE-DRW trained from scratch."""
    drw = ("--method", "ce-drw", "--set", "method.args.ce-drw.drw_epoch=2")
    runner.train(_cfg(tmp_path, "ce", "--set", "keep_checkpoints=[2]"))
    kept = tmp_path / "ce" / "epoch_2.pt"
    assert kept.is_file() and ckpt.load(kept)["epoch"] == 1
    fresh = runner.train(_cfg(tmp_path, "fresh", *drw))
    branched = runner.train(_cfg(tmp_path, "branch", *drw, "--branch-from", str(kept)))
    a, b = _weights(tmp_path / "fresh" / "last.pt"), _weights(tmp_path / "branch" / "last.pt")
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert branched["top1"] == fresh["top1"] and branched["best"] == fresh["best"]
    assert branched["branched_from"] == {"checkpoint": str(kept), "epoch": 2}
    # metrics.csv holds all four epochs; the first two are the source's, marked as such
    rows = list(csv.DictReader((tmp_path / "branch" / "metrics.csv").open()))
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3, 4]
    assert [r.get("branched") for r in rows] == ["1", "1", "", ""]
    fresh_rows = list(csv.DictReader((tmp_path / "fresh" / "metrics.csv").open()))
    assert [r["ce"] for r in rows] == [r["ce"] for r in fresh_rows]
    saved = json.loads((tmp_path / "branch" / "results.json").read_text())
    assert saved["branched_from"]["epoch"] == 2
    # a second stage on the branched run starts from its weights, not from the branch point
    # (its config keeps branch_from: the stage used to be refused as both branch and init)
    args = ["train", "--stage2", "crt", "--from", str(tmp_path / "branch"), "--epochs", "1"]
    crt = config_from_args(build_parser().parse_args([*args, "--set", "progress=false"]))
    assert not crt.branch_from and crt.init_from == str(tmp_path / "branch" / "last.pt")
    assert runner.train(crt)["epochs"] == 1


def test_branch_is_refused_when_the_methods_part_before_the_checkpoint(tmp_path):
    runner.train(_cfg(tmp_path, "ce", "--set", "keep_checkpoints=[2]"))
    kept = str(tmp_path / "ce" / "epoch_2.pt")
    early = ("--method", "ce-drw", "--set", "method.args.ce-drw.drw_epoch=1")
    with pytest.raises(ConfigError, match="epoch 2, step 0: schedule 'class_weight'"):
        runner.train(_cfg(tmp_path, "early", *early, "--branch-from", kept))
    with pytest.raises(ConfigError, match="loss term 'inc_within' weighs 0 vs"):
        runner.train(_cfg(tmp_path, "inc", "--method", "ce+inc", "--branch-from", kept))
    with pytest.raises(ConfigError, match=r"optim.lr: [0-9.]+ -> 0.0123"):
        runner.train(_cfg(tmp_path, "lr", "--set", "optim.lr=0.0123", "--branch-from", kept))
    with pytest.raises(ConfigError, match="nothing left to train"):
        runner.train(_cfg(tmp_path, "short", "--epochs", "2", "--branch-from", kept))
    assert not (tmp_path / "early" / "last.pt").exists()  # nothing written by a refused branch


def test_branch_flag_is_refused_with_resume(tmp_path, capsys):
    runner.train(_cfg(tmp_path, "ce", "--set", "keep_checkpoints=[2]"))
    assert main(["train", "--resume", str(tmp_path / "ce"), "--branch-from", "x.pt"]) != 0
    assert "drop branch_from" in capsys.readouterr().err


def test_keep_checkpoints_are_one_based(tmp_path):
    with pytest.raises(ConfigError, match="keep_checkpoints"):
        _cfg(tmp_path, "x", "--set", "keep_checkpoints=[0]")


def test_method_differences_of_known_pairs():
    ctx = _ctx()
    steps = 3

    def diff(a: str, b: str, epoch: int, args_b: dict | None = None) -> list[str]:
        ma = build_method(a, {}, ctx)
        mb = build_method(b, args_b or {}, _ctx())
        return method_differences(ma, mb, epoch, steps, 10)

    drw8 = {"ce-drw": {"drw_epoch": 8}}
    assert diff("ce", "ce-drw", 8, drw8) == []  # DRW's weights switch on at epoch index 8
    assert diff("ce", "ce-drw", 9, drw8)[0].startswith("at epoch 9, step 0: schedule")
    assert diff("ce+disa", "ce-drw+disa", 8, {**drw8, "disa": {}}) == []
    assert "weighs" in diff("ce", "ce+disa", 1)[0]
    # the same term with another setting differs from the first step
    d = diff("ce+disa", "ce+disa", 1, {"disa": {"epsilon": 0.5}})
    assert d and "epsilon" in d[0]
    assert diff("ce", "ldam-drw", 1)[0].startswith("head:")  # another head altogether
    # GBBN's eta depends on the total epochs: AllNC against itself is the same
    assert diff("allnc", "allnc", 10) == []


def test_config_differences_ignore_what_does_not_train():
    a = {"epochs": 200, "out": "x", "data": {"root": "a", "batch_size": 128}, "eval_every": 5}
    b = {"epochs": 200, "out": "y", "data": {"root": "b", "batch_size": 64}, "eval_every": 1}
    assert config_differences(a, b) == ["data.batch_size: 128 -> 64"]


def test_a_checkpoint_older_than_a_config_key_still_branches(tmp_path):
    """Keys the source's nclt did not know take their defaults before the comparison."""
    runner.train(_cfg(tmp_path, "ce", "--set", "keep_checkpoints=[3]"))
    state = ckpt.load(tmp_path / "ce" / "epoch_3.pt")
    del state["config"]["keep_checkpoints"], state["config"]["model"]["head_trainable"]
    old = tmp_path / "old.pt"
    ckpt.save_atomic(state, old)
    res = runner.train(_cfg(tmp_path, "b", "--method", "ce-drw", "--branch-from", str(old)))
    assert res["branched_from"]["epoch"] == 3 and res["epochs"] == 4


@pytest.mark.parametrize("row", sorted(BRANCH_ROWS))
def test_every_declared_branch_pair_trains_the_same_up_to_its_epoch(row):
    """`nclt reproduce --commands` branches these rows from their siblings: the two config files
    must agree outside the method, and the methods until the DRW switch (and not after)."""
    sibling, epoch = BRANCH_ROWS[row]

    def load(name: str):
        args = build_parser().parse_args(["train", "--config", f"configs/cifar10_lt/{name}.yaml"])
        return config_from_args(args)

    a, b = load(sibling), load(row)
    assert config_differences(to_dict(a), to_dict(b)) == []
    assert epoch in a.keep_checkpoints  # the sibling keeps the checkpoint the branch needs
    counts = torch.tensor([round(5000 * 100 ** (-i / 9)) for i in range(10)])

    def method(cfg):
        return build_method(cfg.method.name, cfg.method.args, BuildContext(counts, 10, 64, 200))

    assert method_differences(method(a), method(b), epoch, 2, 200) == []
    late = method_differences(method(a), method(b), epoch + 1, 2, 200)
    assert late and late[0].startswith(f"at epoch {epoch + 1}, step 0: schedule 'class_weight'")


def test_reproduce_commands_branch_the_drw_rows():
    text = commands([("ce_drw_mixup", 100.0), ("ce_mixup", 100.0)], seeds="0")
    assert text.index("# ce_mixup") < text.index("# ce_drw_mixup")
    assert "--branch-from runs/cifar10_lt/IF100/ce_mixup/epoch_180.pt" in text
    three = commands([("ce_drw", 50.0)])
    assert "--branch-from runs/cifar10_lt/IF50/ce/seed$k/epoch_160.pt" in three


def test_the_fig8_rows_take_disa_fig8_lambda_at_each_factor():
    """DisA Fig. 8's best lambda differs per factor (8 / 8 / 0.8 / 6 at IF 200 / 100 / 50 / 10):
    the files carry IF 100's, the queue and the printed commands set the others."""
    from nclt.reproduce import row_overrides

    assert row_overrides("ce_disa_fig8", 100.0) == []
    assert row_overrides("ce_disa_fig8", 50.0) == ["method.args.disa.weight=0.8"]
    assert row_overrides("ce_drw_disa_fig8", 10.0) == ["method.args.disa.weight=6"]
    assert row_overrides("ce_disa", 50.0) == []  # the text's lambda stays the text's
    text = commands([("ce_drw_disa_fig8", 50.0), ("ce_disa_fig8", 50.0)], seeds="0")
    assert text.count("--set method.args.disa.weight=0.8") == 2  # the sibling and the branch
    assert "--branch-from runs/cifar10_lt/IF50/ce_disa_fig8/epoch_180.pt" in text


def test_every_allnc_row_takes_gamma_2_at_if_200_from_its_config_method():
    """AllNC Table VI: gamma 2.0 at IF 200. The key follows each row's method (allnc, allnc++),
    so a variant row (allnc_grw) gets it too, and no other row does."""
    from nclt.reproduce import row_overrides

    assert row_overrides("allnc", 200.0) == ["method.args.allnc.gamma=2.0"]
    assert row_overrides("allnc_pp", 200.0) == ["method.args.allnc++.gamma=2.0"]
    assert row_overrides("allnc_grw", 200.0) == ["method.args.allnc.gamma=2.0"]
    assert row_overrides("allnc_grw", 100.0) == []
    assert row_overrides("bcl", 200.0) == []
