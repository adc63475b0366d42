"""``nclt reproduce``: the papers' CIFAR-10-LT numbers next to ours, regenerated from results/.

The published numbers live in :mod:`nclt.reproduce.published` (``PUBLISHED``, one entry per paper,
row and imbalance factor, with the table it comes from). Our numbers are the runs under
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

The package, one job per module: ``published`` (the papers' numbers), ``rows`` (which rows
exist, their protocols, folders and commands), ``measure`` (our runs of each row, checked),
``offsets`` (the JPEG offset), ``nc`` (the neural-collapse sections), ``tables`` (the report),
``figures``, ``markdown`` (cells, tables, the doc writer) and ``collect`` (``--collect``).
"""

from nclt.reproduce.collect import collect, collected_seeds, read_results
from nclt.reproduce.figures import (
    figures_block,
    nc_accuracy_figures,
    paper_figures,
    per_class_figures,
)
from nclt.reproduce.markdown import (
    MARK_END,
    MARK_START,
    SUMMARY_END,
    SUMMARY_START,
    check_doc,
    write_markdown,
)
from nclt.reproduce.measure import Measured, measure
from nclt.reproduce.nc import (
    NC_COLUMNS,
    NC_CORR_MIN_ROWS,
    NCCorrelation,
    nc_accuracy_section,
    nc_correlations,
    nc_points,
    nc_section,
    spearman,
)
from nclt.reproduce.offsets import TOLERANCE, Offset, jpeg_offsets
from nclt.reproduce.published import (
    CE_REFERENCE,
    CE_ROW,
    PAPERS,
    PUBLISHED,
    Paper,
    Published,
    paper_key,
    published,
)
from nclt.reproduce.rows import (
    BRANCH_ROWS,
    DATASET,
    DISA_FIG8_LAMBDA,
    IF_ORDER,
    NON_PROTOCOL_KEYS,
    RUN_FILES,
    STAGE2_ROWS,
    commands,
    configs_dir,
    expected_run,
    if_folder,
    if_rank,
    known_rows,
    protocol_differences,
    row_dir,
    row_overrides,
    row_protocol,
    row_runs,
    train_command,
)
from nclt.reproduce.tables import HEADER, Line, Report, build_report, summary_rank

__all__ = [
    "BRANCH_ROWS",
    "CE_REFERENCE",
    "CE_ROW",
    "DATASET",
    "DISA_FIG8_LAMBDA",
    "HEADER",
    "IF_ORDER",
    "MARK_END",
    "MARK_START",
    "NC_COLUMNS",
    "NC_CORR_MIN_ROWS",
    "NON_PROTOCOL_KEYS",
    "PAPERS",
    "PUBLISHED",
    "RUN_FILES",
    "STAGE2_ROWS",
    "SUMMARY_END",
    "SUMMARY_START",
    "TOLERANCE",
    "Line",
    "Measured",
    "NCCorrelation",
    "Offset",
    "Paper",
    "Published",
    "Report",
    "build_report",
    "check_doc",
    "collect",
    "collected_seeds",
    "commands",
    "configs_dir",
    "expected_run",
    "figures_block",
    "if_folder",
    "if_rank",
    "jpeg_offsets",
    "known_rows",
    "measure",
    "nc_accuracy_figures",
    "nc_accuracy_section",
    "nc_correlations",
    "nc_points",
    "nc_section",
    "paper_figures",
    "paper_key",
    "per_class_figures",
    "protocol_differences",
    "published",
    "read_results",
    "row_dir",
    "row_overrides",
    "row_protocol",
    "row_runs",
    "spearman",
    "summary_rank",
    "train_command",
    "write_markdown",
]
