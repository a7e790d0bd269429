"""Checkpoints as a directory: ``config.json`` (the ModelConfig) + ``model.safetensors`` (the weights).

A Hugging Face folder written by ``decaylab export --format hf`` loads too: its config.json nests the ModelConfig
under ``decaylab`` (``model_type: decaylab``) and its weight names carry the wrapper's ``model.`` prefix.

Writes go to temporary files that are renamed into place, so an interrupted save never leaves a half-written
checkpoint; an existing checkpoint is only replaced with ``overwrite=True``. Loading checks that the weights match
the config (names and shapes) and says what to do when they do not.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch

from decaylab.config import from_dict, to_dict
from decaylab.files import as_if_opened
from decaylab.model.config import ModelConfig

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
HF_MODEL_TYPE, HF_PREFIX = "decaylab", "model."  # decaylab.hf: config.json's model_type, weight-name prefix


class UnreadableModel(ValueError):
    """Saved model files that are corrupt or inconsistent. ``problem`` says what is wrong; the message adds the
    remedy for a model saved on its own, which a caller with a better one (a run's checkpoints) replaces."""

    def __init__(self, problem: str, remedy: str = "save the model again"):
        super().__init__(f"{problem}; {remedy}")
        self.problem = problem


def save_pretrained(model, directory: str | Path, overwrite: bool = False) -> Path:
    from safetensors.torch import save_file

    directory = Path(directory)
    targets = [directory / CONFIG_NAME, directory / WEIGHTS_NAME]
    existing = [p for p in targets if p.exists()]
    if existing and not overwrite:
        raise FileExistsError(
            f"{existing[0]} already exists; pass overwrite=True to replace the checkpoint or choose a new directory"
        )
    directory.mkdir(parents=True, exist_ok=True)
    tensors = {name: t.detach().contiguous().cpu() for name, t in model.state_dict().items()}
    tmp_weights, tmp_config = directory / (WEIGHTS_NAME + ".tmp"), directory / (CONFIG_NAME + ".tmp")
    save_file(tensors, str(tmp_weights), metadata={"format": "pt"})
    as_if_opened(tmp_weights)  # safetensors creates its files readable by their owner only
    tmp_config.write_text(json.dumps(to_dict(model.cfg), indent=2, sort_keys=True) + "\n")
    os.replace(tmp_weights, directory / WEIGHTS_NAME)
    os.replace(tmp_config, directory / CONFIG_NAME)
    return directory


def load_config(directory: str | Path) -> ModelConfig:
    path = Path(directory) / CONFIG_NAME
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing; a checkpoint directory holds {CONFIG_NAME} and {WEIGHTS_NAME} "
                                f"(written by DecayLM.save_pretrained)")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise UnreadableModel(f"{path} is not valid JSON ({e})", "restore it or save the model again") from None
    if isinstance(data, dict) and data.get("model_type") == HF_MODEL_TYPE:
        data = data.get("decaylab") or {}
    try:
        return from_dict(ModelConfig, data)
    except ValueError as e:
        raise ValueError(f"{path} does not describe a valid model: {e}") from None


def load_pretrained(cls, directory: str | Path, map_location="cpu"):
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    directory = Path(directory)
    if not directory.is_dir():
        raise FileNotFoundError(f"checkpoint directory {directory} does not exist")
    cfg = load_config(directory)
    weights = directory / WEIGHTS_NAME
    if not weights.exists():
        raise FileNotFoundError(f"{weights} is missing; save the model again with DecayLM.save_pretrained")
    try:
        state = load_file(str(weights), device=str(map_location))
    except (SafetensorError, OSError, ValueError) as e:
        raise UnreadableModel(f"{weights} is not a readable safetensors file ({e}); it may be truncated or "
                              "corrupt") from None
    if state and all(name.startswith(HF_PREFIX) for name in state):  # an exported Hugging Face folder
        state = {name[len(HF_PREFIX) :]: t for name, t in state.items()}
    with torch.device("meta"):
        model = cls(cfg)
    expected = {name: tuple(t.shape) for name, t in model.state_dict().items()}
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = sorted(n for n in set(expected) & set(state) if tuple(state[n].shape) != expected[n])
    if missing or unexpected or wrong:
        parts = []
        if missing:
            parts.append(f"missing {missing[:3]}")
        if unexpected:
            parts.append(f"unexpected {unexpected[:3]}")
        if wrong:
            n = wrong[0]
            parts.append(f"shape of {n}: file {tuple(state[n].shape)} vs config {expected[n]}")
        raise ValueError(f"{weights} does not match {directory / CONFIG_NAME} ({'; '.join(parts)}); the config must be "
                         f"the one the weights were saved with")
    # assign=True swaps in new Parameter objects; carry the no-weight-decay tags over to them.
    tagged = [name for name, p in model.named_parameters() if getattr(p, "_no_weight_decay", False)]
    model.load_state_dict(state, assign=True)
    params = dict(model.named_parameters())
    for name in tagged:
        params[name]._no_weight_decay = True
    return model
