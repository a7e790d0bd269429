"""One point inside an array task: preemption and requeue through submitit, and training under torchrun."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from fake_backend import BACKEND
from fake_slurm import run_array_task, slurm_env
from test_sweep_launch import quiet
from test_sweep_runner import calls, make_spec

from decaylab.sweep.launch import launch_sweep
from decaylab.sweep.task import PointTask, torchrun_command


def test_checkpoint_requeues_the_same_point():
    task = PointTask("/sweep", BACKEND, None)
    delayed = task.checkpoint("abc", {"k": 1})
    assert delayed.function is task and delayed.args == ("abc", {"k": 1})


def test_preempted_task_is_requeued_and_resumes_from_its_checkpoint(tmp_path, fake_slurm, task_path):
    (fake_slurm / "scontrol").write_text('#!/bin/sh\necho "$@" >> "$FAKE_SLURM/scontrol.txt"\n')
    (fake_slurm / "scontrol").chmod(0o755)
    sweep = tmp_path / "sweep"
    sweep.mkdir()
    (sweep / "BLOCK").write_text("")  # the point writes a checkpoint, then trains until BLOCK goes
    spec = make_spec(kinds=("block",), ps=(0.9,))
    (run_id,) = launch_sweep(spec, sweep, "slurm", backend=BACKEND, log=quiet).submitted  # one task: job "4242"
    command = [sys.executable, "-u", "-m", "submitit.core._submit", str(sweep / "submitit" / "slurm")]
    task = subprocess.Popen(command, env=slurm_env("4242", None))
    checkpoint = sweep / "runs" / run_id / "checkpoints" / "step-1"
    deadline = time.time() + 60
    while not checkpoint.exists() and time.time() < deadline:
        time.sleep(0.1)
    assert checkpoint.exists()
    task.send_signal(signal.SIGUSR2)  # what Slurm sends before preempting (or at the time limit)
    assert task.wait(timeout=60) != 0
    assert (fake_slurm / "scontrol.txt").read_text().split()[:2] == ["requeue", "4242"]
    outcome = json.loads((sweep / "tasks" / f"{run_id}.json").read_text())
    assert outcome["state"] == "failed" and outcome["error"].startswith("stopped")

    (sweep / "BLOCK").unlink()
    assert run_array_task(sweep, "4242", None) == 0  # Slurm starts the requeued job again
    assert [c["resume"] for c in calls(sweep / "runs" / run_id)] == [False, True]
    assert json.loads((sweep / "tasks" / f"{run_id}.json").read_text())["state"] == "finished"


def test_torchrun_command_trains_with_decaylab_and_resumes(tmp_path, monkeypatch):
    seen = []
    monkeypatch.setattr(subprocess, "run", lambda command, check: seen.append(command))
    train = PointTask(str(tmp_path), BACKEND, None, processes=8)._trainer(tmp_path, "abc")
    train({"train": {"max_steps": 3}}, tmp_path / "runs" / "abc", True)
    config_path = tmp_path / "tasks" / "abc.config.json"
    assert json.loads(config_path.read_text()) == {"train": {"max_steps": 3}}
    assert seen == [torchrun_command(8, config_path, tmp_path / "runs" / "abc", True)]
    assert seen[0][1:5] == ["-m", "torch.distributed.run", "--standalone", "--nproc-per-node=8"]
    assert seen[0][-1] == "--resume" and "--no-eval" in seen[0]
    assert PointTask(str(tmp_path), BACKEND, None)._trainer(tmp_path, "abc") is None  # one GPU: in process


@pytest.mark.slow
def test_point_trains_under_torchrun_with_two_cpu_processes(tmp_path, monkeypatch):
    """The multi-GPU path on CPU: torchrun starts two gloo processes of `decaylab train`; the task evaluates."""
    from decaylab.sweep.backend import default_backend

    repo = Path(__file__).resolve().parents[2]
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(repo), os.environ.get("PYTHONPATH", "")]))
    monkeypatch.chdir(tmp_path)
    config = default_backend().resolve("mqar", {"train.max_steps": 2, "train.progress": False, "train.batch_size": 4,
                                                "data.mqar_eval_examples": 8, "train.device": "cpu"})  # fmt: skip
    task = PointTask(str(tmp_path), default_backend(), {"decay_tokens": 16}, threads=1, processes=2)
    assert task("run0", config) == "finished"
    run_dir = tmp_path / "runs" / "run0"
    assert json.loads((run_dir / "summary.json").read_text())["world_size"] == 2
    assert "mqar_accuracy" in json.loads((run_dir / "eval.json").read_text())
