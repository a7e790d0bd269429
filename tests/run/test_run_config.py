"""Run configuration: presets, dotted keys, config files, and the errors for bad input."""

from __future__ import annotations

import json

import pytest

from decaylab.config import from_dict, to_dict, with_overrides
from decaylab.run.config import (
    RUN_PRESETS, RunConfig, TrainConfig, resolve_run_config, run_preset, settle_vocab,
)  # fmt: skip


@pytest.mark.parametrize("name", RUN_PRESETS.names())
def test_every_preset_builds_and_round_trips(name):
    cfg = run_preset(name)
    assert isinstance(cfg, RunConfig)
    assert cfg.model.vocab_size is None  # presets let the model's vocabulary follow their data
    assert resolve_run_config(name) == settle_vocab(cfg)
    assert from_dict(RunConfig, json.loads(json.dumps(to_dict(cfg)))) == cfg


def test_model_vocab_follows_the_data_unless_pinned():
    assert resolve_run_config("tiny").model.vocab_size == 10_000  # PTB's words, known without reading text
    assert resolve_run_config("mqar").model.vocab_size == 256
    text = {"data.corpus": "text", "data.paths": "corpus"}
    assert resolve_run_config("tiny", overrides=text).model.vocab_size is None  # set from the trained BPE
    for unset in ("None", "none", "null", ""):
        cfg = resolve_run_config("tiny", overrides={**text, "model.vocab_size": unset})
        assert cfg.model.vocab_size is None
    assert resolve_run_config("tiny", overrides={**text, "model.vocab_size": "300"}).model.vocab_size == 300
    # A pinned size that the data settings contradict is refused before any text is read.
    with pytest.raises(ValueError, match=r"model.vocab_size=500 but the tokenizer of data.corpus='ptb' has 10,000"):
        resolve_run_config("tiny", overrides={"model.vocab_size": "500"})
    with pytest.raises(ValueError, match=r"at most data.vocab_size=8,192 tokens; set data.vocab_size=10000, or "
                                         r"model.vocab_size=None"):
        resolve_run_config("tiny", overrides={**text, "model.vocab_size": "10000"})


def test_required_presets_exist():
    assert {"tiny", "ptb-small", "mqar", "160m-fineweb"} <= set(RUN_PRESETS.names())
    ptb = run_preset("ptb-small")
    assert ptb.model.decay.kind == "simple" and ptb.data.corpus == "ptb" and ptb.model.dropout > 0


def test_unknown_preset_and_key_suggest_the_closest():
    with pytest.raises(ValueError, match="unknown run preset 'ptb-smal'. Did you mean 'ptb-small'"):
        resolve_run_config("ptb-smal")
    with pytest.raises(ValueError, match="Did you mean 'train.max_steps'"):
        resolve_run_config("tiny", overrides={"train.max_step": "10"})
    with pytest.raises(ValueError, match="Did you mean 'model.decay.kind'"):
        resolve_run_config("tiny", overrides={"model.decay.knd": "gla"})


def test_dotted_overrides_reach_every_part():
    cfg = resolve_run_config(
        "tiny", overrides={"model.decay.kind": "gla", "train.max_steps": "7", "train.seed": "3", "data.corpus": "ptb"}
    )
    assert (cfg.model.decay.kind, cfg.train.max_steps, cfg.train.seed) == ("gla", 7, 3)


def test_config_files_json_and_toml(tmp_path):
    (tmp_path / "run.toml").write_text(
        'preset = "tiny"\n[train]\nmax_steps = 5\nschedule = "wsd"\n[model.decay]\nkind = "hgrn2"\n'
    )
    cfg = resolve_run_config(config_file=tmp_path / "run.toml", overrides={"train.max_steps": "6"})
    assert (cfg.train.max_steps, cfg.train.schedule, cfg.model.decay.kind) == (6, "wsd", "hgrn2")
    (tmp_path / "run.json").write_text(json.dumps({"train": {"lr": 0.01}}))
    assert resolve_run_config("tiny", tmp_path / "run.json").train.lr == 0.01
    with pytest.raises(ValueError, match="conflicts with preset = 'tiny'"):
        resolve_run_config("mqar", tmp_path / "run.toml")
    (tmp_path / "bad.toml").write_text("[train\n")
    with pytest.raises(ValueError, match="not valid TOML"):
        resolve_run_config(config_file=tmp_path / "bad.toml")
    (tmp_path / "run.yaml").write_text("train: {}\n")
    with pytest.raises(ValueError, match="expected a .json or .toml file"):
        resolve_run_config(config_file=tmp_path / "run.yaml")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        resolve_run_config(config_file=tmp_path / "missing.json")


@pytest.mark.parametrize(
    "key, value, message",
    [
        ("max_steps", 0, "train.max_steps=0 must be >= 1"),
        ("warmup_steps", -1, "must be >= 0"),
        ("batch_size", 6, "not divisible by train.grad_accum=4"),
        ("min_lr_ratio", 1.5, r"must be in \[0, 1\]"),
        ("beta2", 1.0, r"must be in \[0, 1\)"),
        ("ckpt_every", -1, "must be >= 0"),
        ("eval_batches", 0, "must be >= 1 or None"),
    ],
)
def test_invalid_train_values_are_rejected(key, value, message):
    base = dict(max_steps=10, warmup_steps=2, batch_size=8, grad_accum=4)
    with pytest.raises(ValueError, match=message):
        TrainConfig(**{**base, key: value})


def test_micro_batch_needs_an_even_split():
    cfg = TrainConfig(batch_size=8, grad_accum=2)
    assert cfg.micro_batch(world_size=2) == 2
    with pytest.raises(ValueError, match="divisible by world_size"):
        cfg.micro_batch(world_size=3)
    assert with_overrides(RunConfig(), {"train.grad_accum": "2"}).train.grad_accum == 2


def test_errors_of_nested_configs_name_the_keys_as_typed():
    with pytest.raises(ValueError) as caught:
        resolve_run_config("tiny", overrides={"model.decay.kind": "tnl"})
    message = str(caught.value)
    assert message.startswith("model.decay.kind='tnl' is a per-head (scalar) decay")
    assert "set model.decay.granularity='scalar'" in message and " decay.granularity" not in message
