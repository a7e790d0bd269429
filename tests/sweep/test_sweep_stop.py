"""A sweep stopped by Ctrl-C or SIGTERM to its driver keeps a checkpoint of every run in flight, even with periodic
checkpoints off, and the same command resumes each run from it to the uninterrupted result (real training on a
CPU; decaylab.training.stopping)."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from decaylab.config import load_json
from decaylab.rundir import list_checkpoints, read_metrics
from decaylab.run.config import RunConfig
from decaylab.sweep.db import ResultsDB
from decaylab.training.loop import train

REPO = Path(__file__).resolve().parents[2]
SPEC = """
name = "stop"
base = "tiny"
seeds = [1, 2]
[overrides]
"data.corpus" = "mqar"
"data.vocab_size" = 64
"data.mqar_num_kv_pairs" = 4
"data.mqar_eval_examples" = 16
"train.max_steps" = 150
"train.batch_size" = 4
"train.seq_len" = 24
"train.ckpt_every" = 0
"train.keep_checkpoints" = 1
"train.eval_every" = 0
"train.log_every" = 1
"train.progress" = false
[[points]]
study = "s"
label = "a"
"""


def _curve(run_dir: Path) -> list[tuple]:
    return [(r["step"], r["loss"], r["grad_norm"], r["lr"]) for r in read_metrics(run_dir)]


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])  # Ctrl-C; kill, Slurm
def test_a_stopped_sweep_resumes_its_runs_from_their_stop_checkpoints(tmp_path, signum):
    (tmp_path / "stop.toml").write_text(SPEC)
    out = tmp_path / "sweep"
    command = [sys.executable, "-m", "decaylab", "sweep", str(tmp_path / "stop.toml"), "--out", str(out),
               "--workers", "1", "--runs-per-worker", "2"]  # both seeds trained together in one worker
    driver = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 120
    while not (len(runs := sorted(out.glob("runs/*/metrics.jsonl"))) == 2
               and all(len(read_metrics(r.parent)) >= 5 for r in runs)):  # fmt: skip
        assert driver.poll() is None and time.monotonic() < deadline, driver.communicate()[0]
        time.sleep(0.2)
    driver.send_signal(signum)  # the driver alone
    printed = driver.communicate(timeout=120)[0]
    assert driver.returncode == 130, printed
    run_dirs = [r.parent for r in runs]
    stopped_at = []
    for run in run_dirs:
        (step, _), = list_checkpoints(run)
        assert step == read_metrics(run)[-1]["step"] < 150 and not (run / "summary.json").exists()
        stopped_at.append(step)
    assert {r["status"] for r in ResultsDB(out / "results.sqlite").runs()} == {"interrupted"}
    listed = subprocess.run([*command, "--dry-run"], cwd=REPO, capture_output=True, text=True, timeout=120).stdout
    for run, step in zip(run_dirs, stopped_at):
        assert any(line.startswith(run.name) and f"to run from step {step}" in line for line in listed.splitlines())

    again = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "2 to run with 1 worker(s) (2 of them from a checkpoint)" in again.stdout + again.stderr
    assert {r["status"] for r in ResultsDB(out / "results.sqlite").runs()} == {"finished"}
    for run, step in zip(run_dirs, stopped_at):
        assert f"from checkpoint {run / 'checkpoints'}" in (out / "logs" / f"{run.name}.log").read_text()
        assert read_metrics(run)[-1]["step"] == 150
    alone = tmp_path / "alone"
    train(load_json(RunConfig, run_dirs[0] / "config.json"), alone)
    assert _curve(run_dirs[0]) == _curve(alone)  # stopped, resumed, trained beside the other seed: exactly alone
