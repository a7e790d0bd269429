"""decaylab.config: dotted overrides, typed parsing, round trips and did-you-mean errors."""

from __future__ import annotations

import dataclasses
from typing import Literal

import pytest

from decaylab.config import from_dict, load_json, parse_set_args, save_json, to_dict, valid_keys, with_overrides


@dataclasses.dataclass(frozen=True)
class Inner:
    kind: Literal["gla", "simple"] = "simple"
    p: float = 0.99
    share: bool = False

    def __post_init__(self):
        if not 0 < self.p < 1:
            raise ValueError(f"inner.p={self.p} must be in (0, 1)")


@dataclasses.dataclass(frozen=True)
class Outer:
    inner: Inner = dataclasses.field(default_factory=Inner)
    steps: int = 10
    name: str | None = None
    sizes: tuple[int, ...] = (1, 2)


def test_overrides_parse_strings_against_field_types():
    cfg = with_overrides(Outer(), {"inner.kind": "gla", "inner.p": "0.5", "inner.share": "true", "steps": "7"})
    assert cfg.inner == Inner(kind="gla", p=0.5, share=True)
    assert cfg.steps == 7 and isinstance(cfg.steps, int)
    assert with_overrides(Outer(), {"name": "none"}).name is None
    assert with_overrides(Outer(), {"name": "x"}).name == "x"
    assert with_overrides(Outer(), {"sizes": "3,4"}).sizes == (3, 4)
    assert with_overrides(Outer(), {"sizes": "[5]"}).sizes == (5,)


def test_unknown_key_suggests_closest():
    with pytest.raises(ValueError, match="Did you mean 'inner.kind'"):
        with_overrides(Outer(), {"inner.kindd": "gla"})
    with pytest.raises(ValueError, match="Did you mean 'steps'"):
        with_overrides(Outer(), {"step": 3})


def test_bad_values_are_rejected_not_rewritten():
    with pytest.raises(ValueError, match="Allowed values: 'gla', 'simple'"):
        with_overrides(Outer(), {"inner.kind": "glaa"})
    with pytest.raises(ValueError, match="expected an integer"):
        with_overrides(Outer(), {"steps": "many"})
    with pytest.raises(ValueError, match=r"must be in \(0, 1\)"):
        with_overrides(Outer(), {"inner.p": "1.5"})
    with pytest.raises(ValueError, match="expected true or false"):
        with_overrides(Outer(), {"inner.share": "maybe"})


def test_json_round_trip(tmp_path):
    cfg = with_overrides(Outer(), {"inner.p": 0.8, "name": "run"})
    save_json(cfg, tmp_path / "c.json")
    assert load_json(Outer, tmp_path / "c.json") == cfg
    assert from_dict(Outer, to_dict(cfg)) == cfg
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        load_json(Outer, tmp_path / "bad.json")


def test_valid_keys_and_set_args():
    assert valid_keys(Outer) == ["inner.kind", "inner.p", "inner.share", "steps", "name", "sizes"]
    assert parse_set_args(["a.b=1", "c = x=y"]) == {"a.b": "1", "c": "x=y"}
    with pytest.raises(ValueError, match="expected key=value"):
        parse_set_args(["novalue"])


def test_integer_fields_refuse_fractions():
    with pytest.raises(ValueError, match="expected an integer"):
        with_overrides(Outer(), {"steps": "1.5"})
    assert with_overrides(Outer(), {"steps": "2e3"}).steps == 2000
