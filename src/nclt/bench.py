"""``nclt bench``: training throughput against the hardware's ceiling, in one process and run.

Three measurements, all on CIFAR-10-LT (IF 100) shapes with ResNet-32 unless told otherwise:

* **ceiling**: the model's forward + backward + SGD step on random tensors already in memory,
  same batch, precision and memory format as training: no data loading, no augmentation, no
  loss beyond CE. Nothing nclt does can beat it.
* **methods**: end-to-end training images/s of real methods through the real training step
  (:func:`nclt.runner.build_run` / :func:`nclt.runner.build_training` /
  :func:`nclt.engine.train_one_epoch`): data loading, augmentation (all views), the objective
  and the optimizer. An image counts once however many views it has.
* **overhead**: for each loss term, the extra time of the method's objective (forward +
  backward on the network's outputs) over the CE objective, as a fraction of one CE training
  step of the ceiling measurement.

CIFAR-10 is read from ``--data-root``; when it is absent, random images of the same shape are
written to a temporary folder in the official layout (the output says which).
"""

from __future__ import annotations

import itertools
import pickle
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from nclt.engine import Precision, train_one_epoch
from nclt.errors import ConfigError
from nclt.methods.recipes import BuildContext, build_method
from nclt.methods.schedules import Progress

# method -> config file (relative to the repo's configs/) used when it exists, else the preset
METHOD_CONFIGS = {"bcl": "cifar10_lt/bcl.yaml", "allnc": "cifar10_lt/allnc.yaml"}
# timed end to end by default; "name:batch" trains with data.batch_augment=true (the views
# made batch-wise in the training process instead of image by image in the workers)
DEFAULT_METHODS = ("ce", "bcl", "allnc", "allnc:batch")
# compositions whose extra terms are measured against plain CE
OVERHEAD_METHODS = [
    "ce-drw",
    "focal",
    "cb-softmax",
    "cb-sigmoid",
    "ldam-drw",
    "balanced-softmax",
    "arb",
    "ce+inc",
    "ce+disa",
    "etf-dr",
    "etf-dr+disa",
    "bcl",
    "allnc",
]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def write_synthetic_cifar10(
    root: Path, train_per_class: int = 5000, test_per_class: int = 1000, seed: int = 0
) -> Path:
    """Random uint8 images in the official cifar-10-batches-py layout (default: full size).

    ``train_per_class`` must be a multiple of 5 (the images are spread over five batches).
    """
    rng = np.random.default_rng(seed)
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    labels = np.repeat(np.arange(10), train_per_class)
    rng.shuffle(labels)
    per_batch = len(labels) // 5
    for b in range(5):
        part = labels[b * per_batch : (b + 1) * per_batch]
        data = rng.integers(0, 256, (len(part), 3072), dtype=np.uint8)
        with open(folder / f"data_batch_{b + 1}", "wb") as f:
            pickle.dump({b"data": data, b"labels": part.tolist()}, f)
    test = np.repeat(np.arange(10), test_per_class)
    with open(folder / "test_batch", "wb") as f:
        pickle.dump(
            {
                b"data": rng.integers(0, 256, (len(test), 3072), dtype=np.uint8),
                b"labels": test.tolist(),
            },
            f,
        )
    return root


def ceiling(
    arch: str,
    batch: int,
    precision: str,
    channels_last: bool,
    device: torch.device,
    warmup: int,
    steps: int,
) -> tuple[float, float]:
    """(images/s, ms per step) of fwd + bwd + SGD on random in-memory tensors."""
    from nclt.models import build_network

    net = build_network(arch, "linear", 10, 3, [0.5] * 3, [0.25] * 3).to(device)
    if channels_last:
        net = net.to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9, weight_decay=2e-4)
    x = torch.randint(0, 256, (batch, 3, 32, 32), dtype=torch.uint8, device=device)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (batch,), device=device)
    prec = Precision.of(precision, device)
    times = []
    for i in range(warmup + steps):
        _sync(device)
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        with prec.autocast():
            out = net(x)
        F.cross_entropy(out["logits"].float(), y).backward()
        opt.step()
        _sync(device)
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    ms = 1e3 * statistics.median(times)
    return batch / (ms / 1e3), ms


def end_to_end(cfg: Any, warmup: int, steps: int) -> dict[str, Any]:
    """Images/s of the real training step of ``cfg`` over ``steps`` steps after ``warmup``."""
    from nclt.runner import build_run, build_training, epoch_seed, seed_all

    run = build_run(cfg)
    setup = build_training(run)
    seed_all(epoch_seed(cfg.seed, 0))
    setup.gen.manual_seed(epoch_seed(cfg.seed, 0))
    setup.sampler.set_epoch(0)
    marks: dict[str, float] = {}
    seen = [0]

    def on_step(step: int, info: dict[str, float]) -> None:
        if step == warmup - 1:
            _sync(run.device)
            marks["start"] = time.perf_counter()
            seen[0] = 0
        elif step >= warmup:
            seen[0] += cfg.data.batch_size

    loader = itertools.islice(setup.train_loader, warmup + steps)
    train_one_epoch(setup.env, loader, 0, cfg.epochs, len(setup.train_loader), on_step=on_step)
    _sync(run.device)
    seconds = time.perf_counter() - marks["start"]
    views = len(run.method.views or [cfg.data.train_view])
    return {
        "images_per_second": seen[0] / seconds,
        "views": views,
        "batch_size": cfg.data.batch_size,
        "workers": cfg.data.num_workers,
        "batch_augment": cfg.data.batch_augment,
    }


def term_overhead(
    method: str,
    device: torch.device,
    step_ms: float,
    reps: int,
    batch: int = 128,
    dim: int = 64,
    k: int = 10,
) -> dict[str, float]:
    """Extra fwd+bwd time of ``method``'s objective over CE's, as a fraction of a CE step."""
    g = torch.Generator().manual_seed(0)
    counts = torch.tensor([5000, 2997, 1796, 1077, 645, 387, 232, 139, 83, 50])[:k]
    labels = torch.multinomial(counts.double(), batch, replacement=True, generator=g).to(device)
    ctx_build = BuildContext(counts, k, dim, 200)

    def timed(name: str) -> float:
        m = build_method(name, {}, ctx_build)
        m.objective.to(device)
        head_w = torch.randn(k, dim, generator=g).to(device).requires_grad_(True)
        feats = torch.randn(batch, dim, generator=g).to(device).requires_grad_(True)
        logits = torch.randn(batch, k, generator=g).to(device).requires_grad_(True)
        if m.head == "etf":
            from nclt.geometry import simplex_etf

            head_w = simplex_etf(dim, k).T.contiguous().to(device)
        p = Progress(199, 0, 97, 200)  # the last epoch: every schedule and DRW switched on
        ctx = {
            "logits": logits,
            "features": feats,
            "head_weight": head_w,
            "labels": labels,
            "labels_b": None,
            "lam": 1.0,
            "class_weight": None,
            # multi-view outputs (BCL: 2 contrastive projections; AllNC: 2 classified views)
            "proj": torch.randn(batch, 2, 128, generator=g).to(device).requires_grad_(True),
            "pred": torch.randn(batch, 2, 128, generator=g).to(device).requires_grad_(True),
            "view_logits": torch.randn(batch, 2, k, generator=g).to(device).requires_grad_(True),
            "view_features": torch.randn(batch, 2, dim, generator=g)
            .to(device)
            .requires_grad_(True),
        }
        ctx.update({key: s(p) for key, s in m.schedules.items()})
        times = []
        for i in range(reps + 2):
            _sync(device)
            t0 = time.perf_counter()
            ctx["head_features"] = F.normalize(feats, dim=1)  # the ETF head's embedding
            m.objective(ctx, p).total.backward()
            _sync(device)
            if i >= 2:
                times.append(time.perf_counter() - t0)
        return 1e3 * statistics.median(times)

    base = timed("ce")
    extra = max(0.0, timed(method) - base)
    return {"ms": extra, "fraction": extra / step_ms}


def run_bench(
    data_root: str | None,
    quick: bool = False,
    methods: list[str] | None = None,
    device: str = "auto",
    threads: int = 0,
    precision: str = "bf16",
    repo_configs: Path | None = None,
    overheads: list[str] | None = None,
) -> dict[str, Any]:
    """All three measurements; returns the JSON document of ``nclt bench --json``.

    ``methods``: timed end to end (default :data:`DEFAULT_METHODS`); ``overheads``: the
    methods whose loss terms are timed (default :data:`OVERHEAD_METHODS`)."""
    from nclt.cli import build_parser, config_from_args
    from nclt.runner import resolve_device

    if threads > 0:
        torch.set_num_threads(threads)
    dev = resolve_device(device)
    methods = methods or list(DEFAULT_METHODS)
    for spec in methods:
        if spec.partition(":")[2] not in ("", "batch"):
            raise ConfigError(f"bench method {spec!r}: the only suffix is ':batch'")
    w, n = (2, 5) if quick else (5, 30)
    root = Path(data_root) if data_root else None
    source = "CIFAR-10"
    tmp = None
    if root is None or not (root / "cifar-10-batches-py").is_dir():
        tmp = tempfile.TemporaryDirectory(prefix="nclt-bench-")
        root = write_synthetic_cifar10(Path(tmp.name))
        source = "synthetic images of CIFAR-10's shape (no CIFAR-10 under --data-root)"
    try:
        ceil_ips, step_ms = ceiling("resnet32", 128, precision, True, dev, w, n)
        results: dict[str, Any] = {
            "data": source,
            "device": str(dev),
            "threads": torch.get_num_threads(),
            "precision": precision,
            "ceiling_images_per_second": ceil_ips,
            "ceiling_step_ms": step_ms,
            "methods": {},
            "method_details": {},
            "overhead": {},
        }
        for spec in methods:
            m, _, mode = spec.partition(":")
            argv = [
                "train",
                "--dataset",
                "cifar10",
                "--data-root",
                str(root),
                "--method",
                m,
                "--set",
                f"data.batch_augment={mode == 'batch'}",
                "--set",
                "progress=false",
                "--set",
                f"precision={precision}",
                "--set",
                f"device={dev}",
            ]
            cfg_file = (
                (repo_configs / METHOD_CONFIGS[m])
                if (repo_configs and m in METHOD_CONFIGS)
                else None
            )
            if cfg_file is not None and cfg_file.is_file():
                argv = ["train", "--config", str(cfg_file), *argv[1:]]
            cfg = config_from_args(build_parser().parse_args(argv))
            res = end_to_end(cfg, w, max(3, n // 2) if m != "ce" else n)
            results["methods"][spec] = res["images_per_second"]
            results["method_details"][spec] = res
        for m in OVERHEAD_METHODS if overheads is None else overheads:
            results["overhead"][m] = term_overhead(m, dev, step_ms, 5 if quick else 20)["fraction"]
        if "ce" in results["methods"]:
            results["ce_fraction_of_ceiling"] = results["methods"]["ce"] / ceil_ips
        return results
    finally:
        if tmp is not None:
            tmp.cleanup()


def format_bench(r: dict[str, Any]) -> str:
    lines = [
        f"nclt bench on {r['device']} ({r['threads']} threads, {r['precision']}), data: "
        f"{r['data']}",
        f"  ceiling (ResNet-32 fwd+bwd+step, batch 128, random tensors): "
        f"{r['ceiling_images_per_second']:.0f} images/s ({r['ceiling_step_ms']:.1f} ms/step)",
    ]
    for m, ips in r["methods"].items():
        d = r["method_details"][m]
        lines.append(
            f"  {m:<11} end to end: {ips:7.0f} images/s = "
            f"{100 * ips / r['ceiling_images_per_second']:5.1f}% of the ceiling "
            f"(batch {d['batch_size']}, {d['views']} view(s), {d['workers']} workers"
            f"{', batched views' if d.get('batch_augment') else ''})"
        )
    lines.append("  loss-term overhead over a CE step (fraction of one training step):")
    for m, frac in r["overhead"].items():
        lines.append(f"    {m:<18} {100 * frac:6.2f}%")
    return "\n".join(lines)
