"""Plots of evaluation results (matplotlib, Agg backend: no display needed).

``plot_median_decay`` draws the paper's median-decay figure: median lambda against the 1-based layer index,
one line per method, with the 25th-75th percentile band shaded.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

import matplotlib

matplotlib.use("Agg")  # headless: evaluation runs on servers and in tests
import matplotlib.pyplot as plt  # noqa: E402  (must follow the backend choice)

from decaylab.evaluation.decay_stats import per_layer  # noqa: E402
from decaylab.files import atomic_write  # noqa: E402


def plot_median_decay(
    stats_by_label: Mapping[str, Sequence[dict[str, Any]]],
    path: str | Path,
    *,
    title: str = "Median decay across layers",
) -> Path:
    """Write a PNG of median lambda per layer (IQR band) for each method in ``stats_by_label``.

    Args:
        stats_by_label: ``{label: decay_statistics(...) output}``. Labels whose list holds no per-layer
            entries (a softmax baseline) are left out of the plot.
        path: where the PNG goes; its folder must exist. Written atomically (a temporary file, then rename).
        title: the figure title.
    Returns:
        the path written.
    """
    path = Path(path)
    if not path.parent.is_dir():
        raise FileNotFoundError(f"cannot write {path}: folder {path.parent} does not exist")
    lines = {label: per_layer(stats) for label, stats in stats_by_label.items()}
    lines = {label: layers for label, layers in lines.items() if layers}
    if not lines:
        raise ValueError("no decay statistics to plot: every method given has no decay (softmax baseline?)")

    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    try:
        max_layer = 1
        for label, layers in lines.items():
            x = [s["layer"] for s in layers]
            ax.plot(x, [s["median"] for s in layers], marker="o", label=label)
            ax.fill_between(x, [s["p25"] for s in layers], [s["p75"] for s in layers], alpha=0.2)
            max_layer = max(max_layer, x[-1])
        ax.set_xlabel("layer")
        ax.set_ylabel("median decay λ (band: 25th–75th percentile)")
        ax.set_xticks(range(1, max_layer + 1))
        ax.set_ylim(0.0, 1.05)  # decays live in [0, 1]; a little headroom keeps lines at 1 visible
        ax.set_title(title)
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small", loc="lower right")
        fig.tight_layout()
        atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=120))  # a reader never sees half a PNG
    finally:
        plt.close(fig)
    return path
