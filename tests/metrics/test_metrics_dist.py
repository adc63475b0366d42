"""Two gloo processes, each with half of the data, give the one-process metrics."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.distributed as tdist
import torch.multiprocessing as mp

from nclt.metrics import CollapseAccumulator, LongTailAccuracy, NC4Accumulator

K, D = 6, 5
COUNTS = [60, 35, 20, 12, 7, 3]


def _data() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    labels = torch.cat([torch.full((n,), c) for c, n in enumerate(COUNTS)])
    labels = labels[torch.randperm(len(labels), generator=g)]
    feats = 2 * torch.randn(K, D, generator=g)[labels] + torch.randn(len(labels), D, generator=g)
    w = torch.randn(K, D, generator=g)
    return feats, labels, w, feats @ w.T


def _metrics(
    feats: torch.Tensor, labels: torch.Tensor, w: torch.Tensor, logits: torch.Tensor
) -> dict[str, Any]:
    acc = LongTailAccuracy(K, COUNTS)
    nc = CollapseAccumulator(K, D, class_counts=COUNTS)
    for lo in range(0, len(labels), 16):
        acc.update(logits[lo : lo + 16], labels[lo : lo + 16])
        nc.update(feats[lo : lo + 16], labels[lo : lo + 16])
    nc4 = NC4Accumulator(nc.class_means())
    nc4.update(feats, logits)
    return {
        "accuracy": acc.compute(),
        "collapse": nc.compute(w, within="class"),
        "nc4": nc4.compute(),
    }


def _worker(rank: int, init_file: str, out_dir: str) -> None:
    tdist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    try:
        feats, labels, w, logits = _data()
        shard = slice(rank, None, 2)  # uneven shards, no padding
        result = _metrics(feats[shard], labels[shard], w, logits[shard])
        Path(out_dir, f"rank{rank}.json").write_text(json.dumps(result))
    finally:
        tdist.destroy_process_group()


def _close(a: Any, b: Any) -> None:
    if isinstance(a, dict):
        assert a.keys() == b.keys()
        for key in a:
            _close(a[key], b[key])
    elif isinstance(a, list):
        for x, y in zip(a, b, strict=True):
            _close(x, y)
    elif isinstance(a, float):
        assert a == pytest.approx(b, rel=1e-9, abs=1e-12)
    else:
        assert a == b


@pytest.mark.dist
def test_two_processes_match_one(tmp_path: Path) -> None:
    os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
    mp.spawn(_worker, args=(str(tmp_path / "init"), str(tmp_path)), nprocs=2, join=True)
    expected = json.loads(json.dumps(_metrics(*_data())))
    for rank in (0, 1):
        _close(json.loads((tmp_path / f"rank{rank}.json").read_text()), expected)
