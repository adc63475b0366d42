"""Typed, validated run configuration.

Config flows one way: YAML file (read with ``yaml.safe_load``) and ``--set a.b=value``
overrides -> plain dict -> :func:`from_dict` -> :class:`TrainConfig`. An unknown key or a
value of the wrong type is a :class:`~nclt.errors.ConfigError` that names the key and what
is allowed. Nothing from a config is evaluated as code. Runtime facts (class counts, number
of classes, feature width) are never typed in a config; builders inject them.
"""

from __future__ import annotations

import dataclasses
import math
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin

import yaml

from nclt.errors import ConfigError, closest


@dataclass
class DataConfig:
    """Which data, how imbalanced, how it is sampled and augmented."""

    dataset: str = "digits"
    root: str = "data"
    imbalance: float = 100.0
    profile: Literal["exp", "step"] = "exp"
    reverse: bool = False
    subset_seed: int = 0
    download: bool = False
    train_list: str | None = None  # list-file datasets (ImageNet-LT, Places-LT, iNaturalist)
    test_list: str | None = None
    sampler: str = "instance"  # instance | class_balanced | sqrt
    train_view: str = "crop_flip"
    test_view: str = "none"
    # augment whole batches in the training process (views none / crop_flip / randaugment),
    # per-sample draws: the per-image views' distribution, fewer CPU cycles
    batch_augment: bool = False
    batch_size: int = 128
    test_batch_size: int = 500
    num_workers: int = 2
    group_rule: Literal["default", "allnc"] = "default"


@dataclass
class ModelConfig:
    """Backbone and classifier head."""

    arch: str = "small_cnn"
    width: int | None = None  # base channels; None = the arch's default (ResNet-32: 16 -> 64-d)
    head: str = "linear"  # linear | cosine
    head_bias: bool = True
    head_scale: float = 1.0  # logit scale of the cosine head
    # False: the head keeps its initialization and is never trained (a fixed random
    # classifier; the official DisA CIFAR script gives only the backbone to SGD)
    head_trainable: bool = True


@dataclass
class OptimConfig:
    """SGD and the learning-rate schedule."""

    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 2e-4
    nesterov: bool = False
    schedule: Literal["step", "cosine", "constant"] = "step"
    milestones: list[int] = field(default_factory=lambda: [160, 180])
    gamma: float = 0.01  # LDAM-DRW: x0.01 at 160, x0.0001 at 180
    warmup_epochs: int = 5
    min_lr: float = 0.0  # floor of the cosine schedule


@dataclass
class MethodConfig:
    """A method by name (``ldam-drw+inc+disa``) and per-component arguments."""

    name: str = "ce"
    args: dict[str, dict[str, Any]] = field(default_factory=dict)


@dataclass
class TrainConfig:
    """The whole run."""

    method: MethodConfig = field(default_factory=MethodConfig)
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    epochs: int = 200
    seed: int = 0
    mixup_alpha: float = 0.0  # 0 = no MixUp
    cutmix_alpha: float = 0.0
    precision: Literal["bf16", "fp32", "fp16"] = "bf16"
    channels_last: bool = True
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    threads: int = 0  # torch intra-op threads (0 = torch's default)
    eval_every: int = 1
    # from this epoch (1-based) on, every epoch is evaluated whatever eval_every says (0 = off):
    # sparse evaluation early, dense where the best epoch lies (after the lr decay)
    eval_all_from: int = 0
    nc_every: int = 0  # NC metrics on the training features every N epochs (0 = only at the end)
    grad_probe: bool = False  # log ARB Fig. 5's gradient components of the rarest class
    on_nonfinite: Literal["stop", "skip"] = "stop"
    deterministic: bool = False  # torch.use_deterministic_algorithms
    sync_bn: bool = False  # under torchrun: BatchNorm statistics over the global batch
    progress: bool = True
    init_from: str = ""  # checkpoint whose weights initialise the network (second stages)
    # keep epoch_<E>.pt after these (1-based) epochs: branch points for branch_from (an epoch
    # past the run's end is never reached: a protocol's points survive a shorter --epochs)
    keep_checkpoints: list[int] = field(default_factory=list)
    # continue another run's epoch_<E>.pt under this config when the two train the same way
    # for epochs 1..E (CE -> CE-DRW from E); nclt.branch checks that, or refuses
    branch_from: str = ""
    out: str = ""  # output folder; "" = runs/<dataset>_<method>_if<IF>_s<seed>

    def run_dir(self) -> Path:
        if self.out:
            return Path(self.out)
        imb = f"{self.data.imbalance:g}"
        return Path("runs") / f"{self.data.dataset}_{self.method.name}_if{imb}_s{self.seed}"


# ----------------------------------------------------------------------------- validation


def _type_name(tp: Any) -> str:
    if get_origin(tp) is Literal:
        return " | ".join(repr(a) for a in get_args(tp))
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


_FLOAT_TEXT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Check ``value`` against the annotation ``tp`` (ints are accepted for floats)."""
    origin = get_origin(tp)
    if tp is Any:
        return value
    if origin is Literal:
        if value not in get_args(tp):
            raise ConfigError(
                f"{key}: {value!r} is not allowed.{closest(str(value), map(str, get_args(tp)))}"
                f" Allowed: {_type_name(tp)}"
            )
        return value
    if origin in (Union, types.UnionType):
        args = get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _coerce(value, a, key)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(errors[0] if len(errors) == 1 else f"{key}: {value!r} has a wrong type")
    if origin is list:
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        (inner,) = get_args(tp) or (Any,)
        return [_coerce(v, inner, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {value!r}")
        kt, vt = get_args(tp) or (Any, Any)
        return {_coerce(k, kt, key): _coerce(v, vt, f"{key}.{k}") for k, v in value.items()}
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value, key)
    if tp is float:
        if isinstance(value, str) and _FLOAT_TEXT.fullmatch(value.strip()):
            return float(value)  # "1e-3": YAML 1.1 needs a dot to read it as a number
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{key}: expected a number, got {value!r}")
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: expected true or false, got {value!r}")
        return value
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key}: expected a string, got {value!r}")
        return value
    raise ConfigError(f"{key}: unsupported type {tp}")  # pragma: no cover


def check_kwargs(fn: Any, given: dict[str, Any], prefix: str) -> dict[str, Any]:
    """``given`` checked against ``fn``'s annotations as config values are (ints for floats).

    For keyword arguments that come from a config (``method.args.<component>``); arguments
    without an annotation of a config type (int, float, bool, str, Literal, optional, list,
    dict) pass unchecked.
    """
    try:
        hints = typing.get_type_hints(fn)
    except Exception:  # unresolvable annotations: nothing to check against
        return dict(given)
    out = {}
    for key, value in given.items():
        tp = hints.get(key)
        out[key] = _coerce(value, tp, f"{prefix}.{key}") if _config_type(tp) else value
    return out


def _config_type(tp: Any) -> bool:
    if tp in (int, float, bool, str) or get_origin(tp) in (Literal, list, dict):
        return True
    if get_origin(tp) in (Union, types.UnionType):
        return all(a is type(None) or _config_type(a) for a in get_args(tp))
    return False


def from_dict(cls: type, data: Any, prefix: str = "") -> Any:
    """Build the dataclass ``cls`` from a plain mapping, validating keys and types."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{prefix or 'config'}: expected a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in data.items():
        full = f"{prefix}.{key}" if prefix else str(key)
        if key not in names:
            raise ConfigError(
                f"unknown config key {full!r}.{closest(str(key), names)} "
                f"Allowed here: {', '.join(names)}"
            )
        kwargs[key] = _coerce(value, hints[key], full)
    return cls(**kwargs)


def to_dict(cfg: Any) -> dict[str, Any]:
    return dataclasses.asdict(cfg)


def parse_override(item: str) -> tuple[list[str], Any]:
    """``"optim.lr=0.05"`` -> (["optim", "lr"], 0.05); the value is parsed as YAML (safely)."""
    if "=" not in item:
        raise ConfigError(f"--set {item!r}: expected key=value, for example optim.lr=0.05")
    key, raw = item.split("=", 1)
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as e:
        raise ConfigError(f"--set {item!r}: cannot parse the value: {_yaml_problem(e)}") from None
    return [k for k in key.strip().split(".") if k], value


def apply_override(data: dict[str, Any], path: list[str], value: Any) -> None:
    """Set ``data[path[0]][path[1]]... = value``, creating mappings on the way."""
    node = data
    for k in path[:-1]:
        nxt = node.get(k)
        if nxt is None:
            nxt = node[k] = {}
        if not isinstance(nxt, dict):
            raise ConfigError(f"--set {'.'.join(path)}: {k!r} is not a section")
        node = nxt
    node[path[-1]] = value


def _yaml_problem(e: yaml.YAMLError) -> str:
    """A YAML error on one line: ``line L, column C: problem`` (python tags named as such)."""
    problem = getattr(e, "problem", None) or str(e).splitlines()[0]
    if "python/" in problem:
        problem += " (Python tags are not allowed: nclt reads YAML with safe_load)"
    mark = getattr(e, "problem_mark", None)
    return f"line {mark.line + 1}, column {mark.column + 1}: {problem}" if mark else problem


def load_yaml(path: str | Path, _seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    """Read a YAML config file safely; supports ``base: other.yaml`` inheritance."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {str(path)!r} does not exist")
    if path.resolve() in _seen:
        chain = " -> ".join(str(p) for p in (*_seen, path.resolve()))
        raise ConfigError(f"{path}: 'base:' inheritance loops ({chain})")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {_yaml_problem(e)}") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"cannot read config file {str(path)!r}: {e}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping")
    base = data.pop("base", None)
    if base is not None:
        if not isinstance(base, str):
            raise ConfigError(f"{path}: 'base' must be a file name, got {base!r}")
        parent = load_yaml(path.parent / base, (*_seen, path.resolve()))
        data = merge(parent, data)
    return data


def merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """Recursive dict merge; ``over`` wins."""
    out = dict(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = merge(out[k], v)
        else:
            out[k] = v
    return out


def build_config(
    file: str | Path | None = None,
    overrides: list[str] | None = None,
    extra: dict[str, Any] | None = None,
) -> TrainConfig:
    """File, then ``extra`` (CLI flags such as --method), then ``--set`` overrides."""
    data: dict[str, Any] = load_yaml(file) if file else {}
    if extra:
        data = merge(data, extra)
    for item in overrides or []:
        path, value = parse_override(item)
        apply_override(data, path, value)
    cfg = from_dict(TrainConfig, data)
    validate(cfg)
    return cfg


def validate(cfg: TrainConfig) -> None:
    """Range checks that types alone do not express."""
    checks = [
        (
            cfg.epochs >= 1 or (cfg.epochs == 0 and bool(cfg.init_from)),
            "epochs must be >= 1 (0 only for a second stage that trains nothing, e.g. tau-norm)",
        ),
        (math.isfinite(cfg.data.imbalance), "data.imbalance must be a finite number"),
        (cfg.data.imbalance >= 1, "data.imbalance is n_max/n_min and must be >= 1 (100, not 0.01)"),
        (
            cfg.data.batch_size >= 2,
            "data.batch_size must be >= 2: BatchNorm in training mode and "
            "the per-batch statistics of the losses need more than one sample per batch",
        ),
        (
            0 <= cfg.seed < 2**32 and 0 <= cfg.data.subset_seed < 2**32,
            "seed and data.subset_seed must lie in 0..2**32-1",
        ),
        (cfg.data.test_batch_size >= 1, "data.test_batch_size must be >= 1"),
        (cfg.data.num_workers >= 0, "data.num_workers must be >= 0"),
        (cfg.optim.lr > 0, "optim.lr must be > 0"),
        (cfg.optim.weight_decay >= 0, "optim.weight_decay must be >= 0"),
        (0 <= cfg.optim.momentum < 1, "optim.momentum must be in [0, 1)"),
        (cfg.optim.warmup_epochs >= 0, "optim.warmup_epochs must be >= 0"),
        (cfg.mixup_alpha >= 0 and cfg.cutmix_alpha >= 0, "mixup/cutmix alpha must be >= 0"),
        (cfg.eval_every >= 1, "eval_every must be >= 1"),
        (cfg.eval_all_from >= 0, "eval_all_from must be >= 0 (0 = off)"),
        (cfg.nc_every >= 0, "nc_every must be >= 0"),
        (cfg.model.width is None or cfg.model.width >= 1, "model.width must be >= 1"),
        (
            all(e >= 1 for e in cfg.keep_checkpoints),
            f"keep_checkpoints {cfg.keep_checkpoints}: epochs are 1-based (>= 1)",
        ),
        (
            not (cfg.branch_from and cfg.init_from),
            "branch_from continues another run; init_from starts a second stage: use one",
        ),
    ]
    for ok, msg in checks:
        if not ok:
            raise ConfigError(msg)
    if sorted(cfg.optim.milestones) != cfg.optim.milestones:
        raise ConfigError("optim.milestones must be increasing")
