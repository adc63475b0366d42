"""Process-group helpers that are no-ops on a single process.

Every statistic that a loss takes "over the batch" goes through these, so that under
``torchrun`` it is taken over the global batch (see docs/DISTRIBUTED.md).
"""

from __future__ import annotations

import torch
import torch.distributed as tdist
from torch import Tensor


def is_dist() -> bool:
    """True inside an initialised process group with more than one process."""
    return tdist.is_available() and tdist.is_initialized() and tdist.get_world_size() > 1


def rank() -> int:
    return tdist.get_rank() if is_dist() else 0


def world_size() -> int:
    return tdist.get_world_size() if is_dist() else 1


def is_main() -> bool:
    return rank() == 0


def all_reduce_sum(t: Tensor) -> Tensor:
    """Sum of ``t`` over ranks (a new tensor; no gradient flows through the reduction)."""
    if not is_dist():
        return t
    out = t.detach().clone()
    tdist.all_reduce(out, op=tdist.ReduceOp.SUM)
    return out


def all_gather_cat(t: Tensor) -> Tensor:
    """Concatenate ``t`` (same shape on every rank) along dim 0 over ranks, without gradient."""
    if not is_dist():
        return t
    parts = [torch.empty_like(t) for _ in range(world_size())]
    tdist.all_gather(parts, t.detach().contiguous())
    return torch.cat(parts, dim=0)


def gather_keep_grad(t: Tensor) -> Tensor:
    """Concatenate ``t`` over ranks along dim 0, keeping this rank's slice differentiable.

    The other ranks' slices are detached copies; this rank's own tensor is put back in its
    slot, so gradients flow to the local features. A loss computed on the gathered tensor is
    the global-batch loss; DDP averages gradients over ranks, so a caller that wants the
    global-batch gradient multiplies its loss by ``world_size()`` (see ``losses`` docs).
    Requires the same dim-0 size on every rank (DataLoaders with drop_last or equal shards).
    """
    if not is_dist():
        return t
    parts = [torch.empty_like(t) for _ in range(world_size())]
    tdist.all_gather(parts, t.detach().contiguous())
    parts[rank()] = t
    return torch.cat(parts, dim=0)


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
