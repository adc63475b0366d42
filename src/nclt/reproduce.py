"""``nclt reproduce``: the papers' CIFAR-10-LT numbers next to ours, regenerated from results/.

The published numbers live in this module (``PUBLISHED``, one entry per paper, row and
imbalance factor, with the table it comes from). Our numbers are the runs under
``results/cifar10_lt/IF<factor>/<row>/`` (results.json, metrics.csv, config.yaml of one run;
``seed<k>/`` folders inside when there are several seeds), where ``row`` is the name of the
config file in ``configs/cifar10_lt/`` (``ce``, ``ldam_drw``, ...) or a second stage
(``inc_drw_crt``: ``nclt train --stage2 crt`` on an ``inc_drw`` run).

    nclt reproduce [--table PAPER] [--results DIR] [--basis best|last] [--commands]
    nclt reproduce --markdown [--doc docs/REPRODUCTION.md]
    nclt reproduce --collect RUN_DIR --row ROW --imbalance IF [--force]

Comparison basis: no paper says whether it reports the best or the last epoch (ERRATA); the
LDAM-DRW code reports the best, INC and DisA the mean of 3 seeds. Ours is the mean over our
seeds of the best-epoch top-1 (``--basis last`` for the last epoch), except where the paper's
basis is known, which wins. The CIFAR copy of this project is JPEG re-encoded (quality 75),
which lowers every accuracy: the offset is estimated from ``ce`` (CE without MixUp) against
70.4 (ERRATA: not against DisA's 72.8, which uses MixUp), and a row is flagged "needs
investigation" when it falls short of the paper by more than the offset plus one point.
"""

from __future__ import annotations

import functools
import json
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nclt.errors import NcltError, closest
from nclt.report.compare import RunRecord, group_runs, load_run, mean_std, varying_keys

DATASET = "cifar10"
#: the three files of a run that are committed (never checkpoints or tb/).
RUN_FILES = ("results.json", "metrics.csv", "config.yaml")
#: imbalance factors in the order the tables show them (IF 100 is the issue's first target).
IF_ORDER = (100.0, 50.0, 10.0, 200.0)


def if_rank(imbalance: float) -> tuple[int, float]:
    """Sort key of an imbalance factor: the papers' order (IF_ORDER), then any other factor."""
    return (IF_ORDER.index(imbalance), 0.0) if imbalance in IF_ORDER else (len(IF_ORDER), imbalance)


MARK_START = "<!-- tables:start -->"
MARK_END = "<!-- tables:end -->"
#: the README's generated summary (``nclt reproduce --markdown --readme README.md``)
SUMMARY_START = "<!-- reproduction-summary:start -->"
SUMMARY_END = "<!-- reproduction-summary:end -->"
#: points of slack above the JPEG offset before a gap "needs investigation".
TOLERANCE = 1.0
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
#: CE without MixUp, the reference of the JPEG offset (ERRATA "Reproduction").
CE_ROW = "ce"
CE_REFERENCE: dict[float, tuple[float, str]] = {
    100.0: (70.4, "ARB Table 1, INC Table 3"),
    50.0: (74.8, "ARB Table 1"),
    10.0: (86.4, "ARB Table 1, INC Table 3"),
    200.0: (65.68, "AllNC Table II"),
}


@dataclass(frozen=True)
class Paper:
    """A paper whose CIFAR-10-LT table we reproduce."""

    key: str
    title: str
    source: str  # file in ../shared/papers, or where the numbers come from
    protocol: str  # one line: what its own rows were trained with
    reported: str  # one line: best / last / mean over seeds, as the paper says


@dataclass(frozen=True)
class Published:
    """One published CIFAR-10-LT top-1 (ResNet-32): a paper's row at one imbalance factor.

    ``text`` is the number as printed (``*``: re-run by that paper; DisA's notation).
    ``reported`` is how the number was obtained where known: ``"best"`` (best epoch),
    ``"mean3"`` (mean of 3 seeds, epoch not said) or ``"?"`` (not said).
    """

    paper: str
    table: str
    row: str
    label: str  # the row's name in the paper
    imbalance: float
    text: str
    mixup: bool
    reported: str
    many: float | None = None
    medium: float | None = None
    few: float | None = None
    note: str = ""

    @property
    def top1(self) -> float:
        return float(self.text.rstrip("*"))

    @property
    def epoch_basis(self) -> str | None:
        """ "best" / "last" when the paper's basis is known, else None (use the default)."""
        return "best" if self.reported == "best" else None


PAPERS: dict[str, Paper] = {
    p.key: p
    for p in (
        Paper(
            "AllNC",
            "All-around neural collapse (Zhang et al.)",
            "papers/allnc-all-around-neural-collapse.md",
            "ResNet-32, 200 epochs, batch 64, lr 0.01, wd 5e-3, RandAugment, no MixUp (V-B)",
            "not said (one number per cell)",
        ),
        Paper(
            "INC",
            "Inducing neural collapse (Liu et al., ICLR 2023)",
            "papers/inc-inducing-neural-collapse.md",
            "ResNet-32, 200 epochs, batch 128, wd 5e-3 (4.1.1; our inc_drw runs 5e-4, the "
            "official script's, as 5e-3 does not train here: note below), MixUp in every own "
            "run (alpha 0.2, the official code's default)",
            "mean of three seeds for its own rows (4.1.1); the others copied from their papers",
        ),
        Paper(
            "DisA",
            "Distribution alignment by optimal transport (Gao et al.)",
            "papers/disa-distribution-alignment-ot.md",
            "ResNet-32, 200 epochs, batch 128, wd 2e-4, MixUp in every baseline (5.1)",
            "mean of three seeds (5.1); * = baseline re-run by DisA with MixUp, CE from Yang et "
            "al. (2022), the others copied from their papers",
        ),
        Paper(
            "ARB",
            "Attraction-repulsion-balanced loss (Xie et al.)",
            "papers/arb-attraction-repulsion-balanced-loss.md",
            "ResNet-32, 200 epochs, batch 128, MixUp alpha 1, x0.1 at 160 and 180 (App. C)",
            "not said; previous methods copied from their papers (5.2)",
        ),
        Paper(
            "BCL",
            "Balanced contrastive learning (Zhu et al., CVPR 2022)",
            "papers/bcl-balanced-contrastive-learning.md",
            "ResNet-32, 200 epochs, batch 256, wd 5e-4, AutoAugment + Cutout, no MixUp (4.2)",
            "not said (BCL's ImageNet code keeps the best epoch)",
        ),
        Paper(
            "LDAM-DRW",
            "LDAM-DRW baseline (Cao et al., NeurIPS 2019)",
            "not in ../shared/papers: top-1 errors 22.97 at IF 100 and 11.84 at IF 10, which "
            "BCL Table 3 and INC Table 3 cite as 77.03 / 88.16 and 77.0 / 88.2",
            "ResNet-32, 200 epochs, batch 128, wd 2e-4, crop + flip, no MixUp, DRW at 160",
            "best epoch (the LDAM-DRW code reports the best; ERRATA)",
        ),
    )
}

# paper | table | row | label in the paper | MixUp | IF200 | IF100 | IF50 | IF10 | reported
# ("-": no number at that factor; "*": re-run by that paper). Checked against ../shared/papers
# and ERRATA "Reproduction"; no paper gives many / medium / few on CIFAR-10-LT.
_TABLE = """
LDAM-DRW | Cao et al., CIFAR table | ldam_drw | LDAM-DRW | no | - | 77.03 | - | 88.16 | best
AllNC | Table II | ce | CE Loss | no | 65.68 | 70.70 | 74.81 | 86.40 | ?
AllNC | Table II | ldam_drw | LDAM-DRW [19] | no | - | 77.03 | - | - | best
AllNC | Table II | ldam_drw | LDAM-DRW [19] | no | 73.52 | - | 81.03 | - | ?
AllNC | Table II | etf_dr | NC Classifier [12] | yes | 71.90 | 76.50 | 81.00 | - | ?
AllNC | Table II | bcl | BCL [24] | no | - | 84.32 | 87.24 | 91.12 | ?
AllNC | Table II | inc_drw_crt | NC+DRW+cRT [10] | yes | - | 82.60 | - | 90.20 | mean3
AllNC | Table II | allnc | AIINC (AllNC) | no | 85.46 | 88.77 | 92.12 | 95.22 | ?
AllNC | Table II | allnc_pp | AIINC++ (AllNC++) | no | 86.08 | 90.12 | 92.43 | 95.56 | ?
INC | Table 3 | ce | CE | no | - | 70.4 | - | 86.4 | ?
INC | Table 3 | ce_drw | CE-DRW | no | - | 75.1 | - | 86.4 | ?
INC | Table 3 | ldam_drw | LDAM-DRW | no | - | 77.0 | - | 88.2 | best
INC | Table 3 | etf_dr | ETF classifier+ DR | yes | - | 76.5 | - | 87.7 | ?
INC | Table 3 | arb | ARB-Loss | yes | - | 83.3 | - | 90.2 | ?
INC | Table 3 | inc_drw | NC-DRW | yes | - | 81.9 | - | 89.8 | mean3
INC | Table 3 | inc_drw_crt | NC-DRW-cRT | yes | - | 82.6 | - | 90.2 | mean3
DisA | Table 1 | ce_mixup | CE (Yang et al., MixUp) | yes | 67.3 | 72.8 | 78.6 | 87.7 | ?
DisA | Table 1 | ce_disa | CE+DisA | yes | 69.2 | 74.7 | 79.6 | 88.3 | mean3
DisA | Table 1 | ce_drw_mixup | CE-DRW* | yes | 75.1* | 80.9* | 81.8* | 88.8* | mean3
DisA | Table 1 | ce_drw_disa | CE-DRW+DisA | yes | 77.7 | 82.1 | 84.1 | 89.8 | mean3
DisA | Table 1 | ldam_drw_mixup | LDAM-DRW* | yes | 77.1* | 78.8* | 82.7* | 88.2* | mean3
DisA | Table 1 | ldam_drw_disa | LDAM-DRW+DisA | yes | 78.0 | 80.4 | 84.8 | 88.3 | mean3
DisA | Table 1 | inc_drw | INC-DRW | yes | 75.8* | 81.9 | 82.7* | 89.8 | mean3
DisA | Table 1 | inc_drw_disa | INC-DRW+DisA | yes | 78.7 | 82.3 | 84.5 | 90.2 | mean3
DisA | Table 1 | inc_drw_crt | INC-DRW-cRT | yes | 76.8* | 82.6 | 83.3* | 90.2 | mean3
DisA | Table 1 | inc_drw_disa_crt | INC-DRW-cRT+DisA | yes | 79.1 | 82.8 | 84.9 | 90.5 | mean3
DisA | Table 1 | etf_ce_disa | ETF-CE+DisA | yes | 62.4 | 68.4 | 78.9 | 87.8 | mean3
DisA | Table 1 | etf_dr | ETF-DR | yes | 71.9 | 76.5 | 81.0 | 87.7 | ?
DisA | Table 1 | etf_dr_disa | ETF-DR+DisA | yes | 73.7 | 78.5 | 81.4 | 87.8 | mean3
DisA | Table 1 | arb | ARB | yes | - | 83.3 | 85.7 | 90.2 | ?
DisA | Table 4 | ldam_disa | LDAM+DisA | yes | 68.8 | 74.5 | 79.5 | 87.0 | mean3
DisA | Table 4 | balanced_softmax_disa | BALMS+DisA | yes | 78.1 | 81.8 | 85.1 | 89.8 | mean3
DisA | Table 4 | cb_softmax_disa | CB Softmax+DisA | yes | 63.4 | 72.1 | 80.7 | 88.0 | mean3
DisA | Table 4 | cb_sigmoid_disa | CB Sigmoid+DisA | yes | 59.6 | 71.3 | 79.0 | 88.4 | mean3
ARB | Table 1 | ce | Plain Model | no | - | 70.4 | 74.8 | 86.4 | ?
ARB | Table 1 | ce_mixup | mixup | yes | - | 73.1 | 77.8 | 87.1 | ?
ARB | Table 1 | ldam_drw | LDAM+DRW | no | - | 74.9 | - | 86.7 | ?
ARB | Table 1 | arb | ARB-Loss | yes | - | 83.3 | 85.7 | 90.2 | ?
BCL | Table 3 | ldam_drw | LDAM-DRW [3] | no | - | 77.03 | - | 88.16 | best
BCL | Table 3 | ldam_drw | LDAM-DRW [3] | no | - | - | 81.03 | - | ?
BCL | Table 3 | bcl | BCL | no | - | 84.32 | 87.24 | 91.12 | ?
"""


#: notes shown under a paper's table: (paper, row) -> note.
_NOTES: dict[tuple[str, str], str] = {
    ("LDAM-DRW", "ldam_drw"): "Cao et al. print CIFAR-10-LT at IF 100 and 10 only; the IF 50 "
    "(81.03) and IF 200 (73.52) numbers that BCL and AllNC cite to them are under those papers",
    ("AllNC", "ldam_drw"): "IF 100 is Cao et al.'s (best epoch); IF 200 and 50 are not in Cao "
    "et al., their source and epoch basis unsaid",
    ("BCL", "ldam_drw"): "IF 100 / 10 are Cao et al.'s (best epoch); IF 50 (81.03) is not in "
    "Cao et al., its source and epoch basis unsaid",
    ("AllNC", "etf_dr"): "Yang et al. (2022): fixed ETF + dot regression",
    ("AllNC", "allnc_pp"): "weight-balancing details not given (ERRATA)",
    ("INC", "ce_drw"): "ERRATA: compare CE-DRW with 75.1 (no MixUp)",
    ("DisA", "ce_mixup"): "with MixUp: not the JPEG-offset reference (ERRATA)",
    ("DisA", "ce_drw_mixup"): "DRW at 180, beta 0.999 (DisA App. A)",
    ("DisA", "inc_drw"): "IF 100 / 10 copied from INC",
    ("DisA", "inc_drw_crt"): "IF 100 / 10 copied from INC",
    ("DisA", "etf_dr"): "from Yang et al. (2022)",
    ("DisA", "arb"): "copied from ARB",
    ("DisA", "cb_softmax_disa"): "beta 0.999 (DisA App. A)",
    ("DisA", "cb_sigmoid_disa"): "beta 0.999 (DisA App. A)",
    ("ARB", "ldam_drw"): "cited from Cao et al.; the other papers cite 77.03",
    ("ARB", "arb"): "batch class counts (5.2)",
    ("BCL", "bcl"): "200 epochs; BCL's 400-epoch row is CIFAR-100 only",
}


def _parse_table(text: str) -> tuple[Published, ...]:
    out = []
    factors = (200.0, 100.0, 50.0, 10.0)
    for line in text.strip().splitlines():
        cells = [c.strip() for c in line.split("|")]
        paper, table, row, label, mixup, *values, reported = cells
        if paper not in PAPERS or mixup not in ("yes", "no") or len(values) != len(factors):
            raise ValueError(f"bad published line: {line!r}")
        for imbalance, value in zip(factors, values, strict=True):
            if value != "-":
                out.append(
                    Published(
                        paper,
                        table,
                        row,
                        label,
                        imbalance,
                        value,
                        mixup == "yes",
                        reported,
                        note=_NOTES.get((paper, row), ""),
                    )
                )
    return tuple(out)


PUBLISHED: tuple[Published, ...] = _parse_table(_TABLE)


def paper_key(name: str) -> str:
    """The key of ``PAPERS`` that ``name`` names (case-insensitive), else an error."""
    for key in PAPERS:
        if key.lower() == name.strip().lower():
            return key
    raise NcltError(f"unknown paper {name!r}; known: {', '.join(PAPERS)}." + closest(name, PAPERS))


def published(paper: str | None = None) -> list[Published]:
    """The published entries, of one paper or of all, in table order."""
    return [p for p in PUBLISHED if paper is None or p.paper == paper_key(paper)]


# ----------------------------------------------------------------------------- rows


def configs_dir() -> Path | None:
    """configs/cifar10_lt of the source checkout (None in an installed wheel)."""
    d = Path(__file__).resolve().parents[2] / "configs" / "cifar10_lt"
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


# ----------------------------------------------------------------------------- measure


@dataclass
class Measured:
    """Our runs of one row at one imbalance factor."""

    row: str
    imbalance: float
    runs: list[RunRecord]
    problems: list[str] = field(default_factory=list)

    def top1(self, which: str) -> tuple[float | None, float | None, int]:
        """(mean, sample std or None, n) of the ``which`` ("best"/"last") top-1 over seeds."""
        vals = []
        for r in self.runs:
            d = r.results.get(which) or {}
            v = d.get("top1")
            if which == "best" and not d.get("epoch"):  # no epoch evaluated: best is a -1 stub
                v = None
            if v is None and which == "last":
                v = r.results.get("top1")
            vals.append(v)
        return mean_std(vals)

    @property
    def seconds(self) -> float | None:
        """Mean training time of one run (training steps; resumed parts included)."""
        return mean_std([r.results.get("seconds") for r in self.runs])[0]

    @property
    def wall_seconds(self) -> float | None:
        """Mean wall-clock time of one run (epochs, evaluation, final metrics), resumed parts
        included; None when a run does not know its whole time (resumed from a checkpoint
        written before nclt kept per-epoch wall times: flagged ``wall_seconds_partial``, or
        older results whose wall time is below their training time)."""
        walls = []
        for r in self.runs:
            wall, train = r.results.get("wall_seconds"), r.results.get("seconds")
            partial = r.results.get("wall_seconds_partial") or (
                wall is not None and train is not None and wall < train
            )
            walls.append(None if partial else wall)
        if any(w is None for w in walls):
            return None
        return mean_std(walls)[0]

    @property
    def device_mark(self) -> str:
        """ " (GPU)" when the runs trained on a GPU (a config's device, or ``auto`` where its
        environment names an accelerator), " (GPU + CPU)" when part of them did (a run begun
        on a lent GPU and resumed here: config.yaml's ``earlier_environments``), "" when all
        ran on the CPU: GPU times are not this CPU's."""

        def gpu(device: Any, env: Any) -> bool:
            device = str(device or "auto")
            accelerator = env.get("accelerator") if isinstance(env, dict) else None
            return device.startswith("cuda") or (device == "auto" and bool(accelerator))

        parts = set()
        for r in self.runs:  # the flattened config (dotted keys)
            env = {
                k.split(".", 1)[1]: v for k, v in r.config.items() if k.startswith("environment.")
            }
            parts.add(gpu(r.config.get("device"), env))
            for e in r.config.get("earlier_environments") or []:
                if isinstance(e, dict):
                    parts.add(gpu(e.get("device"), e))
        if parts == {True}:
            return " (GPU)"
        return " (GPU + CPU)" if True in parts else ""

    @property
    def mixup(self) -> bool | None:
        """Whether our runs used MixUp (None for a second stage, which never does)."""
        if self.row in STAGE2_ROWS:
            return None
        alphas = {float(r.config.get("mixup_alpha") or 0.0) for r in self.runs}
        return None if len(alphas) != 1 else alphas.pop() > 0


def _check_runs(row: str, imbalance: float, runs: list[RunRecord]) -> list[str]:
    """What is wrong with the runs of a row: wrong dataset / factor / method, short runs,
    seeds whose configs differ by more than the seed."""
    problems = []
    want = expected_run(row)
    for r in runs:
        res = r.results
        where = r.path.name if r.path.name.startswith("seed") else "run"
        if res.get("dataset") not in (None, DATASET):
            problems.append(f"{where}: dataset {res.get('dataset')}")
        if res.get("imbalance") is not None and float(res["imbalance"]) != imbalance:
            problems.append(f"{where}: imbalance {res['imbalance']:g}")
        if want["method"] and res.get("method") not in (None, want["method"]):
            problems.append(f"{where}: method {res.get('method')} (expected {want['method']})")
        if want["epochs"] and res.get("epochs") not in (None, want["epochs"]):
            problems.append(f"short run ({res.get('epochs')} of {want['epochs']} epochs)")
        differ = protocol_differences(row, imbalance, r.config)
        if differ:
            more = f" and {len(differ) - 1} more" if len(differ) > 1 else ""
            problems.append(f"{where}: not the row's config: {differ[0]}{more}")
    # a second stage's init_from names its own first-stage folder: not a setting
    plain = [
        RunRecord(r.path, r.results, {k: v for k, v in r.config.items() if k != "init_from"})
        for r in runs
    ]
    groups = group_runs(plain)
    if len(groups) > 1:
        problems.append("seeds differ in " + ", ".join(varying_keys(groups)[:4]))
    seeds = [r.seed for r in runs]
    if len(set(map(str, seeds))) != len(seeds):
        problems.append("a seed is there twice")
    return list(dict.fromkeys(problems))


def measure(results: str | Path) -> dict[tuple[str, float], Measured]:
    """Every row found under ``results/cifar10_lt/IF*/``, keyed by (row, imbalance)."""
    base = Path(results) / f"{DATASET}_lt"
    found: dict[tuple[str, float], Measured] = {}
    if not base.is_dir():
        return found
    for if_dir in sorted(base.iterdir()):
        m = re.fullmatch(r"IF(\d+(?:\.\d+)?)", if_dir.name)
        if not (if_dir.is_dir() and m):
            continue
        imbalance = float(m.group(1))
        for folder in sorted(p for p in if_dir.iterdir() if p.is_dir()):
            paths = row_runs(folder)
            if not paths:
                continue
            runs = [load_run(p) for p in paths]
            found[(folder.name, imbalance)] = Measured(
                folder.name, imbalance, runs, _check_runs(folder.name, imbalance, runs)
            )
    return found


# ----------------------------------------------------------------------------- tables


@dataclass
class Offset:
    """The JPEG offset used at one imbalance factor: paper CE - our CE (points)."""

    imbalance: float
    value: float | None  # measured here, or None
    used: float  # what the threshold uses (>= 0; 0 when unknown)
    text: str


def jpeg_offsets(found: dict[tuple[str, float], Measured], basis: str) -> dict[float, Offset]:
    """Offset per imbalance factor from the ``ce`` row; factors without a ``ce`` run use the
    IF 100 offset, and 0 when there is none (said in the text)."""
    measured: dict[float, tuple[float, str]] = {}
    for imbalance, (paper, source) in CE_REFERENCE.items():
        m = found.get((CE_ROW, imbalance))
        mean, _, n = m.top1(basis) if m else (None, None, 0)
        if mean is not None:
            measured[imbalance] = (
                paper - mean,
                f"{paper:g} (CE without MixUp; {source}) - "
                f"{mean:.2f} (ours, `{CE_ROW}`, {basis}-epoch mean of {n} "
                f"seed{'s' if n != 1 else ''})",
            )
    out = {}
    for imbalance in IF_ORDER:
        if imbalance in measured:
            value, how = measured[imbalance]
            used = max(value, 0.0)
            note = "" if value >= 0 else " (ours is above the paper: taken as 0)"
            out[imbalance] = Offset(
                imbalance, value, used, f"IF {imbalance:g}: {how} = {value:+.2f} points{note}"
            )
        elif 100.0 in measured:
            used = max(measured[100.0][0], 0.0)
            out[imbalance] = Offset(
                imbalance,
                None,
                used,
                f"IF {imbalance:g}: no `{CE_ROW}` run; the IF 100 offset ({used:.2f}) is used",
            )
        else:
            out[imbalance] = Offset(
                imbalance,
                None,
                0.0,
                f"IF {imbalance:g}: no `{CE_ROW}` run; offset unknown, taken as 0",
            )
    return out


def _pm(mean: float | None, std: float | None, digits: int = 2) -> str:
    if mean is None:
        return "-"
    return f"{mean:.{digits}f}" + ("" if std is None else f" ± {std:.{digits}f}")


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    s = round(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{(s % 3600) // 60:02d}m"


@dataclass
class Line:
    """One line of a paper's table: a published number and ours."""

    pub: Published
    measured: Measured | None
    basis: str  # the epoch compared with the paper
    offset: Offset

    @property
    def ours(self) -> float | None:
        return self.measured.top1(self.basis)[0] if self.measured else None

    @property
    def delta(self) -> float | None:
        """ours - paper (points), on ``basis``."""
        return None if self.ours is None else self.ours - self.pub.top1

    @property
    def flagged(self) -> bool:
        """Falls short of the paper by more than the offset plus one point."""
        return self.delta is not None and -self.delta > self.offset.used + TOLERANCE

    @property
    def status(self) -> str:
        if self.measured is None:
            return "missing"
        parts = []
        if self.flagged:
            parts.append("**needs investigation**")
        ref = CE_REFERENCE.get(self.pub.imbalance)
        if (
            self.pub.row == CE_ROW
            and ref
            and self.pub.top1 == ref[0]
            and self.offset.value is not None
        ):
            parts.append("offset reference")
        ours_mixup = self.measured.mixup
        if ours_mixup is not None and ours_mixup != self.pub.mixup:
            parts.append(
                f"MixUp: paper {'yes' if self.pub.mixup else 'no'}, "
                f"ours {'yes' if ours_mixup else 'no'}"
            )
        parts += self.measured.problems
        return "; ".join(parts) or "ok"

    def cells(self) -> list[str]:
        m = self.measured
        best, last = (m.top1("best"), m.top1("last")) if m else ((None, None, 0),) * 2
        d = self.delta
        return [
            f"`{self.pub.row}`",
            self.pub.label,
            f"{self.pub.imbalance:g}",
            "yes" if self.pub.mixup else "no",
            self.pub.text + ("" if self.pub.reported != "best" else " (best)"),
            _pm(best[0], best[1]),
            _pm(last[0], last[1]),
            "-" if d is None else f"{d:+.2f}",
            "-" if d is None else f"{d + self.offset.used:+.2f}",
            str(len(m.runs)) if m else "0",
            f"{_duration(m.seconds)} / {_duration(m.wall_seconds)}{m.device_mark}" if m else "-",
            self.status,
        ]


HEADER = [
    "row",
    "paper's row",
    "IF",
    "MixUp",
    "paper",
    "ours best",
    "ours last",
    "Δ",
    "Δ + offset",
    "seeds",
    "train / wall time",
    "status",
]


# (results.json ``nc`` key, column title): training features at the last epoch
NC_COLUMNS = (
    ("nc1", "NC1"),
    ("equinorm_means", "equinorm μ"),
    ("equiangular_means", "equiangular μ"),
    ("maxangle_means", "max-angle μ"),
    ("equinorm_w", "equinorm W"),
    ("equiangular_w", "equiangular W"),
    ("self_duality", "self-duality"),
    ("nc4", "NC4"),
)
# the settings a results.json ``nc`` records, and how the NC section names them
NC_SETTINGS = (
    ("global_mean", "global mean"),
    ("within", "Σ_W averaged"),
    ("center_w", "classifier rows centred"),
)
NC_VALUES = {
    ("global_mean", "class"): "the mean of the class means",
    ("global_mean", "sample"): "the sample mean",
    ("within", "sample"): "over samples",
    ("within", "class"): "per class, then over classes",
    ("center_w", "True"): "yes",
    ("center_w", "False"): "no (raw W)",
}


def nc_section(found: dict[tuple[str, float], Measured]) -> str:
    """Markdown: the neural-collapse metrics of every measured row (mean over its seeds of
    the training features' metrics at the last epoch, results.json ``nc``), IF 100 first,
    then the rows by name. Empty when nothing was measured."""
    if not found:
        return ""
    keys = sorted(found, key=lambda k: (if_rank(k[1]), k[0]))
    rows = []
    settings: dict[str, set[str]] = {name: set() for name, _ in NC_SETTINGS}
    for key in keys:
        m = found[key]
        ncs = [r.results.get("nc") or {} for r in m.runs]
        for nc in ncs:
            for name, _ in NC_SETTINGS:
                if name in nc:
                    value = str(nc[name])
                    settings[name].add(NC_VALUES.get((name, value), value))
        cells = []
        for name, _ in NC_COLUMNS:
            mean, std, _n = mean_std([nc.get(name) for nc in ncs])
            cells.append(_pm(mean, std, digits=3))
        rows.append([f"`{key[0]}`", f"{key[1]:g}", str(len(m.runs)), *cells])
    said = ", ".join(
        f"{title}: {' / '.join(sorted(settings[name])) or 'not recorded'}"
        + (" (differs between runs: see each results.json)" if len(settings[name]) > 1 else "")
        for name, title in NC_SETTINGS
    )
    return "\n".join(
        [
            "### Neural collapse of our runs",
            "",
            "The geometry each row ends with: metrics of the training features at the last "
            "epoch (results.json `nc`; definitions in docs/METRICS.md), mean over seeds "
            "(± sample std). Every column is 0 under exact collapse except NC4, the share of "
            "training samples whose classifier prediction is the nearest class mean (1 under "
            f"collapse). Settings: {said}.",
            "",
            _markdown_table(["row", "IF", "seeds"] + [t for _, t in NC_COLUMNS], rows),
        ]
    )


#: a factor's NC-against-accuracy correlations are computed from this many rows on
NC_CORR_MIN_ROWS = 6
#: NC columns where a larger value means more collapse (every other: smaller)
_NC_LARGER_IS_COLLAPSE = frozenset({"nc4"})


def nc_points(
    found: dict[tuple[str, float], Measured], imbalance: float
) -> list[tuple[str, float, dict[str, float]]]:
    """(row, best-epoch top-1, {NC column: value}) of every row at ``imbalance`` whose runs
    recorded the NC metrics; both means over the row's seeds."""
    out = []
    for (row, f), m in sorted(found.items()):
        if f != imbalance:
            continue
        top1 = m.top1("best")[0]
        ncs = [r.results.get("nc") or {} for r in m.runs]
        values = {name: mean_std([nc.get(name) for nc in ncs])[0] for name, _ in NC_COLUMNS}
        if top1 is not None and all(v is not None for v in values.values()):
            out.append((row, top1, values))  # type: ignore[arg-type]  # no None left
    return out


def spearman(xs: list[float], ys: list[float]) -> tuple[float | None, float | None]:
    """Spearman's rank correlation and its two-sided p-value (scipy); (None, None) when
    either side is constant."""
    from scipy.stats import spearmanr

    if len(set(xs)) < 2 or len(set(ys)) < 2:
        return None, None
    res = spearmanr(xs, ys)
    return float(res.statistic), float(res.pvalue)


@dataclass
class NCCorrelation:
    """One NC column against the best-epoch top-1 across the rows of one imbalance factor."""

    name: str  # results.json ``nc`` key
    title: str
    values: list[float]  # one per row, in the order of ``nc_correlations``' rows
    rho: float | None
    p: float | None


def nc_correlations(
    found: dict[tuple[str, float], Measured],
) -> dict[float, tuple[list[tuple[str, float, dict[str, float]]], list[NCCorrelation]]]:
    """Per imbalance factor with at least ``NC_CORR_MIN_ROWS`` rows (factors in the papers'
    order): its rows (:func:`nc_points`) and each NC column's Spearman rho with their top-1."""
    out = {}
    for f in sorted({f for _, f in found}, key=if_rank):
        pts = nc_points(found, f)
        if len(pts) < NC_CORR_MIN_ROWS:
            continue
        acc = [p[1] for p in pts]
        corr = []
        for name, title in NC_COLUMNS:
            values = [p[2][name] for p in pts]
            corr.append(NCCorrelation(name, title, values, *spearman(values, acc)))
        out[f] = (pts, corr)
    return out


def nc_accuracy_section(found: dict[tuple[str, float], Measured]) -> str:
    """Markdown: does more collapse of the training features go with more test accuracy
    across our rows? Per imbalance factor with at least ``NC_CORR_MIN_ROWS`` rows, Spearman's
    rho between each NC column and the best-epoch top-1. Empty without such a factor."""
    parts = []
    for f, (pts, corr) in nc_correlations(found).items():
        rows, signif = [], []
        for c in corr:
            larger = c.name in _NC_LARGER_IS_COLLAPSE
            if c.rho is not None and c.p is not None and c.p < 0.05:
                agrees = (c.rho > 0) == larger
                signif.append(f"{c.title} (ρ {c.rho:+.2f}, {'with' if agrees else 'against'} NC)")
            rows.append(
                [
                    c.title,
                    "higher" if larger else "lower",
                    "-" if c.rho is None else f"{c.rho:+.2f}",
                    "-" if c.p is None else f"{c.p:.3f}",
                ]
            )
        parts += [
            "",
            f"IF {f:g}, {len(pts)} rows. Significant at p < 0.05: "
            + ("; ".join(signif) if signif else "none")
            + ".",
            "",
            _markdown_table(["metric", "more collapse is", "ρ with top-1", "p"], rows),
        ]
    if not parts:
        return ""
    return "\n".join(
        [
            "### Neural collapse against accuracy",
            "",
            "The papers' premise is that imbalance keeps the features from collapsing and that "
            "restoring collapse restores accuracy. Across our rows at one imbalance factor: "
            "Spearman's ρ between each metric of the section above (training features, last "
            "epoch) and the best-epoch test top-1, with its two-sided p-value (scipy). If more "
            "collapse went with more accuracy, ρ would be negative (positive for NC4). The rows "
            "are not independent samples: a DRW row shares its sibling's first 160-180 epochs, "
            "a second stage its first stage's features.",
            *parts,
        ]
    )


def _markdown_table(header: list[str], rows: list[list[str]]) -> str:
    def esc(c: str) -> str:
        return c.replace("|", "\\|")

    out = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] * len(header)) + "|"]
    out += ["| " + " | ".join(esc(c) for c in r) + " |" for r in rows]
    return "\n".join(out)


#: the summary's first rows: the baselines, then every published row in PUBLISHED's order
_SUMMARY_HEAD = ("ce", "ce_drw", "ce_mixup", "ce_drw_mixup", "ldam_drw", "ldam_drw_mixup")
_SUMMARY_ORDER = {
    r: i for i, r in enumerate(dict.fromkeys((*_SUMMARY_HEAD, *(p.row for p in PUBLISHED))))
}


def summary_rank(row: str) -> tuple[int, int, str]:
    """Sort key of a row in the summary: baselines first, then the papers' order; a variant
    without a published number (``ce_disa_fig8``, ``allnc_grw``) right after the longest
    published row its name starts with (``ce_disa``, ``allnc``), else last."""
    order = _SUMMARY_ORDER
    if row in order:
        return (order[row], 0, row)
    bases = [r for r in order if row.startswith(r + "_")]
    return (order[max(bases, key=len)], 1, row) if bases else (len(order), 1, row)


@dataclass
class Report:
    """Every paper's table, the offsets, and what is missing."""

    results: Path
    basis: str
    papers: list[str]
    lines: dict[str, list[Line]]
    offsets: dict[float, Offset]
    found: dict[tuple[str, float], Measured]

    @property
    def missing(self) -> list[tuple[str, float]]:
        """(row, IF) with a published number and no run, IF 100 first, without repeats."""
        seen = dict.fromkeys(
            (ln.pub.row, ln.pub.imbalance)
            for p in self.papers
            for ln in self.lines[p]
            if ln.measured is None
        )
        return list(seen)

    @property
    def flagged(self) -> list[Line]:
        return [ln for p in self.papers for ln in self.lines[p] if ln.flagged]

    @property
    def unpublished(self) -> list[tuple[str, float]]:
        """Rows we have that no paper publishes at that factor."""
        pub = {(p.row, p.imbalance) for p in PUBLISHED}
        return sorted(
            (k for k in self.found if k not in pub),
            key=lambda k: (if_rank(k[1]), k[0]),
        )

    def summary_rows(self) -> list[list[str]]:
        """One line per measured (row, IF), IF 100 first, rows in the papers' order: ours,
        every distinct published number with the papers that print it, Δ + offset against
        each, and one status (flagged against which papers). With ``--table`` only the rows
        that paper publishes."""
        by_key: dict[tuple[str, float], list[Line]] = {}
        for p in self.papers:
            for ln in self.lines[p]:
                if ln.measured is not None:
                    by_key.setdefault((ln.pub.row, ln.pub.imbalance), []).append(ln)
        keys = list(self.found) if len(self.papers) == len(PAPERS) else list(by_key)
        keys.sort(key=lambda k: (if_rank(k[1]), summary_rank(k[0])))
        rows = []
        for key in keys:
            m, lines = self.found[key], by_key.get(key, [])
            # one entry per published value (82.60 and 82.6 are one number) and basis
            numbers: dict[tuple[float, bool], list[Line]] = {}
            for ln in lines:
                numbers.setdefault((ln.pub.top1, ln.pub.reported == "best"), []).append(ln)
            paper = "; ".join(
                f"{lns[0].pub.text}{' (best)' if best else ''} "
                + ", ".join(dict.fromkeys(ln.pub.paper for ln in lns))
                for (_, best), lns in numbers.items()
            )
            delta = "; ".join(
                f"{lns[0].delta + lns[0].offset.used:+.2f}"  # type: ignore[operator]
                for lns in numbers.values()
            )
            flagged = list(dict.fromkeys(ln.pub.paper for ln in lines if ln.flagged))
            parts = [f"**needs investigation** (vs {', '.join(flagged)})"] if flagged else []
            for ln in lines:
                parts += [
                    s for s in ln.status.split("; ") if s not in ("ok", "**needs investigation**")
                ]
            if not lines:
                parts.append("no published number")
                parts += m.problems
            best, last = m.top1("best"), m.top1("last")
            rows.append(
                [
                    f"`{key[0]}`",
                    f"{key[1]:g}",
                    str(len(m.runs)),
                    _pm(best[0], best[1]),
                    _pm(last[0], last[1]),
                    paper or "-",
                    delta or "-",
                    "; ".join(dict.fromkeys(parts)) or "ok",
                    _duration(m.seconds) + m.device_mark,
                ]
            )
        return rows

    def summary(self, heading: str = "### Summary: every row we have run") -> str:
        """Markdown: the offsets in one line and :meth:`summary_rows` as one table."""
        offsets = ", ".join(
            f"IF {f:g} {o.used:.2f}" + ("" if o.value is not None else " (IF 100's)")
            for f, o in self.offsets.items()
            if any(k[1] == f for k in self.found)
        )
        header = [
            "row",
            "IF",
            "seeds",
            "ours best",
            "ours last",
            "paper",
            "Δ + offset",
            "status",
            "train time",
        ]
        rows = self.summary_rows()
        return "\n".join(
            ([heading, ""] if heading else [])
            + [
                f"Ours against every paper that prints the row ({self.basis}-epoch top-1 where "
                'the paper does not say; "(best)": the paper\'s basis is known), Δ + offset '
                "against each number in the same order. JPEG offset used: "
                f"{offsets or 'none (no runs)'}. A row needs investigation when Δ + offset < "
                f"-{TOLERANCE:g} against any paper.",
                "",
                _markdown_table(header, rows) if rows else "No runs in results/ yet.",
            ]
        )

    def render(self) -> str:
        """The whole report as Markdown (printed as is, and written by ``--markdown``)."""
        out = []
        measured_any = any(o.value is not None for o in self.offsets.values())
        out.append(
            "**JPEG offset** (this CIFAR-10 copy is JPEG re-encoded at quality 75; "
            "offset = paper's CE without MixUp - our `ce`, estimated per imbalance "
            "factor):"
        )
        out.append("")
        if measured_any:
            out += [f"- {self.offsets[f].text}" for f in IF_ORDER]
        else:
            out.append(
                f"- not measured yet: no `{CE_ROW}` run in results/. Until there is one "
                "the offset is taken as 0, so a row is flagged when it falls short of "
                "the paper by more than 1 point."
            )
        out.append("")
        out.append(
            f"Δ = ours - paper, where ours is the **{self.basis}-epoch** top-1, mean over "
            "our seeds (± sample std), except where the paper's basis is known (marked "
            "\"(best)\" after the paper's number: LDAM-DRW's code reports the best epoch). "
            "Δ + offset adds the JPEG offset back; a row **needs investigation** when "
            f"Δ + offset < -{TOLERANCE:g}, i.e. it falls short of the paper by more than "
            "the offset plus one point. Time: mean per run of the training steps "
            "(results.json `seconds`) / the whole run (`wall_seconds`: with the "
            'test evaluation, resumed parts included; "-" where a run was resumed from '
            "a checkpoint older than nclt's per-epoch wall times); a second stage counts "
            'its own stage only; "(GPU)" marks a row trained on a GPU, "(GPU + CPU)" one '
            "begun on a GPU and finished on the CPU, every other ran on the project's 2-core "
            "CPU."
        )
        out += ["", self.summary()]
        for key in self.papers:
            paper = PAPERS[key]
            tables = ", ".join(dict.fromkeys(ln.pub.table for ln in self.lines[key]))
            out += [
                "",
                f"### {key}: {paper.title}",
                "",
                f"Source: {tables} ({paper.source}). Protocol: {paper.protocol}. "
                f"Reported: {paper.reported}.",
                "",
            ]
            rows = [ln.cells() for ln in self.lines[key]]
            notes = [f"`{ln.pub.row}`: {ln.pub.note}" for ln in self.lines[key] if ln.pub.note]
            out.append(_markdown_table(HEADER, rows))
            if notes:
                out += ["", "Notes: " + "; ".join(dict.fromkeys(notes)) + "."]
        for section in (nc_section(self.found), nc_accuracy_section(self.found)):
            if section:
                out += ["", section]
        out += ["", "### Missing rows", ""]
        missing = self.missing
        if not missing:
            out.append("None: every published row has at least one run.")
        else:
            out.append(
                f"{len(missing)} (row, IF) pairs with a published number have no run in results/:"
            )
            out.append("")
            for f in IF_ORDER:
                rows_f = [r for r, i in missing if i == f]
                if rows_f:
                    out.append(f"- IF {f:g} ({len(rows_f)}): " + ", ".join(rows_f))
        flagged = self.flagged
        out += ["", "### Needs investigation", ""]
        if flagged:
            out += [
                f"- `{ln.pub.row}` IF {ln.pub.imbalance:g} vs {ln.pub.paper} "
                f"({ln.pub.table}: {ln.pub.text}): Δ {ln.delta:+.2f}, Δ + offset "
                f"{ln.delta + ln.offset.used:+.2f}"
                for ln in flagged
            ]
            out.append("")
            out.append('Each needs a note in "Notes on gaps" below.')
        else:
            out.append("None so far.")
        extra = self.unpublished
        if extra:
            out += [
                "",
                "Runs without a published number in these tables: "
                + ", ".join(f"`{r}` IF {i:g}" for r, i in extra)
                + ".",
            ]
        return "\n".join(out) + "\n"


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


def build_report(
    results: str | Path = "results", paper: str | None = None, basis: str = "best"
) -> Report:
    """Read results/ and line our runs up against the published numbers."""
    if basis not in ("best", "last"):
        raise NcltError(f"--basis {basis!r}: expected best or last")
    found = measure(results)
    offsets = jpeg_offsets(found, basis)
    papers = [paper_key(paper)] if paper else list(PAPERS)
    lines: dict[str, list[Line]] = {}
    for key in papers:
        entries = sorted(published(key), key=lambda p: if_rank(p.imbalance))
        lines[key] = [
            Line(p, found.get((p.row, p.imbalance)), p.epoch_basis or basis, offsets[p.imbalance])
            for p in entries
        ]
    return Report(Path(results), basis, papers, lines, offsets, found)


def per_class_figures(report: Report, out_dir: str | Path) -> dict[float, Path]:
    """One PNG per imbalance factor with measured rows: each row's per-class test accuracy at
    its best epoch (mean over seeds), head to tail. Returns {IF: path}."""
    import numpy as np

    from nclt.report.figures import per_class_lines

    by_if: dict[float, dict[str, list[float]]] = {}
    counts: dict[float, list[int]] = {}
    for (row, imbalance), m in sorted(report.found.items(), key=lambda kv: kv[0]):
        per_run = [(r.results.get("best") or {}).get("per_class") for r in m.runs]
        per_run = [pc for pc in per_run if pc]
        if not per_run:
            continue
        mean = np.nanmean(np.array(per_run, dtype=np.float64), axis=0)
        seeds = f"{len(per_run)} seed" + ("s" if len(per_run) > 1 else "")
        label = f"{row} (mean {float(np.nanmean(mean)):.1f}, {seeds})"
        by_if.setdefault(imbalance, {})[label] = mean.tolist()
        counts.setdefault(imbalance, list(m.runs[0].results.get("class_counts") or []))
    out_dir = Path(out_dir)
    paths: dict[float, Path] = {}
    for imbalance in sorted(by_if, key=if_rank):
        if len(counts[imbalance]) != len(next(iter(by_if[imbalance].values()))):
            continue  # results without class_counts: nothing to order the classes by
        out_dir.mkdir(parents=True, exist_ok=True)
        paths[imbalance] = per_class_lines(
            by_if[imbalance],
            counts[imbalance],
            out_dir / f"per_class_IF{imbalance:g}.png",
            f"CIFAR-10-LT IF {imbalance:g}: per-class top-1 at the best epoch (mean over seeds)",
        )
    return paths


def paper_figures(report: Report, out_dir: str | Path) -> dict[float, Path]:
    """One PNG per imbalance factor with measured rows: ours against each paper's number
    (a point per paper that publishes the row), with the JPEG offset and its tolerance band.
    Returns {IF: path}."""
    from nclt.report.figures import paper_vs_ours

    # one point per (row, published number, ours): papers quoting the same number share it
    merged: dict[tuple[float, str, float, float, bool], list[str]] = {}
    for key in report.papers:
        for ln in report.lines[key]:
            if ln.ours is not None:
                at = (ln.pub.imbalance, ln.pub.row, ln.pub.top1, ln.ours, ln.flagged)
                merged.setdefault(at, []).append(key)
    by_if: dict[float, list[tuple[str, float, float, bool]]] = {}
    for (imbalance, row, paper, ours, flagged), keys in merged.items():
        label = f"{row} ({', '.join(keys)})"
        by_if.setdefault(imbalance, []).append((label, paper, ours, flagged))
    out_dir = Path(out_dir)
    paths: dict[float, Path] = {}
    for imbalance in sorted(by_if, key=if_rank):
        out_dir.mkdir(parents=True, exist_ok=True)
        offset = report.offsets[imbalance].used
        paths[imbalance] = paper_vs_ours(
            by_if[imbalance],
            offset,
            TOLERANCE,
            out_dir / f"paper_vs_ours_IF{imbalance:g}.png",
            f"CIFAR-10-LT IF {imbalance:g}: ours ({report.basis} epoch where the paper does not "
            "say) against the paper",
        )
    return paths


def nc_accuracy_figures(report: Report, out_dir: str | Path) -> dict[float, Path]:
    """One PNG per imbalance factor with at least ``NC_CORR_MIN_ROWS`` rows: each NC column
    against the best-epoch top-1, a labelled point per row, rho in each panel's title.
    Returns {IF: path}."""
    from nclt.report.figures import metric_vs_accuracy

    out_dir = Path(out_dir)
    paths: dict[float, Path] = {}
    for imbalance, (pts, corr) in nc_correlations(report.found).items():
        panels = [
            (c.title + ("" if c.rho is None else f"  (ρ {c.rho:+.2f})"), c.values) for c in corr
        ]
        out_dir.mkdir(parents=True, exist_ok=True)
        paths[imbalance] = metric_vs_accuracy(
            [p[0] for p in pts],
            [p[1] for p in pts],
            panels,
            out_dir / f"nc_vs_accuracy_IF{imbalance:g}.png",
            f"CIFAR-10-LT IF {imbalance:g}: neural collapse of the training features (last "
            "epoch) against test top-1 (best epoch), one point per row",
        )
    return paths


def figures_block(
    paths: dict[float, Path],
    doc: str | Path,
    against: dict[float, Path] | None = None,
    nc_accuracy: dict[float, Path] | None = None,
) -> str:
    """Markdown linking the figures (per-class accuracy, ``against``: ours against the
    papers, ``nc_accuracy``: NC metrics against accuracy), relative to ``doc``'s folder."""
    base = Path(doc).resolve().parent
    out = []
    for title, figs, alt in (
        ("Ours against the papers", against or {}, "ours against the papers"),
        ("Per-class accuracy", paths, "per-class accuracy"),
        ("Neural collapse against accuracy, drawn", nc_accuracy or {}, "NC against accuracy"),
    ):
        if figs:
            out += ["", f"### {title}", ""]
            for imbalance, path in figs.items():
                rel = Path(path).resolve().relative_to(base).as_posix()
                out.append(f"![{alt}, IF {imbalance:g}]({rel})")
    return "\n".join(out) + "\n" if out else ""


def check_doc(
    doc: str | Path, start_mark: str = MARK_START, end_mark: str = MARK_END, flag: str = "--doc"
) -> str:
    """The text of the doc that ``--markdown`` writes, or an error saying what it lacks."""
    doc = Path(doc)
    if not doc.is_file():
        raise NcltError(f"{doc}: no such file (run from the repository root, or {flag} FILE)")
    text = doc.read_text()
    start, end = text.find(start_mark), text.find(end_mark)
    if start < 0 or end < start:
        raise NcltError(
            f"{doc}: needs the markers {start_mark} and {end_mark} (in that "
            "order) around the generated part"
        )
    return text


def write_markdown(
    doc: str | Path, block: str, start_mark: str = MARK_START, end_mark: str = MARK_END
) -> bool:
    """Replace what lies between the markers of ``doc`` by ``block``; True if it changed."""
    doc = Path(doc)
    text = check_doc(doc, start_mark, end_mark)
    start, end = text.find(start_mark), text.find(end_mark)
    note = (
        "<!-- generated by `nclt reproduce --markdown` from results/: do not edit by hand, "
        "edit results/ or src/nclt/reproduce.py and regenerate -->"
    )
    new = (
        text[:start] + start_mark + "\n" + note + "\n\n" + block.rstrip("\n") + "\n\n" + text[end:]
    )
    if new == text:
        return False
    doc.write_text(new)
    return True


# ----------------------------------------------------------------------------- collect


def read_results(run: Path) -> dict[str, Any]:
    try:
        return json.loads((run / "results.json").read_text())
    except (OSError, ValueError) as e:
        raise NcltError(f"{run}/results.json cannot be read: {e}") from None


def _source_runs(run_dir: Path) -> list[Path]:
    if (run_dir / "results.json").is_file():
        return [run_dir]
    runs = row_runs(run_dir)
    if not runs:
        raise NcltError(
            f"{run_dir}: no results.json in it nor in seed*/ below it (a finished nclt run?)"
        )
    return runs


def _collected(dest: Path) -> tuple[str | None, set[str]]:
    """The seed of the run at the top of a row folder (None) and the seeds of its seed*/."""
    top_seed = str(read_results(dest).get("seed")) if (dest / "results.json").is_file() else None
    seed_dirs = {p.name[4:] for p in dest.glob("seed*") if (p / "results.json").is_file()}
    return top_seed, seed_dirs


def collected_seeds(results: str | Path, row: str, imbalance: float) -> set[int]:
    """The seeds of ``row`` at ``imbalance`` that results/ already holds."""
    top_seed, seed_dirs = _collected(row_dir(results, row, imbalance))
    seeds = seed_dirs | ({top_seed} if top_seed is not None else set())
    return {int(s) for s in seeds if s.lstrip("-").isdigit()}


def collect(
    run_dir: str | Path,
    row: str,
    imbalance: float,
    results: str | Path = "results",
    force: bool = False,
) -> list[Path]:
    """Copy results.json, metrics.csv and config.yaml of a finished run (or of each
    ``seed<k>/`` run below ``run_dir``) into ``results/cifar10_lt/IF<factor>/<row>/``.

    One run of a row goes into the row folder itself; as soon as a row has two seeds, each run
    sits in ``seed<k>/`` (a run already at the top is moved into its seed folder). Everything
    is checked before anything is copied: the three files exist, the run is CIFAR-10 at this
    imbalance factor and of the row's method; a seed already collected is refused unless
    ``force``.

    Returns:
        the folders written.
    """
    run_dir = Path(run_dir)
    rows = known_rows()
    if row not in rows:
        raise NcltError(
            f"--row {row!r}: not a row of configs/cifar10_lt or a second stage "
            f"({', '.join(STAGE2_ROWS)}).{closest(row, rows)}"
        )
    sources = _source_runs(run_dir)
    want = expected_run(row)
    incoming: dict[str, Path] = {}
    for src in sources:
        lacking = [f for f in RUN_FILES if not (src / f).is_file()]
        if lacking:
            raise NcltError(
                f"{src}: {', '.join(lacking)} missing (a finished nclt run has "
                "all of results.json, metrics.csv, config.yaml)"
            )
        res = read_results(src)
        if res.get("dataset") != DATASET:
            raise NcltError(f"{src}: a {res.get('dataset')} run; results/ holds CIFAR-10-LT")
        if res.get("imbalance") is None or float(res["imbalance"]) != float(imbalance):
            raise NcltError(
                f"{src}: trained at imbalance {res.get('imbalance')}, not {imbalance:g}"
            )
        if want["method"] and res.get("method") != want["method"]:
            hint = ""
            if row in STAGE2_ROWS:
                hint = f" (the second stage is in RUN_DIR/stage2_{STAGE2_ROWS[row][1]})"
            raise NcltError(
                f"{src} is a {res.get('method')} run; row {row} needs a {want['method']} run{hint}"
            )
        seed = str(res.get("seed"))
        if seed in incoming:
            raise NcltError(f"{incoming[seed]} and {src} are both seed {seed}")
        incoming[seed] = src

    dest = row_dir(results, row, imbalance)
    top_seed, seed_dirs = _collected(dest)
    existing = seed_dirs | ({top_seed} if top_seed is not None else set())
    clash = sorted(set(incoming) & existing)
    if clash and not force:
        raise NcltError(f"{dest} already holds seed {', '.join(clash)}; pass --force to replace it")
    seeds_after = existing | set(incoming)
    # one run and no seed folder: the row folder itself holds it
    flat = len(seeds_after) == 1 and not seed_dirs
    if not flat and top_seed is not None:
        if top_seed in incoming:  # replaced by the new run below (force)
            for f in RUN_FILES:
                (dest / f).unlink(missing_ok=True)
        else:  # the single run so far moves into its seed folder
            target = dest / f"seed{top_seed}"
            target.mkdir(parents=True, exist_ok=True)
            for f in RUN_FILES:
                if (dest / f).is_file():
                    shutil.move(str(dest / f), str(target / f))
    written = []
    for seed, src in incoming.items():
        target = dest if flat else dest / f"seed{seed}"
        target.mkdir(parents=True, exist_ok=True)
        for f in RUN_FILES:
            shutil.copyfile(src / f, target / f)
        written.append(target)
    return written
