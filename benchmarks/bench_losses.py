"""Forward + backward time of the neural-collapse loss terms (regularizers, geometry, contrastive).

Usage::

    python benchmarks/bench_losses.py            # 2 warm-up + 10 timed runs per cell
    python benchmarks/bench_losses.py --quick    # 1 warm-up + 3 timed runs
    python benchmarks/bench_losses.py --device cuda --threads 4

Shapes: features (B, D), projections (B, 2, D) (two views), prototypes / ETF (K, D). Prints the
median milliseconds of one forward + backward per cell. Not a test.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F

from nclt.geometry import simplex_etf
from nclt.losses.contrastive import BCLLoss, HyConLoss, SupConLoss
from nclt.losses.geometry import DisALoss, DotRegressionLoss
from nclt.losses.regularizers import (
    BetweenClassLoss,
    CenterLoss,
    P2PClassifierLoss,
    P2PLoss,
    WithinClassLoss,
)

CONFIGS = [(128, 64, 10), (128, 64, 100), (256, 2048, 1000)]  # (B, D, K)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _time(fn: Callable[[], torch.Tensor], device: torch.device, warmup: int, reps: int) -> float:
    for _ in range(warmup):
        fn().backward()
    times = []
    for _ in range(reps):
        _sync(device)
        start = time.perf_counter()
        fn().backward()
        _sync(device)
        times.append(time.perf_counter() - start)
    return 1e3 * statistics.median(times)


def _cases(b: int, d: int, k: int, device: torch.device) -> dict[str, Callable[[], torch.Tensor]]:
    g = torch.Generator().manual_seed(0)
    labels = (torch.rand(b, generator=g) ** 3 * k).long().clamp_max(k - 1).to(device)  # long tail
    feats = torch.randn(b, d, generator=g).to(device).requires_grad_(True)
    proj = torch.randn(b, 2, d, generator=g).to(device).requires_grad_(True)
    pred = torch.randn(b, 2, d, generator=g).to(device).requires_grad_(True)
    protos = torch.randn(k, d, generator=g).to(device).requires_grad_(True)
    weight = torch.randn(k, d, generator=g).to(device).requires_grad_(True)
    if d >= k - 1:
        etf = simplex_etf(d, k).T.contiguous().to(device)
    else:  # no K-simplex fits in D dims: time the same computation on random unit rows
        etf = F.normalize(torch.randn(k, d, generator=g), dim=1).to(device)
    within = WithinClassLoss(k).to(device)
    within_l = WithinClassLoss(k, d, centres="learnable").to(device)
    between = BetweenClassLoss(k).to(device)
    center = CenterLoss(k, d).to(device)
    p2p = P2PLoss(k).to(device)
    p2p_w = P2PClassifierLoss().to(device)
    dr = DotRegressionLoss().to(device)
    disa = DisALoss(etf=etf, epsilon=1.0).to(device)
    disa_small = DisALoss(etf=etf, epsilon=0.01, iterations=100, tol=None).to(device)
    supcon = SupConLoss(0.1).to(device)
    bcl = BCLLoss(k, 0.1).to(device)
    hycon = HyConLoss(k).to(device)
    return {
        "inc_within (batch)": lambda: within(feats, labels),
        "inc_within (learnable)": lambda: within_l(feats, labels),
        "inc_between": lambda: between(feats, labels),
        "center": lambda: center(feats, labels),
        "p2p": lambda: p2p(feats, labels),
        "p2p_classifier": lambda: p2p_w(weight),
        "dr": lambda: dr(feats, labels, etf),
        "disa eps=1 (tol 1e-5)": lambda: disa(feats, labels),
        "disa eps=0.01 (log, 100 it)": lambda: disa_small(feats, labels),
        "supcon (V=2)": lambda: supcon(proj, labels),
        "bcl (V=2, K prototypes)": lambda: bcl(proj, labels, protos),
        "hycon (V=2)": lambda: hycon(pred, proj, labels),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1 warm-up + 3 timed runs")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    warmup, reps = (1, 3) if args.quick else (2, 10)

    columns = [f"B={b} D={d} K={k}" for b, d, k in CONFIGS]
    results: dict[str, list[float]] = {}
    for b, d, k in CONFIGS:
        for name, fn in _cases(b, d, k, device).items():
            results.setdefault(name, []).append(_time(fn, device, warmup, reps))
    width = max(map(len, results)) + 2
    print(f"forward+backward, median ms ({device}, {torch.get_num_threads()} threads, float32)")
    print("term".ljust(width) + "".join(c.rjust(20) for c in columns))
    for name, row in results.items():
        print(name.ljust(width) + "".join(f"{t:20.2f}" for t in row))
    print("(B=128 D=64 K=100: dr / disa on random unit rows, no 100-simplex fits in 64 dims)")


if __name__ == "__main__":
    main()
