"""Build a run from a validated :class:`~nclt.config.TrainConfig` and train it.

Order of work: data -> backbone -> method (needs class counts and feature width) -> head ->
optimizer -> (resume) -> epochs -> final evaluation and neural-collapse metrics -> outputs.
Each epoch is seeded from ``(seed, epoch)`` (model-independent RNG streams, sampler epoch,
DataLoader generator), so a run resumed from the checkpoint of epoch e replays epoch e+1
exactly as an uninterrupted run would.
"""

from __future__ import annotations

import json
import logging
import os
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from nclt import checkpoint as ckpt
from nclt import dist, progress
from nclt.branch import check_branch
from nclt.config import TrainConfig, load_yaml, to_dict
from nclt.data import DATASETS
from nclt.data.samplers import build_sampler
from nclt.data.views import BATCH_VIEWS, batch_mix, build_batch_view, build_view
from nclt.engine import Precision, TrainEnv, TrainStep, evaluate, predict, train_one_epoch
from nclt.errors import CheckpointError, ConfigError, NcltError
from nclt.interrupt import (
    StopOnSignal,
    kill_workers_at_exit,
    resume_hint,
    workers_leave_signals_to_main,
)
from nclt.methods.recipes import BuildContext, Method, build_method
from nclt.metrics.accuracy import LongTailAccuracy
from nclt.metrics.collapse import (
    CollapseAccumulator,
    NC4Accumulator,
    collapse_metrics_from_loader,
)
from nclt.metrics.gradients import class_gradient_components
from nclt.models import BACKBONES, HEADS, Network
from nclt.optim import LRSchedule, build_optimizer
from nclt.runlog import MetricsCSV, environment, write_json, write_yaml

log = logging.getLogger("nclt")

IMAGE_SIZES = {"digits": 8, "cifar10": 32, "cifar100": 32}


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
        return torch.device("cpu")
    try:
        dev = torch.device(name)
    except RuntimeError:
        raise ConfigError(
            f"device {name!r} is not a device name; use auto, cpu, cuda or cuda:N"
        ) from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(
            f"device {name!r} requested but CUDA is not available; use device=cpu "
            "(nclt eval / report: --device cpu)"
        )
    if dev.type == "cuda" and dev.index is None and dist.env_world_size() > 1:
        dev = torch.device("cuda", dist.env_local_rank())  # torchrun: one GPU per process
    return dev


def epoch_seed(seed: int, epoch: int) -> int:
    """A distinct, reproducible seed per (run seed, epoch)."""
    return (seed * 1_000_003 + epoch * 7919 + 12345) % (2**31 - 1)


def rank_seed(seed: int, rank: int) -> int:
    """The seed of process ``rank`` (``seed`` itself on rank 0 and on one process)."""
    return (seed + 7_654_321 * rank) % (2**31 - 1)


def seed_all(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


@dataclass
class Run:
    """Everything built for a run (also what ``nclt eval`` and the tests inspect)."""

    cfg: TrainConfig
    device: torch.device
    train_set: Dataset
    test_set: Dataset
    train_eval_set: Dataset
    model: Network
    method: Method
    class_counts: torch.Tensor
    context: BuildContext  # what the method was built from (a branch rebuilds its source's)
    # the views the training step makes from the loader's raw batch (data.batch_augment)
    batch_views: list[str] | None = None


# views whose geometric part is CIFAR's pad-and-crop unless told otherwise
_BASED_VIEWS = ("autoaugment", "randaugment", "cutout", "autoaugment_cutout")


def make_view(name: str, dataset: str) -> Any:
    """The view ``name`` at the dataset's image size.

    Small-image datasets (CIFAR, digits) keep the pad-and-crop base; for the 224-pixel
    list-file datasets the augmentation views sit on RandomResizedCrop + flip instead, and
    AutoAugment uses its ImageNet policy.
    """
    if dataset in IMAGE_SIZES:
        return build_view(name, image_size=IMAGE_SIZES[dataset])
    kw: dict[str, Any] = {"base": "rrc_flip"} if name in _BASED_VIEWS else {}
    if name in ("autoaugment", "autoaugment_cutout"):
        kw["policy"] = "imagenet"
    return build_view(name, image_size=224, **kw)


def build_datasets(cfg: TrainConfig, train_views: list[str]) -> tuple[Any, Any, Any]:
    """(train with the method's views, test, train without augmentation) for ``cfg.data``."""
    d = cfg.data
    common = dict(
        root=d.root,
        imbalance=d.imbalance,
        profile=d.profile,
        reverse=d.reverse,
        subset_seed=d.subset_seed,
        download=d.download,
        train_list=d.train_list,
        test_list=d.test_list,
    )
    views = [make_view(v, d.dataset) for v in train_views]
    train_set = DATASETS.build(d.dataset, train=True, views=views, **common)
    test_view = [make_view(d.test_view, d.dataset)]
    test_set = DATASETS.build(d.dataset, train=False, views=test_view, **common)
    train_eval = DATASETS.build(d.dataset, train=True, views=test_view, **common)
    return train_set, test_set, train_eval


def batched_views(cfg: TrainConfig, views: list[str]) -> list[str] | None:
    """The views the training step makes batch-wise (``data.batch_augment``), or None.

    ``views``: what the run trains on (the method's own, else ``data.train_view``). Batched
    views need a small-image dataset (they pad and crop, as the per-image views of CIFAR and
    digits do) and a batched twin of every view (``none``, ``crop_flip``, ``randaugment``);
    otherwise the run augments image by image in the DataLoader workers, the same
    distribution at the per-image cost, and says so.
    """
    if not cfg.data.batch_augment:
        return None
    if cfg.data.dataset not in IMAGE_SIZES:
        why = f"{cfg.data.dataset} augments at 224 pixels"
    elif any(v not in BATCH_VIEWS for v in views):
        missing = sorted({v for v in views if v not in BATCH_VIEWS})
        why = f"view(s) {', '.join(missing)} have no batched version"
    else:
        return list(views)
    log.warning(
        "data.batch_augment: %s (batched: %s and the small-image datasets); augmenting image "
        "by image in the DataLoader workers instead",
        why,
        ", ".join(BATCH_VIEWS.names()),
    )
    return None


def build_run(cfg: TrainConfig) -> Run:
    """Data, model and method for ``cfg`` (no optimizer, no outputs)."""
    device = resolve_device(cfg.device)
    seed_all(cfg.seed)
    views = ["none"] if cfg.data.batch_augment else [cfg.data.train_view]
    train_set, test_set, train_eval = build_datasets(cfg, views)
    counts = torch.as_tensor(train_set.class_counts, dtype=torch.long)
    in_channels = len(train_set.mean)
    bb_kwargs: dict[str, Any] = {"in_channels": in_channels}
    if cfg.model.width is not None:
        bb_kwargs["width"] = cfg.model.width
    backbone = BACKBONES.build(cfg.model.arch, **bb_kwargs)
    ctx = BuildContext(
        counts, train_set.num_classes, backbone.feature_dim, cfg.epochs, seed=cfg.seed
    )
    method = build_method(cfg.method.name, cfg.method.args, ctx)
    batched = batched_views(cfg, method.views or [cfg.data.train_view])
    head_kwargs = {
        "bias": cfg.model.head_bias,
        "scale": cfg.model.head_scale,
        **method.head_args,
    }  # a method's head_args (BCL's scale 30) win
    head = HEADS.build(
        method.head or cfg.model.head,
        feature_dim=backbone.feature_dim,
        num_classes=train_set.num_classes,
        **head_kwargs,
    )
    # multi-view methods (BCL, AllNC) choose their own views
    if method.views and len(method.views) > 1 and (cfg.mixup_alpha > 0 or cfg.cutmix_alpha > 0):
        raise ConfigError(
            f"{method.name} trains on {len(method.views)} views; MixUp/CutMix would mix "
            "only the first one and corrupt the other terms: set mixup_alpha=0 and "
            "cutmix_alpha=0"
        )
    if batched is None and (method.views or cfg.data.batch_augment):
        train_set.views = [
            make_view(v, cfg.data.dataset) for v in method.views or [cfg.data.train_view]
        ]  # image by image in the workers (else the training step makes the views)
    if not cfg.model.head_trainable:  # a second stage's `trainable` prefixes override this
        head.requires_grad_(False)
    model = Network(backbone, head, train_set.mean, train_set.std, method.extra_heads)
    model = model.to(device)
    if cfg.sync_bn and dist.is_dist():  # BatchNorm over the global batch (CPU too)
        model = dist.convert_sync_batchnorm(model, device)
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    method.objective.to(device)
    provided = {"logits", "features", "head_weight", "labels", "labels_b", "lam", "class_weight"}
    provided |= set(method.extra_heads)
    if method.views and len(method.views) > 1:
        provided |= {"view_features", "view_logits"}
    if hasattr(head, "embed"):
        provided.add("head_features")
    provided |= set(method.schedules)
    method.objective.check_reads(provided)
    run = Run(cfg, device, train_set, test_set, train_eval, model, method, counts, ctx, batched)
    if method.trainable is not None and not cfg.init_from:
        raise ConfigError(
            f"{method.name} is a second stage: run it on a finished run with "
            f"`nclt train --stage2 {method.name} --from RUN_DIR`"
        )
    if cfg.init_from:
        init_from_checkpoint(run, cfg.init_from)
    return run


def load_run(
    path: str | Path, data_root: str | None = None, device: str | None = None
) -> tuple[Run, dict[str, Any]]:
    """Rebuild the run a checkpoint came from and load its weights: (run, checkpoint state).

    ``data_root`` and ``device`` replace the checkpoint's own when given (the data may live
    elsewhere on the machine that evaluates it).
    """
    from nclt.config import from_dict

    state = ckpt.load(path)
    cfg = from_dict(TrainConfig, state["config"])
    if data_root:
        cfg.data.root = data_root
    if device:
        cfg.device = device
    if cfg.precision == "fp16" and resolve_device(cfg.device).type != "cuda":
        log.info("fp16 autocast needs CUDA: this checkpoint is evaluated in fp32")
        cfg.precision = "fp32"
    cfg.init_from = ""  # the checkpoint holds the weights; no second-stage initialisation
    run = build_run(cfg)
    check_compatible(state, run)
    run.model.load_state_dict(state["model"])
    return run, state


SOURCE_HEADS = {"lws": ("linear",), "tau_norm": ("linear",)}  # stage-2 heads need these


def init_from_checkpoint(run: Run, path: str) -> None:
    """Second stages: take a finished run's weights, then freeze what the method keeps fixed.

    The backbone (and, unless the method re-initialises it, the head) is loaded from
    ``path``; parameters outside the method's ``trainable`` prefixes stop requiring
    gradients, and a frozen backbone stays in eval mode during training (its BatchNorm
    statistics are those of the first stage).
    """
    state = ckpt.load(path)
    if state.get("num_classes") != int(run.train_set.num_classes):
        raise CheckpointError(
            f"{path} has {state.get('num_classes')} classes, this run has "
            f"{run.train_set.num_classes}"
        )
    head_name = run.method.head or run.cfg.model.head
    source_head = state.get("head", "linear")
    if head_name in SOURCE_HEADS and source_head not in SOURCE_HEADS[head_name]:
        raise ConfigError(
            f"{run.method.name} needs a first stage with a {SOURCE_HEADS[head_name][0]} "
            f"classifier; {path} has a {source_head!r} head"
        )
    # a second stage keeps the backbone (and the head unless it re-initialises it); the first
    # stage's projection / prediction heads (BCL, AllNC) have no role in it
    weights = {
        k: v
        for k, v in state["model"].items()
        if not (run.method.reinit_head and k.startswith("head."))
        and not k.startswith("extra_heads.")
    }
    missing, unexpected = run.model.load_state_dict(weights, strict=False)
    missing = [k for k in missing if not k.startswith("head.") and not k.startswith("extra_heads.")]
    if missing or unexpected:
        raise CheckpointError(
            f"{path} does not match this model (missing {missing[:5]}, unexpected "
            f"{unexpected[:5]}): was it trained with model.arch={run.cfg.model.arch}?"
        )
    if run.method.trainable is not None:
        prefixes = run.method.trainable
        for name, p in run.model.named_parameters():
            p.requires_grad_(any(name.startswith(pre) for pre in prefixes))


def make_loader(
    ds: Dataset,
    cfg: TrainConfig,
    train: bool,
    sampler: Any,
    gen: torch.Generator,
    device: torch.device,
) -> DataLoader:
    d = cfg.data
    # data.batch_size is the global batch: each of the N processes takes batch_size / N
    # (docs/DISTRIBUTED.md); test_batch_size is per process (memory only).
    batch = dist.local_batch_size(d.batch_size) if train else d.test_batch_size
    if not train and sampler is None and dist.is_dist():
        sampler = dist.ShardSampler(len(ds))  # evaluation shards: r::N, never padded
    # BatchNorm cannot train on a batch of one sample: drop a last batch of exactly one (a
    # different sample every epoch, as the order is reshuffled); data.batch_size >= 2.
    drop_one = train and len(sampler if sampler is not None else ds) % batch == 1
    if drop_one:
        log.info("the last training batch of each epoch would hold 1 sample: it is dropped")
    if d.num_workers > 0:
        kill_workers_at_exit()  # the workers ignore the exit-time SIGTERM (below)
    return DataLoader(
        ds,
        batch_size=batch,
        shuffle=False,
        sampler=sampler,
        num_workers=d.num_workers,
        pin_memory=device.type == "cuda",
        drop_last=drop_one,
        generator=gen,
        persistent_workers=False,  # workers are re-seeded from the generator every epoch
        # Ctrl-C / scancel reach the workers too: the main process alone decides to stop
        worker_init_fn=workers_leave_signals_to_main,  # only called when there are workers
    )


def _checkpoint_state(
    run: Run,
    optimizer: torch.optim.Optimizer | None,
    epoch: int,
    best: dict[str, Any],
    history: list[dict[str, Any]],
    scaler: Any = None,
) -> dict[str, Any]:
    return {
        "format": ckpt.FORMAT_VERSION,
        "epoch": epoch,  # 0-based index of the last finished epoch
        "model": run.model.state_dict(),
        "objective": run.method.objective.state_dict(),
        "optimizer": optimizer.state_dict() if optimizer is not None else {},
        # fp16's loss scale and growth tracker: a resumed run scales as the uninterrupted one
        "scaler": scaler.state_dict() if scaler is not None else {},
        "rng": ckpt.rng_state(),
        "best": best,
        "history": history,
        "config": to_dict(run.cfg),
        "class_counts": run.class_counts,
        "num_classes": int(run.train_set.num_classes),
        "method": run.method.name,
        "arch": run.cfg.model.arch,
        "head": run.method.head or run.cfg.model.head,
    }


def check_compatible(state: dict[str, Any], run: Run, same_method: bool = True) -> None:
    """A checkpoint of another method (unless ``same_method`` is False: a branch, checked by
    :func:`nclt.branch.check_branch`), model or dataset is refused with the difference named."""
    keys = [("method", run.method.name)] if same_method else []
    for key, mine in (
        *keys,
        ("arch", run.cfg.model.arch),
        ("num_classes", int(run.train_set.num_classes)),
    ):
        if state.get(key) != mine:
            raise CheckpointError(
                f"checkpoint was written for {key}={state.get(key)!r}, this run has {mine!r}"
            )
    theirs = (state.get("config") or {}).get("model") or {}
    for key, mine in to_dict(run.cfg)["model"].items():
        if key in theirs and theirs[key] != mine:
            raise CheckpointError(
                f"checkpoint was written for model.{key}={theirs[key]!r}, this run has {mine!r}"
            )
    counts = state.get("class_counts")
    if counts is not None and not torch.equal(torch.as_tensor(counts).cpu(), run.class_counts):
        raise CheckpointError(
            f"checkpoint was trained on class counts {torch.as_tensor(counts).tolist()}, this "
            f"run's are {run.class_counts.tolist()} (another dataset, imbalance or subset)"
        )
    mine_sd, theirs_sd = run.model.state_dict(), state.get("model") or {}
    wrong = [f"missing {k}" for k in mine_sd if k not in theirs_sd]
    wrong += [f"unexpected {k}" for k in theirs_sd if k not in mine_sd]
    wrong += [
        f"{k} is {tuple(theirs_sd[k].shape)}, not {tuple(v.shape)}"
        for k, v in mine_sd.items()
        if k in theirs_sd
        and getattr(theirs_sd[k], "shape", None) is not None
        and tuple(theirs_sd[k].shape) != tuple(v.shape)
    ]
    if wrong:
        raise CheckpointError(
            "the checkpoint's weights do not fit the model its config builds ("
            f"{'; '.join(wrong[:3])}{'; ...' if len(wrong) > 3 else ''}): written by another "
            "version of nclt, or edited"
        )


@dataclass
class TrainSetup:
    """The optimizer, sampler, loader and step environment of a run."""

    env: TrainEnv
    optimizer: torch.optim.Optimizer | None
    sampler: Any
    gen: torch.Generator  # reseeded every epoch: drives shuffling and worker seeds
    batch_gen: torch.Generator  # reseeded every epoch: drives batched augmentation
    train_loader: DataLoader


def build_training(run: Run) -> TrainSetup:
    """Everything the training step needs around the model (also used by ``nclt bench``)."""
    cfg = run.cfg
    precision = Precision.of(cfg.precision, run.device)
    if cfg.precision == "fp16" and run.device.type != "cuda":
        raise ConfigError("precision fp16 needs CUDA; use bf16 or fp32 on the CPU")
    trains = any(p.requires_grad for m in (run.model, run.method.objective) for p in m.parameters())
    if not trains and cfg.epochs > 0:
        raise ConfigError(f"{run.method.name} trains no parameter: set epochs to 0")
    optimizer = (
        build_optimizer(
            [run.model, run.method.objective],
            cfg.optim.lr,
            cfg.optim.momentum,
            cfg.optim.weight_decay,
            cfg.optim.nesterov,
            run.method.objective_optim,
        )
        if trains
        else None
    )
    o = cfg.optim
    lr_at = LRSchedule(o.lr, o.schedule, tuple(o.milestones), o.gamma, o.warmup_epochs, o.min_lr)
    sampler_kind = run.method.sampler or cfg.data.sampler
    sampler = build_sampler(
        sampler_kind,
        list(run.train_set.targets),
        seed=cfg.seed,
        num_replicas=dist.world_size(),
        rank=dist.rank(),
    )
    gen = torch.Generator()
    train_loader = make_loader(run.train_set, cfg, True, sampler, gen, run.device)
    env = TrainEnv(
        model=run.model,
        objective=run.method.objective,
        optimizer=optimizer,
        lr_at=lr_at,
        schedules=run.method.schedules,
        device=run.device,
        precision=precision,
        channels_last=cfg.channels_last,
        on_nonfinite=cfg.on_nonfinite,
        post_step=list(run.method.post_step),
        frozen=[run.model.backbone]
        if _backbone_frozen(run) and not run.method.update_frozen_bn
        else [],
    )
    if cfg.precision == "fp16" and optimizer is not None:
        # float16 gradients underflow without loss scaling (bf16 has float32's range)
        env.scaler = torch.amp.GradScaler(run.device.type)
    batch_gen = torch.Generator(device=run.device)
    if run.batch_views is not None:
        env.batch_views = [build_batch_view(v, generator=batch_gen) for v in run.batch_views]
    if cfg.mixup_alpha > 0 or cfg.cutmix_alpha > 0:
        kind, alpha = (
            ("cutmix", cfg.cutmix_alpha) if cfg.cutmix_alpha > 0 else ("mixup", cfg.mixup_alpha)
        )

        def mixer(x: torch.Tensor, y: torch.Tensor) -> tuple:
            xf = x.float().div_(255.0) if x.dtype == torch.uint8 else x
            return batch_mix(xf, y, kind=kind, alpha=alpha)

        env.mixer = mixer
    if dist.is_dist() and optimizer is not None:  # torchrun: DDP over network + objective
        find_unused = _weights_vanish(run.method, cfg.epochs, len(train_loader))
        env.step = dist.wrap_ddp(
            TrainStep(run.model, run.method.objective, env.schedules, precision),
            find_unused=find_unused,
            static_graph=not find_unused,
        )
    return TrainSetup(env, optimizer, sampler, gen, batch_gen, train_loader)


def _weights_vanish(method: Method, epochs: int, steps: int) -> bool:
    """Whether a loss term has weight 0 at some step (checked at every epoch's first and
    last step): the objective then skips it, and the parameters only it reaches get no
    gradient at those steps, so DDP needs ``find_unused_parameters``. Otherwise the set of
    parameters with a gradient is the same at every step and DDP runs with ``static_graph``
    (which also copes with parameters that no term ever reaches)."""
    from nclt.methods.schedules import Progress
    from nclt.methods.schedules import evaluate as weight_at

    for t in method.objective.terms:
        for e in range(max(epochs, 1)):
            for st in {0, max(steps - 1, 0)}:
                if float(weight_at(t.weight, Progress(e, st, max(steps, 1), epochs))) == 0.0:
                    return True
    return False


def _earlier_environments(
    out: Path, cfg: TrainConfig, env_now: dict[str, Any], done: int
) -> dict[str, Any]:
    """``{"earlier_environments": [...]}`` for config.yaml when a run resumes after ``done``
    epochs somewhere else than where they ran (another device, machine, PyTorch or commit),
    so that a run begun on a lent GPU and finished on the CPU says so; ``{}`` otherwise.

    Each entry is an earlier part's ``environment`` plus its ``device`` and ``through_epoch``
    (the last epoch it trained); the entries of earlier resumes are kept.
    """
    if done <= 0 or not (out / "config.yaml").is_file():
        return {}
    try:
        old = load_yaml(out / "config.yaml")
    except NcltError:
        return {}
    earlier = [e for e in old.get("earlier_environments") or [] if isinstance(e, dict)]
    before = old.get("environment")
    if isinstance(before, dict) and (before != env_now or old.get("device") != cfg.device):
        through = max([int(e.get("through_epoch", 0)) for e in earlier], default=0)
        if done > through:
            earlier.append({"through_epoch": done, "device": old.get("device"), **before})
    return {"earlier_environments": earlier} if earlier else {}


def train(cfg: TrainConfig, resume: bool = False) -> dict[str, Any]:
    """Train ``cfg`` (or resume it from its run folder) and return results.json's content.

    SIGINT / SIGTERM stop the run before the next step, keeping last.pt (nclt.interrupt).
    """
    with dist.process_group(), StopOnSignal() as stop:  # torchrun: a group unless one exists
        return _train(cfg, resume, stop)


def _train(cfg: TrainConfig, resume: bool, stop: StopOnSignal) -> dict[str, Any]:
    if cfg.threads > 0:
        torch.set_num_threads(cfg.threads)
    if cfg.deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
    run = build_run(cfg)
    out = cfg.run_dir()
    main = dist.is_main()
    setup = build_training(run)
    env, optimizer, sampler = setup.env, setup.optimizer, setup.sampler
    gen, batch_gen, train_loader = setup.gen, setup.batch_gen, setup.train_loader
    precision = env.precision
    test_loader = make_loader(run.test_set, cfg, False, None, torch.Generator(), run.device)
    steps_per_epoch = len(train_loader)

    start_epoch, best, history = 0, {"top1": -1.0}, []
    branched = not resume and bool(cfg.branch_from)
    if not resume and dist.broadcast_object(main and (out / "last.pt").exists()):
        raise ConfigError(  # every rank stops
            f"{out} already holds a run (last.pt); use --resume {out} to continue it, "
            "or choose another --out"
        )
    if resume or branched:
        path = out / "last.pt" if resume else Path(cfg.branch_from)
        state = ckpt.load(path)
        check_compatible(state, run, same_method=resume)
        if branched:
            check_branch(state, to_dict(cfg), run.method, run.context, steps_per_epoch, str(path))
        run.model.load_state_dict(state["model"])
        run.method.objective.load_state_dict(state["objective"])
        if optimizer is not None:
            optimizer.load_state_dict(state["optimizer"])
        if env.scaler is not None and state.get("scaler"):
            env.scaler.load_state_dict(state["scaler"])
        ckpt.set_rng_state(state["rng"])
        start_epoch, best, history = state["epoch"] + 1, state["best"], state["history"]
        if branched:
            history = [{**h, "branched": 1} for h in history]
        if start_epoch >= cfg.epochs:
            log.info("run in %s already finished %d epochs", out, cfg.epochs)

    metrics_csv = writer = None
    if main:
        out.mkdir(parents=True, exist_ok=True)
        env_now = environment()
        write_yaml(
            out / "config.yaml",
            {
                **to_dict(cfg),
                "environment": env_now,
                **_earlier_environments(out, cfg, env_now, start_epoch if resume else 0),
                "resolved_method_args": run.method.args,
            },
        )
        metrics_csv = MetricsCSV(out / "metrics.csv")
        if resume:
            metrics_csv.truncate_after(start_epoch)  # 1-based epochs in the file
        writer = progress.tensorboard_writer(out, purge_step=start_epoch + 1 if resume else None)
        if branched:  # the shared epochs, as the source run logged them
            for row in history:
                metrics_csv.append(row)
                progress.tb_log(writer, row, int(row["epoch"]))

    metric = LongTailAccuracy(run.train_set.num_classes, run.class_counts, cfg.data.group_rule)
    nc_tracker = NCTracker(run, env, cfg.nc_every) if cfg.nc_every > 0 else None
    grad_probe = GradProbe(run, env) if cfg.grad_probe else None
    t_run = time.perf_counter()
    test: dict[str, Any] = {}
    last_test: dict[str, Any] | None = None  # the final weights' test accuracy, once measured
    for epoch in range(start_epoch, cfg.epochs):
        t_epoch = time.perf_counter()
        # per-rank streams (augmentation, workers): ranks do not repeat each other's draws
        s = rank_seed(epoch_seed(cfg.seed, epoch), dist.rank())
        seed_all(s)
        gen.manual_seed(s)
        batch_gen.manual_seed(s + 1)
        sampler.set_epoch(epoch)
        tracker = nc_tracker.start(epoch) if nc_tracker else None
        bar = progress.progress_bar(cfg, epoch, steps_per_epoch, history)
        stats = train_one_epoch(
            env,
            stop.batches(train_loader, resume_hint(out, epoch, cfg.epochs)),
            epoch,
            cfg.epochs,
            steps_per_epoch,
            on_step=(lambda step, info, bar=bar: progress.bar_update(bar, info)) if bar else None,
        )
        if bar is not None:
            bar.close()
        dist.sync_buffers(run.model)  # one model on every rank for evaluation and last.pt
        if evaluates(cfg, epoch + 1):
            test = evaluate(
                run.model, test_loader, metric, run.device, precision, cfg.channels_last
            )
            last_test = test
        row = {"epoch": epoch + 1, **stats, "images": stats["images_per_second"] * stats["seconds"]}
        if tracker is not None:
            row.update(nc_tracker.finish(run.model.head.weight.detach()))
            if main:  # per-class norms: one JSON line per tracked epoch (K columns are too many)
                with (out / "nc_per_class.jsonl").open("a") as f:
                    f.write(json.dumps({"epoch": epoch + 1, **nc_tracker.per_class}) + "\n")
        if grad_probe is not None:
            row.update(grad_probe.finish())
        # the whole epoch: training, test evaluation, NC tracking (not the checkpoint write)
        row["wall_seconds"] = time.perf_counter() - t_epoch
        if test:
            row.update(
                test_top1=test["top1"], many=test["many"], medium=test["medium"], few=test["few"]
            )
            if test["top1"] > best["top1"]:
                best = {
                    "epoch": epoch + 1,
                    **{k: test[k] for k in ("top1", "many", "medium", "few", "per_class")},
                }
        history.append({k: v for k, v in row.items() if isinstance(v, int | float)})
        if main:
            assert metrics_csv is not None
            metrics_csv.append(row)
            progress.tb_log(writer, row, epoch + 1)
            state = _checkpoint_state(run, optimizer, epoch, best, history, env.scaler)
            ckpt.save_atomic(state, out / "last.pt")
            if best.get("epoch") == epoch + 1:
                ckpt.save_atomic(state, out / "best.pt")
            if epoch + 1 in cfg.keep_checkpoints:  # branch points (nclt.branch)
                ckpt.save_atomic(state, out / f"epoch_{epoch + 1}.pt")
            log.info(progress.epoch_line(row, cfg.epochs, history))
        test = {}

    t_final = time.perf_counter()
    final, nc = final_metrics(run, precision, test_loader, last_test)
    t_final = time.perf_counter() - t_final
    if main and cfg.epochs == 0:  # a stage that trains nothing (tau-norm) still leaves a model
        ckpt.save_atomic(_checkpoint_state(run, optimizer, -1, best, history), out / "last.pt")
    seconds = sum(float(h["seconds"]) for h in history)  # training time, resumed parts too
    images = sum(float(h["images"]) for h in history)
    results = {
        "method": run.method.name,
        "dataset": cfg.data.dataset,
        "imbalance": cfg.data.imbalance,
        "epochs": cfg.epochs,
        "seed": cfg.seed,
        "top1": final["top1"],
        "many": final["many"],
        "medium": final["medium"],
        "few": final["few"],
        "per_class": final["per_class"],
        "confusion": final.get("confusion"),
        "best": best,
        "last": {k: final[k] for k in ("top1", "many", "medium", "few")},
        "nc": nc,
        "class_counts": run.class_counts.tolist(),
        "seconds": seconds,
        **_wall_seconds(history, time.perf_counter() - t_run, t_final),
        "images_per_second": images / seconds if seconds > 0 else None,
        "run_dir": str(out),
    }
    if cfg.branch_from:  # epochs 1..E come from another run's checkpoint (nclt.branch)
        results["branched_from"] = {"checkpoint": cfg.branch_from, "epoch": _branch_epoch(history)}
    if main:
        write_json(out / "results.json", results)
        if writer is not None:
            writer.close()
    return results


def _branch_epoch(history: list[dict[str, Any]]) -> int | None:
    """The last epoch a branched run took from its source (its history rows say which)."""
    shared = [int(h["epoch"]) for h in history if h.get("branched")]
    return max(shared) if shared else None


def _wall_seconds(history: list[dict[str, Any]], process: float, final: float) -> dict[str, Any]:
    """The run's wall-clock time, resumed parts included.

    Each epoch's history row keeps its own wall time, so a run resumed any number of times
    sums them (plus the final metrics of this process). A checkpoint written before that key
    existed lacks it for its epochs: then only this process's time is known, flagged
    ``wall_seconds_partial``.
    """
    if all("wall_seconds" in h for h in history):
        return {"wall_seconds": sum(float(h["wall_seconds"]) for h in history) + final}
    return {"wall_seconds": process, "wall_seconds_partial": True}


def evaluates(cfg: TrainConfig, epoch: int) -> bool:
    """Whether the test set is evaluated after 1-based ``epoch``: every ``eval_every`` epochs,
    every epoch from ``eval_all_from`` on (when > 0), and always after the last one."""
    dense = 0 < cfg.eval_all_from <= epoch
    return epoch % cfg.eval_every == 0 or dense or epoch == cfg.epochs


NC_LOGGED = (
    "nc1",
    "equinorm_means",
    "equiangular_means",
    "maxangle_means",
    "equinorm_w",
    "equiangular_w",
    "maxangle_w",
    "self_duality",
    "trace_sw",
    "trace_sb",
    "trace_st",
    "B_D",
    "B_A",
    "B_L",
)


class GradProbe:
    """ARB Fig. 5: where the gradient of the rarest class's classifier vector comes from.

    With ``logits = W h + b``, the gradient of classifier vector c is
    sum_i dL/dz_ic h_i; grouping the samples by label k splits it into the attraction
    (k = c) and one repulsion component per other class. Each step adds, per class k, the
    norm of sum_{i: y_i = k} dL/dz_ic h_i; the epoch mean is logged as ``grad_w/<k>``
    (metrics.csv, TensorBoard). It reads dL/dz of the step's real objective (any method), and
    for heads that are not linear in h (cosine, ETF) it is the same decomposition taken at
    the logits. Enabled by ``grad_probe: true``; costs one (B, K) x (B, D) product per step.
    """

    def __init__(self, run: Run, env: TrainEnv) -> None:
        self.c = int(torch.argmin(run.class_counts))
        self.k = int(run.train_set.num_classes)
        env.retain_logits_grad = True
        env.feature_hooks.append(self.update)
        self.sums = torch.zeros(self.k, dtype=torch.float64)
        self.steps = 0

    def update(self, ctx: dict[str, Any], labels: torch.Tensor) -> None:
        grad = ctx["logits"].grad
        if grad is None:
            return
        grad = grad.detach() / ctx.get("grad_scale", 1.0)  # fp16: undo the loss scaling
        per_class = class_gradient_components(
            grad, ctx["features"].detach(), labels, self.c, self.k
        )
        # under DDP: the global batch's components (the ranks' sums, averaged as DDP averages
        # the gradient), one (K, D) all-reduce per step while the probe is on
        per_class = dist.all_reduce_sum(per_class) / dist.world_size()
        self.sums += per_class.norm(dim=1).double().cpu()
        self.steps += 1

    def finish(self) -> dict[str, float]:
        out = {f"grad_w/{k}": float(v) / max(self.steps, 1) for k, v in enumerate(self.sums)}
        self.sums.zero_()
        self.steps = 0
        return out


class NCTracker:
    """Neural-collapse metrics every ``every`` epochs, streamed from the training batches.

    The features are the ones the training step already computed (augmented images, weights
    moving during the epoch), accumulated without a second pass and without K x D x D
    tensors; NC4 compares the classifier with the nearest class mean of the *previous*
    tracked epoch. Under MixUp/CutMix the batch features belong to mixed images, so the
    tracker makes a separate un-augmented pass over the training set instead (documented in
    docs/METRICS.md). Values go to metrics.csv and TensorBoard as ``nc/<metric>``.
    """

    def __init__(self, run: Run, env: TrainEnv, every: int) -> None:
        self.run, self.env, self.every = run, env, every
        self.acc: CollapseAccumulator | None = None
        self.nc4: NC4Accumulator | None = None
        self.prev_means: torch.Tensor | None = None
        self.per_class: dict[str, Any] = {}

    def start(self, epoch: int) -> CollapseAccumulator | None:
        self.env.feature_hooks = [h for h in self.env.feature_hooks if h != self._update]
        if (epoch + 1) % self.every:
            self.acc = None
            return None
        run = self.run
        self.acc = CollapseAccumulator(
            run.train_set.num_classes,
            run.model.feature_dim,
            group_counts=run.class_counts,
            group_rule=run.cfg.data.group_rule,
            device=run.device,
        )
        self.nc4 = NC4Accumulator(self.prev_means) if self.prev_means is not None else None
        if self.env.mixer is None:
            self.env.feature_hooks.append(self._update)
        return self.acc

    def _update(self, ctx: dict[str, Any], labels: torch.Tensor) -> None:
        assert self.acc is not None
        feats = ctx["features"].detach()
        self.acc.update(feats, labels)
        if self.nc4 is not None:
            self.nc4.update(feats, ctx["logits"].detach())

    def finish(self, head_weight: torch.Tensor) -> dict[str, Any]:
        assert self.acc is not None
        if self.env.mixer is not None:  # features of mixed images are no class's features
            run = self.run
            loader = make_loader(
                run.train_eval_set, run.cfg, False, None, torch.Generator(), run.device
            )
            prec = self.env.precision
            for feats, logits, labels in predict(
                run.model, loader, run.device, prec, run.cfg.channels_last
            ):
                self._update({"features": feats, "logits": logits}, labels)
        self.acc.all_reduce()  # one collective; compute and class_means reuse the sums
        nc = self.acc.compute(head_weight=head_weight)
        self.prev_means = self.acc.class_means()
        out = {f"nc/{k}": nc.get(k) for k in NC_LOGGED}
        out["nc/nc4"] = self.nc4.compute() if self.nc4 is not None else None
        # minority collapse as a number: NC1 and mean pairwise classifier angle per group
        for group, g in (nc.get("groups") or {}).items():
            if g:
                out[f"nc/{group}/nc1"] = g.get("nc1")
                out[f"nc/{group}/angle_w"] = g.get("angle_w")
        self.per_class = {"mean_norms": nc.get("mean_norms"), "w_norms": nc.get("w_norms")}
        self.env.feature_hooks = [h for h in self.env.feature_hooks if h != self._update]
        return out


def _backbone_frozen(run: Run) -> bool:
    return not any(p.requires_grad for p in run.model.backbone.parameters())


def final_metrics(
    run: Run,
    precision: Precision,
    test_loader: DataLoader | None = None,
    test: dict[str, Any] | None = None,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Test accuracy, and neural-collapse metrics on the un-augmented training features.

    ``test``: the current weights' test accuracy when already measured (the last epoch's
    evaluation), so that it is not computed twice.
    """
    cfg = run.cfg
    if test is None:
        if test_loader is None:
            test_loader = make_loader(run.test_set, cfg, False, None, torch.Generator(), run.device)
        metric = LongTailAccuracy(run.train_set.num_classes, run.class_counts, cfg.data.group_rule)
        test = evaluate(run.model, test_loader, metric, run.device, precision, cfg.channels_last)
    loader = make_loader(run.train_eval_set, cfg, False, None, torch.Generator(), run.device)
    nc = collapse_metrics_from_loader(
        predict(run.model, loader, run.device, precision, cfg.channels_last),
        num_classes=run.train_set.num_classes,
        head_weight=run.model.head.weight.detach(),
        class_counts=run.class_counts,
        group_rule=cfg.data.group_rule,
    )
    return test, nc
