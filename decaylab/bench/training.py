"""``decaylab bench training``: tokens/s of whole training runs, side by side in one process.

Each variant (dotted ``--set`` overrides of a run preset, e.g. ``model.pos=rope``) is trained for ``--steps``
steps into a temporary run directory, once per ``--cuda-graph`` mode, after an untimed warm-up run of
WARMUP_STEPS steps per variant (kernel compilation), in an interleaved order (every variant
and mode once, then again with ``--repeats``) so that a noisy machine slows all of them alike. Reported per run:
training tokens/s (steps x tokens per step over the summed step time, as the run's summary.json reports it),
the wall time of the whole ``train()`` call (model build, capture, checkpoint and final model included), the
final training loss and validation loss. ``--vs`` names the variant that ratios are taken against.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import statistics
import tempfile
import time
from pathlib import Path

WARMUP_STEPS = 20


def _parse_variant(text: str) -> dict[str, str]:
    """``model.pos=rope,model.mixer=softmax`` -> overrides; the empty string is the preset itself."""
    out = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        key, eq, value = item.partition("=")
        if not eq:
            raise ValueError(f"variant item {item!r} must be KEY=VALUE (e.g. model.pos=rope)")
        out[key.strip()] = value.strip()
    return out


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--preset", default="ptb-small", help="run preset to train (default: ptb-small)")
    parser.add_argument("--variants", nargs="+", default=[""], metavar="SPEC",
                        help="override sets, each 'KEY=VALUE,KEY=VALUE' ('' is the preset as it is)")
    parser.add_argument("--steps", type=int, default=300, help="training steps per run (default: 300)")
    parser.add_argument("--cuda-graph", nargs="+", choices=("on", "off", "auto"), default=["auto"],
                        help="train.cuda_graph modes to run each variant in (default: auto)")
    parser.add_argument("--repeats", type=int, default=1, help="rounds over every variant and mode (default: 1)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="overrides applied to every variant (e.g. train.eval_batches=5)")
    parser.add_argument("--together", type=int, nargs="+", metavar="K",
                        help="instead: train K copies of each variant (seeds 0..K-1) in one process, in turns "
                             "(decaylab.training.together), for each K; report the tokens/s of all K together over "
                             "the wall time of the whole call (build, capture and training)")
    parser.add_argument("--replicas", type=int, default=1, metavar="R",
                        help="with --together: stack the K runs (they differ only in their seeds) as replicas of one "
                             "model, R to a model (decaylab.training.replicas; default 1: no stacking)")
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON to PATH")


def run(args: argparse.Namespace) -> int:
    from decaylab.training import resolve_run_config, train

    if args.steps < 1 or args.repeats < 1:
        raise ValueError("--steps and --repeats must be >= 1")
    common = _parse_variant(",".join(args.set))
    variants = [(spec or "(preset)", {**common, **_parse_variant(spec)}) for spec in args.variants]
    configs = {}
    for label, overrides in variants:  # every config is validated before the first run starts
        for mode in args.cuda_graph:
            changes = {**overrides, "train.max_steps": args.steps, "train.cuda_graph": mode,
                       "train.progress": False, "train.ckpt_every": 0}  # fmt: skip
            configs[(label, mode)] = resolve_run_config(args.preset, None, changes)
    if args.together:
        return _run_together(args, configs)
    results: dict[tuple[str, str], list[dict]] = {key: [] for key in configs}
    with tempfile.TemporaryDirectory(prefix="decaylab-bench-") as tmp:
        _warm_up(configs.values(), args.steps, Path(tmp))
        for r in range(args.repeats):
            for (label, mode), cfg in configs.items():
                run_dir = Path(tmp) / f"{len(results[(label, mode)])}-{abs(hash((label, mode, r)))}"
                started = time.perf_counter()
                summary = train(cfg, run_dir)
                wall = time.perf_counter() - started
                results[(label, mode)].append({
                    "tokens_per_s": summary["tokens_per_s"], "train_time_s": summary["train_time_s"],
                    "wall_s": round(wall, 3), "final_loss": summary["final_loss"],
                    "val_loss": summary.get("val_loss_estimate"),
                })  # fmt: skip
                print(f"  {label} [cuda_graph={mode}] round {r + 1}: {summary['tokens_per_s']:,.0f} tok/s, "
                      f"wall {wall:.1f} s, loss {summary['final_loss']:.4f}", flush=True)  # fmt: skip
    rows = []
    for (label, mode), runs in results.items():
        rows.append({
            "variant": label, "cuda_graph": mode, "runs": runs,
            "tokens_per_s": statistics.median(x["tokens_per_s"] for x in runs),
            "wall_s": statistics.median(x["wall_s"] for x in runs),
            "train_time_s": statistics.median(x["train_time_s"] for x in runs),
        })  # fmt: skip
    base = rows[0]["tokens_per_s"]
    print(f"\n{args.preset}, {args.steps} steps, median of {args.repeats} round(s); ratio against the first row")
    print(f"{'variant':40s} {'graph':>5s} {'tok/s':>10s} {'ratio':>6s} {'train s':>8s} {'wall s':>7s} "
          f"{'loss':>7s} {'val loss':>8s}")  # fmt: skip
    for row in rows:
        last = row["runs"][-1]
        val = f"{last['val_loss']:.4f}" if last["val_loss"] is not None else "–"
        print(f"{row['variant']:40s} {row['cuda_graph']:>5s} {row['tokens_per_s']:>10,.0f} "
              f"{row['tokens_per_s'] / base:>6.2f} {row['train_time_s']:>8.1f} {row['wall_s']:>7.1f} "
              f"{last['final_loss']:>7.4f} {val:>8s}")  # fmt: skip
    if args.json:
        import torch

        device = torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"
        payload = {"preset": args.preset, "steps": args.steps, "device": device, "rows": rows}
        Path(args.json).write_text(json.dumps(payload, indent=2) + "\n")
    return 0


def _warm_up(configs, steps: int, tmp: Path) -> None:
    """Untimed short runs: the first run of a new shape compiles its kernels, which no later run pays."""
    from decaylab.config import with_overrides
    from decaylab.training import train

    for i, cfg in enumerate(configs):
        warm = with_overrides(cfg, {"train.max_steps": min(steps, WARMUP_STEPS), "train.eval_batches": 1})
        with contextlib.redirect_stdout(io.StringIO()):
            train(warm, tmp / f"warmup-{i}")


def _run_together(args: argparse.Namespace, configs: dict) -> int:
    """``--together``: K runs of each variant trained in turns in this process, for each K (after a warm-up)."""
    from decaylab.config import with_overrides
    from decaylab.training.together import train_together

    if any(k < 1 for k in args.together) or args.replicas < 1:
        raise ValueError("--together needs K >= 1 and --replicas R >= 1")
    rows = []
    with tempfile.TemporaryDirectory(prefix="decaylab-bench-") as tmp:
        _warm_up(configs.values(), args.steps, Path(tmp))
        for (label, mode), cfg in configs.items():
            for k in args.together:
                runs = [(with_overrides(cfg, {"train.seed": seed}), Path(tmp) / f"{label}-{mode}-{k}-{seed}", False)
                        for seed in range(k)]  # fmt: skip
                started = time.perf_counter()
                with contextlib.redirect_stdout(io.StringIO()):
                    results = train_together(runs, replicas=args.replicas)
                wall = time.perf_counter() - started
                failed = [r for r in results if isinstance(r, Exception)]
                if failed:
                    raise failed[0]
                tokens = k * args.steps * cfg.train.tokens_per_step()
                rows.append({"variant": label, "cuda_graph": mode, "runs": k, "replicas": args.replicas,
                             "wall_s": round(wall, 3),
                             "tokens_per_s": round(tokens / wall, 1),
                             "final_losses": [r["final_loss"] for r in results]})  # fmt: skip
                print(f"  {label} [cuda_graph={mode}] {k} together ({args.replicas} to a model): "
                      f"{tokens / wall:,.0f} tok/s in {wall:.1f} s",
                      flush=True)  # fmt: skip
    print(f"\n{args.preset}, {args.steps} steps per run; tokens/s of all runs together over the call's wall time")
    print(f"{'variant':40s} {'graph':>5s} {'runs':>5s} {'tok/s':>11s} {'per run':>10s} {'vs 1':>6s} {'wall s':>7s}")
    alone = {(r["variant"], r["cuda_graph"]): r["tokens_per_s"] for r in rows if r["runs"] == 1}
    for row in rows:
        base = alone.get((row["variant"], row["cuda_graph"]))
        ratio = f"{row['tokens_per_s'] / base:6.2f}" if base else "     –"
        print(f"{row['variant']:40s} {row['cuda_graph']:>5s} {row['runs']:>5d} {row['tokens_per_s']:>11,.0f} "
              f"{row['tokens_per_s'] / row['runs']:>10,.0f} {ratio} {row['wall_s']:>7.1f}")  # fmt: skip
    if args.json:
        import torch

        device = torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"
        Path(args.json).write_text(json.dumps({"preset": args.preset, "steps": args.steps, "device": device,
                                               "together": rows}, indent=2) + "\n")  # fmt: skip
    return 0
