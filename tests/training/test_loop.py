"""The training loop: run directory contents, exact resume after kill -9, divergence, refusals, accumulation."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from training_helpers import curve, small_run

from decaylab.config import load_json
from decaylab.model import DecayLM
from decaylab.run.checkpoint import list_checkpoints, load_checkpoint
from decaylab.run.config import RunConfig
from decaylab.rundir import read_metrics
from decaylab.training import loop
from decaylab.training.loop import TrainingDiverged, train

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def straight_run(tmp_path_factory) -> tuple[Path, dict]:
    """One uninterrupted run of the test configuration, shared by the tests that compare against it."""
    out = tmp_path_factory.mktemp("straight") / "run"
    return out, train(small_run(), out)


def test_run_directory_contents(straight_run):
    run, summary = straight_run
    assert summary["status"] == "finished" and summary["steps"] == 8 and summary["tokens"] == 8 * 4 * 24
    assert json.loads((run / "summary.json").read_text()) == summary
    assert load_json(RunConfig, run / "config.json") == small_run()
    assert (run / "tokenizer.json").is_file()
    records = read_metrics(run)
    assert [r["step"] for r in records] == list(range(1, 9))
    assert set(records[0]) >= {"step", "tokens", "loss", "lr", "grad_norm", "tokens_per_s"}
    assert [r["step"] for r in records if "val_loss" in r] == [4, 8]
    # The summary's validation is the last periodic one, over train.eval_batches batches: named as an estimate,
    # never as eval.json's whole-split val_ppl.
    assert "val_ppl" not in summary and "val_loss" not in summary
    assert summary["val_loss_estimate"] == records[-1]["val_loss"] and summary["val_estimate_batches"] == 1
    assert records[-1]["loss"] < records[0]["loss"]
    assert [s for s, _ in list_checkpoints(run)] == [3, 6, 8]
    # The final model is the last checkpoint's.
    model = DecayLM.from_pretrained(run / "model")
    ckpt = load_checkpoint(run / "checkpoints" / "step-8")["model"]
    for name, tensor in model.state_dict().items():
        torch.testing.assert_close(tensor, ckpt[name], rtol=0, atol=0)
    # Resuming a finished run changes nothing and answers with its summary.
    assert train(None, run, resume=True) == summary
    assert [r["step"] for r in read_metrics(run)] == list(range(1, 9))


_KILLED_RUN = textwrap.dedent(
    """
    import os, signal, sys
    sys.path.insert(0, {tests!r})
    from training_helpers import small_run
    from decaylab.run import checkpoint
    from decaylab.training import loop

    def die():
        os.kill(os.getpid(), signal.SIGKILL)

    if {where!r} == "mid-step":  # killed while computing step 5 (after checkpoint 3, log line 4 written)
        original = loop._Trainer._train_step
        def step(self, s):
            if s == 4:
                die()
            return original(self, s)
        loop._Trainer._train_step = step
    else:  # killed while writing checkpoint 6, after its model file
        original = checkpoint.torch.save
        def save(obj, f, *a, **k):
            original(obj, f, *a, **k)
            if "step-6" in str(getattr(f, "name", "")) and "model" in str(f.name):
                die()
        checkpoint.torch.save = save
    loop.train(small_run(), {out!r})
    """
)


@pytest.mark.parametrize("where", ["mid-step", "mid-checkpoint"])
def test_resume_after_kill_reproduces_the_uninterrupted_run(tmp_path, straight_run, where):
    straight, _ = straight_run
    out = tmp_path / "killed"
    script = _KILLED_RUN.format(tests=str(REPO / "tests" / "training"), where=where, out=str(out))
    proc = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert not (out / "summary.json").exists()
    summary = train(None, out, resume=True)
    assert summary["resumed_from"] == 3  # the half-written checkpoint 6 is invisible
    assert curve(out) == curve(straight)  # exactly, dropout included
    a, b = DecayLM.from_pretrained(out / "model"), DecayLM.from_pretrained(straight / "model")
    for (name, x), y in zip(a.state_dict().items(), b.state_dict().values()):
        torch.testing.assert_close(x, y, rtol=0, atol=0, msg=name)
    assert not [p for p in (out / "checkpoints").iterdir() if p.name.startswith(".tmp")]


def test_corrupt_newest_checkpoint_falls_back(tmp_path, capsys):
    cfg = small_run(**{"train.max_steps": 6, "train.eval_every": 0})
    train(cfg, tmp_path / "run")
    (tmp_path / "run" / "summary.json").unlink()  # as if the run died right after writing checkpoint 6
    model_file = tmp_path / "run" / "checkpoints" / "step-6" / "model.pt"
    model_file.write_bytes(model_file.read_bytes()[:100])
    summary = train(None, tmp_path / "run", resume=True)
    assert summary["resumed_from"] == 3 and summary["steps"] == 6
    assert "step-6 is corrupt: model.pt has 100 bytes" in capsys.readouterr().err


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path, run_config, monkeypatch):
    calls = []
    original = loop._token_loss

    def poisoned(model, x, y):
        calls.append(1)
        loss = original(model, x, y)
        return loss * float("nan") if len(calls) == 5 else loss

    monkeypatch.setattr(loop, "_token_loss", poisoned)
    with pytest.raises(TrainingDiverged, match=r"diverged at step 5: loss=nan.*checkpoint.*lower train.lr"):
        train(run_config, tmp_path / "run")
    assert [s for s, _ in list_checkpoints(tmp_path / "run")] == [3]
    assert not (tmp_path / "run" / "summary.json").exists()
    assert max(r["step"] for r in read_metrics(tmp_path / "run")) == 4


def test_huge_learning_rate_diverges_with_a_clear_error(tmp_path):
    cfg = small_run(**{"train.lr": 1e12, "train.warmup_steps": 0, "train.grad_clip": 0.0, "train.max_steps": 8,
                    "train.eval_every": 0})
    with pytest.raises(TrainingDiverged, match="diverged at step"):
        train(cfg, tmp_path / "run")


def test_existing_runs_are_never_overwritten(tmp_path, run_config):
    cfg = small_run(**{"train.max_steps": 2, "train.eval_every": 0})
    train(cfg, tmp_path / "run")
    before = (tmp_path / "run" / "metrics.jsonl").read_text()
    with pytest.raises(FileExistsError, match="already holds a run; continue it with --resume, or choose a new --out"):
        train(cfg, tmp_path / "run")
    other = small_run(**{"train.max_steps": 2, "train.eval_every": 0, "train.lr": 1e-3})
    with pytest.raises(FileExistsError, match=r"configuration \(train.lr: 0.003 \(run\) != 0.001 .*train.lr cannot"):
        train(other, tmp_path / "run", resume=True)
    assert (tmp_path / "run" / "metrics.jsonl").read_text() == before
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "todo.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="not empty and holds no run"):
        train(cfg, tmp_path / "notes")
    assert (tmp_path / "notes" / "todo.txt").read_text() == "keep me"


def test_resume_without_a_run_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist, so there is nothing to resume"):
        train(None, tmp_path / "missing", resume=True)
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="holds no run"):
        train(None, tmp_path / "empty", resume=True)


def test_vocab_mismatch_names_both_sizes(tmp_path):
    cfg = small_run(**{"model.vocab_size": 100})
    with pytest.raises(ValueError, match="model.vocab_size=100 but the tokenizer of data.corpus='mqar' has 64 tokens"):
        train(cfg, tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_missing_tensorboard_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # import fails as if not installed
    with pytest.raises(ValueError, match="needs the tensorboard package: pip install tensorboard"):
        train(small_run(**{"train.tensorboard": True}), tmp_path / "run")


def test_gradient_accumulation_matches_one_big_batch(tmp_path):
    base = {"model.dropout": 0.0, "train.max_steps": 3, "train.eval_every": 0}
    train(small_run(**base), tmp_path / "one")
    train(small_run(**base, **{"train.grad_accum": 4}), tmp_path / "accum")
    one, accum = curve(tmp_path / "one"), curve(tmp_path / "accum")
    for a, b in zip(one, accum):
        assert a[1] == pytest.approx(b[1], rel=1e-5) and a[2] == pytest.approx(b[2], rel=1e-4)


def test_validation_scores_the_same_windows_however_they_are_grouped():
    from decaylab.data import build_dataset

    cfg = small_run(**{"train.eval_batch_size": 3})
    data = build_dataset(cfg.data, None, cfg.model.vocab_size)
    torch.manual_seed(0)
    model = DecayLM(cfg.model)
    one_batch = loop.validation_loss(model, data, cfg, torch.device("cpu"), max_batches=4)
    for rows in (1, 4, 7, 100):  # fewer rows than a batch, across batch edges, all four in one forward
        grouped = loop.validation_loss(model, data, cfg, torch.device("cpu"), max_batches=4, rows_per_forward=rows)
        assert grouped == pytest.approx(one_batch, rel=1e-6)
    assert loop.validation_loss(model, data, cfg, torch.device("cpu"), max_batches=5) != pytest.approx(one_batch)
