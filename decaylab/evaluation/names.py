"""Settings shared by the evaluation and its command line, in a module free of torch (``--help`` stays fast).

The names of the files an evaluation writes are in ``decaylab.rundir`` (``eval_names``)."""

from __future__ import annotations

DEFAULT_DECAY_TOKENS = 2048  # the paper's decay analysis used the first 2,048 tokens of one text
SPLIT_KEYS = {"valid": "val", "test": "test"}  # split name -> eval.json key prefix
# Precisions evaluate() scores in: full fp32, bf16 autocast as a GPU run trains, or auto: bf16 on a CUDA device and
# fp32 elsewhere (a CPU gains nothing from bf16 and rounds more).
PRECISIONS = ("fp32", "bf16", "auto")
