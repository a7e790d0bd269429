"""A sweep's directory, and the run directory as the sweep's unit of resumption, for every launcher.

A point is done when its run directory holds summary.json (and eval.json when the spec evaluates); it is
resumed when the directory holds its config.json. ``prepare_sweep`` plans a sweep and records the plan in
the results database; ``run_point`` trains (or resumes) and evaluates one point. Neither cares which process
or machine runs it, so a point started by one launcher can be finished by another.
"""

from __future__ import annotations

import dataclasses
import fcntl
import json
import os
import time
from pathlib import Path
from typing import Any, Mapping

from decaylab.files import atomic_write_text
from decaylab.rundir import EVAL, has_started, has_trained
from decaylab.sweep.backend import RunBackend
from decaylab.sweep.db import ResultsDB
from decaylab.sweep.spec import PlannedRun, SweepSpec, expand


def lock(path: Path):
    """An exclusive non-blocking flock on ``path``; None when another process holds it. Released on exit/kill."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    os.ftruncate(fd, 0)
    os.write(fd, str(os.getpid()).encode())
    return fd


def set_aside_aborted(run_dir: Path) -> None:
    """A run directory with files but no config.json (killed while being created) cannot be resumed, and training
    refuses a non-empty directory; move it aside (nothing is deleted) so the point starts afresh."""
    if run_dir.is_dir() and any(run_dir.iterdir()) and not has_started(run_dir):
        run_dir.rename(run_dir.with_name(f"{run_dir.name}.aborted-{int(time.time())}"))


def run_point(backend: RunBackend, config: dict, run_dir: Path, evaluate: Mapping[str, Any] | None, train=None):
    """Train the point into ``run_dir`` unless it has trained (resuming when it has started), then evaluate it
    unless eval.json exists. ``train`` replaces ``backend.train`` (a launcher that trains under torchrun)."""
    if not has_trained(run_dir):
        set_aside_aborted(run_dir)
        (train or backend.train)(config, run_dir, has_started(run_dir))
    if evaluate is not None and backend.evaluate is not None and not (run_dir / EVAL).is_file():
        backend.evaluate(run_dir, **evaluate)


@dataclasses.dataclass
class PreparedSweep:
    plan: list[PlannedRun]
    db: ResultsDB
    evaluate: dict | None  # the [evaluation] options when points are evaluated, else None


def prepare_sweep(
    spec: SweepSpec,
    out: Path,
    overrides: Mapping[str, Any] | None,
    backend: RunBackend,
    plan: list[PlannedRun] | None = None,
) -> PreparedSweep:
    """Resolve every point (bad keys raise here, before anything runs) unless ``plan`` is given, check that
    ``out`` holds this sweep, record the plan in results.sqlite and the invocation in sweep.json. The caller
    holds the sweep lock."""
    plan = plan if plan is not None else expand(spec, backend.resolve, overrides)
    record = {"spec": dataclasses.asdict(spec), "overrides": dict(overrides or {})}
    db = ResultsDB(out / "results.sqlite")
    previous = db.spec()
    if previous and previous["spec"]["name"] != spec.name:
        raise FileExistsError(
            f"{out} holds results of sweep {previous['spec']['name']!r}, not {spec.name!r}; use another --out"
        )
    db.set_plan(record, plan)
    atomic_write_text(out / "sweep.json", json.dumps(record, indent=2, sort_keys=True, default=str) + "\n")
    evaluate = dict(spec.evaluation) if spec.evaluate and backend.evaluate is not None else None
    return PreparedSweep(plan, db, evaluate)


def open_sweep_dir(out: Path):
    """Create the sweep directory and take its lock (a file descriptor; close it to release)."""
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"--out {out} is a file; give a directory for the sweep")
    out.mkdir(parents=True, exist_ok=True)
    fd = lock(out / ".sweep.lock")
    if fd is None:
        raise FileExistsError(f"another `decaylab sweep` is running in {out}; wait for it or use another --out")
    return fd
