"""Submit a sweep's pending points as a job array, wait for it, report where each point stands, collect results.

``launch_sweep`` is ``decaylab sweep SPEC --out DIR --launcher slurm|submitit-local``; ``print_status`` is
``--status``; ``collect`` is ``--collect``. Tasks write run directories and outcome files only; the database is
filled here, in the submitting process, by the same ingest code as the local runner's.
"""

from __future__ import annotations

import dataclasses
import os
import time
from pathlib import Path
from typing import Any, Callable, Mapping

from decaylab.rundir import run_is_done
from decaylab.sweep.backend import RunBackend, default_backend
from decaylab.sweep.resources import SlurmOptions, check_fits
from decaylab.sweep.slurm import (
    LAUNCHERS,
    PointStatus,
    add_to_record,
    ingest,
    point_statuses,
    read_record,
    state_of,
)
from decaylab.sweep.spec import PlannedRun, SweepSpec, expand
from decaylab.sweep.sweepdir import open_sweep_dir, prepare_sweep
from decaylab.sweep.task import PointTask, read_outcome


@dataclasses.dataclass
class LaunchResult:
    planned: int
    skipped: int  # finished before this invocation
    waiting: int  # queued or running from an earlier submission: left alone
    submitted: list[str]
    finished: list[str]  # only when the submitter waited
    failed: list[str]

    @property
    def ok(self) -> bool:
        return not self.failed


def _label(run: PlannedRun) -> str:
    names = sorted({m.label for m in run.memberships})
    return f"{run.run_id} {'/'.join(names)} (seed {run.memberships[0].seed})"


def launch_sweep(
    spec: SweepSpec,
    out_dir: str | Path,
    launcher: str = "slurm",
    options: SlurmOptions | None = None,
    *,
    overrides: Mapping[str, Any] | None = None,
    backend: RunBackend | None = None,
    max_running: int | None = None,
    wait: bool = False,
    log: Callable[[str], None] = print,
) -> LaunchResult:
    """Submit every point that is not finished, queued or running as one array of ``launcher`` tasks.

    ``max_running`` caps tasks at once when ``options.max_running`` is not set. The submitting process waits for
    the tasks (and fills the database) when ``wait`` is true, and always for submitit-local, whose tasks are its
    own children.
    """
    kind = LAUNCHERS.get(launcher)
    kind.check()
    options = options or SlurmOptions()
    backend = backend or default_backend()
    wait = wait or not kind.throttles
    out = Path(out_dir)
    plan = expand(spec, backend.resolve, overrides)
    check_fits(plan, options, torchrun_ok=backend == default_backend())
    sweep_lock = open_sweep_dir(out)
    try:
        prepared = prepare_sweep(spec, out, overrides, backend, plan)
        statuses = point_statuses(prepared.plan, out, prepared.evaluate is not None)
        ingest([s for s in statuses if s.state == "finished"], out, prepared.db)
        todo = [s.run for s in statuses if s.to_submit]
        result = LaunchResult(
            planned=len(statuses),
            skipped=sum(s.state == "finished" for s in statuses),
            waiting=sum(s.state in ("pending", "running") and not s.to_submit for s in statuses),
            submitted=[], finished=[], failed=[],
        )  # fmt: skip
        log(
            f"sweep: {result.planned} runs, {result.skipped} already finished, {result.waiting} queued or running, "
            f"{len(todo)} to submit ({launcher})"
        )
        cap = options.max_running or max_running or (max(1, len(todo)) if kind.throttles else 1)
        options = dataclasses.replace(options, max_running=cap)
        if todo:
            threads = None if kind.throttles else max(1, (os.cpu_count() or 1) // cap)
            task = PointTask(str(out.resolve()), backend, prepared.evaluate, threads, options.processes)
            executor = kind.make_executor(out / "submitit" / launcher, options, f"decaylab-{spec.name}", len(todo))
            array = _Array(executor, task, launcher, options, out, result, log, total=len(todo))
            _run_array(array, todo, cap, wait)
        if wait:
            ingest(point_statuses(prepared.plan, out, prepared.evaluate is not None), out, prepared.db)
            log(
                f"sweep: {len(result.finished)} finished, {len(result.failed)} failed, {result.skipped} skipped "
                f"(already done); results in {prepared.db.path}"
            )
        return result
    finally:
        os.close(sweep_lock)


@dataclasses.dataclass
class _Array:
    """The jobs of one submission: submitted through ``executor.map_array``, followed to their end."""

    executor: Any
    task: PointTask
    launcher: str
    options: SlurmOptions
    out: Path
    result: LaunchResult
    log: Callable[[str], None]
    total: int
    active: dict = dataclasses.field(default_factory=dict)  # run_id -> (run, job, submitted at)

    def submit(self, batch: list[PlannedRun]) -> None:
        jobs = self.executor.map_array(self.task, [r.run_id for r in batch], [r.config for r in batch])
        add_to_record(self.out, self.launcher, self.options, {r.run_id: j.job_id for r, j in zip(batch, jobs)})
        self.result.submitted += [r.run_id for r in batch]
        for run, job in zip(batch, jobs):
            self.active[run.run_id] = (run, job, time.time())
        if LAUNCHERS.get(self.launcher).throttles:
            array_id, at_once = jobs[0].job_id.split("_")[0], min(self.options.max_running or len(batch), len(batch))
            logs = f"{self.out / 'logs'} and {self.out / 'submitit' / self.launcher}"
            self.log(f"  submitted {len(batch)} task(s) as job array {array_id}, {at_once} at once; logs in {logs}")
        else:
            for run, job in zip(batch, jobs):
                self.log(f"  start  {_label(run)} (job {job.job_id})")

    def reap(self) -> None:
        """Report (and forget) the jobs that have ended."""
        for run_id, (run, job, started) in list(self.active.items()):
            if not job.done():
                continue
            del self.active[run_id]
            done = run_is_done(self.out / "runs" / run_id, self.task.evaluate is not None)
            state, detail = state_of(done, job.job_id, "ENDED", read_outcome(self.out, run_id))
            prefix = f"  [{len(self.result.finished) + len(self.result.failed) + 1}/{self.total}]"
            if state == "finished":
                self.result.finished.append(run_id)
                self.log(f"{prefix} done   {_label(run)} in {time.time() - started:.0f} s")
            else:
                self.result.failed.append(run_id)
                self.log(f"{prefix} FAILED {_label(run)}: {detail} (see {self.out / 'logs' / f'{run_id}.log'})")

    def interrupted(self) -> None:
        if LAUNCHERS.get(self.launcher).throttles:
            self.log("sweep: stopped waiting; the submitted tasks keep running (see --status, then --collect)")
            return
        for _, job, _ in self.active.values():  # local tasks are this process's children: stop them
            job.cancel()
        self.log("sweep: interrupted; run the same command again to resume")


def _run_array(array: _Array, todo: list[PlannedRun], cap: int, wait: bool) -> None:
    """Submit ``todo`` (all at once where the scheduler applies the cap, else as slots free up) and, when
    waiting, follow every job to its end."""
    kind = LAUNCHERS.get(array.launcher)
    queue = list(todo)
    try:
        while queue or array.active:
            free = len(queue) if kind.throttles else cap - len(array.active)
            if queue and free > 0:
                array.submit(queue[:free])
                queue = queue[free:]
            if not wait:
                return
            time.sleep(kind.poll_s)
            array.reap()
    except KeyboardInterrupt:
        array.interrupted()
        raise


def print_status(
    spec: SweepSpec,
    out_dir: str | Path,
    *,
    overrides: Mapping[str, Any] | None = None,
    backend: RunBackend | None = None,
    log: Callable[[str], None] = print,
) -> list[PointStatus]:
    """One line per run: run id, state, latest job id, table rows, detail; then the counts per state."""
    backend = backend or default_backend()
    out = Path(out_dir)
    plan = expand(spec, backend.resolve, overrides)
    statuses = point_statuses(plan, out, spec.evaluate and backend.evaluate is not None)
    for s in statuses:
        rows = ", ".join(f"{m.study}/{m.label}" for m in s.run.memberships)
        log(f"{s.run.run_id}  {s.state:8s}  {s.job_id or '-':>12s}  seed {s.run.memberships[0].seed}  {rows}"
            + (f"  [{s.detail}]" if s.detail else ""))  # fmt: skip
    counts = {state: sum(s.state == state for s in statuses) for state in ("finished", "running", "pending", "failed")}
    log(f"sweep {spec.name}: {len(statuses)} runs: " + ", ".join(f"{n} {state}" for state, n in counts.items()))
    submitted = read_record(out)["runs"]
    if submitted and not any(s.run.run_id in submitted for s in statuses):
        log("none of these runs was submitted from this directory: give the same --set/--study as when submitting "
            "(sweep.json holds the latest invocation's)")  # fmt: skip
    return statuses


def collect(
    spec: SweepSpec,
    out_dir: str | Path,
    *,
    overrides: Mapping[str, Any] | None = None,
    backend: RunBackend | None = None,
    log: Callable[[str], None] = print,
) -> list[PointStatus]:
    """Fill results.sqlite from the run directories and task outcomes; running it again changes nothing."""
    backend = backend or default_backend()
    out = Path(out_dir)
    if not out.is_dir():
        raise FileNotFoundError(f"--out {out} does not exist: nothing to collect; submit the sweep first")
    sweep_lock = open_sweep_dir(out)
    try:
        prepared = prepare_sweep(spec, out, overrides, backend)
        statuses = point_statuses(prepared.plan, out, prepared.evaluate is not None)
        ingest(statuses, out, prepared.db)
    finally:
        os.close(sweep_lock)
    counts = {state: sum(s.state == state for s in statuses) for state in ("finished", "failed", "running", "pending")}
    log(f"collect: {', '.join(f'{n} {state}' for state, n in counts.items())}; results in {out / 'results.sqlite'}")
    return statuses
