"""Sweep specs: a TOML file (or a shipped preset) that names a grid of run configurations.

A spec is a base run preset, overrides shared by every point, a budget, seeds, and a list of labelled points, each
belonging to one study (one table of the report). A point with ``axes`` is a grid: it expands to the Cartesian
product of its axes, in place, so points keep the order of the file. Expansion resolves every (point, seed) to a
full run config and names its run directory by a short hash of that config, so the same spec always gives the
same run ids in the same order, and a configuration shared by several studies (the softmax baseline, "Mamba2"
in the parameterization and sharing tables) is trained once.

Order of precedence, last wins: base preset < spec ``[overrides]`` < ``[budget]`` < point ``set`` < seed <
``--set`` from the command line.

    name = "quick"
    base = "tiny"
    seeds = [0, 1]
    workers = 2                     # default --workers (points trained at once)
    [slurm]                         # optional: one task's resources under --launcher slurm (see resources.py)
    gpus = 1
    [budget]
    max_steps = 300                 # or tokens = 2_000_000 (converted with the run's batch size and length)
    [evaluation]                    # options of decaylab.evaluation.evaluate (not part of the run id)
    max_tokens = 20_000
    extrapolation = [1, 4]
    [studies]
    parameterization = "A. Decay parameterization"
    [[points]]
    study = "parameterization"
    label = "SD-0.8"
    set = { "model.decay.kind" = "simple", "model.decay.p" = 0.8 }
    [[points]]                      # a grid: one point per axis value
    study = "parameterization"
    label = "SD-{model.decay.p}"
    set = { "model.decay.kind" = "simple" }
    axes = { "model.decay.p" = [0.9, 0.99] }
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import math
import re
from pathlib import Path
from typing import Any, Callable, Mapping

from decaylab import presets
from decaylab.config import flatten
from decaylab.evaluation.names import PRECISIONS
from decaylab.registry import closest
from decaylab.sweep.resources import slurm_options

# (base preset, dotted overrides) -> fully resolved run config as a nested dict. Raises ValueError on bad keys.
Resolver = Callable[[str, Mapping[str, Any]], dict]


@dataclasses.dataclass(frozen=True)
class Point:
    """One labelled configuration of a study; ``overrides`` are dotted keys applied to the base preset."""

    study: str
    label: str
    overrides: tuple[tuple[str, Any], ...] = ()
    base: str | None = None  # run preset of this point when it differs from the spec's (e.g. "mqar")

    @property
    def override_dict(self) -> dict[str, Any]:
        return dict(self.overrides)


@dataclasses.dataclass(frozen=True)
class Budget:
    """Training length of every point: ``max_steps`` or ``tokens`` (one of them, or neither to keep the preset's)."""

    max_steps: int | None = None
    tokens: int | None = None

    def __post_init__(self):
        if self.max_steps is not None and self.tokens is not None:
            raise ValueError("[budget]: give max_steps or tokens, not both")
        for name in ("max_steps", "tokens"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value <= 0):
                raise ValueError(f"[budget] {name}={value!r}: expected a positive integer")


@dataclasses.dataclass(frozen=True)
class SweepSpec:
    name: str
    base: str
    points: tuple[Point, ...]
    seeds: tuple[int, ...] = (0,)
    budget: Budget = Budget()
    overrides: tuple[tuple[str, Any], ...] = ()
    studies: tuple[tuple[str, str], ...] = ()  # (study name, title) in report order
    description: str = ""
    evaluate: bool = True  # run decaylab.evaluation after training (ppl, extrapolation, decay statistics)
    evaluation: tuple[tuple[str, Any], ...] = ()  # keyword arguments of evaluate(): max_tokens, extrapolation, ...
    workers: int | None = None  # default for --workers (points run at once); None: one, or one per --devices entry
    slurm: tuple[tuple[str, Any], ...] = ()  # [slurm]: resources of one task under --launcher slurm (resources.py)

    def __post_init__(self):
        if self.workers is not None and (
            not isinstance(self.workers, int) or isinstance(self.workers, bool) or self.workers < 1
        ):
            raise ValueError(f"sweep {self.name!r}: workers={self.workers!r}: expected a positive integer, e.g. 2")
        if not self.points:
            raise ValueError(f"sweep {self.name!r} has no points: add [[points]] entries")
        if not self.seeds or len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"sweep {self.name!r}: seeds must be a non-empty list of distinct integers")
        seen = set()
        for p in self.points:
            if (p.study, p.label) in seen:
                raise ValueError(f"sweep {self.name!r}: label {p.label!r} appears twice in study {p.study!r}")
            seen.add((p.study, p.label))
        titled = {name for name, _ in self.studies}
        for p in self.points:
            if titled and p.study not in titled:
                raise ValueError(
                    f"point {p.label!r} belongs to study {p.study!r}, which [studies] does not list."
                    f"{closest(p.study, sorted(titled))} Listed: {', '.join(sorted(titled))}"
                )

    def study_order(self) -> list[tuple[str, str]]:
        """(name, title) of every study with points, in the order of [studies] then first appearance."""
        titles = dict(self.studies)
        order = [n for n, _ in self.studies]
        order += [p.study for p in self.points if p.study not in order]
        order = list(dict.fromkeys(order))
        used = {p.study for p in self.points}
        return [(n, titles.get(n, n)) for n in order if n in used]

    def select_studies(self, names: list[str]) -> "SweepSpec":
        """The same spec restricted to some studies (``--study``); run ids do not change."""
        known = [n for n, _ in self.study_order()]
        for n in names:
            if n not in known:
                hint = closest(n, known)
                raise ValueError(f"unknown study {n!r}.{hint} Studies in {self.name!r}: {', '.join(known)}")
        return dataclasses.replace(self, points=tuple(p for p in self.points if p.study in names))


@dataclasses.dataclass(frozen=True)
class Membership:
    study: str
    label: str
    seed: int
    point_index: int  # position of the point in the spec: the report's default row order


@dataclasses.dataclass(frozen=True)
class PlannedRun:
    """One training run: a resolved config, its run id (hash of the config) and the table rows it fills."""

    run_id: str
    config: dict
    memberships: tuple[Membership, ...]


def run_id_of(config: Mapping[str, Any]) -> str:
    """Stable short name of a run: the first 12 hex digits of the SHA-256 of its canonical JSON config."""
    canonical = json.dumps(config, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:12]


# ---------------------------------------------------------------- loading

_TOP_KEYS = {
    "name", "description", "base", "seeds", "budget", "overrides", "studies", "points", "evaluate", "evaluation",
    "workers", "slurm",
}  # fmt: skip
# [evaluation] keys: passed to decaylab.evaluation.evaluate(); not part of the run config (and not of the run id)
EVALUATION_KEYS = {"max_tokens": int, "extrapolation": list, "splits": list, "decay_tokens": int, "precision": str}
_POINT_KEYS = {"study", "label", "set", "base", "axes"}


def _check_keys(table: Mapping[str, Any], allowed: set[str], where: str) -> None:
    for key in table:
        if key not in allowed:
            raise ValueError(
                f"{where}: unknown key {key!r}.{closest(key, sorted(allowed))} Allowed: {', '.join(sorted(allowed))}"
            )


def preset_names() -> list[str]:
    return presets.names("sweeps")


def find_spec(name_or_path: str | Path) -> Path:
    """A spec file path from a path or a preset name; unknown names are answered with the closest presets."""
    path = Path(name_or_path)
    if path.suffix == ".toml" or path.exists():
        if not path.is_file():
            raise FileNotFoundError(f"sweep spec {str(path)!r} does not exist")
        return path
    if str(name_or_path) in preset_names():
        return presets.path("sweeps", str(name_or_path))
    names = preset_names()
    raise ValueError(
        f"unknown sweep preset {str(name_or_path)!r}.{closest(str(name_or_path), names)} "
        f"Presets: {', '.join(names)}; or give the path of a .toml spec"
    )


def spec_from_dict(data: Mapping[str, Any], where: str = "spec") -> SweepSpec:
    _check_keys(data, _TOP_KEYS, where)
    for required in ("name", "base"):
        if required not in data:
            raise ValueError(f"{where}: missing top-level key {required!r}")
    budget = data.get("budget", {})
    _check_keys(budget, {"max_steps", "tokens"}, f"{where} [budget]")
    seeds = data.get("seeds", [0])
    if not isinstance(seeds, list) or not all(isinstance(s, int) and not isinstance(s, bool) for s in seeds):
        raise ValueError(f"{where}: seeds={seeds!r}: expected a list of integers, e.g. seeds = [0, 1, 2]")
    studies = data.get("studies", {})
    if not isinstance(studies, Mapping) or not all(isinstance(t, str) for t in studies.values()):
        raise ValueError(f'{where} [studies]: expected study = "title" pairs')

    evaluation = data.get("evaluation", {})
    _check_keys(evaluation, set(EVALUATION_KEYS), f"{where} [evaluation]")
    for key, value in evaluation.items():
        if not isinstance(value, EVALUATION_KEYS[key]) or isinstance(value, bool):
            raise ValueError(f"{where} [evaluation] {key}={value!r}: expected a {EVALUATION_KEYS[key].__name__}")
    if evaluation.get("precision", "fp32") not in PRECISIONS:
        raise ValueError(f"{where} [evaluation] precision={evaluation['precision']!r}: choose from {', '.join(PRECISIONS)}")
    slurm = data.get("slurm", {})
    if not isinstance(slurm, Mapping):
        raise ValueError(f"{where} [slurm]: expected a table of KEY = VALUE, e.g. partition = \"gpu\"")
    slurm_options(slurm)  # unknown keys and bad values fail at load time, not at submission
    points: list[Point] = []
    for i, entry in enumerate(data.get("points", [])):
        what = f"{where} [[points]] #{i + 1}"
        _check_keys(entry, _POINT_KEYS, what)
        if "axes" not in entry:
            points.append(_point(entry, flatten(entry.get("set", {})), what))
            continue
        axes = flatten(entry["axes"])
        if not axes or not all(isinstance(v, list) and v for v in axes.values()):
            raise ValueError(f"{what}: axes must map dotted keys to non-empty lists of values")
        label = str(entry.get("label", ""))
        for key, values in axes.items():  # else two points of the grid get the same label
            if len(values) > 1 and "{" + key + "}" not in label:
                raise ValueError(
                    f"{what}: label {label!r} does not name the axis {key!r}, so its values would share one label; "
                    f"put {{{key}}} in the label (or fix the axis name)"
                )
        for combo in itertools.product(*axes.values()):  # a grid: one point per combination, in axis order
            values = dict(zip(axes, combo))
            label = _fill_label(str(entry.get("label", "")), values, what)
            points.append(_point({**entry, "label": label}, {**flatten(entry.get("set", {})), **values}, what))
    return SweepSpec(
        name=str(data["name"]),
        base=str(data["base"]),
        description=str(data.get("description", "")),
        seeds=tuple(seeds),
        budget=Budget(**budget),
        overrides=tuple(flatten(data.get("overrides", {})).items()),
        studies=tuple(studies.items()),
        points=tuple(points),
        evaluate=bool(data.get("evaluate", True)),
        evaluation=tuple((k, tuple(v) if isinstance(v, list) else v) for k, v in evaluation.items()),
        workers=data.get("workers"),
        slurm=tuple(slurm.items()),
    )


def _fill_label(template: str, values: Mapping[str, Any], where: str) -> str:
    """Fill a label template: "SD-{model.decay.p}" -> "SD-0.9" (each {dotted.key} is an axis value)."""

    def value_of(match: re.Match) -> str:
        key = match.group(1)
        if key not in values:
            raise ValueError(f"{where}: label {template!r} names {key!r}, which is not an axis ({', '.join(values)})")
        return str(values[key])

    return re.sub(r"\{([^{}]+)\}", value_of, template)


def _point(entry: Mapping[str, Any], overrides: dict[str, Any], where: str) -> Point:
    for required in ("study", "label"):
        if not entry.get(required):
            raise ValueError(f"{where}: missing {required!r}")
    return Point(
        study=str(entry["study"]), label=str(entry["label"]), overrides=tuple(overrides.items()), base=entry.get("base")
    )


def load_spec(name_or_path: str | Path) -> SweepSpec:
    """Read a spec from a preset name (``quick``, ``paper``) or a TOML path."""
    path = find_spec(name_or_path)
    return spec_from_dict(presets.read_toml(path), where=str(path))


# ---------------------------------------------------------------- expansion


def _budget_overrides(budget: Budget, resolve: Resolver, base: str, overrides: Mapping[str, Any]) -> dict[str, Any]:
    if budget.max_steps is not None:
        return {"train.max_steps": budget.max_steps}
    if budget.tokens is not None:
        train = resolve(base, overrides)["train"]
        per_step = train["batch_size"] * train["seq_len"]  # batch_size is the global batch (all micro-steps)
        return {"train.max_steps": max(1, math.ceil(budget.tokens / per_step))}
    return {}


def _resolves(resolve: Resolver, base: str, overrides: Mapping[str, Any]) -> bool:
    try:
        resolve(base, overrides)
    except ValueError:
        return False
    return True


def expand(
    spec: SweepSpec, resolve: Resolver, cli_overrides: Mapping[str, Any] | None = None, seed_key: str = "train.seed"
) -> list[PlannedRun]:
    """Every (point, seed) resolved to a run; same spec -> same run ids in the same order (seed-major).

    Configurations that resolve identically (one point listed in several studies) become one run with several
    memberships. A bad override key or value raises ValueError before anything runs.
    """
    runs: dict[str, PlannedRun] = {}
    for seed in spec.seeds:
        for index, point in enumerate(spec.points):
            base = point.base or spec.base
            overrides = dict(spec.overrides)
            overrides.update(point.override_dict)  # budget is applied below, after the point (point keys win)
            try:
                budget = _budget_overrides(spec.budget, resolve, base, overrides)
                merged = {**dict(spec.overrides), **budget, **point.override_dict, seed_key: seed}
                merged.update(cli_overrides or {})
                config = resolve(base, merged)
            except ValueError as e:
                without_cli = {k: v for k, v in merged.items() if k not in (cli_overrides or {})}
                if cli_overrides and _resolves(resolve, base, without_cli):
                    raise ValueError(f"--set: {e}") from None  # the point is fine without --set: blame --set
                raise ValueError(f"point {point.label!r} (study {point.study!r}): {e}") from None
            run_id = run_id_of(config)
            member = Membership(point.study, point.label, seed, index)
            if run_id in runs:
                old = runs[run_id]
                runs[run_id] = dataclasses.replace(old, memberships=old.memberships + (member,))
            else:
                runs[run_id] = PlannedRun(run_id, config, (member,))
    return list(runs.values())
