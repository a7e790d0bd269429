"""``decaylab train``: help on every flag, errors as one line, a small end-to-end run, resume, evaluation."""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from decaylab.cli import build_parser, main
from decaylab.data import load_tokenizer
from decaylab.files import UMASK

SMALL = [
    "--preset", "mqar", "--set", "train.max_steps=3", "--set", "train.batch_size=4", "--set", "train.seq_len=24",
    "--set", "train.eval_every=0", "--set", "train.warmup_steps=1", "--set", "data.mqar_num_kv_pairs=4",
    "--set", "data.mqar_eval_examples=8", "--set", "data.vocab_size=64", "--set", "model.vocab_size=64",
]


def test_every_flag_has_help():
    sub = build_parser()._subparsers._group_actions[0].choices["train"]
    flags = [a for a in sub._actions if a.option_strings and a.dest != "help"]
    assert {"--preset", "--config", "--set", "--out", "--resume", "--no-eval"} <= {f.option_strings[0] for f in flags}
    assert all(a.help for a in flags)


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--preset", "tinny"], "Did you mean 'tiny'"),
        (["--preset", "tiny", "--set", "train.lrr=1"], "Did you mean 'train.lr'"),
        (["--preset", "tiny", "--set", "train.max_steps=many"], "expected an integer"),
        (["--preset", "tiny", "--set", "novalue"], "expected key=value"),
        (["--resume"], "--resume needs --out"),
        (["--config", "missing.toml"], "does not exist"),
    ],
)
def test_bad_input_is_one_clear_line(argv, message, capsys):
    assert main(["train", *argv]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and err.count("\n") == 1


def test_print_config_and_list_presets(capsys):
    assert main(["train", "--preset", "tiny", "--set", "model.decay.kind=gla", "--print-config"]) == 0
    assert json.loads(capsys.readouterr().out)["model"]["decay"]["kind"] == "gla"
    assert main(["train", "--list-presets"]) == 0
    assert "ptb-small" in capsys.readouterr().out


def test_train_resume_refusal_and_evaluation(tmp_path, capsys, monkeypatch):
    out = tmp_path / "run"
    calls = []

    def fake_evaluate(run_dir, **options):
        calls.append(run_dir)
        return {"val_ppl": 12.5, "test_ppl": 13.25}

    import decaylab.evaluation

    monkeypatch.setattr(decaylab.evaluation, "evaluate", fake_evaluate)
    assert main(["train", *SMALL, "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "trained 3 steps" in printed and "val_ppl 12.50, test_ppl 13.25" in printed
    assert calls == [out] and json.loads((out / "summary.json").read_text())["status"] == "finished"
    assert main(["train", *SMALL, "--out", str(out), "--no-eval"]) == 2
    assert "already holds a run; continue it with --resume" in capsys.readouterr().err
    assert main(["train", "--resume", "--out", str(out), "--no-eval"]) == 0
    assert len(calls) == 1


def test_divergence_exits_nonzero_with_message(tmp_path, capsys):
    argv = [*SMALL, "--set", "train.lr=1e12", "--set", "train.grad_clip=0", "--set", "train.max_steps=8"]
    assert main(["train", *argv, "--out", str(tmp_path / "run"), "--no-eval"]) == 1
    assert "training diverged at step" in capsys.readouterr().err


REPO = Path(__file__).resolve().parents[2]


def decaylab(*argv: str, cwd: Path) -> subprocess.CompletedProcess:
    """``python -m decaylab ARGV`` in a fresh process, on this checkout, with a private token cache."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "DECAYLAB_CACHE": str(cwd / "cache"), "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "decaylab", *argv], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=300)


def test_a_preset_trains_and_evaluates_on_a_folder_of_text(tmp_path):
    rng = random.Random(0)
    words = "decay linear attention state gate token model the a of to and is".split()
    (tmp_path / "texts").mkdir()
    for i in range(3):
        lines = (" ".join(rng.choice(words) for _ in range(rng.randint(4, 14))) + "." for _ in range(600))
        (tmp_path / "texts" / f"{i}.txt").write_text("\n".join(lines) + "\n")
    done = decaylab("train", "--preset", "tiny", "--set", "data.corpus=text", "--set", "data.paths=texts",
                    "--set", "train.max_steps=2", "--out", "run", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "trained 2 steps" in done.stdout and "eval: val_ppl" in done.stdout
    run = tmp_path / "run"
    vocab = json.loads((run / "config.json").read_text())["model"]["vocab_size"]
    assert vocab == load_tokenizer(run / "tokenizer.json").vocab_size < 8192  # the BPE's size, not a preset's
    assert {"val_ppl", "test_ppl"} <= set(json.loads((run / "eval.json").read_text()))
    # Every file of the run and of the cache is as readable as the umask allows (safetensors and temporary
    # files would otherwise be 0600 next to 0644 files in a shared folder).
    files = [p for folder in (run, tmp_path / "cache") for p in folder.rglob("*") if p.is_file()]
    assert any(p.name == "model.safetensors" for p in files) and any(p.suffix == ".npy" for p in files)
    assert {p.stat().st_mode & 0o777 for p in files} == {0o666 & ~UMASK}


def test_resume_starts_from_the_stored_config(tmp_path, capsys):
    assert main(["train", *SMALL, "--out", str(tmp_path / "run"), "--no-eval"]) == 0
    capsys.readouterr()
    longer = decaylab("train", "--resume", "--out", "run", "--set", "train.max_steps=5", "--no-eval", cwd=tmp_path)
    assert longer.returncode == 0, longer.stderr
    assert "resume: changed train.max_steps: 3 -> 5" in longer.stdout
    assert f"resume: from checkpoint {Path('run') / 'checkpoints' / 'step-3'} (step 3 of 5)" in longer.stdout
    assert "trained 5 steps" in longer.stdout
    assert json.loads((tmp_path / "run" / "config.json").read_text())["train"]["max_steps"] == 5

    assert main(["train", "--resume", "--out", str(tmp_path / "run"), "--set", "model.d_model=32"]) == 2
    refused = capsys.readouterr().err
    assert refused.count("\n") == 1 and "model.d_model cannot change when resuming" in refused
    assert "Settings that may change on resume: train.max_steps" in refused

    finished = decaylab("train", "--resume", "--out", "run", cwd=tmp_path)
    assert finished.returncode == 0, finished.stderr
    assert "has already finished its 5 steps; nothing to resume" in finished.stdout
    assert "trained" not in finished.stdout  # nothing was trained
    assert "evaluating run: " in finished.stdout and "mqar_accuracy" in finished.stdout  # no eval.json yet
    assert main(["train", "--resume", "--out", str(tmp_path / "run")]) == 0
    assert "eval.json is already in" in capsys.readouterr().out


def test_resume_before_the_first_checkpoint_says_it_starts_over(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", *SMALL, "--out", str(out), "--no-eval"]) == 0
    shutil.rmtree(out / "checkpoints")  # as if killed before its first checkpoint
    (out / "summary.json").unlink()
    capsys.readouterr()
    assert main(["train", "--resume", "--out", str(out), "--no-eval"]) == 0
    printed = capsys.readouterr().out
    assert "has no checkpoint yet" in printed and "starts again from step 0" in printed and "trained 3 steps" in printed
