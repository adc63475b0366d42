"""What the input pipeline costs a config's training step: views per image vs batch-wise.

Usage::

    python benchmarks/input_pipeline.py --data-root data                  # AllNC++, IF 200
    python benchmarks/input_pipeline.py --data-root data --config configs/cifar10_lt/bcl.yaml \
        --imbalance 100 --steps 20

Times the real training step (:func:`nclt.engine.train_one_epoch` on
:func:`nclt.runner.build_training`'s environment) over ``--steps`` steps after 10 warm-up
steps, three ways, in one process, alternating ``--repeats`` times:

* ``preloaded``: the same number of batches taken from the per-image loader beforehand and
  replayed from memory: no loading, no augmentation; the most the step can reach;
* ``per-image``: ``data.batch_augment=false``: every view made image by image in the
  DataLoader workers (torchvision v2 transforms);
* ``batch-wise``: ``data.batch_augment=true``: the raw images loaded, the views made on the
  whole batch in the training process (``nclt.data.views.BATCH_VIEWS``); a view without a
  batched version falls back to per-image (the log says so).

Prints images/s and each way's ratio to ``preloaded``. Run it on a quiet machine: a second
process on the cores makes the figures worthless. Not a test.
"""

from __future__ import annotations

import argparse
import itertools
import time

import torch

from nclt.cli import build_parser, config_from_args
from nclt.engine import train_one_epoch
from nclt.runner import build_run, build_training, epoch_seed, seed_all

WARMUP = 10


def _config(args: argparse.Namespace, batch_augment: bool) -> object:
    argv = ["train", "--config", args.config, "--data-root", args.data_root]
    argv += ["--out", "unused", "--set", "progress=false"]
    argv += ["--set", f"data.batch_augment={batch_augment}"]
    if args.imbalance is not None:
        argv += ["--imbalance", f"{args.imbalance:g}"]
    for kv in args.set:
        argv += ["--set", kv]
    return config_from_args(build_parser().parse_args(argv))


def images_per_second(args: argparse.Namespace, way: str) -> float:
    """One way's images/s over ``args.steps`` steps after the warm-up."""
    cfg = _config(args, batch_augment=way == "batch-wise")
    run = build_run(cfg)
    setup = build_training(run)
    seed_all(epoch_seed(cfg.seed, 0))
    setup.gen.manual_seed(epoch_seed(cfg.seed, 0))
    setup.batch_gen.manual_seed(epoch_seed(cfg.seed, 0) + 1)
    setup.sampler.set_epoch(0)
    n = WARMUP + args.steps
    batches = itertools.islice(setup.train_loader, n)
    if way == "preloaded":
        batches = list(batches)
    stamps: list[float] = []
    train_one_epoch(
        setup.env,
        batches,
        0,
        cfg.epochs,
        len(setup.train_loader),
        on_step=lambda step, info: stamps.append(time.perf_counter()),
    )
    seconds = stamps[-1] - stamps[WARMUP - 1]
    return args.steps * cfg.data.batch_size / seconds


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", default="configs/cifar10_lt/allnc_pp.yaml")
    p.add_argument("--imbalance", type=float, default=200)
    p.add_argument("--data-root", required=True, help="folder with cifar-10-batches-py")
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    args = p.parse_args()
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    ways = ("preloaded", "per-image", "batch-wise")
    figures: dict[str, list[float]] = {w: [] for w in ways}
    for r in range(args.repeats):
        for way in ways:
            figures[way].append(images_per_second(args, way))
            print(f"repeat {r + 1}: {way:<10} {figures[way][-1]:6.0f} images/s", flush=True)
    top = sum(figures["preloaded"]) / len(figures["preloaded"])
    print(
        f"{args.config} (IF {args.imbalance}), {torch.get_num_threads()} threads, mean of "
        f"{args.repeats}:"
    )
    for way in ways:
        mean = sum(figures[way]) / len(figures[way])
        print(f"  {way:<10} {mean:6.0f} images/s = {mean / top:.2f} of preloaded")


if __name__ == "__main__":
    main()
