"""nclt against the LDAM-DRW reference training loop, measured back to back in one process.

Usage::

    python benchmarks/official_ldam.py --repo PATH/TO/LDAM-DRW --data-root data
    python benchmarks/official_ldam.py --repo ... --data-root data --rounds 2 --json f.json

The CIFAR-LT code of the papers nclt implements (ARB-Loss, ETF-DR, BCL, INC) descends from
kaidic/LDAM-DRW's ``cifar_train.py``. Its script cannot run on a machine without a GPU (it
calls ``.cuda()`` unconditionally), so this benchmark drives the pieces it trains with, imported
from a clone of that repository at ``--repo`` (never vendored here): its ``IMBALANCECIFAR10``
dataset with its per-image PIL transforms, its ``resnet32``, its DataLoader settings (batch
128, shuffled, 4 workers), fp32, plain cross-entropy, and per step what its ``train`` does
(``loss.item()`` and top-1/top-5 with its ``accuracy``). Against it, in the same process and
one after the other, run nclt's real training step of ``configs/cifar10_lt/ce.yaml`` (the same
protocol) with its defaults (bf16 autocast + channels_last, 2 workers on uint8 tensors) and in
fp32 + contiguous memory (the reference's numerics).

It also checks that both select the same long-tailed subset: the reference dataset's images
and labels must equal nclt's ``CIFARLT`` ones element for element.

The project's CIFAR-10 copy is JPEG re-encoded, so its MD5 sums differ from the official
archive's and torchvision's integrity check would refuse it; the check is bypassed here, for
this benchmark only.
"""

from __future__ import annotations

import argparse
import importlib
import itertools
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
import torchvision.transforms as T

REPO_ROOT = Path(__file__).resolve().parents[1]


def reference_modules(repo: Path) -> tuple[Any, Any, Any]:
    """(models, imbalance_cifar, utils) modules of an LDAM-DRW clone."""
    if not (repo / "imbalance_cifar.py").is_file():
        raise SystemExit(f"{repo} is not a clone of kaidic/LDAM-DRW (no imbalance_cifar.py)")
    sys.path.insert(0, str(repo))
    names = ("models", "imbalance_cifar", "utils")
    mods = tuple(importlib.import_module(n) for n in names)
    return mods  # type: ignore[return-value]


def reference_dataset(imbalance_cifar: Any, data_root: Path) -> Any:
    """The reference CIFAR-10-LT IF 100 training set with its own transforms."""
    import torchvision.datasets.cifar as tv_cifar

    tv_cifar.check_integrity = lambda *a, **k: True  # the JPEG copy's MD5s differ
    transform = T.Compose(
        [
            T.RandomCrop(32, padding=4),
            T.RandomHorizontalFlip(),
            T.ToTensor(),
            T.Normalize((0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)),
        ]
    )
    return imbalance_cifar.IMBALANCECIFAR10(
        root=str(data_root), imb_factor=0.01, rand_number=0, train=True, transform=transform
    )


def same_subset(ref_set: Any, data_root: Path) -> bool:
    """Whether the reference subset equals nclt's (images and labels, in order)."""
    from nclt.data.cifar import CIFARLT

    ours = CIFARLT(data_root, train=True, num_classes=10, imbalance=100)
    ref_images = torch.from_numpy(np.ascontiguousarray(ref_set.data)).permute(0, 3, 1, 2)
    return bool(
        ref_images.shape == ours.images.shape
        and torch.equal(ref_images, ours.images)
        and list(ref_set.targets) == ours.targets
    )


def reference_throughput(
    models: Any, utils: Any, dataset: Any, warmup: int, steps: int, workers: int
) -> float:
    """Training images/s of the reference loop over ``steps`` steps after ``warmup``."""
    model = models.resnet32(num_classes=10, use_norm=False)
    model.train()
    opt = torch.optim.SGD(model.parameters(), 0.1, momentum=0.9, weight_decay=2e-4)
    loader = torch.utils.data.DataLoader(
        dataset,
        batch_size=128,
        shuffle=True,
        num_workers=workers,
        pin_memory=torch.cuda.is_available(),
    )
    seen, start = 0, 0.0
    for i, (x, y) in enumerate(itertools.islice(loader, warmup + steps)):
        if i == warmup:
            start, seen = time.perf_counter(), 0
        out = model(x)
        loss = F.cross_entropy(out, y)
        utils.accuracy(out, y, topk=(1, 5))
        loss.item()
        opt.zero_grad()
        loss.backward()
        opt.step()
        seen += x.shape[0]
    return seen / (time.perf_counter() - start)


def nclt_throughput(data_root: Path, warmup: int, steps: int, fast: bool) -> float:
    """Training images/s of nclt's ``ce`` (configs/cifar10_lt/ce.yaml)."""
    from nclt.bench import end_to_end
    from nclt.cli import build_parser, config_from_args

    argv = ["train", "--config", str(REPO_ROOT / "configs/cifar10_lt/ce.yaml")]
    argv += ["--data-root", str(data_root), "--set", "progress=false", "--set", "device=cpu"]
    if not fast:
        argv += ["--set", "precision=fp32", "--set", "channels_last=false"]
    cfg = config_from_args(build_parser().parse_args(argv))
    return float(end_to_end(cfg, warmup, steps)["images_per_second"])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--repo", type=Path, required=True, help="a clone of kaidic/LDAM-DRW")
    p.add_argument("--data-root", type=Path, required=True, help="holds cifar-10-batches-py/")
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--rounds", type=int, default=2, help="alternate the three arms this often")
    p.add_argument("--workers", type=int, default=4, help="the reference's loader workers")
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args()

    models, imbalance_cifar, utils = reference_modules(args.repo.resolve())
    ref_set = reference_dataset(imbalance_cifar, args.data_root)
    subset_equal = same_subset(ref_set, args.data_root)
    arms: dict[str, list[float]] = {"reference fp32": [], "nclt bf16+cl": [], "nclt fp32": []}
    for r in range(args.rounds):
        for name in arms:
            if name == "reference fp32":
                ips = reference_throughput(
                    models, utils, ref_set, args.warmup, args.steps, args.workers
                )
            else:
                ips = nclt_throughput(args.data_root, args.warmup, args.steps, "bf16" in name)
            arms[name].append(ips)
            print(f"round {r + 1}: {name:15s} {ips:7.1f} images/s", flush=True)
    med = {k: statistics.median(v) for k, v in arms.items()}
    base = med["reference fp32"]
    print(f"\nsame long-tailed subset as the reference: {subset_equal}")
    print(f"{'arm':15s} {'images/s':>9s} {'vs reference':>13s}")
    for k, v in med.items():
        print(f"{k:15s} {v:9.1f} {v / base:12.2f}x")
    doc = {
        "threads": torch.get_num_threads(),
        "warmup": args.warmup,
        "steps": args.steps,
        "rounds": arms,
        "median_images_per_second": med,
        "speedup_vs_reference": {k: v / base for k, v in med.items()},
        "same_subset": subset_equal,
    }
    if args.json:
        args.json.write_text(json.dumps(doc, indent=2))


if __name__ == "__main__":
    main()
