"""Forward + backward time of every loss term, and its share of a ResNet-32 training step.

Usage::

    python benchmarks/bench_losses.py            # 2 warm-up + 10 timed runs per cell
    python benchmarks/bench_losses.py --quick    # 1 warm-up + 3 timed runs
    python benchmarks/bench_losses.py --device cuda --threads 4

Shapes: logits (B, K), features (B, D), projections (B, 2, D) (two views), prototypes / ETF
(K, D). Prints the median milliseconds of one forward + backward per cell, then, for the
CIFAR-size columns (B=128), each term as a percentage of one ResNet-32 training step at
batch 128 (forward + backward + SGD step, bf16 autocast and channels_last on the CPU as nclt
trains). Not a test.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F

from nclt.geometry import simplex_etf
from nclt.losses import LOSSES
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
    counts = torch.bincount(labels, minlength=k).clamp_min(1).cpu() * 10
    logits = torch.randn(b, k, generator=g).to(device).requires_grad_(True)
    logit_losses = {
        "ce": {},
        "focal": {},
        "ldam": {},
        "balanced_softmax": {},
        "gr": {},
        "mse": {},
        "cb": {"form": "softmax"},
        "arb": {"counts": "batch"},
    }
    cases = {}
    for name, kw in logit_losses.items():
        loss = LOSSES.build(name, class_counts=counts, **kw).to(device)
        cases[name] = lambda loss=loss: loss(logits, labels)
    cb_sigmoid = LOSSES.build("cb", class_counts=counts, form="sigmoid").to(device)
    cases["cb sigmoid"] = lambda: cb_sigmoid(logits, labels)
    return cases | {
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


def resnet32_step_ms(device: torch.device, warmup: int, reps: int, batch: int = 128) -> float:
    """One ResNet-32 training step (fwd + bwd + SGD) on random CIFAR-shaped data, as nclt trains."""
    from nclt.models import build_network

    net = build_network("resnet32", "linear", 10, 3, [0.5] * 3, [0.25] * 3).to(device)
    net = net.to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9, weight_decay=2e-4)
    x = torch.randint(0, 256, (batch, 3, 32, 32), dtype=torch.uint8, device=device)
    x = x.contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (batch,), device=device)

    def step() -> torch.Tensor:
        opt.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=torch.bfloat16):
            out = net(x)
        loss = F.cross_entropy(out["logits"].float(), y)
        return loss

    def full() -> torch.Tensor:
        loss = step()
        return loss

    for _ in range(warmup):
        full().backward()
        opt.step()
    times = []
    for _ in range(reps):
        _sync(device)
        start = time.perf_counter()
        full().backward()
        opt.step()
        _sync(device)
        times.append(time.perf_counter() - start)
    return 1e3 * statistics.median(times)


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
    step = resnet32_step_ms(device, warmup, reps)
    print(f"\nResNet-32 training step, batch 128, bf16 + channels_last: {step:.1f} ms")
    print("term".ljust(width) + "% of step, K=10".rjust(20) + "% of step, K=100".rjust(20))
    for name, row in results.items():
        print(name.ljust(width) + f"{100 * row[0] / step:20.2f}{100 * row[1] / step:20.2f}")


if __name__ == "__main__":
    main()
