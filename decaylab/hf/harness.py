"""``decaylab eval RUN_DIR --lm-eval TASKS``: lm-evaluation-harness on a run's model, in this process.

The run's DecayLM is wrapped as a ``DecayLabForCausalLM`` (no copy, no export) and its tokenizer converted
(``decaylab.hf.tokenizer``); lm-eval's own ``HFLM`` then drives them exactly as it drives an exported folder loaded
with ``--model hf --model_args pretrained=DIR,trust_remote_code=True``. The context lm-eval may use (its
``max_length``, also the window of rolling-loglikelihood perplexity) is the run's training context.

Results go to ``RUN_DIR/lm_eval.json`` (``lm_eval-step-N.json`` for a checkpoint), beside eval.json:
``results`` (lm-eval's per-task metrics), ``versions``, ``n-shot``, ``tasks``, ``limit``, ``max_length``,
``model_source``, ``step``, ``lm_eval_version``, ``eval_time_s``.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Callable, Sequence

from decaylab.files import atomic_write_text
from decaylab.rundir import TOKENIZER, lm_eval_name


def _silent(message: str) -> None:
    pass


output_name = lm_eval_name  # the results file of run_lm_eval in the run directory


def run_lm_eval(run_dir: str | Path, tasks: Sequence[str], *, checkpoint: str | None = None, device=None,
                batch_size: int = 8, limit: float | None = None, num_fewshot: int | None = None,
                include_path: str | Path | None = None, bootstrap_iters: int = 1000,
                log: Callable[[str], None] = _silent) -> dict[str, Any]:
    """Run lm-eval ``tasks`` on a run's model and write ``lm_eval.json``; returns its contents.

    Args:
        tasks: lm-eval task or group names (``wikitext``, ``lambada_openai``, ...; see docs/evaluation.md).
        limit: at most this many documents per task (a fraction when < 1), for quick looks.
        include_path: a folder of extra task YAML files (local tasks).
        bootstrap_iters: bootstrap resamples for the standard errors of non-mean metrics (0 skips them).
    """
    from decaylab.data.tokenizer import load_tokenizer
    from decaylab.hf.modeling import DecayLabForCausalLM
    from decaylab.hf.tokenizer import to_transformers
    from decaylab.run.loading import open_run

    try:
        import lm_eval
        from lm_eval.models.huggingface import HFLM
        from lm_eval.tasks import TaskManager
    except ImportError as e:
        raise ValueError(f"lm-evaluation-harness is not installed ({e}); pip install -e \".[hf]\"") from None
    if not tasks:
        raise ValueError("--lm-eval needs at least one task name, e.g. --lm-eval wikitext,lambada_openai")
    if include_path is not None and not Path(include_path).is_dir():
        raise FileNotFoundError(f"task folder {include_path} does not exist")
    started = time.perf_counter()
    run = open_run(run_dir, checkpoint=checkpoint, device=device)
    tokenizer = to_transformers(load_tokenizer(run.run_dir / TOKENIZER), run.model.cfg.vocab_size)
    model = DecayLabForCausalLM.from_decaylm(run.model, eos_token_id=tokenizer.eos_token_id,
                                             pad_token_id=tokenizer.pad_token_id).eval()
    manager = TaskManager(include_path=None if include_path is None else str(include_path))
    unknown = [t for t in tasks if t not in manager.all_tasks]
    if unknown:
        raise ValueError(f"lm-eval knows no task {', '.join(map(repr, unknown))}; list them with `lm_eval ls tasks`, "
                         f"or pass --lm-eval-include DIR for a folder of task YAML files")
    max_length = run.config.train.seq_len
    lm = HFLM(pretrained=model, tokenizer=tokenizer, backend="causal", batch_size=batch_size, max_length=max_length)
    log(f"lm-eval {lm_eval.__version__}: {', '.join(tasks)} on {run.model_source} (context {max_length})")
    out = lm_eval.simple_evaluate(model=lm, tasks=list(tasks), num_fewshot=num_fewshot, limit=limit,
                                  task_manager=manager, log_samples=False, bootstrap_iters=bootstrap_iters)
    result = {
        "tasks": list(tasks),
        "results": out["results"],
        "versions": out.get("versions", {}),
        "n-shot": out.get("n-shot", {}),
        "limit": limit,
        "max_length": max_length,
        "model_source": run.model_source,
        "step": run.step,
        "lm_eval_version": lm_eval.__version__,
        "eval_time_s": round(time.perf_counter() - started, 2),
    }
    text = json.dumps(result, indent=2, default=str)  # lm-eval puts a few non-JSON values (e.g. "N/A") in results
    atomic_write_text(run.run_dir / output_name(run.step), text + "\n")
    return json.loads(text)


def summary_lines(result: dict[str, Any], run_dir: str) -> list[str]:
    lines = [f"run {run_dir} ({result['model_source']}), lm-eval {result['lm_eval_version']}"]
    for task, metrics in result["results"].items():
        values = [f"{key.split(',')[0]} {value:.4f}" for key, value in metrics.items()
                  if isinstance(value, float) and "_stderr" not in key]
        lines.append(f"  {task}: " + ", ".join(values))
    return lines
