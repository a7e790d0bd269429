"""Starting and resuming a run: refuse to clobber other runs, match configs on resume.

Rules: a fresh run needs a missing or empty directory; ``--resume`` needs a directory holding a run
(``config.json``) and starts from its stored configuration. Only the settings in ``RESUMABLE`` may change on
resume (how long to train, what to log and keep); a change to any other is refused by name. On resume,
``metrics.jsonl`` is cut back to the steps the restored checkpoint covers, so the log never holds duplicates
or a half-written line from a killed process.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from decaylab.config import flatten, load_json, to_dict, with_overrides
from decaylab.rundir import CONFIG, SUMMARY, write_json

# Settings a resumed run may change: they decide how long it trains and what it logs, evaluates and keeps, not
# what the steps already taken computed. (A new train.max_steps stretches the learning-rate schedule from the
# step resumed.)
RESUMABLE = (
    "train.max_steps", "train.log_every", "train.eval_every", "train.eval_batches", "train.eval_batch_size",
    "train.ckpt_every", "train.keep_checkpoints", "train.progress", "train.tensorboard", "data.cache_dir",
)  # fmt: skip


def check_fresh(run_dir: Path) -> None:
    """A new run may only go into a missing or empty directory."""
    if not run_dir.exists():
        return
    if not run_dir.is_dir():
        raise FileExistsError(f"--out {run_dir} is a file; choose a directory path for the run")
    if (run_dir / CONFIG).exists():
        raise FileExistsError(
            f"{run_dir} already holds a run; continue it with --resume, or choose a new --out directory "
            "(nothing is overwritten)"
        )
    if any(run_dir.iterdir()):
        raise FileExistsError(
            f"{run_dir} is not empty and holds no run; choose a new --out directory (nothing is overwritten)"
        )


def load_stored_config(run_dir: Path, config_cls: type) -> Any:
    """The configuration of the run in ``run_dir`` (for ``--resume``)."""
    if not (run_dir / CONFIG).is_file():
        what = "does not exist" if not run_dir.exists() else "holds no run (no config.json)"
        raise FileNotFoundError(
            f"--resume: {run_dir} {what}, so there is nothing to resume; start a new run without --resume"
        )
    return load_json(config_cls, run_dir / CONFIG)


def resume_config(stored: Any, overrides: dict[str, Any]) -> Any:
    """The stored configuration with ``--set`` overrides applied (``--resume`` without --preset/--config)."""
    return with_overrides(stored, overrides)  # unknown keys and bad values get the usual errors


def resume_changes(run_dir: Path, stored: Any, requested: Any) -> list[str]:
    """``["train.max_steps: 400 -> 800", ...]``: what ``requested`` changes from the stored run, all in
    ``RESUMABLE``; a change to any other setting is refused, naming it."""
    a, b = flatten(to_dict(stored)), flatten(to_dict(requested))
    changed = [k for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]
    refused = [k for k in changed if k not in RESUMABLE]
    if refused:
        shown = "; ".join(f"{k}: {a.get(k)!r} (run) != {b.get(k)!r} (asked)" for k in refused[:5])
        more = f"; and {len(refused) - 5} more" if len(refused) > 5 else ""
        raise FileExistsError(
            f"{run_dir} holds a run with a different configuration ({shown}{more}): "
            f"{', '.join(refused)} cannot change when resuming, the checkpoint was trained with the stored value. "
            f"Settings that may change on resume: {', '.join(RESUMABLE)}. Resume it with its own settings "
            "(--resume --out DIR), or train the new configuration into a new --out"
        )
    return [f"{k}: {a.get(k)!r} -> {b.get(k)!r}" for k in changed]


def finished_summary(run_dir: Path, max_steps: int) -> dict[str, Any] | None:
    """The stored summary when the run in ``run_dir`` has finished ``max_steps`` steps (nothing to resume)."""
    path = run_dir / SUMMARY
    if not path.is_file():
        return None
    summary = json.loads(path.read_text())
    return summary if summary.get("steps", 0) >= max_steps else None


def write_config(run_dir: Path, cfg: Any) -> None:
    write_json(run_dir / CONFIG, to_dict(cfg), indent=2, sort_keys=True)
