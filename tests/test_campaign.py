"""``nclt reproduce --run`` (nclt.campaign): the queue trains, branches, runs second stages,
collects, and the same command again skips, resumes or collects from what is on disk."""

from __future__ import annotations

import csv
import json
import shutil
import signal
from pathlib import Path

import pytest

import nclt.runner as runner
from nclt import campaign
from nclt import reproduce as rp
from nclt.cli import main
from nclt.errors import NcltError, RunInterrupted

#: on top of ``tiny_sets``: 3 epochs, epoch 2 kept as a branch point.
SHORT = ["epochs=3", "keep_checkpoints=[2]"]
ROWS = "inc_drw_crt,ce_drw,ce"


@pytest.fixture(scope="session")
def argv(tiny_cifar10, tiny_sets):
    """``nclt reproduce --run ROWS`` on the tiny CIFAR files, into ``tmp``."""

    def make(tmp: Path, *extra: str, rows: str = ROWS) -> list[str]:
        sets = [a for s in [*tiny_sets, *SHORT] for a in ("--set", s)]
        return [
            "reproduce",
            "--run",
            rows,
            "--imbalance",
            "10",
            "--runs",
            str(tmp / "runs"),
            "--results",
            str(tmp / "results"),
            "--data-root",
            str(tiny_cifar10),
            *sets,
            *extra,
        ]

    return make


def _plan_lines(out: str) -> list[str]:
    return [ln.split(". ", 1)[1] for ln in out.splitlines() if ln[:4].strip().endswith(".")]


@pytest.fixture
def branch_at_2(monkeypatch):
    """ce_drw branches from ce's epoch 2 (its DRW starts at epoch 160, so the two train the
    same for these 3 epochs)."""
    monkeypatch.setitem(rp.BRANCH_ROWS, "ce_drw", ("ce", 2))


@pytest.fixture(scope="module")
def done(tmp_path_factory, argv):
    """One real queue over ce, ce_drw (branched) and inc_drw_crt (inc_drw trained first)."""
    mp = pytest.MonkeyPatch()
    mp.setitem(rp.BRANCH_ROWS, "ce_drw", ("ce", 2))
    tmp = tmp_path_factory.mktemp("queue")
    try:
        assert main(argv(tmp)) == 0
    finally:
        mp.undo()
    return tmp


def _copy(done: Path, tmp: Path) -> Path:
    for d in ("runs", "results"):
        shutil.copytree(done / d, tmp / d)
    return tmp


def test_plan_orders_first_stages_branches_then_second_stages(tmp_path, branch_at_2, capsys, argv):
    assert main(argv(tmp_path, "--dry-run", "--seeds", "0,1")) == 0
    lines = _plan_lines(capsys.readouterr().out)
    assert [ln.split(":")[0] for ln in lines] == [
        "ce IF 10 seed 0",
        "inc_drw IF 10 seed 0",
        "ce IF 10 seed 1",
        "inc_drw IF 10 seed 1",
        "ce_drw IF 10 seed 0",
        "ce_drw IF 10 seed 1",
        "inc_drw_crt IF 10 seed 0",
        "inc_drw_crt IF 10 seed 1",
    ]
    assert "needed by a second stage" in lines[1]
    assert lines[4].endswith(str(tmp_path / "runs/cifar10_lt/IF10/ce/seed0/epoch_2.pt"))
    assert lines[6].startswith("inc_drw_crt IF 10 seed 0: stage2 on")
    assert not (tmp_path / "runs").exists()  # a dry run writes nothing


def test_queue_trains_branches_runs_the_second_stage_and_collects(done):
    results = done / "results" / "cifar10_lt" / "IF10"
    saved = {
        r: json.loads((results / r / "results.json").read_text())
        for r in ("ce", "ce_drw", "inc_drw", "inc_drw_crt")
    }
    assert {r: s["method"] for r, s in saved.items()} == {
        "ce": "ce",
        "ce_drw": "ce-drw",
        "inc_drw": "inc-drw",
        "inc_drw_crt": "crt",
    }
    assert all(s["imbalance"] == 10.0 and s["seed"] == 0 for s in saved.values())
    assert saved["ce_drw"]["branched_from"]["epoch"] == 2
    rows = list(csv.DictReader((results / "ce_drw" / "metrics.csv").open()))
    assert [r.get("branched") for r in rows] == ["1", "1", ""]
    ce_rows = list(csv.DictReader((results / "ce" / "metrics.csv").open()))
    assert [r["ce"] for r in rows[:2]] == [r["ce"] for r in ce_rows[:2]]
    # the second stage started from the first stage the queue trained
    cfg = (done / "runs/cifar10_lt/IF10/inc_drw/seed0/stage2_crt/config.yaml").read_text()
    assert str(done / "runs/cifar10_lt/IF10/inc_drw/seed0/last.pt") in cfg
    # collected files equal the run's
    run = done / "runs/cifar10_lt/IF10/ce/seed0"
    for f in rp.RUN_FILES:
        assert (results / "ce" / f).read_bytes() == (run / f).read_bytes()


def test_the_same_command_again_trains_nothing(
    done, tmp_path, argv, branch_at_2, monkeypatch, capsys
):
    tmp = _copy(done, tmp_path)

    def no_training(*a, **k):
        raise AssertionError("nothing should train")

    monkeypatch.setattr(runner, "train", no_training)
    assert main(argv(tmp)) == 0
    out = capsys.readouterr().out
    assert all(": done " in ln for ln in _plan_lines(out)), out


def test_a_stopped_run_resumes_and_an_uncollected_one_is_collected(
    done, tmp_path, argv, branch_at_2, monkeypatch, capsys
):
    tmp = _copy(done, tmp_path)
    res = tmp / "results/cifar10_lt/IF10"
    before = json.loads((res / "ce_drw" / "results.json").read_text())
    # ce_drw: as if stopped after its last epoch's checkpoint; ce: trained, not collected
    (tmp / "runs/cifar10_lt/IF10/ce_drw/seed0/results.json").unlink()
    shutil.rmtree(res / "ce_drw")
    shutil.rmtree(res / "ce")
    calls = []
    real = runner.train

    def recording(cfg, resume=False):
        calls.append((Path(cfg.out).parent.name, resume))
        return real(cfg, resume=resume)

    monkeypatch.setattr(runner, "train", recording)
    assert main(argv(tmp)) == 0
    lines = _plan_lines(capsys.readouterr().out)
    verbs = {ln.split(":")[0]: ln.split(": ")[1].split()[0] for ln in lines}
    assert verbs["ce IF 10 seed 0"] == "collect" and verbs["ce_drw IF 10 seed 0"] == "resume"
    assert ", after epoch 3/3" in next(ln for ln in lines if ln.startswith("ce_drw"))
    assert calls == [("ce_drw", True)]
    after = json.loads((res / "ce_drw" / "results.json").read_text())
    assert after["top1"] == before["top1"] and after["best"] == before["best"]
    assert (res / "ce" / "results.json").is_file()


def test_a_row_begun_on_a_gpu_resumes_here_and_other_sets_must_agree(done, tmp_path, argv):
    """A stopped row continues its own config: ``--set device=cpu`` moves it (a row begun on
    a lent GPU), a ``--set`` of what it computes must agree with its config or stops the
    queue with a clear error; the queue's shared ``--set`` (tiny_sets) agrees."""
    import yaml

    tmp = _copy(done, tmp_path)
    out = tmp / "runs/cifar10_lt/IF10/ce_drw/seed0"
    (out / "results.json").unlink()
    saved = yaml.safe_load((out / "config.yaml").read_text())
    (out / "config.yaml").write_text(yaml.safe_dump({**saved, "device": "cuda:0"}))
    job = campaign.Job("ce_drw", 10.0, 0)
    sets = [a for a in argv(tmp) if "=" in a]  # the queue's --set values (tiny_sets, SHORT)
    cfg = campaign.job_config(job, "resume", tmp / "runs", None, [*sets, "device=cpu"])
    assert cfg.device == "cpu" and cfg.epochs == 3 and cfg.model.arch == "small_cnn"
    # agreement is judged after type coercion: YAML reads 1e-1 as a string, the config 0.1
    assert cfg.optim.lr == 0.1
    campaign.job_config(job, "resume", tmp / "runs", None, [*sets, "device=cpu", "optim.lr=1e-1"])
    with pytest.raises(
        NcltError, match=r"--set epochs=5 differs from the stopped run's epochs \(3\)"
    ):
        campaign.job_config(job, "resume", tmp / "runs", None, [*sets, "epochs=5"])


def test_a_signal_stops_the_queue_and_a_failure_skips_its_second_stage(
    tmp_path, argv, tiny_cifar10, tiny_sets, branch_at_2, monkeypatch
):
    def interrupted(cfg, resume=False):
        raise RunInterrupted("stopped by SIGINT", signal.SIGINT)

    monkeypatch.setattr(runner, "train", interrupted)
    assert main(argv(tmp_path)) == 130

    started = []

    def fails_on_inc(cfg, resume=False):
        started.append(Path(cfg.out).name if "stage2" in cfg.out else Path(cfg.out).parent.name)
        if "inc_drw" in cfg.out:
            raise NcltError("loss is NaN")
        return {}

    monkeypatch.setattr(runner, "train", fails_on_inc)
    jobs = campaign.plan(ROWS.split(","), 10.0, [0], tmp_path / "runs", tmp_path / "results")
    outcomes = campaign.run_queue(
        jobs, tmp_path / "runs", tmp_path / "results", str(tiny_cifar10), [*tiny_sets, *SHORT]
    )
    status = {o.job.row: o.status for o in outcomes}
    assert status["inc_drw"].startswith("failed: loss is NaN")
    assert status["inc_drw_crt"] == "skipped: inc_drw failed"
    assert status["ce"] == "ok" and status["ce_drw"] == "ok"
    assert started == ["ce", "inc_drw", "ce_drw"]  # ce_drw trains in full: no epoch_2.pt


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--set", "seed=3"], "the queue sets this itself"),
        (["--collect", "x"], "drop --collect"),
        (["--table", "DisA"], "--table with --run"),
    ],
)
def test_refusals(tmp_path, argv, extra, message, capsys):
    assert main(argv(tmp_path, *extra)) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()


def test_run_needs_imbalance_and_queue_flags_need_run(capsys):
    assert main(["reproduce", "--run", "ce"]) == 2
    assert "--run needs --imbalance" in capsys.readouterr().err
    assert main(["reproduce", "--seeds", "1", "--dry-run"]) == 2
    assert "--dry-run, --seeds: only with --run" in capsys.readouterr().err


def test_missing_is_every_published_row_of_the_table_at_that_factor(tmp_path, capsys):
    args = ["reproduce", "--run", "missing", "--table", "ARB", "--imbalance", "50", "--dry-run"]
    assert main([*args, "--results", str(tmp_path / "empty"), "--runs", str(tmp_path)]) == 0
    planned = {ln.split(" IF ")[0] for ln in _plan_lines(capsys.readouterr().out)}
    assert planned == {p.row for p in rp.published("ARB") if p.imbalance == 50.0}
    assert "arb" in planned and "ce" in planned


def test_a_set_that_changes_what_is_trained_is_warned_about(caplog):
    with caplog.at_level("WARNING", logger="nclt"):
        campaign.check_sets(["device=cuda", "data.num_workers=4", "eval_every=1"])
    assert not caplog.records
    with caplog.at_level("WARNING", logger="nclt"):
        campaign.check_sets(["device=cuda", "method.args.allnc.view=autoaugment_cutout"])
    (record,) = caplog.records
    assert "method.args.allnc.view=autoaugment_cutout" in record.getMessage()
    assert "device" not in record.getMessage() and "not the row's config" in record.getMessage()


def _committed(results: Path, row: str, imbalance: int, wall: float, device: str = "cpu") -> None:
    """A run of ``row`` in results/ with a known wall time and the factor's class counts."""
    from nclt.data.longtail import longtail_counts

    d = results / "cifar10_lt" / f"IF{imbalance}" / row
    d.mkdir(parents=True)
    counts = longtail_counts(5000, 10, imbalance)
    res = {"dataset": "cifar10", "imbalance": imbalance, "epochs": 200, "seed": 0}
    res.update(class_counts=counts, seconds=wall * 0.9, wall_seconds=wall)
    (d / "results.json").write_text(json.dumps(res))
    (d / "config.yaml").write_text(f"device: {device}\nepochs: 200\nseed: 0\n")


def test_the_plan_says_how_long_each_job_takes_at_the_committed_pace(tmp_path, capsys):
    results, runs = tmp_path / "results", tmp_path / "runs"
    _committed(results, "ce", 100, wall=12406.0)  # IF 100: 12406 images, 1 s per image
    _committed(results, "ce", 200, wall=3 * 11203.0)  # IF 200: 11203 images, 3 s per image
    _committed(results, "arb", 100, wall=999.0, device="cuda")  # a GPU's time: no pace
    pace = campaign.paces(results)
    assert pace == {"ce": pytest.approx(2.0)}
    job = campaign.Job("ce", 50.0, 0)  # IF 50: 13996 images
    assert campaign.estimate(job, "train", runs, pace) == pytest.approx(2.0 * 13996)
    assert campaign.estimate(campaign.Job("arb", 50.0, 0), "train", runs, pace) is None
    assert campaign.estimate(campaign.Job("ce", 100.0, 0), "done", runs, pace) == 0.0
    # a stopped run: only its epochs left (150 of 200 done)
    out = campaign.run_folder(runs, "ce", 50.0, 0)
    out.mkdir(parents=True)
    (out / "config.yaml").write_text("epochs: 200\n")
    (out / "metrics.csv").write_text("epoch,loss\n" + "".join(f"{e},1\n" for e in range(1, 151)))
    assert campaign.estimate(job, "resume", runs, pace) == pytest.approx(2.0 * 13996 / 4)
    # a branch row trains only the epochs after its branch point (ce_drw: ce's epoch 160)
    pace["ce_drw"] = 1.0
    branch = campaign.estimate(campaign.Job("ce_drw", 50.0, 0), "branch", runs, pace)
    assert branch == pytest.approx(13996 * 40 / 200)
    (out / "last.pt").write_bytes(b"")  # the plan sees a run to resume
    text = campaign.describe([job, campaign.Job("arb", 50.0, 0)], runs, results)
    first, second, total = text.splitlines()
    assert first.endswith("after epoch 150/200 [~1h56m]")  # 6998 s
    assert "[" not in second
    assert total.startswith("about 1h56m in all and 1 job(s) of unknown length")
