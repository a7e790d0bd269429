"""Fixtures for the training tests."""

from __future__ import annotations

import pytest
from training_helpers import small_run

from decaylab.run.config import RunConfig


@pytest.fixture
def run_config() -> RunConfig:
    return small_run()
