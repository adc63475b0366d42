"""The reproduction's rows: which runs exist (config files, second stages, branches), the
protocol a run of a row must have trained with, where its results live, and the commands that
produce it."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

from nclt.reproduce.published import PUBLISHED

DATASET = "cifar10"
#: the three files of a run that are committed (never checkpoints or tb/).
RUN_FILES = ("results.json", "metrics.csv", "config.yaml")
#: imbalance factors in the order the tables show them (IF 100 is the issue's first target).
IF_ORDER = (100.0, 50.0, 10.0, 200.0)


def if_rank(imbalance: float) -> tuple[int, float]:
    """Sort key of an imbalance factor: the papers' order (IF_ORDER), then any other factor."""
    return (IF_ORDER.index(imbalance), 0.0) if imbalance in IF_ORDER else (len(IF_ORDER), imbalance)


#: second stages: row -> (first-stage row, stage name of ``nclt train --stage2``).
STAGE2_ROWS = {"inc_drw_crt": ("inc_drw", "crt"), "inc_drw_disa_crt": ("inc_drw_disa", "crt")}
#: Rows that train exactly as a sibling row until their DRW switch: they branch from the
#: sibling's kept checkpoint of that epoch (nclt.branch checks the claim before each branch;
#: tests/test_branch.py checks every pair here against the config files).
BRANCH_ROWS: dict[str, tuple[str, int]] = {
    "ce_drw": ("ce", 160),
    "ce_drw_mixup": ("ce_mixup", 180),
    "ce_drw_disa": ("ce_disa", 180),
    "ce_drw_disa_code": ("ce_disa_code", 160),
    "ce_drw_disa_fig8": ("ce_disa_fig8", 180),
    "ldam_drw_disa": ("ldam_disa", 180),
}
#: DisA Appendix C Fig. 8: the best DisA weight lambda per imbalance factor (the rows *_fig8).
DISA_FIG8_LAMBDA: dict[float, float] = {200.0: 8.0, 100.0: 8.0, 50.0: 0.8, 10.0: 6.0}


def configs_dir() -> Path | None:
    """configs/cifar10_lt of the source checkout (None in an installed wheel)."""
    d = Path(__file__).resolve().parents[3] / "configs" / "cifar10_lt"
    return d if d.is_dir() else None


def known_rows() -> list[str]:
    """Row ids: every config of configs/cifar10_lt, the second stages, the published rows."""
    rows = {p.row for p in PUBLISHED} | set(STAGE2_ROWS)
    d = configs_dir()
    if d is not None:
        rows |= {p.stem for p in d.glob("*.yaml")}
    return sorted(rows)


def expected_run(row: str) -> dict[str, Any]:
    """What a run of ``row`` must be: {"method": name or None, "epochs": int or None}."""
    if row in STAGE2_ROWS:
        return {"method": STAGE2_ROWS[row][1], "epochs": None}
    d = configs_dir()
    if d is None or not (d / f"{row}.yaml").is_file():
        return {"method": None, "epochs": None}
    from nclt.config import load_yaml

    data = load_yaml(d / f"{row}.yaml")
    return {"method": (data.get("method") or {}).get("name"), "epochs": data.get("epochs")}


#: config keys that say where and how a run executed, or which epochs it tested, not what it
#: trained: a row's runs may differ from the row's config file in these (runs committed before
#: ``eval_all_from`` tested every epoch; a run begun on a lent GPU finished on the CPU).
NON_PROTOCOL_KEYS = (
    "seed",
    "out",
    "device",
    "threads",
    "progress",
    "precision",
    "channels_last",
    "deterministic",
    "sync_bn",
    "data.root",
    "data.download",
    "data.num_workers",
    "data.batch_augment",  # the same views' distribution, drawn batch-wise (data/views.py)
    "data.test_batch_size",
    "eval_every",
    "eval_all_from",
    "nc_every",
    "grad_probe",
    "on_nonfinite",
    "keep_checkpoints",
    "branch_from",
    "init_from",
)


def row_protocol(row: str, imbalance: float) -> dict[str, Any] | None:
    """The flattened config (dotted keys) that a run of ``row`` at ``imbalance`` trains with:
    what ``nclt train --config configs/cifar10_lt/<row>.yaml --imbalance F`` builds, plus the
    row's ``row_overrides``; for a second stage (``STAGE2_ROWS``), what ``nclt train --stage2
    STAGE --from RUN`` builds on a run of its first stage's protocol. None for a row without
    a config file."""
    want = _row_protocol(row, imbalance)
    return None if want is None else dict(want)


@functools.cache
def _row_protocol(row: str, imbalance: float) -> dict[str, Any] | None:
    """``row_protocol``, built once per (row, factor): ``measure`` asks for every seed."""
    from nclt.config import to_dict
    from nclt.report.compare import flatten

    cfg = _row_config(row, imbalance)
    return None if cfg is None else flatten(to_dict(cfg))


def _row_config(row: str, imbalance: float) -> Any:
    """The TrainConfig of ``row_protocol``, built by the CLI (the one place that builds
    configs), or None."""
    import tempfile

    import yaml

    from nclt.cli import build_parser, config_from_args
    from nclt.config import to_dict

    if row in STAGE2_ROWS:
        first, stage = STAGE2_ROWS[row]
        first_cfg = _row_config(first, imbalance)
        if first_cfg is None:
            return None
        with tempfile.TemporaryDirectory(prefix="nclt-protocol-") as tmp:
            (Path(tmp) / "config.yaml").write_text(yaml.safe_dump(to_dict(first_cfg)))
            argv = ["train", "--stage2", stage, "--from", tmp]
            return config_from_args(build_parser().parse_args(argv))
    d = configs_dir()
    if d is None or not (d / f"{row}.yaml").is_file():
        return None
    argv = ["train", "--config", str(d / f"{row}.yaml"), "--imbalance", f"{imbalance:g}"]
    for s in row_overrides(row, imbalance):
        argv += ["--set", s]
    return config_from_args(build_parser().parse_args(argv))


def protocol_differences(row: str, imbalance: float, config: dict[str, Any]) -> list[str]:
    """Where a run's flattened config departs from its row's protocol (``row_protocol``):
    ``"key value (config: value)"`` for each key outside ``NON_PROTOCOL_KEYS``, and ``"key
    value (config: not set)"`` for a key the protocol lacks (a method argument given by
    ``--set``). A key the run's config lacks (written by an older nclt, before the key existed)
    is not compared; what nclt itself records (``environment``, ...) is not a setting."""
    from nclt.cli import RESERVED_TOP_KEYS

    want = row_protocol(row, imbalance)
    if want is None:
        return []
    out = []
    for k in sorted(set(want) | set(config)):
        if k in NON_PROTOCOL_KEYS or k.split(".", 1)[0] in RESERVED_TOP_KEYS:
            continue
        if k not in want:
            if config[k] != {}:  # an empty table ("method.args: {}") sets nothing
                out.append(f"{k} {config[k]!r} (config: not set)")
        elif k in config and config[k] != want[k]:
            out.append(f"{k} {config[k]!r} (config: {want[k]!r})")
    return out


def if_folder(imbalance: float) -> str:
    return f"IF{imbalance:g}"


def row_dir(results: str | Path, row: str, imbalance: float) -> Path:
    """results/cifar10_lt/IF<factor>/<row>."""
    return Path(results) / f"{DATASET}_lt" / if_folder(imbalance) / row


def row_runs(folder: Path) -> list[Path]:
    """Run folders of one row: the folder itself and/or its ``seed<k>/`` folders."""
    runs = [folder] if (folder / "results.json").is_file() else []
    runs += sorted(
        (p for p in folder.glob("seed*") if (p / "results.json").is_file()),
        key=lambda p: (len(p.name), p.name),
    )
    return runs


def row_overrides(row: str, imbalance: float) -> list[str]:
    """``--set`` values a row needs at this factor beyond its config file."""
    method = expected_run(row)["method"]
    if method in ("allnc", "allnc++") and imbalance == 200:  # AllNC Table VI: gamma 2.0 at 200
        return [f"method.args.{method}.gamma=2.0"]
    if row.endswith("_fig8") and imbalance in DISA_FIG8_LAMBDA and imbalance != 100:
        return [f"method.args.disa.weight={DISA_FIG8_LAMBDA[imbalance]:g}"]  # the file has 100's
    return []


def train_command(row: str, imbalance: float, seeds: str = "0,1,2") -> str:
    """The shell commands that produce ``row`` at ``imbalance`` and collect it into results/."""
    out = f"runs/cifar10_lt/{if_folder(imbalance)}"
    if row in STAGE2_ROWS:
        first, stage = STAGE2_ROWS[row]
        src = f"{out}/{first}/seed<k>"
        return (
            f"nclt train --stage2 {stage} --from {src}   # for each seed k of {first}\n"
            f"nclt reproduce --collect {src}/stage2_{stage} --row {row} "
            f"--imbalance {imbalance:g}"
        )
    extra = "".join(f" --set {s}" for s in row_overrides(row, imbalance))
    if row in BRANCH_ROWS:
        sibling, epoch = BRANCH_ROWS[row]
        seed_dir = "/seed$k" if "," in seeds else ""  # --seeds with one seed: no seed folder
        return (
            f"for k in {seeds.replace(',', ' ')}; do  # epochs 1-{epoch} are {sibling}'s\n"
            f"  nclt train --config configs/cifar10_lt/{row}.yaml --imbalance {imbalance:g} "
            f"--data-root data --set seed=$k{extra} --out {out}/{row}{seed_dir} \\\n"
            f"    --branch-from {out}/{sibling}{seed_dir}/epoch_{epoch}.pt\n"
            f"done\n"
            f"nclt reproduce --collect {out}/{row} --row {row} --imbalance {imbalance:g}"
        )
    return (
        f"nclt train --config configs/cifar10_lt/{row}.yaml --imbalance {imbalance:g} "
        f"--data-root data --seeds {seeds} --out {out}/{row}{extra}\n"
        f"nclt reproduce --collect {out}/{row} --row {row} --imbalance {imbalance:g}"
    )


def commands(missing: list[tuple[str, float]], seeds: str = "0,1,2") -> str:
    """The commands that produce and collect each missing (row, IF), first stages first."""
    order = sorted(missing, key=lambda k: (k[0] in STAGE2_ROWS or k[0] in BRANCH_ROWS,))
    return (
        "\n\n".join(
            f"# {row} at IF {imbalance:g}\n{train_command(row, imbalance, seeds)}"
            for row, imbalance in order
        )
        + "\n"
    )
