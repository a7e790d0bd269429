"""A sweep's results database as compact JSON lines, and back: the form in which finished studies are kept.

``export_results(DIR/results.sqlite, FILE)`` writes one JSON object per line:

    {"sweep": {"spec": ..., "overrides": ...}, "base_config": {...}}             first line
    {"run": ID, "seed": S, "status": ..., "config": {dotted key: value}, "error": ...,   one line per run
     "metrics": {...}, "curves": {name: [[x, ...], [value, ...]]}, "decay_stats": {layer: {stat: value}},
     "members": [[study, label, point_index], ...]}

A run's config is kept as the dotted keys in which it differs from ``base_config`` (the first run's). Numbers keep
SIGNIFICANT_DIGITS digits (the report prints at most 4); only the curves the report draws are kept; host, process
and timestamps are left out. A study of 200 runs takes about 0.6 MB.
``import_results(FILE, DIR/results.sqlite)`` rebuilds a database through the same calls a sweep makes, so
``decaylab report`` reads it like any other (``decaylab report FILE --out DIR`` does both steps), and
``decaylab sweep SPEC --out DIR --import FILE`` resumes the study from it: the imported finished runs count as
done, so a study can be carried between machines as one text file. Run ids hash the whole resolved config, so a
setting added to decaylab since the export (with its default) would change every id and make the study start
over; a resumed study therefore re-keys each imported run by its config as this version resolves it
(``current_ids=True``), which matches the runs the spec plans now whenever their settings are unchanged. It
imports only those (``only``): a run whose settings the spec has since changed (a study's protocol revised) is
left out, so that a report never shows it beside the runs that replace it, and trains again under the new settings.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Collection

from decaylab.config import flatten
from decaylab.sweep.db import ResultsDB

SIGNIFICANT_DIGITS = 7
IMPORTED_RUNS = "imported_runs"  # meta key: finished runs whose results came from an export
REPORT_CURVES = ("train_loss", "val_loss", "extrapolation_ppl", "loss_by_position")


@dataclass(frozen=True)
class _Member:
    study: str
    label: str
    seed: int
    point_index: int


@dataclass(frozen=True)
class _Run:  # the shape of spec.PlannedRun that ResultsDB.set_plan reads
    run_id: str
    config: dict
    memberships: tuple[_Member, ...]


def _round(value: Any) -> Any:
    if isinstance(value, float):
        return float(f"{value:.{SIGNIFICANT_DIGITS}g}")
    if isinstance(value, dict):
        return {k: _round(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_round(v) for v in value]
    return value


def _with_dotted(base: dict, changes: dict[str, Any]) -> dict:
    """A deep copy of the nested ``base`` with dotted-key ``changes`` applied."""
    out = json.loads(json.dumps(base))
    for key, value in changes.items():
        *parents, leaf = key.split(".")
        node = out
        for name in parents:
            node = node.setdefault(name, {})
        node[leaf] = value
    return out


def export_results(db_path: str | Path, out_path: str | Path) -> int:
    """Write the database at ``db_path`` as JSON lines to ``out_path``; returns the number of runs written."""
    db = ResultsDB(db_path, create=False)
    try:
        record = db.spec() or {}
        runs = db.runs()
        members: dict[str, list] = {}
        for m in db.memberships():
            members.setdefault(m["run_id"], []).append([m["study"], m["label"], m["point_index"]])
        metrics, decay = db.metrics(), db.decay_stats()
        curves = {name: db.curves(name) for name in REPORT_CURVES}
    finally:
        db.close()
    base = runs[0]["config"] if runs else {}
    flat_base = flatten(base)
    lines = [json.dumps({"sweep": record, "base_config": base}, sort_keys=True, ensure_ascii=False)]
    for run in runs:
        rid = run["run_id"]
        flat = flatten(run["config"])
        entry = {
            "run": rid, "seed": run["seed"], "status": run["status"], "error": run["error"],
            "config": {k: v for k, v in flat.items() if k not in flat_base or flat_base[k] != v},
            "members": members.get(rid, []), "metrics": metrics.get(rid, {}),
            "curves": {name: [list(xs) for xs in zip(*by_run[rid])] for name, by_run in curves.items()
                       if rid in by_run},
            "decay_stats": {str(layer): stats for layer, stats in decay.get(rid, {}).items()},
        }  # fmt: skip
        lines.append(json.dumps(_round(entry), sort_keys=True, ensure_ascii=False, separators=(",", ":")))
    Path(out_path).write_text("\n".join(lines) + "\n", encoding="utf-8")
    return len(runs)


def resolved_now(config: dict) -> dict | None:
    """A run config as this version resolves it (new settings at their defaults); None if it no longer parses."""
    from decaylab.config import from_dict, to_dict
    from decaylab.run.config import RunConfig

    try:
        return to_dict(from_dict(RunConfig, config))
    except (ValueError, TypeError):
        return None


def import_results(path: str | Path, db_path: str | Path, current_ids: bool = False,
                   only: Collection[str] | None = None) -> int:  # fmt: skip
    """Rebuild a results database at ``db_path`` (which must not exist) from ``path``; returns the run count.

    ``current_ids``: key each run by the id of its config as this version resolves it (see the module docstring);
    a config that no longer parses keeps its old id (and its point runs again). ``only``: import just the runs of
    these ids (after re-keying), e.g. the ones a spec plans now; the count returned is theirs."""
    path, db_path = Path(path), Path(db_path)
    if not path.is_file():
        raise FileNotFoundError(f"results export {path} does not exist; `decaylab report DIR --export FILE` writes one")
    if db_path.exists():
        raise FileExistsError(f"{db_path} exists; import into a new directory (nothing was changed)")
    entries = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            entries.append(json.loads(line))
        except json.JSONDecodeError as e:
            raise ValueError(f"{path} line {number} is not valid JSON ({e}); the file is damaged or not a "
                             "results export (decaylab report DIR --export FILE writes one)") from None  # fmt: skip
    if not entries or "sweep" not in entries[0]:
        raise ValueError(f"{path} does not start with a sweep line; it is not a results export")
    runs = [e for e in entries[1:] if "run" in e]
    base = entries[0].get("base_config", {})
    from decaylab.sweep.spec import run_id_of

    configs = {}
    for e in runs:
        config = _with_dotted(base, e["config"])
        now = resolved_now(config) if current_ids else None
        if now is not None:
            config, e["run"] = now, run_id_of(now)
        configs[e["run"]] = config
    if only is not None:
        runs = [e for e in runs if e["run"] in only]
    planned = [
        _Run(e["run"], configs[e["run"]], tuple(_Member(s, label, e["seed"], i) for s, label, i in e["members"]))
        for e in runs if e["members"]
    ]  # fmt: skip
    db_path.parent.mkdir(parents=True, exist_ok=True)
    db = ResultsDB(db_path)
    try:
        db.set_plan(entries[0]["sweep"], planned)
        for e in runs:
            if e["status"] == "finished":
                curves = {name: list(zip(xs, values)) for name, (xs, values) in e["curves"].items()}
                decay = {int(layer): stats for layer, stats in e["decay_stats"].items()}
                db.mark_finished(e["run"], {"metrics": e["metrics"], "curves": curves, "decay_stats": decay})
            elif e["status"] in ("failed", "interrupted"):
                db.mark_failed(e["run"], e["error"] or "", status=e["status"])
        # A sweep resumed in this directory counts these as done although it has no run directory for them.
        db.set_meta(IMPORTED_RUNS, sorted(e["run"] for e in runs if e["status"] == "finished"))
    finally:
        db.close()
    return len(runs)


__all__ = ["export_results", "import_results", "resolved_now", "IMPORTED_RUNS"]
