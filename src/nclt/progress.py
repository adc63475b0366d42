"""What a run shows while it trains: the per-epoch log line (with the time left, for the logs of
background runs), the tqdm bar on a terminal, and the TensorBoard scalars."""

from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import Any

from nclt import dist
from nclt.config import TrainConfig


def tensorboard_writer(out: Path, purge_step: int | None) -> Any:
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # pragma: no cover - tensorboard is a dependency
        return None
    return SummaryWriter(log_dir=str(out / "tb"), purge_step=purge_step)


def tb_log(writer: Any, row: dict[str, Any], step: int) -> None:
    if writer is None:
        return
    for k, v in row.items():
        if k != "epoch" and isinstance(v, int | float) and v is not None and math.isfinite(v):
            writer.add_scalar(k, v, step)
    writer.flush()


def progress_bar(cfg: TrainConfig, epoch: int, steps: int, history: list[dict[str, Any]]) -> Any:
    if not cfg.progress or not dist.is_main() or not sys.stderr.isatty():
        return None  # logs and CI get one line per epoch instead of a redrawn bar
    from tqdm.auto import tqdm

    bar = tqdm(
        total=steps,
        desc=f"epoch {epoch + 1}/{cfg.epochs}",
        leave=False,
        dynamic_ncols=True,
        mininterval=1.0,
    )
    left = time_left(history, cfg.epochs - epoch, "seconds")
    if left is not None:
        bar.set_postfix_str(f"run left ~{hms(left)}")
    return bar


def time_left(history: list[dict[str, Any]], epochs_left: int, key: str) -> float | None:
    """Seconds the run has left: the mean ``key`` time of the last five epochs of ``history``
    times ``epochs_left``; None before any epoch has that time."""
    recent = [float(h[key]) for h in history[-5:] if key in h]
    return epochs_left * sum(recent) / len(recent) if recent else None


def bar_update(bar: Any, info: dict[str, float]) -> None:
    bar.update(1)
    bar.set_postfix(loss=f"{info['loss']:.3f}", img_s=f"{info['img_s']:.0f}", refresh=False)


def hms(seconds: float) -> str:
    m, s = divmod(int(seconds), 60)
    h, m = divmod(m, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s"


def epoch_line(
    row: dict[str, Any], epochs: int, history: list[dict[str, Any]] | None = None
) -> str:
    """The per-epoch log line; with ``history``, also the run's time left (mean wall time of
    the last five epochs, tests included, times the epochs left), for logs of background runs
    that have no progress bar."""
    test = f" test {row['test_top1']:.2f}" if "test_top1" in row else ""
    line = (
        f"epoch {row['epoch']}/{epochs} loss {row['loss']:.4f} train {row['train_top1']:.2f}"
        f"{test} lr {row['lr']:.4g} {row['images_per_second']:.0f} img/s"
    )
    left = time_left(history or [], epochs - row["epoch"], "wall_seconds")
    if left is not None and row["epoch"] < epochs:
        line += f" left ~{hms(left)}"
    return line
