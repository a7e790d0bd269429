"""Finding the model of a run directory: final model, checkpoints, and every way it can be missing."""

from __future__ import annotations

import pytest

from decaylab.run.loading import locate_model, resolve_device
from decaylab.rundir import check_run_dir


def _run(tmp_path, *, model=False, steps=()):
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text("{}")
    if model:
        (run / "model").mkdir()
    for step in steps:
        (run / "checkpoints" / f"step-{step}").mkdir(parents=True)
    (run / "checkpoints").mkdir(exist_ok=True)
    (run / "checkpoints" / ".tmp-step-99.123").mkdir()  # an interrupted write: never picked
    return run


def test_missing_and_wrong_run_dirs(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        check_run_dir(tmp_path / "nope")
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match="is a file"):
        check_run_dir(tmp_path / "file")
    with pytest.raises(FileNotFoundError, match="no config.json"):
        check_run_dir(tmp_path)


def test_final_model_is_the_default(tmp_path):
    run = _run(tmp_path, model=True, steps=(10, 20))
    assert locate_model(run, None) == (run / "model", "model", None)


def test_latest_and_named_checkpoints(tmp_path):
    run = _run(tmp_path, model=True, steps=(5, 20, 100))
    assert locate_model(run, "latest") == (run / "checkpoints" / "step-100", "checkpoints/step-100", 100)
    assert locate_model(run, "step-20") == (run / "checkpoints" / "step-20", "checkpoints/step-20", 20)
    path, source, step = locate_model(run, str(run / "checkpoints" / "step-5"))
    assert (path, source, step) == (run / "checkpoints" / "step-5", "checkpoints/step-5", 5)
    with pytest.raises(FileNotFoundError, match=r"step-7.*step-5, step-20, step-100"):
        locate_model(run, "step-7")


def test_unfinished_run_names_the_flag(tmp_path):
    run = _run(tmp_path, steps=(30,))
    with pytest.raises(FileNotFoundError, match=r"no final model.*step 30.*--checkpoint latest"):
        locate_model(run, None)


def test_run_without_any_model_says_train_first(tmp_path):
    run = _run(tmp_path)
    with pytest.raises(FileNotFoundError, match="train it first"):
        locate_model(run, None)
    with pytest.raises(FileNotFoundError, match="train first"):
        locate_model(run, "latest")


def test_device_resolution():
    assert resolve_device("cpu").type == "cpu"
    assert resolve_device(None).type in ("cpu", "cuda")
