"""A sweep's results as report rows: one row per (study, label), aggregated over seeds.

Each row keeps the per-seed values (with the seed of each, so two rows can be paired seed by seed) and their mean
and sample standard deviation (ddof = 1; None with one seed).
The *score* that ranks rows and decides findings is test perplexity (lower is better) for language-model runs,
MQAR recall accuracy (higher is better) for recall runs, else validation perplexity. Recall runs also log a
validation loss (on the query positions), so accuracy must come before validation perplexity: an MQAR row is
ranked by how many queries it answers, not by its loss.
"""

from __future__ import annotations

import dataclasses
import math
import statistics
from pathlib import Path
from typing import Any

from decaylab.config import flatten
from decaylab.sweep.db import ResultsDB

# (metric name, higher is better) in order of preference for the score. A run has test_ppl (language model) or
# mqar_accuracy (recall), never both; val_ppl is the fallback for runs evaluated without a test split.
SCORES = (("test_ppl", False), ("mqar_accuracy", True), ("val_ppl", False))
SEED_KEY = "train.seed"


@dataclasses.dataclass(frozen=True)
class Stat:
    values: tuple[float, ...]
    seeds: tuple[int, ...] | None = None  # the seed of each value; None: values are seeds 0, 1, ... in order

    def __post_init__(self):
        if self.seeds is not None and len(self.seeds) != len(self.values):
            raise ValueError(f"Stat has {len(self.values)} values but {len(self.seeds)} seeds; give one seed per value")

    def by_seed(self) -> dict[int, float]:
        return dict(zip(self.seeds if self.seeds is not None else range(self.n), self.values))

    @property
    def n(self) -> int:
        return len(self.values)

    @property
    def mean(self) -> float | None:
        return statistics.fmean(self.values) if self.values else None

    @property
    def std(self) -> float | None:
        return statistics.stdev(self.values) if self.n >= 2 else None


@dataclasses.dataclass
class Row:
    study: str
    label: str
    point_index: int
    run_ids: list[str]  # one per seed, in seed order
    statuses: list[str]
    config: dict[str, Any]  # flattened config of the point (dotted keys), seed left out
    metrics: dict[str, Stat]
    errors: list[str]
    seeds: list[int] = dataclasses.field(default_factory=list)  # one per run id; empty: 0, 1, ... in order

    def stat(self, name: str) -> Stat:
        return self.metrics.get(name, Stat(()))

    @property
    def score(self) -> tuple[str, bool, Stat] | None:
        """(metric name, higher is better, values over finished seeds) of the first score metric present."""
        for name, higher in SCORES:
            if self.stat(name).n:
                return name, higher, self.stat(name)
        return None

    @property
    def is_softmax(self) -> bool:
        return self.config.get("model.mixer") == "softmax"

    @property
    def run_seeds(self) -> list[int]:
        return self.seeds or list(range(len(self.run_ids)))


@dataclasses.dataclass
class SweepData:
    out_dir: Path
    name: str
    description: str
    overrides: dict[str, Any]
    studies: list[tuple[str, str]]  # (name, title)
    rows: dict[str, list[Row]]  # study -> rows in spec order
    curves: dict[str, dict[str, list[tuple[float, float]]]]  # curve -> run_id -> points
    decay_stats: dict[str, dict[int, dict[str, float]]]  # run_id -> layer -> stat -> value
    status_counts: dict[str, int]


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


def load_sweep(out_dir: str | Path) -> SweepData:
    """Read ``DIR/results.sqlite`` into report rows (raises FileNotFoundError when DIR is not a sweep)."""
    out = Path(out_dir)
    if not out.is_dir():
        raise FileNotFoundError(f"sweep directory {out} does not exist; run `decaylab sweep SPEC --out {out}` first")
    db = ResultsDB(out / "results.sqlite", create=False)
    try:
        record = db.spec() or {}
        runs = {r["run_id"]: r for r in db.runs()}
        metrics = db.metrics()
        members = db.memberships()
        curves = {name: db.curves(name) for name in ("train_loss", "val_loss", "extrapolation_ppl", "loss_by_position")}
        decay_stats = db.decay_stats()
    finally:
        db.close()
    spec = record.get("spec", {})
    if not members:
        raise ValueError(f"{out / 'results.sqlite'} lists no runs; run the sweep first")

    grouped: dict[tuple[str, str], list[dict]] = {}
    for m in members:
        grouped.setdefault((m["study"], m["label"]), []).append(m)
    rows: dict[str, list[Row]] = {}
    for (study, label), ms in grouped.items():
        ms.sort(key=lambda m: m["seed"])
        ids = [m["run_id"] for m in ms]
        seed_of = {m["run_id"]: m["seed"] for m in ms}
        finished = [i for i in ids if runs[i]["status"] == "finished"]
        names = sorted({k for i in finished for k in metrics.get(i, {})})
        stats = {}
        for k in names:
            done = [i for i in finished if _finite(metrics.get(i, {}).get(k))]
            stats[k] = Stat(tuple(metrics[i][k] for i in done), tuple(seed_of[i] for i in done))
        config = flatten(runs[ids[0]]["config"])
        config.pop(SEED_KEY, None)
        row = Row(
            study=study,
            label=label,
            point_index=ms[0]["point_index"],
            run_ids=ids,
            statuses=[runs[i]["status"] for i in ids],
            config=config,
            metrics=stats,
            errors=[runs[i]["error"] for i in ids if runs[i]["status"] == "failed" and runs[i]["error"]],
            seeds=[m["seed"] for m in ms],
        )
        rows.setdefault(study, []).append(row)
    for study_rows in rows.values():
        study_rows.sort(key=lambda r: r.point_index)

    titles = dict(spec.get("studies") or [])
    order = [s for s, _ in spec.get("studies") or [] if s in rows] + [s for s in rows if s not in titles]
    counts: dict[str, int] = {}
    for i in {m["run_id"] for m in members}:
        counts[runs[i]["status"]] = counts.get(runs[i]["status"], 0) + 1
    return SweepData(
        out_dir=out,
        name=spec.get("name", out.name),
        description=spec.get("description", ""),
        overrides=record.get("overrides", {}),
        studies=[(s, titles.get(s, s)) for s in dict.fromkeys(order)],
        rows=rows,
        curves=curves,
        decay_stats=decay_stats,
        status_counts=counts,
    )


def sorted_rows(rows: list[Row]) -> list[Row]:
    """Best score first; rows without a score (failed, still running) last, in spec order."""

    def key(row: Row):
        score = row.score
        if score is None:
            return (1, 0.0, row.point_index)
        _, higher, stat = score
        return (0, -stat.mean if higher else stat.mean, row.point_index)

    return sorted(rows, key=key)


def decay_medians(row: Row, decay_stats: dict[str, dict[int, dict[str, float]]]) -> Stat:
    """The median decay over all layers (layer 0 of the statistics) of each finished seed of a row."""
    pairs = [
        (seed, decay_stats.get(run_id, {}).get(0, {}).get("median"))
        for run_id, seed, status in zip(row.run_ids, row.run_seeds, row.statuses)
        if status == "finished"
    ]
    pairs = [(seed, value) for seed, value in pairs if _finite(value)]
    return Stat(tuple(v for _, v in pairs), tuple(s for s, _ in pairs))


def mean_layer_stats(run_ids: list[str], decay_stats: dict[str, dict[int, dict[str, float]]]) -> list[dict]:
    """Per-layer decay statistics averaged over seeds, in decaylab.evaluation's list format (layer 'all' last)."""
    layers: dict[int, dict[str, list[float]]] = {}
    for run_id in run_ids:
        for layer, stats in decay_stats.get(run_id, {}).items():
            for stat, value in stats.items():
                if _finite(value):
                    layers.setdefault(layer, {}).setdefault(stat, []).append(value)
    out = [
        {"layer": "all" if layer == 0 else layer, **{k: statistics.fmean(v) for k, v in stats.items()}}
        for layer, stats in sorted(layers.items(), key=lambda item: (item[0] == 0, item[0]))
    ]
    return out
