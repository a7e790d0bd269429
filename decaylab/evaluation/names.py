"""Names shared by the evaluation and its command line, in a module free of torch (``--help`` stays fast)."""

from __future__ import annotations

DEFAULT_DECAY_TOKENS = 2048  # the paper's decay analysis used the first 2,048 tokens of one text
SPLIT_KEYS = {"valid": "val", "test": "test"}  # split name -> eval.json key prefix


def output_names(step: int | None) -> tuple[str, str]:
    """(eval json, decay plot) file names for the final model (step None) or a checkpoint."""
    if step is None:
        return "eval.json", "decay_median.png"
    return f"eval-step-{step}.json", f"decay_median-step-{step}.png"
