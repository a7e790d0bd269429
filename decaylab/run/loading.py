"""Open a run directory for evaluation, generation or export: its config and the model to use.

The model is the final one (``RUN_DIR/model``) unless a checkpoint is asked for: ``"latest"`` (the newest
``checkpoints/step-N``), a checkpoint name (``"step-200"``) or a path. A run without a final model is
unfinished; it is an error (naming ``--checkpoint latest``) rather than a silent fallback, so an eval.json
never describes a half-trained model by accident.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from decaylab.config import load_json
from decaylab.model import DecayLM
from decaylab.model.checkpoint import UnreadableModel
from decaylab.run.checkpoint import load_checkpoint
from decaylab.run.config import RunConfig
from decaylab.rundir import CHECKPOINT_NAME, CHECKPOINTS, CONFIG, MANIFEST, MODEL, check_run_dir, list_checkpoints


@dataclass
class LoadedRun:
    run_dir: Path
    config: RunConfig
    model: torch.nn.Module
    model_source: str  # "model" or "checkpoints/step-N", relative to run_dir
    step: int | None  # checkpoint step, None for the final model


def resolve_device(device: str | torch.device | None) -> torch.device:
    """None -> cuda when available, else cpu; a named device must exist."""
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {str(device)!r} asked for, but CUDA is not available here; use --device cpu")
    return device


def load_run_config(run_dir: Path) -> RunConfig:
    return load_json(RunConfig, run_dir / CONFIG)


def locate_model(run_dir: Path, checkpoint: str | None) -> tuple[Path, str, int | None]:
    """``(folder to load, source relative to run_dir, step or None)`` for the requested model."""
    if checkpoint is None:
        if (run_dir / MODEL).is_dir():
            return run_dir / MODEL, MODEL, None
        ckpts = list_checkpoints(run_dir)
        if ckpts:
            step, _ = ckpts[-1]
            raise FileNotFoundError(
                f"{run_dir} has no final model (training has not finished; newest checkpoint: step {step}). "
                "Pass --checkpoint latest to evaluate that checkpoint, or finish training with "
                "`decaylab train --resume`"
            )
        raise FileNotFoundError(
            f"{run_dir} has no model/ and no checkpoints/: train it first with `decaylab train` "
            "(or pass --checkpoint PATH to a checkpoint elsewhere)"
        )
    if checkpoint == "latest":
        ckpts = list_checkpoints(run_dir)
        if not ckpts:
            raise FileNotFoundError(
                f"{run_dir}/checkpoints holds no step-N checkpoint; train first (with train.ckpt_every > 0 to "
                "keep checkpoints during training)"
            )
        step, path = ckpts[-1]
        return path, f"{CHECKPOINTS}/{path.name}", step
    path = Path(checkpoint)
    if not path.is_absolute() and not path.exists():
        path = run_dir / CHECKPOINTS / checkpoint
    if not path.is_dir():
        names = ", ".join(p.name for _, p in list_checkpoints(run_dir)) or "none"
        raise FileNotFoundError(
            f"checkpoint {checkpoint!r} not found (looked for {path}); available in {run_dir}/checkpoints: "
            f"{names}; or pass --checkpoint latest"
        )
    try:
        source = str(path.resolve().relative_to(run_dir.resolve()))
    except ValueError:
        source = str(path)
    match = CHECKPOINT_NAME.match(path.name)
    return path, source, int(match.group(1)) if match else None


def load_model(path: Path, model_config: Any, device: torch.device) -> torch.nn.Module:
    """Load a final model folder or a checkpoint (built from ``model_config``) onto ``device``, in eval mode."""
    try:
        model = _from_checkpoint(path, model_config) if (path / MANIFEST).exists() else _from_pretrained(path)
    except UnreadableModel as e:  # the final model: a run's checkpoints hold the same weights
        raise ValueError(
            f"cannot load the model in {path}: {e.problem}. Pass --checkpoint latest to use the newest checkpoint "
            "(the final model is the last one), or retrain"
        ) from None
    except (FileNotFoundError, ValueError) as e:
        raise type(e)(f"cannot load the model in {path}: {e}") from None
    except Exception as e:  # safetensors / JSON / shape errors all mean the same to the user
        raise ValueError(
            f"cannot load the model in {path} ({type(e).__name__}: {e}); the files are corrupt or incomplete. "
            "Retrain, or pass --checkpoint latest (or --checkpoint step-N) to use a checkpoint"
        ) from None
    return model.to(device).eval()


def _from_pretrained(path: Path) -> torch.nn.Module:
    return DecayLM.from_pretrained(path)


def _from_checkpoint(path: Path, model_config: Any) -> torch.nn.Module:
    parts = load_checkpoint(path)  # verifies every file against the manifest first
    if "model" not in parts:
        raise ValueError(f"checkpoint {path} has no model part (found: {', '.join(parts) or 'nothing'})")
    model = DecayLM(model_config)
    model.load_state_dict(parts["model"])
    return model


def open_run(run_dir: str | Path, *, checkpoint: str | None = None, device=None) -> LoadedRun:
    """Check ``run_dir``, read its config and load the requested model (see the module docstring)."""
    run_dir = check_run_dir(run_dir)
    config = load_run_config(run_dir)
    path, source, step = locate_model(run_dir, checkpoint)
    model = load_model(path, config.model, resolve_device(device))
    return LoadedRun(run_dir=run_dir, config=config, model=model, model_source=source, step=step)
