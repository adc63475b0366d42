"""ARB Fig. 5's gradient decomposition equals autograd, and the probe logs it."""

import csv

import torch
import torch.nn.functional as F

from nclt.metrics.gradients import class_gradient_components


def test_components_sum_to_the_autograd_gradient():
    torch.manual_seed(0)
    h = torch.randn(12, 5, dtype=torch.float64)
    labels = torch.tensor([0, 0, 0, 0, 0, 1, 1, 1, 2, 2, 3, 0])
    W = torch.randn(4, 5, dtype=torch.float64, requires_grad=True)
    logits = h @ W.T
    logits.retain_grad()
    F.cross_entropy(logits, labels).backward()
    comps = class_gradient_components(logits.grad, h, labels, target_class=3, num_classes=4)
    assert torch.allclose(comps.sum(0), W.grad[3], atol=1e-12)
    # the attraction comes from class 3's own sample only
    p = torch.softmax(logits.detach(), 1)
    assert torch.allclose(comps[3], (p[10, 3] - 1) * h[10] / 12, atol=1e-12)
    assert torch.allclose(comps[2], (p[8, 3] * h[8] + p[9, 3] * h[9]) / 12, atol=1e-12)


def test_probe_logs_one_column_per_class(tmp_path):
    from nclt.cli import build_parser, config_from_args
    from nclt.runner import train

    cfg = config_from_args(
        build_parser().parse_args(
            [
                "train",
                "--epochs",
                "1",
                "--out",
                str(tmp_path / "r"),
                "--set",
                "grad_probe=true",
                "--set",
                "progress=false",
            ]
        )
    )
    train(cfg)
    row = next(csv.DictReader((tmp_path / "r" / "metrics.csv").open()))
    values = [float(row[f"grad_w/{k}"]) for k in range(10)]
    assert all(v > 0 for v in values)
