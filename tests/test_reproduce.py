"""``nclt reproduce``: published numbers, our numbers from a fake results/ tree, --collect."""

from __future__ import annotations

import json
import statistics
from pathlib import Path

import pytest
import yaml

from nclt.cli import main
from nclt.errors import NcltError
from nclt.reproduce import (
    MARK_END,
    MARK_START,
    PUBLISHED,
    RUN_FILES,
    STAGE2_ROWS,
    build_report,
    collect,
    configs_dir,
    per_class_figures,
    published,
    row_dir,
)


def _fake_run(
    path, method, seed, best, last, seconds=3600.0, imbalance=100.0, mixup=0.0, extra=True
):
    """A finished run folder as nclt writes it (checkpoints and tb/ included when extra)."""
    path.mkdir(parents=True, exist_ok=True)
    results = {
        "method": method,
        "dataset": "cifar10",
        "imbalance": imbalance,
        "epochs": 200,
        "seed": seed,
        "top1": last,
        "many": last + 5,
        "medium": last - 20,
        "few": None,
        "best": {
            "epoch": 190,
            "top1": best,
            "many": best + 5,
            "medium": best - 20,
            "few": None,
            "per_class": [best + d for d in (4, 3, 2, 1, 0, 0, -1, -2, -3, -4)],
        },
        "class_counts": [5000, 2997, 1796, 1077, 645, 387, 232, 139, 83, 50],
        "last": {"top1": last, "many": last + 5, "medium": last - 20, "few": None},
        "nc": {"nc1": 0.5},
        "seconds": seconds,
        "wall_seconds": seconds + 60,
        "images_per_second": 1000.0,
    }
    (path / "results.json").write_text(json.dumps(results))
    (path / "metrics.csv").write_text(f"epoch,test_top1\n200,{last}\n")
    config = {
        "method": {"name": method, "args": {}},
        "data": {"dataset": "cifar10", "imbalance": imbalance, "root": "data"},
        "epochs": 200,
        "seed": seed,
        "out": str(path),
        "mixup_alpha": mixup,
        "environment": {"git_commit": f"c{seed}"},
    }
    (path / "config.yaml").write_text(yaml.safe_dump(config))
    if extra:
        (path / "last.pt").write_bytes(b"x")
        (path / "best.pt").write_bytes(b"x")
        (path / "tb").mkdir()
        (path / "tb" / "events.out").write_bytes(b"x")
    return path


@pytest.fixture
def results(tmp_path):
    """2 seeds of ce and 1 run of ldam_drw at IF 100, with made-up numbers."""
    root = tmp_path / "results"
    ce = row_dir(root, "ce", 100)
    _fake_run(ce / "seed0", "ce", 0, best=68.0, last=67.0, seconds=3600, extra=False)
    _fake_run(ce / "seed1", "ce", 1, best=69.0, last=68.0, seconds=4000, extra=False)
    _fake_run(
        row_dir(root, "ldam_drw", 100),
        "ldam-drw",
        0,
        best=74.0,
        last=73.5,
        seconds=5400,
        extra=False,
    )
    return root


def _line(report, paper, row, imbalance):
    return next(
        ln for ln in report.lines[paper] if ln.pub.row == row and ln.pub.imbalance == imbalance
    )


def test_published_numbers_match_errata():
    """ERRATA "Reproduction": CIFAR-10-LT top-1 at IF 100 (50, 10), by our row ids."""
    errata = {
        "ce": (70.4, 74.8, 86.4),
        "ce_drw": (75.1, None, 86.4),
        "ce_drw_mixup": (80.9, 81.8, 88.8),
        "ldam_drw": (77.03, 81.03, 88.16),
        "arb": (83.3, 85.7, 90.2),
        "inc_drw": (81.9,),
        "inc_drw_crt": (82.6,),
        "ce_disa": (74.7, 79.6, 88.3),
        "ce_drw_disa": (82.1, 84.1, 89.8),
        "ldam_drw_disa": (80.4,),
        "inc_drw_disa": (82.3,),
        "inc_drw_disa_crt": (82.8,),
        "etf_dr": (76.5, 81.0, 87.7),
        "etf_dr_disa": (78.5, 81.4, 87.8),
        "bcl": (84.32, 87.24, 91.12),
        "allnc": (88.77, 92.12, 95.22),
        "allnc_pp": (90.12, 92.43, 95.56),
    }
    have = {(p.row, p.imbalance, p.top1) for p in PUBLISHED}
    for row, values in errata.items():
        for imbalance, value in zip((100.0, 50.0, 10.0), values, strict=False):
            if value is not None:
                assert (row, imbalance, value) in have, (row, imbalance, value)
    # CE-DRW without MixUp is INC's 75.1, never DisA's 80.9 (that is ce_drw_mixup)
    assert {p.top1 for p in PUBLISHED if p.row == "ce_drw" and p.imbalance == 100} == {75.1}
    assert all(not p.mixup for p in PUBLISHED if p.row == "ce")
    assert {p.paper for p in PUBLISHED} == {"AllNC", "INC", "DisA", "ARB", "BCL", "LDAM-DRW"}
    assert [p.top1 for p in published("bcl") if p.row == "bcl"] == [84.32, 87.24, 91.12]
    # Cao et al. print IF 100 and 10 only (best epoch); the IF 50 / 200 numbers cited to them
    # by BCL and AllNC come from elsewhere, with no known epoch basis
    assert {(p.imbalance, p.epoch_basis) for p in published("LDAM-DRW")} == {
        (100.0, "best"),
        (10.0, "best"),
    }
    assert {
        (p.paper, p.epoch_basis)
        for p in PUBLISHED
        if p.row == "ldam_drw" and p.imbalance in (50.0, 200.0)
    } == {("AllNC", None), ("BCL", None)}


def test_every_published_row_has_a_config():
    configs = configs_dir()
    if configs is None:
        pytest.skip("no configs/ beside the package")
    for row in {p.row for p in PUBLISHED}:
        assert row in STAGE2_ROWS or (configs / f"{row}.yaml").is_file(), row


def test_table_means_differences_offset_missing(results):
    report = build_report(results)
    # JPEG offset at IF 100: 70.4 - mean(68, 69) of ce; IF 50 has no ce run: IF 100's is used
    off = report.offsets[100.0]
    assert off.value == pytest.approx(1.9) and off.used == pytest.approx(1.9)
    assert report.offsets[50.0].value is None
    assert report.offsets[50.0].used == pytest.approx(1.9)

    ce = _line(report, "INC", "ce", 100.0)
    assert ce.ours == pytest.approx(68.5) and ce.delta == pytest.approx(-1.9)
    cells = ce.cells()
    std = statistics.stdev([68.0, 69.0])
    assert f"68.50 ± {std:.2f}" in cells and f"67.50 ± {std:.2f}" in cells
    assert "-1.90" in cells and "+0.00" in cells and "2" in cells
    assert "1h03m / 1h04m" in cells  # train: mean of 3600 s and 4000 s; wall: 60 s more
    assert "offset reference" in ce.status and not ce.flagged

    # ldam_drw 74.0 (one seed): 3.03 below LDAM-DRW's 77.03 > offset + 1 = 2.9: flagged;
    # 0.9 below ARB's 74.9: not flagged
    for paper, value, flagged in (
        ("LDAM-DRW", 77.03, True),
        ("BCL", 77.03, True),
        ("INC", 77.0, True),
        ("ARB", 74.9, False),
    ):
        ln = _line(report, paper, "ldam_drw", 100.0)
        assert ln.delta == pytest.approx(74.0 - value)
        assert ln.flagged is flagged, paper
        assert ("needs investigation" in ln.status) is flagged
    one = _line(report, "BCL", "ldam_drw", 100.0).cells()
    assert "74.00" in one and "73.50" in one and "1" in one and "1h30m / 1h31m" in one

    missing = report.missing
    assert ("ce", 100.0) not in missing and ("ldam_drw", 100.0) not in missing
    assert {("ce", 50.0), ("bcl", 100.0), ("inc_drw_crt", 100.0), ("allnc", 200.0)} <= set(missing)
    assert len(missing) == len(set(missing))
    text = report.render()
    assert "= +1.90 points" in text and "IF 50: no `ce` run; the IF 100 offset (1.90)" in text
    assert "- `ldam_drw` IF 100 vs INC (Table 3: 77.0): Δ -3.00" in text
    assert "- IF 100 (" in text and "bcl" in text.split("### Missing rows")[1]


def test_wall_time_of_a_run_resumed_from_an_old_checkpoint_is_not_shown(results):
    """A run that knows only part of its wall time (flagged, or older results whose wall time
    is below their training time) shows "-" instead of a misleading figure."""
    seed1 = row_dir(results, "ce", 100) / "seed1" / "results.json"
    data = json.loads(seed1.read_text())
    data["wall_seconds_partial"] = True
    seed1.write_text(json.dumps(data))
    assert "1h03m / -" in _line(build_report(results), "INC", "ce", 100.0).cells()
    data.pop("wall_seconds_partial")
    data["wall_seconds"] = data["seconds"] / 2  # unflagged but impossible: a resumed part only
    seed1.write_text(json.dumps(data))
    assert "1h03m / -" in _line(build_report(results), "INC", "ce", 100.0).cells()


def test_a_row_trained_on_a_gpu_says_so_in_its_time(results):
    """GPU times are not the CPU's: the time cell of a run whose config ran on CUDA (or on
    ``auto`` where its environment names an accelerator) ends with "(GPU)"."""
    cfg_path = row_dir(results, "ldam_drw", 100) / "config.yaml"
    assert "(GPU)" not in _line(build_report(results), "BCL", "ldam_drw", 100.0).cells()[10]
    for device, accelerator in (("cuda", None), ("auto", "NVIDIA H200")):
        cfg = yaml.safe_load(cfg_path.read_text())
        cfg["device"], cfg["environment"]["accelerator"] = device, accelerator
        cfg_path.write_text(yaml.safe_dump(cfg))
        cell = _line(build_report(results), "BCL", "ldam_drw", 100.0).cells()[10]
        assert cell == "1h30m / 1h31m (GPU)", (device, cell)
    cfg["device"] = "cpu"  # an accelerator was there, the run did not use it
    cfg_path.write_text(yaml.safe_dump(cfg))
    assert "(GPU" not in _line(build_report(results), "BCL", "ldam_drw", 100.0).cells()[10]
    # begun on a lent GPU, resumed on the CPU (runner writes earlier_environments)
    cfg["earlier_environments"] = [{"through_epoch": 136, "device": "cuda", "accelerator": "H200"}]
    cfg_path.write_text(yaml.safe_dump(cfg))
    cell = _line(build_report(results), "BCL", "ldam_drw", 100.0).cells()[10]
    assert cell == "1h30m / 1h31m (GPU + CPU)", cell
    cfg["earlier_environments"][0]["device"] = "cpu"  # moved from one CPU machine to another
    cfg_path.write_text(yaml.safe_dump(cfg))
    assert "(GPU" not in _line(build_report(results), "BCL", "ldam_drw", 100.0).cells()[10]


def test_known_basis_wins_over_default(results):
    """--basis last: ce (basis not said) compares the last epoch; LDAM-DRW (best) keeps best."""
    report = build_report(results, basis="last")
    assert report.offsets[100.0].value == pytest.approx(70.4 - 67.5)
    ldam = _line(report, "LDAM-DRW", "ldam_drw", 100.0)
    assert ldam.delta == pytest.approx(74.0 - 77.03) and not ldam.flagged  # 3.03 < 2.9 + 1


def test_no_ce_run_means_offset_zero(tmp_path):
    root = tmp_path / "results"
    _fake_run(row_dir(root, "bcl", 100), "bcl", 0, best=82.0, last=81.0, extra=False)
    report = build_report(root, paper="bcl")
    assert report.offsets[100.0].used == 0.0
    assert _line(report, "BCL", "bcl", 100.0).flagged  # 2.32 below, nothing to excuse it
    assert "not measured yet" in report.render()


def _copy_run(src: Path, dest: Path, **changes) -> None:
    """A copy of a committed run with dotted config keys changed."""
    dest.mkdir(parents=True)
    for f in RUN_FILES:
        (dest / f).write_bytes((src / f).read_bytes())
    config = yaml.safe_load((dest / "config.yaml").read_text())
    for key, value in changes.items():
        *parents, last = key.split(".")
        node = config
        for part in parents:
            node = node[part]
        node[last] = value
    (dest / "config.yaml").write_text(yaml.safe_dump(config))


def test_a_run_trained_off_its_rows_protocol_is_flagged(tmp_path):
    """`nclt reproduce --run allnc --set method.args.allnc.view=...` would collect a variant
    as `allnc`: the table says so. Where and how it ran (device, test schedule) is not the
    protocol. On a copy of the committed AllNC IF-100 run."""
    src = Path(__file__).resolve().parents[1] / "results" / "cifar10_lt" / "IF100" / "allnc"
    if not (src / "config.yaml").is_file():
        pytest.skip("needs the repository's results/")
    root = tmp_path / "results"
    _copy_run(src, row_dir(root, "allnc", 100), device="cuda", eval_every=1, threads=4)
    status = _line(build_report(root, paper="AllNC"), "AllNC", "allnc", 100.0).status
    assert "not the row's config" not in status
    changed = tmp_path / "changed"
    _copy_run(
        src, row_dir(changed, "allnc", 100), **{"method.args.allnc.view": "autoaugment_cutout"}
    )
    status = _line(build_report(changed, paper="AllNC"), "AllNC", "allnc", 100.0).status
    want = "run: not the row's config: method.args.allnc.view 'autoaugment_cutout'"
    assert want + " (config: 'randaugment')" in status
    two = tmp_path / "two"
    _copy_run(src, row_dir(two, "allnc", 100), **{"optim.lr": 0.1, "data.batch_size": 128})
    status = _line(build_report(two, paper="AllNC"), "AllNC", "allnc", 100.0).status
    assert "data.batch_size 128 (config: 64) and 1 more" in status
    unset = tmp_path / "unset"
    _copy_run(src, row_dir(unset, "allnc", 100), **{"method.args.allnc.eta_unit": "epoch"})
    status = _line(build_report(unset, paper="AllNC"), "AllNC", "allnc", 100.0).status
    assert "method.args.allnc.eta_unit 'epoch' (config: not set)" in status


def test_a_second_stage_is_checked_against_its_first_stages_protocol(tmp_path):
    """A cRT row's protocol is what `nclt train --stage2 crt --from RUN` builds on a run of
    its first stage's protocol: the stage-2 preset over INC's config. On copies of the
    committed IF-100 `inc_drw_crt` run."""
    from nclt.reproduce import row_protocol

    want = row_protocol("inc_drw_crt", 100)
    assert want is not None and want["method.name"] == "crt" and want["epochs"] == 10
    assert want["optim.weight_decay"] == 0.0 and want["optim.schedule"] == "cosine"
    assert want["data.imbalance"] == 100 and want["model.arch"] == "resnet32"
    assert row_protocol("inc_drw_disa_crt", 200)["data.imbalance"] == 200
    src = Path(__file__).resolve().parents[1] / "results" / "cifar10_lt" / "IF100" / "inc_drw_crt"
    if not (src / "config.yaml").is_file():
        pytest.skip("needs the repository's results/")
    same = tmp_path / "same"
    _copy_run(src, row_dir(same, "inc_drw_crt", 100), device="cuda")
    status = _line(build_report(same, paper="INC"), "INC", "inc_drw_crt", 100.0).status
    assert "not the row's config" not in status
    lr = tmp_path / "lr"
    _copy_run(src, row_dir(lr, "inc_drw_crt", 100), **{"optim.lr": 0.01})
    status = _line(build_report(lr, paper="INC"), "INC", "inc_drw_crt", 100.0).status
    assert "not the row's config: optim.lr 0.01 (config: 0.1)" in status


def test_every_committed_run_was_trained_with_its_rows_config():
    """Each committed run's config.yaml is its row's config file (+ --imbalance and the row's
    overrides) in every key that decides what is trained: a config edited after its rows were
    trained, or a variant collected under a paper row's name, fails here."""
    from nclt.reproduce import measure

    results = Path(__file__).resolve().parents[1] / "results"
    found = measure(results)
    if not found:
        pytest.skip("needs the repository's results/")
    off = {k: p for k, m in found.items() for p in m.problems if "not the row's config" in p}
    assert not off, off
    assert len(found) >= 90  # the check read the committed rows


def test_mixup_mismatch_and_wrong_factor_are_reported(tmp_path):
    root = tmp_path / "results"
    _fake_run(row_dir(root, "ce", 100), "ce", 0, best=70.0, last=70.0, mixup=1.0, extra=False)
    _fake_run(row_dir(root, "ce", 50), "ce", 0, best=74.0, last=74.0, imbalance=10.0, extra=False)
    report = build_report(root, paper="ARB")
    assert "MixUp: paper no, ours yes" in _line(report, "ARB", "ce", 100.0).status
    assert "imbalance 10" in _line(report, "ARB", "ce", 50.0).status


def _doc(path):
    path.write_text(
        f"# Reproduction\n\nintro by hand\n\n{MARK_START}\nstale table\n{MARK_END}\n"
        "\n## Notes on gaps\n\nhand-written note\n"
    )
    return path


def test_markdown_between_markers_and_idempotent(results, tmp_path, capsys):
    doc = _doc(tmp_path / "REPRODUCTION.md")
    args = ["reproduce", "--results", str(results), "--markdown", "--doc", str(doc)]
    assert main(args) == 0
    assert f"wrote {doc}" in capsys.readouterr().out
    text = doc.read_text()
    assert "stale table" not in text
    assert text.startswith("# Reproduction\n\nintro by hand\n\n" + MARK_START)
    assert text.endswith(MARK_END + "\n\n## Notes on gaps\n\nhand-written note\n")
    inside = text.split(MARK_START)[1].split(MARK_END)[0]
    for paper in ("AllNC", "INC", "DisA", "ARB", "BCL", "LDAM-DRW"):
        assert f"### {paper}: " in inside
    assert "| `ce` | CE | 100 | no | 70.4 | 68.50 ± 0.71 | 67.50 ± 0.71 | -1.90 |" in inside
    assert "### Missing rows" in inside and "**needs investigation**" in inside
    # one per-class figure per imbalance factor with runs (IF 100 here), linked from the doc
    png = tmp_path / "figures" / "per_class_IF100.png"
    assert "![per-class accuracy, IF 100](figures/per_class_IF100.png)" in inside
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # ours against the papers, IF 100: one point per (row, paper), the offset band
    against = tmp_path / "figures" / "paper_vs_ours_IF100.png"
    assert "![ours against the papers, IF 100](figures/paper_vs_ours_IF100.png)" in inside
    assert inside.index("### Ours against the papers") < inside.index("### Per-class accuracy")
    assert against.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(p.name for p in png.parent.iterdir()) == [
        "paper_vs_ours_IF100.png",
        "per_class_IF100.png",
    ]
    assert main(args) == 0  # a second run changes nothing
    assert f"unchanged: {doc}" in capsys.readouterr().out
    assert doc.read_text() == text


def test_markdown_refusals(results, tmp_path, capsys):
    bare = tmp_path / "bare.md"
    bare.write_text("# no markers\n")
    assert main(["reproduce", "--results", str(results), "--markdown", "--doc", str(bare)]) == 2
    assert "markers" in capsys.readouterr().err and bare.read_text() == "# no markers\n"
    assert not (tmp_path / "figures").exists()  # refused before any figure is written
    doc = _doc(tmp_path / "d.md")
    assert main(["reproduce", "--markdown", "--doc", str(doc), "--table", "BCL"]) == 2
    assert main(["reproduce", "--table", "nope"]) == 2
    assert "known: AllNC" in capsys.readouterr().err
    assert main(["reproduce", "--row", "ce"]) == 2  # --row without --collect


def test_collect_copies_the_three_files_and_refuses_to_overwrite(tmp_path, capsys):
    run = _fake_run(tmp_path / "runs" / "ce_s0", "ce", 0, best=68.0, last=67.0)
    res = tmp_path / "results"
    argv = [
        "reproduce",
        "--collect",
        str(run),
        "--row",
        "ce",
        "--imbalance",
        "100",
        "--results",
        str(res),
    ]
    assert main(argv) == 0
    dest = res / "cifar10_lt" / "IF100" / "ce"
    assert sorted(p.name for p in dest.iterdir()) == sorted(RUN_FILES)  # no .pt, no tb/
    for f in RUN_FILES:
        assert (dest / f).read_bytes() == (run / f).read_bytes()
    assert main(argv) == 2  # seed 0 is there: refused
    assert "--force" in capsys.readouterr().err
    (run / "metrics.csv").write_text("epoch,test_top1\n200,67.5\n")
    assert main([*argv, "--force"]) == 0
    assert (dest / "metrics.csv").read_text().endswith("67.5\n")
    assert sorted(p.name for p in dest.iterdir()) == sorted(RUN_FILES)

    # a second seed: both runs move into seed<k>/ folders
    run1 = _fake_run(tmp_path / "runs" / "ce_s1", "ce", 1, best=69.0, last=68.0)
    collect(run1, "ce", 100, res)
    assert sorted(p.name for p in dest.iterdir()) == ["seed0", "seed1"]
    assert sorted(p.name for p in (dest / "seed0").iterdir()) == sorted(RUN_FILES)
    assert json.loads((dest / "seed1" / "results.json").read_text())["seed"] == 1
    with pytest.raises(NcltError, match="already holds seed 1"):
        collect(run1, "ce", 100, res)
    assert build_report(res).offsets[100.0].value == pytest.approx(70.4 - 68.5)


def test_collect_seed_folders_and_checks(tmp_path):
    res = tmp_path / "results"
    sweep = tmp_path / "runs" / "ldam"
    for s in (0, 1, 2):
        _fake_run(sweep / f"seed{s}", "ldam-drw", s, best=76.0 + s, last=75.0)
    written = collect(sweep, "ldam_drw", 100, res)
    assert [p.name for p in written] == ["seed0", "seed1", "seed2"]
    other = _fake_run(tmp_path / "runs" / "x", "ldam-drw", 0, best=70.0, last=70.0)
    with pytest.raises(NcltError, match="imbalance 100.0, not 50"):
        collect(other, "ldam_drw", 50, res)
    with pytest.raises(NcltError, match="is a ldam-drw run; row ce needs a ce run"):
        collect(other, "ce", 100, res)
    with pytest.raises(NcltError, match="Did you mean 'ldam_drw'"):
        collect(other, "ldam_drv", 100, res)
    (other / "metrics.csv").unlink()
    with pytest.raises(NcltError, match="metrics.csv missing"):
        collect(other, "ldam_drw", 100, res / "other")
    assert not (res / "other").exists()
    # a second stage: the crt run, not its first stage
    first = _fake_run(tmp_path / "runs" / "inc", "inc-drw", 0, best=80.0, last=80.0)
    with pytest.raises(NcltError, match="stage2_crt"):
        collect(first, "inc_drw_crt", 100, res)
    stage2 = _fake_run(first / "stage2_crt", "crt", 0, best=81.0, last=81.0)
    collect(stage2, "inc_drw_crt", 100, res)
    report = build_report(res, paper="INC")
    assert _line(report, "INC", "inc_drw_crt", 100.0).ours == pytest.approx(81.0)


def test_nc_section_means_over_seeds_and_names_the_settings(results):
    # seed 1 of ce gets other NC values and settings: mean ± sample std, settings flagged
    for seed, nc1, duality, global_mean in ((0, 0.2, 0.5, "class"), (1, 0.4, 0.7, "sample")):
        path = row_dir(results, "ce", 100) / f"seed{seed}" / "results.json"
        res = json.loads(path.read_text())
        res["nc"] = {
            "nc1": nc1,
            "self_duality": duality,
            "nc4": 0.9,
            "global_mean": global_mean,
            "within": "sample",
            "center_w": True,
        }
        path.write_text(json.dumps(res))
    text = build_report(results).render()
    section = text.split("### Neural collapse of our runs")[1].split("### Missing rows")[0]
    std = statistics.stdev([0.2, 0.4])
    # columns: row IF seeds NC1 equinorm_mu equiangular_mu max-angle_mu equinorm_W
    # equiangular_W self-duality NC4; a metric no run recorded is "-"
    assert (
        f"| `ce` | 100 | 2 | 0.300 ± {std:.3f} | - | - | - | - | - | 0.600 ± {std:.3f} | "
        "0.900 ± 0.000 |" in section
    )
    assert "| `ldam_drw` | 100 | 1 | 0.500 | - |" in section
    assert section.index("`ce`") < section.index("`ldam_drw`")
    assert "global mean: the mean of the class means / the sample mean (differs" in section
    assert "Σ_W averaged: over samples," in section and "centred: yes." in section


def test_nc_section_absent_without_runs(tmp_path):
    assert "Neural collapse of our runs" not in build_report(tmp_path / "empty").render()


def test_a_factor_outside_the_papers_gets_its_figure_and_nc_row_last(results, tmp_path):
    _fake_run(row_dir(results, "ce", 20), "ce", 0, best=80.0, last=79.0, imbalance=20.0)
    report = build_report(results)
    paths = per_class_figures(report, tmp_path / "figs")
    assert list(paths) == [100.0, 20.0]  # the papers' factors first, then the others
    section = report.render().split("### Neural collapse of our runs")[1]
    assert section.index("| `ldam_drw` | 100 |") < section.index("| `ce` | 20 |")


def test_paper_figure_has_a_point_per_paper_that_publishes_a_measured_row(
    results, tmp_path, monkeypatch
):
    import nclt.report.figures as figures
    from nclt.reproduce import build_report, paper_figures

    drawn = {}

    def capture(points, offset, tolerance, path, title=""):
        drawn[Path(path).name] = (list(points), offset, tolerance)
        return Path(path)

    monkeypatch.setattr(figures, "paper_vs_ours", capture)
    report = build_report(results)
    paths = paper_figures(report, tmp_path)
    assert list(paths) == [100.0] and list(drawn) == ["paper_vs_ours_IF100.png"]
    points, offset, tolerance = drawn["paper_vs_ours_IF100.png"]
    # ce (68.5 mean) sets the offset against 70.4; ldam_drw is 74.0 against LDAM-DRW's 77.03
    assert offset == pytest.approx(70.4 - 68.5) and tolerance == 1.0
    measured = [
        (key, ln.pub.row, ln.pub.top1, ln.ours, ln.flagged)
        for key in report.papers
        for ln in report.lines[key]
        if ln.measured is not None
    ]
    # papers quoting the same number for a row share one point, named after all of them
    for key, row, paper, ours, flagged in measured:
        (point,) = [p for p in points if p[0].startswith(row + " (") and p[1] == paper]
        assert key in point[0] and point[2:] == (ours, flagged)
    assert len(points) == len({m[1:] for m in measured})
    ce_70 = [p for p in points if p[0].startswith("ce (") and p[1] == 70.4]
    assert len(ce_70) == 1 and "ARB" in ce_70[0][0] and "INC" in ce_70[0][0]
    assert any(p[0].startswith("ldam_drw (") and p[1:] == (77.03, 74.0, True) for p in points)


def test_summary_one_line_per_measured_row_against_every_paper(results):
    """The summary merges every paper's number for a row: equal values (82.60 / 82.6) once,
    Δ + offset against each, flagged against exactly the papers it falls short of; baselines
    first, a variant without a published number right after its base row."""
    for row, method, best in (
        ("ce_disa_fig8", "ce+disa", 66.0),
        ("ce_disa", "ce+disa", 74.0),
        ("etf_dr", "etf-dr", 75.0),
    ):
        _fake_run(row_dir(results, row, 100), method, 0, best, best - 1, mixup=1.0, extra=False)
    report = build_report(results)
    rows = {r[0]: r for r in report.summary_rows()}
    assert [r[0] for r in report.summary_rows()] == [
        "`ce`",
        "`ldam_drw`",
        "`etf_dr`",
        "`ce_disa`",
        "`ce_disa_fig8`",
    ]
    # AllNC prints 76.50, INC and DisA 76.5: one number; 75.0 - 76.5 + 1.9 = +0.40
    assert rows["`etf_dr`"][5:8] == ["76.50 AllNC, INC, DisA", "+0.40", "ok"]
    std = statistics.stdev([68.0, 69.0])
    # offset 70.4 - 68.5 = 1.9: ce is -0.30 + 0.30 under AllNC's 70.70 and 0 under 70.4
    assert rows["`ce`"][1:7] == [
        "100",
        "2",
        f"68.50 ± {std:.2f}",
        f"67.50 ± {std:.2f}",
        "70.70 AllNC; 70.4 INC, ARB",
        "-0.30; +0.00",
    ]
    assert rows["`ce`"][7] == "offset reference"
    # ldam_drw 74.0: 77.03 (AllNC, BCL, LDAM-DRW) and 77.0 (INC) flag it, 74.9 (ARB) does not
    ldam = rows["`ldam_drw`"]
    assert ldam[5] == "77.03 (best) AllNC, BCL, LDAM-DRW; 77.0 (best) INC; 74.9 ARB"
    assert ldam[6] == "-1.13; -1.10; +1.00"
    assert ldam[7] == "**needs investigation** (vs AllNC, INC, BCL, LDAM-DRW)"
    assert ldam[8] == "1h30m"
    # ce_disa 74.0 against DisA's 74.7: -0.7 + 1.9 = +1.2, ok; the variant has no number
    assert rows["`ce_disa`"][5:8] == ["74.7 DisA", "+1.20", "ok"]
    assert rows["`ce_disa_fig8`"][5:8] == ["-", "-", "no published number"]
    text = report.summary()
    assert text.startswith("### Summary") and "JPEG offset used: IF 100 1.90." in text
    assert text in report.render()
    # one paper's view lists only what that paper publishes
    disa = build_report(results, paper="DisA").summary_rows()
    assert [r[0] for r in disa] == ["`etf_dr`", "`ce_disa`"]
    assert disa[0][5] == "76.5 DisA"


def test_markdown_writes_the_summary_into_the_readme_above_the_doc(results, tmp_path, capsys):
    """--markdown also fills the README one folder above the doc's (between its summary
    markers); a README without them is left alone unless named with --readme, which is then
    refused before anything is written."""
    from nclt.reproduce import SUMMARY_END, SUMMARY_START

    (tmp_path / "docs").mkdir()
    doc = _doc(tmp_path / "docs" / "REPRODUCTION.md")
    readme = tmp_path / "README.md"
    readme.write_text(f"# nclt\n\n## Status\n\n{SUMMARY_START}\nold\n{SUMMARY_END}\n\nmore\n")
    args = ["reproduce", "--results", str(results), "--markdown", "--doc", str(doc)]
    assert main(args) == 0
    assert f"wrote {readme}" in capsys.readouterr().out
    text = readme.read_text()
    inside = text.split(SUMMARY_START)[1].split(SUMMARY_END)[0]
    assert "old" not in inside and text.endswith(SUMMARY_END + "\n\nmore\n")
    assert "| `ldam_drw` | 100 | 1 | 74.00 | 73.50 |" in inside
    assert f"a note on every gap: {doc}." in inside and "### Summary" not in inside
    assert main(args) == 0 and f"unchanged: {readme}" in capsys.readouterr().out
    assert readme.read_text() == text

    plain = "# nclt\n\nno markers\n"
    readme.write_text(plain)
    doc_text = doc.read_text()
    assert main(args) == 0  # found but without markers: not ours to write
    assert readme.read_text() == plain
    assert main([*args, "--readme", str(readme)]) == 2
    assert "reproduction-summary" in capsys.readouterr().err
    assert readme.read_text() == plain and doc.read_text() == doc_text
    assert main([*args, "--readme", ""]) == 0 and readme.read_text() == plain


def _nc_rows(root, rows):
    """Runs at IF 100 with every NC column: rows = [(row, method, best, {column: value})]."""
    from nclt.reproduce import NC_COLUMNS

    for row, method, best, nc in rows:
        run = _fake_run(row_dir(root, row, 100), method, 0, best, best - 1, extra=False)
        data = json.loads((run / "results.json").read_text())
        data["nc"] = {name: nc.get(name, 0.5) for name, _ in NC_COLUMNS}
        (run / "results.json").write_text(json.dumps(data))


_SIX = [("ce", "ce"), ("ce_drw", "ce-drw"), ("ldam_drw", "ldam-drw"), ("arb", "arb")]
_SIX += [("inc_drw", "inc-drw"), ("etf_dr", "etf-dr")]


def test_nc_against_accuracy_ranks_known_orders(tmp_path):
    """Spearman's rho of each NC column with the best top-1: NC1 falling as accuracy rises is
    -1 (with NC), NC4 falling with it is -1 (against NC: NC4 grows with collapse), a constant
    column has no rho; below NC_CORR_MIN_ROWS rows there is no section."""
    from nclt.reproduce import nc_accuracy_figures, nc_accuracy_section, spearman

    assert spearman([1, 2, 3], [3, 2, 1])[0] == pytest.approx(-1.0)
    assert spearman([1, 1, 1], [1, 2, 3]) == (None, None)
    root = tmp_path / "results"
    rows = []
    for i, (row, method) in enumerate(_SIX):
        acc = 60.0 + 3 * i
        nc = {"nc1": 1.0 - 0.1 * i, "nc4": 0.99 - 0.01 * i, "self_duality": (-1) ** i * 0.1}
        rows.append((row, method, acc, nc))
    _nc_rows(root, rows[:5])
    found = build_report(root).found
    assert nc_accuracy_section(found) == ""  # 5 rows: too few
    _nc_rows(root, rows[5:])
    # a row whose runs lack a metric (older results) is left out, not counted as 0
    _fake_run(row_dir(root, "ce_mixup", 100), "ce", 0, 99.0, 98.0, mixup=1.0, extra=False)
    report = build_report(root)
    text = nc_accuracy_section(report.found)
    assert "IF 100, 6 rows." in text
    assert "Significant at p < 0.05: NC1 (ρ -1.00, with NC); NC4 (ρ -1.00, against NC)." in text
    assert "| NC1 | lower | -1.00 | 0.000 |" in text
    assert "| equinorm μ | lower | - | - |" in text  # 0.5 everywhere
    assert text in report.render()
    (png,) = nc_accuracy_figures(report, tmp_path / "figs").values()
    assert png.name == "nc_vs_accuracy_IF100.png" and png.read_bytes()[:4] == b"\x89PNG"


def test_the_committed_tables_are_the_committed_results(tmp_path, monkeypatch, capsys):
    """docs/REPRODUCTION.md and README.md hold what `nclt reproduce --markdown` writes from
    the committed results/: a row collected (or a published number edited) without
    regenerating the tables fails here. Run on copies, so the repository is left alone."""
    import shutil

    repo = Path(__file__).resolve().parents[1]
    doc, readme, results = repo / "docs" / "REPRODUCTION.md", repo / "README.md", repo / "results"
    if not (doc.is_file() and readme.is_file() and (results / "cifar10_lt").is_dir()):
        pytest.skip("needs the repository's docs/, README.md and results/")
    (tmp_path / "docs").mkdir()
    shutil.copy(doc, tmp_path / "docs" / "REPRODUCTION.md")
    shutil.copy(readme, tmp_path / "README.md")
    monkeypatch.chdir(tmp_path)
    assert main(["reproduce", "--results", str(results), "--markdown"]) == 0
    out = capsys.readouterr().out
    regenerate = "stale: run `nclt reproduce --markdown` from the repository root"
    assert (tmp_path / "docs" / "REPRODUCTION.md").read_text() == doc.read_text(), regenerate
    assert (tmp_path / "README.md").read_text() == readme.read_text(), regenerate
    assert "unchanged: docs/REPRODUCTION.md" in out


def _noted(notes: str) -> set[tuple[str, float]]:
    """(row, IF) pairs that a "### `row`, `row2`, IF f: ..." heading of the notes names."""
    import re

    out = set()
    for heading in re.findall(r"^### (.*)$", notes, re.M):
        m = re.match(r"((?:`\w+`(?:, )?)+),? IF (\d+(?:\.\d+)?)\b", heading)
        if m:
            out |= {(row, float(m.group(2))) for row in re.findall(r"`(\w+)`", m.group(1))}
    return out


def test_every_flagged_row_has_a_note_on_its_gap():
    """The issue asks for a note on every gap above the band: each (row, IF) that the
    committed results flag has a heading of its own in docs/REPRODUCTION.md's "Notes on gaps"
    (a row collected below its paper without a note fails here)."""
    repo = Path(__file__).resolve().parents[1]
    doc, results = repo / "docs" / "REPRODUCTION.md", repo / "results"
    if not (doc.is_file() and (results / "cifar10_lt").is_dir()):
        pytest.skip("needs the repository's docs/ and results/")
    assert _noted("### `ce`, `ce_drw`, IF 50: x\n### `bcl`, IF 100: y\n### IF 10 overall\n") == {
        ("ce", 50.0),
        ("ce_drw", 50.0),
        ("bcl", 100.0),
    }
    text = doc.read_text()
    assert "\n## Notes on gaps\n" in text
    noted = _noted(text.split("\n## Notes on gaps\n", 1)[1])
    flagged = {(ln.pub.row, ln.pub.imbalance) for ln in build_report(results).flagged}
    assert not flagged - noted, f"flagged, with no note in Notes on gaps: {sorted(flagged - noted)}"
