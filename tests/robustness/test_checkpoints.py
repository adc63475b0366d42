"""Damaged, foreign and malicious checkpoints, and a disk that fills during a write.

Unit tests of the same code: tests/test_checkpoint.py (truncated and garbage files, foreign
torch files, a malicious pickle, a failed write keeps the previous file) and
tests/test_train_e2e.py::test_resume_refuses_a_checkpoint_of_another_method.
"""

from __future__ import annotations

import csv
import errno
import os
import pickle

import pytest
import torch
import yaml

import nclt.runner as runner
from nclt import checkpoint as ckpt

from ._helpers import assert_one_clear_line, digits_args


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A finished 2-epoch digits run (copied per test by ``run_dir``)."""
    out = tmp_path_factory.mktemp("finished") / "run"
    from ._helpers import digits_cfg

    runner.train(digits_cfg(out, epochs=2))
    return out


@pytest.fixture
def run_dir(finished, tmp_path):
    import shutil

    return shutil.copytree(finished, tmp_path / "run")


def _snapshot(folder):
    return {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}


@pytest.mark.parametrize("damage", ["truncated", "garbage", "empty", "deleted"])
def test_resume_and_eval_of_a_damaged_checkpoint(cli, run_dir, damage):
    last = run_dir / "last.pt"
    data = last.read_bytes()
    if damage == "truncated":
        last.write_bytes(data[: len(data) // 3])
    elif damage == "garbage":
        last.write_bytes(os.urandom(len(data)))
    elif damage == "empty":
        last.write_bytes(b"")
    else:
        last.unlink()
    before = _snapshot(run_dir)
    what = "does not exist" if damage == "deleted" else "truncated, corrupt, or not an nclt"
    assert_one_clear_line(cli("train", "--resume", str(run_dir)), "last.pt", what)
    assert_one_clear_line(cli("eval", str(last)), "last.pt", what)
    assert _snapshot(run_dir) == before  # nothing written, metrics.csv not truncated
    assert cli("eval", str(run_dir / "best.pt")).code == 0  # the other checkpoint still works


@pytest.mark.parametrize(
    ("key", "value", "fragment"),
    [
        ("model.arch", "resnet20", "arch='small_cnn'"),
        ("model.width", 16, "model.width=None"),
        ("model.head", "cosine", "model.head='linear'"),
        ("method.name", "ce-drw", "method='ce'"),
        ("data.imbalance", 10, "class counts"),
    ],
)
def test_resume_refuses_another_model_method_or_dataset(cli, run_dir, key, value, fragment):
    """config.yaml edited by hand: the checkpoint does not belong to the run any more."""
    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    section, name = key.split(".")
    config[section][name] = value
    (run_dir / "config.yaml").write_text(yaml.safe_dump(config))
    before = _snapshot(run_dir)
    assert_one_clear_line(cli("train", "--resume", str(run_dir)), fragment)
    assert _snapshot(run_dir) == before


def test_eval_refuses_weights_that_do_not_fit(cli, run_dir):
    """A checkpoint whose weights do not match its own config (another nclt version, or
    edited): a clear error instead of load_state_dict's traceback."""
    state = ckpt.load(run_dir / "last.pt")
    name = next(k for k in state["model"] if k.endswith("weight"))
    state["model"][name] = torch.zeros(3, 3)
    del state["model"][next(iter(reversed(state["model"])))]
    ckpt.save_atomic(state, run_dir / "edited.pt")
    assert_one_clear_line(
        cli("eval", str(run_dir / "edited.pt")), "weights do not fit the model", name
    )


@pytest.mark.skipif(torch.cuda.is_available(), reason="the case of a machine without CUDA")
def test_a_gpu_checkpoint_on_a_machine_without_cuda(cli, run_dir):
    """A run trained on a GPU (device cuda, fp16) read where there is none: the error names
    --device cpu; with it, the same accuracy as the run's own (fp16 evaluated in fp32)."""
    import json

    state = ckpt.load(run_dir / "last.pt")
    state["config"]["device"], state["config"]["precision"] = "cuda", "fp16"
    ckpt.save_atomic(state, run_dir / "gpu.pt")
    assert_one_clear_line(
        cli("eval", str(run_dir / "gpu.pt")), "CUDA is not available", "--device cpu"
    )
    out = run_dir / "eval.json"
    assert cli("eval", str(run_dir / "gpu.pt"), "--device", "cpu", "--json", str(out)).code == 0
    want = json.loads((run_dir / "results.json").read_text())["top1"]
    assert json.loads(out.read_text())["top1"] == pytest.approx(want)


def test_foreign_files_and_no_run(cli, tmp_path):
    torch.save({"state_dict": {"w": torch.ones(2)}}, tmp_path / "foreign.pt")
    assert_one_clear_line(cli("eval", str(tmp_path / "foreign.pt")), "not an nclt checkpoint")
    (tmp_path / "dir.pt").mkdir()
    assert_one_clear_line(cli("eval", str(tmp_path / "dir.pt")), "does not exist")
    assert_one_clear_line(cli("train", "--resume", str(tmp_path / "none")), "does not exist")


class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("how", ["pickle", "torch.save"])
def test_nclt_eval_of_a_malicious_checkpoint_runs_no_code(cli, tmp_path, how):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    payload = {"format": ckpt.FORMAT_VERSION, "model": _Evil(marker), "epoch": 0}
    if how == "pickle":
        with open(path, "wb") as f:
            pickle.dump(payload, f, protocol=2)
    else:  # the zip format torch.save writes, with the payload in data.pkl
        torch.save(payload, path)
    assert_one_clear_line(cli("eval", str(path)), "weights_only=True")
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text("epochs: 2\nprogress: false\n")
    os.replace(path, run / "last.pt")
    assert_one_clear_line(cli("train", "--resume", str(run)), "weights_only=True")
    assert not marker.exists()


def test_disk_full_during_a_checkpoint_write(cli, tmp_path, monkeypatch):
    """The write of epoch 2's last.pt fails half-way: epoch 1's stays, loadable; the error
    says what happened and how to continue; --resume then finishes the run."""
    real_save = torch.save

    def fill_disk_in_epoch_2(obj, f, *a, **k):
        if isinstance(obj, dict) and obj.get("epoch") == 1:  # 0-based: the second epoch
            f.write(b"PK\x03\x04 partial")
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_save(obj, f, *a, **k)

    monkeypatch.setattr(torch, "save", fill_disk_in_epoch_2)
    out = tmp_path / "run"
    res = cli(*digits_args(out, epochs=3))
    assert_one_clear_line(
        res,
        "cannot write checkpoint",
        "last.pt",
        "No space left on device",
        "previous last.pt is intact",
        "--resume",
    )
    assert ckpt.load(out / "last.pt")["epoch"] == 0
    assert sorted(p.name for p in out.iterdir() if p.name.endswith(".tmp")) == []
    monkeypatch.undo()
    assert cli("train", "--resume", str(out)).code == 0
    assert ckpt.load(out / "last.pt")["epoch"] == 2
    rows = list(csv.DictReader((out / "metrics.csv").open()))
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3]
