"""Evaluation of trained runs: perplexity, bits per byte, MQAR accuracy, length extrapolation, decay statistics.

``evaluate(run_dir)`` does everything and writes ``RUN_DIR/eval.json`` plus ``decay_median.png``; the pieces
are public for sweeps and reports: ``decay_statistics(model, input_ids)``, ``plot_median_decay({label:
stats}, path)``, ``position_losses(model, batches)`` and ``length_extrapolation(...)``.
"""

from decaylab.lazy import lazy_exports

# Names resolve on first use, so importing one submodule (a command-line module, say) does not import
# torch and the rest of the package.
_EXPORTS = {
    "evaluate": "decaylab.evaluation.evaluate",
    "decay_statistics": "decaylab.evaluation.decay_stats",
    "summarize_decays": "decaylab.evaluation.decay_stats",
    "half_life": "decaylab.evaluation.decay_stats",
    "per_layer": "decaylab.evaluation.decay_stats",
    "pooled": "decaylab.evaluation.decay_stats",
    "plot_median_decay": "decaylab.evaluation.plots",
    "position_losses": "decaylab.evaluation.perplexity",
    "PositionLoss": "decaylab.evaluation.perplexity",
    "perplexity": "decaylab.evaluation.perplexity",
    "bits_per_byte": "decaylab.evaluation.perplexity",
    "length_extrapolation": "decaylab.evaluation.extrapolation",
    "open_run": "decaylab.run.loading",
}
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
__all__ = list(_EXPORTS)
