"""Every shipped preset (models, runs, sweeps) is a TOML file read by one loader, and resolves to the configuration
it resolved to when presets were a dict, registered functions and TOML files (resolved_presets.json, captured from
those before they moved)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from decaylab import presets
from decaylab.config import to_dict
from decaylab.model.config import ModelConfig
from decaylab.run.config import RUN_PRESETS, preset_description, run_preset
from decaylab.sweep.spec import load_spec

RESOLVED = json.loads((Path(__file__).parent / "resolved_presets.json").read_text())


def _as_json(value):
    """The value as it was captured: through JSON (tuples become lists)."""
    return json.loads(json.dumps(value, default=str))


def test_the_same_names_in_each_kind():
    assert set(presets.names("models")) == set(RESOLVED["models"])
    assert set(presets.names("runs")) == set(RESOLVED["runs"]) == set(RUN_PRESETS.names())
    assert set(presets.names("sweeps")) == set(RESOLVED["sweeps"])


@pytest.mark.parametrize("name", sorted(RESOLVED["models"]))
def test_model_preset_resolves_as_before(name):
    assert _as_json(to_dict(ModelConfig.from_preset(name))) == RESOLVED["models"][name]


@pytest.mark.parametrize("name", sorted(RESOLVED["runs"]))
def test_run_preset_resolves_as_before(name):
    assert _as_json(to_dict(run_preset(name))) == RESOLVED["runs"][name]["config"]
    assert preset_description(name) == RESOLVED["runs"][name]["description"]


@pytest.mark.parametrize("name", sorted(RESOLVED["sweeps"]))
def test_sweep_preset_resolves_as_before(name):
    assert _as_json(dataclasses.asdict(load_spec(name))) == RESOLVED["sweeps"][name]


@pytest.mark.parametrize("kind", sorted(presets.KINDS))
def test_every_preset_file_has_a_description(kind):
    for name in presets.names(kind):
        assert presets.description(kind, name), f"{presets.path(kind, name)} has no description"


def test_unknown_names_get_the_closest_ones():
    with pytest.raises(ValueError, match=r"unknown model preset 'smal'\. Did you mean 'small'"):
        ModelConfig.from_preset("smal")
    with pytest.raises(ValueError, match=r"unknown run preset 'ptb-smal'\. Did you mean 'ptb-small'"):
        run_preset("ptb-smal")
    with pytest.raises(ValueError, match="unknown kind of preset 'model'"):
        presets.names("model")


def test_a_run_preset_file_with_an_unknown_table_is_refused(tmp_path, monkeypatch):
    (tmp_path / "runs").mkdir()
    (tmp_path / "runs" / "odd.toml").write_text('description = "x"\n[training]\nmax_steps = 5\n')
    monkeypatch.setattr(presets, "ROOT", tmp_path)
    from decaylab.run import config

    with pytest.raises(ValueError, match=r"odd.toml: unknown table\(s\) \['training'\]"):
        config._run_preset_from_file("odd")
