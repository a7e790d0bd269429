"""``export_hf``: a decaylab model as a Hugging Face transformers folder.

The folder holds ``config.json`` (``model_type: decaylab``, the full ModelConfig under ``decaylab``, ``auto_map``),
``model.safetensors``, ``generation_config.json``, the tokenizer (``tokenizer.json``, ``tokenizer_config.json``)
and two short remote-code files, ``configuration_decaylab.py`` and ``modeling_decaylab.py``. The remote code
imports the installed decaylab package rather than carrying a copy of the model: the folder stays small and always
runs the code that trained it. Without decaylab installed, transformers names the missing package (``pip install
decaylab``); with it, ``AutoModelForCausalLM.from_pretrained(DIR, trust_remote_code=True)`` works in any process,
and without ``trust_remote_code`` once ``import decaylab`` has registered the classes.

Everything is checked and built before anything is written; the folder is written under a temporary name and
renamed into place, and an existing folder is never touched.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import torch

from decaylab.model.checkpoint import WEIGHTS_NAME

REMOTE_CODE = {  # file -> (decaylab.hf module, class)
    "configuration_decaylab.py": ("configuration", "DecayLabConfig"),
    "modeling_decaylab.py": ("modeling", "DecayLabForCausalLM"),
}
AUTO_MAP = {
    "AutoConfig": "configuration_decaylab.DecayLabConfig",
    "AutoModelForCausalLM": "modeling_decaylab.DecayLabForCausalLM",
}
REMOTE_CODE_TEMPLATE = '''"""Remote code of a decaylab model: the class comes from the installed decaylab package.

Without it, `pip install decaylab` (or the decaylab repository).
"""

from decaylab.hf.{module} import {name}  # noqa: F401
'''


def load_source(source: str | Path, checkpoint: str | None = None) -> tuple[Any, Path | None]:
    """``(DecayLM on the CPU, tokenizer file or None)`` from a run directory or a ``save_pretrained`` folder."""
    from decaylab.run.loading import load_model, load_run_config, locate_model
    from decaylab.rundir import MANIFEST, TOKENIZER, check_run_dir

    source = Path(source)
    if (source / MANIFEST).is_file():
        raise ValueError(f"{source} is a training checkpoint; pass its run directory and --checkpoint {source.name}")
    if (source / WEIGHTS_NAME).is_file():  # a model folder (DecayLM.save_pretrained, or an exported one)
        if checkpoint is not None:
            raise ValueError(f"{source} is a model folder, not a run directory; --checkpoint applies to runs only")
        tokenizer = source / TOKENIZER  # an exported folder carries the run's tokenizer under the same name
        return load_model(source, None, torch.device("cpu")), tokenizer if tokenizer.is_file() else None
    run_dir = check_run_dir(source)
    config = load_run_config(run_dir)
    path, _, _ = locate_model(run_dir, checkpoint)
    tokenizer = run_dir / TOKENIZER
    return load_model(path, config.model, torch.device("cpu")), tokenizer if tokenizer.is_file() else None


def build_tokenizer(path: Path | None, vocab_size: int):
    from decaylab.data.tokenizer import load_tokenizer
    from decaylab.hf.tokenizer import to_transformers

    if path is None:
        raise FileNotFoundError("no tokenizer.json next to the model; pass --tokenizer FILE (the run's "
                                "tokenizer.json), or --no-tokenizer to export the model alone")
    return to_transformers(load_tokenizer(path), vocab_size)


def export_hf(source: str | Path, out: str | Path, *, checkpoint: str | None = None,
              tokenizer: str | Path | None = None, with_tokenizer: bool = True) -> Path:
    """Write the Hugging Face folder ``out`` (which must not exist) for a run directory or a model folder.

    Args:
        source: a run directory (its final model, or ``checkpoint``) or a ``DecayLM.save_pretrained`` folder.
        out: the folder to create.
        checkpoint: for runs: "latest", "step-N" or a path, instead of the final model.
        tokenizer: a tokenizer file to use instead of the one found beside the model.
        with_tokenizer: False exports the model alone.
    """
    from transformers import GenerationConfig

    from decaylab.hf.modeling import DecayLabForCausalLM

    out = Path(out)
    if out.exists():
        raise FileExistsError(f"{out} already exists; choose a new --out folder (nothing was written)")
    model, found = load_source(source, checkpoint)
    hf_tokenizer = None
    if with_tokenizer:
        hf_tokenizer = build_tokenizer(Path(tokenizer) if tokenizer is not None else found, model.cfg.vocab_size)
    special = {}
    if hf_tokenizer is not None:
        special = dict(bos_token_id=hf_tokenizer.bos_token_id, eos_token_id=hf_tokenizer.eos_token_id,
                       pad_token_id=hf_tokenizer.pad_token_id)
    hf_model = DecayLabForCausalLM.from_decaylm(model, auto_map=AUTO_MAP, **special)
    hf_model.generation_config = GenerationConfig(**special)

    out.parent.mkdir(parents=True, exist_ok=True)
    staging = out.parent / f".{out.name}.partial-{os.getpid()}"
    if staging.exists():  # left by an export of this process id that was killed
        shutil.rmtree(staging)
    staging.mkdir()
    try:
        hf_model.save_pretrained(staging)
        if hf_tokenizer is not None:
            hf_tokenizer.save_pretrained(staging)
        for filename, (module, name) in REMOTE_CODE.items():
            (staging / filename).write_text(REMOTE_CODE_TEMPLATE.format(module=module, name=name))
        if out.exists():  # created while we were writing
            raise FileExistsError(f"{out} appeared during the export; choose a new --out folder")
        staging.rename(out)
    finally:
        if staging.exists():
            shutil.rmtree(staging)
    return out
