"""Checkpoints that survive ``kill -9`` at any moment.

A checkpoint is a directory ``checkpoints/step-N/`` holding one ``.pt`` file per part (model, optimizer,
trainer state) and ``manifest.json`` with each file's size and SHA-256. It is written to a hidden temporary
directory first and renamed into place only when complete, so a ``step-N`` directory either exists whole or
not at all. A file damaged afterwards (a truncated copy, a full disk) fails the manifest check; loading then
names the bad checkpoint and falls back to the previous one.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
from pathlib import Path
from typing import Any

import torch

from decaylab.files import fsync_dir
from decaylab.rundir import CHECKPOINTS, MANIFEST, checkpoint_name, list_checkpoints

_TMP_PREFIX = ".tmp-"


class CorruptCheckpoint(ValueError):
    """A checkpoint whose files do not match its manifest or cannot be read."""


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def save_checkpoint(run_dir: str | Path, step: int, parts: dict[str, Any], keep: int) -> Path:
    """Write ``parts`` (name -> picklable state) as ``checkpoints/step-{step}``; keep the newest ``keep``."""
    root = Path(run_dir) / CHECKPOINTS
    root.mkdir(parents=True, exist_ok=True)
    final = root / checkpoint_name(step)
    tmp = root / f"{_TMP_PREFIX}step-{step}.{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    manifest: dict[str, Any] = {"step": step, "files": {}}
    for name, state in parts.items():
        path = tmp / f"{name}.pt"
        with open(path, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        manifest["files"][path.name] = {"bytes": path.stat().st_size, "sha256": _sha256(path)}
    (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n")
    fsync_dir(tmp)
    if final.exists():  # the same step saved again (a run resumed from it): swap, never leave a gap
        old = root / f"{_TMP_PREFIX}old-step-{step}.{os.getpid()}"
        os.rename(final, old)
        os.rename(tmp, final)
        shutil.rmtree(old)
    else:
        os.rename(tmp, final)
    fsync_dir(root)
    _prune(root, keep)
    return final


def _prune(root: Path, keep: int) -> None:
    complete = list_checkpoints(root.parent)
    for _, path in complete[: max(0, len(complete) - keep)]:
        shutil.rmtree(path, ignore_errors=True)
    # Leftovers of writes interrupted by a crash; this process is the only writer.
    for child in root.iterdir():
        if child.name.startswith(_TMP_PREFIX) and not child.name.endswith(f".{os.getpid()}"):
            shutil.rmtree(child, ignore_errors=True)


def verify_checkpoint(path: str | Path) -> None:
    """Raise CorruptCheckpoint naming the file when ``path`` does not match its manifest."""
    path = Path(path)
    manifest_path = path / MANIFEST
    try:
        manifest = json.loads(manifest_path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise CorruptCheckpoint(f"checkpoint {path} is corrupt: cannot read {manifest_path.name} ({e})") from None
    for name, meta in manifest["files"].items():
        file = path / name
        if not file.exists():
            raise CorruptCheckpoint(f"checkpoint {path} is corrupt: {name} is missing")
        size = file.stat().st_size
        if size != meta["bytes"]:
            raise CorruptCheckpoint(f"checkpoint {path} is corrupt: {name} has {size} bytes, expected {meta['bytes']}")
        if _sha256(file) != meta["sha256"]:
            raise CorruptCheckpoint(f"checkpoint {path} is corrupt: {name} does not match its SHA-256")


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Verify and load every part of one checkpoint directory."""
    path = Path(path)
    verify_checkpoint(path)
    parts = {}
    for file in sorted(path.glob("*.pt")):
        try:
            parts[file.stem] = torch.load(file, map_location=map_location, weights_only=True)
        except Exception as e:  # noqa: BLE001 - any unpickling failure means the same thing to the user
            raise CorruptCheckpoint(f"checkpoint {path} is corrupt: cannot load {file.name} ({e})") from None
    return parts


def load_latest(run_dir: str | Path, map_location: str | torch.device = "cpu") -> tuple[int, dict[str, Any]] | None:
    """The newest readable checkpoint as (step, parts), or None when the run has none.

    A corrupt checkpoint is reported on stderr and the previous one is tried; when every checkpoint is corrupt
    the error names them all.
    """
    errors = []
    for step, path in reversed(list_checkpoints(run_dir)):
        try:
            parts = load_checkpoint(path, map_location)
        except CorruptCheckpoint as e:
            errors.append(str(e))
            print(f"warning: {e}; trying the previous checkpoint", file=sys.stderr)
            continue
        return step, parts
    if errors:
        raise CorruptCheckpoint(
            "no readable checkpoint: " + "; ".join(errors) + ". Delete the run directory to start over, or restore "
            "the checkpoint files"
        )
    return None


__all__ = [
    "CorruptCheckpoint",
    "list_checkpoints",
    "save_checkpoint",
    "verify_checkpoint",
    "load_checkpoint",
    "load_latest",
]
