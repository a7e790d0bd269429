"""Evaluation of trained runs: perplexity, bits per byte, MQAR accuracy, length extrapolation, decay statistics.

``evaluate(run_dir)`` does everything and writes ``RUN_DIR/eval.json`` plus ``decay_median.png``; the pieces
are public for sweeps and reports: ``decay_statistics(model, input_ids)``, ``plot_median_decay({label:
stats}, path)``, ``position_losses(model, batches)`` and ``length_extrapolation(...)``.
"""

from decaylab.evaluation.decay_stats import decay_statistics, half_life, per_layer, pooled, summarize_decays
from decaylab.evaluation.evaluate import evaluate
from decaylab.evaluation.extrapolation import length_extrapolation
from decaylab.evaluation.perplexity import PositionLoss, bits_per_byte, perplexity, position_losses
from decaylab.evaluation.plots import plot_median_decay
from decaylab.evaluation.run_dir import open_run

__all__ = [
    "evaluate",
    "decay_statistics",
    "summarize_decays",
    "half_life",
    "per_layer",
    "pooled",
    "plot_median_decay",
    "position_losses",
    "PositionLoss",
    "perplexity",
    "bits_per_byte",
    "length_extrapolation",
    "open_run",
]
