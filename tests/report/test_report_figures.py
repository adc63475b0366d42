"""``nclt report``: every figure is a readable PNG linked from report.html; notes, not errors."""

from __future__ import annotations

import csv
import dataclasses
import math
import re

import numpy as np
import pytest
import torch
from matplotlib.image import imread

from nclt.report import figures as F
from nclt.report.html import curve_figures, render_html, transport_matrices

# Figures every run gets (the per-epoch NC curves need nc_every logging, tested below).
ALWAYS = (
    "angles_means",
    "angles_classifier",
    "accuracy_curves",
    "norms",
    "per_class_accuracy",
    "confusion",
    "arb_similarity",
    "align_matrix",
    "transport_plan",
    "tsne",
)


def _check_png(path):
    assert path.is_file() and path.stat().st_size > 1000, path
    img = imread(path)
    assert img.ndim == 3 and img.shape[0] > 100 and img.shape[1] > 100
    assert np.ptp(img[..., :3]) > 0  # not a blank canvas


def test_report_has_every_figure_and_the_page_links_them(report_dir):
    page = (report_dir / "report.html").read_text()
    for name in ALWAYS:
        _check_png(report_dir / f"{name}.png")
        assert f'src="{name}.png"' in page, name
    # every image the page links exists (relative links only: the folder can be moved)
    for src in re.findall(r'<img src="([^"]+)"', page):
        assert "/" not in src and (report_dir / src).is_file(), src
    # summary: accuracy rows and the NC options are stated
    for text in (
        "top-1",
        "many",
        "medium",
        "few",
        "global_mean = class",
        "within = sample",
        "center_w = True",
        "self_duality",
        "arccos(-1/(K-1))",
    ):
        assert text in page, text
    # ARB Fig. 5 was not logged for this run (grad_probe off): a note, not a figure
    assert "gradient_components" in page and "grad_probe=true" in page
    # the 2-epoch run logged no per-epoch NC columns: said so in the page
    assert 'src="nc_curves.png"' not in page and "nc_every" in page


def _fake_history(with_nc: bool) -> list[dict]:
    rows = []
    for e in range(1, 6):
        row = {
            "epoch": float(e),
            "test_top1": 50.0 + e,
            "many": 80.0,
            "medium": 50.0,
            "few": 10.0 + e,
            "train_top1": 60.0 + e,
        }
        if with_nc:
            row.update(
                {
                    "nc/nc1": 2.0 / e,
                    "nc/equiangular_means": 0.3 / e,
                    "nc/equiangular_w": 0.2 / e,
                    "nc/self_duality": 0.9 / e,
                    "nc/trace_sw": 1.0 / e,
                    "nc/trace_sb": 2.0,
                    "nc/trace_st": 2.0 + 1.0 / e,
                }
            )
        rows.append(row)
    return rows


def test_per_epoch_curves_with_and_without_nc_columns(report_data, tmp_path):
    from nclt.report.data import read_metrics_csv

    # written as metrics.csv and read back the way the report reads it
    hist = _fake_history(True)
    del hist[1]["nc/nc1"]  # an epoch where NC was not measured (nc_every > 1): a gap, no error
    path = tmp_path / "metrics.csv"
    cols = list(_fake_history(True)[0])
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=cols)
        w.writeheader()
        w.writerows(hist)
    with_nc = dataclasses.replace(report_data, history=read_metrics_csv(path))
    entries = {e.key: e for e in curve_figures(with_nc, tmp_path / "a")}
    for key in ("nc_curves", "covariance_traces", "accuracy_curves"):
        assert entries[key].file == f"{key}.png"
        _check_png(tmp_path / "a" / entries[key].file)
    page = render_html(with_nc, list(entries.values()))
    assert 'src="nc_curves.png"' in page and 'src="covariance_traces.png"' in page

    without = dataclasses.replace(report_data, history=_fake_history(False))
    entries = {e.key: e for e in curve_figures(without, tmp_path / "b")}
    for key in ("nc_curves", "covariance_traces"):
        assert entries[key].file is None and "nc_every" in entries[key].note
        assert not (tmp_path / "b" / f"{key}.png").exists()
    page = render_html(without, list(entries.values()))
    assert 'class="note"' in page and "nc/trace_sw" in page

    # ARB Fig. 5 appears once grad_w/<class> columns are logged
    from nclt.report.html import gradient_figure

    assert gradient_figure(without, tmp_path / "b").file is None
    grads = [{**r, "grad_w/0": 1.0 / r["epoch"], "grad_w/3": 0.5} for r in _fake_history(False)]
    e = gradient_figure(dataclasses.replace(report_data, history=grads), tmp_path / "b")
    assert e.file == "gradient_components.png" and e.note is None
    _check_png(tmp_path / "b" / e.file)

    none = dataclasses.replace(report_data, history=[])
    entries = curve_figures(none, tmp_path / "c")
    assert all(e.file is None and "No metrics.csv" in e.note for e in entries)


def test_report_numbers_match_the_metrics(report_data):
    d = report_data
    k = d.num_classes
    # classes ordered by decreasing training count
    assert list(d.class_counts[d.order]) == sorted(d.class_counts, reverse=True)
    # the centered means the figures draw are those the NC metrics measured
    np.testing.assert_allclose(
        np.linalg.norm(d.centered_means(), axis=1), d.nc["mean_norms"], rtol=1e-6
    )
    np.testing.assert_allclose(
        np.linalg.norm(d.classifier_vectors(), axis=1), d.nc["w_norms"], rtol=1e-6
    )
    assert d.test["top1"] == pytest.approx(d.results["top1"])
    assert len(d.sample_labels) == d.num_train == int(d.class_counts.sum())  # < 2000: all kept
    # DisA align matrix: each batch plan has mass 1 and columns 1/K, so A does too
    a, plan, labels, nb = transport_matrices(d)
    assert nb >= 1 and a.shape == (k, k)
    assert a.sum() == pytest.approx(1.0, abs=1e-6)
    np.testing.assert_allclose(a.sum(0), 1.0 / k, atol=1e-3)
    assert plan.shape == (len(labels), k) and plan.sum() == pytest.approx(1.0, abs=1e-6)


def test_angle_and_arb_matrices_on_a_simplex_etf():
    from nclt.geometry import simplex_etf

    k = 7
    etf = simplex_etf(12, k, seed=3, dtype=torch.float64).T.numpy()  # (K, D) rows
    ang = F.pairwise_angles_deg(etf)
    off = ang[~np.eye(k, dtype=bool)]
    np.testing.assert_allclose(off, math.degrees(math.acos(-1 / (k - 1))), atol=1e-6)
    assert np.isnan(np.diag(ang)).all()
    m = F.arb_similarity(3.0 * etf)  # ARB Eq. 21: 1/(K-1) off the diagonal, any scale
    np.testing.assert_allclose(m[~np.eye(k, dtype=bool)], 1 / (k - 1), atol=1e-9)
    assert (np.diag(m) == 0).all()
    # an absent class (NaN mean) gives a blank row, not an error
    etf[2] = np.nan
    assert np.isnan(F.pairwise_angles_deg(etf)[2]).all()


def test_no_etf_when_the_feature_dim_is_below_k_minus_1(report_data, tmp_path):
    from types import SimpleNamespace

    from nclt.report.data import _find_etf
    from nclt.report.html import transport_figures

    run = SimpleNamespace(
        method=SimpleNamespace(objective=torch.nn.ModuleList()),
        model=SimpleNamespace(head=torch.nn.Linear(5, 10)),
    )
    etf, why, eps, _ = _find_etf(run, 5, 10, None)
    assert etf is None and "below K - 1" in why and eps == 0.1
    data = dataclasses.replace(report_data, etf=None, etf_source=why, history=[])
    entries = {e.key: e for e in transport_figures(data, tmp_path)}
    for key in ("align_matrix", "transport_plan"):
        assert entries[key].file is None and "below K - 1" in entries[key].note
    page = render_html(data, list(entries.values()))
    assert "below K - 1" in page and not (tmp_path / "align_matrix.png").exists()


def test_checkpoint_resolution(digits_run, tmp_path):
    from nclt.errors import CheckpointError
    from nclt.report.data import resolve_checkpoint

    run = digits_run[0]
    assert resolve_checkpoint(run) == run / "last.pt"
    assert resolve_checkpoint(run, "best") == run / "best.pt"
    assert resolve_checkpoint(run / "best.pt", "last") == run / "best.pt"  # a file is a file
    with pytest.raises(CheckpointError, match="no last.pt"):
        resolve_checkpoint(tmp_path)
