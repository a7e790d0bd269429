"""Design-space studies: a sweep spec -> resolved runs (hashed run directories) -> results.sqlite.

    from decaylab.sweep import load_spec, run_sweep
    result = run_sweep(load_spec("quick"), "runs/quick", workers=2, overrides={"train.max_steps": 5})

``decaylab report DIR`` then turns the database into report.md and report.html. On a cluster,
``launch_sweep(spec, "runs/quick", "slurm", SlurmOptions(gpus=1))`` submits the points as one Slurm job array.
"""

from decaylab.sweep.backend import RunBackend, default_backend
from decaylab.sweep.db import ResultsDB
from decaylab.sweep.launch import collect, launch_sweep
from decaylab.sweep.resources import SlurmOptions
from decaylab.sweep.runner import SweepResult, run_sweep
from decaylab.sweep.spec import Point, SweepSpec, expand, load_spec, preset_names, run_id_of, spec_from_dict

__all__ = [
    "RunBackend",
    "default_backend",
    "ResultsDB",
    "collect",
    "launch_sweep",
    "SlurmOptions",
    "SweepResult",
    "run_sweep",
    "Point",
    "SweepSpec",
    "expand",
    "load_spec",
    "preset_names",
    "run_id_of",
    "spec_from_dict",
]
