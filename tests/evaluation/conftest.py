"""Tiny run directories for the evaluation tests: one really trained, others assembled from an untrained model."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from eval_run_helpers import TRAIN, text_data

from decaylab.config import with_overrides
from decaylab.data import build_dataset
from decaylab.model import ModelConfig
from decaylab.run.config import RunConfig


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory) -> Path:
    """A text-corpus run trained for 3 steps (checkpoints step-2 and step-3); copy it before changing it."""
    from decaylab.training.loop import train

    root = tmp_path_factory.mktemp("trained")
    data = text_data(root)
    vocab = build_dataset(data).vocab_size
    cfg = with_overrides(RunConfig(model=ModelConfig.from_preset("tiny", {"vocab_size": vocab}), data=data), TRAIN)
    train(cfg, root / "run")
    return root / "run"


@pytest.fixture
def run_copy(trained_run, tmp_path) -> Path:
    """A private copy of the trained run, free to damage."""
    return Path(shutil.copytree(trained_run, tmp_path / "run"))
