"""nclt.dist: collectives with unequal shards, SyncBatchNorm on the CPU, evaluation shards,
the global/per-process batch, and the training samplers' split of a global batch."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
import torch.distributed as tdist
import torch.multiprocessing as mp
from torch import nn

from nclt import dist
from nclt.data.samplers import build_sampler
from nclt.errors import ConfigError

D64 = torch.float64
SIZES = (5, 3)  # rows on rank 0 and rank 1: unequal on purpose


def _data() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    n = sum(SIZES)
    return (torch.randn(n, 4, generator=g, dtype=D64),
            torch.randn(n, 3, 2, 2, generator=g, dtype=D64) * 2 + 1,
            torch.randn(n, 3, 2, 2, generator=g, dtype=D64))


def _rows(rank: int) -> slice:
    start = sum(SIZES[:rank])
    return slice(start, start + SIZES[rank])


def _bn() -> nn.Module:
    torch.manual_seed(1)
    bn = nn.BatchNorm2d(3).double()
    with torch.no_grad():
        bn.weight.uniform_(0.5, 1.5)
        bn.bias.uniform_(-0.5, 0.5)
    return bn


def _computation(x: torch.Tensor, imgs: torch.Tensor, coef: torch.Tensor
                 ) -> dict[str, torch.Tensor]:
    """A global-batch loss on gathered rows (value: the global batch's; gradient scaled by the
    world size), and a sum over the rows of a BatchNorm over every rank's images."""
    x = x.clone().requires_grad_(True)
    imgs = imgs.clone().requires_grad_(True)
    world = dist.world_size()
    full = dist.gather_keep_grad(x)
    loss = (full.sum(0) ** 2).sum() + (full**3).mean()  # depends on every rank's rows
    from nclt.losses.functional import scale_grad

    scale_grad(loss, world).backward()
    bn = dist.convert_sync_batchnorm(_bn(), "cpu")
    bn.train()
    y = bn(imgs)
    (y * coef).sum().backward()
    return {"loss": loss.detach(), "x_grad": x.grad, "full": full.detach(), "y": y.detach(),
            "img_grad": imgs.grad, "w_grad": bn.weight.grad, "b_grad": bn.bias.grad,
            "running_mean": bn.running_mean, "running_var": bn.running_var}


def _worker(rank: int, init_file: str, out_dir: str) -> None:
    torch.set_num_threads(1)
    tdist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    try:
        x, imgs, coef = _data()
        rows = _rows(rank)
        out = _computation(x[rows], imgs[rows], coef[rows])
        out["local_rows"] = torch.tensor([dist.local_rows(SIZES[rank]).start])
        out["labels"] = dist.all_gather_cat(torch.arange(SIZES[rank]) + 10 * rank)
        out["all_true"] = torch.tensor([dist.all_true(True), dist.all_true(rank == 0)])
        out["object"] = torch.tensor(dist.broadcast_object(rank + 7))
        # BatchNorm statistics tracked per rank are averaged by sync_buffers
        bn = nn.BatchNorm1d(2)
        bn.running_mean.fill_(float(rank))
        bn.running_var.fill_(float(2 + 2 * rank))
        dist.sync_buffers(bn)
        out["synced"] = torch.cat([bn.running_mean, bn.running_var])
        torch.save(out, Path(out_dir, f"rank{rank}.pt"))
    finally:
        tdist.destroy_process_group()


@pytest.mark.dist
def test_unequal_shards_match_one_process(tmp_path: Path) -> None:
    os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
    mp.start_processes(_worker, args=(str(tmp_path / "init"), str(tmp_path)), nprocs=2,
                       start_method="spawn")
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in (0, 1)]
    x, imgs, coef = _data()
    one = _computation(x, imgs, coef)
    for r, got in enumerate(ranks):
        torch.testing.assert_close(got["full"], one["full"])
        torch.testing.assert_close(got["loss"], one["loss"])  # the global batch's value
        torch.testing.assert_close(got["y"], one["y"][_rows(r)])  # SyncBatchNorm forward
        torch.testing.assert_close(got["running_mean"], one["running_mean"])
        torch.testing.assert_close(got["running_var"], one["running_var"])
        assert got["local_rows"].item() == _rows(r).start
        assert got["labels"].tolist() == [0, 1, 2, 3, 4, 10, 11, 12]
        assert got["all_true"].tolist() == [True, False]
        assert got["object"].item() == 7
        torch.testing.assert_close(got["synced"], torch.tensor([0.5, 0.5, 3.0, 3.0]))
    # gathered rows: W x the global gradient, which DDP's averaging over ranks undoes
    torch.testing.assert_close(torch.cat([g["x_grad"] for g in ranks]) / 2, one["x_grad"])
    # SyncBatchNorm: each rank's inputs get the gradient of the sum of every rank's losses;
    # the affine parameters' gradients add up over ranks to the one-process gradient
    torch.testing.assert_close(torch.cat([g["img_grad"] for g in ranks]), one["img_grad"])
    for key in ("w_grad", "b_grad"):
        torch.testing.assert_close(ranks[0][key] + ranks[1][key], one[key])


def test_shard_sampler_covers_the_set_once() -> None:
    for n in (0, 1, 7, 10):
        shards = [list(dist.ShardSampler(n, 3, r)) for r in range(3)]
        assert sorted(i for s in shards for i in s) == list(range(n))
        assert [len(dist.ShardSampler(n, 3, r)) for r in range(3)] == [len(s) for s in shards]
    with pytest.raises(ConfigError):
        dist.ShardSampler(5, 2, 2)


def test_local_batch_size_is_the_global_batch_split() -> None:
    assert dist.local_batch_size(128, 4) == 32
    assert dist.local_batch_size(128) == 128
    with pytest.raises(ConfigError, match="divisible"):
        dist.local_batch_size(100, 8)
    with pytest.raises(ConfigError, match="at least 2"):
        dist.local_batch_size(4, 4)


@pytest.mark.parametrize("kind", ["instance", "class_balanced", "sqrt"])
def test_rank_batches_together_are_the_one_process_batch(kind: str) -> None:
    """Batch k of b on each of R ranks = batch k of R*b on one process (as sets)."""
    targets = [c for c, n in enumerate([20, 9, 5, 2]) for _ in range(n)]
    b, world = 3, 2
    one = build_sampler(kind, targets, seed=4, num_replicas=1, rank=0)
    parts = [build_sampler(kind, targets, seed=4, num_replicas=world, rank=r)
             for r in range(world)]
    for s in (one, *parts):
        s.set_epoch(2)
    whole = list(one)
    shares = [list(p) for p in parts]
    for k in range(len(shares[0]) // b):
        got = sorted(i for s in shares for i in s[k * b : (k + 1) * b])
        want = sorted(whole[k * b * world : (k + 1) * b * world])
        if len(want) == b * world:
            assert got == want, (kind, k)


def test_single_process_helpers_are_no_ops() -> None:
    t = torch.arange(4.0, requires_grad=True)
    assert dist.gather_keep_grad(t) is t and dist.all_gather_cat(t) is t
    assert dist.all_true(True) and not dist.all_true(torch.tensor([True, False]))
    assert dist.local_rows(3) == slice(0, 3)
    bn = nn.BatchNorm1d(3)
    assert isinstance(dist.convert_sync_batchnorm(nn.Sequential(bn), "cpu")[0],
                      dist.CPUSyncBatchNorm)
    assert dist.wrap_ddp(bn, find_unused=False) is bn
