"""What the sweep runner calls to resolve, train and evaluate one point: a small, swappable bundle.

The default backend is decaylab's own training and evaluation (``decaylab.training.train`` and
``decaylab.evaluation.evaluate``). Tests, and users wrapping another trainer, pass their own ``RunBackend``
to ``run_sweep``. Its functions must be importable module-level functions, because each point runs in a
fresh worker process that receives them by reference.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping


@dataclass(frozen=True)
class RunBackend:
    resolve: Callable[[str, Mapping[str, Any]], dict]
    """(run preset, dotted overrides) -> the resolved run config as a nested dict; ValueError on bad input."""
    train: Callable[[dict, Path, bool], Any]
    """(resolved config, run directory, resume) -> summary; writes summary.json when done. ``resume`` is True
    when the directory already holds the run's config.json (killed before, with or without a checkpoint)."""
    evaluate: Callable[..., Any] | None = None
    """(run directory, **spec [evaluation] options) -> eval results; writes eval.json. None: only train."""
    train_group: Callable[[list[tuple[dict, Path, bool]]], list[Any]] | None = None
    """[(config, run directory, resume)] -> per run its summary or the exception that stopped it, the runs trained
    together in one process (``--runs-per-worker``). None: a group's runs are trained one after another."""


def resolve_run_config(preset: str, overrides: Mapping[str, Any]) -> dict:
    from decaylab.config import to_dict
    from decaylab.training import resolve_run_config as resolve

    return to_dict(resolve(preset, None, dict(overrides)))


def train_run(config: dict, run_dir: Path, resume: bool) -> Any:
    from decaylab.config import from_dict
    from decaylab.run.config import RunConfig
    from decaylab.training import train

    return train(from_dict(RunConfig, config), run_dir, resume=resume)


def train_runs_together(runs: list[tuple[dict, Path, bool]]) -> list[Any]:
    from decaylab.config import from_dict
    from decaylab.run.config import RunConfig
    from decaylab.training.together import train_together

    return train_together([(from_dict(RunConfig, config), run_dir, resume) for config, run_dir, resume in runs])


def train_runs_stacked(runs: list[tuple[dict, Path, bool]]) -> list[Any]:
    """``train_runs_together`` with the runs that differ only in their seeds stacked as replicas of one model."""
    from decaylab.config import from_dict
    from decaylab.run.config import RunConfig
    from decaylab.training.together import train_together

    return train_together([(from_dict(RunConfig, config), run_dir, resume) for config, run_dir, resume in runs],
                          replicas=len(runs))


def evaluate_run(run_dir: Path, **options: Any) -> Any:
    from decaylab.evaluation import evaluate

    return evaluate(run_dir, **options)


def default_backend(stack_seeds: bool = False) -> RunBackend:
    """decaylab's training and evaluation; ``stack_seeds``: a worker's runs that differ only in their seeds train as
    replicas of one model (``decaylab.training.replicas``)."""
    return RunBackend(resolve=resolve_run_config, train=train_run, evaluate=evaluate_run,
                      train_group=train_runs_stacked if stack_seeds else train_runs_together)
