"""Training: run configurations and presets, the resumable (data-parallel) loop, checkpoints.

``train(run_config, out_dir, resume=False) -> summary`` trains into a run directory (docs/training.md).
"""

import os

# Intel MKL picks matmul code paths by memory alignment unless told otherwise, which makes CPU results differ
# between processes in the last bits; "AUTO" keeps its fast paths but fixes the choice, so a resumed run
# reproduces the uninterrupted one exactly. It must be set before MKL's first matmul; a value already in the
# environment wins.
os.environ.setdefault("MKL_CBWR", "AUTO")

from decaylab.training.config import RUN_PRESETS, RunConfig, TrainConfig, resolve_run_config, run_preset  # noqa: E402
from decaylab.training.loop import TrainingDiverged, train  # noqa: E402

__all__ = ["RunConfig", "TrainConfig", "RUN_PRESETS", "run_preset", "resolve_run_config", "train", "TrainingDiverged"]
