"""The report's figures (matplotlib, Agg): per study, median decay per layer, loss curves, extrapolation curves.

Curves of a row are averaged over its seeds at the x values every seed has. The median-decay figure is
decaylab.evaluation's ``plot_median_decay`` on seed-averaged per-layer statistics.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # headless: reports are written on servers and in tests
import matplotlib.pyplot as plt  # noqa: E402  (must follow the backend choice)

from decaylab.evaluation.plots import plot_median_decay  # noqa: E402
from decaylab.files import atomic_write  # noqa: E402
from decaylab.report.data import Row, SweepData, mean_layer_stats  # noqa: E402


def mean_curve(run_ids: list[str], curves: dict[str, list[tuple[float, float]]]) -> list[tuple[float, float]]:
    """Mean over runs at the x values all of them have (seeds cut short by a failure do not skew the mean)."""
    series = [dict(curves[i]) for i in run_ids if curves.get(i)]
    if not series:
        return []
    common = sorted(set.intersection(*(set(s) for s in series)))
    return [(x, sum(s[x] for s in series) / len(series)) for x in common]


def plot_lines(
    lines: dict[str, list[tuple[float, float]]], path: Path, *, title: str, xlabel: str, ylabel: str, logx: bool = False
) -> Path | None:
    """One line per label; None (and no file) when there is nothing to draw."""
    lines = {label: pts for label, pts in lines.items() if pts}
    if not lines:
        return None
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    try:
        for label, pts in lines.items():
            xs, ys = zip(*pts)
            ax.plot(xs, ys, marker="o" if len(xs) <= 12 else None, markersize=3, label=label)
        if logx:
            ax.set_xscale("log", base=2)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.set_title(title)
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small")
        fig.tight_layout()
        atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=110))  # a reader never sees half a PNG
    finally:
        plt.close(fig)
    return path


def study_figures(data: SweepData, study: str, title: str, rows: list[Row], folder: Path) -> dict[str, Path]:
    """Write the study's figures into ``folder``; returns {kind: path} for those that had data."""
    folder.mkdir(parents=True, exist_ok=True)
    out: dict[str, Path] = {}
    stats = {r.label: mean_layer_stats(r.run_ids, data.decay_stats) for r in rows if not r.is_softmax}
    stats = {label: s for label, s in stats.items() if any(isinstance(e.get("layer"), int) for e in s)}
    if stats:
        path = folder / f"{study}-decay.png"
        out["decay"] = plot_median_decay(stats, path, title=f"Median decay: {title}"[:64])
    loss = {r.label: mean_curve(r.run_ids, data.curves.get("train_loss", {})) for r in rows}
    path = plot_lines(loss, folder / f"{study}-loss.png", title="Training loss", xlabel="step", ylabel="loss (nats)")
    if path:
        out["loss"] = path
    extrap = {r.label: mean_curve(r.run_ids, data.curves.get("extrapolation_ppl", {})) for r in rows}
    path = plot_lines(
        extrap, folder / f"{study}-extrapolation.png", title="Length extrapolation (test)",
        xlabel="evaluation length (tokens)", ylabel="perplexity", logx=True,
    )  # fmt: skip
    if path:
        out["extrapolation"] = path
    return out
