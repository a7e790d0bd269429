"""What one task of a launched sweep asks the scheduler for, and whether every point can run with it.

Options come from the spec's ``[slurm]`` table, then ``--slurm KEY=VALUE`` (last wins)::

    [slurm]
    partition = "gpu"
    account = "my-lab"
    gpus = 1                 # GPUs per task (one node); more than 1: training runs under torchrun, one process each
    cpus = 8                 # CPUs per task (torch threads)
    time = "2:00:00"         # per task: minutes, H:MM:SS or D-HH:MM:SS
    max_running = 16         # array tasks running at once

One task trains one point; ``check_fits`` refuses, before anything is submitted, points that cannot run on one
task's resources (a CUDA-only run without GPUs, an FSDP run in one process, a batch that does not split over
the processes).
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any, Mapping

from decaylab.registry import closest


def parse_time(value: Any) -> int:
    """Slurm time limits -> minutes: 90, "90", "1:30:00", "2-00:00:00" (D-HH:MM:SS), "1-12" (D-HH)."""
    if isinstance(value, int) and not isinstance(value, bool):
        minutes = value
    else:
        text = str(value).strip()
        match = re.fullmatch(r"(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?", text)
        if not match:
            raise ValueError(f"slurm time={value!r}: expected minutes or H:MM:SS or D-HH:MM:SS, e.g. time=2:00:00")
        days, first, second, third = match.groups()
        if days is None and second is None:  # plain minutes
            minutes = int(first)
        elif days is not None and second is None:  # D-HH
            minutes = 60 * int(first)
        elif third is None:  # H:MM (D-HH:MM with days)
            minutes = 60 * int(first) + int(second)
        else:  # H:MM:SS, rounded up to whole minutes
            minutes = 60 * int(first) + int(second) + (int(third) > 0)
        minutes += 24 * 60 * int(days or 0)
    if minutes < 1:
        raise ValueError(f"slurm time={value!r}: the time limit must be at least one minute")
    return minutes


@dataclasses.dataclass(frozen=True)
class SlurmOptions:
    """Resources of one array task; every task trains one point."""

    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    constraint: str | None = None
    gpus: int = 0
    """GPUs per task, on one node. More than one: the point trains under torchrun with one process per GPU."""
    cpus: int | None = None
    """CPUs per task (the cluster's default when unset); the task's torch threads."""
    mem_gb: float | None = None
    time: int = 60
    """Time limit of one task in minutes (a task that runs out is requeued and resumes from its checkpoint)."""
    max_running: int | None = None
    """Tasks running at once (Slurm: the array's %N; default: --workers, else the spec's workers for
    submitit-local, no cap on Slurm)."""

    def __post_init__(self):
        for name in ("gpus", "cpus", "max_running"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 0):
                raise ValueError(f"slurm {name}={value!r}: expected a whole number >= 0")
        for name in ("cpus", "max_running"):
            if getattr(self, name) == 0:
                raise ValueError(f"slurm {name}=0: give at least 1 (or leave it out for the default)")
        if self.mem_gb is not None and self.mem_gb <= 0:
            raise ValueError(f"slurm mem_gb={self.mem_gb!r}: expected a positive number of GB")

    @property
    def processes(self) -> int:
        """Training processes per task: one per GPU under torchrun, else one."""
        return max(1, self.gpus)


_FIELDS = {f.name: f for f in dataclasses.fields(SlurmOptions)}
_NUMBERS = {"gpus": int, "cpus": int, "max_running": int, "mem_gb": float}  # the other keys are strings


def _convert(key: str, value: Any) -> Any:
    if key == "time":
        return parse_time(value)
    number = _NUMBERS.get(key)
    if number is None or not isinstance(value, str):
        return value  # a string option, or a value typed by TOML (SlurmOptions checks it)
    try:
        return number(value)
    except ValueError:
        raise ValueError(f"slurm {key}={value!r}: expected a number") from None


def slurm_options(spec_table: Mapping[str, Any] = (), cli: list[str] | None = None) -> SlurmOptions:
    """The spec's ``[slurm]`` table, then ``--slurm KEY=VALUE`` items; unknown keys get the closest names."""
    values: dict[str, Any] = {}
    items = [(k, v, "[slurm]") for k, v in dict(spec_table).items()]
    for item in cli or []:
        key, eq, value = item.partition("=")
        if not eq or not key.strip():
            raise ValueError(f"--slurm {item!r}: expected KEY=VALUE, e.g. --slurm partition=gpu")
        items.append((key.strip(), value.strip(), "--slurm"))
    for key, value, where in items:
        if key not in _FIELDS:
            raise ValueError(f"{where}: unknown key {key!r}.{closest(key, list(_FIELDS))} Keys: {', '.join(_FIELDS)}")
        values[key] = _convert(key, value)
    return SlurmOptions(**values)


def check_fits(plan, options: SlurmOptions, torchrun_ok: bool) -> None:
    """Raise ValueError naming the points (and the fix) when a point cannot run on one task's resources.

    ``torchrun_ok``: the backend trains with decaylab's trainer, which the task can start under torchrun.
    Keys a backend's config does not have are not checked.
    """
    procs = options.processes
    problems: list[str] = []
    for run in plan:
        train = run.config.get("train", {}) if isinstance(run.config, Mapping) else {}
        where = f"{run.memberships[0].study}/{run.memberships[0].label} (run {run.run_id})"
        if train.get("device") == "cuda" and options.gpus == 0:
            problems.append(f"{where} sets train.device=cuda but no GPU is requested: add --slurm gpus=1 (or more)")
        if train.get("fsdp") and procs < 2:
            problems.append(f"{where} sets train.fsdp=true, which needs several processes: add --slurm gpus=8")
        batch, accum = train.get("batch_size"), train.get("grad_accum", 1)
        if procs > 1 and isinstance(batch, int) and batch % (procs * accum):
            problems.append(
                f"{where}: train.batch_size={batch} does not split over {procs} processes x train.grad_accum="
                f"{accum}; change --slurm gpus or --set train.batch_size"
            )
    if procs > 1 and not torchrun_ok:
        problems.append(f"--slurm gpus={options.gpus} trains under torchrun, which only decaylab's own trainer "
                        "supports; use gpus=1 with a custom backend")  # fmt: skip
    if problems:
        more = f"\n  ... and {len(problems) - 5} more" if len(problems) > 5 else ""
        raise ValueError("points that cannot run on the requested resources:\n  " + "\n  ".join(problems[:5]) + more)
