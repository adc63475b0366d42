"""The ``nclt`` command: the only module that parses arguments or reads config files.

    nclt train [--config FILE] [--method NAME] [--dataset NAME] [--imbalance IF] [--epochs N]
               [--out DIR] [--data-root DIR] [--seeds 0,1,2] [--set key=value ...]
    nclt train --resume RUN_DIR
    nclt eval CHECKPOINT [--data-root DIR] [--json FILE]
    nclt data DATASET --imbalance IF [--profile exp|step] [--reverse]
    nclt methods

Config precedence, lowest first: the dataset's preset (``nclt/presets/<dataset>.yaml``), the
``--config`` file, the flags, then ``--set`` overrides.
"""

from __future__ import annotations

import argparse
import logging
import sys
from importlib import resources
from pathlib import Path
from typing import Any

from nclt.errors import ConfigError, NcltError

log = logging.getLogger("nclt")

RESERVED_TOP_KEYS = ("environment", "resolved_method_args")  # written by nclt into config.yaml


def preset(dataset: str) -> dict[str, Any]:
    """The packaged protocol defaults of ``dataset`` ({} when there are none)."""
    from nclt.config import load_yaml

    ref = resources.files("nclt.presets").joinpath(f"{dataset}.yaml")
    if not ref.is_file():
        return {}
    with resources.as_file(ref) as path:
        return load_yaml(path)


def _strip_reserved(data: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in data.items() if k not in RESERVED_TOP_KEYS}


def config_from_args(args: argparse.Namespace) -> Any:
    from nclt.config import (
        apply_override, from_dict, load_yaml, merge, parse_override, TrainConfig, validate,
    )

    file_data = _strip_reserved(load_yaml(args.config)) if args.config else {}
    flags: dict[str, Any] = {}
    if args.method:
        flags["method"] = {"name": args.method}
    data_flags = {k: v for k, v in (("dataset", args.dataset), ("imbalance", args.imbalance),
                                    ("root", args.data_root)) if v is not None}
    if data_flags:
        flags["data"] = data_flags
    if args.epochs is not None:
        flags["epochs"] = args.epochs
    if args.out:
        flags["out"] = args.out
    overrides = [parse_override(s) for s in args.set or []]
    dataset = next((v for p, v in overrides if p == ["data", "dataset"]), None)
    dataset = dataset or data_flags.get("dataset") or file_data.get("data", {}).get("dataset")
    data = merge(preset(dataset or "digits"), file_data)
    data = merge(data, flags)
    for path, value in overrides:
        apply_override(data, path, value)
    cfg = from_dict(TrainConfig, data)
    validate(cfg)
    return cfg


def cmd_train(args: argparse.Namespace) -> int:
    from nclt.config import TrainConfig, from_dict, load_yaml, validate
    from nclt.runner import train

    if args.resume:
        given = [f for f in ("config", "method", "dataset", "imbalance", "epochs", "out", "set",
                             "seeds") if getattr(args, f)]
        if given:
            raise ConfigError(
                f"--resume continues a run exactly as configured; drop {', '.join(given)} "
                "(edit RUN_DIR/config.yaml deliberately if you must change it)"
            )
        run_dir = Path(args.resume)
        cfg = from_dict(TrainConfig, _strip_reserved(load_yaml(run_dir / "config.yaml")))
        cfg.out = str(run_dir)
        if args.data_root:
            cfg.data.root = args.data_root
        validate(cfg)
        results = [train(cfg, resume=True)]
    else:
        cfg = config_from_args(args)
        seeds = [int(s) for s in args.seeds.split(",")] if args.seeds else [cfg.seed]
        results = []
        for seed in seeds:
            cfg.seed = seed
            if len(seeds) > 1 and args.out:
                cfg.out = str(Path(args.out) / f"seed{seed}")
            elif len(seeds) > 1:
                cfg.out = ""
            results.append(train(cfg))
    for r in results:
        print(format_results(r))
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from nclt.evaluate import evaluate_checkpoint
    from nclt.runlog import write_json

    res = evaluate_checkpoint(args.checkpoint, data_root=args.data_root)
    print(format_results(res))
    if args.json:
        write_json(Path(args.json), res)
    return 0


def cmd_data(args: argparse.Namespace) -> int:
    from nclt.data import dataset_counts
    from nclt.data.longtail import describe_counts

    counts = dataset_counts(args.dataset, args.imbalance, args.profile, args.reverse)
    print(describe_counts(counts, title=f"{args.dataset} imbalance {args.imbalance:g} "
                          f"({args.profile} profile{', reversed' if args.reverse else ''})"))
    return 0


def cmd_methods(args: argparse.Namespace) -> int:
    from nclt.methods.recipes import describe_methods

    rows = describe_methods()
    width = max(len(r[0]) for r in rows)
    for kind in ("base", "addon"):
        print("Base methods (one per run):" if kind == "base" else
              "\nAdd-ons (append to a base, e.g. ldam-drw+inc+disa):")
        for name, k, paper, summary in rows:
            if k == kind:
                print(f"  {name:<{width}}  {summary}  [{paper}]")
    return 0


def _fmt(v: Any, digits: int = 2) -> str:
    return "-" if v is None else f"{v:.{digits}f}"


def format_results(r: dict[str, Any]) -> str:
    """The table printed after training or evaluation."""
    lines = [f"\n{r.get('method', '?')} on {r.get('dataset', '?')} "
             f"(imbalance {r.get('imbalance', 0):g}, seed {r.get('seed', '?')})"]
    lines.append(f"  {'':<8} {'top-1':>7} {'many':>7} {'medium':>7} {'few':>7}")
    rows = [("last", r)]
    if r.get("best") and r["best"].get("epoch"):
        rows.append((f"best@{r['best']['epoch']}", r["best"]))
    for name, d in rows:
        lines.append(f"  {name:<8} {_fmt(d['top1']):>7} {_fmt(d['many']):>7} "
                     f"{_fmt(d['medium']):>7} {_fmt(d['few']):>7}")
    nc = r.get("nc") or {}
    keys = ["nc1", "equinorm_means", "equiangular_means", "maxangle_means", "equinorm_w",
            "equiangular_w", "self_duality", "nc4"]
    shown = [(k, nc[k]) for k in keys if isinstance(nc.get(k), int | float)]
    if shown:
        lines.append("  neural collapse (training features, last epoch): " + ", ".join(
            f"{k}={v:.4g}" for k, v in shown))
    if r.get("images_per_second"):
        lines.append(f"  {r['seconds']:.1f} s training, {r['images_per_second']:.0f} images/s")
    if r.get("run_dir"):
        lines.append(f"  outputs: {r['run_dir']}/ (results.json, metrics.csv, config.yaml, "
                     "tb/, last.pt, best.pt)")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="nclt", description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="command")

    t = sub.add_parser("train", help="train a model (default: digits-LT, small CNN, CE)")
    t.add_argument("--config", help="YAML config file (see configs/)")
    t.add_argument("--method", help="method name, e.g. ce, ce-drw, ldam-drw+disa (nclt methods)")
    t.add_argument("--dataset", help="digits, cifar10, cifar100, imagenet_lt, places_lt, "
                   "inaturalist")
    t.add_argument("--imbalance", type=float, help="imbalance factor n_max/n_min (e.g. 100)")
    t.add_argument("--epochs", type=int)
    t.add_argument("--out", help="output folder (default runs/<dataset>_<method>_if<IF>_s<seed>)")
    t.add_argument("--data-root", help="folder holding the datasets")
    t.add_argument("--seeds", help="comma-separated seeds, run in turn (e.g. 0,1,2)")
    t.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="override any config key, e.g. --set optim.lr=0.05 (repeatable)")
    t.add_argument("--resume", metavar="RUN_DIR", help="continue the run in RUN_DIR")
    t.set_defaults(func=cmd_train)

    e = sub.add_parser("eval", help="evaluate a checkpoint: accuracy and neural-collapse metrics")
    e.add_argument("checkpoint")
    e.add_argument("--data-root")
    e.add_argument("--json", help="also write the results to this JSON file")
    e.set_defaults(func=cmd_eval)

    d = sub.add_parser("data", help="per-class counts of a long-tailed dataset (no files needed)")
    d.add_argument("dataset")
    d.add_argument("--imbalance", type=float, default=100.0)
    d.add_argument("--profile", choices=["exp", "step"], default="exp")
    d.add_argument("--reverse", action="store_true")
    d.set_defaults(func=cmd_data)

    m = sub.add_parser("methods", help="list the methods and their papers")
    m.set_defaults(func=cmd_methods)
    return p


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args))
    except NcltError as e:
        print(f"nclt: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("nclt: interrupted; the last finished epoch's checkpoint is kept", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
