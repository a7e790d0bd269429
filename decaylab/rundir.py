"""The run directory: what each file is called, which checkpoints it holds, and its metrics log.

A run directory, written by ``decaylab train`` and read by evaluation, generation, export, sweeps and reports::

    config.json            the resolved RunConfig                       (written first: the run has started)
    tokenizer.json         the run's tokenizer
    metrics.jsonl          one JSON object per logged step
    checkpoints/step-N/    resumable checkpoints (decaylab.run.checkpoint)
    model/                 the final model (config.json + weights)
    summary.json           written last by training: the run has finished
    eval.json              ``decaylab eval`` of the final model (eval-step-N.json for a checkpoint)
    lm_eval.json           lm-evaluation-harness results (lm_eval-step-N.json for a checkpoint)
    decay_median.png       the decay plot of the evaluation
    tensorboard/           with train.tensorboard

Nothing here imports torch: command-line modules and the sweep's bookkeeping use it freely.
"""

from __future__ import annotations

import json
import re
import warnings
from pathlib import Path
from typing import Any

from decaylab.files import atomic_write_text

CONFIG = "config.json"
TOKENIZER = "tokenizer.json"
METRICS = "metrics.jsonl"
SUMMARY = "summary.json"
EVAL = "eval.json"
MODEL = "model"
CHECKPOINTS = "checkpoints"
MANIFEST = "manifest.json"  # inside each checkpoints/step-N/
TENSORBOARD = "tensorboard"

CHECKPOINT_NAME = re.compile(r"^step-(\d+)$")


def checkpoint_name(step: int) -> str:
    return f"step-{step}"


def eval_names(step: int | None) -> tuple[str, str]:
    """(eval json, decay plot) file names for the final model (step None) or a checkpoint."""
    if step is None:
        return EVAL, "decay_median.png"
    return f"eval-step-{step}.json", f"decay_median-step-{step}.png"


def lm_eval_name(step: int | None) -> str:
    """The lm-evaluation-harness results file for the final model (step None) or a checkpoint."""
    return "lm_eval.json" if step is None else f"lm_eval-step-{step}.json"


def check_run_dir(run_dir: str | Path) -> Path:
    """``run_dir`` as a Path when it holds a run (a config.json); otherwise an error saying what it is."""
    run_dir = Path(run_dir)
    if not run_dir.exists():
        raise FileNotFoundError(f"run directory {run_dir} does not exist; check the path or train one first")
    if not run_dir.is_dir():
        raise ValueError(f"{run_dir} is a file, not a run directory")
    if not (run_dir / CONFIG).is_file():
        raise FileNotFoundError(
            f"{run_dir} has no {CONFIG}, so it is not a decaylab run directory; pass the folder that "
            "`decaylab train` wrote"
        )
    return run_dir


def has_started(run_dir: Path) -> bool:
    """True when training wrote the run's config.json: resume it rather than start afresh."""
    return (run_dir / CONFIG).is_file()


def has_trained(run_dir: Path) -> bool:
    """True when training finished (summary.json is written last)."""
    return (run_dir / SUMMARY).is_file()


def run_is_done(run_dir: Path, evaluate: bool) -> bool:
    """Trained, and evaluated when ``evaluate``."""
    return has_trained(run_dir) and (not evaluate or (run_dir / EVAL).is_file())


def list_checkpoints(run_dir: str | Path) -> list[tuple[int, Path]]:
    """Complete checkpoints as (step, path), oldest first; temporary directories are ignored."""
    root = Path(run_dir) / CHECKPOINTS
    if not root.is_dir():
        return []
    found = []
    for child in root.iterdir():
        match = CHECKPOINT_NAME.match(child.name)
        if match and child.is_dir():
            found.append((int(match.group(1)), child))
    return sorted(found)


def write_json(path: Path, data: Any, **dumps: Any) -> None:
    """``data`` as a JSON file (atomically), ending in a newline."""
    atomic_write_text(path, json.dumps(data, **dumps) + "\n")


# -- metrics.jsonl -------------------------------------------------------------------------------------------


def read_metrics_file(path: str | Path) -> list[dict[str, Any]]:
    """The records of a metrics.jsonl file in order ([] when it does not exist).

    A line that is not a JSON object is skipped with a warning naming the file and line: the usual one is the
    torn last line of a process killed while writing it, and everything before it is still good.
    """
    path = Path(path)
    if not path.is_file():
        return []
    records, bad = [], []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            record = None
        if isinstance(record, dict):
            records.append(record)
        else:
            bad.append(number)
    if bad:
        lines = ", ".join(map(str, bad[:5])) + (f" and {len(bad) - 5} more" if len(bad) > 5 else "")
        warnings.warn(f"{path}: skipped {len(bad)} unreadable line(s) (line {lines})", stacklevel=2)
    return records


def read_metrics(run_dir: str | Path) -> list[dict[str, Any]]:
    """The records of ``RUN_DIR/metrics.jsonl`` in order (see ``read_metrics_file``)."""
    return read_metrics_file(Path(run_dir) / METRICS)


def truncate_metrics(run_dir: Path, last_step: int) -> None:
    """Keep the metrics lines of steps <= ``last_step``; drop later ones and any unreadable (half-written) line."""
    path = run_dir / METRICS
    if not path.exists():
        return
    with warnings.catch_warnings():  # a torn line is what a resume expects to find after a crash, and drops
        warnings.simplefilter("ignore")
        kept = [r for r in read_metrics_file(path) if r.get("step", last_step + 1) <= last_step]
    atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in kept))


class MetricsLog:
    """Appends one JSON line per logged step; each line is flushed so a crash loses at most the line being written."""

    def __init__(self, run_dir: Path, tensorboard: bool):
        self._file = open(run_dir / METRICS, "a")
        self._writer = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                self._file.close()
                raise ValueError(
                    "train.tensorboard=true needs the tensorboard package: pip install tensorboard "
                    "(or pip install 'decaylab[tensorboard]'), or set train.tensorboard=false"
                ) from None
            self._writer = SummaryWriter(log_dir=str(run_dir / TENSORBOARD))

    def write(self, record: dict[str, Any]) -> None:
        self._file.write(json.dumps(record) + "\n")
        self._file.flush()
        if self._writer is not None:
            for key, value in record.items():
                if key != "step" and isinstance(value, (int, float)):
                    self._writer.add_scalar(key, value, record["step"])

    def close(self) -> None:
        self._file.close()
        if self._writer is not None:
            self._writer.close()
