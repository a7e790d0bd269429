"""Training: the resumable (data-parallel) loop, the optimizer, runs trained together (configurations and
checkpoints are in ``decaylab.run``).

``train(run_config, out_dir, resume=False) -> summary`` trains into a run directory (docs/training.md).
"""

import os

# Intel MKL picks matmul code paths by memory alignment unless told otherwise, which makes CPU results differ
# between processes in the last bits; "AUTO" keeps its fast paths but fixes the choice, so a resumed run
# reproduces the uninterrupted one exactly. It must be set before MKL's first matmul; a value already in the
# environment wins.
os.environ.setdefault("MKL_CBWR", "AUTO")

from decaylab.lazy import lazy_exports  # noqa: E402

# Names resolve on first use, so importing one submodule (a command-line module, say) does not import
# torch and the rest of the package.
_EXPORTS = {
    "RunConfig": "decaylab.run.config",
    "TrainConfig": "decaylab.run.config",
    "RUN_PRESETS": "decaylab.run.config",
    "run_preset": "decaylab.run.config",
    "resolve_run_config": "decaylab.run.config",
    "train": "decaylab.training.loop",
    "TrainingDiverged": "decaylab.training.loop",
}
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
__all__ = list(_EXPORTS)
