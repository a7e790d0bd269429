"""``evaluate(run_dir)``: every evaluation of a trained run, written to ``RUN_DIR/eval.json``.

eval.json holds (keys absent when they do not apply to the run):

- ``val_loss``, ``val_ppl``, ``test_loss``, ``test_ppl``: mean token loss (nats) and its exp over the split,
  in windows of the training context. For PTB a token is a word, so this is word-level perplexity.
- ``val_bpb``, ``test_bpb``: bits per UTF-8 byte (BPE corpora), comparable across tokenizers.
- ``mqar_accuracy``: fraction of MQAR queries answered exactly (MQAR runs, instead of perplexity); MQAR runs
  also get ``val_loss`` / ``val_ppl`` at the query positions of the whole valid split.
- ``extrapolation``: ``{"1": ppl, "2": ppl, ...}`` on test windows of f x the training context (lengths in
  ``extrapolation_context``), and ``loss_by_position``: ``[[bucket_start, mean loss], ...]`` for the longest.
- ``decay_stats``: per-layer statistics of lambda on a fixed text (see ``decay_stats``); the figure is
  ``decay_median.png``. Empty for the softmax baseline.
- ``model_source``, ``step``, ``seq_len``, ``corpus``, ``word_level``, ``eval_precision``, ``eval_time_s``.

Evaluating a checkpoint writes ``eval-step-N.json`` / ``decay_median-step-N.png`` instead, so the final
model's results are never replaced by those of an intermediate one.
"""

from __future__ import annotations

import contextlib
import functools
import json
import math
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import torch

from decaylab.evaluation.decay_stats import decay_statistics
from decaylab.evaluation.extrapolation import batch_size_for, batch_tokens_for, length_extrapolation
from decaylab.evaluation.names import DEFAULT_DECAY_TOKENS, PRECISIONS, SPLIT_KEYS
from decaylab.evaluation.perplexity import IGNORE_INDEX, PositionLoss, bits_per_byte, perplexity, position_losses
from decaylab.evaluation.plots import plot_median_decay
from decaylab.files import atomic_write_text
from decaylab.run.loading import LoadedRun, open_run
from decaylab.rundir import eval_names


def _silent(message: str) -> None:
    pass


def evaluate(
    run_dir: str | Path,
    *,
    splits: Sequence[str] = ("valid", "test"),
    extrapolation: Sequence[int] = (1, 2, 4, 8),
    decay_text: str | Path | None = None,
    device: str | torch.device | None = None,
    checkpoint: str | None = None,
    decay_tokens: int = DEFAULT_DECAY_TOKENS,
    max_tokens: int | None = None,
    precision: str = "fp32",
    log: Callable[[str], None] = _silent,
) -> dict[str, Any]:
    """Evaluate a run directory and write eval.json (atomically) and decay_median.png beside it.

    Args:
        run_dir: a directory written by ``decaylab train``.
        splits: which of "valid" and "test" to score at the training context.
        extrapolation: multiples of the training context for the length-extrapolation test (() skips it).
        decay_text: a text file for the decay statistics; default: the start of the valid split.
        device: "cpu", "cuda", ...; default cuda when available.
        checkpoint: None for the final model, "latest", "step-N" or a checkpoint path.
        decay_tokens: how many tokens of the decay text to run (the paper: 2,048).
        max_tokens: cap on scored tokens per split and length (quick looks; None scores everything).
        precision: "fp32" scores in full precision; "bf16" under bf16 autocast, the precision a GPU run trains in
            (cheaper where the fp32 forward is bound by its matmuls, as a small model's is on a GPU; the losses
            move by about bf16's rounding); "auto" is bf16 on a CUDA device and fp32 elsewhere. eval.json records
            the precision used. The decay statistics are always computed in fp32.
        log: called with one line per stage (progress messages).
    Returns:
        the eval.json contents.
    """
    unknown = [s for s in splits if s not in SPLIT_KEYS]
    if unknown:
        raise ValueError(f"unknown split(s) {unknown}; choose from {', '.join(SPLIT_KEYS)}")
    if precision not in PRECISIONS:
        raise ValueError(f"precision={precision!r}: choose from {', '.join(PRECISIONS)}")
    if decay_tokens < 1:
        raise ValueError(f"decay_tokens={decay_tokens} must be >= 1")
    if decay_text is not None and not Path(decay_text).is_file():
        raise FileNotFoundError(f"decay text file {decay_text} does not exist")
    started = time.perf_counter()
    run = open_run(run_dir, checkpoint=checkpoint, device=device)
    if precision == "auto":
        precision = "bf16" if next(run.model.parameters()).device.type == "cuda" else "fp32"
    if run.step is not None:
        log(f"evaluating checkpoint {run.model_source} (not the final model)")

    from decaylab.data import build_dataset

    data = build_dataset(run.config.data, run.run_dir)
    seq_len = run.config.train.seq_len
    result: dict[str, Any] = {
        "model_source": run.model_source,
        "step": run.step,
        "seq_len": seq_len,
        "corpus": run.config.data.corpus,
        "word_level": bool(getattr(data, "word_level", False)),
        "eval_precision": precision,
    }
    is_mqar = getattr(data, "task", "lm") == "mqar"
    with _autocast(run, precision):
        if is_mqar:
            result.update(_mqar(run, data, splits, log))
        else:
            result.update(_language_model(run, data, splits, extrapolation, max_tokens, log))
    input_ids = _decay_input(data, decay_text, decay_tokens, seq_len)
    log(f"decay statistics on {input_ids.numel()} tokens")
    try:
        result["decay_stats"] = decay_statistics(run.model, input_ids)
    except FloatingPointError as e:  # a diverged model: keep the other results
        log(f"warning: {e}")
        result["decay_stats"], result["decay_error"] = [], str(e)
    if decay_text is not None:
        result["decay_text"] = str(decay_text)
    else:
        result["decay_text"] = "valid sequence 0 (MQAR)" if is_mqar else f"valid[:{decay_tokens}]"
    result["decay_tokens"] = input_ids.numel()
    result["eval_time_s"] = round(time.perf_counter() - started, 3)
    _write_outputs(run, result)
    return json_safe(result)


def _autocast(run: LoadedRun, precision: str) -> contextlib.AbstractContextManager:
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(next(run.model.parameters()).device.type, dtype=torch.bfloat16)


def _language_model(run: LoadedRun, data, splits, factors, max_tokens, log) -> dict[str, Any]:
    out: dict[str, Any] = {}
    seq_len = run.config.train.seq_len
    scored: dict[str, PositionLoss] = {}
    batch_tokens = batch_tokens_for(next(run.model.parameters()).device, run.config.model.vocab_size)
    for split in splits:
        log(f"scoring the {split} split in windows of {seq_len} tokens")
        batches = data.eval_batches(split, seq_len, batch_size_for(seq_len, batch_tokens))
        scored[split] = result = position_losses(run.model, batches, max_tokens=max_tokens)
        key = SPLIT_KEYS[split]
        out[f"{key}_loss"] = result.mean_loss
        out[f"{key}_ppl"] = perplexity(result.mean_loss)
        out[f"{key}_tokens"] = result.tokens
        if not getattr(data, "word_level", False):  # bits per byte: the loss of the split spread over its bytes
            out[f"{key}_bpb"] = bits_per_byte(result.mean_loss, len(data.split(split)), data.bytes_in_split(split))
    if factors:
        log(f"length extrapolation at {', '.join(f'{f}x' for f in factors)} the training context")
        known = {seq_len: scored["test"]} if "test" in scored else {}
        windows = functools.partial(data.eval_batches, "test")
        out.update(
            length_extrapolation(
                run.model, windows, seq_len, factors, max_tokens=max_tokens, known=known,
                available_tokens=data.num_eval_targets("test"), batch_tokens=batch_tokens,
            )
        )
    return out


@torch.no_grad()
def _mqar(run: LoadedRun, data, splits, log) -> dict[str, Any]:
    """Recall accuracy over every query of the split's fixed sequences (argmax prediction == stored value), and
    the loss at the query positions of the whole valid split (val_loss / val_ppl, as for a language model)."""
    split = "test" if "test" in splits else "valid"
    out: dict[str, Any] = {}
    for name in dict.fromkeys(["valid", split] if "valid" in splits else [split]):
        log(f"MQAR {name} set: " + ("recall accuracy and " if name == split else "") + "loss at the queries")
        loss, correct, asked = _mqar_pass(run, data, name)
        if name == "valid":
            out.update(val_loss=loss, val_ppl=math.exp(min(loss, 700.0)))
        if name == split:
            out.update(mqar_accuracy=correct / asked, mqar_split=split, mqar_queries=asked)
    return out


def _mqar_pass(run: LoadedRun, data, split: str) -> tuple[float, int, int]:
    """(mean loss at the query positions, queries answered exactly, queries) over the split's fixed sequences."""
    seq_len = run.config.train.seq_len
    device = next(run.model.parameters()).device
    total, correct, asked = 0.0, 0, 0
    for x, y in data.eval_batches(split, seq_len, batch_size_for(seq_len)):
        y = y.to(device)
        mask = y != IGNORE_INDEX
        logits = run.model(x.to(device)).float()  # [B, T, vocab]
        total += float(torch.nn.functional.cross_entropy(logits[mask], y[mask], reduction="sum"))
        correct += int((logits.argmax(dim=-1)[mask] == y[mask]).sum())
        asked += int(mask.sum())
    if asked == 0:
        raise ValueError(f"the MQAR {split} set holds no queries; check data.mqar_num_queries")
    return total / asked, correct, asked


def _decay_input(data, decay_text, decay_tokens, seq_len) -> torch.Tensor:
    if decay_text is not None:
        ids = data.tokenizer.encode(Path(decay_text).read_text(encoding="utf-8"))[:decay_tokens]
        if not ids:
            raise ValueError(f"decay text file {decay_text} holds no tokens; give a non-empty text")
        return torch.tensor(ids, dtype=torch.long)
    if getattr(data, "task", "lm") == "mqar":  # no text: the first fixed validation sequence
        x, _ = next(iter(data.eval_batches("valid", seq_len, 1)))
        return x[0, :decay_tokens]
    return torch.from_numpy(data.split("valid")[:decay_tokens].astype("int64"))


def json_safe(value: Any) -> Any:
    """NaN and infinities (a diverged model) become None: eval.json stays strict JSON."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


def _write_outputs(run: LoadedRun, result: dict[str, Any]) -> None:
    json_name, plot_name = eval_names(run.step)
    if result["decay_stats"]:
        decay = run.config.model.decay
        label = f"{run.run_dir.name} ({decay.kind}, {decay.granularity})"
        plot_median_decay({label: result["decay_stats"]}, run.run_dir / plot_name)
        result["decay_plot"] = plot_name
    atomic_write_text(run.run_dir / json_name, json.dumps(json_safe(result), indent=2, allow_nan=False) + "\n")
