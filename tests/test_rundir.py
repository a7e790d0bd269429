"""The run directory's names, checkpoint listing and the one metrics.jsonl reader (tolerant of a torn line)."""

from __future__ import annotations

import json

import pytest

from decaylab import rundir


def _write_metrics(run_dir, text):
    run_dir.mkdir(exist_ok=True)
    (run_dir / rundir.METRICS).write_text(text)


def test_a_torn_last_line_is_skipped_and_named(tmp_path):
    lines = "".join(json.dumps({"step": s, "loss": 1.0 / s}) + "\n" for s in (1, 2))
    _write_metrics(tmp_path, lines + '{"step": 3, "lo')  # a process killed while writing step 3
    with pytest.warns(UserWarning, match=r"metrics.jsonl: skipped 1 unreadable line\(s\) \(line 3\)"):
        records = rundir.read_metrics(tmp_path)
    assert [r["step"] for r in records] == [1, 2]


def test_lines_that_are_not_objects_are_skipped_and_blank_lines_ignored(tmp_path):
    _write_metrics(tmp_path, '{"step": 1}\n\n[1, 2]\n"text"\n{"step": 2}\n')
    with pytest.warns(UserWarning, match=r"skipped 2 unreadable line\(s\) \(line 3, 4\)"):
        assert rundir.read_metrics(tmp_path) == [{"step": 1}, {"step": 2}]
    assert rundir.read_metrics(tmp_path / "missing") == []


def test_truncate_keeps_the_steps_a_checkpoint_covers(tmp_path):
    lines = "".join(json.dumps({"step": s, "loss": 0.5}) + "\n" for s in range(1, 6))
    _write_metrics(tmp_path, lines + '{"step": 6')
    rundir.truncate_metrics(tmp_path, 3)
    assert [r["step"] for r in rundir.read_metrics(tmp_path)] == [1, 2, 3]
    assert (tmp_path / rundir.METRICS).read_text().splitlines() == lines.splitlines()[:3]


def test_metrics_log_appends_lines_the_reader_reads(tmp_path):
    log = rundir.MetricsLog(tmp_path, tensorboard=False)
    log.write({"step": 1, "loss": 2.5})
    log.write({"step": 2, "loss": 2.0})
    log.close()
    assert rundir.read_metrics(tmp_path) == [{"step": 1, "loss": 2.5}, {"step": 2, "loss": 2.0}]


def test_checkpoints_are_listed_by_step_ignoring_other_entries(tmp_path):
    for name in ("step-10", "step-2", ".tmp-step-12.99", "notes"):
        (tmp_path / rundir.CHECKPOINTS / name).mkdir(parents=True)
    (tmp_path / rundir.CHECKPOINTS / "step-3").write_text("a file, not a checkpoint")
    assert [(s, p.name) for s, p in rundir.list_checkpoints(tmp_path)] == [(2, "step-2"), (10, "step-10")]
    assert rundir.list_checkpoints(tmp_path / "missing") == []


def test_done_and_started(tmp_path):
    assert not rundir.has_started(tmp_path) and not rundir.run_is_done(tmp_path, evaluate=False)
    (tmp_path / rundir.CONFIG).write_text("{}")
    (tmp_path / rundir.SUMMARY).write_text("{}")
    assert rundir.has_started(tmp_path) and rundir.run_is_done(tmp_path, evaluate=False)
    assert not rundir.run_is_done(tmp_path, evaluate=True)
    (tmp_path / rundir.EVAL).write_text("{}")
    assert rundir.run_is_done(tmp_path, evaluate=True)


def test_output_names():
    assert rundir.eval_names(None) == ("eval.json", "decay_median.png")
    assert rundir.eval_names(200) == ("eval-step-200.json", "decay_median-step-200.png")
    assert rundir.lm_eval_name(None) == "lm_eval.json" and rundir.lm_eval_name(5) == "lm_eval-step-5.json"
