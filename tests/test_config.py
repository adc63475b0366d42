"""Config validation: unknown keys, wrong types, ranges, overrides, presets."""

import pytest

from nclt.cli import build_parser, config_from_args
from nclt.config import TrainConfig, build_config, from_dict, parse_override
from nclt.errors import ConfigError


def test_defaults_are_valid():
    cfg = from_dict(TrainConfig, {})
    assert cfg.epochs == 200 and cfg.optim.milestones == [160, 180]


def test_unknown_key_names_it_and_suggests():
    with pytest.raises(ConfigError, match=r"optim\.lrr.*Did you mean 'lr'"):
        from_dict(TrainConfig, {"optim": {"lrr": 0.1}})
    with pytest.raises(ConfigError, match="unknown config key 'epoch'.*'epochs'"):
        from_dict(TrainConfig, {"epoch": 3})


def test_wrong_types_name_the_key():
    with pytest.raises(ConfigError, match="epochs: expected an integer"):
        from_dict(TrainConfig, {"epochs": "ten"})
    with pytest.raises(ConfigError, match="optim.lr: expected a number"):
        from_dict(TrainConfig, {"optim": {"lr": True}})
    with pytest.raises(ConfigError, match="data.profile.*Allowed: 'exp' \\| 'step'"):
        from_dict(TrainConfig, {"data": {"profile": "linear"}})
    with pytest.raises(ConfigError, match=r"optim.milestones\[1\]"):
        from_dict(TrainConfig, {"optim": {"milestones": [1, "x"]}})


def test_ints_accepted_for_floats_and_none_for_optional():
    cfg = from_dict(TrainConfig, {"optim": {"lr": 1}, "model": {"width": None}})
    assert isinstance(cfg.optim.lr, float) and cfg.model.width is None


def test_ranges():
    with pytest.raises(ConfigError, match="imbalance.*>= 1"):
        build_config(overrides=["data.imbalance=0.01"])
    with pytest.raises(ConfigError, match="milestones must be increasing"):
        build_config(overrides=["optim.milestones=[180,160]"])


def test_override_parsing_is_yaml_and_safe():
    assert parse_override("optim.lr=0.05") == (["optim", "lr"], 0.05)
    assert parse_override("optim.milestones=[1, 2]") == (["optim", "milestones"], [1, 2])
    assert parse_override("data.reverse=true") == (["data", "reverse"], True)
    # nothing is evaluated: a python expression stays a string
    assert parse_override("method.name=__import__('os')")[1] == "__import__('os')"
    with pytest.raises(ConfigError, match="key=value"):
        parse_override("optim.lr")


def test_yaml_python_tags_are_refused(tmp_path):
    f = tmp_path / "evil.yaml"
    f.write_text("epochs: !!python/object/apply:os.system ['echo pwned']\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        build_config(f)


def test_base_inheritance(tmp_path):
    (tmp_path / "base.yaml").write_text("epochs: 7\noptim: {lr: 0.2}\n")
    (tmp_path / "child.yaml").write_text("base: base.yaml\noptim: {momentum: 0.5}\n")
    cfg = build_config(tmp_path / "child.yaml")
    assert cfg.epochs == 7 and cfg.optim.lr == 0.2 and cfg.optim.momentum == 0.5


def test_cli_precedence_preset_file_flags_set(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("data: {dataset: cifar10}\nepochs: 50\noptim: {lr: 0.3}\n")
    args = build_parser().parse_args(
        ["train", "--config", str(f), "--epochs", "9", "--set", "optim.lr=0.01"]
    )
    cfg = config_from_args(args)
    assert cfg.model.arch == "resnet32"  # from the cifar10 preset
    assert cfg.epochs == 9 and cfg.optim.lr == 0.01


def test_no_arguments_is_digits_preset():
    cfg = config_from_args(build_parser().parse_args(["train"]))
    assert cfg.data.dataset == "digits" and cfg.model.arch == "small_cnn"
    assert cfg.epochs <= 50
