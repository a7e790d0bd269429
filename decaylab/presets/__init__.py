"""Every shipped preset is a TOML file here, in one folder per kind, found by name:

    presets/models/NAME.toml    a ModelConfig's fields          ModelConfig.from_preset(NAME)
    presets/runs/NAME.toml      [model] (preset = a model), [train], [data]: a RunConfig   decaylab train --preset NAME
    presets/sweeps/NAME.toml    a sweep spec (docs/sweeps.md)    decaylab sweep NAME

Each file opens with ``description = "..."`` (the line ``--list-presets`` and the docs show). This module only
finds and reads the files; the config classes turn them into configs. It imports nothing of the package, so
the command line lists presets without loading torch.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from decaylab.registry import closest

ROOT = Path(__file__).resolve().parent
KINDS = {"models": "model preset", "runs": "run preset", "sweeps": "sweep preset"}  # folder -> what its files are


def _folder(kind: str) -> Path:
    if kind not in KINDS:
        raise ValueError(f"unknown kind of preset {kind!r}; choose from {', '.join(KINDS)}")
    return ROOT / kind


def names(kind: str) -> list[str]:
    """The presets of one kind, sorted by name."""
    return sorted(p.stem for p in _folder(kind).glob("*.toml"))


def path(kind: str, name: str) -> Path:
    """The file of preset ``name``; an unknown name is answered with the closest ones and the full list."""
    file = _folder(kind) / f"{name}.toml"
    if not file.is_file():
        available = names(kind)
        raise ValueError(f"unknown {KINDS[kind]} {name!r}.{closest(name, available)} Available: {', '.join(available)}")
    return file


def read_toml(file: str | Path, invalid: str = "{file}: invalid TOML: {error}") -> dict[str, Any]:
    """A TOML file as a dict; a syntax error is a ValueError worded by ``invalid`` (the error names line and
    column)."""
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        try:
            import tomli as tomllib  # type: ignore[no-redef]
        except ModuleNotFoundError:
            raise ValueError(f"reading {file} on Python 3.10 needs tomli: pip install tomli; or use JSON") from None
    try:
        return tomllib.loads(Path(file).read_text())
    except tomllib.TOMLDecodeError as e:
        raise ValueError(invalid.format(file=file, error=e)) from None


def load(kind: str, name: str) -> dict[str, Any]:
    """The table of preset ``name`` of ``kind`` ("models", "runs" or "sweeps")."""
    return read_toml(path(kind, name))


def description(kind: str, name: str) -> str:
    return str(load(kind, name).get("description", ""))
