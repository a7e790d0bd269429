"""Fixtures of the sweep tests: subprocess import paths for submitit's tasks, and stand-in Slurm commands."""

from __future__ import annotations

import os
from pathlib import Path

import fake_slurm as stand_in
import pytest

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent


@pytest.fixture
def task_path(monkeypatch):
    """submitit's tasks are fresh Python processes: they must import this checkout and the fake backend."""
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(REPO), str(HERE), os.environ.get("PYTHONPATH", "")]))


@pytest.fixture
def fake_slurm(tmp_path, monkeypatch):
    return stand_in.install(tmp_path / "fake-slurm", monkeypatch)
