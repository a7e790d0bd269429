"""Atomic writes: a file is replaced whole, nothing is left behind, and a failed write keeps the old file."""

from __future__ import annotations

import pytest

from decaylab.files import atomic_write_text


def test_atomic_write_text(tmp_path):
    atomic_write_text(tmp_path / "a.json", "{}\n")
    atomic_write_text(tmp_path / "a.json", '{"x": 1}\n')
    assert (tmp_path / "a.json").read_text() == '{"x": 1}\n'
    assert [p.name for p in tmp_path.iterdir()] == ["a.json"]


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    atomic_write_text(tmp_path / "a.json", "old\n")
    with pytest.raises(TypeError):
        atomic_write_text(tmp_path / "a.json", None)  # the write fails after the temporary file was created
    assert (tmp_path / "a.json").read_text() == "old\n"
    assert [p.name for p in tmp_path.iterdir()] == ["a.json"]
