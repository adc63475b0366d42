"""End-to-end training on the embedded digits-LT: outputs, resume equivalence, CLI."""

from __future__ import annotations

import csv
import json
import shutil

import pytest
import torch
import yaml

import nclt.runner as runner
from nclt import checkpoint as ckpt
from nclt import progress
from nclt.cli import build_parser, config_from_args, main
from nclt.errors import CheckpointError, ConfigError, NonFiniteLossError


def _cfg(tmp_path, *extra: str, name: str = "run"):
    args = build_parser().parse_args(
        ["train", "--out", str(tmp_path / name), "--epochs", "3", "--set", "progress=false", *extra]
    )
    return config_from_args(args)


def test_outputs_of_a_run(tmp_path):
    res = runner.train(_cfg(tmp_path))
    out = tmp_path / "run"
    for f in ("config.yaml", "metrics.csv", "results.json", "last.pt", "best.pt"):
        assert (out / f).is_file(), f
    assert any((out / "tb").iterdir())
    saved = json.loads((out / "results.json").read_text())
    for key in (
        "method",
        "dataset",
        "imbalance",
        "epochs",
        "top1",
        "many",
        "medium",
        "few",
        "per_class",
        "nc",
        "seconds",
        "images_per_second",
    ):
        assert key in saved
    assert saved["top1"] == pytest.approx(res["top1"])
    assert len(saved["per_class"]) == 10 and saved["nc"]["nc4"] is not None
    rows = list(csv.DictReader((out / "metrics.csv").open()))
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3]
    assert {"ce", "lr", "train_top1", "test_top1", "seconds", "images_per_second"} <= set(rows[0])
    config = yaml.safe_load((out / "config.yaml").read_text())
    assert config["environment"]["torch"] and config["method"]["name"] == "ce"
    # a second run into the same folder is refused instead of overwriting it
    with pytest.raises(ConfigError, match="--resume"):
        runner.train(_cfg(tmp_path))


def test_sparse_then_dense_evaluation(tmp_path):
    """eval_every=3 with eval_all_from=5 over 6 epochs evaluates after epochs 3, 5 and 6 only."""
    cfg = _cfg(tmp_path, "--epochs", "6", "--set", "eval_every=3", "--set", "eval_all_from=5")
    assert [e for e in range(1, 7) if runner.evaluates(cfg, e)] == [3, 5, 6]
    res = runner.train(cfg)
    rows = list(csv.DictReader((tmp_path / "run" / "metrics.csv").open()))
    assert [int(r["epoch"]) for r in rows if r["test_top1"]] == [3, 5, 6]
    assert res["best"]["epoch"] in (3, 5, 6)


def _crash_in_epoch_3(cfg, monkeypatch):
    """Train ``cfg`` until a KeyboardInterrupt after two steps of its third epoch (last.pt
    then holds epoch 2), and put the real epoch loop back."""
    real = runner.train_one_epoch

    def crashing(env, loader, epoch, *a, **k):
        if epoch == 2:  # 0-based

            def dying():
                for i, batch in enumerate(loader):
                    if i == 2:
                        raise KeyboardInterrupt
                    yield batch

            return real(env, dying(), epoch, *a, **k)
        return real(env, loader, epoch, *a, **k)

    monkeypatch.setattr(runner, "train_one_epoch", crashing)
    with pytest.raises(KeyboardInterrupt):
        runner.train(cfg)
    monkeypatch.setattr(runner, "train_one_epoch", real)


def test_resume_after_mid_epoch_crash_gives_identical_weights(tmp_path, monkeypatch):
    full = _cfg(tmp_path, "--set", "mixup_alpha=1.0", "--method", "ce-drw", name="full")
    full.epochs = 4
    runner.train(full)
    ref = ckpt.load(tmp_path / "full" / "last.pt")["model"]

    cfg = _cfg(tmp_path, "--set", "mixup_alpha=1.0", "--method", "ce-drw", name="crashed")
    cfg.epochs = 4
    _crash_in_epoch_3(cfg, monkeypatch)
    assert ckpt.load(tmp_path / "crashed" / "last.pt")["epoch"] == 1
    runner.train(cfg, resume=True)
    got = ckpt.load(tmp_path / "crashed" / "last.pt")["model"]
    for k in ref:
        assert torch.equal(ref[k], got[k]), k
    rows = list(csv.DictReader((tmp_path / "crashed" / "metrics.csv").open()))
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3, 4]
    # the wall time counts the epochs of the crashed process too, not only the resumed part
    res = json.loads((tmp_path / "crashed" / "results.json").read_text())
    walls = [float(r["wall_seconds"]) for r in rows]
    assert all(w >= float(r["seconds"]) for w, r in zip(walls, rows, strict=True))
    assert "wall_seconds_partial" not in res
    assert res["wall_seconds"] >= sum(walls) * (1 - 1e-5)


def test_loss_scaler_state_survives_a_resume(tmp_path, monkeypatch):
    """fp16's GradScaler (CUDA only; here a CPU GradScaler on the fp32 digits run, its scale
    doubling every 3 steps from 2**20): its state is checkpointed and restored, so a run
    stopped mid-epoch and resumed ends with the scale and weights of the uninterrupted one."""
    real_build = runner.build_training

    def with_scaler(run):
        setup = real_build(run)
        setup.env.scaler = torch.amp.GradScaler("cpu", init_scale=2.0**20, growth_interval=3)
        return setup

    monkeypatch.setattr(runner, "build_training", with_scaler)
    full = _cfg(tmp_path, name="full")
    full.epochs = 4
    runner.train(full)
    ref = ckpt.load(tmp_path / "full" / "last.pt")
    assert ref["scaler"]["scale"] > 2.0**30  # it grew: the scaler took part in every step

    cfg = _cfg(tmp_path, name="stopped")
    cfg.epochs = 4
    _crash_in_epoch_3(cfg, monkeypatch)
    shutil.copytree(tmp_path / "stopped", tmp_path / "scale_lost")
    runner.train(cfg, resume=True)
    got = ckpt.load(tmp_path / "stopped" / "last.pt")
    assert got["scaler"] == ref["scaler"]
    for k in ref["model"]:
        assert torch.equal(ref["model"][k], got["model"][k]), k
    # the control: the same resume with the scaler's state dropped ends at another scale
    state = ckpt.load(tmp_path / "scale_lost" / "last.pt")
    state["scaler"] = {}
    ckpt.save_atomic(state, tmp_path / "scale_lost" / "last.pt")
    cfg.out = str(tmp_path / "scale_lost")
    runner.train(cfg, resume=True)
    assert (
        ckpt.load(tmp_path / "scale_lost" / "last.pt")["scaler"]["scale"] < ref["scaler"]["scale"]
    )


def test_resume_from_a_checkpoint_without_epoch_wall_times_flags_partial(tmp_path):
    cfg = _cfg(tmp_path)
    cfg.epochs = 2
    runner.train(cfg)
    state = ckpt.load(tmp_path / "run" / "last.pt")
    for h in state["history"]:  # as written by nclt before it kept per-epoch wall times
        del h["wall_seconds"]
    ckpt.save_atomic(state, tmp_path / "run" / "last.pt")
    cfg.epochs = 3
    res = runner.train(cfg, resume=True)
    assert res["wall_seconds_partial"] is True
    assert res["wall_seconds"] > 0


def test_epoch_log_line_says_the_time_left_from_the_last_five_epochs():
    row = {"epoch": 10, "loss": 1.0, "train_top1": 50.0, "lr": 0.1, "images_per_second": 400}
    history = [{"wall_seconds": 1000.0}] * 5 + [{"wall_seconds": s} for s in (30, 30, 30, 40, 45)]
    line = progress.epoch_line(row, 200, history)
    assert line.endswith(" 400 img/s left ~1h50m")  # 190 x 35 s = 1h50m50s
    assert "left" not in progress.epoch_line({**row, "epoch": 200}, 200, history)
    assert "left" not in progress.epoch_line(row, 200, [{"seconds": 3.0}])  # no wall times


def test_resume_refuses_a_checkpoint_of_another_method(tmp_path):
    cfg = _cfg(tmp_path)
    runner.train(cfg)
    cfg.method.name = "ce-drw"
    with pytest.raises(CheckpointError, match="method"):
        runner.train(cfg, resume=True)


def test_non_finite_loss_names_the_term_and_keeps_checkpoint(tmp_path, monkeypatch):
    cfg = _cfg(tmp_path)
    runner.train(cfg)  # a good last.pt exists
    before = (tmp_path / "run" / "last.pt").read_bytes()
    cfg2 = _cfg(tmp_path, name="nan")
    real = runner.build_run

    def poisoned(c):
        run = real(c)
        loss = run.method.objective.terms[0].loss
        orig = loss.forward
        loss.forward = lambda *a, **k: orig(*a, **k) * float("nan")
        return run

    monkeypatch.setattr(runner, "build_run", poisoned)
    with pytest.raises(NonFiniteLossError, match=r"epoch 1, step 1: term\(s\) \['ce'\]"):
        runner.train(cfg2)
    assert not (tmp_path / "nan" / "last.pt").exists()
    assert (tmp_path / "run" / "last.pt").read_bytes() == before


def test_drw_switch_changes_the_loss_at_the_epoch(tmp_path, monkeypatch):
    cfg = _cfg(tmp_path, "--method", "ce-drw", "--set", "method.args.ce-drw.drw_epoch=2")
    seen = []
    real = runner.train_one_epoch

    def spy(env, loader, epoch, *a, **k):
        from nclt.methods.schedules import Progress

        seen.append(env.schedules["class_weight"](Progress(epoch, 0, 1, cfg.epochs)))
        return real(env, loader, epoch, *a, **k)

    monkeypatch.setattr(runner, "train_one_epoch", spy)
    runner.train(cfg)
    assert seen[0] is None and seen[1] is None and seen[2] is not None
    counts = torch.tensor(
        json.loads((tmp_path / "run" / "results.json").read_text())["class_counts"],
        dtype=torch.float64,
    )
    expected = (1 - 0.9999) / (1 - 0.9999**counts)
    assert torch.allclose(seen[2].double(), expected / expected.sum() * 10, rtol=1e-5)


def test_class_balanced_sampling_for_ce_rs(tmp_path, monkeypatch):
    cfg = _cfg(tmp_path, "--method", "ce-rs")
    cfg.epochs = 1
    labels_seen = []
    real = runner.train_one_epoch

    def spy(env, loader, *a, **k):
        def record():
            for x, y in loader:
                labels_seen.append(y)
                yield x, y

        return real(env, record(), *a, **k)

    monkeypatch.setattr(runner, "train_one_epoch", spy)
    runner.train(cfg)
    freq = torch.bincount(torch.cat(labels_seen), minlength=10).double()
    freq /= freq.sum()
    # digits-LT at IF=50: the head class holds 36% of the images; resampled, ~10% each
    assert freq.max() < 0.2 and freq.min() > 0.03


def test_cli_end_to_end_prints_table(tmp_path, capsys):
    rc = main(["train", "--epochs", "2", "--out", str(tmp_path / "cli"), "--set", "progress=false"])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "many" in printed and "few" in printed and "nc1=" in printed
    assert str(tmp_path / "cli") in printed
    rc = main(["eval", str(tmp_path / "cli" / "last.pt"), "--json", str(tmp_path / "e.json")])
    assert rc == 0
    ev = json.loads((tmp_path / "e.json").read_text())
    last = json.loads((tmp_path / "cli" / "results.json").read_text())
    assert ev["top1"] == pytest.approx(last["top1"])
    assert ev["nc"]["nc1"] == pytest.approx(last["nc"]["nc1"], rel=1e-6)


def test_cli_errors_are_one_clear_line(capsys):
    assert main(["train", "--method", "ldam-drv"]) == 2
    err = capsys.readouterr().err
    assert "unknown method 'ldam-drv'" in err and "ldam-drw" in err
    assert main(["train", "--set", "optim.lrr=1"]) == 2
    assert "Did you mean 'lr'" in capsys.readouterr().err
    assert main(["eval", "/nonexistent/last.pt"]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_nclt_data_needs_no_files(capsys):
    assert main(["data", "cifar10", "--imbalance", "100"]) == 0
    out = capsys.readouterr().out
    assert "12406" in out.replace(",", "") and "5000" in out


def test_methods_lists_papers(capsys):
    assert main(["methods"]) == 0
    out = capsys.readouterr().out
    assert "ldam-drw" in out and "Cao et al." in out


def test_nclt_data_exports_kept_indices_with_checksum(tmp_path, capsys):
    import hashlib

    import numpy as np

    from nclt.bench import write_synthetic_cifar10
    from nclt.data.longtail import longtail_indices

    write_synthetic_cifar10(tmp_path, train_per_class=100, test_per_class=2)
    out = tmp_path / "idx.json"
    assert (
        main(
            [
                "data",
                "cifar10",
                "--imbalance",
                "10",
                "--data-root",
                str(tmp_path),
                "--export",
                str(out),
            ]
        )
        == 0
    )
    rec = json.loads(out.read_text())
    idx = np.asarray(rec["indices"], dtype=np.int64)
    assert rec["checksum"] == hashlib.sha256(idx.astype("<i8").tobytes()).hexdigest()
    assert rec["counts"][0] == 100 and rec["counts"][-1] == 10 and len(idx) == sum(rec["counts"])
    from nclt.data.cifar import load_cifar

    _, targets, _ = load_cifar(tmp_path, 10, train=True)
    assert np.array_equal(idx, longtail_indices(np.asarray(targets), rec["counts"], seed=0))
    assert rec["checksum"] in capsys.readouterr().out


def test_a_run_begun_on_a_gpu_finishes_here_with_set_device(tmp_path, monkeypatch, capsys):
    """A run whose config.yaml says ``device: cuda`` (begun on a lent GPU) resumes on the CPU
    with ``--set device=cpu`` to the uninterrupted run's weights; its config.yaml then names
    the earlier part's device and environment; what a run computes cannot be ``--set``."""
    full = _cfg(tmp_path, name="full")
    full.epochs = 4
    runner.train(full)
    ref = ckpt.load(tmp_path / "full" / "last.pt")["model"]

    cfg = _cfg(tmp_path, name="moved")
    cfg.epochs = 4
    _crash_in_epoch_3(cfg, monkeypatch)  # last.pt holds 2 epochs
    out = tmp_path / "moved"
    saved = yaml.safe_load((out / "config.yaml").read_text())
    gpu_env = {**saved["environment"], "accelerator": "NVIDIA H200", "torch": "2.11.0+cu130"}
    (out / "config.yaml").write_text(
        yaml.safe_dump({**saved, "device": "cuda", "environment": gpu_env})
    )
    if not torch.cuda.is_available():
        assert main(["train", "--resume", str(out)]) == 2
        assert "CUDA is not available" in capsys.readouterr().err
    assert main(["train", "--resume", str(out), "--set", "optim.lr=0.5"]) == 2
    err = capsys.readouterr().err
    assert "only device, data.num_workers, progress may change" in err
    assert yaml.safe_load((out / "config.yaml").read_text())["device"] == "cuda"  # untouched

    assert main(["train", "--resume", str(out), "--set", "device=cpu"]) == 0
    got = ckpt.load(out / "last.pt")["model"]
    for k in ref:
        assert torch.equal(ref[k], got[k]), k
    after = yaml.safe_load((out / "config.yaml").read_text())
    assert after["device"] == "cpu" and after["environment"] == saved["environment"]
    assert after["earlier_environments"] == [{"through_epoch": 2, "device": "cuda", **gpu_env}]
    # a resume where nothing moved records nothing more; the record survives it
    (out / "results.json").unlink()
    state = ckpt.load(out / "last.pt")
    state["epoch"] = 2  # "3 epochs done": one more to train
    ckpt.save_atomic(state, out / "last.pt")
    assert main(["train", "--resume", str(out), "--set", "device=cpu"]) == 0
    again = yaml.safe_load((out / "config.yaml").read_text())
    assert again["earlier_environments"] == after["earlier_environments"]
