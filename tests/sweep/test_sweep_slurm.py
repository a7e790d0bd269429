"""The Slurm launcher without a cluster: executor parameters and sbatch script, submission through a stand-in
``sbatch``, states through a stand-in ``sacct``, and array tasks run the way Slurm would start them."""

from __future__ import annotations

import json

from fake_backend import BACKEND
from fake_slurm import run_array_task, set_sacct
from test_sweep_launch import quiet
from test_sweep_runner import make_spec

from decaylab.sweep.db import ResultsDB
from decaylab.sweep.launch import collect, launch_sweep, print_status
from decaylab.sweep.resources import SlurmOptions
from decaylab.sweep.slurm import LAUNCHERS, state_of


def test_executor_parameters_and_sbatch_script(tmp_path, fake_slurm):
    options = SlurmOptions(partition="gpu", account="lab", qos="high", constraint="h100", gpus=8, cpus=32,
                           mem_gb=64, time=24 * 60, max_running=4)  # fmt: skip
    executor = LAUNCHERS.get("slurm").make_executor(tmp_path, options, "decaylab-paper", 10)
    p = executor.parameters
    assert (p["partition"], p["account"], p["qos"], p["constraint"]) == ("gpu", "lab", "high", "h100")
    assert (p["gpus_per_node"], p["cpus_per_task"], p["ntasks_per_node"], p["nodes"]) == (8, 32, 1, 1)
    assert (p["time"], p["mem"], p["array_parallelism"], p["job_name"]) == (1440, "65536MB", 4, "decaylab-paper")
    assert p["additional_parameters"] == {"export": "ALL"}
    executor.parameters["map_count"] = 10  # what submitit sets for an array of 10 tasks
    script = executor._make_submission_file_text("python -m submitit.core._submit DIR", "uid")
    for flag in ("--array=0-9%4", "--gpus-per-node=8", "--cpus-per-task=32", "--partition=gpu", "--account=lab",
                 "--time=1440", "--export=ALL", "--ntasks-per-node=1", "--signal=USR2@90"):  # fmt: skip
        assert f"#SBATCH {flag}\n" in script

    cpu_only = LAUNCHERS.get("slurm").make_executor(tmp_path, SlurmOptions(), "x", 3).parameters
    assert "gpus_per_node" not in cpu_only and "partition" not in cpu_only and cpu_only["array_parallelism"] == 3


def test_slurm_array_submit_status_resubmit_and_collect(tmp_path, fake_slurm, task_path):
    spec = make_spec(kinds=("simple", "boom"), ps=(0.9,), seeds=(0, 1))  # array order: simple, boom per seed
    sweep = tmp_path / "sweep"
    options = SlurmOptions(partition="cpu", cpus=2, time=90, max_running=3)
    result = launch_sweep(spec, sweep, "slurm", options, backend=BACKEND, log=quiet)
    assert len(result.submitted) == 4 and not result.finished  # submitted, not waited for
    script = (fake_slurm / "sbatch-4242.sh").read_text()
    assert "#SBATCH --array=0-3%3\n" in script and "#SBATCH --partition=cpu\n" in script
    record = json.loads((sweep / "launch.json").read_text())
    jobs = {run_id: entry["job_ids"][-1] for run_id, entry in record["runs"].items()}
    assert sorted(jobs.values()) == ["4242_0", "4242_1", "4242_2", "4242_3"]
    order = {job: run_id for run_id, job in jobs.items()}

    set_sacct(fake_slurm, {job: "PENDING" for job in jobs.values()})
    assert {s.state for s in print_status(spec, sweep, backend=BACKEND, log=quiet)} == {"pending"}

    # Slurm runs tasks 0 (simple) and 1 (boom); task 2 is preempted before it starts; task 3 is still running.
    assert [run_array_task(sweep, "4242", i) for i in (0, 1)] == [0, 1]
    set_sacct(fake_slurm, {"4242_0": "COMPLETED", "4242_1": "FAILED", "4242_2": "PREEMPTED", "4242_3": "RUNNING"})
    lines: list[str] = []
    states = {s.job_id: s for s in print_status(spec, sweep, backend=BACKEND, log=lines.append)}
    assert json.loads((sweep / "tasks" / f"{order['4242_0']}.json").read_text())["job_id"] == "4242_0"
    assert states["4242_0"].state == "finished"
    assert states["4242_1"].state == "failed" and "boom: this point is broken" in states["4242_1"].detail
    assert states["4242_2"].state == "failed" and "PREEMPTED" in states["4242_2"].detail
    assert states["4242_3"].state == "running"
    assert any("4242_1" in line and "failed" in line for line in lines)
    assert "4 runs: 1 finished, 1 running, 0 pending, 2 failed" in lines[-1]

    again = launch_sweep(spec, sweep, "slurm", options, backend=BACKEND, log=quiet)
    assert sorted(again.submitted) == sorted([order["4242_1"], order["4242_2"]])  # not the finished or running
    assert again.skipped == 1 and again.waiting == 1
    assert "#SBATCH --array=0-1%2\n" in (fake_slurm / "sbatch-4243.sh").read_text()

    collect(spec, sweep, backend=BACKEND, log=quiet)
    db = ResultsDB(sweep / "results.sqlite")
    status = {r["run_id"]: r["status"] for r in db.runs()}
    assert status[order["4242_0"]] == "finished" and set(db.metrics()) == {order["4242_0"]}
    assert status[order["4242_3"]] == "pending"  # still running: left for a later --collect


def test_point_states_from_run_directory_outcome_and_scheduler():
    ran = {"state": "running", "job_id": "7_1", "host": "n1"}
    failed = {"state": "failed", "job_id": "7_1", "error": "Traceback ...\nValueError: bad"}
    assert state_of(True, "7_1", "RUNNING", None)[0] == "finished"  # the run directory decides
    assert state_of(False, None, None, None) == ("pending", "not submitted")
    assert state_of(False, "7_1", "PENDING", None) == ("pending", "queued (PENDING)")
    assert state_of(False, "7_1", "RUNNING", ran) == ("running", "on n1")
    assert state_of(False, "7_1", "FAILED", failed) == ("failed", "ValueError: bad")
    assert state_of(False, "7_1", "TIMEOUT", ran)[0] == "failed"  # killed mid-run: resubmit, it resumes
    assert state_of(False, "7_1", "UNKNOWN", ran)[0] == "running"  # no sacct: trust the task's own file
    assert state_of(False, "7_1", "UNKNOWN", None)[0] == "pending"
    assert state_of(False, "8_0", "PENDING", failed)[0] == "pending"  # an earlier job's outcome is stale
