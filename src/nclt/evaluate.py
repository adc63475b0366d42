"""``nclt eval CHECKPOINT``: accuracy and neural-collapse metrics of a saved model."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from nclt.engine import Precision
from nclt.runner import final_metrics, load_run


def evaluate_checkpoint(
    path: str | Path, data_root: str | None = None, device: str | None = None
) -> dict[str, Any]:
    """Rebuild the run a checkpoint came from, load its weights, and measure it (on
    ``device`` when given, else on the checkpoint's own)."""
    run, state = load_run(path, data_root, device)
    cfg = run.cfg
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


#: Where ``evaluate_noise`` adds its noise, in words (printed and written with the results).
NOISE_SPACE = "pixels in [0, 1] before normalization, unclamped"


def evaluate_noise(
    path: str | Path,
    sigmas: list[float],
    data_root: str | None = None,
    seed: int = 0,
    device: str | None = None,
) -> dict[str, Any]:
    """Test accuracy under additive Gaussian input noise (INC Table 6).

    INC does not say where its noise goes (ERRATA); nclt adds ``sigma * N(0, 1)`` to the
    pixels scaled to [0, 1] (uint8 / 255), before the network's per-channel normalization,
    and does not clamp the result (so sigma is in units of the full pixel range, whatever the
    dataset's mean and std). The noise of each sigma comes from a private generator seeded
    with ``seed`` and drawn batch by batch in the fixed test order, so a result is
    reproducible; sigma = 0 gives exactly the noiseless accuracy.

    Args:
        path: checkpoint file.
        sigmas: noise standard deviations (pixel units in [0, 1]).
        data_root: overrides the checkpoint's ``data.root``.
        seed: noise seed.
        device: overrides the checkpoint's device.

    Returns:
        ``checkpoint``, ``epoch``, ``method``, ``dataset``, ``imbalance``, ``seed``,
        ``noise`` ({"space", "seed", "clamped"}) and ``results``: one dict per sigma with
        ``sigma``, ``top1``, ``many``, ``medium``, ``few`` and ``per_class``.
    """
    import torch

    from nclt.engine import evaluate
    from nclt.errors import ConfigError
    from nclt.metrics.accuracy import LongTailAccuracy
    from nclt.runner import make_loader

    bad = [s for s in sigmas if not s >= 0]
    if bad or not sigmas:
        raise ConfigError(f"--gaussian-noise: give sigmas >= 0, e.g. 0.1,0.2 (got {sigmas})")
    run, state = load_run(path, data_root, device)
    cfg = run.cfg
    precision = Precision.of(cfg.precision, run.device)
    loader = make_loader(run.test_set, cfg, False, None, torch.Generator(), run.device)
    metric = LongTailAccuracy(run.train_set.num_classes, run.class_counts, cfg.data.group_rule)

    def noisy(sigma: float, gen: torch.Generator) -> Any:
        for x, labels in loader:
            if isinstance(x, list | tuple):
                x = x[0]
            if sigma > 0:
                xf = x.float() / 255.0 if x.dtype == torch.uint8 else x.float()
                x = xf + sigma * torch.randn(xf.shape, generator=gen, dtype=xf.dtype)
            yield x, labels

    results = []
    for sigma in sigmas:
        gen = torch.Generator().manual_seed(seed)
        acc = evaluate(
            run.model, noisy(float(sigma), gen), metric, run.device, precision, cfg.channels_last
        )
        results.append(
            {
                "sigma": float(sigma),
                **{k: acc[k] for k in ("top1", "many", "medium", "few", "per_class")},
            }
        )
    return {
        "checkpoint": str(path),
        "epoch": int(state["epoch"]) + 1,
        "method": run.method.name,
        "dataset": cfg.data.dataset,
        "imbalance": cfg.data.imbalance,
        "seed": cfg.seed,
        "noise": {"space": NOISE_SPACE, "seed": seed, "clamped": False},
        "results": results,
    }


def format_noise(res: dict[str, Any]) -> str:
    """The table ``nclt eval --gaussian-noise`` prints."""

    def f(v: Any) -> str:
        return "-" if v is None else f"{v:.2f}"

    lines = [
        f"\n{res['method']} on {res['dataset']} (imbalance {res['imbalance']:g}, seed "
        f"{res['seed']}), epoch {res['epoch']}: accuracy under Gaussian noise",
        f"  noise added to {res['noise']['space']}; noise seed {res['noise']['seed']}",
        f"  {'sigma':>6} {'top-1':>7} {'many':>7} {'medium':>7} {'few':>7}",
    ]
    for r in res["results"]:
        lines.append(
            f"  {r['sigma']:>6g} {f(r['top1']):>7} {f(r['many']):>7} "
            f"{f(r['medium']):>7} {f(r['few']):>7}"
        )
    return "\n".join(lines)
