"""One optimization step of every method: 2 gloo processes with batch b == 1 process with 2b.

Each case builds the real run (``build_run`` / ``build_training``: the method's objective,
heads, schedules and class weights, the DDP wrapper of network + objective) on the embedded
digits with a small CNN whose BatchNorms are synchronous (``sync_bn``), in float64, and takes
one step through ``engine.train_one_epoch`` at the last epoch (DRW weights and schedules on).
Rank r holds rows ``8r .. 8r + 7`` of a fixed 16-image batch; the one-process reference
holds all 16 in the same order (rank-major, as the losses gather them). Compared: the epoch's
loss and every loss term (reduced over ranks), every parameter and buffer after the step,
and that both ranks agree.

Known, documented differences (docs/DISTRIBUTED.md): BCL's prototype MLP normalizes the K
classifier rows, which every rank holds in full; under ``sync_bn`` its running variance
counts ``W K`` rows instead of ``K`` (unbiased factor), so that buffer is not compared
(the prototypes are not used at evaluation). ``tau-norm`` trains nothing and is not stepped.

``scope: local`` (per-process statistics, as per-GPU code computes them) is checked without
``sync_bn``: each rank is then a one-process step on its own half, and the DDP update is the
mean of the two halves' updates (SGD's first step is linear in the gradient).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.distributed as tdist
import torch.multiprocessing as mp

pytestmark = pytest.mark.dist

B = 8  # per process
CLASSES = [0, 0, 1, 2, 0, 3, 1, 5, 0, 1, 2, 4, 0, 3, 6, 7]  # 16 rows, every class twice or more
SMALL = {  # narrow projection heads: the test is about the plumbing, not capacity
    "bcl": {"hidden_dim": 16, "proj_dim": 8},
    "allnc": {"proj_hidden": 16, "proj_dim": 8, "pred_hidden": 4},
    "allnc++": {"proj_hidden": 16, "proj_dim": 8, "pred_hidden": 4},
}
STAGE2 = ("crt", "lws")
LOCAL = [  # (id, method, args): per-process statistics
    ("bcl-local", "bcl", {"bcl": {**SMALL["bcl"], "scope": "local"}}),
    ("inc-local", "ce+inc", {"inc": {"scope": "local"}}),
    ("drw-local", "ce-drw", {"ce-drw": {"scope": "local"}}),
    ("arb-local", "arb", {"arb": {"scope": "local"}}),
    ("allnc-local", "allnc", {"allnc": {**SMALL["allnc"], "scope": "local"}}),
]
NOT_STEPPED = ("tau-norm",)  # trains no parameter (epochs = 0)


def _cases() -> list[tuple[str, str, dict[str, Any]]]:
    """(id, method name, method.args) for every registered component, plus variants."""
    from nclt.methods.recipes import METHODS

    cases = []
    for name in METHODS:
        if name in NOT_STEPPED:
            continue
        if name.startswith("+"):
            cases.append((f"ce{name}", f"ce{name}", {}))
        else:
            cases.append((name, name, {name: SMALL[name]} if name in SMALL else {}))
    cases += [
        ("etf-dr+disa", "etf-dr+disa", {}),  # DisA on the fixed-ETF head's features
        # the official script's DisA: batch-standardized features (global batch statistics)
        ("ce+disa-code", "ce+disa", {"disa": {"standardize": True, "gradient": "unrolled"}}),
        ("inc-learnable", "inc", {"inc": {"centres": "learnable"}}),  # centres in the objective
        # a regularizer with learnable centres at weight 0 this step: centres get no gradient
        ("inc-learnable-off", "inc", {"inc": {"centres": "learnable", "start_epoch": 5}}),
        ("bcl-shared", "bcl", {"bcl": {**SMALL["bcl"], "prototype_head": "shared"}}),
    ]
    return cases


def _cfg(method: str, args: dict[str, Any], init_from: str = "", sync_bn: bool = True,
         device: str = "cpu") -> Any:
    from nclt.config import build_config

    sets = ["data.dataset=digits", "model.arch=small_cnn", "model.width=4",
            f"sync_bn={str(sync_bn).lower()}",
            "precision=fp32", "channels_last=false", f"device={device}", "epochs=5",
            f"data.batch_size={2 * B}", "data.num_workers=0", "optim.schedule=constant",
            "optim.warmup_epochs=0", "optim.lr=0.1", "progress=false", f"method.name={method}"]
    if init_from:
        sets.append(f"init_from={init_from}")
    cfg = build_config(None, sets)
    cfg.method.args = args
    return cfg


def _batch(train_set: Any, views: int) -> tuple[list[torch.Tensor], torch.Tensor]:
    targets = torch.as_tensor(train_set.targets)
    used: dict[int, int] = {}
    rows = []
    for c in CLASSES:
        idx = torch.nonzero(targets == c).flatten()
        rows.append(int(idx[used.get(c, 0)]))
        used[c] = used.get(c, 0) + 1
    x = torch.stack([train_set[i][0] if not isinstance(train_set[i][0], tuple | list)
                     else train_set[i][0][0] for i in rows])
    x = x if x.dtype == torch.uint8 else (x * 255).round().to(torch.uint8)
    variants = [x, x.flip(-1), x.roll(1, -2), x.flip(-2)]
    return variants[:views], targets[rows]


def _first_stage(path: Path) -> None:
    from nclt import checkpoint as ckpt
    from nclt.runner import _checkpoint_state, build_run

    run = build_run(_cfg("ce", {}))
    ckpt.save_atomic(_checkpoint_state(run, None, 0, {"top1": -1.0}, []), path)


def _one_step(case: tuple[str, str, dict[str, Any]], rows: slice, stage1: str,
              sync_bn: bool = True, device: str = "cpu") -> dict[str, Any]:
    """One step of ``case`` on ``rows`` of the fixed batch (also the CUDA tests' step)."""
    from nclt.engine import train_one_epoch
    from nclt.runner import build_run, build_training

    _, method, args = case
    run = build_run(_cfg(method, args, stage1 if method in STAGE2 else "", sync_bn, device))
    run.model.double()
    run.method.objective.double()
    setup = build_training(run)
    xs, labels = _batch(run.train_set, len(run.method.views or [None]))
    views = [v[rows] for v in xs]
    batch = (views if len(views) > 1 else views[0], labels[rows])
    stats = train_one_epoch(setup.env, [batch], epoch=4, epochs=5, steps_per_epoch=1)
    state = {f"model.{k}": v.detach().cpu().clone() for k, v in run.model.state_dict().items()}
    state.update({f"objective.{k}": v.detach().cpu().clone()
                  for k, v in run.method.objective.state_dict().items()})
    losses = {k: v for k, v in stats.items() if k not in (
        "lr", "seconds", "images_per_second", "skipped_steps", "train_top1")}
    return {"losses": losses, "top1": stats["train_top1"], "state": state}


def _worker(rank: int, init_file: str, out_dir: str, stage1: str) -> None:
    torch.set_num_threads(1)
    tdist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    try:
        rows = slice(B * rank, B * rank + B)
        out = {c[0]: _one_step(c, rows, stage1) for c in _cases()}
        out.update({c[0]: _one_step(c, rows, stage1, sync_bn=False) for c in LOCAL})
        torch.save(out, Path(out_dir, f"rank{rank}.pt"))
    finally:
        tdist.destroy_process_group()


# BatchNorm running variances over the K replicated classifier rows (module docstring)
SKIP_RUNNING_VAR = {"bcl": "prototype_mlp", "bcl-shared": "proj.mlp"}


def _compare(name: str, got: dict[str, Any], want: dict[str, Any], tol: float = 1e-6) -> None:
    assert got["losses"].keys() == want["losses"].keys(), name
    for k, v in want["losses"].items():
        assert got["losses"][k] == pytest.approx(v, rel=tol, abs=1e-12), f"{name}: loss {k}"
    assert got["top1"] == pytest.approx(want["top1"]), name
    for k, w in want["state"].items():
        g = got["state"][k]
        if not w.is_floating_point():
            assert torch.equal(g, w), f"{name}: {k}"
            continue
        skip = SKIP_RUNNING_VAR.get(name.split(" ")[0])
        if skip and skip in k and "running_var" in k:
            continue
        torch.testing.assert_close(g, w, rtol=tol, atol=1e-9, msg=f"{name}: {k}")


@pytest.fixture(scope="module")
def two_and_one(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[dict], dict, dict]:
    tmp = tmp_path_factory.mktemp("ddp_step")
    stage1 = str(tmp / "stage1.pt")
    _first_stage(Path(stage1))
    os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
    # spawn, not fork: forking after the parent's OpenMP pool has run can deadlock the child.
    workers = mp.start_processes(_worker, args=(str(tmp / "init"), str(tmp), stage1),
                                 nprocs=2, start_method="spawn", join=False)
    # the one-process references, while the workers run
    whole: dict[str, Any] = {c[0]: _one_step(c, slice(0, 2 * B), stage1) for c in _cases()}
    before = {c[0]: _initial_state(c, stage1) for c in _cases()}
    for c in LOCAL:  # the two halves, each on one process
        whole[c[0]] = [_one_step(c, slice(B * r, B * r + B), stage1, sync_bn=False)
                       for r in (0, 1)]
    while not workers.join():
        pass
    ranks = [torch.load(tmp / f"rank{r}.pt") for r in (0, 1)]
    return ranks, whole, before


def _initial_state(case: tuple[str, str, dict[str, Any]], stage1: str) -> dict[str, torch.Tensor]:
    from nclt.runner import build_run

    _, method, args = case
    run = build_run(_cfg(method, args, stage1 if method in STAGE2 else ""))
    run.model.double()
    return {f"model.{k}": v.detach().clone() for k, v in run.model.state_dict().items()}


@pytest.mark.parametrize("case", [c[0] for c in _cases()])
def test_two_processes_step_like_one(case: str, two_and_one: Any) -> None:
    ranks, whole, before = two_and_one
    _compare(case, ranks[0][case], whole[case])
    _compare(f"{case} (rank 1)", ranks[1][case], ranks[0][case], tol=1e-12)
    # the step moved the weights (a comparison of two unchanged models proves nothing)
    moved = [k for k, v in before[case].items() if k in whole[case]["state"]
             and v.is_floating_point() and not torch.equal(v, whole[case]["state"][k])]
    assert moved, f"{case}: the step changed no weight"


def test_every_method_is_covered() -> None:
    from nclt.methods.recipes import METHODS

    ids = {c[0] for c in _cases()}
    for name in METHODS:
        assert name in NOT_STEPPED or name in ids or f"ce{name}" in ids, name


@pytest.mark.parametrize("case", [c[0] for c in LOCAL])
def test_local_scope_averages_the_per_process_steps(case: str, two_and_one: Any) -> None:
    ranks, whole, _ = two_and_one
    halves = whole[case]
    ranks = [ranks[0][case], ranks[1][case]]
    for r in (0, 1):  # each rank's loss terms are its own half's (the epoch log averages them)
        for k, v in ranks[r]["losses"].items():
            want = (halves[0]["losses"][k] + halves[1]["losses"][k]) / 2
            assert v == pytest.approx(want, rel=1e-6, abs=1e-12), f"{case}: loss {k}"
    for k, w0 in halves[0]["state"].items():
        if not w0.is_floating_point():
            continue
        if "running_" in k:  # without sync_bn each rank tracks its own half's statistics
            for r in (0, 1):
                torch.testing.assert_close(ranks[r]["state"][k], halves[r]["state"][k],
                                           rtol=1e-6, atol=1e-9, msg=f"{case}: {k}")
            continue
        want = (w0 + halves[1]["state"][k]) / 2
        torch.testing.assert_close(ranks[0]["state"][k], want, rtol=1e-6, atol=1e-9,
                                   msg=f"{case}: {k}")
