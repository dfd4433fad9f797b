"""``training.checkpoint``: the format version is checked on read; the trainer's stop rule."""
from __future__ import annotations

import pytest
import torch

from audioembed.errors import AudioembedError
from training.checkpoint import CHECKPOINT_FORMAT, CheckpointError, load_checkpoint, read_checkpoint
from training.trainer import stop_reason


def _save(path, **fields):
    torch.save({"model": {}, "step": 1, "triplets_seen": 2, "config": {}, **fields}, path)
    return path


def test_a_checkpoint_of_another_format_is_refused(tmp_path):
    with pytest.raises(CheckpointError, match="format 2 is not 1"):
        read_checkpoint(_save(tmp_path / "a.pt", format=2))
    with pytest.raises(CheckpointError, match="format None"):
        read_checkpoint(_save(tmp_path / "b.pt"))
    assert load_checkpoint(_save(tmp_path / "c.pt", format=CHECKPOINT_FORMAT))["step"] == 1


def test_not_a_checkpoint(tmp_path):
    (tmp_path / "x.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="not a readable training checkpoint"):
        load_checkpoint(tmp_path / "x.pt")
    torch.save({"format": CHECKPOINT_FORMAT, "model": {}}, tmp_path / "y.pt")
    with pytest.raises(CheckpointError, match="missing"):
        load_checkpoint(tmp_path / "y.pt")
    assert issubclass(CheckpointError, (AudioembedError, ValueError))


def test_stop_reason():
    assert stop_reason(None, 10, None, 5.0, None) is None
    assert stop_reason("SIGTERM", 10, 5, 5.0, 1.0) == "signal SIGTERM"
    assert stop_reason(None, 10, 10, 0.0, None) == "max_triplets"
    assert stop_reason(None, 10, 11, 2.0, 2.0) == "max_minutes"
    assert stop_reason(None, 10, 11, 1.9, 2.0) is None
