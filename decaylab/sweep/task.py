"""One point of a sweep inside one task of a job array (Slurm, or submitit's local executor).

A task never writes the results database (SQLite over a network filesystem is not safe with many writers). It
writes only files it owns: the run directory (the resume unit), its output in ``DIR/logs/<run_id>.log``, and its
outcome in ``DIR/tasks/<run_id>.json``, replaced atomically::

    {"state": "running" | "finished" | "failed", "job_id": "4242_7", "host": ..., "started_at": ..., "error": ...}

The submitting process (or ``decaylab sweep ... --collect``) reads these into the database later.

A point that asks for several GPUs trains under torchrun, started by the task on its node, one process per GPU
(``decaylab train --config ... --resume``); the task then evaluates the run itself. When Slurm preempts a task or
its time runs out, submitit calls ``PointTask.checkpoint`` and requeues the same point, which resumes from its
newest checkpoint.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import socket
import subprocess
import sys
import time
import traceback
from pathlib import Path

from decaylab.files import atomic_write_text
from decaylab.sweep.backend import RunBackend
from decaylab.sweep.sweepdir import lock, run_point


def outcome_path(sweep_dir: Path, run_id: str) -> Path:
    return Path(sweep_dir) / "tasks" / f"{run_id}.json"


def write_json_atomic(path: Path, data: dict) -> None:
    """``data`` as JSON, atomically: readers (on any node of a shared disk) see the old or the new file whole."""
    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=True) + "\n")


def read_outcome(sweep_dir: Path, run_id: str) -> dict | None:
    path = outcome_path(sweep_dir, run_id)
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except json.JSONDecodeError:  # written atomically, so only a hand-edited file gets here
        return {"state": "failed", "error": f"{path} is not valid JSON"}


def torchrun_command(processes: int, config_path: Path, run_dir: Path, resume: bool) -> list[str]:
    """Train one point on this node with one process per GPU; the task evaluates afterwards."""
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={processes}",
               "-m", "decaylab", "train", "--config", str(config_path), "--out", str(run_dir), "--no-eval"]  # fmt: skip
    return command + (["--resume"] if resume else [])


@contextlib.contextmanager
def _output_to(log_path: Path):
    """Send this process's stdout/stderr (and its children's) to ``log_path`` for the duration."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    log = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(log, 1)
    os.dup2(log, 2)
    try:
        yield
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for fd in (*saved, log):
            os.close(fd)


def _usable_cpus() -> int:
    """The CPUs this process may run on: its Slurm allocation inside a job (cgroup affinity), else all."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def _job_id() -> str | None:
    try:
        import submitit

        return submitit.JobEnvironment().job_id
    except Exception:  # not inside a submitit job (a direct call, e.g. from a test)
        return None


@dataclasses.dataclass(frozen=True)
class PointTask:
    """The callable submitit pickles into every array task: ``task(run_id, config)`` runs that point."""

    sweep_dir: str
    backend: RunBackend
    evaluate: dict | None  # the spec's [evaluation] options; None: train only
    threads: int | None = None  # torch threads; None: the CPUs this task may use (its Slurm allocation)
    processes: int = 1  # > 1: train under torchrun, one process per GPU

    def __call__(self, run_id: str, config: dict) -> str:
        """Train and evaluate the point; returns "finished", or "busy" when another task holds its run."""
        threads = self.threads or _usable_cpus()
        for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
            os.environ[var] = str(threads)
        if "torch" in sys.modules:
            sys.modules["torch"].set_num_threads(threads)
        sweep_dir = Path(self.sweep_dir)
        run_dir = sweep_dir / "runs" / run_id
        (sweep_dir / "locks").mkdir(parents=True, exist_ok=True)
        held = lock(sweep_dir / "locks" / f"{run_id}.lock")
        if held is None:
            return "busy"  # a duplicate submission: the other task owns the run and its outcome file
        outcome = {"state": "running", "job_id": _job_id(), "host": socket.gethostname(), "started_at": time.time()}
        write_json_atomic(outcome_path(sweep_dir, run_id), outcome)
        try:
            with _output_to(sweep_dir / "logs" / f"{run_id}.log"):
                try:
                    run_point(self.backend, config, run_dir, self.evaluate, train=self._trainer(sweep_dir, run_id))
                except Exception:
                    print(traceback.format_exc(), file=sys.stderr, flush=True)
                    raise
        except Exception as e:
            error = "".join(traceback.format_exception(type(e), e, e.__traceback__))
            self._end(sweep_dir, run_id, outcome, "failed", error)
            raise
        except BaseException as e:  # submitit's exit after requeueing a preempted task, or an interrupt
            self._end(sweep_dir, run_id, outcome, "failed", f"stopped ({type(e).__name__}): preempted, timed out "
                      "or cancelled; it resumes from its checkpoint when requeued or resubmitted")  # fmt: skip
            raise
        finally:
            os.close(held)
        self._end(sweep_dir, run_id, outcome, "finished")
        return "finished"

    @staticmethod
    def _end(sweep_dir: Path, run_id: str, outcome: dict, state: str, error: str | None = None) -> None:
        ended = {**outcome, "state": state, "ended_at": time.time()}
        write_json_atomic(outcome_path(sweep_dir, run_id), {**ended, "error": error} if error else ended)

    def _trainer(self, sweep_dir: Path, run_id: str):
        """None (the backend trains in this process), or a function that trains under torchrun."""
        if self.processes == 1:
            return None
        config_path = sweep_dir / "tasks" / f"{run_id}.config.json"

        def train_under_torchrun(config: dict, run_dir: Path, resume: bool) -> None:
            write_json_atomic(config_path, config)
            subprocess.run(torchrun_command(self.processes, config_path, run_dir, resume), check=True)

        return train_under_torchrun

    def checkpoint(self, run_id: str, config: dict):
        """Called by submitit when the task is preempted or times out: requeue the same point (it resumes)."""
        from submitit.helpers import DelayedSubmission

        return DelayedSubmission(self, run_id, config)
