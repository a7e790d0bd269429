"""The ``decaylab`` command in a fresh process: help without torch, and errors that point to the right command."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from decaylab.cli import COMMANDS

REPO = Path(__file__).resolve().parents[2]

# Runs the command line as `python -m decaylab` would, then reports the heavy modules it imported.
DRIVER = """
import runpy, sys
sys.argv = ["decaylab", *sys.argv[1:]]
try:
    runpy.run_module("decaylab", run_name="__main__")
except SystemExit:
    pass
print("imported:", sorted(m for m in ("torch", "numpy", "triton", "tokenizers") if m in sys.modules))
"""


def run_cli(*argv: str, cwd: Path = REPO, driver: bool = False) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    command = [sys.executable, "-c", DRIVER, *argv] if driver else [sys.executable, "-m", "decaylab", *argv]
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("argv", [[], *([name] for name in COMMANDS)], ids=lambda argv: " ".join(argv) or "decaylab")
def test_help_does_not_import_torch(argv):
    done = run_cli(*argv, "--help", driver=True)
    assert done.returncode == 0, done.stderr
    assert "usage: decaylab" in done.stdout
    assert done.stdout.strip().endswith("imported: []")


def test_an_unknown_command_is_answered_by_argparse():
    done = run_cli("trian")
    assert done.returncode == 2 and "invalid choice: 'trian'" in done.stderr


def test_report_on_a_training_run_points_to_eval(tmp_path):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "config.json").write_text("{}\n")
    done = run_cli("report", "run", cwd=tmp_path)
    assert done.returncode == 2
    assert "run is a training run, not a sweep directory; `decaylab eval run` evaluates it" in done.stderr


def test_eval_on_a_sweep_directory_points_to_report(tmp_path):
    (tmp_path / "sweep").mkdir()
    (tmp_path / "sweep" / "results.sqlite").write_bytes(b"")
    done = run_cli("eval", "sweep", cwd=tmp_path)
    assert done.returncode == 2
    assert "sweep is a sweep directory, not a run; `decaylab report sweep` writes its report" in done.stderr


def test_a_bad_sweep_override_is_blamed_on_set_and_creates_nothing(tmp_path):
    done = run_cli("sweep", "quick", "--out", "out", "--set", "train.max_stepz=5", cwd=tmp_path)
    assert done.returncode == 2 and done.stderr.count("\n") == 1
    assert "error: --set: unknown setting 'train.max_stepz'" in done.stderr and "Did you mean" in done.stderr
    assert not (tmp_path / "out").exists()  # no empty sweep directory with a lock file left behind


def test_a_reader_that_stops_early_ends_the_command_quietly(tmp_path):
    """`decaylab sweep paper --dry-run | head -1` with the reader gone before the first line: no traceback, exit
    141 (a shell's code for a command ended by a closed pipe)."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    read_end, write_end = os.pipe()
    os.close(read_end)  # nobody will read: the command's first write meets a closed pipe, whatever the timing
    try:
        done = subprocess.run([sys.executable, "-m", "decaylab", "sweep", "paper", "--out", str(tmp_path / "s"),
                               "--dry-run"], stdout=write_end, stderr=subprocess.PIPE, cwd=REPO, env=env,
                              timeout=120)  # fmt: skip
    finally:
        os.close(write_end)
    stderr = done.stderr.decode()
    assert done.returncode == 141, stderr
    assert "Traceback" not in stderr and "BrokenPipe" not in stderr
