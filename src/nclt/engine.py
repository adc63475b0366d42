"""One training epoch and one evaluation pass. Never names a particular loss or paper.

The step: move the views to the device, optionally augment the whole batch on the device
(per-sample random crop + flip) and mix it (MixUp/CutMix), run the network once on all
views, build the context (network outputs + labels + schedule values), evaluate the
objective, check that it is finite, step the optimizer.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from nclt import dist
from nclt.errors import NonFiniteLossError
from nclt.methods.objective import LossOutput, Objective
from nclt.methods.schedules import Progress, Schedule
from nclt.models.network import upcast_low_precision
from nclt.optim import set_lr

log = logging.getLogger("nclt")


@dataclass
class Precision:
    """Autocast settings: ``bf16`` (CPU and CUDA), ``fp16`` (CUDA, with a grad scaler), ``fp32``."""

    device_type: str
    dtype: torch.dtype | None

    @classmethod
    def of(cls, name: str, device: torch.device) -> Precision:
        dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": None}[name]
        return cls(device.type, dtype)

    def autocast(self) -> contextlib.AbstractContextManager:
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device_type, dtype=self.dtype)


@dataclass
class TrainEnv:
    """Everything a training step needs, built once per run."""

    model: nn.Module
    objective: Objective
    optimizer: torch.optim.Optimizer | None
    lr_at: Callable[[Progress], float]
    schedules: dict[str, Schedule]
    device: torch.device
    precision: Precision
    channels_last: bool = False
    # data.batch_augment: one module per view, from the loader's raw uint8 batch to that view
    batch_views: list[Callable[[Tensor], Tensor]] | None = None
    mixer: Callable[[Tensor, Tensor], tuple[Tensor, Tensor, Tensor, float]] | None = None
    on_nonfinite: str = "stop"
    scaler: Any = None  # torch.amp.GradScaler for fp16
    feature_hooks: list[Callable[[dict[str, Tensor], Tensor], None]] = field(default_factory=list)
    post_step: list[Callable[[nn.Module], None]] = field(default_factory=list)
    frozen: list[nn.Module] = field(default_factory=list)  # kept in eval mode while training
    retain_logits_grad: bool = False  # keep dL/dlogits in ctx["logits"].grad for the hooks
    # the TrainStep of model + objective, DDP-wrapped under torchrun (None: built per epoch)
    step: nn.Module | None = None


def loss_dtype(v: Any) -> Any:
    """Network outputs for the losses: float16 / bfloat16 (autocast) become float32; float32
    and float64 stay as they are."""
    return upcast_low_precision(v) if isinstance(v, Tensor) else v


class TrainStep(nn.Module):
    """The network's forward pass and the objective as one module.

    Under DDP this module is what is wrapped, so that every parameter a step uses is inside
    the wrapper's forward: the network's, the objective's (learnable centres), and network
    parameters that only the objective reaches (BCL's prototype MLP); DDP then averages all
    of their gradients, and ``find_unused_parameters`` sees the whole graph.

    ``forward(views, ctx, progress)`` fills ``ctx`` in place (network outputs, schedule
    values) and returns ``(total, parts, weights)`` of the objective.
    """

    def __init__(
        self,
        model: nn.Module,
        objective: Objective,
        schedules: dict[str, Schedule],
        precision: Precision,
    ) -> None:
        super().__init__()
        self.model = model
        self.objective = objective
        self.schedules = schedules
        self.precision = precision

    def forward(
        self, views: list[Tensor], ctx: dict[str, Any], progress: Progress
    ) -> tuple[Tensor, dict[str, Tensor], dict[str, float]]:
        with self.precision.autocast():
            out = self.model(views)
        # losses run in float32 whatever the autocast precision of the network
        ctx.update({k: loss_dtype(v) for k, v in out.items()})
        ctx.update({k: s(progress) for k, s in self.schedules.items()})
        res = self.objective(ctx, progress)
        return res.total, res.parts, res.weights


def _to_device(views: list[Tensor], env: TrainEnv) -> list[Tensor]:
    views = [v.to(env.device, non_blocking=True) for v in views]
    if env.batch_views is not None:  # the loader gave the raw images: make every view here
        if len(views) != 1:
            raise ValueError(f"batched views need one raw batch per step, got {len(views)}")
        views = [t(views[0]) for t in env.batch_views]
    out = []
    for v in views:
        if env.channels_last and v.dim() == 4:
            v = v.contiguous(memory_format=torch.channels_last)
        out.append(v)
    return out


def train_one_epoch(
    env: TrainEnv,
    loader: Iterable[tuple[Any, Tensor]],
    epoch: int,
    epochs: int,
    steps_per_epoch: int,
    on_step: Callable[[int, dict[str, float]], None] | None = None,
) -> dict[str, float]:
    """Train for one epoch; returns mean loss parts, train top-1 (%), lr, seconds, images/s.

    Under DDP every rank returns the same, global figures (loss parts and accuracy over every
    rank's samples, images/s of all ranks together).
    """
    step_module = (
        env.step
        if env.step is not None
        else TrainStep(env.model, env.objective, env.schedules, env.precision)
    )
    env.model.train()
    for module in env.frozen:
        module.eval()
    sums: dict[str, Tensor] = {}
    n_seen, correct = 0, torch.zeros((), dtype=torch.float64)
    n_steps = skipped = 0
    last_bad = ""
    lr = 0.0
    start = time.perf_counter()
    for step, (x, labels) in enumerate(loader):
        p = Progress(epoch, step, steps_per_epoch, epochs)
        lr = env.lr_at(p)
        set_lr(env.optimizer, lr)
        views = _to_device(list(x) if isinstance(x, list | tuple) else [x], env)
        labels = labels.to(env.device, non_blocking=True)
        ctx: dict[str, Any] = {"labels": labels, "labels_b": None, "lam": 1.0, "class_weight": None}
        if env.mixer is not None:
            views[0], _, labels_b, lam = env.mixer(views[0], labels)
            ctx.update(labels_b=labels_b, lam=lam)
        res = LossOutput(*step_module(views, ctx, p))
        if env.retain_logits_grad and ctx["logits"].requires_grad:
            ctx["logits"].retain_grad()  # dL/dlogits for the hooks (ARB Fig. 5 probe)
        if not dist.all_true(torch.isfinite(res.total)):  # every rank skips or stops together
            bad = [k for k, v in res.parts.items() if not torch.isfinite(v)] or ["total"]
            msg = (
                f"non-finite loss at epoch {epoch + 1}, step {step + 1}: term(s) {bad} "
                f"({', '.join(f'{k}={float(v):.4g}' for k, v in res.parts.items())})"
            )
            if env.on_nonfinite == "skip":
                skipped += 1
                last_bad = msg
                log.warning("%s; step skipped (on_nonfinite=skip)", msg)
                env.optimizer.zero_grad(set_to_none=True)
                continue
            raise NonFiniteLossError(msg + "; the last good checkpoint is kept")
        env.optimizer.zero_grad(set_to_none=True)
        if env.scaler is not None:
            ctx["grad_scale"] = env.scaler.get_scale()  # the hooks' gradients are scaled by it
            env.scaler.scale(res.total).backward()
            env.scaler.step(env.optimizer)
            env.scaler.update()
        else:
            res.total.backward()
            env.optimizer.step()
        for constrain in env.post_step:
            constrain(env.model)
        for hook in env.feature_hooks:
            hook(ctx, labels)
        with torch.no_grad():
            b = labels.shape[0]
            pred = ctx["logits"].argmax(1)
            hit = (pred == labels).double().sum()
            if ctx["labels_b"] is not None:
                lam = ctx["lam"]
                hit = lam * hit + (1 - lam) * (pred == ctx["labels_b"]).double().sum()
            correct += hit.cpu()
            for k, v in res.parts.items():
                sums[k] = sums.get(k, 0) + v.double().cpu() * b
            sums["loss"] = sums.get("loss", 0) + res.total.detach().double().cpu() * b
        n_seen += b
        n_steps += 1
        if on_step is not None:
            elapsed = time.perf_counter() - start
            on_step(step, {"loss": float(res.total.detach()), "img_s": n_seen / max(elapsed, 1e-9)})
    if skipped and not n_steps:
        raise NonFiniteLossError(
            f"every step of epoch {epoch + 1} ({skipped}) had a non-finite loss, the last: "
            f"{last_bad}. on_nonfinite=skip is for rare bad steps; lower the learning rate or "
            "check the data. The last good checkpoint is kept"
        )
    seconds = time.perf_counter() - start
    if dist.is_dist():  # one all-reduce: the epoch's sums over every rank's samples
        keys = sorted(sums)
        packed = torch.tensor(
            [float(sums[k]) for k in keys] + [float(correct), float(n_seen)], dtype=torch.float64
        )
        packed = dist.all_reduce_sum(packed)
        sums = dict(zip(keys, packed[: len(keys)], strict=True))
        correct, n_seen = packed[-2], int(packed[-1])
    stats = {k: float(v) / max(n_seen, 1) for k, v in sums.items()}
    stats.update(
        train_top1=100.0 * float(correct) / max(n_seen, 1),
        lr=lr,
        seconds=seconds,
        images_per_second=n_seen / max(seconds, 1e-9),
        skipped_steps=skipped,
    )
    return stats


@torch.no_grad()
def predict(
    model: nn.Module,
    loader: Iterable[tuple[Any, Tensor]],
    device: torch.device,
    precision: Precision,
    channels_last: bool = False,
) -> Iterator[tuple[Tensor, Tensor, Tensor]]:
    """Yield (features, logits, labels) in float32 on the CPU, batch by batch (eval mode)."""
    model.eval()
    for x, labels in loader:
        if isinstance(x, list | tuple):
            x = x[0]
        x = x.to(device, non_blocking=True)
        if channels_last and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        with precision.autocast():
            feats, logits = model.embed(x)
        yield feats.float().cpu(), logits.float().cpu(), labels


def evaluate(
    model: nn.Module,
    loader: Iterable[tuple[Any, Tensor]],
    metric: Any,
    device: torch.device,
    precision: Precision,
    channels_last: bool = False,
) -> dict[str, Any]:
    """Top-1 overall / per class / per group of ``metric`` (a LongTailAccuracy) on ``loader``."""
    metric.reset()
    dev = getattr(metric, "device", torch.device("cpu"))  # NCCL syncs metric states on the GPU
    for _, logits, labels in predict(model, loader, device, precision, channels_last):
        metric.update(logits.to(dev), labels.to(dev))
    return metric.compute()
