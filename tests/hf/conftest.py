"""Tiny models and runs for the transformers / lm-eval tests (torch on one thread)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from decaylab.config import with_overrides
from decaylab.model import DecayLM, ModelConfig
from decaylab.run.config import RunConfig
from tests.evaluation.eval_run_helpers import assemble_run, text_data


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    yield


def random_model(overrides: dict, dtype=torch.float32, scale: float = 0.3) -> DecayLM:
    """A tiny DecayLM moved off its init (zero FFN outputs, ones) so that every path carries signal."""
    torch.manual_seed(0)
    model = DecayLM(ModelConfig.from_preset("tiny", overrides)).to(dtype).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * scale)
    return model


@pytest.fixture(scope="session")
def bpe_run(tmp_path_factory) -> Path:
    """A finished-looking text run (byte-level BPE tokenizer, untrained RoPE model); copy it before changing it."""
    root = tmp_path_factory.mktemp("hf_run")
    cfg = RunConfig(model=ModelConfig.from_preset("tiny", {"pos": "rope"}), data=text_data(root))
    cfg = with_overrides(cfg, {"train.seq_len": 64})
    (root / "run").mkdir()
    assemble_run(root / "run", cfg)
    return root / "run"
