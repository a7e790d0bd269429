"""Atomic checkpoints: complete-or-absent directories, pruning, corruption detection and fallback."""

from __future__ import annotations

import pytest
import torch

from decaylab.run.checkpoint import CorruptCheckpoint, load_checkpoint, load_latest, save_checkpoint
from decaylab.rundir import list_checkpoints


def _parts(seed: int) -> dict:
    g = torch.Generator().manual_seed(seed)
    return {"model": {"w": torch.randn(8, 8, generator=g)}, "trainer": {"step": seed, "rng": torch.get_rng_state()}}


def test_save_load_round_trip_and_keep_last(tmp_path):
    for step in (2, 4, 6):
        save_checkpoint(tmp_path, step, _parts(step), keep=2)
    assert [s for s, _ in list_checkpoints(tmp_path)] == [4, 6]
    step, parts = load_latest(tmp_path)
    assert step == 6
    torch.testing.assert_close(parts["model"]["w"], _parts(6)["model"]["w"], rtol=0, atol=0)
    assert parts["trainer"]["step"] == 6


def test_interrupted_write_is_invisible_and_cleaned(tmp_path):
    save_checkpoint(tmp_path, 3, _parts(3), keep=2)
    # What a kill -9 during a save leaves behind: a half-written temporary directory.
    stale = tmp_path / "checkpoints" / ".tmp-step-5.99999"
    stale.mkdir()
    (stale / "model.pt").write_bytes(b"\x00" * 10)
    assert [s for s, _ in list_checkpoints(tmp_path)] == [3]
    assert load_latest(tmp_path)[0] == 3
    save_checkpoint(tmp_path, 5, _parts(5), keep=2)
    assert not stale.exists()


def test_truncated_file_is_named_and_previous_checkpoint_used(tmp_path, capsys):
    save_checkpoint(tmp_path, 1, _parts(1), keep=3)
    newest = save_checkpoint(tmp_path, 2, _parts(2), keep=3)
    data = (newest / "model.pt").read_bytes()
    (newest / "model.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(CorruptCheckpoint, match=r"step-2 is corrupt: model.pt has \d+ bytes, expected"):
        load_checkpoint(newest)
    step, parts = load_latest(tmp_path)
    assert step == 1 and parts["trainer"]["step"] == 1
    assert "step-2 is corrupt" in capsys.readouterr().err


def test_all_checkpoints_corrupt_is_a_clear_error(tmp_path):
    only = save_checkpoint(tmp_path, 7, _parts(7), keep=1)
    (only / "trainer.pt").write_bytes(b"garbage")
    with pytest.raises(CorruptCheckpoint, match="no readable checkpoint.*step-7.*trainer.pt"):
        load_latest(tmp_path)


def test_same_step_saved_twice_is_replaced(tmp_path):
    save_checkpoint(tmp_path, 4, _parts(1), keep=2)
    save_checkpoint(tmp_path, 4, _parts(4), keep=2)
    assert load_latest(tmp_path)[1]["trainer"]["step"] == 4
    assert load_latest(tmp_path / "missing") is None
