"""Process-group helpers that are no-ops on a single process.

Every statistic that a loss takes "over the batch" goes through these, so that under
``torchrun`` it is taken over the global batch (see docs/DISTRIBUTED.md). The module also
holds the launch plumbing of ``nclt train`` under ``torchrun``: process-group set-up from the
environment (:func:`process_group`), the per-process batch (:func:`local_batch_size`), the
evaluation shards (:class:`ShardSampler`), SyncBatchNorm that also runs on the CPU
(:func:`convert_sync_batchnorm`), the DDP wrapper (:func:`wrap_ddp`) and buffer averaging
(:func:`sync_buffers`).
"""

from __future__ import annotations

import contextlib
import datetime
import inspect
import logging
import os
from collections.abc import Iterator
from typing import Any

import torch
import torch.distributed as tdist
from torch import Tensor, nn
from torch.utils.data import Sampler

from nclt.errors import ConfigError

log = logging.getLogger("nclt")

# ----------------------------------------------------------------------------- state


def is_dist() -> bool:
    """True inside an initialised process group with more than one process."""
    return tdist.is_available() and tdist.is_initialized() and tdist.get_world_size() > 1


def rank() -> int:
    return tdist.get_rank() if is_dist() else 0


def world_size() -> int:
    return tdist.get_world_size() if is_dist() else 1


def is_main() -> bool:
    return rank() == 0


def env_world_size() -> int:
    """``WORLD_SIZE`` as set by ``torchrun`` (1 when absent)."""
    return int(os.environ.get("WORLD_SIZE", "1") or 1)


def env_rank() -> int:
    """``RANK`` as set by ``torchrun`` (0 when absent); valid before the group exists."""
    return int(os.environ.get("RANK", "0") or 0)


def env_local_rank() -> int:
    """``LOCAL_RANK`` as set by ``torchrun`` (0 when absent): this process's GPU on its node."""
    return int(os.environ.get("LOCAL_RANK", "0") or 0)


# ----------------------------------------------------------------------------- set-up


def default_backend() -> str:
    """``cpu:gloo,cuda:nccl`` when CUDA is available (NCCL for CUDA tensors, gloo for the few
    CPU-side reductions such as metric states), else ``gloo``."""
    if torch.cuda.is_available() and tdist.is_nccl_available():
        return "cpu:gloo,cuda:nccl"
    return "gloo"


def init_from_env(backend: str | None = None, timeout_s: float | None = None) -> bool:
    """Initialise the default process group from ``torchrun``'s environment variables.

    Does nothing (returns False) when ``WORLD_SIZE`` is absent or 1, or when a group already
    exists; otherwise selects the GPU ``LOCAL_RANK`` (when CUDA is available), initialises
    with ``env://`` (``MASTER_ADDR``, ``MASTER_PORT``, ``RANK``, ``WORLD_SIZE``) and returns
    True: the caller then owns the group and destroys it (:func:`process_group` does both).
    """
    if env_world_size() <= 1 or not tdist.is_available() or tdist.is_initialized():
        return False
    backend = backend or default_backend()
    if torch.cuda.is_available():
        local = env_local_rank()
        if local >= torch.cuda.device_count():
            raise ConfigError(
                f"LOCAL_RANK={local} but this node has {torch.cuda.device_count()} GPU(s): "
                "give torchrun --nproc_per_node at most the number of GPUs"
            )
        torch.cuda.set_device(local)
    timeout = datetime.timedelta(seconds=timeout_s) if timeout_s is not None else None
    tdist.init_process_group(backend=backend, init_method="env://", timeout=timeout)
    log.debug("process group: rank %d of %d, backend %s", rank(), world_size(), backend)
    return True


@contextlib.contextmanager
def process_group(backend: str | None = None) -> Iterator[bool]:
    """``with process_group():`` initialise from the environment (see :func:`init_from_env`)
    and destroy the group on exit if this call created it. Yields whether it did."""
    created = init_from_env(backend)
    try:
        yield created
    finally:
        if created and tdist.is_initialized():
            tdist.destroy_process_group()


def local_batch_size(global_batch: int, world: int | None = None) -> int:
    """The per-process batch of a global batch: ``global_batch / world_size``.

    ``data.batch_size`` in a config is the global batch (the papers' batch), so that a config
    trains the same on 1 GPU or N; it must be divisible by the number of processes, and
    every process needs at least 2 samples (BatchNorm, per-batch statistics).
    """
    w = world_size() if world is None else int(world)
    if global_batch % w:
        raise ConfigError(
            f"data.batch_size={global_batch} is the global batch and must be divisible by the "
            f"number of processes ({w}); e.g. --set data.batch_size={w * max(1, global_batch // w)}"
        )
    local = global_batch // w
    if local < 2:
        raise ConfigError(
            f"data.batch_size={global_batch} over {w} processes leaves {local} sample per "
            "process; BatchNorm and the per-batch statistics need at least 2"
        )
    return local


class ShardSampler(Sampler[int]):
    """Evaluation shard: rank ``r`` of ``R`` gets the indices ``r, r + R, r + 2R, ...``.

    No padding and no repetition: the shards are disjoint and cover the data set exactly once
    (shards differ in length by at most one), so metrics that sum over ranks are exact (one
    repeated tail image would move tail accuracy). For training use the samplers of
    ``nclt.data.samplers``, which pad so that every rank takes the same number of steps.
    """

    def __init__(
        self, num_items: int, num_replicas: int | None = None, rank_id: int | None = None
    ) -> None:
        self.num_items = int(num_items)
        self.num_replicas = world_size() if num_replicas is None else int(num_replicas)
        self.rank = rank() if rank_id is None else int(rank_id)
        if self.num_replicas < 1 or not 0 <= self.rank < self.num_replicas:
            raise ConfigError(f"rank {self.rank} is not in 0..{self.num_replicas - 1}")

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.rank, self.num_items, self.num_replicas))

    def __len__(self) -> int:
        return len(range(self.rank, self.num_items, self.num_replicas))


# ----------------------------------------------------------------------------- collectives


def _comm_device(t: Tensor) -> torch.device:
    """Where a collective on ``t`` runs: a CPU tensor moves to the current GPU only when the
    group has no CPU backend (a pure ``nccl`` group made by the caller)."""
    if t.device.type == "cpu" and "gloo" not in str(tdist.get_backend()).lower():
        return torch.device("cuda", torch.cuda.current_device())
    return t.device


def all_reduce_sum(t: Tensor) -> Tensor:
    """Sum of ``t`` over ranks (a new tensor; no gradient flows through the reduction)."""
    if not is_dist():
        return t
    out = t.detach().to(_comm_device(t), copy=True)
    tdist.all_reduce(out, op=tdist.ReduceOp.SUM)
    return out.to(t.device)


def all_true(flag: bool | Tensor) -> bool:
    """True when ``flag`` is true on every rank (one small all-reduce; a plain bool alone)."""
    value = bool(flag.all()) if isinstance(flag, Tensor) else bool(flag)
    if not is_dist():
        return value
    t = torch.tensor([0.0 if value else 1.0])
    return float(all_reduce_sum(t)) == 0.0


def _gather_sizes(t: Tensor) -> list[int]:
    n = torch.tensor([t.shape[0]], dtype=torch.long, device=t.device)
    dev = _comm_device(n)
    parts = [torch.zeros(1, dtype=torch.long, device=dev) for _ in range(world_size())]
    tdist.all_gather(parts, n.to(dev))
    return [int(p) for p in parts]


def _gather(t: Tensor) -> list[Tensor]:
    """Every rank's ``t`` (dim 0 may differ between ranks; other dims must agree), detached."""
    sizes = _gather_sizes(t)
    dev = _comm_device(t)
    biggest = max(sizes)
    local = t.detach().to(dev).contiguous()
    if local.shape[0] < biggest:  # pad to a common size; the padding is cut off below
        pad = local.new_zeros((biggest - local.shape[0], *local.shape[1:]))
        local = torch.cat([local, pad])
    parts = [torch.empty_like(local) for _ in sizes]
    tdist.all_gather(parts, local)
    return [p[:n].to(t.device) for p, n in zip(parts, sizes, strict=True)]


def all_gather_cat(t: Tensor) -> Tensor:
    """Concatenate ``t`` along dim 0 over ranks, in rank order, without gradient.

    Ranks may hold different numbers of rows (the sizes are gathered first and the tensors
    padded to the largest for the collective); the other dimensions must agree.
    """
    if not is_dist():
        return t
    return torch.cat(_gather(t), dim=0)


def gather_keep_grad(t: Tensor) -> Tensor:
    """Concatenate ``t`` over ranks along dim 0, keeping this rank's slice differentiable.

    The other ranks' slices are detached copies; this rank's own tensor is put back in its
    slot, so gradients flow to the local features. A loss computed on the gathered tensor is
    the global-batch loss; DDP averages gradients over ranks, so a caller that wants the
    global-batch gradient multiplies the gradient of its loss by ``world_size()`` (see
    ``nclt.losses.functional.scale_grad`` and docs/DISTRIBUTED.md). Ranks may hold different
    numbers of rows (sizes are gathered, tensors padded for the collective and cut back).
    """
    if not is_dist():
        return t
    parts = _gather(t)
    parts[rank()] = t
    return torch.cat(parts, dim=0)


def local_rows(n_local: int) -> slice:
    """The rows of this rank in a tensor made by :func:`gather_keep_grad` / :func:`all_gather_cat`
    of ``n_local`` rows per rank (one small all-gather of the sizes)."""
    if not is_dist():
        return slice(0, n_local)
    sizes = _gather_sizes(torch.empty(n_local))
    start = sum(sizes[: rank()])
    return slice(start, start + n_local)


def broadcast_object(obj: object, src: int = 0) -> object:
    """Send a picklable object from ``src`` to every rank."""
    if not is_dist():
        return obj
    box = [obj]
    tdist.broadcast_object_list(box, src=src)
    return box[0]


def barrier() -> None:
    if is_dist():
        tdist.barrier()


# ----------------------------------------------------------------------------- SyncBatchNorm


def _all_reduce_with_grad(t: Tensor) -> Tensor:
    """Sum over ranks with autograd: the backward pass sums the gradients over ranks."""
    from torch.distributed.nn.functional import all_reduce

    out: Tensor = all_reduce(t, op=tdist.ReduceOp.SUM)  # type: ignore[no-untyped-call]
    return out


class CPUSyncBatchNorm(nn.modules.batchnorm._BatchNorm):
    """BatchNorm whose training statistics are those of the global batch, on any device.

    ``torch.nn.SyncBatchNorm`` runs on GPUs only; this one reduces the per-channel sums with
    a differentiable all-reduce (``torch.distributed.nn.functional.all_reduce``), so it runs
    with gloo on the CPU: mean and (biased) variance over every rank's samples, two-pass
    (sum, then the sum of squared deviations from the global mean). The running statistics
    are updated with the global mean and the unbiased global variance, as SyncBatchNorm.
    Outside training, or on one process, it is plain BatchNorm. Same parameters and buffers
    (and state-dict keys) as ``nn.BatchNorm{1,2,3}d``.
    """

    def _check_input_dim(self, input: Tensor) -> None:
        if input.dim() < 2:
            raise ValueError(f"expected at least 2D input (got {input.dim()}D input)")

    def forward(self, input: Tensor) -> Tensor:
        if not (self.training and is_dist()):
            return super().forward(input)
        self._check_input_dim(input)
        x = input.float() if input.dtype in (torch.float16, torch.bfloat16) else input
        dims = [0, *range(2, x.dim())]
        shape = [1, x.shape[1]] + [1] * (x.dim() - 2)
        n_local = x.numel() // x.shape[1]
        first = torch.cat([x.sum(dims), x.new_tensor([float(n_local)])])
        first = _all_reduce_with_grad(first)
        n = first[-1].detach()
        mean = first[:-1] / n
        centred = x - mean.view(shape)
        var = _all_reduce_with_grad(centred.pow(2).sum(dims)) / n
        y = centred * torch.rsqrt(var + self.eps).view(shape)
        if self.affine:
            y = y * self.weight.view(shape).to(y.dtype) + self.bias.view(shape).to(y.dtype)
        if self.track_running_stats and self.running_mean is not None:
            with torch.no_grad():
                assert self.num_batches_tracked is not None
                self.num_batches_tracked.add_(1)
                factor = (
                    1.0 / float(self.num_batches_tracked)
                    if self.momentum is None
                    else self.momentum
                )
                unbiased = var.detach() * (n / (n - 1).clamp_min(1))
                assert self.running_mean is not None and self.running_var is not None
                self.running_mean.mul_(1 - factor).add_(
                    factor * mean.detach().to(self.running_mean.dtype)
                )
                self.running_var.mul_(1 - factor).add_(factor * unbiased.to(self.running_var.dtype))
        return y.to(input.dtype)


def _convert(module: nn.Module, cls: type) -> nn.Module:
    out = module
    if isinstance(module, nn.modules.batchnorm._BatchNorm) and not isinstance(
        module, nn.SyncBatchNorm | CPUSyncBatchNorm
    ):
        out = cls(
            module.num_features,
            module.eps,
            module.momentum,
            module.affine,
            module.track_running_stats,
        )
        if module.affine:
            with torch.no_grad():
                out.weight = module.weight
                out.bias = module.bias
        out.running_mean = module.running_mean
        out.running_var = module.running_var
        out.num_batches_tracked = module.num_batches_tracked
        out.training = module.training
        if hasattr(module, "qconfig"):
            out.qconfig = module.qconfig
    for name, child in module.named_children():
        out.add_module(name, _convert(child, cls))
    return out


def convert_sync_batchnorm(
    module: nn.Module, device: torch.device | str | None = None
) -> nn.Module:
    """Every BatchNorm of ``module`` made synchronous over ranks (``sync_bn: true``).

    CUDA modules get ``torch.nn.SyncBatchNorm``; others :class:`CPUSyncBatchNorm`. Parameters
    and buffers are kept (state-dict keys unchanged), so checkpoints load either way.
    """
    if device is None:
        p = next(iter(module.parameters()), None)
        device = p.device if p is not None else torch.device("cpu")
    if torch.device(device).type == "cuda":
        converted: nn.Module = nn.SyncBatchNorm.convert_sync_batchnorm(  # type: ignore[no-untyped-call]
            module
        )
        return converted
    return _convert(module, CPUSyncBatchNorm)


# ----------------------------------------------------------------------------- DDP


def wrap_ddp(module: nn.Module, find_unused: bool, static_graph: bool = False) -> nn.Module:
    """``module`` in ``DistributedDataParallel`` (returned as is on one process).

    ``device_ids`` is left None (the module already sits on this rank's device, and inputs
    are not copied). Buffers are not broadcast at every forward: BatchNorm statistics are
    averaged over ranks by :func:`sync_buffers` before each evaluation and checkpoint, which
    keeps the step free of a broadcast of every buffer (fixed ETFs are K x D).
    """
    if not is_dist():
        return module
    from torch.nn.parallel import DistributedDataParallel

    kwargs: dict[str, Any] = {
        "find_unused_parameters": find_unused,
        "static_graph": static_graph and not find_unused,
    }
    if "forward_sync_buffers" in inspect.signature(DistributedDataParallel.__init__).parameters:
        kwargs["forward_sync_buffers"] = False
    else:  # torch < 2.14
        kwargs["broadcast_buffers"] = False
    return DistributedDataParallel(module, **kwargs)


@torch.no_grad()
def sync_buffers(module: nn.Module) -> None:
    """Average the BatchNorm running statistics of ``module`` over ranks.

    Without ``sync_bn`` every rank's BatchNorm tracks the statistics of its own batches; the
    runner calls this before each evaluation and checkpoint so that every rank evaluates, and
    rank 0 saves, one model (the average over ranks, as timm's ``distribute_bn``).
    Synchronous BatchNorm layers already agree and are skipped, as are all other buffers
    (constants such as fixed ETFs, equal on every rank by construction). One all-reduce per
    dtype and device; a no-op on one process.
    """
    if not is_dist():
        return
    stats: list[Tensor] = []
    for m in module.modules():
        if (
            isinstance(m, nn.modules.batchnorm._BatchNorm)
            and not isinstance(m, nn.SyncBatchNorm | CPUSyncBatchNorm)
            and m.running_mean is not None
        ):
            assert m.running_var is not None
            stats += [m.running_mean, m.running_var]
    by_key: dict[tuple[torch.device, torch.dtype], list[Tensor]] = {}
    for b in stats:
        by_key.setdefault((b.device, b.dtype), []).append(b)
    w = world_size()
    for group in by_key.values():
        flat = all_reduce_sum(torch.cat([b.reshape(-1) for b in group])) / w
        start = 0
        for b in group:
            b.copy_(flat[start : start + b.numel()].view_as(b))
            start += b.numel()
