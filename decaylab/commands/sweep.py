"""``decaylab sweep SPEC_OR_PRESET --out DIR``: run a design-space study, resumably and in parallel."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, Mapping

from decaylab.commands.args import add_set_argument
from decaylab.config import parse_set_args
from decaylab.rundir import list_checkpoints, run_is_done
from decaylab.sweep.placement import automatic_workers, check_worker_args, parse_devices, worker_devices
from decaylab.sweep.runner import run_sweep
from decaylab.sweep.spec import PlannedRun, SweepSpec, expand, load_spec, preset_names


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "spec",
        metavar="SPEC_OR_PRESET",
        help=f"a sweep spec (.toml path) or a shipped preset: {', '.join(preset_names())}",
    )
    parser.add_argument("--out", required=True, help="sweep directory: run directories, results.sqlite, sweep.json")
    parser.add_argument(
        "--workers",
        type=int,
        default=None,
        help="points run at once, each in its own process (default: the worker slots of --devices, else the spec's "
        "workers, else 1); with --devices, the first N slots and no automatic count; CPU threads are split evenly "
        "between workers",
    )
    parser.add_argument(
        "--devices",
        default=None,
        help="comma-separated devices, e.g. cuda:0 or cuda:0,cuda:1: each CUDA card named once gets several workers "
        "(--workers-per-device); a repeated device (cuda:0,cuda:0) or cpu gets one worker per entry (default: "
        "whatever each run picks)",
    )
    parser.add_argument(
        "--workers-per-device",
        type=_per_device,
        default=None,
        metavar="N|auto",
        help="workers on each CUDA card of --devices (default auto: min(cores / cards, 90%% of the card's free "
        "memory / the largest run's estimate, 12), at least 1; see 'Running on GPUs' in docs/sweeps.md)",
    )
    add_set_argument(
        parser, "override applied to every point after the spec (repeatable), e.g. --set train.max_steps=5 "
        "--set train.warmup_steps=1 for a smoke run",
    )
    parser.add_argument(
        "--study",
        action="append",
        default=[],
        metavar="NAME",
        help="run only this study of the spec (repeatable); run ids are the same as in the full sweep",
    )
    parser.add_argument(
        "--runs-per-worker", type=int, default=1, metavar="K",
        help="points each worker process trains together, in turns, each on a CUDA stream of its own (default 1: a "
        "process per point); on a GPU this is what fills the card, since processes only take turns on it",
    )  # fmt: skip
    parser.add_argument(
        "--stack-seeds", action="store_true",
        help="with --runs-per-worker K: the seeds of one point go to one worker and train as replicas of one model, "
        "one set of kernels for all (a point's seeds then run together; their dropout masks are not those of the "
        "runs alone). Give K a multiple of the number of seeds",
    )  # fmt: skip
    parser.add_argument(
        "--mps", action="store_true",
        help="the workers on a CUDA card share it under NVIDIA MPS (a daemon started for the sweep and stopped after "
        "it; needs nvidia-cuda-mps-control), so that their kernels run side by side instead of in turns",
    )  # fmt: skip
    parser.add_argument(
        "--import", dest="import_from", metavar="FILE",
        help="start --out (a new directory) from a results export (decaylab report DIR --export FILE): its finished "
        "runs count as done and only the rest are run (runs whose settings the spec has since changed are left out)",
    )  # fmt: skip
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help="list the planned runs (run id, seed, done or to run, study/label rows) and exit without training",
    )
    parser.add_argument(
        "--launcher",
        choices=["local", "slurm", "submitit-local"],
        default="local",
        help="local: worker processes here (default); slurm: one Slurm job array through submitit, one point per "
        "task; submitit-local: the same tasks through submitit's local executor",
    )
    parser.add_argument(
        "--slurm",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="resources of one task (repeatable; over the spec's [slurm] table): partition, account, qos, "
        "constraint, gpus, cpus, mem_gb, time (minutes or H:MM:SS), max_running (tasks at once)",
    )
    parser.add_argument(
        "--wait", action="store_true", help="with --launcher slurm: wait for the tasks, then fill results.sqlite"
    )
    parser.add_argument(
        "--status",
        action="store_true",
        help="show pending / running / finished / failed per run with its job id, and exit",
    )
    parser.add_argument(
        "--collect",
        action="store_true",
        help="fill results.sqlite from the run directories of launched tasks (idempotent), and exit",
    )


def _per_device(text: str) -> int | None:
    """--workers-per-device: a positive integer, or auto (None)."""
    if text.strip().lower() == "auto":
        return None
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: give a whole number of workers per card (1 or more), or auto")
    return value


def default_workers(spec: SweepSpec, devices: list[str]) -> int:
    """Without --workers: one worker per worker slot when --devices is given, else the spec's ``workers``, else 1."""
    if devices:
        return len(devices)
    return spec.workers or 1


def _plan(spec: SweepSpec, overrides: Mapping[str, Any]) -> list[PlannedRun]:
    """The runs ``spec`` plans with ``overrides``, resolved by the default backend (its import deferred: start-up)."""
    from decaylab.sweep.backend import default_backend

    return expand(spec, default_backend().resolve, overrides)


def _imported_runs(out: Path) -> set[str]:
    """Finished runs a results export brought into ``out`` (none when it has no database yet)."""
    if not (out / "results.sqlite").is_file():
        return set()
    from decaylab.sweep.archive import IMPORTED_RUNS
    from decaylab.sweep.db import ResultsDB

    with ResultsDB(out / "results.sqlite", create=False) as db:
        return set(db.meta(IMPORTED_RUNS) or ())


def run(args: argparse.Namespace) -> int:
    whole = load_spec(args.spec)
    spec = whole.select_studies(args.study) if args.study else whole
    overrides = parse_set_args(args.overrides)
    if not args.dry_run and (args.status or args.collect or args.launcher != "local" or args.slurm):
        return _launch(args, spec, overrides)
    devices = parse_devices(args.devices)
    check_worker_args(devices, args.workers_per_device)  # before --import writes anything
    if args.import_from:
        from decaylab.sweep.archive import import_results

        if (Path(args.out) / "results.sqlite").exists():
            raise FileExistsError(f"{args.out} already holds results.sqlite; --import needs a new --out directory")
        planned = {run_.run_id for run_ in _plan(whole, overrides)}  # every study's, not just --study's
        imported = import_results(args.import_from, Path(args.out) / "results.sqlite", current_ids=True, only=planned)
        print(f"imported {imported} runs from {args.import_from}, those {spec.name} plans as it stands (a run whose "
              "settings it has since changed is left out and trains again); the finished ones count as done")
    if args.dry_run:
        imported = _imported_runs(Path(args.out))
        for run_ in _plan(spec, overrides):
            rows = ", ".join(f"{m.study}/{m.label}" for m in run_.memberships)
            run_dir = Path(args.out) / "runs" / run_.run_id
            done = run_is_done(run_dir, spec.evaluate) or run_.run_id in imported
            saved = [] if done else list_checkpoints(run_dir)  # an interrupted run goes on from its newest
            state = "done  " if done else f"to run from step {saved[-1][0]}" if saved else "to run"
            print(f"{run_.run_id}  seed {run_.memberships[0].seed}  {state}  {rows}")
        return 0
    slots = worker_devices(devices, args.workers_per_device, args.workers,
                           lambda cards: _automatic_workers(cards, spec, overrides, args.runs_per_worker))  # fmt: skip
    workers = args.workers if args.workers is not None else default_workers(spec, slots)
    result = run_sweep(spec, args.out, workers=workers, devices=slots, overrides=overrides,
                       runs_per_worker=args.runs_per_worker, stack_seeds=args.stack_seeds, mps=args.mps)
    print(f"next: decaylab report {args.out}")
    return 0 if result.ok else 1


def _automatic_workers(cards: list[str], spec: SweepSpec, overrides: Mapping[str, Any],
                       runs_per_worker: int) -> dict[str, int]:  # fmt: skip
    """The automatic number of workers per card, for the largest run of the sweep, K runs to a worker."""
    configs = [run_.config for run_ in _plan(spec, overrides)]
    return automatic_workers(cards, configs, runs_per_worker)


def _launch(args: argparse.Namespace, spec: SweepSpec, overrides: Mapping[str, Any]) -> int:
    """--launcher slurm|submitit-local, --status or --collect."""
    from decaylab.sweep.launch import collect, launch_sweep, print_status
    from decaylab.sweep.resources import slurm_options

    if args.status and args.collect:
        raise ValueError("give --status or --collect, not both")
    if args.status:
        print_status(spec, args.out, overrides=overrides)
        return 0
    if args.collect:
        statuses = collect(spec, args.out, overrides=overrides)
        print(f"next: decaylab report {args.out}")
        return 1 if any(s.state == "failed" for s in statuses) else 0
    if args.launcher == "local":
        raise ValueError("--slurm sets the resources of launched tasks: add --launcher slurm (or submitit-local)")
    if args.devices or args.workers_per_device is not None or args.mps:
        flag = "--devices" if args.devices else "--workers-per-device" if args.workers_per_device else "--mps"
        raise ValueError(f"{flag} is for --launcher local; with {args.launcher}, ask for GPUs with --slurm gpus=N")
    options = slurm_options(dict(spec.slurm), args.slurm)
    local = args.launcher == "submitit-local"
    workers = args.workers if args.workers is not None else (spec.workers if local else None)
    result = launch_sweep(spec, args.out, args.launcher, options, overrides=overrides, max_running=workers,
                          wait=args.wait, log=print)  # fmt: skip
    again = f"decaylab sweep {args.spec} --out {args.out}" + "".join(f" --set {k}={v}" for k, v in overrides.items())
    again += "".join(f" --study {s}" for s in args.study)
    if args.wait or local:
        print(f"next: decaylab report {args.out}")
        return 0 if result.ok else 1
    print(f"watch: {again} --status\nwhen done: {again} --collect && decaylab report {args.out}")
    return 0
