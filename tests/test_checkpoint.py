"""Checkpoints: atomic writes, safe loading, clear errors."""

import os
import pickle

import numpy as np
import pytest
import torch

from nclt import checkpoint as ckpt
from nclt.errors import CheckpointError


def _state(**extra):
    return {"format": ckpt.FORMAT_VERSION, "model": {"w": torch.ones(3)}, "epoch": 1, **extra}


def test_roundtrip_with_rng_state(tmp_path):
    torch.manual_seed(3)
    np.random.seed(4)
    state = _state(rng=ckpt.rng_state())
    ckpt.save_atomic(state, tmp_path / "last.pt")
    a = (torch.rand(2), np.random.rand(2))
    loaded = ckpt.load(tmp_path / "last.pt")
    ckpt.set_rng_state(loaded["rng"])
    b = (torch.rand(2), np.random.rand(2))
    assert torch.equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]  # no temp file left behind


def test_truncated_and_garbage_files(tmp_path):
    ckpt.save_atomic(_state(), tmp_path / "good.pt")
    data = (tmp_path / "good.pt").read_bytes()
    (tmp_path / "trunc.pt").write_bytes(data[: len(data) // 2])
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    for name in ("trunc.pt", "junk.pt", "missing.pt"):
        with pytest.raises(CheckpointError, match=name):
            ckpt.load(tmp_path / name)


def test_foreign_torch_file_is_refused(tmp_path):
    torch.save({"state_dict": {}}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="not an nclt checkpoint"):
        ckpt.load(tmp_path / "other.pt")


class _Evil:
    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_malicious_pickle_runs_no_code(tmp_path):
    marker = tmp_path / "pwned"
    evil = _Evil()
    evil.marker = marker
    path = tmp_path / "evil.pt"
    with open(path, "wb") as f:
        pickle.dump({"format": 1, "model": evil}, f)
    with pytest.raises(CheckpointError):
        ckpt.load(path)
    assert not marker.exists()
    with open(path, "rb") as f:  # control: a plain unpickler would have run the payload
        pickle.load(f)
    assert marker.exists()


def test_failed_write_keeps_previous_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "last.pt"
    ckpt.save_atomic(_state(epoch=1), path)

    def disk_full(*a, **k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", disk_full)
    with pytest.raises(OSError, match="No space"):
        ckpt.save_atomic(_state(epoch=2), path)
    monkeypatch.undo()
    assert ckpt.load(path)["epoch"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]
