"""What a report needs from a checkpoint, gathered in one pass over the training set.

:func:`collect` rebuilds the run a checkpoint came from (``nclt.runner.build_run``), loads its
weights, streams the un-augmented training set once through the network (``engine.predict``)
and the test set once, and returns a :class:`ReportData`: class means, classifier, NC metrics,
test accuracy and confusion, a seeded subsample of training features (t-SNE, transport plans),
the ETF the run aligns with, and the per-epoch rows of ``metrics.csv``. Nothing here draws.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from nclt.errors import CheckpointError, NcltError

#: NC options recorded with every number (see docs/METRICS.md).
DEFAULT_NC_OPTIONS = {"global_mean": "class", "within": "sample", "center_w": True}


@dataclass
class ReportData:
    """Everything the figures and the HTML page read (numpy arrays, float64 unless said)."""

    run_dir: Path  # folder of the checkpoint (metrics.csv, results.json live there)
    checkpoint: Path
    epoch: int  # 1-based epoch of the checkpoint
    config: dict[str, Any]
    method: str
    dataset: str
    imbalance: float
    seed: int
    class_names: list[str]
    class_counts: np.ndarray  # (K,) training images per class
    groups: dict[str, list[int]]  # many / medium / few -> class indices
    group_rule: str
    feature_dim: int
    class_means: np.ndarray  # (K, D) raw class means of the training features (NaN if absent)
    global_mean: np.ndarray  # (D,) mu_G under nc_options["global_mean"]
    head_weight: np.ndarray  # (K, D) classifier rows (raw)
    nc: dict[str, Any]  # collapse_metrics_from_loader output (training features) + nc4
    nc_options: dict[str, Any]
    test: dict[str, Any]  # LongTailAccuracy.compute() on the test set
    best: dict[str, Any] | None  # best epoch's accuracies (checkpoint / results.json)
    sample_features: np.ndarray  # (M, D) float32 seeded subsample of training features
    sample_labels: np.ndarray  # (M,) int
    sample_seed: int
    num_train: int
    etf: np.ndarray | None  # (K, D) ETF rows the run aligns with, None when D < K - 1
    etf_source: str  # where the ETF came from, in words
    ot_epsilon: float
    ot_iterations: int
    batch_size: int
    history: list[dict[str, float | None]] = field(default_factory=list)  # metrics.csv rows
    results: dict[str, Any] | None = None  # results.json of the run folder, if present

    @property
    def num_classes(self) -> int:
        return len(self.class_counts)

    @property
    def order(self) -> np.ndarray:
        """Class indices by decreasing training count (ties: class index)."""
        return np.lexsort((np.arange(self.num_classes), -self.class_counts))

    def centered_means(self) -> np.ndarray:
        """(K, D) mu_k - mu_G (NaN rows for absent classes)."""
        return self.class_means - self.global_mean[None, :]

    def classifier_vectors(self) -> np.ndarray:
        """(K, D) classifier rows, centered by their mean when ``center_w`` (AllNC Eq. 7)."""
        w = self.head_weight
        return w - w.mean(axis=0, keepdims=True) if self.nc_options["center_w"] else w


def resolve_checkpoint(path: str | Path, which: str = "last") -> Path:
    """A run folder -> its ``<which>.pt``; a file is returned as is."""
    p = Path(path)
    if p.is_dir():
        ckpt_path = p / f"{which}.pt"
        if not ckpt_path.is_file():
            have = sorted(x.name for x in p.glob("*.pt"))
            raise CheckpointError(
                f"{p} has no {which}.pt"
                + (
                    f" (it has {', '.join(have)})"
                    if have
                    else " (no checkpoint at all: is it a run folder?)"
                )
            )
        return ckpt_path
    return p


def read_metrics_csv(path: Path) -> list[dict[str, float | None]]:
    """Rows of a run's metrics.csv as floats (empty cells and text -> None); [] if absent."""
    if not path.is_file():
        return []
    rows = []
    with path.open(newline="") as f:
        for raw in csv.DictReader(f):
            row: dict[str, float | None] = {}
            for k, v in raw.items():
                try:
                    x = float(v) if v not in (None, "") else None
                except ValueError:
                    x = None
                row[k] = x if x is None or math.isfinite(x) else None
            rows.append(row)
    return rows


def _subsample(n: int, max_points: int, seed: int) -> np.ndarray:
    """Sorted indices of a seeded uniform subsample of ``range(n)`` (all when n <= max)."""
    if n <= max_points:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, size=max_points, replace=False))


class _Tee:
    """Passes (features, logits, labels) batches through, keeping class sums and a subsample."""

    def __init__(
        self, batches: Iterator[tuple[Tensor, Tensor, Tensor]], num_classes: int, keep: np.ndarray
    ) -> None:
        self.batches, self.k, self.keep = batches, num_classes, keep
        self.sums: Tensor | None = None
        self.counts = torch.zeros(num_classes, dtype=torch.float64)
        self.kept_f: list[Tensor] = []
        self.kept_y: list[Tensor] = []
        self.seen = 0

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor, Tensor]]:
        for feats, logits, labels in self.batches:
            f64 = feats.double()
            if self.sums is None:
                self.sums = torch.zeros(self.k, feats.shape[1], dtype=torch.float64)
            self.sums.index_add_(0, labels.long(), f64)
            self.counts += torch.bincount(labels.long(), minlength=self.k).double()
            lo, hi = self.seen, self.seen + len(labels)
            a, b = np.searchsorted(self.keep, [lo, hi])
            if b > a:
                idx = torch.as_tensor(self.keep[a:b] - lo)
                self.kept_f.append(feats[idx].float())
                self.kept_y.append(labels[idx].long())
            self.seen = hi
            yield feats, logits, labels


def _find_etf(
    run: Any, dim: int, num_classes: int, ot_epsilon: float | None
) -> tuple[np.ndarray | None, str, float, int]:
    """The ETF the run aligns its features with, and the transport settings to use."""
    from nclt.losses.geometry import DisALoss

    disa = next((m for m in run.method.objective.modules() if isinstance(m, DisALoss)), None)
    head_etf = getattr(run.model.head, "etf", None)
    eps = ot_epsilon
    iters = disa.iterations if disa is not None else 100
    if disa is not None and eps is None:
        eps = disa.epsilon
    if eps is None:
        eps = 0.1
    if dim < num_classes - 1:
        return (
            None,
            (
                f"no simplex ETF exists: the feature dimension {dim} is below K - 1 = "
                f"{num_classes - 1}"
            ),
            eps,
            iters,
        )
    if disa is not None and disa.etf is not None:
        etf, src = disa.etf, "the run's DisA loss (its own fixed ETF)"
    elif isinstance(head_etf, Tensor):
        etf, src = head_etf, "the run's fixed-ETF classifier head"
    else:
        from nclt.geometry import simplex_etf

        etf = simplex_etf(dim, num_classes, seed=0).T
        src = (
            "nclt.geometry.simplex_etf(D, K, seed=0): this run has no ETF of its own, so "
            "the ETF is unrelated to its features and no diagonal is expected"
        )
    return etf.detach().double().cpu().numpy(), src, float(eps), int(iters)


def collect(
    path: str | Path,
    which: str = "last",
    data_root: str | None = None,
    device: str | None = None,
    max_points: int = 2000,
    seed: int = 0,
    ot_epsilon: float | None = None,
    nc_options: dict[str, Any] | None = None,
) -> ReportData:
    """Rebuild the run of a checkpoint (or run folder) and gather what the report draws.

    Args:
        path: a run folder (its ``<which>.pt`` is used) or a checkpoint file.
        which: ``"last"`` or ``"best"`` when ``path`` is a folder.
        data_root: overrides the checkpoint's ``data.root``.
        device: overrides the checkpoint's ``device`` (``"cpu"``, ``"cuda"``, ...).
        max_points: size of the seeded subsample of training features (t-SNE, transport).
        seed: seed of that subsample.
        ot_epsilon: entropic regularization of the transport plans; None: the run's DisA
            epsilon, else 0.1 (at DisA's epsilon = 1 the plan is nearly uniform, ERRATA).
        nc_options: ``global_mean``, ``within``, ``center_w`` (defaults: DEFAULT_NC_OPTIONS).
    """
    from nclt.config import to_dict
    from nclt.engine import Precision, evaluate, predict
    from nclt.metrics.accuracy import LongTailAccuracy, class_groups
    from nclt.metrics.collapse import collapse_metrics_from_loader
    from nclt.runner import load_run, make_loader

    opts = {**DEFAULT_NC_OPTIONS, **(nc_options or {})}
    ckpt_path = resolve_checkpoint(path, which)
    run, state = load_run(ckpt_path, data_root, device)
    cfg = run.cfg
    precision = Precision.of(cfg.precision, run.device)
    k = int(run.train_set.num_classes)
    counts = run.class_counts

    metric = LongTailAccuracy(k, counts, cfg.data.group_rule)
    test_loader = make_loader(run.test_set, cfg, False, None, torch.Generator(), run.device)
    test = evaluate(run.model, test_loader, metric, run.device, precision, cfg.channels_last)

    train_loader = make_loader(run.train_eval_set, cfg, False, None, torch.Generator(), run.device)
    n_train = len(run.train_eval_set)
    keep = _subsample(n_train, max_points, seed)
    tee = _Tee(predict(run.model, train_loader, run.device, precision, cfg.channels_last), k, keep)
    head_weight = run.model.head.weight.detach().float().cpu()
    nc = collapse_metrics_from_loader(
        iter(tee),
        num_classes=k,
        head_weight=head_weight,
        class_counts=counts,
        group_rule=cfg.data.group_rule,
        **opts,
    )
    if tee.sums is None:
        raise NcltError("the training set is empty: nothing to report")
    present = tee.counts > 0
    means = torch.full_like(tee.sums, float("nan"))
    means[present] = tee.sums[present] / tee.counts[present, None]
    if opts["global_mean"] == "class":
        mu_g = means[present].mean(0)
    else:
        mu_g = tee.sums.sum(0) / tee.counts.sum()
    dim = int(tee.sums.shape[1])
    etf, etf_src, eps, iters = _find_etf(run, dim, k, ot_epsilon)

    run_dir = ckpt_path.parent
    results = None
    if (run_dir / "results.json").is_file():
        try:
            results = json.loads((run_dir / "results.json").read_text())
        except (OSError, ValueError):
            results = None
    best = state.get("best") if isinstance(state.get("best"), dict) else None
    if best is not None and best.get("epoch") is None:
        best = None
    groups = class_groups(counts, cfg.data.group_rule)
    return ReportData(
        run_dir=run_dir,
        checkpoint=ckpt_path,
        epoch=int(state.get("epoch", -1)) + 1,
        config=to_dict(cfg),
        method=run.method.name,
        dataset=cfg.data.dataset,
        imbalance=float(cfg.data.imbalance),
        seed=int(cfg.seed),
        class_names=[str(c) for c in getattr(run.train_set, "classes", range(k))],
        class_counts=counts.numpy().astype(np.int64),
        groups={g: idx.tolist() for g, idx in groups.items()},
        group_rule=cfg.data.group_rule,
        feature_dim=dim,
        class_means=means.numpy(),
        global_mean=mu_g.numpy(),
        head_weight=head_weight.double().numpy(),
        nc=nc,
        nc_options=opts,
        test=test,
        best=best,
        sample_features=torch.cat(tee.kept_f).numpy() if tee.kept_f else np.zeros((0, dim)),
        sample_labels=torch.cat(tee.kept_y).numpy() if tee.kept_y else np.zeros(0, int),
        sample_seed=seed,
        num_train=n_train,
        etf=etf,
        etf_source=etf_src,
        ot_epsilon=eps,
        ot_iterations=iters,
        batch_size=int(cfg.data.batch_size),
        history=read_metrics_csv(run_dir / "metrics.csv"),
        results=results,
    )
