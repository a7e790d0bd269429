"""Launching a sweep as a job array through submitit's local executor (fake backend): tasks, record, status,
re-submission, collection."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
from fake_backend import BACKEND
from test_sweep_runner import calls, make_spec

from decaylab.sweep.db import ResultsDB
from decaylab.sweep.launch import collect, launch_sweep, print_status
from decaylab.sweep.resources import SlurmOptions
from decaylab.sweep.slurm import LauncherUnavailable


def quiet(_line: str) -> None:
    pass


def by_kind(db: ResultsDB) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for row in db.runs():
        out.setdefault(row["config"]["model"]["decay"]["kind"], []).append(row)
    return out


def test_local_array_runs_points_records_jobs_and_fills_the_database(tmp_path, task_path):
    spec = make_spec(kinds=("simple", "boom"), ps=(0.8, 0.99), evaluation={"max_tokens": 100})
    result = launch_sweep(spec, tmp_path, "submitit-local", SlurmOptions(max_running=2), backend=BACKEND, log=quiet)
    assert len(result.submitted) == 4 and len(result.finished) == 2 and len(result.failed) == 2 and not result.ok

    db = ResultsDB(tmp_path / "results.sqlite")
    kinds = by_kind(db)
    assert {r["status"] for r in kinds["simple"]} == {"finished"}
    assert {r["status"] for r in kinds["boom"]} == {"failed"}
    assert all("boom: this point is broken" in r["error"] for r in kinds["boom"])
    # Tasks never open the database: only the submitting process writes it, so no run was marked running.
    assert all(r["attempts"] == 0 and r["pid"] is None for r in db.runs())
    assert all(m["val_ppl"] > 100 for m in db.metrics().values()) and len(db.metrics()) == 2

    record = json.loads((tmp_path / "launch.json").read_text())
    assert set(record["runs"]) == set(result.submitted)
    for run_id, entry in record["runs"].items():
        assert entry["launcher"] == "submitit-local" and len(entry["job_ids"]) == 1
        outcome = json.loads((tmp_path / "tasks" / f"{run_id}.json").read_text())
        assert outcome["job_id"] == entry["job_ids"][0]  # the task knows its own job id
        assert (tmp_path / "submitit" / "submitit-local" / f"{entry['job_ids'][0]}_0_log.out").is_file()
    failed = result.failed[0]
    assert "RuntimeError: boom" in (tmp_path / "logs" / f"{failed}.log").read_text()
    evaluation = json.loads((tmp_path / "runs" / result.finished[0] / "eval.json").read_text())
    assert evaluation["options"] == {"max_tokens": 100}


def test_resubmission_skips_finished_points_and_resumes_failed_ones(tmp_path, task_path):
    spec = make_spec(kinds=("simple", "flaky"), ps=(0.9,))
    (tmp_path / "FAIL").write_text("")
    first = launch_sweep(spec, tmp_path, "submitit-local", backend=BACKEND, log=quiet)
    assert len(first.finished) == 1 and len(first.failed) == 1
    flaky, simple = first.failed[0], first.finished[0]

    lines: list[str] = []
    statuses = {s.run.run_id: s for s in print_status(spec, tmp_path, backend=BACKEND, log=lines.append)}
    assert statuses[simple].state == "finished" and statuses[flaky].state == "failed"
    assert "flaky: SWEEP_DIR/FAIL exists" in statuses[flaky].detail
    assert any(flaky in line and "failed" in line and statuses[flaky].job_id in line for line in lines)

    (tmp_path / "FAIL").unlink()
    again = launch_sweep(spec, tmp_path, "submitit-local", backend=BACKEND, log=quiet)
    assert again.skipped == 1 and again.submitted == [flaky] and again.finished == [flaky]
    assert len(calls(tmp_path / "runs" / simple)) == 1  # not retrained
    assert [c["resume"] for c in calls(tmp_path / "runs" / flaky)] == [False, True]  # resumed from its run dir
    record = json.loads((tmp_path / "launch.json").read_text())
    assert len(record["runs"][flaky]["job_ids"]) == 2 and len(record["runs"][simple]["job_ids"]) == 1
    assert {r["status"] for r in ResultsDB(tmp_path / "results.sqlite").runs()} == {"finished"}


def test_collect_fills_the_database_from_run_directories_idempotently(tmp_path, task_path):
    spec = make_spec(kinds=("simple", "boom"), ps=(0.9,), seeds=(0, 1))
    launch_sweep(spec, tmp_path, "submitit-local", SlurmOptions(max_running=2), backend=BACKEND, log=quiet)
    (tmp_path / "results.sqlite").unlink()  # as if the tasks had run elsewhere and nothing was ingested yet
    for suffix in ("-wal", "-shm"):
        Path(f"{tmp_path / 'results.sqlite'}{suffix}").unlink(missing_ok=True)

    def snapshot():
        db = ResultsDB(tmp_path / "results.sqlite")
        runs = {r["run_id"]: (r["status"], r["error"]) for r in db.runs()}
        return runs, db.metrics(), db.curves("train_loss"), db.decay_stats(), db.memberships()

    collect(spec, tmp_path, backend=BACKEND, log=quiet)
    first = snapshot()
    assert sorted(status for status, _ in first[0].values()) == ["failed", "failed", "finished", "finished"]
    assert all("boom" in error for status, error in first[0].values() if status == "failed")
    collect(spec, tmp_path, backend=BACKEND, log=quiet)
    assert snapshot() == first


def test_bad_input_stops_before_anything_is_submitted(tmp_path, task_path, monkeypatch):
    spec = make_spec(ps=(0.9,))
    with pytest.raises(ValueError, match="unknown launcher 'slrum'. Did you mean 'slurm'"):
        launch_sweep(spec, tmp_path / "a", "slrum", backend=BACKEND, log=quiet)
    with pytest.raises(ValueError, match="torchrun"):  # several GPUs per task need decaylab's own trainer
        launch_sweep(spec, tmp_path / "b", "submitit-local", SlurmOptions(gpus=2), backend=BACKEND, log=quiet)
    assert not (tmp_path / "b").exists()
    monkeypatch.setenv("PATH", str(tmp_path / "no-slurm-here"))
    with pytest.raises(LauncherUnavailable, match="needs Slurm's sbatch and srun on PATH"):
        launch_sweep(spec, tmp_path / "d", "slurm", backend=BACKEND, log=quiet)
    assert not (tmp_path / "d").exists()

    import builtins

    real_import = builtins.__import__

    def no_submitit(name, *args, **kwargs):
        if name == "submitit" or name.startswith("submitit."):
            raise ImportError("No module named 'submitit'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_submitit)
    with pytest.raises(LauncherUnavailable, match=r'pip install -e "\.\[slurm\]"'):
        launch_sweep(spec, tmp_path / "c", "slurm", backend=BACKEND, log=quiet)
    assert not (tmp_path / "c").exists()


def test_command_line_status_and_bad_input(tmp_path, capsys):
    from decaylab.cli import main

    out = str(tmp_path / "sweep")
    assert main(["sweep", "quick", "--out", out, "--status", "--set", "train.max_steps=3"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[-1] == "sweep quick: 13 runs: 0 finished, 0 running, 13 pending, 0 failed"
    assert all("pending" in line and "not submitted" in line for line in lines[:-1])

    assert main(["sweep", "quick", "--out", out, "--launcher", "slurm", "--slurm", "partiton=gpu"]) == 2
    assert "unknown key 'partiton'. Did you mean 'partition'" in capsys.readouterr().err
    assert main(["sweep", "quick", "--out", out, "--slurm", "gpus=1"]) == 2
    assert "add --launcher slurm" in capsys.readouterr().err
    big = tmp_path / "big.toml"
    big.write_text('name = "big"\nbase = "160m-fineweb"\n[[points]]\nstudy = "a"\nlabel = "GLA"\n'
                   'set = { "model.decay.kind" = "gla" }\n')  # fmt: skip
    assert main(["sweep", str(big), "--out", out, "--launcher", "submitit-local"]) == 2
    assert "train.device=cuda but no GPU is requested: add --slurm gpus=1" in capsys.readouterr().err
    assert not (tmp_path / "sweep").exists()  # nothing was written, let alone submitted


TIMINGS = {"train_time_s", "tokens_per_s", "eval_time_s"}


@pytest.mark.slow
def test_recall_preset_gives_the_same_results_through_the_local_array(tmp_path, task_path):
    """The `recall` preset (two of its points, one seed, 3 steps) by local workers and as a submitit-local array."""
    from decaylab.report.data import load_sweep
    from decaylab.report.render import table
    from decaylab.sweep.runner import run_sweep
    from decaylab.sweep.spec import load_spec

    quick = load_spec("recall").select_studies(["sharing"])
    spec = dataclasses.replace(quick, seeds=(0,), points=quick.points[:2])  # SD-0.99 and SD-0.99-Share
    overrides = {"train.max_steps": "3"}
    assert run_sweep(spec, tmp_path / "local", workers=2, overrides=overrides, log=quiet).ok
    array = launch_sweep(spec, tmp_path / "array", "submitit-local", overrides=overrides, max_running=2, log=quiet)
    assert array.ok and len(array.finished) == 2

    def results(folder: Path):
        db = ResultsDB(folder / "results.sqlite")
        metrics = {run: {k: v for k, v in m.items() if k not in TIMINGS} for run, m in db.metrics().items()}
        (rows,) = load_sweep(folder).rows.values()
        head, cells = table(rows)
        keep = [i for i, name in enumerate(head) if name != "Tokens/s"]  # throughput differs run to run
        return metrics, db.curves("train_loss"), db.decay_stats(), [[row[i] for i in keep] for row in cells]

    local, launched = results(tmp_path / "local"), results(tmp_path / "array")
    assert len(local[0]) == 2 and all("mqar_accuracy" in m for m in local[0].values())
    assert launched == local  # same run ids, same numbers, same table
