"""``nclt eval CHECKPOINT``: accuracy and neural-collapse metrics of a saved model."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from nclt import checkpoint as ckpt
from nclt.config import TrainConfig, from_dict
from nclt.engine import Precision
from nclt.runner import build_run, check_compatible, final_metrics


def evaluate_checkpoint(path: str | Path, data_root: str | None = None) -> dict[str, Any]:
    """Rebuild the run a checkpoint came from, load its weights, and measure it."""
    state = ckpt.load(path)
    cfg = from_dict(TrainConfig, state["config"])
    if data_root:
        cfg.data.root = data_root
    run = build_run(cfg)
    check_compatible(state, run)
    run.model.load_state_dict(state["model"])
    test, nc = final_metrics(run, Precision.of(cfg.precision, run.device))
    return {
        "checkpoint": str(path),
        "epoch": int(state["epoch"]) + 1,
        "method": run.method.name,
        "dataset": cfg.data.dataset,
        "imbalance": cfg.data.imbalance,
        "seed": cfg.seed,
        **{k: test[k] for k in ("top1", "many", "medium", "few", "per_class")},
        "confusion": test.get("confusion"),
        "nc": nc,
    }
