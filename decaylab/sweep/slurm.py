"""Sweeps beyond one machine: the launchers (submitit executors), the submission record and each point's state.

    decaylab sweep paper --out runs/paper --launcher slurm --slurm partition=gpu --slurm gpus=1 --slurm time=1:00:00
    decaylab sweep paper --out runs/paper --status      # pending / running / finished / failed per point, job ids
    decaylab sweep paper --out runs/paper --collect     # results.sqlite from the run directories (idempotent)
    decaylab report runs/paper

``--launcher submitit-local`` runs the same path through submitit's local executor (no cluster): the same tasks,
submission record, status and collection; only the executor differs, and the submitting process keeps at most
``max_running`` tasks alive itself (a local executor has no array throttle). Added to the sweep directory::

    DIR/launch.json              the submission record: launcher and job ids per run id (written atomically)
    DIR/tasks/<run_id>.json      a task's outcome (decaylab.sweep.task)
    DIR/submitit/<launcher>/     submitit's pickles and the scheduler's log of every task (<job_id>_0_log.out)

A point's state comes from its run directory (finished), its task's outcome file and the scheduler's state of
its latest job; re-launching submits only points that are not finished, queued or running. Submitting,
waiting and collecting are in decaylab.sweep.launch.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

from decaylab.registry import Registry
from decaylab.rundir import run_is_done
from decaylab.sweep.ingest import read_run
from decaylab.sweep.resources import SlurmOptions
from decaylab.sweep.spec import PlannedRun
from decaylab.sweep.task import read_outcome, write_json_atomic

QUEUED = {"PENDING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "CONFIGURING", "RESIZING", "SUSPENDED"}
RUNNING = {"RUNNING", "COMPLETING", "STAGE_OUT", "SIGNALING"}
UNKNOWN = "UNKNOWN"


class LauncherUnavailable(ValueError):
    """This machine cannot launch this way (a package or Slurm's commands are missing); the message says why."""


def require_submitit():
    try:
        import submitit
    except ImportError:
        raise LauncherUnavailable(
            'launching a sweep through submitit needs the submitit package: pip install -e ".[slurm]" '
            "(or pip install submitit)"
        ) from None
    return submitit


# ---------------------------------------------------------------- launchers


@dataclasses.dataclass(frozen=True)
class Launcher:
    check: Callable[[], None]  # raise a clear error when this machine cannot submit (before anything is written)
    make_executor: Callable[[Path, SlurmOptions, str, int], Any]  # (folder, options, job name, tasks) -> executor
    states: Callable[[Path, list[str]], dict[str, str]]  # (folder, job ids) -> scheduler state per job id
    throttles: bool  # the scheduler caps tasks running at once itself (else the submitting process does)
    poll_s: float  # how often a waiting submitter looks at its jobs


LAUNCHERS: Registry[Launcher] = Registry("launcher")


def _check_slurm() -> None:
    require_submitit()
    missing = [c for c in ("sbatch", "srun") if shutil.which(c) is None]
    if missing:
        raise LauncherUnavailable(
            f"--launcher slurm needs Slurm's {' and '.join(missing)} on PATH: submit from a login node of the "
            "cluster (try the same path here with --launcher submitit-local)"
        )


def _slurm_executor(folder: Path, options: SlurmOptions, name: str, tasks: int):
    submitit = require_submitit()
    executor = submitit.SlurmExecutor(folder=folder)
    parameters = {
        "job_name": name,
        "time": options.time,
        "nodes": 1,
        "ntasks_per_node": 1,  # one task per point; several GPUs are used by torchrun inside it
        "gpus_per_node": options.gpus or None,
        "cpus_per_task": options.cpus,
        "mem": f"{math.ceil(options.mem_gb * 1024)}MB" if options.mem_gb else None,
        "partition": options.partition,
        "account": options.account,
        "qos": options.qos,
        "constraint": options.constraint,
        "array_parallelism": options.max_running or tasks,
        "additional_parameters": {"export": "ALL"},  # the submitting shell's environment, even if SBATCH_EXPORT
    }
    executor.update_parameters(**{k: v for k, v in parameters.items() if v is not None})
    return executor


def _slurm_states(folder: Path, job_ids: list[str]) -> dict[str, str]:
    """One sacct call for all jobs (through submitit's watcher); UNKNOWN where sacct has nothing (yet)."""
    import submitit

    watcher = submitit.SlurmJob.watcher
    watcher.clear()  # no states cached from earlier calls in this process: a status is read once, fresh
    for job_id in job_ids:
        watcher.register_job(job_id)
    watcher.update()
    return {j: (watcher.get_state(j, mode="cache").split() or [UNKNOWN])[0].upper() for j in job_ids}


def _local_executor(folder: Path, options: SlurmOptions, name: str, tasks: int):
    submitit = require_submitit()
    executor = submitit.LocalExecutor(folder=folder)
    executor.update_parameters(timeout_min=options.time, gpus_per_node=options.gpus, tasks_per_node=1)
    return executor


def _local_states(folder: Path, job_ids: list[str]) -> dict[str, str]:
    """A local job id is the pid of submitit's controller process: alive means running."""
    states = {}
    for job_id in job_ids:
        try:
            os.kill(int(job_id), 0)
            states[job_id] = "RUNNING"
        except ProcessLookupError:
            states[job_id] = "ENDED"
        except (PermissionError, ValueError):
            states[job_id] = UNKNOWN
    return states


LAUNCHERS.register("slurm")(Launcher(_check_slurm, _slurm_executor, _slurm_states, throttles=True, poll_s=60.0))
LAUNCHERS.register("submitit-local")(
    Launcher(require_submitit, _local_executor, _local_states, throttles=False, poll_s=0.2)
)


# ---------------------------------------------------------------- submission record and point states


def _record_path(out: Path) -> Path:
    return out / "launch.json"


def read_record(out: Path) -> dict:
    path = _record_path(out)
    return json.loads(path.read_text()) if path.is_file() else {"runs": {}, "submissions": []}


@dataclasses.dataclass
class PointStatus:
    run: PlannedRun
    state: str  # pending | running | finished | failed
    job_id: str | None  # the latest job that ran or runs the point
    detail: str

    @property
    def to_submit(self) -> bool:
        return self.state == "failed" or (self.state == "pending" and self.job_id is None)


def _last_line(text: str | None) -> str:
    lines = [line for line in (text or "").strip().splitlines() if line.strip()]
    return lines[-1] if lines else "unknown error"


def state_of(done: bool, job_id: str | None, scheduler: str | None, outcome: dict | None) -> tuple[str, str]:
    """(state, detail) of a point from its run directory (``done``), its latest job id, the scheduler's state of
    that job (None or UNKNOWN when it reports none) and the task's outcome file. The run directory decides
    "finished"; a live scheduler state beats the outcome file, which may be from a task killed mid-run."""
    if done:
        return "finished", ""
    if job_id is None:
        return "pending", "not submitted"
    if outcome is not None and outcome.get("job_id") not in (None, job_id):
        outcome = None  # written by an earlier job of this point
    host = f"on {outcome.get('host')}" if outcome else ""
    if scheduler in QUEUED:
        return "pending", f"queued ({scheduler})"
    if scheduler in RUNNING:
        return "running", host or "starting"
    if outcome is not None and outcome.get("state") == "failed":
        return "failed", _last_line(outcome.get("error"))
    if scheduler in (None, UNKNOWN):
        if outcome is None:
            return "pending", "submitted; the scheduler reports no state (yet)"
        if outcome.get("state") == "running":
            return "running", f"{host} (the scheduler reports no state)"
    # The task ended without finishing the point: preempted, timed out, cancelled, killed (out of memory, ...).
    return "failed", f"the task ended ({scheduler or 'state unknown'}) before the point finished"


def point_statuses(plan: list[PlannedRun], out: Path, evaluate: bool) -> list[PointStatus]:
    record = read_record(out)
    latest = {run.run_id: record["runs"].get(run.run_id) for run in plan}
    by_launcher: dict[str, list[str]] = {}
    for entry in latest.values():
        if entry:
            by_launcher.setdefault(entry["launcher"], []).append(entry["job_ids"][-1])
    scheduler: dict[str, str] = {}
    for name, job_ids in by_launcher.items():
        scheduler.update(LAUNCHERS.get(name).states(out / "submitit" / name, job_ids))
    statuses = []
    for run in plan:
        job_id = latest[run.run_id]["job_ids"][-1] if latest[run.run_id] else None
        done = run_is_done(out / "runs" / run.run_id, evaluate)
        state, detail = state_of(done, job_id, scheduler.get(job_id or ""), read_outcome(out, run.run_id))
        statuses.append(PointStatus(run, state, job_id, detail))
    return statuses


def add_to_record(out: Path, launcher: str, options: SlurmOptions, jobs: Mapping[str, str]) -> None:
    record = read_record(out)
    for run_id, job_id in jobs.items():
        entry = record["runs"].setdefault(run_id, {"launcher": launcher, "job_ids": []})
        entry["launcher"] = launcher
        entry["job_ids"].append(job_id)
    record["submissions"].append(
        {"at": time.time(), "launcher": launcher, "options": dataclasses.asdict(options), "jobs": dict(jobs)}
    )
    write_json_atomic(_record_path(out), record)


def ingest(statuses: Iterable[PointStatus], out: Path, db) -> None:
    """Finished runs into the database (replaced whole: idempotent), failed ones with their error."""
    for status in statuses:
        run_id = status.run.run_id
        if status.state == "finished":
            db.mark_finished(run_id, read_run(out / "runs" / run_id))
        elif status.state == "failed":
            outcome = read_outcome(out, run_id) or {}
            current = outcome.get("job_id") == status.job_id and outcome.get("error")
            db.mark_failed(run_id, f"job {status.job_id}: {outcome['error'] if current else status.detail}")
