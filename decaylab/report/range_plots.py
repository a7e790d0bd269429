"""Figures of the decay-range section (decaylab.report.decay_range): score against learned median decay, one line
per setting, and the best decay's half-life against the context length."""

from __future__ import annotations

from pathlib import Path

import matplotlib
import matplotlib.ticker

matplotlib.use("Agg")  # headless: reports are written on servers and in tests
import matplotlib.pyplot as plt  # noqa: E402  (must follow the backend choice)
import numpy as np  # noqa: E402

from decaylab.files import atomic_write  # noqa: E402
from decaylab.report.decay_range import BestDecay, Setting, half_life  # noqa: E402

DECAY_TICKS = (0.1, 0.3, 0.5, 0.8, 0.9, 0.95, 0.99, 0.999, 0.9999)


def _save(fig, path: Path) -> Path:
    try:
        fig.tight_layout()
        atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=110))
    finally:
        plt.close(fig)
    return path


def score_against_decay(settings: list[Setting], path: Path, *, title: str) -> Path | None:
    """One line per setting through its designs, ordered by learned median decay (logit axis: 0.5, 0.9, 0.99, ...
    equally spaced); each point the mean over seeds of the score, its bar from the lowest to the highest seed (an sd
    bar would reach below 0 accuracy where one seed of three solves the task and two do not)."""
    fig, ax = plt.subplots(figsize=(6.8, 4.4))
    drawn = False
    for setting in settings:
        points = sorted((d.decay, d) for d in setting.designs if d.decay is not None and 0.0 < d.decay < 1.0)
        if not points:
            continue
        xs = [x for x, _ in points]
        raw = [_raw_scores(setting, d) for _, d in points]
        ys = [float(np.mean(v)) for v in raw]
        errs = [[y - min(v) for y, v in zip(ys, raw)], [max(v) - y for y, v in zip(ys, raw)]]
        ax.errorbar(xs, ys, yerr=errs, marker="o", markersize=3, capsize=2, label=setting.name)
        drawn = True
    if not drawn:
        plt.close(fig)
        return None
    ax.set_xscale("logit")
    low, high = ax.get_xlim()
    ticks = [t for t in DECAY_TICKS if low <= t <= high]
    ax.set_xticks(ticks, [f"{t:g}" for t in ticks])
    ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
    ax.set_xlabel("learned median decay (all layers)")
    ax.set_ylabel("MQAR accuracy" if settings[0].is_recall else "test perplexity")
    ax.set_title(title)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize="small")
    return _save(fig, path)


def _raw_scores(setting: Setting, design) -> list[float]:
    """Back from gains to the score a reader knows: accuracy as it is, perplexity = exp(-gain)."""
    gains = list(design.gains.values())
    return gains if setting.is_recall else [float(np.exp(-g)) for g in gains]


def half_life_against_context(bests: list[BestDecay], path: Path) -> Path | None:
    """The best design's half-life per context length with its 95 % bootstrap interval, over thin lines of every
    design's learned half-life (learned decays may lengthen with the context too); the dashed line is a half-life
    equal to the context."""
    points = [(b.setting.seq_len, b.half_life, b.interval()) for b in bests if b.half_life is not None]
    if not points:
        return None
    fig, ax = plt.subplots(figsize=(5.6, 4.2))
    by_design: dict[str, list[tuple[int, float]]] = {}
    for b in bests:
        for d in b.setting.designs:
            if (h := half_life(d.decay)) is not None:
                by_design.setdefault(d.label, []).append((b.setting.seq_len, h))
    for label, line in by_design.items():
        xs, ys = zip(*line)
        ax.plot(xs, ys, color="gray", alpha=0.35, linewidth=0.8, marker=".", markersize=3)
        ax.annotate(label, (xs[-1], ys[-1]), fontsize=6, color="gray", xytext=(3, 0), textcoords="offset points")
    xs = [p[0] for p in points]
    ys = [p[1] for p in points]
    low = [p[1] - p[2][0] if p[2] else 0.0 for p in points]
    high = [p[2][1] - p[1] if p[2] else 0.0 for p in points]
    ax.errorbar(xs, ys, yerr=[low, high], marker="o", capsize=3, label="best design (95% interval)")
    span = np.array([min(xs) / 1.5, max(xs) * 1.5])
    ax.plot(span, span, linestyle="--", color="gray", label="half-life = context")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("context length (tokens)")
    ax.set_ylabel("half-life of the learned median decay (tokens)")
    ax.set_title("Best decay against context length")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize="small")
    return _save(fig, path)


def range_figures(lm: list[Setting], recall: list[Setting], bests: list[BestDecay], folder: Path) -> dict[str, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    made = {
        "range-lm": score_against_decay(lm, folder / "range-lm.png", title="Perplexity against decay, per context")
        if lm else None,
        "range-recall": score_against_decay(recall, folder / "range-recall.png",
                                            title="Recall against decay, per difficulty") if recall else None,
        "range-half-life": half_life_against_context(bests, folder / "range-half-life.png") if bests else None,
    }  # fmt: skip
    return {kind: path for kind, path in made.items() if path is not None}
