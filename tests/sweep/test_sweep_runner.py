"""The sweep runner with a fake backend: parallel runs, skip-if-done, failure isolation, kill and resume."""

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

from decaylab.sweep.db import ResultsDB
from decaylab.sweep.runner import group_size, run_sweep
from decaylab.sweep.spec import spec_from_dict

HERE = Path(__file__).resolve().parent


def make_spec(kinds=("simple",), ps=(0.8, 0.99), seeds=(0,), evaluation=None):
    points = [
        {"study": "a", "label": f"{kind}-{p}", "set": {"model.decay.kind": kind, "model.decay.p": p}}
        for kind in kinds
        for p in ps
    ]
    data = {"name": "t", "base": "fake", "seeds": list(seeds), "points": points}
    return spec_from_dict({**data, "evaluation": evaluation} if evaluation else data)


def calls(run_dir: Path) -> list[dict]:
    path = run_dir / "calls.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def test_parallel_sweep_records_results_and_skips_finished_runs(tmp_path):
    spec = make_spec(seeds=(0, 1), evaluation={"max_tokens": 500, "extrapolation": [1, 2]})
    result = run_sweep(spec, tmp_path, workers=2, backend=BACKEND, log=lambda s: None)
    assert result.ok and len(result.finished) == 4 and result.skipped == 0
    db = ResultsDB(tmp_path / "results.sqlite")
    runs = db.runs()
    assert {r["status"] for r in runs} == {"finished"} and all(r["attempts"] == 1 for r in runs)
    metrics = db.metrics()
    assert all(metrics[r["run_id"]]["val_ppl"] > 100 for r in runs)
    assert all(len(points) == 10 for points in db.curves("train_loss").values())
    assert all(len(points) == 2 for points in db.curves("extrapolation_ppl").values())
    stats = db.decay_stats()
    assert all(set(layers) == {0, 1, 2} for layers in stats.values())
    assert len(db.memberships()) == 4
    evaluation = json.loads((tmp_path / "runs" / runs[0]["run_id"] / "eval.json").read_text())
    assert evaluation["options"] == {"max_tokens": 500, "extrapolation": [1, 2]}  # the spec's [evaluation]

    again = run_sweep(spec, tmp_path, workers=2, backend=BACKEND, log=lambda s: None)
    assert again.skipped == 4 and not again.finished
    assert all(len(calls(tmp_path / "runs" / r["run_id"])) == 1 for r in runs)  # nothing was retrained


def test_failing_point_is_isolated(tmp_path):
    spec = make_spec(kinds=("simple", "boom", "crash"), ps=(0.9,))
    result = run_sweep(spec, tmp_path, workers=2, backend=BACKEND, log=lambda s: None)
    db = ResultsDB(tmp_path / "results.sqlite")
    by_kind = {r["config"]["model"]["decay"]["kind"]: r for r in db.runs()}
    assert by_kind["simple"]["status"] == "finished"
    assert by_kind["boom"]["status"] == "failed" and "boom: this point is broken" in by_kind["boom"]["error"]
    assert by_kind["crash"]["status"] == "failed" and "exited with code 9" in by_kind["crash"]["error"]
    assert sorted(result.failed) == sorted([by_kind["boom"]["run_id"], by_kind["crash"]["run_id"]])
    assert "RuntimeError: boom" in (tmp_path / "logs" / f"{by_kind['boom']['run_id']}.log").read_text()


DRIVER = """
import sys
sys.path.insert(0, {here!r})
from fake_backend import BACKEND
from test_sweep_runner import make_spec
from decaylab.sweep.runner import run_sweep
run_sweep(make_spec(kinds=("simple", "block"), ps=(0.8, 0.99)), {out!r}, workers=2, backend=BACKEND)
"""


def test_killed_sweep_resumes_without_redoing_finished_runs(tmp_path):
    out = tmp_path / "sweep"
    out.mkdir()
    (out / "BLOCK").touch()
    proc = subprocess.Popen([sys.executable, "-c", DRIVER.format(here=str(HERE), out=str(out))], start_new_session=True)
    try:
        deadline = time.time() + 60
        while time.time() < deadline:  # wait until the simple runs finished and both block runs checkpointed
            ckpts = list(out.glob("runs/*/checkpoints/step-1"))
            if len(ckpts) == 2 and (out / "results.sqlite").exists():
                db = ResultsDB(out / "results.sqlite")
                if sum(r["status"] == "finished" for r in db.runs()) == 2:
                    break
            time.sleep(0.2)
        else:
            pytest.fail("sweep did not reach the blocking points in time")
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the driver and its workers, as a kill -9 of the whole job
        proc.wait()

    db = ResultsDB(out / "results.sqlite")
    assert sorted(r["status"] for r in db.runs()) == ["finished", "finished", "running", "running"]
    (out / "BLOCK").unlink()
    result = run_sweep(make_spec(kinds=("simple", "block")), out, workers=2, backend=BACKEND, log=lambda s: None)
    assert result.ok and result.skipped == 2 and len(result.finished) == 2
    for run in db.runs():
        history = calls(out / "runs" / run["run_id"])
        if run["config"]["model"]["decay"]["kind"] == "simple":
            assert len(history) == 1  # finished before the kill: not redone
        else:
            assert [c["resume"] for c in history] == [False, True]  # resumed from its checkpoint
        assert run["status"] == "finished"


def test_second_driver_on_same_directory_is_refused(tmp_path):
    from decaylab.sweep.sweepdir import lock as _lock

    fd = _lock(tmp_path / ".sweep.lock")  # as held by a running driver
    try:
        with pytest.raises(FileExistsError, match="another `decaylab sweep` is running"):
            run_sweep(make_spec(), tmp_path, backend=BACKEND, log=lambda s: None)
    finally:
        os.close(fd)


def test_directory_of_another_sweep_is_refused(tmp_path):
    run_sweep(make_spec(ps=(0.9,)), tmp_path, backend=BACKEND, log=lambda s: None)
    other = spec_from_dict({"name": "other", "base": "fake", "points": [{"study": "a", "label": "x"}]})
    with pytest.raises(FileExistsError, match="holds results of sweep 't'"):
        run_sweep(other, tmp_path, backend=BACKEND, log=lambda s: None)


def test_bad_worker_settings():
    with pytest.raises(ValueError, match="at least 1 worker"):
        run_sweep(make_spec(), "unused", workers=0, backend=BACKEND)
    with pytest.raises(ValueError, match="one worker per device"):
        run_sweep(make_spec(), "unused", workers=3, devices=["cuda:0"], backend=BACKEND)


def test_running_one_study_keeps_the_others_in_the_database(tmp_path):
    points = [{"study": s, "label": f"p{i}", "set": {"model.decay.p": p}} for s, i, p in
              (("a", 0, 0.8), ("b", 1, 0.9))]  # fmt: skip
    spec = spec_from_dict({"name": "t", "base": "fake", "points": points})
    run_sweep(spec, tmp_path, backend=BACKEND, log=lambda s: None)
    smoke = {"train.max_steps": 3}
    run_sweep(spec.select_studies(["b"]), tmp_path, overrides=smoke, backend=BACKEND, log=lambda s: None)
    db = ResultsDB(tmp_path / "results.sqlite")
    members = {m["study"]: m["run_id"] for m in db.memberships()}
    configs = {r["run_id"]: r["config"] for r in db.runs()}
    assert set(members) == {"a", "b"}
    assert configs[members["a"]]["train"]["max_steps"] == 10 and configs[members["b"]]["train"]["max_steps"] == 3


def test_console_shows_overall_progress_and_joins_labels_with_commas(tmp_path):
    spec = spec_from_dict({"name": "t", "base": "fake", "points": [
        {"study": "a", "label": "SD 1/2", "set": {"model.decay.p": 0.5}},
        {"study": "b", "label": "shared", "set": {"model.decay.p": 0.5}},  # the same run, in a second study
        {"study": "a", "label": "other", "set": {"model.decay.p": 0.9}},
    ]})
    lines = []
    run_sweep(spec, tmp_path / "out", workers=1, backend=BACKEND, log=lines.append)
    ended = [line for line in lines if " done " in line]
    assert len(ended) == 2
    assert ended[0].strip().startswith("[1/2 50%, ~") and ended[0].split("]")[0].endswith(" left")
    assert ended[1].strip().startswith("[2/2 100%, ")
    assert any("SD 1/2, shared (seed 0)" in line for line in lines)


def test_a_bad_override_leaves_no_sweep_directory(tmp_path):
    with pytest.raises(ValueError, match="model.decay.pp"):
        run_sweep(make_spec(), tmp_path / "out", overrides={"model.decay.pp": 1}, backend=BACKEND, log=lambda s: None)
    assert not (tmp_path / "out").exists()


def test_a_worker_takes_group_after_group_and_a_failure_gets_a_fresh_process(tmp_path):
    spec = make_spec(ps=(0.5, 0.8, 0.9, 0.99), seeds=(0, 1))
    result = run_sweep(spec, tmp_path / "a", workers=1, backend=BACKEND, log=lambda s: None, runs_per_worker=2)
    assert len(result.finished) == 8
    history = [calls(run_dir)[0] for run_dir in (tmp_path / "a" / "runs").iterdir()]
    assert len({c["pid"] for c in history}) == 1  # four groups, one process
    if history[0]["fds"] is not None:  # each group's locks, log and database closed before the next
        assert len({c["fds"] for c in history}) == 1, [c["fds"] for c in history]

    spec = make_spec(kinds=("simple", "boom"), ps=(0.9, 0.99))
    result = run_sweep(spec, tmp_path / "b", workers=1, backend=BACKEND, log=lambda s: None)
    assert len(result.finished) == 2 and len(result.failed) == 2
    with ResultsDB(tmp_path / "b" / "results.sqlite") as db:
        pids = {r["config"]["model"]["decay"]["kind"] + str(r["config"]["model"]["decay"]["p"]):
                calls(tmp_path / "b" / "runs" / r["run_id"])[0]["pid"] for r in db.runs()}  # fmt: skip
    assert pids["simple0.9"] == pids["simple0.99"]
    assert pids["boom0.9"] != pids["boom0.99"]  # the worker of a failed point exits; the next point gets another


def test_the_last_groups_shrink_so_the_workers_end_together():
    assert group_size(201, 12, 3, unit=3) == 12
    assert group_size(33, 12, 3, unit=3) == 12
    assert group_size(21, 12, 3, unit=3) == 9  # a fair share, whole stacks of three seeds
    assert group_size(5, 12, 3, unit=3) == 3
    assert group_size(2, 12, 3, unit=3) == 2
    assert group_size(7, 8, 4) == 2
    assert group_size(10, 1, 4) == 1


def test_a_group_handed_to_a_worker_that_died_while_idle_goes_to_a_fresh_one():
    from decaylab.sweep.runner import _Slot

    class Dead:
        def send(self, runs):
            raise BrokenPipeError

    class Live:
        def __init__(self):
            self.sent = []

        def send(self, runs):
            self.sent.append(runs)

    class Proc:
        joined = False

        def join(self):
            self.joined = True

    started = []

    def start(ctx, args):
        started.append(args)
        slot.proc, slot.conn = "fresh", Live()

    old = Proc()
    slot = _Slot("cuda:0", proc=old, conn=Dead())
    slot.start = start  # what a real slot does: fork a worker and connect its pipe
    slot.hand_over(None, ("args",), [("run", {}, "dir")])
    assert old.joined and started == [("args",)] and slot.proc == "fresh"
    assert slot.conn.sent == [[("run", {}, "dir")]]
