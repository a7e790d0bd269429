"""``decaylab eval RUN_DIR``: perplexity, length extrapolation and decay statistics of a trained run."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from decaylab.commands.args import positive_int
from decaylab.evaluation.names import DEFAULT_DECAY_TOKENS, PRECISIONS, SPLIT_KEYS
from decaylab.rundir import CONFIG, eval_names


def _int_list(text: str) -> tuple[int, ...]:
    if text.strip().lower() in ("", "none", "off"):
        return ()
    try:
        values = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers like 1,2,4,8; got {text!r}") from None
    if any(v < 1 for v in values):
        raise argparse.ArgumentTypeError(f"factors must be >= 1; got {text!r}")
    return values


def _split_list(text: str) -> tuple[str, ...]:
    values = tuple(v.strip() for v in text.split(",") if v.strip())
    bad = [v for v in values if v not in SPLIT_KEYS]
    if bad:
        raise argparse.ArgumentTypeError(f"unknown split(s) {bad}; choose from {', '.join(SPLIT_KEYS)}")
    return values


def _task_list(text: str) -> tuple[str, ...]:
    return tuple(v.strip() for v in text.split(",") if v.strip())


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dir", metavar="RUN_DIR", help="run directory written by `decaylab train`")
    parser.add_argument(
        "--checkpoint",
        default=None,
        help="evaluate a checkpoint instead of the final model: 'latest', 'step-N' or a path "
        "(writes eval-step-N.json so the final model's eval.json is kept)",
    )
    parser.add_argument(
        "--splits", type=_split_list, default=("valid", "test"), help="splits to score, comma-separated (default: valid,test)"
    )
    parser.add_argument(
        "--extrapolation",
        type=_int_list,
        default=(1, 2, 4, 8),
        help="multiples of the training context for the length-extrapolation test on the test split "
        "(default: 1,2,4,8; 'none' skips it)",
    )
    parser.add_argument(
        "--decay-text",
        default=None,
        metavar="FILE",
        help="text file for the decay statistics (default: the start of the valid split)",
    )
    parser.add_argument(
        "--decay-tokens",
        type=positive_int,
        default=DEFAULT_DECAY_TOKENS,
        help=f"tokens of the decay text to analyse (default: {DEFAULT_DECAY_TOKENS}, as in the paper)",
    )
    parser.add_argument(
        "--max-tokens",
        type=positive_int,
        default=None,
        help="score at most about this many tokens per split and length (a quick look; default: everything)",
    )
    parser.add_argument(
        "--lm-eval",
        type=_task_list,
        default=None,
        metavar="TASKS",
        help="run lm-evaluation-harness tasks instead (comma-separated, e.g. wikitext,lambada_openai,piqa); "
        "writes lm_eval.json beside eval.json (needs the hf extra)",
    )
    parser.add_argument(
        "--lm-eval-include", default=None, metavar="DIR", help="folder of extra lm-eval task YAML files"
    )
    parser.add_argument(
        "--lm-eval-limit", type=float, default=None, help="at most this many documents per lm-eval task (quick looks)"
    )
    parser.add_argument("--lm-eval-batch-size", type=positive_int, default=8, help="lm-eval batch size (default: 8)")
    parser.add_argument("--device", default=None, help="device to run on, e.g. cpu or cuda (default: cuda if present)")
    parser.add_argument("--precision", choices=PRECISIONS, default="fp32",
                        help="score in fp32 (default), under bf16 autocast as a GPU run trains (faster on a GPU), or "
                        "auto: bf16 on a CUDA device, fp32 elsewhere")
    parser.add_argument("--json", action="store_true", help="print the full eval.json contents instead of a summary")
    parser.add_argument("--quiet", action="store_true", help="no progress lines on stderr")


def _fmt(value: Any, digits: int = 3) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def summary_lines(result: dict[str, Any], run_dir: str) -> list[str]:
    """A short human-readable summary of eval.json contents."""
    lines = [f"run {run_dir} ({result['model_source']}), context {result['seq_len']} tokens"]
    unit = "word" if result.get("word_level") else "token"
    for key in SPLIT_KEYS.values():
        if f"{key}_loss" in result:
            line = f"  {key:<5} loss {_fmt(result[f'{key}_loss'])}  {unit} ppl {_fmt(result[f'{key}_ppl'], 2)}"
            if f"{key}_bpb" in result:
                line += f"  bits/byte {_fmt(result[f'{key}_bpb'])}"
            lines.append(line)
    if "mqar_accuracy" in result:
        lines.append(f"  MQAR accuracy ({result['mqar_split']}): {result['mqar_accuracy']:.4f}")
    if result.get("extrapolation"):
        parts = [
            f"{f}x ({result['extrapolation_context'][f]}) {_fmt(ppl, 2)}" for f, ppl in result["extrapolation"].items()
        ]
        lines.append("  extrapolation ppl: " + " | ".join(parts))
    layers = [s for s in result.get("decay_stats", []) if isinstance(s["layer"], int)]
    if layers:
        pooled = next(s for s in result["decay_stats"] if s["layer"] == "all")
        half = pooled["half_life_tokens"]
        lines.append("  median decay per layer: " + " ".join(f"{s['median']:.3f}" for s in layers))
        lines.append(
            f"  all layers: median {pooled['median']:.4f} (IQR {pooled['p25']:.3f}-{pooled['p75']:.3f}), "
            f"half-life {'infinite' if half is None else f'{half:.1f} tokens'}"
        )
    else:
        lines.append("  no decay statistics (the model has no decay)")
    return lines


def run(args: argparse.Namespace) -> int:
    folder = Path(args.run_dir)
    if (folder / "results.sqlite").exists() and not (folder / CONFIG).exists():
        raise ValueError(
            f"{folder} is a sweep directory, not a run; `decaylab report {folder}` writes its report, and "
            f"`decaylab eval {folder / 'runs' / 'RUN_ID'}` evaluates one of its runs"
        )
    from decaylab.evaluation.evaluate import evaluate


    log = (lambda message: None) if args.quiet else (lambda message: print(f"eval: {message}", file=sys.stderr))
    if args.lm_eval is not None:
        return _run_lm_eval(args, log)
    result = evaluate(
        args.run_dir,
        splits=args.splits,
        extrapolation=args.extrapolation,
        decay_text=args.decay_text,
        device=args.device,
        checkpoint=args.checkpoint,
        decay_tokens=args.decay_tokens,
        max_tokens=args.max_tokens,
        precision=args.precision,
        log=log,
    )
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print("\n".join(summary_lines(result, args.run_dir)))
    json_name, _ = eval_names(result["step"])
    wrote = [json_name] + ([result["decay_plot"]] if "decay_plot" in result else [])
    folder = args.run_dir.rstrip("/")
    print("wrote " + ", ".join(f"{folder}/{name}" for name in wrote))
    return 0


def _run_lm_eval(args: argparse.Namespace, log) -> int:
    from decaylab.hf.harness import output_name, run_lm_eval, summary_lines

    result = run_lm_eval(args.run_dir, args.lm_eval, checkpoint=args.checkpoint, device=args.device,
                         batch_size=args.lm_eval_batch_size, limit=args.lm_eval_limit,
                         include_path=args.lm_eval_include, log=log)
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print("\n".join(summary_lines(result, args.run_dir)))
    print(f"wrote {args.run_dir.rstrip('/')}/{output_name(result['step'])}")
    return 0
