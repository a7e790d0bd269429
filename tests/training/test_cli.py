"""``decaylab train``: help on every flag, errors as one line, a small end-to-end run, resume, evaluation."""

from __future__ import annotations

import json

import pytest

from decaylab.cli import build_parser, main

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
