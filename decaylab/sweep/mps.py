"""NVIDIA MPS for the worker processes of a local sweep (``decaylab sweep ... --mps``).

Without MPS a CUDA card takes turns between processes: while one worker's kernels run, the others' wait, though
each of a small run's kernels fills only part of the card. Under MPS (the Multi-Process Service of NVIDIA's driver)
the workers' kernels run side by side, as those of one process's streams do. ``mps_daemon`` starts a control daemon
of the sweep's own (its pipes in a fresh temporary directory, its logs in the sweep's ``logs/mps``), gives the
environment that connects a worker to it, and stops it when the sweep ends (a daemon left running by a driver
killed outright is stopped by the next ``--mps`` invocation on the same directory). A daemon the user already runs
(their ``CUDA_MPS_PIPE_DIRECTORY`` set) is used as it is and left running.

Nothing here changes the card's settings: MPS runs in the default compute mode.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Iterator

CONTROL = "nvidia-cuda-mps-control"
PIPE_VAR, LOG_VAR = "CUDA_MPS_PIPE_DIRECTORY", "CUDA_MPS_LOG_DIRECTORY"
PIPES_FILE = "pipe-directory"  # in the log directory while the sweep's daemon runs: where to stop it if left over


class MPSError(ValueError):
    """A setup for the user to fix (the CLI reports it in one line)."""


def check_available() -> None:
    """Before a sweep writes anything: ``--mps`` can work here (a daemon runs, or its control program is on PATH)."""
    if not os.environ.get(PIPE_VAR):
        control_binary()


def control_binary() -> str:
    """Path of the MPS control program, or an error that says what to do without it."""
    found = shutil.which(CONTROL)
    if found is None:
        raise MPSError(
            f"--mps needs NVIDIA's {CONTROL} (installed with the driver's utilities) on PATH; it is not there: "
            "install it, or run the sweep without --mps (its workers then take turns on the card)"
        )
    return found


@contextlib.contextmanager
def mps_daemon(log_dir: str | Path, log=print) -> Iterator[dict[str, str]]:
    """An MPS control daemon for the duration of the block; yields the environment a worker needs to reach it."""
    if os.environ.get(PIPE_VAR):
        log(f"sweep: workers use the running MPS daemon of {PIPE_VAR}={os.environ[PIPE_VAR]}")
        # Passed on explicitly: workers fork from a server that may predate this environment.
        yield {var: os.environ[var] for var in (PIPE_VAR, LOG_VAR) if os.environ.get(var)}
        return
    binary = control_binary()
    log_dir = Path(log_dir)
    log_dir.mkdir(parents=True, exist_ok=True)
    _stop_left_over(binary, log_dir)
    # The daemon's sockets live under the pipe directory: a short path in /tmp (a socket path is at most 108 bytes).
    pipes = tempfile.mkdtemp(prefix="decaylab-mps-")
    env = _daemon_env(pipes, log_dir)
    (log_dir / PIPES_FILE).write_text(pipes + "\n")
    started = subprocess.run([binary, "-d"], env={**os.environ, **env}, capture_output=True, text=True)
    if started.returncode != 0:
        shutil.rmtree(pipes, ignore_errors=True)
        (log_dir / PIPES_FILE).unlink(missing_ok=True)
        raise MPSError(
            f"{CONTROL} -d failed (exit {started.returncode}): {(started.stderr or started.stdout).strip()}; see "
            f"{log_dir / 'control.log'}, or run the sweep without --mps"
        )
    log(f"sweep: workers share the card under MPS (daemon pipes in {pipes}, logs in {log_dir})")
    try:
        yield env
    finally:
        _quit(binary, pipes, log_dir)


def _daemon_env(pipes: str, log_dir: Path) -> dict[str, str]:
    """The variables that name one daemon, to the control program and to the workers alike."""
    return {PIPE_VAR: pipes, LOG_VAR: str(log_dir.resolve())}


def _quit(binary: str, pipes: str, log_dir: Path) -> None:
    """Stop the daemon of ``pipes`` ("quit" ends it and its server once the clients, the workers, have gone)."""
    env = {**os.environ, **_daemon_env(pipes, log_dir)}
    try:
        subprocess.run([binary], input="quit\n", env=env, capture_output=True, text=True, timeout=60)
    except subprocess.TimeoutExpired:
        return  # left running, and recorded: the next --mps invocation on this directory tries again
    shutil.rmtree(pipes, ignore_errors=True)
    (log_dir / PIPES_FILE).unlink(missing_ok=True)


def _stop_left_over(binary: str, log_dir: Path) -> None:
    """A daemon an earlier invocation left running (its driver killed outright, so its cleanup never ran)."""
    record = log_dir / PIPES_FILE
    if record.is_file():
        pipes = record.read_text().strip()
        if pipes and Path(pipes).is_dir():
            _quit(binary, pipes, log_dir)
        record.unlink(missing_ok=True)
