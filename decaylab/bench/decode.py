"""``decaylab bench decode``: per-token latency of generation after a context of N tokens, linear against softmax.

A decay-linear-attention model decodes from a fixed-size state, so its cost per token should not grow with the
context; a softmax model reads a KV cache that grows with every token. For each mixer, batch size and context
length the command builds the model preset with random weights, prefills a random context (in pieces of
``--prefill-chunk`` tokens, untimed), then times ``--steps`` single-token forwards that carry the cache on (after
``WARMUP_STEPS``), with the device synchronized around the timed loop. The softmax rows use RoPE; their cache is
the model's own (``layers/kv_cache.py``): the prefill reserves room for every step, as ``generate`` does, and each
step writes its key and value in place and runs SDPA over the filled positions.

Each step runs as ``generate`` runs it (``decaylab.model.decoding``): eagerly, or replayed from a CUDA graph
(``--cuda-graph``: ``auto``, the default, measures both on a CUDA device, each row after its own prefill, and only
the eager step elsewhere; ``on``, ``off`` or ``both`` pick). A graphed row's first warm-up step records the graph;
its softmax step attends over the whole reserved capacity, the slots not filled yet masked out.

Reported per row: milliseconds per decoding step, tokens/s (batch / step time), the prefill's time, and the peak
memory on a GPU; a graphed row also its speedup over the eager row beside it. A row that runs out of memory is
reported as such and the others go on.
"""

from __future__ import annotations

import argparse
import itertools
import json
import time
from pathlib import Path

WARMUP_STEPS = 3
# --cuda-graph -> the steps to time on a device: False eager, True replayed from a CUDA graph
GRAPH_CHOICES = {
    "auto": lambda device: (False, True) if device.type == "cuda" else (False,),
    "on": lambda device: (True,),
    "off": lambda device: (False,),
    "both": lambda device: (False, True),
}


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--preset", default="160m", help="model preset (default: 160m)")
    parser.add_argument("--contexts", type=int, nargs="+", default=[2048, 8192, 32768], metavar="N",
                        help="context lengths before the timed steps (default: 2048 8192 32768)")
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 32], metavar="B", help="batch sizes (default 1 32)")
    parser.add_argument("--mixers", nargs="+", choices=("linear", "softmax"), default=["linear", "softmax"])
    parser.add_argument("--steps", type=int, default=64, help="timed decoding steps per row (default: 64)")
    parser.add_argument("--prefill-chunk", type=int, default=2048, help="prefill piece in tokens (default: 2048)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="model overrides for every row (e.g. decay.kind=gla, decay.granularity=scalar)")
    parser.add_argument("--device", default="auto", help="cuda, cpu or auto (default: cuda when present)")
    parser.add_argument("--dtype", choices=("bf16", "fp32"), default=None,
                        help="model dtype (default: bf16 on a GPU, fp32 on a CPU)")
    parser.add_argument("--cuda-graph", choices=("auto", "on", "off", "both"), default="auto",
                        help="time the step eagerly (off), replayed from a CUDA graph (on) or both; auto: both on a "
                             "CUDA device, off elsewhere")
    parser.add_argument("--json", metavar="PATH", help="also write the rows as JSON to PATH")


def _step_name(row: dict) -> str:
    return "graph" if row["cuda_graph"] else "eager"


def _add_speedups(rows: list[dict]) -> None:
    """A graphed row's ``speedup``: the eager row's step time over its own, where both were measured."""
    eager = {(r["mixer"], r["batch"], r["context"]): r["ms_per_step"] for r in rows
             if not r["cuda_graph"] and "ms_per_step" in r}  # fmt: skip
    for r in rows:
        base = eager.get((r["mixer"], r["batch"], r["context"]))
        if r["cuda_graph"] and base is not None and "ms_per_step" in r:
            r["speedup"] = round(base / r["ms_per_step"], 2)


def _sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure_row(cfg, batch: int, context: int, steps: int, prefill_chunk: int, device, dtype,
                graph: bool = False) -> dict:  # fmt: skip
    """One (model, batch, context, graph) row: prefill, warm up, then time ``steps`` one-token steps."""
    import torch

    from decaylab.model.decoding import make_decoder
    from decaylab.model.generation import prefill
    from decaylab.model.lm import DecayLM

    torch.manual_seed(0)
    model = DecayLM(cfg).to(device=device, dtype=dtype).eval()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    ids = torch.randint(0, cfg.vocab_size, (batch, context + WARMUP_STEPS + steps), device=device)
    with torch.no_grad():
        started = time.perf_counter()
        _, cache = prefill(model, ids[:, :context], prefill_chunk, capacity=ids.shape[1])
        _sync(device)
        prefill_s = time.perf_counter() - started
        step = make_decoder(model, cache, WARMUP_STEPS + steps, "on" if graph else "off")
        for t in range(context, context + WARMUP_STEPS):
            step(ids[:, t : t + 1])
        _sync(device)
        started = time.perf_counter()
        for t in range(context + WARMUP_STEPS, context + WARMUP_STEPS + steps):
            step(ids[:, t : t + 1])
        _sync(device)
        step_s = (time.perf_counter() - started) / steps
    peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None
    return {"ms_per_step": round(1e3 * step_s, 3), "tokens_per_s": round(batch / step_s, 1),
            "prefill_s": round(prefill_s, 3), "peak_gib": None if peak is None else round(peak, 2)}  # fmt: skip


def run(args: argparse.Namespace) -> int:
    import torch

    from decaylab.config import parse_set_args
    from decaylab.model.config import ModelConfig

    if min(args.contexts) < 1 or min(args.batch) < 1 or args.steps < 1 or args.prefill_chunk < 1:
        raise ValueError("--contexts, --batch, --steps and --prefill-chunk must be positive")
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          "cpu" if args.device == "auto" else args.device)  # fmt: skip
    dtype = {"bf16": torch.bfloat16, "fp32": torch.float32}[args.dtype or ("bf16" if device.type == "cuda" else "fp32")]
    graphs = GRAPH_CHOICES[args.cuda_graph](device)
    if True in graphs and device.type != "cuda":
        raise ValueError(f"--cuda-graph {args.cuda_graph} needs a CUDA device (this run is on {device}); pass "
                         "--cuda-graph off or auto")
    common = parse_set_args(args.set)
    rows = []
    for mixer in args.mixers:
        overrides = {**common, "mixer": mixer, **({"pos": "rope"} if mixer == "softmax" else {})}
        cfg = ModelConfig.from_preset(args.preset, overrides)
        if cfg.vocab_size is None:
            raise ValueError(f"model preset {args.preset!r} has no vocabulary size; --set vocab_size=N")
        for batch in args.batch:
            for context, graph in itertools.product(args.contexts, graphs):
                row = {"mixer": mixer, "batch": batch, "context": context, "cuda_graph": graph}
                try:
                    row.update(measure_row(cfg, batch, context, args.steps, args.prefill_chunk, device, dtype, graph))
                except torch.cuda.OutOfMemoryError:
                    row["error"] = "out of memory"
                    torch.cuda.empty_cache()
                rows.append(row)
                shown = row.get("error") or f"{row['ms_per_step']:.3f} ms/step, {row['tokens_per_s']:,.0f} tok/s"
                print(f"  {mixer:7s} B{batch:<3d} context {context:>6d} {_step_name(row)}: {shown}", flush=True)
    _add_speedups(rows)
    card = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(f"\n{args.preset}, {dtype}, {card}; {args.steps} timed steps after {WARMUP_STEPS} warm-up steps")
    print(f"{'mixer':8s} {'B':>3s} {'context':>8s} {'step':>5s} {'ms/step':>9s} {'tok/s':>11s} {'prefill s':>10s} "
          f"{'peak GiB':>9s} {'speedup':>8s}")  # fmt: skip
    for r in rows:
        head = f"{r['mixer']:8s} {r['batch']:>3d} {r['context']:>8d} {_step_name(r):>5s}"
        if "error" in r:
            print(f"{head} {r['error']:>9s}")
            continue
        peak = "-" if r["peak_gib"] is None else f"{r['peak_gib']:.2f}"
        speedup = f"{r['speedup']:.2f}x" if "speedup" in r else "-"
        print(f"{head} {r['ms_per_step']:>9.3f} {r['tokens_per_s']:>11,.0f} {r['prefill_s']:>10.2f} {peak:>9s} "
              f"{speedup:>8s}")  # fmt: skip
    if args.json:
        meta = {"preset": args.preset, "dtype": str(dtype), "device": card, "torch": torch.__version__,
                "steps": args.steps, "warmup_steps": WARMUP_STEPS, "overrides": common,
                "cuda_graph": args.cuda_graph}  # fmt: skip
        Path(args.json).write_text(json.dumps({"config": meta, "rows": rows}, indent=2) + "\n")
    return 0
