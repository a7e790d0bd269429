"""Sweep specs: a TOML file (or a shipped preset) that names a grid of run configurations.

A spec is a base run preset, overrides shared by every point, a budget, seeds, and a list of labelled points, each
belonging to a study (one table of the report). A study may carry its own ``set``, applied to each of its points
(the same designs at another context length). A point with ``axes`` is a grid: it expands to the Cartesian
product of its axes, in place, so points keep the order of the file; a point whose ``study`` is a list expands
to one point (or grid) per listed study, in list order, in place too. Expansion resolves every (point, seed) to a
full run config and names its run directory by a short hash of that config, so the same spec always gives the
same run ids in the same order, and a configuration shared by several studies (the softmax baseline, "Mamba2"
in the parameterization and sharing tables) is trained once.

Order of precedence, last wins: base preset < spec ``[overrides]`` < ``[budget]`` < study ``set`` < point
``set`` < seed < ``--set`` from the command line. (The study's set comes after the budget so that a study can fix
its own ``train.max_steps``.)

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
    parameterization = "A. Decay parameterization"     # study name = report title
    [studies.long]                  # or a table: title (default: the name) and a set for each of its points
    title = "B. Context 512"
    set = { "train.seq_len" = 512, "train.batch_size" = 4 }
    [[points]]
    study = "parameterization"
    label = "SD-0.8"
    set = { "model.decay.kind" = "simple", "model.decay.p" = 0.8 }
    [[points]]                      # a grid: one point per axis value, in each listed study (list order)
    study = ["parameterization", "long"]
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
    # (study name, its dotted settings) of the studies with a ``set``, in [studies] order; kept apart from
    # ``studies`` so that sweep.json still records (name, title) pairs, which the report reads
    study_sets: tuple[tuple[str, tuple[tuple[str, Any], ...]], ...] = ()
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
        for study, _ in self.study_sets:
            if study not in titled:
                raise ValueError(f"sweep {self.name!r}: study {study!r} has a set but no entry in [studies]")
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

    def study_set(self, study: str) -> dict[str, Any]:
        """The dotted settings that ``[studies.NAME] set`` applies to every point of a study ({} when none)."""
        return dict(dict(self.study_sets).get(study, ()))

    def select_studies(self, names: list[str]) -> "SweepSpec":
        """The same spec restricted to some studies (``--study``); run ids do not change (study sets are kept)."""
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
_STUDY_KEYS = {"title", "set"}  # keys of a [studies.NAME] table


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
    studies, study_sets = _studies(data.get("studies", {}), where)

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
        points += _points_of(entry, f"{where} [[points]] #{i + 1}")
    return SweepSpec(
        name=str(data["name"]),
        base=str(data["base"]),
        description=str(data.get("description", "")),
        seeds=tuple(seeds),
        budget=Budget(**budget),
        overrides=tuple(flatten(data.get("overrides", {})).items()),
        studies=tuple(studies),
        study_sets=tuple(study_sets),
        points=tuple(points),
        evaluate=bool(data.get("evaluate", True)),
        evaluation=tuple((k, tuple(v) if isinstance(v, list) else v) for k, v in evaluation.items()),
        workers=data.get("workers"),
        slurm=tuple(slurm.items()),
    )


def _studies(table: Any, where: str) -> tuple[list[tuple[str, str]], list[tuple[str, tuple[tuple[str, Any], ...]]]]:
    """[studies] as (name, title) pairs and (name, settings) pairs; each study is a title or a table."""
    if not isinstance(table, Mapping):
        raise ValueError(f'{where} [studies]: expected study = "title" entries or [studies.NAME] tables')
    titles, sets = [], []
    for name, entry in table.items():
        if isinstance(entry, str):  # the short form: name = "Title"
            titles.append((name, entry))
            continue
        what = f"{where} [studies.{name}]"
        if not isinstance(entry, Mapping):
            raise ValueError(f'{what}: expected a title ({name} = "Title") or a table with title and set')
        _check_keys(entry, _STUDY_KEYS, what)
        title = entry.get("title", name)
        if not isinstance(title, str):
            raise ValueError(f'{what}: title={title!r}: expected a string, e.g. title = "B. Context 512"')
        titles.append((name, title))
        settings = entry.get("set", {})
        if not isinstance(settings, Mapping):
            raise ValueError(
                f"{what}: set={settings!r}: expected a table of dotted keys, e.g. set = {{ \"train.seq_len\" = 512 }}"
            )
        if settings:
            sets.append((name, tuple(flatten(settings).items())))
    return titles, sets


def _points_of(entry: Mapping[str, Any], where: str) -> list[Point]:
    """The points of one [[points]] entry: its grid (or the entry alone) in each of its studies, in list order."""
    _check_keys(entry, _POINT_KEYS, where)
    studies = _study_names(entry, where)
    variants = _variants(entry, where)
    return [
        _point({**entry, "study": study, "label": label}, overrides, where)
        for study in studies
        for label, overrides in variants
    ]


def _study_names(entry: Mapping[str, Any], where: str) -> list[str]:
    """``study = "a"`` or ``study = ["a", "b"]`` as a list of names."""
    study = entry.get("study")
    if not isinstance(study, list):
        if not study:
            raise ValueError(f"{where}: missing 'study'")
        return [str(study)]
    if not study:
        raise ValueError(f'{where}: study = [] names no study; list at least one, e.g. study = ["lm-128", "lm-512"]')
    if not all(isinstance(name, str) and name for name in study):
        raise ValueError(f"{where}: study = {study!r}: expected a list of study names, e.g. [\"lm-128\", \"lm-512\"]")
    return study


def _variants(entry: Mapping[str, Any], where: str) -> list[tuple[Any, dict[str, Any]]]:
    """(label, dotted overrides) of each point of an entry: the entry itself, or one per combination of its axes."""
    settings = flatten(entry.get("set", {}))
    if "axes" not in entry:
        return [(entry.get("label"), settings)]
    axes = flatten(entry["axes"])
    if not axes or not all(isinstance(v, list) and v for v in axes.values()):
        raise ValueError(f"{where}: axes must map dotted keys to non-empty lists of values")
    template = str(entry.get("label", ""))
    for key, values in axes.items():  # else two points of the grid get the same label
        if len(values) > 1 and "{" + key + "}" not in template:
            raise ValueError(
                f"{where}: label {template!r} does not name the axis {key!r}, so its values would share one label; "
                f"put {{{key}}} in the label (or fix the axis name)"
            )
    variants = []
    for combo in itertools.product(*axes.values()):  # a grid: one point per combination, in axis order
        values = dict(zip(axes, combo))
        variants.append((_fill_label(template, values, where), {**settings, **values}))
    return variants


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


def _resolves(resolve_config: Callable[[], dict]) -> bool:
    try:
        resolve_config()
    except ValueError:
        return False
    return True


def _resolve_point(
    spec: SweepSpec, point: Point, seed: int, resolve: Resolver, cli_overrides: Mapping[str, Any], seed_key: str
) -> dict:
    """The run config of (point, seed). A ValueError names what to fix: --set, the study's set, or the point."""
    base = point.base or spec.base
    study_set = spec.study_set(point.study)

    def config(with_study_set: bool = True, with_cli: bool = True) -> dict:
        study = study_set if with_study_set else {}
        # a token budget is converted with the batch size and length that the study and the point set
        shape = {**dict(spec.overrides), **study, **point.override_dict}
        budget = _budget_overrides(spec.budget, resolve, base, shape)
        merged = {**dict(spec.overrides), **budget, **study, **point.override_dict, seed_key: seed}
        return resolve(base, {**merged, **(cli_overrides if with_cli else {})})

    try:
        return config()
    except ValueError as e:
        if cli_overrides and _resolves(lambda: config(with_cli=False)):
            raise ValueError(f"--set: {e}") from None  # the point is fine without --set: blame --set
        if study_set and _resolves(lambda: config(with_study_set=False, with_cli=False)):
            raise ValueError(f"[studies.{point.study}] set (applied to point {point.label!r}): {e}") from None
        raise ValueError(f"point {point.label!r} (study {point.study!r}): {e}") from None


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
            config = _resolve_point(spec, point, seed, resolve, cli_overrides or {}, seed_key)
            run_id = run_id_of(config)
            member = Membership(point.study, point.label, seed, index)
            if run_id in runs:
                old = runs[run_id]
                runs[run_id] = dataclasses.replace(old, memberships=old.memberships + (member,))
            else:
                runs[run_id] = PlannedRun(run_id, config, (member,))
    return list(runs.values())
