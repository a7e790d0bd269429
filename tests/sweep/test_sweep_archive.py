"""A sweep exported as JSON lines and resumed elsewhere: imported finished runs are not trained again."""

from __future__ import annotations

import pytest
from fake_backend import BACKEND
from test_sweep_runner import make_spec

from decaylab.sweep.archive import export_results, import_results
from decaylab.sweep.db import ResultsDB
from decaylab.sweep.runner import run_sweep


def test_a_study_resumes_from_its_export(tmp_path):
    first = make_spec(ps=(0.8, 0.99), seeds=(0,))
    run_sweep(first, tmp_path / "a", workers=1, backend=BACKEND, log=lambda s: None)
    export = tmp_path / "a.jsonl"
    assert export_results(tmp_path / "a" / "results.sqlite", export) == 2

    import_results(export, tmp_path / "b" / "results.sqlite")
    grown = make_spec(ps=(0.8, 0.99), seeds=(0, 1))  # the same points and one more seed
    result = run_sweep(grown, tmp_path / "b", workers=1, backend=BACKEND, log=lambda s: None)
    assert result.skipped == 2 and len(result.finished) == 2  # only the new seed is trained
    trained = {p.name for p in (tmp_path / "b" / "runs").iterdir()}
    with ResultsDB(tmp_path / "a" / "results.sqlite") as a, ResultsDB(tmp_path / "b" / "results.sqlite") as b:
        old = {r["run_id"] for r in a.runs()}
        assert not old & trained
        assert {r["run_id"]: r["status"] for r in b.runs()} == {**{i: "finished" for i in old},
                                                               **{i: "finished" for i in trained}}  # fmt: skip
        for run_id, values in a.metrics().items():
            for name, value in values.items():
                assert b.metrics()[run_id][name] == pytest.approx(value, rel=1e-6)
        assert set(b.curves("train_loss")) == old | trained


def test_import_never_overwrites(tmp_path):
    run_sweep(make_spec(), tmp_path / "a", workers=1, backend=BACKEND, log=lambda s: None)
    export = tmp_path / "a.jsonl"
    export_results(tmp_path / "a" / "results.sqlite", export)
    before = (tmp_path / "a" / "results.sqlite").read_bytes()
    with pytest.raises(FileExistsError, match="import into a new directory"):
        import_results(export, tmp_path / "a" / "results.sqlite")
    assert (tmp_path / "a" / "results.sqlite").read_bytes() == before
    with pytest.raises(FileNotFoundError, match="--export FILE` writes one"):
        import_results(tmp_path / "missing.jsonl", tmp_path / "d" / "results.sqlite")
    not_export = tmp_path / "other.jsonl"
    not_export.write_text('{"run": "x"}\n')
    with pytest.raises(ValueError, match="not a results export"):
        import_results(not_export, tmp_path / "c" / "results.sqlite")


def _export_of(tmp_path, config: dict, name: str):
    """A one-run export written as an older version would have written it (its config as given)."""
    import json

    from decaylab.sweep.spec import run_id_of

    sweep = {"spec": {"name": "old", "base": "tiny", "seeds": [0]}, "overrides": {}}
    run = {"run": run_id_of(config), "seed": 0, "status": "finished", "config": {}, "error": None,
           "metrics": {"test_ppl": 123.5}, "curves": {}, "decay_stats": {}, "members": [["a", "SD", 0]]}  # fmt: skip
    path = tmp_path / name
    path.write_text(json.dumps({"sweep": sweep, "base_config": config}) + "\n" + json.dumps(run) + "\n")
    return path, run["run"]


def test_an_export_from_before_a_new_setting_keeps_its_runs_done(tmp_path):
    import copy

    from decaylab.sweep.backend import default_backend
    from decaylab.sweep.spec import run_id_of

    now = default_backend().resolve("tiny", {"model.decay.kind": "simple"})
    older = copy.deepcopy(now)
    del older["model"]["tie_embeddings"]  # a setting this version has and the export's did not
    export, old_id = _export_of(tmp_path, older, "old.jsonl")
    assert old_id != run_id_of(now)
    import_results(export, tmp_path / "as-is" / "results.sqlite")
    import_results(export, tmp_path / "now" / "results.sqlite", current_ids=True)
    with ResultsDB(tmp_path / "as-is" / "results.sqlite") as a, ResultsDB(tmp_path / "now" / "results.sqlite") as b:
        assert [r["run_id"] for r in a.runs()] == [old_id]  # decaylab report keeps the file's ids
        assert [r["run_id"] for r in b.runs()] == [run_id_of(now)]  # the id the spec plans today: counted as done
        assert b.metrics()[run_id_of(now)]["test_ppl"] == 123.5
    stale = copy.deepcopy(now)
    stale["model"]["a_removed_setting"] = 1
    export, stale_id = _export_of(tmp_path, stale, "stale.jsonl")
    import_results(export, tmp_path / "stale" / "results.sqlite", current_ids=True)
    with ResultsDB(tmp_path / "stale" / "results.sqlite") as db:
        assert [r["run_id"] for r in db.runs()] == [stale_id]  # no longer parses: kept as it was (runs again)


def test_a_resumed_study_leaves_out_runs_whose_settings_changed(tmp_path):
    first = make_spec(ps=(0.8, 0.99), seeds=(0,))
    run_sweep(first, tmp_path / "a", workers=1, backend=BACKEND, log=lambda s: None)
    export = tmp_path / "a.jsonl"
    export_results(tmp_path / "a" / "results.sqlite", export)
    revised = make_spec(ps=(0.8, 0.9), seeds=(0,))  # the p = 0.99 point revised to 0.9
    from decaylab.sweep.spec import expand

    planned = {run_.run_id for run_ in expand(revised, BACKEND.resolve)}
    assert import_results(export, tmp_path / "b" / "results.sqlite", only=planned) == 1
    result = run_sweep(revised, tmp_path / "b", workers=1, backend=BACKEND, log=lambda s: None)
    assert result.skipped == 1 and len(result.finished) == 1
    with ResultsDB(tmp_path / "b" / "results.sqlite") as db:
        assert {r["run_id"] for r in db.runs()} == planned  # the revised-away run is not there to be reported
        assert {m["run_id"] for m in db.memberships()} == planned
