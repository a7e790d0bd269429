"""Training: run configurations and presets, the resumable (data-parallel) loop, checkpoints.

``train(run_config, out_dir, resume=False) -> summary`` trains into a run directory (docs/training.md).
"""

from decaylab.training.config import RUN_PRESETS, RunConfig, TrainConfig, resolve_run_config, run_preset
from decaylab.training.loop import TrainingDiverged, train

__all__ = ["RunConfig", "TrainConfig", "RUN_PRESETS", "run_preset", "resolve_run_config", "train", "TrainingDiverged"]
