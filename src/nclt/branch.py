"""Branch a run from another run's checkpoint at the epoch where the two would part.

CE and CE-DRW (DRW from epoch 160), CE + MixUp and CE-DRW + MixUp (DRW from 180), or any pair
of rows that differ only by a schedule switching on at epoch E train identically for their
first E epochs: with the same seed, their epochs 1..E are the same computation. A run that
kept ``epoch_E.pt`` (``keep_checkpoints: [E]``) can therefore seed the other one
(``nclt train --config OTHER.yaml --branch-from RUN/epoch_E.pt``): the branch loads the
weights, optimizer, random state and history of epoch E and trains only the remaining epochs,
giving the same run as a fresh one (tested bit for bit).

That equality holds only if the two runs really are the same before E, so nothing here is
taken on trust. :func:`check_branch` refuses the branch, naming the first difference, unless

- every config key that affects training is equal (all but the method, the output folder and
  what only evaluation, logging or checkpoints read: :data:`IGNORED`), and
- the two methods are the same before epoch E: same sampler, head, views and extra heads, and
  at every training iteration before E the same terms with the same weights, the same loss
  modules (type, settings, tensor attributes; parameter and buffer names and shapes, whose
  values the checkpoint supplies) and the same schedule values (a term missing from one
  method counts as weight 0, a missing schedule as None, DRW's "before").

nclt has no library to lean on for this: it compares nclt's own declarative method parts.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import torch
from torch import nn

from nclt.config import TrainConfig, from_dict, to_dict
from nclt.errors import CheckpointError, ConfigError
from nclt.methods.recipes import BuildContext, Method, build_method
from nclt.methods.schedules import Progress, evaluate

# config keys that do not change the training computation of epochs 1..E
IGNORED = (
    "method",
    "out",
    "branch_from",
    "keep_checkpoints",
    "progress",
    "eval_every",
    "eval_all_from",
    "nc_every",
    "data.root",
    "data.test_batch_size",
)


def _flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and k != "args":
            out.update(_flatten(v, key + "."))
        else:
            out[key] = v
    return out


def config_differences(source: dict[str, Any], mine: dict[str, Any]) -> list[str]:
    """Keys (dotted) whose values differ, outside :data:`IGNORED`."""
    a, b = _flatten(source), _flatten(mine)
    keep = [k for k in sorted(set(a) | set(b)) if not any(_under(k, i) for i in IGNORED)]
    return [
        f"{k}: {a.get(k, '<unset>')!r} -> {b.get(k, '<unset>')!r}"
        for k in keep
        if a.get(k) != b.get(k)
    ]


def _under(key: str, prefix: str) -> bool:
    return key == prefix or key.startswith(prefix + ".")


def _same(x: Any, y: Any) -> bool:
    if isinstance(x, torch.Tensor) or isinstance(y, torch.Tensor):
        return (
            isinstance(x, torch.Tensor)
            and isinstance(y, torch.Tensor)
            and x.shape == y.shape
            and x.dtype == y.dtype
            and torch.equal(x.cpu(), y.cpu())
        )
    if isinstance(x, list | tuple) and isinstance(y, list | tuple):
        return len(x) == len(y) and all(_same(a, b) for a, b in zip(x, y, strict=True))
    if isinstance(x, dict) and isinstance(y, dict):
        return x.keys() == y.keys() and all(_same(x[k], y[k]) for k in x)
    return bool(x == y)


def module_differences(a: nn.Module, b: nn.Module, name: str) -> list[str]:
    """Type, public settings, parameters and buffers of two modules and their submodules."""
    if type(a) is not type(b):
        return [f"{name}: {type(a).__name__} vs {type(b).__name__}"]
    out: list[str] = []
    settings = [
        {k: v for k, v in vars(m).items() if not k.startswith("_") and k != "training"}
        for m in (a, b)
    ]
    for k in sorted(set(settings[0]) | set(settings[1])):
        if not _same(settings[0].get(k), settings[1].get(k)):
            out.append(f"{name}.{k}: {settings[0].get(k)!r} vs {settings[1].get(k)!r}")
    # parameters and buffers come from the checkpoint: only their names and shapes must agree
    sa, sb = a.state_dict(), b.state_dict()
    for k in sorted(set(sa) | set(sb)):
        if k not in sa or k not in sb or sa[k].shape != sb[k].shape:
            out.append(f"{name}: tensor {k} is in one only, or of another shape")
    ca, cb = dict(a.named_children()), dict(b.named_children())
    if ca.keys() != cb.keys():
        return [*out, f"{name}: submodules {sorted(ca)} vs {sorted(cb)}"]
    for k in ca:
        out.extend(module_differences(ca[k], cb[k], f"{name}.{k}"))
    return out


def method_differences(
    a: Method, b: Method, epoch: int, steps_per_epoch: int, epochs: int
) -> list[str]:
    """How methods ``a`` and ``b`` train differently in the epochs before ``epoch`` (0-based
    index of the first epoch after the branch point) of an ``epochs``-epoch run; empty when
    they are the same."""
    out = [
        f"{attr}: {getattr(a, attr)!r} vs {getattr(b, attr)!r}"
        for attr in (
            "sampler",
            "head",
            "head_args",
            "views",
            "trainable",
            "reinit_head",
            "update_frozen_bn",
            "objective_optim",
        )
        if not _same(getattr(a, attr), getattr(b, attr))
    ]
    if a.extra_heads.keys() != b.extra_heads.keys():
        out.append(f"extra heads: {sorted(a.extra_heads)} vs {sorted(b.extra_heads)}")
    else:
        for k in a.extra_heads:
            out.extend(module_differences(a.extra_heads[k], b.extra_heads[k], f"head {k}"))
    posts = [[getattr(f, "__qualname__", repr(f)) for f in m.post_step] for m in (a, b)]
    if posts[0] != posts[1]:
        out.append(f"post-step hooks: {posts[0]} vs {posts[1]}")
    if out:
        return out
    terms_a = {t.name: t for t in a.objective.terms}
    terms_b = {t.name: t for t in b.objective.terms}
    compared: set[str] = set()
    for e in range(epoch):
        for s in range(steps_per_epoch):
            p = Progress(e, s, steps_per_epoch, epochs)
            out.extend(_step_differences(a, b, terms_a, terms_b, p, compared))
            if out:
                return [f"at epoch {e + 1}, step {s}: {d}" for d in out]
    return out


def _step_differences(
    a: Method,
    b: Method,
    terms_a: dict[str, Any],
    terms_b: dict[str, Any],
    p: Progress,
    compared: set[str],
) -> list[str]:
    out: list[str] = []
    for name in list(terms_a) + [n for n in terms_b if n not in terms_a]:
        ta, tb = terms_a.get(name), terms_b.get(name)
        wa = float(evaluate(ta.weight, p)) if ta is not None else 0.0
        wb = float(evaluate(tb.weight, p)) if tb is not None else 0.0
        if wa != wb:
            out.append(f"loss term {name!r} weighs {wa:g} vs {wb:g}")
        elif wa != 0.0 and name not in compared:
            compared.add(name)
            assert ta is not None and tb is not None
            if (ta.reads, ta.kwargs) != (tb.reads, tb.kwargs):
                out.append(
                    f"loss term {name!r} reads {ta.reads} {ta.kwargs} vs {tb.reads} {tb.kwargs}"
                )
            out.extend(module_differences(ta.loss, tb.loss, f"loss term {name!r}"))
    for key in sorted(set(a.schedules) | set(b.schedules)):
        va = a.schedules[key](p) if key in a.schedules else None
        vb = b.schedules[key](p) if key in b.schedules else None
        if not _same(va, vb):
            out.append(f"schedule {key!r} differs")
    return out


def check_branch(
    state: dict[str, Any],
    mine_cfg: dict[str, Any],
    method: Method,
    ctx: BuildContext,
    steps_per_epoch: int,
    path: str,
) -> None:
    """Refuse a branch from ``state`` (a checkpoint) into a run of config ``mine_cfg`` whose
    method is ``method``, unless the two runs are the same up to the checkpoint's epoch."""
    source = state.get("config") or {}
    if not source:
        raise CheckpointError(f"{path} holds no config: not an nclt training checkpoint")
    done = int(state["epoch"]) + 1  # epochs the checkpoint has finished
    if done >= int(mine_cfg["epochs"]):
        raise ConfigError(
            f"{path} has finished {done} epochs; this run has {mine_cfg['epochs']}: "
            "nothing left to train"
        )
    # through the typed config, so that keys newer than the checkpoint take their defaults
    source = to_dict(from_dict(TrainConfig, source))
    diffs = config_differences(source, mine_cfg)
    if diffs:
        raise ConfigError(
            f"cannot branch from {path}: the two runs' configs differ outside the method "
            f"({'; '.join(diffs[:4])}{'; ...' if len(diffs) > 4 else ''})"
        )
    src = source["method"]
    theirs = build_method(src["name"], src.get("args") or {}, replace(ctx, head=None))
    diffs = method_differences(theirs, method, done, steps_per_epoch, int(mine_cfg["epochs"]))
    if diffs:
        raise ConfigError(
            f"cannot branch from {path} (epoch {done}): {src['name']!r} and "
            f"{mine_cfg['method']['name']!r} do not train the same way before it: {diffs[0]}"
            " (branch from a checkpoint before the methods part, e.g. DRW's switch epoch)"
        )
