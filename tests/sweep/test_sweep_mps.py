"""Sweep workers under an MPS daemon of the sweep's own (``--mps``): started before the workers, reached by each of
them, stopped at the end; a clear error without the control program or when it fails; a user's daemon left alone.
A stand-in control program records how it was called. On a GPU (``gpu`` marker) a small real sweep runs under the
real daemon."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from fake_backend import BACKEND
from test_sweep_runner import calls, make_spec

from decaylab.sweep.mps import CONTROL, LOG_VAR, PIPE_VAR, MPSError
from decaylab.sweep.runner import run_sweep

STAND_IN = """#!/bin/sh
# A stand-in for nvidia-cuda-mps-control: one JSON line per call (its arguments, environment and input).
input=""; [ "$1" = "-d" ] || input=$(cat)
printf '{"args": "%s", "pipe": "%s", "log": "%s", "input": "%s"}\\n' "$*" "$CUDA_MPS_PIPE_DIRECTORY" \\
  "$CUDA_MPS_LOG_DIRECTORY" "$input" >> RECORD
[ -e FAIL ] && { echo "An instance of this daemon is already running" >&2; exit 1; }
exit 0
"""


@pytest.fixture
def control(tmp_path, monkeypatch):
    """The stand-in on PATH (nothing else there); returns (record file, file whose presence makes ``-d`` fail)."""
    bin_dir, record, fail = tmp_path / "bin", tmp_path / "control.jsonl", tmp_path / "fail"
    bin_dir.mkdir()
    (bin_dir / CONTROL).write_text(STAND_IN.replace("RECORD", str(record)).replace("FAIL", str(fail)))
    (bin_dir / CONTROL).chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.path.dirname(shutil.which('sh'))}")
    monkeypatch.delenv(PIPE_VAR, raising=False)
    return record, fail


def _calls(record: Path) -> list[dict]:
    return [json.loads(line) for line in record.read_text().splitlines()] if record.exists() else []


def test_workers_reach_the_sweeps_daemon_which_stops_at_the_end(tmp_path, control):
    record, _ = control
    out = tmp_path / "sweep"
    lines = []
    result = run_sweep(make_spec(ps=(0.8, 0.9, 0.99)), out, workers=2, devices=["cuda:0", "cuda:0"], backend=BACKEND,
                       log=lines.append, mps=True)  # fmt: skip
    assert result.ok and len(result.finished) == 3
    start, stop = _calls(record)
    assert start["args"] == "-d" and stop["args"] == "" and stop["input"] == "quit"
    pipe = start["pipe"]
    assert pipe and stop["pipe"] == pipe and start["log"] == stop["log"] == str((out / "logs" / "mps").resolve())
    assert not Path(pipe).exists()  # its temporary directory is gone with it
    runs = [calls(d)[0] for d in (out / "runs").iterdir()]
    assert [r["mps"] for r in runs] == [pipe] * 3
    assert any("under MPS" in line for line in lines)


def test_without_mps_workers_see_no_daemon(tmp_path, control):
    record, _ = control
    run_sweep(make_spec(ps=(0.8,)), tmp_path, workers=1, devices=["cuda:0"], backend=BACKEND, log=lambda s: None)
    assert not record.exists()
    assert [calls(d)[0]["mps"] for d in (tmp_path / "runs").iterdir()] == [None]


def test_a_running_daemon_of_the_users_is_used_and_left_running(tmp_path, control, monkeypatch):
    record, _ = control
    monkeypatch.setenv(PIPE_VAR, "/tmp/users-own-mps")
    run_sweep(make_spec(ps=(0.8,)), tmp_path, workers=1, devices=["cuda:0"], backend=BACKEND, log=lambda s: None,
              mps=True)  # fmt: skip
    assert not record.exists()  # neither started nor stopped
    assert [calls(d)[0]["mps"] for d in (tmp_path / "runs").iterdir()] == ["/tmp/users-own-mps"]


def test_a_daemon_that_fails_to_start_is_a_clear_error_and_nothing_runs(tmp_path, control):
    record, fail = control
    fail.touch()
    with pytest.raises(MPSError, match="already running.*without --mps"):
        run_sweep(make_spec(ps=(0.8,)), tmp_path, workers=1, devices=["cuda:0"], backend=BACKEND, log=lambda s: None,
                  mps=True)  # fmt: skip
    assert [c["args"] for c in _calls(record)] == ["-d"]
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def test_mps_needs_the_control_program_and_a_cuda_device(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # no control program there
    monkeypatch.delenv(PIPE_VAR, raising=False)
    with pytest.raises(MPSError, match=f"needs NVIDIA's {CONTROL}.*without --mps"):
        run_sweep(make_spec(ps=(0.8,)), tmp_path / "a", workers=1, devices=["cuda:0"], backend=BACKEND,
                  log=lambda s: None, mps=True)  # fmt: skip
    assert not (tmp_path / "a").exists()  # refused before the sweep directory is made
    with pytest.raises(ValueError, match="--devices cuda:0"):
        run_sweep(make_spec(ps=(0.8,)), tmp_path / "b", workers=1, devices=["cpu"], backend=BACKEND, mps=True)
    with pytest.raises(ValueError, match="--devices cuda:0"):
        run_sweep(make_spec(ps=(0.8,)), tmp_path / "c", workers=1, backend=BACKEND, mps=True)


@pytest.mark.gpu
def test_a_real_sweep_trains_under_the_real_daemon(tmp_path):
    """Two workers on one card under MPS, two MQAR points each trained by the real backend: both finish, and the
    daemon's log shows its server took the workers as clients."""
    import torch

    if not torch.cuda.is_available() or shutil.which(CONTROL) is None or os.environ.get(PIPE_VAR):
        pytest.skip(f"needs a CUDA device and {CONTROL}, and no MPS daemon running already")
    from decaylab.sweep.spec import spec_from_dict

    points = [{"study": "a", "label": kind, "set": {"model.decay.kind": kind}} for kind in ("simple", "gla")]
    spec = spec_from_dict({"name": "t", "base": "mqar", "seeds": [0], "points": points})
    smoke = {"train.max_steps": 20, "train.eval_every": 10, "train.device": "cuda", "train.precision": "bf16"}
    result = run_sweep(spec, tmp_path, workers=2, devices=["cuda:0", "cuda:0"], overrides=smoke,
                       log=lambda s: None, mps=True)  # fmt: skip
    assert result.ok and len(result.finished) == 2
    logs = "".join(p.read_text() for p in (tmp_path / "logs" / "mps").glob("*.log"))
    assert "New client" in logs or "new client" in logs.lower(), logs[-2000:]
    assert LOG_VAR not in os.environ or os.environ[LOG_VAR] != str(tmp_path / "logs" / "mps")


def test_a_daemon_left_by_a_killed_driver_is_stopped_by_the_next_invocation(tmp_path, control):
    record, _ = control
    out = tmp_path / "sweep"
    left_over = tmp_path / "old-pipes"
    left_over.mkdir()
    (out / "logs" / "mps").mkdir(parents=True)
    (out / "logs" / "mps" / "pipe-directory").write_text(f"{left_over}\n")  # what a killed driver leaves behind
    run_sweep(make_spec(ps=(0.8,)), out, workers=1, devices=["cuda:0"], backend=BACKEND, log=lambda s: None,
              mps=True)  # fmt: skip
    stop_old, start, stop = _calls(record)
    assert (stop_old["args"], stop_old["input"], stop_old["pipe"]) == ("", "quit", str(left_over))
    assert start["args"] == "-d" and start["pipe"] != str(left_over) and stop["pipe"] == start["pipe"]
    assert not left_over.exists() and not (out / "logs" / "mps" / "pipe-directory").exists()
