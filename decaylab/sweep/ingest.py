"""Read a finished run directory into the rows of the results database.

Sources (see docs/architecture.md, "run directory"): ``summary.json`` (steps, tokens, timings, parameter
count), ``metrics.jsonl`` (the training curves), ``eval.json`` (perplexities, length extrapolation, loss by
position, per-layer decay statistics, recall accuracy for MQAR runs). Every numeric top-level value of
summary.json and eval.json becomes a metric, so new evaluation numbers reach the database without changes here.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from decaylab.rundir import EVAL, METRICS, SUMMARY, read_metrics_file

# metrics.jsonl key -> curve name in the database (x = optimizer step)
_STEP_CURVES = {"loss": "train_loss", "val_loss": "val_loss", "val_ppl": "val_ppl", "tokens_per_s": "tokens_per_s"}


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{path} is not valid JSON ({e}); re-run the point to rewrite it") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object")
    return data


def _pairs(value: Any, x_key: str, y_keys: tuple[str, ...]) -> list[tuple[float, float]]:
    """A curve written as {x: y}, [[x, y], ...] or [{x_key: x, y_key: y}, ...] -> [(x, y), ...] sorted by x."""
    out = []
    if isinstance(value, dict):
        items = [(k, v) for k, v in value.items()]
    elif isinstance(value, list):
        items = []
        for entry in value:
            if isinstance(entry, (list, tuple)) and len(entry) >= 2:
                items.append((entry[0], entry[1]))
            elif isinstance(entry, dict) and x_key in entry:
                y = next((entry[k] for k in y_keys if k in entry), None)
                items.append((entry[x_key], y))
    else:
        return []
    for x, y in items:
        try:
            x = float(x)
        except (TypeError, ValueError):
            continue
        y = _number(y)
        if y is not None:
            out.append((x, y))
    return sorted(out)


def read_metrics_jsonl(path: Path) -> dict[str, list[tuple[float, float]]]:
    """Training curves by step from a metrics.jsonl file (read by ``decaylab.rundir.read_metrics_file``, which
    skips a torn line with a warning)."""
    curves: dict[str, list[tuple[float, float]]] = {}
    for row in read_metrics_file(path):
        step = _number(row.get("step"))
        if step is None:
            continue
        for key, curve in _STEP_CURVES.items():
            value = _number(row.get(key))
            if value is not None:
                curves.setdefault(curve, []).append((step, value))
    # A resumed run may log a step twice: keep the last value per step.
    return {name: sorted(dict(points).items()) for name, points in curves.items()}


def read_run(run_dir: str | Path) -> dict[str, Any]:
    """``{"metrics": {name: value}, "curves": {name: [(x, y)]}, "decay_stats": {layer: {stat: value}}}``."""
    run_dir = Path(run_dir)
    summary_path = run_dir / SUMMARY
    if not summary_path.is_file():
        raise FileNotFoundError(f"{summary_path} does not exist: the run has not finished training")
    metrics: dict[str, float] = {}
    summary = _read_json(summary_path)
    evaluation = _read_json(run_dir / EVAL) if (run_dir / EVAL).is_file() else {}
    for source in (summary, evaluation):
        for key, value in source.items():
            number = _number(value)
            if number is not None:
                metrics[key] = number

    curves = read_metrics_jsonl(run_dir / METRICS)
    extrapolation = evaluation.get("extrapolation")
    contexts = evaluation.get("extrapolation_context")  # {factor: length in tokens}
    if isinstance(extrapolation, dict) and isinstance(contexts, dict):
        extrapolation = {contexts.get(factor, factor): ppl for factor, ppl in extrapolation.items()}
    extrap = _pairs(extrapolation, "length", ("ppl", "val_ppl", "test_ppl"))
    if extrap:
        curves["extrapolation_ppl"] = extrap
        metrics["extrapolation_ppl"] = extrap[-1][1]  # perplexity at the longest evaluated length
        metrics["extrapolation_length"] = extrap[-1][0]
    by_position = _pairs(evaluation.get("loss_by_position"), "position", ("loss",))
    if by_position:
        curves["loss_by_position"] = by_position

    decay_stats: dict[int, dict[str, float]] = {}
    for entry in evaluation.get("decay_stats") or []:
        if not isinstance(entry, dict):
            continue
        layer = entry.get("layer")
        layer = 0 if layer == "all" else layer  # layer 0 = all layers pooled; real layers count from 1
        if not isinstance(layer, int):
            continue
        stats = {k: _number(v) for k, v in entry.items() if k not in ("layer", "granularity")}
        decay_stats[layer] = {k: v for k, v in stats.items() if v is not None}
    return {"metrics": metrics, "curves": curves, "decay_stats": decay_stats}
