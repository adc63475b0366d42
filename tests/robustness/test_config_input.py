"""Bad configuration through the CLI: exit code 2, one clear line on stderr, no traceback.

Unit tests of the same checks: tests/test_config.py (keys, types, ranges, YAML tags) and
tests/test_train_e2e.py::test_cli_errors_are_one_clear_line (a misspelt method or key).
"""

from __future__ import annotations

import pytest
import yaml

from ._helpers import assert_one_clear_line, digits_args

# (extra CLI arguments, fragments the one error line must hold)
BAD = [
    # unknown or misspelt names: the closest valid one is suggested
    (["--method", "ldam-drv"], ["unknown method 'ldam-drv'", "Did you mean 'ldam-drw'"]),
    (["--method", "ce-drw+icn"], ["unknown add-on 'icn'", "Did you mean 'inc'"]),
    (["--set", "optim.lrr=0.1"], ["unknown config key 'optim.lrr'", "Did you mean 'lr'"]),
    (["--set", "epoch=3"], ["unknown config key 'epoch'", "Did you mean 'epochs'"]),
    (["--set", "data.dataset=cifar11"], ["unknown dataset 'cifar11'", "'cifar10'"]),
    (["--set", "model.arch=resnet33"], ["unknown backbone 'resnet33'", "'resnet32'"]),
    (["--set", "model.head=cosin"], ["unknown head 'cosin'", "'cosine'"]),
    (["--set", "data.sampler=class_balance"], ["unknown sampler", "'class_balanced'"]),
    (["--set", "data.train_view=rrc_flp"], ["unknown view 'rrc_flp'", "'rrc_flip'"]),
    (["--set", "data.profile=linear"], ["data.profile: 'linear' is not allowed", "'exp'"]),
    (
        ["--method", "ce-drw", "--set", "method.args.ce-drw.betaa=0.9"],
        ["method.args.ce-drw.betaa: unknown hyper-parameter", "Did you mean 'beta'"],
    ),
    (
        ["--method", "ce", "--set", "method.args.ce-drw.beta=0.9"],
        ["'ce-drw' is not a component of method 'ce'"],
    ),
    # wrong types
    (["--set", "epochs=ten"], ["epochs: expected an integer, got 'ten'"]),
    (["--set", "data.batch_size=32.5"], ["data.batch_size: expected an integer"]),
    (["--set", "optim.lr=fast"], ["optim.lr: expected a number, got 'fast'"]),
    (["--set", "optim.milestones=160"], ["optim.milestones: expected a list"]),
    (["--set", "data=3"], ["data: expected a mapping"]),
    (
        ["--method", "ce-drw", "--set", "method.args.ce-drw.beta=abc"],
        ["method.args.ce-drw.beta: expected a number, got 'abc'"],
    ),
    (
        ["--method", "ce-drw", "--set", "method.args.ce-drw.drw_epoch=1.5"],
        ["method.args.ce-drw.drw_epoch: expected an integer, got 1.5"],
    ),
    # ranges
    (["--epochs", "0"], ["epochs must be >= 1"]),
    (["--set", "optim.lr=-1"], ["optim.lr must be > 0"]),
    (["--set", "optim.momentum=1"], ["optim.momentum must be in [0, 1)"]),
    (["--set", "data.batch_size=0"], ["data.batch_size must be >= 2"]),
    (["--set", "data.imbalance=.nan"], ["data.imbalance must be a finite number"]),
    (["--set", "seed=-1"], ["seed and data.subset_seed must lie in 0..2**32-1"]),
    (["--set", "data.subset_seed=-1"], ["seed and data.subset_seed must lie in 0..2**32-1"]),
    (["--set", "optim.milestones=[180,160]"], ["optim.milestones must be increasing"]),
    (["--method", "ce-drw", "--set", "method.args.ce-drw.beta=2"], ["beta must lie in [0, 1)"]),
    (["--method", "focal", "--set", "method.args.focal.gamma=-1"], ["gamma must be >= 0"]),
    (["--set", "device=tpu"], ["device 'tpu' is not a device name"]),
    (["--set", "eval_all_from=-1"], ["eval_all_from must be >= 0 (0 = off)"]),
    (["--set", "optim.lr"], ["expected key=value"]),
]


@pytest.mark.parametrize(("extra", "fragments"), BAD, ids=[" ".join(b[0]) for b in BAD])
def test_bad_config_is_one_clear_line(cli, tmp_path, extra, fragments):
    res = cli(*digits_args(tmp_path / "run", *extra))
    assert_one_clear_line(res, *fragments)
    assert not (tmp_path / "run" / "last.pt").exists()


def test_argparse_errors_exit_2_with_usage(cli):
    for argv in (
        ["train", "--imbalance", "abc"],
        ["train", "--epochs", "x"],
        ["train", "--seeds", "0,a"],
        ["train", "--seeds=-1"],
        ["bogus"],
    ):
        res = cli(*argv)
        assert res.code == 2 and "Traceback" not in res.err
        assert res.err.strip().splitlines()[-1].startswith(("nclt train: error:", "nclt: error:"))


def test_exponent_without_dot_is_a_number(tmp_path):
    """YAML 1.1 reads ``1e-3`` as a string; nclt accepts it wherever a float is expected."""
    from ._helpers import digits_cfg

    cfg = digits_cfg(tmp_path, "--set", "optim.lr=1e-3", "--set", "optim.min_lr=5E-6")
    assert cfg.optim.lr == 1e-3 and cfg.optim.min_lr == 5e-6


def test_yaml_errors_are_one_line(cli, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("epochs: [1\n")
    assert_one_clear_line(cli("train", "--config", str(bad)), "not valid YAML: line 2, column 1")
    notmap = tmp_path / "list.yaml"
    notmap.write_text("- 1\n- 2\n")
    assert_one_clear_line(cli("train", "--config", str(notmap)), "top level must be a mapping")
    assert_one_clear_line(cli("train", "--config", str(tmp_path / "nope.yaml")), "does not exist")


def test_base_inheritance_loop_is_refused(cli, tmp_path):
    (tmp_path / "a.yaml").write_text("base: b.yaml\nepochs: 2\n")
    (tmp_path / "b.yaml").write_text("base: a.yaml\n")
    assert_one_clear_line(
        cli("train", "--config", str(tmp_path / "a.yaml")), "'base:' inheritance loops"
    )


# ----------------------------------------------------------------------------- security


@pytest.mark.parametrize(
    "tag",
    [
        "!!python/object/apply:os.system ['touch {m}']",
        "!!python/object/new:os.system ['touch {m}']",
        "!!python/name:os.system",
        "!!python/object:os.system {{}}",
    ],
)
def test_yaml_python_tags_run_nothing(cli, tmp_path, tag):
    marker = tmp_path / "pwned"
    f = tmp_path / "evil.yaml"
    f.write_text(f"epochs: {tag.format(m=marker)}\n")
    assert_one_clear_line(cli("train", "--config", str(f)), "Python tags are not allowed")
    res = cli(*digits_args(tmp_path / "run", "--set", f"epochs={tag.format(m=marker)}"))
    assert_one_clear_line(res, "Python tags are not allowed")
    assert not marker.exists()


def test_nothing_from_a_config_is_evaluated(cli, tmp_path):
    marker = tmp_path / "pwned"
    code = f"__import__('os').system('touch {marker}')"
    assert_one_clear_line(cli(*digits_args(tmp_path / "a", "--method", code)), "unknown method")
    assert_one_clear_line(
        cli(*digits_args(tmp_path / "b", "--set", f"epochs={code}")), "epochs: expected an integer"
    )
    # a string-valued key keeps the text as a string (digits reads no file from data.root)
    res = cli(*digits_args(tmp_path / "c", "--set", f"data.root={code}"))
    assert res.code == 0, res.err
    saved = yaml.safe_load((tmp_path / "c" / "config.yaml").read_text())
    assert saved["data"]["root"] == code
    # the run folder's config.yaml is read back safely on --resume
    (tmp_path / "c" / "config.yaml").write_text(
        f"epochs: !!python/object/apply:os.system ['touch {marker}']\n"
    )
    assert_one_clear_line(
        cli("train", "--resume", str(tmp_path / "c")), "Python tags are not allowed"
    )
    assert not marker.exists()
