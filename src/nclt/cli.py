"""The ``nclt`` command: the only module that parses arguments or reads config files.

    nclt train [--config FILE] [--method NAME] [--dataset NAME] [--imbalance IF] [--epochs N]
               [--out DIR] [--data-root DIR] [--seeds 0,1,2] [--set key=value ...]
    nclt train --resume RUN_DIR
    nclt train --config FILE --branch-from RUN_DIR/epoch_E.pt   (shares epochs 1..E, checked)
    nclt train ... --sweep KEY=V1,V2 [--sweep KEY2=...]   (a grid, in <out>/KEY=V/...)
    nclt eval CHECKPOINT [--data-root DIR] [--json FILE] [--gaussian-noise 0.1,0.2,...]
    nclt report RUN_DIR|CHECKPOINT [--which last|best] [--out DIR] [--data-root DIR]
    nclt compare RUN_DIR... [--out DIR]
    nclt data DATASET --imbalance IF [--profile exp|step] [--reverse] [--export FILE]
    nclt methods
    nclt report RUN_DIR | CHECKPOINT        nclt compare RUN_DIR...
    nclt reproduce [--table PAPER]          nclt bench [--quick] [--json FILE]

Config precedence, lowest first: the dataset's preset (``nclt/presets/<dataset>.yaml``), the
``--config`` file, the flags, then ``--set`` overrides.
"""

from __future__ import annotations

import argparse
import copy
import logging
import sys
from importlib import resources
from pathlib import Path
from typing import Any

from nclt.errors import ConfigError, NcltError, RunInterrupted, user_message

log = logging.getLogger("nclt")

# written by nclt into config.yaml
RESERVED_TOP_KEYS = ("environment", "earlier_environments", "resolved_method_args")
#: what ``--set`` may change when a run is resumed: where and how it executes, not what it
#: computes (a run begun on a lent GPU can finish on the CPU: ``--set device=cpu``).
RESUME_SETTABLE = ("device", "data.num_workers", "progress")


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


def stage2_base(name: str, run_dir: str, which: str = "last") -> dict[str, Any]:
    """Config of a second stage: the first stage's config, the stage-2 preset, the method."""
    from nclt.config import load_yaml, merge

    first = Path(run_dir)
    if not (first / "config.yaml").is_file():
        raise ConfigError(f"--from {run_dir}: no config.yaml there (is it a finished nclt run?)")
    data = _strip_reserved(load_yaml(first / "config.yaml"))
    # a first stage branched from another run (CE-DRW from CE's epoch 160) keeps that in its
    # config; the second stage starts from the first stage's weights (init_from) instead
    data.pop("branch_from", None)
    stage = preset("stage2")
    data = merge(data, stage.get("default", {}))
    data = merge(data, stage.get(name, {}))
    data["method"] = {"name": name, "args": {}}
    data["init_from"] = str(first / f"{which}.pt")
    data["out"] = str(first / f"stage2_{name}")
    return data


def config_from_args(args: argparse.Namespace) -> Any:
    from nclt.config import (
        TrainConfig,
        apply_override,
        from_dict,
        load_yaml,
        merge,
        parse_override,
        validate,
    )

    file_data = _strip_reserved(load_yaml(args.config)) if args.config else {}
    if getattr(args, "stage2", None):
        if not args.from_run:
            raise ConfigError("--stage2 needs --from RUN_DIR (the finished first stage)")
        if args.config or args.method:
            raise ConfigError(
                "--stage2 takes its config from --from RUN_DIR; drop --config "
                "and --method (use --set to change a value)"
            )
        file_data = stage2_base(args.stage2, args.from_run)
    flags: dict[str, Any] = {}
    if args.method:
        flags["method"] = {"name": args.method}
    data_flags = {
        k: v
        for k, v in (
            ("dataset", args.dataset),
            ("imbalance", args.imbalance),
            ("root", args.data_root),
        )
        if v is not None
    }
    if data_flags:
        flags["data"] = data_flags
    if args.epochs is not None:
        flags["epochs"] = args.epochs
    if args.out:
        flags["out"] = args.out
    if getattr(args, "branch_from", None):
        if getattr(args, "stage2", None) or getattr(args, "sweep", None):
            raise ConfigError("--branch-from continues one run: drop --stage2 / --sweep")
        flags["branch_from"] = args.branch_from
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


def split_values(raw: str) -> list[str]:
    """``"0.1,[1,2],x"`` -> ``["0.1", "[1,2]", "x"]``: commas inside brackets or quotes stay."""
    out, depth, quote, cur = [], 0, "", ""
    for ch in raw:
        if quote:
            quote = "" if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch in "[{":
            depth += 1
        elif ch in "]}":
            depth -= 1
        elif ch == "," and depth == 0:
            out.append(cur.strip())
            cur = ""
            continue
        cur += ch
    out.append(cur.strip())
    return out


def sweep_grid(specs: list[str]) -> list[list[tuple[str, str]]]:
    """``["a=1,2", "b=x,y"]`` -> the product [[("a","1"),("b","x")], ...], first key outermost."""
    import itertools

    axes = []
    for spec in specs:
        if "=" not in spec:
            raise ConfigError(f"--sweep {spec!r}: expected key=v1,v2,... (e.g. optim.lr=0.1,0.05)")
        key, raw = (x.strip() for x in spec.split("=", 1))
        if key in ("seed", "out"):
            raise ConfigError(f"--sweep {key}: use --seeds / --out instead")
        values = split_values(raw)
        if not key or not all(values) or len(set(values)) != len(values):
            raise ConfigError(f"--sweep {spec!r}: needs a key and distinct, non-empty values")
        if key in (k for k, _ in (a[0] for a in axes)):
            raise ConfigError(f"--sweep {key} is given twice; list all its values once")
        axes.append([(key, v) for v in values])
    return [list(point) for point in itertools.product(*axes)]


def sweep_folder(key: str, value: str) -> str:
    """Folder name of one sweep value: ``key=value`` with unsafe characters replaced by _."""
    import re

    name = re.sub(r"[^A-Za-z0-9._=+-]", "_", f"{key}={value}")
    return name if name not in (".", "..") else f"_{name}"


def sweep_configs(args: argparse.Namespace) -> list[Any]:
    """The configs of ``--sweep`` (x ``--seeds``): each grid point is applied as extra
    ``--set KEY=V`` overrides (after the user's), in ``<out>/KEY=V/.../[seed<s>]``.

    Every config is built and validated, and no target folder may hold a run, before the
    first training starts.
    """
    import argparse as ap

    grid = sweep_grid(args.sweep)
    first = config_from_args(args)
    base = (
        Path(args.out)
        if args.out
        else Path("runs")
        / (f"sweep_{first.data.dataset}_{first.method.name}_if{first.data.imbalance:g}")
    )
    seeds = [int(s) for s in args.seeds.split(",")] if args.seeds else [first.seed]
    cfgs = []
    for point in grid:
        sub = ap.Namespace(
            **{**vars(args), "set": [*(args.set or []), *(f"{k}={v}" for k, v in point)]}
        )
        folder = base.joinpath(*(sweep_folder(k, v) for k, v in point))
        for seed in seeds:
            cfg = config_from_args(sub)
            cfg.seed = seed
            cfg.out = str(folder / f"seed{seed}") if len(seeds) > 1 else str(folder)
            cfgs.append(cfg)
    outs = [c.out for c in cfgs]
    if len(set(outs)) != len(outs):
        raise ConfigError("--sweep: two grid points map to the same folder; use distinct values")
    taken = [o for o in outs if (Path(o) / "last.pt").exists()]
    if taken:
        raise ConfigError(f"--sweep: {taken[0]} already holds a run; choose another --out")
    log.info("sweep: %d runs in %s", len(cfgs), base)
    return cfgs


def cmd_train(args: argparse.Namespace) -> int:
    from nclt import dist

    if dist.env_rank() > 0:  # under torchrun rank 0 logs and prints; the others warn only
        logging.getLogger("nclt").setLevel(logging.WARNING)
    with dist.process_group():  # torchrun (WORLD_SIZE > 1): one group for every run below
        results = _train_runs(args)
    if dist.env_rank() == 0:
        for r in results:
            print(format_results(r))
    return 0


def resume_config(
    run_dir: str | Path, data_root: str | None = None, sets: list[str] | tuple[str, ...] = ()
) -> Any:
    """The config a run in ``run_dir`` was trained with (its config.yaml), to continue it;
    ``data_root`` replaces the data folder (the data may have moved) and ``sets`` may change
    the keys of :data:`RESUME_SETTABLE` (where the run executes). Any other ``--set`` must
    agree with the run's own value (compared after type coercion, so ``optim.lr=1e-3``
    agrees with 0.001): nothing else may change."""
    from nclt.config import (
        TrainConfig,
        apply_override,
        from_dict,
        load_yaml,
        parse_override,
        to_dict,
        validate,
    )

    data = _strip_reserved(load_yaml(Path(run_dir) / "config.yaml"))
    for item in sets:
        path, value = parse_override(item)
        key = ".".join(path)
        if key not in RESUME_SETTABLE:  # it must agree: the coerced config stays the same
            probe = copy.deepcopy(data)
            apply_override(probe, path, value)
            own = to_dict(from_dict(TrainConfig, data))
            if to_dict(from_dict(TrainConfig, probe)) != own:
                have: Any = own
                for k in path:
                    have = have.get(k) if isinstance(have, dict) else None
                raise ConfigError(
                    f"--set {item} differs from the stopped run's {key} ({have!r}): a resumed "
                    f"run continues as configured; only {', '.join(RESUME_SETTABLE)} may change "
                    f"(edit {run_dir}/config.yaml deliberately if you must change more, or "
                    "move the run folder away to train it afresh)"
                )
        apply_override(data, path, value)
    cfg = from_dict(TrainConfig, data)
    cfg.out = str(run_dir)
    if data_root:
        cfg.data.root = data_root
    validate(cfg)
    return cfg


def _train_runs(args: argparse.Namespace) -> list[dict[str, Any]]:
    from nclt.runner import train

    if args.resume:
        given = [
            f
            for f in (
                "config",
                "method",
                "dataset",
                "imbalance",
                "epochs",
                "out",
                "seeds",
                "stage2",
                "from_run",
                "sweep",
                "branch_from",
            )
            if getattr(args, f, None)
        ]
        if given:
            raise ConfigError(
                f"--resume continues a run exactly as configured; drop {', '.join(given)} "
                "(edit RUN_DIR/config.yaml deliberately if you must change it)"
            )
        cfg = resume_config(args.resume, args.data_root, args.set or [])
        results = [train(cfg, resume=True)]
    elif getattr(args, "sweep", None):
        results = [train(c) for c in sweep_configs(args)]
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
    return results


def cmd_eval(args: argparse.Namespace) -> int:
    from nclt.evaluate import evaluate_checkpoint
    from nclt.runlog import write_json

    if getattr(args, "gaussian_noise", None):
        from nclt.evaluate import evaluate_noise, format_noise

        try:
            sigmas = [float(v) for v in args.gaussian_noise.split(",")]
        except ValueError:
            raise ConfigError(
                f"--gaussian-noise {args.gaussian_noise!r}: expected numbers, e.g. 0.1,0.2,0.3,0.4"
            ) from None
        res = evaluate_noise(
            args.checkpoint,
            sigmas,
            data_root=args.data_root,
            seed=args.noise_seed,
            device=args.device,
        )
        print(format_noise(res))
        if args.json:
            write_json(Path(args.json), res)
        return 0
    res = evaluate_checkpoint(args.checkpoint, data_root=args.data_root, device=args.device)
    print(format_results(res))
    if args.json:
        write_json(Path(args.json), res)
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from nclt.report import build_report

    page = build_report(
        args.path,
        out=args.out,
        which=args.which,
        data_root=args.data_root,
        device=args.device,
        max_points=args.max_points,
        seed=args.seed,
        ot_epsilon=args.ot_epsilon,
        nc_options={
            "global_mean": args.global_mean,
            "within": args.within,
            "center_w": not args.raw_w,
        },
    )
    print(f"report: {page}")
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from nclt.report.compare import compare

    table, _ = compare(args.runs, out=args.out)
    print(table)
    print(f"\nwrote {Path(args.out) / 'compare.csv'} and {Path(args.out) / 'compare.png'}")
    return 0


def cmd_reproduce(args: argparse.Namespace) -> int:
    from nclt import reproduce

    if args.run:
        return _reproduce_run(args)
    if args.collect:
        if not args.row or args.imbalance is None:
            raise ConfigError("--collect RUN_DIR needs --row ROW and --imbalance IF")
        for folder in reproduce.collect(
            args.collect, args.row, args.imbalance, args.results, force=args.force
        ):
            print(f"collected {folder}/ ({', '.join(reproduce.RUN_FILES)})")
        return 0
    stray = [
        f"--{f}" for f in ("row", "imbalance", "force") if getattr(args, f) not in (None, False)
    ]
    if stray:
        raise ConfigError(f"{', '.join(stray)}: only with --collect RUN_DIR")
    stray = [
        f"--{f.replace('_', '-')}"
        for f in ("data_root", "set", "dry_run")
        if getattr(args, f) not in (None, False)
    ]
    stray += [f"--{f}" for f, d in (("seeds", "0"), ("runs", "runs")) if getattr(args, f) != d]
    if stray:
        raise ConfigError(f"{', '.join(stray)}: only with --run ROWS")
    if args.markdown and args.table:
        raise ConfigError("--markdown writes every paper's table into the doc; drop --table")
    report = reproduce.build_report(args.results, paper=args.table, basis=args.basis)
    text = report.render()
    print(text, end="")
    if args.commands and report.missing:
        print("\n## Commands for the missing rows\n")
        print(reproduce.commands(report.missing), end="")
    if args.markdown:
        reproduce.check_doc(args.doc)  # before writing any figure next to it
        if args.readme is None:  # the README one folder above the doc's, if it has the markers
            found = Path(args.doc).resolve().parent.parent / "README.md"
            text_of = found.read_text() if found.is_file() else ""
            args.readme = str(found) if reproduce.SUMMARY_START in text_of else ""
        if args.readme:
            reproduce.check_doc(
                args.readme, reproduce.SUMMARY_START, reproduce.SUMMARY_END, "--readme"
            )
        fig_dir = Path(args.doc).parent / "figures"
        figures = reproduce.per_class_figures(report, fig_dir)
        against = reproduce.paper_figures(report, fig_dir)
        nc_acc = reproduce.nc_accuracy_figures(report, fig_dir)
        changed = reproduce.write_markdown(
            args.doc, text + reproduce.figures_block(figures, args.doc, against, nc_acc)
        )
        print(f"\n{'wrote' if changed else 'unchanged:'} {args.doc}")
        if args.readme:
            changed = reproduce.write_markdown(
                args.readme,
                report.summary(heading="")
                + f"\n\nPer-paper tables, protocols and a note on every gap: {args.doc}.",
                reproduce.SUMMARY_START,
                reproduce.SUMMARY_END,
            )
            print(f"{'wrote' if changed else 'unchanged:'} {args.readme}")
    return 0


def _reproduce_run(args: argparse.Namespace) -> int:
    """``nclt reproduce --run ROWS``: nclt.campaign's queue."""
    from nclt import campaign, dist, reproduce

    if args.imbalance is None:
        raise ConfigError("--run needs --imbalance IF (the factor to train)")
    stray = [f"--{f}" for f in ("collect", "row", "markdown", "commands") if getattr(args, f)]
    if stray or args.force:
        raise ConfigError(
            f"--run trains and collects by itself; drop {', '.join(stray or ['--force'])}"
        )
    if args.run.strip() == "missing":
        report = reproduce.build_report(args.results, paper=args.table, basis=args.basis)
        rows = [r for r, f in report.missing if f == args.imbalance]
        if not rows:
            print(
                f"nothing missing at IF {args.imbalance:g}"
                + (f" in {args.table}" if args.table else "")
            )
            return 0
    else:
        if args.table:
            raise ConfigError("--table with --run only selects the rows of 'missing'")
        rows = [r.strip() for r in args.run.split(",") if r.strip()]
    campaign.check_sets(args.set or [])
    seeds = [int(s) for s in args.seeds.split(",")]
    jobs = campaign.plan(rows, args.imbalance, seeds, args.runs, args.results)
    if dist.env_rank() == 0:
        print(campaign.describe(jobs, args.runs, args.results), end="")
    if args.dry_run:
        return 0
    if dist.env_rank() > 0:  # under torchrun rank 0 logs and prints; the others warn only
        logging.getLogger("nclt").setLevel(logging.WARNING)
    with dist.process_group():
        outcomes = campaign.run_queue(jobs, args.runs, args.results, args.data_root, args.set or [])
    if dist.env_rank() == 0:
        print("\n" + campaign.summary(outcomes), end="")
    return 1 if any(o.status.startswith("failed") for o in outcomes) else 0


def cmd_data(args: argparse.Namespace) -> int:
    from nclt.data import DATASETS, dataset_counts
    from nclt.data.listfile import check_split
    from nclt.data.longtail import describe_counts

    if args.check_split:
        report = check_split(args.data_root or ".", args.check_split)
        print(report)
        return 0 if report.ok else 1
    counts = dataset_counts(
        args.dataset,
        args.imbalance,
        args.profile,
        args.reverse,
        split_file=args.split_file,
        root=args.data_root or ".",
    )
    print(
        describe_counts(
            counts,
            title=f"{args.dataset} imbalance {args.imbalance:g} "
            f"({args.profile} profile{', reversed' if args.reverse else ''})",
        )
    )
    if args.export:
        if args.dataset not in ("cifar10", "cifar100"):
            raise ConfigError("--export writes the LDAM-DRW subset of cifar10 / cifar100")
        ds = DATASETS.build(
            args.dataset,
            root=args.data_root or "data",
            train=True,
            imbalance=args.imbalance,
            profile=args.profile,
            reverse=args.reverse,
            subset_seed=args.subset_seed,
            views=None,
            download=False,
        )
        record = ds.export_indices(args.export)
        print(
            f"wrote {len(record['indices'])} kept indices to {args.export} "
            f"(sha256 {record['checksum']})"
        )
    return 0


def cmd_methods(args: argparse.Namespace) -> int:
    from nclt.methods.recipes import describe_methods

    rows = describe_methods()
    width = max(len(r[0]) for r in rows)
    for kind in ("base", "addon"):
        print(
            "Base methods (one per run):"
            if kind == "base"
            else "\nAdd-ons (append to a base, e.g. ldam-drw+inc+disa):"
        )
        for name, k, paper, summary in rows:
            if k == kind:
                print(f"  {name:<{width}}  {summary}  [{paper}]")
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    from nclt.bench import format_bench, run_bench
    from nclt.runlog import write_json

    methods = args.methods.split(",") if args.methods else None
    configs = Path(__file__).resolve().parents[2] / "configs"
    res = run_bench(
        args.data_root,
        quick=args.quick,
        methods=methods,
        device=args.device,
        threads=args.threads,
        precision=args.precision,
        repo_configs=configs if configs.is_dir() else None,
    )
    print(format_bench(res))
    if args.json:
        write_json(Path(args.json), res)
    return 0


def _fmt(v: Any, digits: int = 2) -> str:
    return "-" if v is None else f"{v:.{digits}f}"


def format_results(r: dict[str, Any]) -> str:
    """The table printed after training or evaluation."""
    lines = [
        f"\n{r.get('method', '?')} on {r.get('dataset', '?')} "
        f"(imbalance {r.get('imbalance', 0):g}, seed {r.get('seed', '?')})"
    ]
    lines.append(f"  {'':<8} {'top-1':>7} {'many':>7} {'medium':>7} {'few':>7}")
    rows = [("last", r)]
    if r.get("best") and r["best"].get("epoch"):
        rows.append((f"best@{r['best']['epoch']}", r["best"]))
    for name, d in rows:
        lines.append(
            f"  {name:<8} {_fmt(d['top1']):>7} {_fmt(d['many']):>7} "
            f"{_fmt(d['medium']):>7} {_fmt(d['few']):>7}"
        )
    nc = r.get("nc") or {}
    keys = [
        "nc1",
        "equinorm_means",
        "equiangular_means",
        "maxangle_means",
        "equinorm_w",
        "equiangular_w",
        "self_duality",
        "nc4",
    ]
    shown = [(k, nc[k]) for k in keys if isinstance(nc.get(k), int | float)]
    if shown:
        lines.append(
            "  neural collapse (training features, last epoch): "
            + ", ".join(f"{k}={v:.4g}" for k, v in shown)
        )
    if r.get("images_per_second"):
        lines.append(f"  {r['seconds']:.1f} s training, {r['images_per_second']:.0f} images/s")
    if r.get("run_dir"):
        lines.append(
            f"  outputs: {r['run_dir']}/ (results.json, metrics.csv, config.yaml, "
            "tb/, last.pt, best.pt)"
        )
    return "\n".join(lines)


def _seeds_arg(text: str) -> str:
    """``--seeds``: checked here (integers in 0..2**32-1), kept as the text."""
    try:
        ok = all(0 <= int(s) < 2**32 for s in text.split(","))
    except ValueError:
        ok = False
    if not ok:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a comma-separated list of seeds in 0..2**32-1 (e.g. 0,1,2)"
        )
    return text


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="nclt", description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="command")

    t = sub.add_parser("train", help="train a model (default: digits-LT, small CNN, CE)")
    t.add_argument("--config", help="YAML config file (see configs/)")
    t.add_argument("--method", help="method name, e.g. ce, ce-drw, ldam-drw+disa (nclt methods)")
    t.add_argument(
        "--dataset", help="digits, cifar10, cifar100, imagenet_lt, places_lt, inaturalist"
    )
    t.add_argument("--imbalance", type=float, help="imbalance factor n_max/n_min (e.g. 100)")
    t.add_argument("--epochs", type=int)
    t.add_argument("--out", help="output folder (default runs/<dataset>_<method>_if<IF>_s<seed>)")
    t.add_argument("--data-root", help="folder holding the datasets")
    t.add_argument(
        "--seeds", type=_seeds_arg, help="comma-separated seeds, run in turn (e.g. 0,1,2)"
    )
    t.add_argument(
        "--set",
        action="append",
        metavar="KEY=VALUE",
        help="override any config key, e.g. --set optim.lr=0.05 (repeatable)",
    )
    t.add_argument(
        "--sweep",
        action="append",
        metavar="KEY=V1,V2",
        help="run a grid: every combination of the values (repeatable; applied like "
        "--set; runs in <out>/KEY=V/..., with --seeds in .../seed<s>)",
    )
    t.add_argument("--resume", metavar="RUN_DIR", help="continue the run in RUN_DIR")
    t.add_argument(
        "--stage2",
        metavar="NAME",
        help="second stage on a finished run: crt, lws, "
        "tau-norm (needs --from; output in RUN_DIR/stage2_NAME)",
    )
    t.add_argument(
        "--from",
        dest="from_run",
        metavar="RUN_DIR",
        help="the finished first-stage run for --stage2",
    )
    t.add_argument(
        "--branch-from",
        metavar="CHECKPOINT",
        help="start from another run's epoch_E.pt (kept with keep_checkpoints: [E]) and train "
        "epochs E+1.. under this config; refused unless both runs train the same way up to E "
        "(e.g. ce -> ce-drw with DRW from E)",
    )
    t.set_defaults(func=cmd_train)

    e = sub.add_parser("eval", help="evaluate a checkpoint: accuracy and neural-collapse metrics")
    e.add_argument("checkpoint")
    e.add_argument("--data-root")
    e.add_argument("--json", help="also write the results to this JSON file")
    e.add_argument(
        "--device", help="cpu, cuda, ... (default: the checkpoint's; a GPU run evaluates on cpu)"
    )
    e.add_argument(
        "--gaussian-noise",
        metavar="S1,S2,...",
        help="test accuracy under additive Gaussian noise of these std devs instead "
        "(INC Table 6): sigma * N(0,1) added to the pixels in [0, 1], before the "
        "normalization, not clamped",
    )
    e.add_argument("--noise-seed", type=int, default=0, help="seed of the noise (default 0)")
    e.set_defaults(func=cmd_eval)

    r = sub.add_parser("report", help="figures and report.html for a run folder or checkpoint")
    r.add_argument("path", help="run folder (uses its last.pt / best.pt) or checkpoint file")
    r.add_argument(
        "--which",
        choices=["last", "best"],
        default="last",
        help="checkpoint of a run folder (default last)",
    )
    r.add_argument("--out", help="output folder (default <folder of the checkpoint>/report)")
    r.add_argument("--data-root", help="folder holding the datasets")
    r.add_argument("--device", help="cpu, cuda, ... (default: the checkpoint's)")
    r.add_argument(
        "--max-points",
        type=int,
        default=2000,
        help="training features kept for t-SNE and transport plans (default 2000)",
    )
    r.add_argument("--seed", type=int, default=0, help="seed of that subsample and of t-SNE")
    r.add_argument(
        "--ot-epsilon",
        type=float,
        help="entropic regularization of the transport plans (default: the run's "
        "DisA epsilon, else 0.1)",
    )
    r.add_argument(
        "--global-mean",
        choices=["class", "sample"],
        default="class",
        help="mu_G: mean of class means (INC, DisA; default) or of samples (AllNC)",
    )
    r.add_argument(
        "--within",
        choices=["sample", "class"],
        default="sample",
        help="Sigma_W averaged over samples (default, AllNC) or per class (DisA)",
    )
    r.add_argument(
        "--raw-w",
        action="store_true",
        help="classifier metrics on the raw vectors (ARB) instead of centered (AllNC)",
    )
    r.set_defaults(func=cmd_report)

    c = sub.add_parser("compare", help="one table across runs, mean +- std over seeds")
    c.add_argument("runs", nargs="+", help="run folders, or folders holding runs (a sweep)")
    c.add_argument("--out", default=".", help="where compare.csv and compare.png go (default .)")
    c.set_defaults(func=cmd_compare)

    d = sub.add_parser("data", help="per-class counts of a long-tailed dataset (no files needed)")
    d.add_argument("dataset")
    d.add_argument("--imbalance", type=float, default=100.0)
    d.add_argument("--profile", choices=["exp", "step"], default="exp")
    d.add_argument("--reverse", action="store_true")
    d.add_argument(
        "--export",
        metavar="FILE",
        help="write the kept training indices and "
        "their sha256 to FILE (JSON; needs the images under --data-root)",
    )
    d.add_argument("--subset-seed", type=int, default=0, help="seed of the subset (default 0)")
    d.add_argument(
        "--data-root", help="folder holding the dataset (for --export, --check-split, --split-file)"
    )
    d.add_argument("--split-file", help="list-file datasets: counts from this split file")
    d.add_argument(
        "--check-split",
        metavar="FILE",
        help="check a split file against the "
        "images under --data-root (line and class counts, missing files, layout)",
    )
    d.set_defaults(func=cmd_data)

    b = sub.add_parser("bench", help="throughput against the compute ceiling, loss overheads")
    b.add_argument("--data-root", help="folder with cifar-10-batches-py (else synthetic images)")
    b.add_argument("--quick", action="store_true", help="a few steps each (under a minute)")
    b.add_argument(
        "--methods",
        help="comma-separated methods to time end to end (default ce,bcl,allnc,allnc:batch; "
        "NAME:batch trains with data.batch_augment=true)",
    )
    b.add_argument("--device", default="auto")
    b.add_argument("--threads", type=int, default=0)
    b.add_argument("--precision", default="bf16", choices=["bf16", "fp32", "fp16"])
    b.add_argument("--json", help="write the figures to this JSON file")
    b.set_defaults(func=cmd_bench)

    rp = sub.add_parser(
        "reproduce",
        help="the papers' CIFAR-10-LT numbers next to ours "
        "(from results/), or --collect a finished run into results/",
    )
    rp.add_argument(
        "--table",
        metavar="PAPER",
        help="one paper's table: AllNC, INC, DisA, ARB, BCL, LDAM-DRW (default: all)",
    )
    rp.add_argument(
        "--results",
        default="results",
        help="folder holding cifar10_lt/IF<factor>/<row>/ (default results)",
    )
    rp.add_argument(
        "--basis",
        choices=["best", "last"],
        default="best",
        help="epoch of ours compared with the paper where the paper does not say (default best)",
    )
    rp.add_argument(
        "--markdown",
        action="store_true",
        help="also write the tables into --doc between its markers",
    )
    rp.add_argument(
        "--doc",
        default="docs/REPRODUCTION.md",
        help="the doc --markdown writes (default docs/REPRODUCTION.md)",
    )
    rp.add_argument(
        "--readme",
        default=None,
        help="with --markdown, also write the one-table summary into this file between its "
        "reproduction-summary markers (default: the README.md above --doc's folder when it "
        "has them; '' to skip)",
    )
    rp.add_argument(
        "--commands",
        action="store_true",
        help="also print the train and collect commands of the missing rows",
    )
    rp.add_argument(
        "--collect",
        metavar="RUN_DIR",
        help="copy results.json, metrics.csv and "
        "config.yaml of this finished run (or of its seed*/ runs) into results/",
    )
    rp.add_argument(
        "--row",
        help="with --collect: the row id (configs/cifar10_lt/<row>.yaml, "
        "or inc_drw_crt / inc_drw_disa_crt for a cRT second stage)",
    )
    rp.add_argument(
        "--imbalance",
        type=float,
        help="with --collect: the run's imbalance factor; with --run: the factor to train",
    )
    rp.add_argument(
        "--force", action="store_true", help="with --collect: replace a seed already collected"
    )
    rp.add_argument(
        "--run",
        metavar="ROWS",
        help="train these rows (comma-separated, or 'missing': every row --table lacks at "
        "--imbalance) one after another into --runs and collect each into --results; the same "
        "command again skips what is done and resumes what was stopped",
    )
    rp.add_argument(
        "--seeds", type=_seeds_arg, default="0", help="with --run: the seeds (default 0)"
    )
    rp.add_argument(
        "--runs", default="runs", help="with --run: where the runs are trained (default runs)"
    )
    rp.add_argument("--data-root", help="with --run: folder holding cifar-10-batches-py")
    rp.add_argument(
        "--set",
        action="append",
        metavar="KEY=VALUE",
        help=(
            "with --run: override a config key of every row (e.g. device=cuda; repeatable); "
            "a key that changes what is trained makes the rows variants, flagged in the tables"
        ),
    )
    rp.add_argument(
        "--dry-run",
        action="store_true",
        help="with --run: print what each row would do, do nothing",
    )
    rp.set_defaults(func=cmd_reproduce)

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
    except RunInterrupted as e:
        print(f"nclt: {e}", file=sys.stderr)
        return e.exit_code
    except NcltError as e:
        print(f"nclt: error: {user_message(e)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("nclt: interrupted; the last finished epoch's checkpoint is kept", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
