"""The results database: concurrent writers from several processes, idempotent ingestion, torn metric lines."""

from __future__ import annotations

import json

from decaylab.sweep.db import ResultsDB
from decaylab.sweep.ingest import read_metrics_jsonl, read_run
from decaylab.sweep.runner import worker_context

WRITERS, RUNS_PER_WRITER = 4, 15


def results_for(i: int) -> dict:
    return {
        "metrics": {"val_ppl": 100.0 + i, "tokens": 1000.0 * i},
        "curves": {"train_loss": [(s, 5.0 - s / 100) for s in range(1, 41)]},
        "decay_stats": {layer: {"median": 0.9, "p25": 0.8} for layer in range(3)},
    }


def writer(path: str, worker: int, barrier) -> None:
    db = ResultsDB(path)
    barrier.wait()  # start together, so the writes really overlap
    for j in range(RUNS_PER_WRITER):
        run_id = f"w{worker}-r{j}"
        with db.transaction() as c:
            c.execute("INSERT INTO runs (run_id, config, seed) VALUES (?, ?, 0)", (run_id, json.dumps({"j": j})))
        db.mark_running(run_id)
        db.mark_finished(run_id, results_for(worker * 100 + j))
    db.close()


def test_concurrent_processes_never_corrupt_the_database(tmp_path):
    path = str(tmp_path / "results.sqlite")
    ResultsDB(path).close()
    ctx = worker_context()  # the sweep's own way of starting workers
    barrier = ctx.Barrier(WRITERS)
    procs = [ctx.Process(target=writer, args=(path, w, barrier)) for w in range(WRITERS)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    assert [p.exitcode for p in procs] == [0] * WRITERS

    db = ResultsDB(path)
    assert db.conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert db.conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    runs = db.runs()
    assert len(runs) == WRITERS * RUNS_PER_WRITER and {r["status"] for r in runs} == {"finished"}
    metrics = db.metrics()
    assert metrics["w3-r14"]["val_ppl"] == 100.0 + 314
    assert all(len(points) == 40 for points in db.curves("train_loss").values())
    assert len(db.decay_stats()) == WRITERS * RUNS_PER_WRITER


def test_ingesting_twice_gives_the_same_rows(tmp_path):
    db = ResultsDB(tmp_path / "r.sqlite")
    with db.transaction() as c:
        c.execute("INSERT INTO runs (run_id, config) VALUES ('a', '{}')")
    db.mark_finished("a", results_for(1))
    db.mark_finished("a", results_for(2))
    assert db.metrics() == {"a": {"val_ppl": 102.0, "tokens": 2000.0}}
    assert len(db.curves("train_loss")["a"]) == 40


def test_read_run_parses_every_source(tmp_path):
    (tmp_path / "summary.json").write_text(json.dumps({"status": "finished", "tokens": 64, "num_params": 10}))
    lines = [{"step": 1, "loss": 5.0}, {"step": 2, "loss": 4.0, "val_loss": 4.5}, {"step": 2, "loss": 3.9}]
    text = "\n".join(json.dumps(x) for x in lines) + '\n{"step": 3, "lo'  # a torn last line
    (tmp_path / "metrics.jsonl").write_text(text)
    evaluation = {
        "val_ppl": 50.0,
        "test_ppl": float("nan"),
        "extrapolation": {"4": 60.0, "1": 55.0},
        "extrapolation_context": {"1": 128, "4": 512},
        "loss_by_position": [[0, 6.0], [64, 4.0]],
        "decay_stats": [{"layer": 1, "granularity": "scalar", "median": 0.5}, {"layer": "all", "median": 0.6}],
    }
    (tmp_path / "eval.json").write_text(json.dumps(evaluation))
    out = read_run(tmp_path)
    assert out["metrics"]["val_ppl"] == 50.0 and "test_ppl" not in out["metrics"]  # NaN is not a result
    assert out["metrics"]["extrapolation_ppl"] == 60.0 and out["metrics"]["extrapolation_length"] == 512
    assert out["curves"]["train_loss"] == [(1.0, 5.0), (2.0, 3.9)]  # repeated step: the last value wins
    assert out["curves"]["extrapolation_ppl"] == [(128.0, 55.0), (512.0, 60.0)]
    assert out["decay_stats"] == {1: {"median": 0.5}, 0: {"median": 0.6}}
    assert read_metrics_jsonl(tmp_path / "missing.jsonl") == {}
