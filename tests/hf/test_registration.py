"""``import decaylab`` registers with transformers' auto classes without importing transformers itself."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

SCRIPT = """
import sys
import decaylab
assert "transformers" not in sys.modules, "import decaylab imported transformers"
import transformers
assert "decaylab.hf.modeling" not in sys.modules and "transformers.modeling_utils" not in sys.modules
from transformers import AutoConfig
config = AutoConfig.for_model("decaylab")  # registered when transformers loaded its AutoConfig module
assert "decaylab.hf.modeling" not in sys.modules  # the model class waits for AutoModelForCausalLM
from transformers import AutoModelForCausalLM
model = AutoModelForCausalLM.from_config(AutoConfig.for_model("decaylab", decaylab={"vocab_size": 64, "d_model": 16,
                                         "n_layers": 1, "n_heads": 2, "ffn_dim": 32}))
print(type(config).__name__, type(model).__name__, model.model.cfg.d_model)
"""


def test_lazy_registration(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-c", SCRIPT], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "could not register" not in proc.stderr
    assert proc.stdout.split() == ["DecayLabConfig", "DecayLabForCausalLM", "16"]
