"""Checkpoints: Pythia-style schedule, atomic writes, corruption refused by name."""

import pytest
import torch

from scaling.checkpoint import (
    CheckpointError, checkpoint_steps, list_checkpoints, load_checkpoint, save_checkpoint)


def test_schedule_is_log_spaced_then_linear():
    assert checkpoint_steps(100, 20) == [0, 1, 2, 4, 8, 16, 20, 40, 60, 80, 100]
    assert checkpoint_steps(5, 20) == [0, 1, 2, 4, 5]


def test_roundtrip_and_unfinished_write_ignored(tmp_path):
    state = {"model": {"w": torch.arange(6.0)}, "step": 3}
    path = save_checkpoint(tmp_path, 3, state, {"tokens": 30})
    # an unfinished later write: the .pt exists but its metadata was never written
    (path.parent / "step_000007.pt").write_bytes(b"partial")
    (path.parent / "step_000009.pt.tmp").write_bytes(b"partial")
    assert [s for s, _ in list_checkpoints(tmp_path)] == [3]
    loaded, meta = load_checkpoint(path)
    assert torch.equal(loaded["model"]["w"], state["model"]["w"]) and meta["tokens"] == 30


@pytest.mark.parametrize("damage", ["flip", "truncate"])
def test_corrupted_checkpoint_is_refused_by_name(tmp_path, damage):
    path = save_checkpoint(tmp_path, 1, {"model": {"w": torch.randn(100)}}, {})
    data = bytearray(path.read_bytes())
    if damage == "flip":
        data[len(data) // 2] ^= 0xFF
    else:
        data = data[: len(data) // 2]
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="step_000001.pt: corrupted"):
        load_checkpoint(path)


def test_missing_checkpoint(tmp_path):
    with pytest.raises(CheckpointError, match="no such checkpoint"):
        load_checkpoint(tmp_path / "checkpoints" / "step_000001.pt")
