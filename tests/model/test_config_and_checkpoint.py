"""ModelConfig presets and validation, paper parameter counts, save/load round trips and their errors."""

from __future__ import annotations

import json

import pytest
import torch

from decaylab import DecayLM, ModelConfig
from decaylab.config import from_dict, to_dict
from decaylab.files import UMASK

# The paper's shapes at vocabulary 50,432 (millions): vector Mamba2 / scalar Mamba2 / TNL.
PAPER_COUNTS = {"160m": (164.8, 163.7, 163.6), "410m": (418.0, 415.2, 414.8), "1.45b": (1452.5, 1447.7, 1446.1)}
VARIANTS = [{"decay.kind": "mamba2"}, {"decay.kind": "mamba2", "decay.granularity": "scalar"},
            {"decay.kind": "tnl", "decay.granularity": "scalar"}]


@pytest.mark.parametrize("preset", list(PAPER_COUNTS))
def test_paper_parameter_counts(preset):
    for ov, want in zip(VARIANTS, PAPER_COUNTS[preset]):
        with torch.device("meta"):
            model = DecayLM(ModelConfig.from_preset(preset, ov))
        got = model.num_params() / 1e6
        assert abs(got - want) / want < 0.01, f"{preset} {ov}: {got:.1f}M vs {want}M"
    assert model.num_params(non_embedding=True) == model.num_params() - 2 * 50_432 * model.cfg.d_model


def test_small_preset_is_a_cpu_study_model():
    with torch.device("meta"):
        model = DecayLM(ModelConfig.from_preset("small"))
    assert 2e6 < model.num_params(non_embedding=True) < 6e6


def test_presets_and_overrides():
    cfg = ModelConfig.from_preset("tiny", {"decay.kind": "gla", "pos": "rope", "dropout": "0.1"})
    assert (cfg.decay.kind, cfg.pos, cfg.dropout) == ("gla", "rope", 0.1)
    assert from_dict(ModelConfig, to_dict(cfg)) == cfg
    with pytest.raises(ValueError, match="Did you mean 'tiny'"):
        ModelConfig.from_preset("tinyy")
    with pytest.raises(ValueError, match="Did you mean 'decay.kind'"):
        ModelConfig.from_preset("tiny", {"decay.kinds": "gla"})
    with pytest.raises(ValueError, match="divisible by n_heads"):
        ModelConfig.from_preset("tiny", {"n_heads": 3})
    with pytest.raises(ValueError, match="even head dimension"):
        ModelConfig.from_preset("tiny", {"d_model": 30, "n_heads": 2, "pos": "rope"})
    with pytest.raises(ValueError, match="Allowed values"):
        ModelConfig.from_preset("tiny", {"pos": "alibi"})
    with pytest.raises(ValueError, match=r"dropout=1.0 must be in \[0, 1\)"):
        ModelConfig.from_preset("tiny", {"dropout": 1.0})


def saved(tmp_path, **ov):
    torch.manual_seed(0)
    model = DecayLM(ModelConfig.from_preset("tiny", ov))
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    model.save_pretrained(tmp_path / "ckpt")
    return model, tmp_path / "ckpt"


@pytest.mark.parametrize("ov", [{"decay.kind": "hgrn2", "pos": "tpe"}, {"decay.kind": "tnl_l",
                                "decay.granularity": "scalar", "pos": "lrpe"}, {"mixer": "softmax", "pos": "rope"},
                                {"decay.kind": "gla", "tie_embeddings": True}])
def test_round_trip_is_exact(tmp_path, ov):
    model, path = saved(tmp_path, **ov)
    loaded = DecayLM.from_pretrained(path)
    assert loaded.cfg == model.cfg
    ids = torch.randint(0, 256, (2, 7))
    assert torch.equal(model(ids), loaded(ids))
    assert torch.equal(model.generate(ids, 4, temperature=0), loaded.generate(ids, 4, temperature=0))
    groups = [[p.shape for p in g["params"]] for g in model.param_groups(0.1)]
    assert [[p.shape for p in g["params"]] for g in loaded.param_groups(0.1)] == groups
    # safetensors writes 0600; the saved files get the mode open() gives, like the rest of a run directory
    assert {(path / name).stat().st_mode & 0o777 for name in ("model.safetensors", "config.json")} == {0o666 & ~UMASK}


def test_tied_embeddings_score_with_the_input_matrix():
    torch.manual_seed(0)
    tied = DecayLM(ModelConfig.from_preset("tiny", {"tie_embeddings": True}))
    untied = DecayLM(ModelConfig.from_preset("tiny"))
    assert tied.lm_head is None and "lm_head.weight" not in tied.state_dict()
    assert untied.num_params() - tied.num_params() == 256 * 32  # one vocab x d matrix fewer
    ids = torch.randint(0, 256, (2, 9))
    logits = tied(ids)
    hidden = {}
    tied.norm.register_forward_hook(lambda m, i, o: hidden.setdefault("x", o))
    tied(ids)
    torch.testing.assert_close(logits, hidden["x"] @ tied.embed.weight.T)
    logits.sum().backward()  # the embedding gets the gradient of both uses
    assert tied.embed.weight.grad is not None and tied.embed.weight.grad.abs().sum() > 0


def test_a_model_needs_a_vocabulary_size():
    with pytest.raises(ValueError, match="vocab_size is None .a training run takes it from its data."):
        DecayLM(ModelConfig.from_preset("tiny", {"vocab_size": None}))


def test_existing_checkpoint_is_not_overwritten(tmp_path):
    model, path = saved(tmp_path)
    with pytest.raises(FileExistsError, match="overwrite=True"):
        model.save_pretrained(path)
    model.save_pretrained(path, overwrite=True)
    assert sorted(p.name for p in path.iterdir()) == ["config.json", "model.safetensors"]


def test_load_errors_name_the_fix(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        DecayLM.from_pretrained(tmp_path / "nowhere")
    _, path = saved(tmp_path)
    cfg = json.loads((path / "config.json").read_text())

    (path / "config.json").write_text(json.dumps({**cfg, "d_model": 64}))
    with pytest.raises(ValueError, match="does not match.*shape of"):
        DecayLM.from_pretrained(path)
    (path / "config.json").write_text(json.dumps({**cfg, "decay": {**cfg["decay"], "kind": "mamba2"}}))
    with pytest.raises(ValueError, match="does not match.*missing"):
        DecayLM.from_pretrained(path)
    (path / "config.json").write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        DecayLM.from_pretrained(path)
    (path / "config.json").write_text(json.dumps({**cfg, "decay": {**cfg["decay"], "kind": "tnl"}}))
    with pytest.raises(ValueError, match="does not describe a valid model.*granularity='scalar'"):
        DecayLM.from_pretrained(path)

    (path / "config.json").write_text(json.dumps(cfg))
    weights = path / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    with pytest.raises(ValueError, match="corrupt"):
        DecayLM.from_pretrained(path)
    weights.unlink()
    with pytest.raises(FileNotFoundError, match="model.safetensors is missing"):
        DecayLM.from_pretrained(path)
    (path / "config.json").unlink()
    with pytest.raises(FileNotFoundError, match="config.json is missing"):
        DecayLM.from_pretrained(path)
