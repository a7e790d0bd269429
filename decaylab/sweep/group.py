"""What a sweep's worker process does with its points: one, or several (``--runs-per-worker K``) trained in turns.

A GPU time-slices between processes, so small runs packed as separate processes on one card do not run at once;
runs in one process can (``decaylab.training.together``: each on its own CUDA stream). The worker locks each of
its points (a point another process holds is left alone), trains the rest (several together through the
backend's ``train_group``), evaluates and ingests each, and sends the parent one outcome per point through a
pipe: finished, failed, busy or interrupted. A worker that dies before reporting fails the points it held.
Output goes to the first point's log; the other points' log names are links to it.
"""

from __future__ import annotations

import os
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from decaylab.rundir import has_started
from decaylab.sweep.backend import RunBackend
from decaylab.sweep.db import ResultsDB
from decaylab.sweep.ingest import read_run
from decaylab.sweep.sweepdir import lock, run_point, set_aside_aborted
from decaylab.training import stopping

INTERRUPTED = "interrupted; run the sweep again to resume"


def _error_text(error: BaseException) -> str:
    return "".join(traceback.format_exception(type(error), error, error.__traceback__))


def _stoppable(train: Callable[..., Any]) -> Callable[..., Any]:
    """``train`` with a signal stopping it after a step, with a checkpoint (decaylab.training.stopping)."""

    def stoppable(*args: Any) -> Any:
        with stopping.between_steps():
            return train(*args)

    return stoppable


def _train_together(backend: RunBackend, held: list[tuple[str, dict, Path]]) -> dict[str, BaseException]:
    """Train the held points that have not trained yet together, when there are several and the backend can;
    returns the exception of each point that failed. The rest is left to ``run_point``, one by one."""
    todo = [(run_id, config, path) for run_id, config, path in held if not (path / "summary.json").is_file()]
    if backend.train_group is None or len(todo) < 2:
        return {}
    for _, _, path in todo:
        set_aside_aborted(path)
    results = backend.train_group([(config, path, has_started(path)) for _, config, path in todo])
    return {run_id: r for (run_id, _, _), r in zip(todo, results) if isinstance(r, BaseException)}


def group_worker(runs: list[tuple[str, dict, str]], db_path: str, backend: RunBackend, evaluate: dict | None,
                 conn: Any) -> dict[str, str]:
    """One group in a worker process (its environment already set up by the runner): the outcome of each point, also
    sent through ``conn``."""
    paths = {run_id: Path(run_dir) for run_id, _, run_dir in runs}
    sweep_dir = next(iter(paths.values())).parent.parent
    (sweep_dir / "locks").mkdir(exist_ok=True)
    (sweep_dir / "logs").mkdir(exist_ok=True)
    outcomes: dict[str, str] = {}
    held, locks = [], []
    for run_id, config, _ in runs:
        fd = lock(sweep_dir / "locks" / f"{run_id}.lock")
        if fd is None:
            outcomes[run_id] = "busy"
        else:
            held.append((run_id, config, paths[run_id]))
            locks.append(fd)
    if not held:
        conn.send(outcomes)
        return outcomes
    log_path = sweep_dir / "logs" / f"{held[0][0]}.log"
    log = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    for run_id, _, _ in held[1:]:
        link = sweep_dir / "logs" / f"{run_id}.log"
        link.unlink(missing_ok=True)
        os.link(log_path, link)
    sys.stdout.flush()  # a reused worker: what the previous group printed stays in the previous group's log
    sys.stderr.flush()
    os.dup2(log, 1)
    os.dup2(log, 2)
    os.close(log)
    db = ResultsDB(db_path)
    try:
        for run_id, _, _ in held:
            db.mark_running(run_id)
        with stopping.between_steps():  # the driver's SIGTERM (or a Ctrl-C) stops after a step, with checkpoints
            errors = _train_together(backend, held)
        for run_id, config, path in held:
            try:
                if run_id in errors:
                    raise errors[run_id]
                # trains what is not trained yet (stoppable as above), then evaluates (a signal stops it at once)
                run_point(backend, config, path, evaluate, train=_stoppable(backend.train))
                db.mark_finished(run_id, read_run(path))
                outcomes[run_id] = "finished"
            except Exception as failure:  # noqa: BLE001
                text = _error_text(failure)
                print(f"{run_id}:\n{text}", file=sys.stderr, flush=True)
                db.mark_failed(run_id, text)
                outcomes[run_id] = "failed"
    except KeyboardInterrupt:
        for run_id, _, _ in held:
            if run_id not in outcomes:
                db.mark_failed(run_id, INTERRUPTED, status="interrupted")
                outcomes[run_id] = "interrupted"
        conn.send(outcomes)
        sys.exit(130)
    finally:
        db.close()
        for fd in locks:  # a reused worker goes on to other points: these are free again
            os.close(fd)
    conn.send(outcomes)
    return outcomes
