"""What the training loop needs besides the loop: random-number states, progress lines, the final model file.

A checkpoint holds every generator's state (``rng_state``), so a resumed run continues the same random streams;
``seed_all`` seeds them all before the model is built.
"""

from __future__ import annotations

import random
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

from decaylab.run.config import RunConfig
from decaylab.rundir import MODEL


def rng_state() -> dict[str, Any]:
    state = {
        "torch": torch.get_rng_state(),
        "numpy": np.random.get_state()[1].tolist(),
        "numpy_pos": int(np.random.get_state()[2]),
        "python": random.getstate(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(("MT19937", np.array(state["numpy"], dtype=np.uint32), state["numpy_pos"], 0, 0.0))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def seed_all(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def save_final_model(model: torch.nn.Module, cfg: RunConfig, state: dict | None, run_dir: Path) -> None:
    """``RUN_DIR/model`` via save_pretrained, written beside and renamed into place.

    ``state`` is the gathered full state dict when the model is sharded (FSDP), else None.
    """
    import shutil

    from decaylab.model import DecayLM

    if state is not None:
        model = DecayLM(cfg.model)
        model.load_state_dict(state)
    tmp = run_dir / ".tmp-model"
    if tmp.exists():
        shutil.rmtree(tmp)
    model.save_pretrained(tmp)
    final = run_dir / MODEL
    if final.exists():
        shutil.rmtree(final)
    tmp.rename(final)


def progress_bar(train, start: int, enabled: bool):
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=train.max_steps, initial=start, unit="step", dynamic_ncols=True, desc="train")


def print_progress(record: dict[str, Any], max_steps: int, elapsed: float, steps_done: int) -> None:
    eta = elapsed / max(steps_done, 1) * (max_steps - record["step"])
    val = f" val_loss {record['val_loss']:.4f}" if "val_loss" in record else ""
    print(
        f"step {record['step']}/{max_steps} loss {record['loss']:.4f}{val} lr {record['lr']:.2e} "
        f"{record['tokens_per_s']:,.0f} tok/s eta {eta / 60:.1f} min",
        file=sys.stderr,
        flush=True,
    )
