"""Typed, nested, frozen dataclass configs: JSON round trips and dotted-key overrides.

Every config in decaylab is a ``@dataclass(frozen=True)``. Nested fields are configs too, so one dotted key
addresses any leaf: ``with_overrides(cfg, {"decay.kind": "gla"})``. Values may be Python objects or strings
from the command line; strings are parsed against the field's type. Unknown keys are answered with the
closest valid names, and invalid values with the config's own ``__post_init__`` error: nothing is rewritten
silently.
"""

from __future__ import annotations

import ast
import dataclasses
import functools
import json
import re
import types
from pathlib import Path
from typing import Any, Literal, Mapping, TypeVar, Union, get_args, get_origin, get_type_hints

from decaylab.registry import closest

C = TypeVar("C")


def to_dict(cfg: Any) -> dict[str, Any]:
    """Nested plain dict (JSON-ready) of a config."""
    return dataclasses.asdict(cfg)


@functools.lru_cache(maxsize=None)
def _hints(cls: type) -> dict[str, Any]:
    # get_type_hints evaluates every annotation string anew: a sweep resolving 200 configs called it 12,000 times
    # (5 s). A class's hints do not change, and callers only read the dict.
    return get_type_hints(cls)


def _is_config(tp: Any) -> bool:
    return isinstance(tp, type) and dataclasses.is_dataclass(tp)


def _article(tp: type) -> str:
    return "an integer" if tp is int else "a number"


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Turn ``value`` (often a command-line string) into type ``tp``; raise ValueError naming ``key``."""
    origin = get_origin(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        args = get_args(tp)
        # An optional field is unset from the command line with None, none, null or nothing (`--set key=`).
        is_null = value is None or (isinstance(value, str) and value.strip().lower() in ("none", "null", ""))
        if is_null and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, key)
            except ValueError as e:
                errors.append(str(e))
        raise ValueError(errors[0] if errors else f"{key}: cannot parse {value!r}")
    if origin is Literal:
        allowed = get_args(tp)
        if value in allowed:
            return value
        for a in allowed:  # "0.5" on the command line for a numeric literal
            if isinstance(value, str) and not isinstance(a, str) and str(a) == value:
                return a
        raise ValueError(
            f"{key}={value!r} is not allowed.{closest(str(value), [str(a) for a in allowed])} "
            f"Allowed values: {', '.join(repr(a) for a in allowed)}"
        )
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "1", "yes", "on"):
            return True
        if isinstance(value, str) and value.lower() in ("false", "0", "no", "off"):
            return False
        raise ValueError(f"{key}={value!r}: expected true or false")
    if tp in (int, float):
        if isinstance(value, bool):
            raise ValueError(f"{key}={value!r}: expected {_article(tp)}")
        try:
            parsed = ast.literal_eval(value.strip()) if isinstance(value, str) else value
            out = tp(parsed)
        except (ValueError, SyntaxError, TypeError):
            raise ValueError(f"{key}={value!r}: expected {_article(tp)}") from None
        if tp is int and out != parsed:  # 1.5 -> 1 would change the setting silently
            raise ValueError(f"{key}={value!r}: expected an integer")
        return out
    if tp is str:
        if not isinstance(value, str):
            raise ValueError(f"{key}={value!r}: expected a string")
        return value
    if origin in (tuple, list):
        if isinstance(value, str):
            try:
                value = ast.literal_eval(value)
            except (ValueError, SyntaxError):
                value = [v for v in value.split(",") if v]
        if not isinstance(value, (list, tuple)):
            value = [value]
        args = get_args(tp)
        elem = args[0] if args else Any
        items = [_coerce(v, elem, key) for v in value]
        return tuple(items) if origin is tuple else items
    if _is_config(tp):
        if isinstance(value, tp):
            return value
        if isinstance(value, Mapping):
            return from_dict(tp, value, prefix=f"{key}.")
        raise ValueError(f"{key}: expected a table of settings, got {value!r}")
    return value


def _qualified(message: str, prefix: str) -> str:
    """A nested config names its keys from its own field in the parent (``decay.kind``); name them as the user
    typed them, from the top (``model.decay.kind`` for the config at ``model.decay.``)."""
    parent, _, own = prefix.rstrip(".").rpartition(".")
    if not parent:
        return message
    return re.sub(rf"(?<![\w.]){re.escape(own)}\.(?=\w)", prefix, message)


def _build(make: Any, prefix: str) -> Any:
    try:
        return make()
    except ValueError as e:
        raise ValueError(_qualified(str(e), prefix)) from None


def from_dict(cls: type[C], data: Mapping[str, Any], prefix: str = "") -> C:
    """Build ``cls`` from a nested dict; unknown keys raise ValueError with the closest valid names."""
    if not isinstance(data, Mapping):
        raise ValueError(f"{prefix or cls.__name__}: expected a table of settings, got {type(data).__name__}")
    hints = _hints(cls)
    names = [f.name for f in dataclasses.fields(cls) if f.init]
    kwargs = {}
    for key, value in data.items():
        if key not in names:
            raise ValueError(
                f"unknown setting {prefix}{key!r}.{closest(key, names)} Valid keys: "
                + ", ".join(prefix + n for n in names)
            )
        kwargs[key] = _coerce(value, hints[key], prefix + key)
    return _build(lambda: cls(**kwargs), prefix)


def valid_keys(cls: type, prefix: str = "") -> list[str]:
    """Every dotted leaf key of a config class."""
    out = []
    hints = _hints(cls)
    for f in dataclasses.fields(cls):
        if _is_config(hints[f.name]):
            out += valid_keys(hints[f.name], f"{prefix}{f.name}.")
        else:
            out.append(prefix + f.name)
    return out


def with_overrides(cfg: C, overrides: Mapping[str, Any], prefix: str = "") -> C:
    """A copy of ``cfg`` with dotted-key overrides applied; validation runs once on the result."""
    grouped: dict[str, dict[str, Any]] = {}
    direct: dict[str, Any] = {}
    for key, value in overrides.items():
        head, _, rest = key.partition(".")
        if rest:
            grouped.setdefault(head, {})[rest] = value
        else:
            direct[head] = value
    hints = _hints(type(cfg))
    names = [f.name for f in dataclasses.fields(cfg)]
    all_keys = valid_keys(type(cfg), prefix)
    changes: dict[str, Any] = {}
    for head in list(direct) + list(grouped):
        if head not in names:
            bad = prefix + head
            raise ValueError(f"unknown setting {bad!r}.{closest(bad, all_keys)} Valid keys: {', '.join(all_keys)}")
    for head, value in direct.items():
        changes[head] = _coerce(value, hints[head], prefix + head)
    for head, sub in grouped.items():
        if not _is_config(hints[head]):
            bad = f"{prefix}{head}.{next(iter(sub))}"
            raise ValueError(f"unknown setting {bad!r}: {prefix + head!r} has no sub-keys.{closest(bad, all_keys)}")
        current = changes.get(head, getattr(cfg, head))
        changes[head] = with_overrides(current, sub, f"{prefix}{head}.")
    return _build(lambda: dataclasses.replace(cfg, **changes), prefix)


def parse_set_args(items: list[str] | None) -> dict[str, str]:
    """``["a.b=1", "c=x"]`` (``--set`` arguments) -> ``{"a.b": "1", "c": "x"}``."""
    out = {}
    for item in items or []:
        key, eq, value = item.partition("=")
        if not eq or not key:
            raise ValueError(f"--set {item!r}: expected key=value, e.g. --set model.decay.kind=gla")
        out[key.strip()] = value.strip()
    return out


def save_json(cfg: Any, path: str | Path) -> None:
    Path(path).write_text(json.dumps(to_dict(cfg), indent=2, sort_keys=True) + "\n")


def load_json(cls: type[C], path: str | Path) -> C:
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{path} is not valid JSON ({e}); restore it or rebuild it from the run's settings") from None
    return from_dict(cls, data)


__all__ = ["to_dict", "from_dict", "with_overrides", "valid_keys", "parse_set_args", "save_json", "load_json"]


def flatten(nested: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"model": {"decay": {"p": 0.9}}} -> {"model.decay.p": 0.9}``: the dotted keys ``--set`` uses."""
    out: dict[str, Any] = {}
    for key, value in nested.items():
        if isinstance(value, Mapping):
            out.update(flatten(value, f"{prefix}{key}."))
        else:
            out[prefix + key] = value
    return out
