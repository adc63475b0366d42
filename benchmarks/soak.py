"""Soak: resident memory of a long digits-LT run, sampled after every epoch.

Usage::

    python benchmarks/soak.py                       # 50 epochs of ce on digits-LT
    python benchmarks/soak.py --epochs 50 --method ldam-drw --json soak.json

Runs ``nclt.runner.train`` in this process and reads ``VmRSS`` from ``/proc/self/status``
(Linux) right after each epoch's ``last.pt`` is written, that is after the epoch's training,
evaluation, metrics.csv / TensorBoard rows and checkpoint. Prints the curve and a summary:
RSS after epoch 1, after epoch 5, after the last epoch, and the largest growth after epoch 5
(max RSS from epoch 5 on minus RSS at epoch 5), plus the process's peak (``VmHWM``). Memory
that keeps growing epoch after epoch (a list that grows with the steps, tensors kept with
their graphs, leaked DataLoader workers) shows as a growth that does not level off. Not a
test: run it by hand; docs/ROBUSTNESS.md records a run.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import nclt.checkpoint as ckpt
import nclt.runner as runner
from nclt.cli import build_parser, config_from_args


def proc_status_kib(field: str) -> int:
    """A ``kB`` field of /proc/self/status (VmRSS, VmHWM), in KiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status (Linux only)")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--epochs", type=int, default=50)
    p.add_argument("--method", default="ce")
    p.add_argument("--out", help="run folder (default: a temporary one, removed)")
    p.add_argument("--json", help="also write the samples and summary here")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    a = p.parse_args()

    samples: list[tuple[int, int, float]] = []  # (epoch, RSS KiB, seconds since start)
    start_rss = proc_status_kib("VmRSS")
    t0 = time.perf_counter()
    real_save = ckpt.save_atomic

    def save_and_sample(state, path):
        real_save(state, path)
        if Path(path).name == "last.pt":
            samples.append(
                (int(state["epoch"]) + 1, proc_status_kib("VmRSS"), time.perf_counter() - t0)
            )

    ckpt.save_atomic = save_and_sample  # runner calls ckpt.save_atomic through the module
    with tempfile.TemporaryDirectory() as tmp:
        out = a.out or str(Path(tmp) / "run")
        argv = [
            "train",
            "--epochs",
            str(a.epochs),
            "--method",
            a.method,
            "--out",
            out,
            "--set",
            "progress=false",
        ]
        for item in a.set:
            argv += ["--set", item]
        res = runner.train(config_from_args(build_parser().parse_args(argv)))
    end_rss = proc_status_kib("VmRSS")
    hwm = proc_status_kib("VmHWM")

    print(f"\n{'epoch':>5} {'RSS MiB':>9} {'delta':>7} {'s':>6}")
    for epoch, rss, sec in samples:
        print(f"{epoch:>5} {rss / 1024:>9.1f} {(rss - samples[0][1]) / 1024:>+7.1f} {sec:>6.1f}")
    rss = {e: r for e, r, _ in samples}
    at5 = rss.get(5, samples[min(4, len(samples) - 1)][1])
    after5 = [r for e, r, _ in samples if e >= 5] or [at5]
    summary = {
        "epochs": a.epochs,
        "method": a.method,
        "rss_before_mib": start_rss / 1024,
        "rss_epoch1_mib": samples[0][1] / 1024,
        "rss_epoch5_mib": at5 / 1024,
        "rss_last_mib": samples[-1][1] / 1024,
        "max_growth_after_epoch5_mib": (max(after5) - at5) / 1024,
        "last_minus_epoch5_mib": (samples[-1][1] - at5) / 1024,
        "rss_after_final_metrics_mib": end_rss / 1024,
        "peak_vmhwm_mib": hwm / 1024,
        "seconds": time.perf_counter() - t0,
        "top1": res["top1"],
    }
    print(
        "\n"
        + "\n".join(
            f"{k}: {v:.1f}" if isinstance(v, float) else f"{k}: {v}" for k, v in summary.items()
        )
    )
    if a.json:
        Path(a.json).write_text(json.dumps({"summary": summary, "samples": samples}, indent=1))


if __name__ == "__main__":
    main()
