"""Run a sweep: every planned point in its own run directory, in parallel worker processes, resumably.

Layout of a sweep directory::

    DIR/sweep.json          the spec and the --set overrides of the latest invocation
    DIR/results.sqlite      the results database (decaylab.sweep.db)
    DIR/runs/<run_id>/      one run directory per resolved config (run_id = hash of the config)
    DIR/logs/<run_id>.log   the worker's output (training progress, warnings, the traceback of a failure)
    DIR/locks/<run_id>.lock held while a worker runs the point

Each worker process (pinned to one device, ``cpu_count // workers`` torch threads) takes a group of points from
the driver (one point, or ``runs_per_worker`` K trained together; near the end of the queue fewer, so the workers end
together), reports each point's outcome through a pipe and takes the next group: its start-up, data and compiled
kernels are paid once. A crash, an out-of-memory kill or a CUDA error takes down only the group in training, and
a worker whose group had a failure exits, so the next group starts in a fresh process. A point is skipped when its run
directory already holds summary.json (and eval.json when the spec evaluates); a point whose directory holds
its config.json is resumed with ``train(..., resume=True)`` (from its newest checkpoint, if any). Failures are
recorded with their traceback and the sweep goes on.
Ctrl-C or a kill leaves every run directory resumable: checkpoints are atomic, and a run marked "running" by
a dead process is simply run again. A lock per run directory keeps two processes off the same run.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import json
import math
import multiprocessing
import multiprocessing.connection
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any, Callable, Mapping

from decaylab.rundir import list_checkpoints, run_is_done
from decaylab.sweep.archive import IMPORTED_RUNS
from decaylab.sweep.backend import RunBackend, default_backend
from decaylab.sweep.db import ResultsDB
from decaylab.sweep.group import INTERRUPTED, group_worker
from decaylab.sweep.ingest import read_run
from decaylab.sweep.mps import check_available, mps_daemon
from decaylab.sweep.placement import is_cuda
from decaylab.sweep.spec import PlannedRun, SweepSpec, expand
from decaylab.sweep.sweepdir import open_sweep_dir, prepare_sweep
from decaylab.training import start_up, stopping


@dataclasses.dataclass
class SweepResult:
    planned: int
    skipped: int  # already finished before this invocation
    finished: list[str]
    failed: list[str]
    busy: list[str]  # run by another process right now

    @property
    def ok(self) -> bool:
        return not self.failed and not self.busy


# ---------------------------------------------------------------- worker process


def _raise_interrupt(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


def _enter_worker(threads: int, device: str | None, env: Mapping[str, str]) -> None:
    """Threads, the one visible device, ``env`` (an MPS daemon's pipes) and SIGTERM-as-interrupt for a worker
    process; before it first touches CUDA."""
    os.environ.update(env)
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):  # read by torch when it is imported here
        os.environ[var] = str(threads)
    if "torch" in sys.modules:  # preloaded by the fork server: its thread pool is not started yet, so size it now
        sys.modules["torch"].set_num_threads(threads)
    if device is not None:
        # One device per worker: the run sees it as its only GPU (or none), so the config needs no device key.
        index = device.partition(":")[2] or "0"
        os.environ["CUDA_VISIBLE_DEVICES"] = index if is_cuda(device) else ""
    signal.signal(signal.SIGTERM, _raise_interrupt)


def _release_memory() -> None:
    """Between two groups of a reused worker: the finished group's models, graphs and cached device memory."""
    gc.collect()
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_initialized():
        torch.cuda.empty_cache()


def _entry(db_path: str, backend: RunBackend, evaluate: dict | None, threads: int, device: str | None,
           env: Mapping[str, str], conn: Any) -> None:
    """Entry point of a worker process: groups of points (one, or ``--runs-per-worker``) from the driver, each by
    decaylab.sweep.group, until the driver sends None or a point fails.

    One process for many groups pays its start-up (CUDA context, data, compiled kernels) once. After a failure it
    exits, and the driver starts a fresh one: a CUDA error or a corrupt allocator must not reach the next group.
    """
    _enter_worker(threads, device, env)
    first = True
    try:
        while (runs := conn.recv()) is not None:
            if not first:
                _release_memory()
                start_up.restart_clock()
            first = False
            if _worker_exits_after(group_worker(runs, db_path, backend, evaluate, conn)):
                return
    except KeyboardInterrupt:  # stopped while waiting for a group (group_worker handles one in a group)
        return


def _worker_exits_after(outcomes: dict[str, str]) -> bool:
    return "failed" in outcomes.values()  # (an interrupted group_worker exits by itself)


# ---------------------------------------------------------------- driver


def worker_context():
    """Fresh processes for workers: a fork server where available, else spawn (never plain fork).

    Plain fork would copy the parent's thread pools and any CUDA state into each worker. A fork server is a
    clean single-threaded process that imports decaylab (and with it torch) once and forks each worker from
    there, so workers start in milliseconds instead of re-importing torch; CUDA is first touched in the worker,
    after it has restricted CUDA_VISIBLE_DEVICES to its own device.
    """
    if "forkserver" in multiprocessing.get_all_start_methods():
        ctx = multiprocessing.get_context("forkserver")
        ctx.set_forkserver_preload(["decaylab.sweep.runner"])
        return ctx
    return multiprocessing.get_context("spawn")


def _threads_per_worker(workers: int) -> int:
    return max(1, (os.cpu_count() or 1) // workers)


def _last_line(text: str | None) -> str:
    lines = [line for line in (text or "").strip().splitlines() if line.strip()]
    return lines[-1] if lines else "unknown error"


def run_sweep(
    spec: SweepSpec,
    out_dir: str | Path,
    *,
    workers: int = 1,
    devices: list[str] | None = None,
    overrides: Mapping[str, Any] | None = None,
    backend: RunBackend | None = None,
    log: Callable[[str], None] = print,
    runs_per_worker: int = 1,
    stack_seeds: bool = False,
    mps: bool = False,
) -> SweepResult:
    """Run every point of ``spec`` into ``out_dir``; see the module docstring. Returns what happened.

    ``runs_per_worker`` > 1 hands each worker process that many points, trained together in turns
    (``decaylab.sweep.group``); 1 gives every point a process of its own. ``stack_seeds``: the runs are queued with
    each point's seeds next to each other, and a worker's runs that differ only in their seeds train as replicas of
    one model (``decaylab.training.replicas``; the default backend only). ``mps``: the workers share their cards
    under an MPS daemon started for the sweep (``decaylab.sweep.mps``), their kernels side by side.
    """
    if workers < 1:
        raise ValueError(f"--workers {workers}: need at least 1 worker")
    if runs_per_worker < 1:
        raise ValueError(f"--runs-per-worker {runs_per_worker}: need at least 1 run per worker")
    devices = list(devices or [])
    if devices and workers > len(devices):
        raise ValueError(f"--workers {workers} exceeds the {len(devices)} --devices given; one worker per device")
    if mps and not any(is_cuda(device) for device in devices):
        raise ValueError("--mps shares CUDA cards between workers: name them with --devices, e.g. --devices cuda:0")
    if mps:
        check_available()
    if stack_seeds and runs_per_worker < 2:
        raise ValueError("--stack-seeds trains a worker's seeds together: give --runs-per-worker K >= 2, a multiple "
                         "of the number of seeds")
    backend = backend or default_backend(stack_seeds=stack_seeds)
    out = Path(out_dir)
    plan = expand(spec, backend.resolve, overrides)  # a bad spec or --set fails here, before DIR is created
    sweep_lock = open_sweep_dir(out)
    try:
        prepared = prepare_sweep(spec, out, overrides, backend, plan)
        plan = seeds_adjacent(prepared.plan) if stack_seeds else prepared.plan
        daemon = mps_daemon(out / "logs" / "mps", log) if mps else contextlib.nullcontext({})
        # SIGTERM to the driver (`kill PID`, a batch system's notice before its time limit) stops the sweep as Ctrl-C
        # does: the workers checkpoint their runs and the next invocation resumes them.
        with stopping.handling((signal.SIGTERM,), _raise_interrupt), daemon as env:
            return _execute(plan, out, prepared.db, prepared.evaluate, workers, devices, backend, log,
                            runs_per_worker, unit=len(spec.seeds) if stack_seeds else 1, env=env)
    finally:
        os.close(sweep_lock)


def seeds_adjacent(plan: list[PlannedRun], seed_key: str = "train.seed") -> list[PlannedRun]:
    """The plan (seed-major) reordered so that runs differing only in their seed follow each other, points in their
    order of first appearance."""
    section, _, name = seed_key.rpartition(".")

    def point(run: PlannedRun) -> str:
        config = json.loads(json.dumps(run.config, default=str))
        config.get(section, {}).pop(name, None)
        return json.dumps(config, sort_keys=True)

    order: dict[str, list[PlannedRun]] = {}
    for run in plan:
        order.setdefault(point(run), []).append(run)
    return [run for runs in order.values() for run in runs]


def _label(run: PlannedRun) -> str:
    names = sorted({m.label for m in run.memberships})  # labels may hold slashes: join with commas
    return f"{run.run_id} {', '.join(names)} (seed {run.memberships[0].seed})"


def _duration(seconds: float) -> str:
    minutes = round(seconds / 60)
    if seconds < 90:
        return f"{seconds:.0f} s"
    return f"{minutes} min" if minutes < 60 else f"{minutes // 60} h {minutes % 60:02d} min"


def _progress(done: int, total: int, started: float) -> str:
    """``[3/14 21%, ~4 min left]``: runs ended so far and the time the rest should take at the pace so far."""
    elapsed = time.time() - started
    eta = f", ~{_duration(elapsed / done * (total - done))} left" if done < total else f", {_duration(elapsed)}"
    return f"[{done}/{total} {100 * done // total}%{eta}]"


def _record(outcome: str, run: PlannedRun, exitcode: int | None, elapsed: float, db: ResultsDB,
            result: SweepResult, out: Path, log: Callable[[str], None]) -> None:
    """One ended run into the result and the console (and into the database when its worker died silently)."""
    if outcome == "finished":
        result.finished.append(run.run_id)
        log(f"done   {_label(run)} in {elapsed:.0f} s")
    elif outcome == "busy":
        result.busy.append(run.run_id)
        log(f"busy   {_label(run)}: another process is running it; left alone")
    else:
        if db.status(run.run_id) == "running":  # died without recording (killed, out of memory)
            db.mark_failed(run.run_id, f"worker process exited with code {exitcode}")
        result.failed.append(run.run_id)
        error = _last_line(next((r["error"] for r in db.runs() if r["run_id"] == run.run_id), None))
        log(f"FAILED {_label(run)}: {error} (see {out / 'logs' / f'{run.run_id}.log'})")


def group_size(queued: int, runs_per_worker: int, workers: int, unit: int = 1) -> int:
    """How many of the ``queued`` runs a free worker takes: ``runs_per_worker``, or near the end of the queue a fair
    share of what is left (a multiple of ``unit``, the seeds stacked together), so the workers end together instead
    of one training the last full group alone."""
    share = math.ceil(math.ceil(queued / workers) / unit) * unit
    return max(1, min(runs_per_worker, share, queued))


@dataclasses.dataclass
class _Slot:
    """A place for one worker process: its device, the process and its pipe (None until started, or after it
    exited), and the group it is training (empty while idle)."""

    device: str | None
    proc: Any = None
    conn: Any = None
    group: list[PlannedRun] = dataclasses.field(default_factory=list)
    started: float = 0.0

    def start(self, ctx: Any, args: tuple) -> None:
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=_entry, args=(*args, child), name=f"sweep-worker-{self.device or 'cpu'}")
        self.proc.start()
        child.close()

    def hand_over(self, ctx: Any, args: tuple, runs: list[tuple[str, dict, str]]) -> None:
        """Send ``runs`` to this slot's worker, started first if it has none or if it has just died while idle."""
        if self.proc is not None:
            try:
                self.conn.send(runs)
                return
            except (BrokenPipeError, ConnectionResetError):
                self.proc.join()
        self.start(ctx, args)
        self.conn.send(runs)

    def stop(self) -> None:
        """An idle worker: told to exit, and waited for."""
        try:
            self.conn.send(None)
        except (BrokenPipeError, OSError):
            pass
        self.proc.join()
        self.proc = self.conn = None


def _execute(
    plan: list[PlannedRun],
    out: Path,
    db: ResultsDB,
    evaluate: dict | None,
    workers: int,
    devices: list[str],
    backend: RunBackend,
    log: Callable[[str], None],
    runs_per_worker: int = 1,
    unit: int = 1,
    env: Mapping[str, str] | None = None,
) -> SweepResult:
    result = SweepResult(planned=len(plan), skipped=0, finished=[], failed=[], busy=[])
    todo: list[PlannedRun] = []
    imported = set(db.meta(IMPORTED_RUNS) or ())
    for run in plan:
        run_dir = out / "runs" / run.run_id
        if run_is_done(run_dir, evaluate is not None):
            # Re-read finished runs: cheap, and it records runs killed while ingesting or re-evaluated since.
            db.mark_finished(run.run_id, read_run(run_dir))
            result.skipped += 1
        elif run.run_id in imported and not run_dir.exists() and db.status(run.run_id) == "finished":
            result.skipped += 1  # results imported from an export (decaylab.sweep.archive); no directory here
        else:
            todo.append(run)
    resumed = sum(bool(list_checkpoints(out / "runs" / run.run_id)) for run in todo)
    log(f"sweep: {len(plan)} runs, {result.skipped} already finished, {len(todo)} to run with {workers} worker(s)"
        + (f" ({resumed} of them from a checkpoint)" if resumed else ""))  # fmt: skip
    ctx = worker_context()
    threads = _threads_per_worker(workers)
    slots = [_Slot(devices[i] if devices else None) for i in range(workers)]
    queue = list(todo)
    done, sweep_started = 0, time.time()

    def ended(slot: _Slot, outcomes: dict[str, str]) -> None:
        nonlocal done
        elapsed = time.time() - slot.started
        for run in slot.group:
            done += 1
            _record(outcomes.get(run.run_id, "failed"), run, slot.proc.exitcode, elapsed, db, result, out,
                    lambda text: log(f"  {_progress(done, len(todo), sweep_started)} {text}"))  # fmt: skip
        slot.group = []

    try:
        while queue or any(slot.group for slot in slots):
            for slot in slots:
                if queue and not slot.group:
                    size = group_size(len(queue), runs_per_worker, workers, unit)
                    slot.group, queue = queue[:size], queue[size:]
                    slot.hand_over(ctx, (str(db.path), backend, evaluate, threads, slot.device, env or {}),
                                   [(r.run_id, r.config, str(out / "runs" / r.run_id)) for r in slot.group])
                    slot.started = time.time()
                    for run in slot.group:
                        log(f"  start  {_label(run)}" + (f" on {slot.device}" if slot.device else ""))
                elif not queue and not slot.group and slot.proc is not None:
                    slot.stop()  # nothing left for it
            waits = {slot.conn: slot for slot in slots if slot.group}
            waits.update({slot.proc.sentinel: slot for slot in slots if slot.proc is not None})
            for ready in multiprocessing.connection.wait(list(waits), timeout=5.0):
                slot = waits[ready]
                if slot.proc is None:
                    continue  # its pipe and its sentinel were both ready: handled
                exits = False
                if slot.group and slot.conn.poll():
                    try:
                        outcomes = slot.conn.recv()
                        ended(slot, outcomes)
                        exits = _worker_exits_after(outcomes)
                    except EOFError:  # died before reporting: its points fail (below)
                        exits = True
                if exits or not slot.proc.is_alive():  # a fresh process for the next group
                    slot.proc.join()
                    if slot.group:
                        ended(slot, {})
                    slot.proc = slot.conn = None
    except KeyboardInterrupt:
        busy = [slot for slot in slots if slot.proc is not None]
        for slot in busy:
            slot.proc.terminate()  # SIGTERM -> KeyboardInterrupt in the worker: it records "interrupted"
        for slot in busy:
            slot.proc.join(60)  # a worker stopping between steps writes its runs' checkpoints first
            if slot.proc.is_alive():
                slot.proc.kill()
                slot.proc.join()
            for run in slot.group:
                if db.status(run.run_id) == "running":
                    db.mark_failed(run.run_id, INTERRUPTED, status="interrupted")
        log("sweep: interrupted; run the same command again to resume")
        raise
    for slot in slots:
        if slot.proc is not None:
            slot.stop()
    log(
        f"sweep: {len(result.finished)} finished, {len(result.failed)} failed, {len(result.busy)} busy, "
        f"{result.skipped} skipped (already done) in {_duration(time.time() - sweep_started)}; results in {db.path}"
    )
    return result
