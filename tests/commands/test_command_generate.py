"""`decaylab generate`: the printed continuation equals the model's own generate(), and every bad input is named."""

from __future__ import annotations

import random
import shutil
from pathlib import Path

import pytest
import torch

from decaylab.cli import build_parser, main
from decaylab.config import save_json
from decaylab.data import DataConfig, WordTokenizer, build_dataset, load_tokenizer
from decaylab.model import DecayLM, ModelConfig
from decaylab.run.checkpoint import save_checkpoint
from decaylab.run.config import RunConfig

WORDS = "the cat sat on a mat while dogs ran far away from home".split()


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    """An untrained tiny model in a run directory with a word-level tokenizer (so <unk> can be tested)."""
    root = tmp_path_factory.mktemp("generate")
    rng = random.Random(0)
    corpus = root / "corpus.txt"
    corpus.write_text("\n".join(" ".join(rng.choice(WORDS) for _ in range(10)) for _ in range(200)))
    WordTokenizer.from_text(corpus.read_text()).save(root / "words.json")
    data = DataConfig(corpus="text", paths=(str(corpus),), tokenizer=str(root / "words.json"),
                      cache_dir=str(root / "cache"))
    run = root / "run"
    vocab = build_dataset(data, run).vocab_size  # writes run/tokenizer.json
    cfg = RunConfig(model=ModelConfig.from_preset("tiny", {"vocab_size": vocab}), data=data)
    save_json(cfg, run / "config.json")
    torch.manual_seed(0)
    DecayLM(cfg.model).save_pretrained(run / "model")
    return run


def _generate(capsys, *argv):
    rc = main(["generate", *map(str, argv)])
    out, err = capsys.readouterr()
    return rc, out, err


def test_greedy_output_equals_model_generate(run_dir, capsys):
    rc, out, err = _generate(capsys, run_dir, "--prompt", "the cat sat", "--max-new-tokens", "12", "--temperature", "0")
    assert rc == 0, err
    tokenizer = load_tokenizer(run_dir / "tokenizer.json")
    model = DecayLM.from_pretrained(run_dir / "model")
    ids = tokenizer.encode("the cat sat")
    assert tokenizer.vocab[ids[-1]] == "<eos>"  # the word tokenizer closes the line; a prompt is continued instead
    prompt = torch.tensor([ids[:-1]])
    expected = tokenizer.decode(model.generate(prompt, 12, temperature=0)[0, 3:].tolist())
    assert out == expected + "\n"


def test_seed_makes_samples_reproducible(run_dir, capsys):
    args = [run_dir, "--prompt", "the dogs", "--max-new-tokens", "20", "--top-k", "10", "--top-p", "0.95"]
    first = _generate(capsys, *args, "--seed", "1")[1]
    again = _generate(capsys, *args, "--seed", "1")[1]
    other = _generate(capsys, *args, "--seed", "2")[1]
    assert first == again and first != other


def test_echo_and_unknown_word_notice(run_dir, capsys):
    rc, out, err = _generate(capsys, run_dir, "--prompt", "the zebra", "--max-new-tokens", "3", "--echo")
    assert rc == 0 and out.startswith("the <unk> ")  # what the model saw, not what was typed
    assert "1 prompt word(s) are not in the run's vocabulary" in err


def test_checkpoint_of_an_unfinished_run(run_dir, tmp_path, capsys):
    run = Path(shutil.copytree(run_dir, tmp_path / "run"))
    state = DecayLM.from_pretrained(run / "model").state_dict()
    shutil.rmtree(run / "model")
    rc, _, err = _generate(capsys, run, "--prompt", "the")
    assert rc == 2 and "train it first" in err
    save_checkpoint(run, 4, {"model": state}, keep=2)
    rc, _, err = _generate(capsys, run, "--prompt", "the")
    assert rc == 2 and "--checkpoint latest" in err
    rc, out, err = _generate(capsys, run, "--prompt", "the", "--checkpoint", "latest", "--temperature", "0")
    assert rc == 0 and "using checkpoint checkpoints/step-4" in err
    assert out == _generate(capsys, run_dir, "--prompt", "the", "--temperature", "0")[1]  # same weights


def test_bad_inputs(run_dir, tmp_path, capsys):
    rc, _, err = _generate(capsys, tmp_path / "missing", "--prompt", "the")
    assert rc == 2 and "does not exist" in err
    rc, _, err = _generate(capsys, run_dir, "--prompt", "   ")
    assert rc == 2 and "no tokens" in err
    rc, _, err = _generate(capsys, run_dir, "--prompt", "the", "--top-k", "100000")
    assert rc == 2 and "vocabulary size" in err
    for flag, value in (("--top-p", "1.5"), ("--temperature", "-1"), ("--max-new-tokens", "0")):
        with pytest.raises(SystemExit):
            main(["generate", str(run_dir), "--prompt", "the", flag, value])
        assert flag.lstrip("-").replace("-", "") in capsys.readouterr().err.replace("-", "").replace("_", "")
    broken = Path(shutil.copytree(run_dir, tmp_path / "broken"))
    (broken / "tokenizer.json").unlink()
    rc, _, err = _generate(capsys, broken, "--prompt", "the")
    assert rc == 2 and "tokenizer.json" in err


def test_every_flag_has_help():
    generate = build_parser()._subparsers._group_actions[0].choices["generate"]
    for action in generate._actions:
        assert action.help, f"{action.option_strings or action.dest} has no help text"
