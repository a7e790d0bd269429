"""Several points per worker process (--runs-per-worker): the same results, failures isolated per point."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest
from fake_backend import BACKEND
from test_sweep_runner import calls, make_spec

from decaylab.cli import main
from decaylab.sweep.db import ResultsDB
from decaylab.sweep.runner import run_sweep


def _results(out):
    with ResultsDB(out / "results.sqlite") as db:
        return {r["run_id"]: r["status"] for r in db.runs()}, db.metrics()


def test_groups_give_the_results_of_one_process_per_point(tmp_path):
    spec = make_spec(ps=(0.5, 0.8, 0.9, 0.99), seeds=(0, 1), evaluation={"max_tokens": 100})
    lines = []
    single = run_sweep(spec, tmp_path / "single", workers=2, backend=BACKEND, log=lambda s: None)
    grouped = run_sweep(spec, tmp_path / "grouped", workers=2, backend=BACKEND, log=lines.append, runs_per_worker=3)
    assert sorted(grouped.finished) == sorted(single.finished) and len(grouped.finished) == 8
    assert _results(tmp_path / "grouped") == _results(tmp_path / "single")
    assert sum("] done   " in line for line in lines) == 8 and "[8/8 100%" in lines[-2]
    for run_id in grouped.finished:  # every point has its log (the group's, under each name) and trained once
        assert (tmp_path / "grouped" / "logs" / f"{run_id}.log").is_file()
        assert len(calls(tmp_path / "grouped" / "runs" / run_id)) == 1
    again = run_sweep(spec, tmp_path / "grouped", workers=2, backend=BACKEND, log=lambda s: None, runs_per_worker=3)
    assert again.skipped == 8 and not again.finished


def test_a_failing_point_in_a_group_is_isolated_and_a_crash_fails_its_group(tmp_path):
    spec = make_spec(kinds=("simple", "boom"), ps=(0.9, 0.99))
    result = run_sweep(spec, tmp_path / "a", workers=1, backend=BACKEND, log=lambda s: None, runs_per_worker=4)
    statuses, _ = _results(tmp_path / "a")
    with ResultsDB(tmp_path / "a" / "results.sqlite") as db:
        kinds = {r["run_id"]: r["config"]["model"]["decay"]["kind"] for r in db.runs()}
        errors = {r["run_id"]: r["error"] for r in db.runs()}
    for run_id, kind in kinds.items():
        assert statuses[run_id] == ("failed" if kind == "boom" else "finished")
        if kind == "boom":
            assert "boom: this point is broken on purpose" in errors[run_id]
    assert len(result.failed) == 2 and len(result.finished) == 2

    crash = make_spec(kinds=("crash", "simple"), ps=(0.9,))
    result = run_sweep(crash, tmp_path / "b", workers=1, backend=BACKEND, log=lambda s: None, runs_per_worker=2)
    statuses, _ = _results(tmp_path / "b")
    assert set(statuses.values()) == {"failed"} and len(result.failed) == 2  # the process died under both


def test_runs_per_worker_must_be_positive(tmp_path):
    with pytest.raises(ValueError, match="--runs-per-worker 0: need at least 1"):
        run_sweep(make_spec(), tmp_path, backend=BACKEND, runs_per_worker=0)


SPEC = """
name = "pair"
base = "tiny"
seeds = [0, 1]
[budget]
max_steps = 3
[overrides]
"train.progress" = false
"train.warmup_steps" = 1
"train.eval_every" = 0
"train.ckpt_every" = 0
[evaluation]
max_tokens = 500
extrapolation = [1]
decay_tokens = 64
[studies]
s = "S"
[[points]]
study = "s"
label = "SD"
set = { "model.decay.kind" = "simple" }
"""


@pytest.mark.slow
def test_real_runs_trained_together_match_runs_alone(tmp_path):
    spec = tmp_path / "pair.toml"
    spec.write_text(textwrap.dedent(SPEC))
    assert main(["sweep", str(spec), "--out", str(tmp_path / "alone"), "--workers", "1"]) == 0
    assert main(["sweep", str(spec), "--out", str(tmp_path / "together"), "--workers", "1",
                 "--runs-per-worker", "2"]) == 0  # fmt: skip
    statuses, metrics = _results(tmp_path / "together")
    assert set(statuses.values()) == {"finished"} and len(statuses) == 2
    _, alone = _results(tmp_path / "alone")
    for run_id, values in alone.items():
        for name in ("final_loss", "test_ppl", "val_ppl"):
            assert metrics[run_id][name] == values[name], (run_id, name)

    # the group's timing, as scripts/fixed_cost.py reads it: one group of two, training inside its wall time
    fixed_cost = _script("fixed_cost")
    (group,) = fixed_cost.groups(tmp_path / "together")
    assert (group["size"], group["finished"]) == (2, 2)
    assert 0 < group["loop"] < group["wall"] and 0 < group["build"] and 0 < group["eval"]
    assert group["fixed"] == pytest.approx(group["wall"] - group["loop"])
    assert fixed_cost.groups(tmp_path / "alone") == []  # runs trained one per process carry no group timing


@pytest.mark.slow
def test_real_groups_give_the_same_numbers_in_one_reused_worker_as_in_fresh_processes(tmp_path):
    spec = tmp_path / "pair.toml"
    spec.write_text(textwrap.dedent(SPEC).replace('set = { "model.decay.kind" = "simple" }', """set = { "model.decay.kind" = "simple" }
[[points]]
study = "s"
label = "GLA"
set = { "model.decay.kind" = "gla" }"""))  # fmt: skip
    for name, workers in (("reused", "1"), ("fresh", "2")):  # two groups: one worker takes both, or one each
        assert main(["sweep", str(spec), "--out", str(tmp_path / name), "--workers", workers,
                     "--runs-per-worker", "2"]) == 0  # fmt: skip
    for name, processes in (("reused", 1), ("fresh", 2)):
        with ResultsDB(tmp_path / name / "results.sqlite") as db:
            pids = {r["pid"] for r in db.runs()}
        assert len(pids) == processes and None not in pids
    _, reused = _results(tmp_path / "reused")
    _, fresh = _results(tmp_path / "fresh")
    assert len(reused) == 4 and reused.keys() == fresh.keys()
    for run_id, values in fresh.items():
        for name in ("final_loss", "test_ppl", "val_ppl"):
            assert reused[run_id][name] == values[name], (run_id, name)


def _script(name):
    import importlib.util

    path = Path(__file__).resolve().parents[2] / "scripts" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_seeds_adjacent_puts_each_points_seeds_together():
    from decaylab.sweep.runner import seeds_adjacent
    from decaylab.sweep.spec import expand

    spec = make_spec(ps=(0.5, 0.8, 0.9), seeds=(0, 1, 2))
    plan = expand(spec, BACKEND.resolve)
    ordered = seeds_adjacent(plan)
    assert sorted(r.run_id for r in ordered) == sorted(r.run_id for r in plan)
    points = [(r.memberships[0].label, r.memberships[0].seed) for r in ordered]
    assert points == [(label, seed) for label in ("simple-0.5", "simple-0.8", "simple-0.9") for seed in (0, 1, 2)]


def test_stack_seeds_needs_several_runs_per_worker(tmp_path):
    with pytest.raises(ValueError, match="--stack-seeds .* --runs-per-worker K >= 2"):
        run_sweep(make_spec(), tmp_path, backend=BACKEND, stack_seeds=True)


@pytest.mark.slow
def test_real_seeds_stacked_match_runs_alone_without_dropout(tmp_path):
    spec = tmp_path / "pair.toml"
    spec.write_text(textwrap.dedent(SPEC))
    no_dropout = ["--set", "model.dropout=0"]
    assert main(["sweep", str(spec), "--out", str(tmp_path / "alone"), "--workers", "1", *no_dropout]) == 0
    assert main(["sweep", str(spec), "--out", str(tmp_path / "stacked"), "--workers", "1", "--runs-per-worker", "2",
                 "--stack-seeds", *no_dropout]) == 0  # fmt: skip
    statuses, metrics = _results(tmp_path / "stacked")
    assert set(statuses.values()) == {"finished"} and len(statuses) == 2
    for run_id in statuses:
        summary = json.loads((tmp_path / "stacked" / "runs" / run_id / "summary.json").read_text())
        assert summary["together_replicas"] == 2
    _, alone = _results(tmp_path / "alone")
    for run_id, values in alone.items():  # one model of two replicas: its run alone, to float32 rounding
        for name in ("final_loss", "test_ppl", "val_ppl"):
            assert metrics[run_id][name] == pytest.approx(values[name], rel=1e-4), (run_id, name)
