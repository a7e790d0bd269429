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
