"""``decaylab bench ops``: speed and memory of every ops backend against causal softmax attention, on CPU.

For each sequence length T and decay granularity, on random fp32 inputs of shape B x T x H x D (K = V = D):
the forward and the forward+backward (random upstream gradient on o) of every backend in
``decaylab.ops.BACKENDS``, and of PyTorch's causal ``scaled_dot_product_attention`` ("sdpa") at the same
shape. Time is the median of ``--repeats`` calls (``--reference-repeats`` for recurrent and parallel) after
one warm-up call.

Peak memory is measured with the PyTorch profiler's allocation records (``profile_memory=True``), in a separate
call from the timed ones: every allocation and free of a torch CPU tensor during the call, in time order, summed;
the peak of that running sum is reported. It counts what the call itself allocates on top of its inputs (the
output, the tensors saved for backward, temporaries, and for forward+backward the gradients), not the
interpreter or allocator overhead, and it is the same for every backend. (It agrees with the growth of the
process's peak RSS to within a few percent.) The recurrent backend's memory is profiled only up to
T = RECURRENT_MEMORY_MAX_T: the profiler's own records of its per-token ops grow too large beyond.

Three focused comparisons replace the table with ``--compare``:

* ``decay``: the chunked backend's fwd+bwd with scalar decay, vector decay (``logsigmoid(randn)``, which the
  factored intra-chunk path covers) and strong vector decay (``logsigmoid(randn) - 2``: every 64-token chunk
  spans more than the factored path's limit and takes the exact halving path), interleaved in one process,
  best CPU time of ``--repeats`` rounds, at each ``--shapes`` B x T x H x D.
* ``decode``: the per-token cost of a one-token step with a state (``T = 1``, no grad, as in generation) for
  the recurrent and chunked backends and ``auto``, best of ``--repeats`` rounds of DECODE_CALLS calls.
* ``loss``: the language-model loss from hidden states, forward + backward, the plain formula against cache-sized
  blocks (``decaylab.ops.linear_cross_entropy``), at ``--shapes`` tokens x d x vocab (``decaylab.bench.loss``).

Slow or large reference paths are skipped rather than run: ``recurrent`` beyond ``--recurrent-max-T``, any
backend once a call took longer than ``--time-cap`` seconds at a shorter T, and ``parallel`` when its T x T
(x K) tensors would pass ``--memory-cap-gb``. The table says why a cell is empty.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from decaylab.bench import loss
from decaylab.bench.cpu_timing import best_cpu_seconds

SDPA = "sdpa"
REFERENCES = ("recurrent", "parallel")  # slow by design: timed --reference-repeats times
# The profiler's own bookkeeping grows faster than linearly with the number of ops it records (1.6 GB for the
# recurrent fwd+bwd at T=512, tens of GB beyond); the token loop's memory is therefore profiled at short T only.
RECURRENT_MEMORY_MAX_T = 512
DEFAULT_T = (512, 1024, 2048, 4096, 8192)
QUICK_T = (512, 1024)
# B x T x H x D: long sequences, and the short-sequence, many-sequence shapes of CPU training.
DECAY_SHAPES = ("1x1024x8x64", "1x4096x8x64", "1x8192x8x64", "32x128x4x64", "16x256x8x32")
DECODE_SHAPES = ("1x1x8x64",)

DECODE_CALLS = 200


@dataclass
class Result:
    backend: str
    decay: str
    T: int
    fwd_ms: float | None = None
    fwd_bwd_ms: float | None = None
    fwd_peak_mb: float | None = None
    fwd_bwd_peak_mb: float | None = None
    skipped: str | None = None  # why no measurement was taken


def _inputs(B, T, H, D, vector, seed=0):
    import torch

    g = torch.Generator().manual_seed(seed)
    q, k, v = (torch.randn(B, T, H, D, generator=g) for _ in range(3))
    log_decay = torch.nn.functional.logsigmoid(torch.randn((B, T, H, D) if vector else (B, T, H), generator=g))
    d_o = torch.randn(B, T, H, D, generator=g)
    return q, k, v, log_decay, d_o


def _calls(backend, q, k, v, log_decay, d_o):
    """(forward, forward+backward) closures on fresh leaf tensors."""
    import torch

    from decaylab.ops import decay_linear_attention

    if backend == SDPA:  # heads-first layout, the one SDPA's fast kernels want; the transposes are not timed
        q, k, v, d_o = (x.transpose(1, 2).contiguous() for x in (q, k, v, d_o))
        leaves = [x.requires_grad_() for x in (q, k, v)]

        def forward():
            return torch.nn.functional.scaled_dot_product_attention(*leaves, is_causal=True)

    else:
        leaves = [x.clone().requires_grad_() for x in (q, k, v, log_decay)]

        def forward():
            return decay_linear_attention(*leaves, backend=backend)[0]

    def forward_only():
        with torch.no_grad():
            forward()

    def forward_backward():
        forward().backward(d_o)
        for x in leaves:
            x.grad = None

    return forward_only, forward_backward


def _median_seconds(fn, repeats):
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def peak_allocated_bytes(fn) -> int:
    """Peak of (bytes allocated - bytes freed) by torch on the CPU during ``fn()``, from the profiler's records."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    records = sorted(
        (event.start_ns(), event.nbytes())
        for event in prof.profiler.kineto_results.events()
        if event.name() == "[memory]"
    )
    live = peak = 0
    for _, nbytes in records:
        live += nbytes
        peak = max(peak, live)
    return peak


def _skip_reason(backend, decay, T, args, slow_backends):
    if backend in slow_backends:
        return f"skipped: a shorter T took > {args.time_cap:g} s"
    if backend == "recurrent" and T > args.recurrent_max_T:
        return f"skipped: recurrent only up to T={args.recurrent_max_T}"
    # The quadratic oracle holds several T x T tensors per head (times K for vector decay): scores, segment
    # sums, decays and their gradients. (sdpa's CPU kernel works blockwise and needs no cap.)
    if backend == "parallel":
        width = args.head_dim if decay == "vector" else 1
        gigabytes = 8 * 4 * args.batch * args.heads * T * T * width / 1e9
        if gigabytes > args.memory_cap_gb:
            return f"skipped: ~{gigabytes:.0f} GB of T x T tensors > --memory-cap-gb {args.memory_cap_gb:g}"
    return None


def measure(args: argparse.Namespace) -> list[Result]:
    results = []
    for decay in args.decays:
        slow_backends: set[str] = set()
        for T in args.T:
            q, k, v, log_decay, d_o = _inputs(args.batch, T, args.heads, args.head_dim, decay == "vector")
            for backend in args.backends:
                if backend == SDPA and decay != args.decays[0]:
                    continue  # softmax attention has no decay: measured once per T
                result = Result(backend, "none" if backend == SDPA else decay, T)
                result.skipped = _skip_reason(backend, decay, T, args, slow_backends)
                if result.skipped is None:
                    forward_only, forward_backward = _calls(backend, q, k, v, log_decay, d_o)
                    start = time.perf_counter()
                    forward_backward()  # warm-up (and a first estimate for the time cap)
                    if time.perf_counter() - start > args.time_cap:
                        slow_backends.add(backend)
                    repeats = args.reference_repeats if backend in REFERENCES else args.repeats
                    result.fwd_ms = 1e3 * _median_seconds(forward_only, repeats)
                    result.fwd_bwd_ms = 1e3 * _median_seconds(forward_backward, repeats)
                    if backend != "recurrent" or T <= RECURRENT_MEMORY_MAX_T:
                        result.fwd_peak_mb = peak_allocated_bytes(forward_only) / 2**20
                        result.fwd_bwd_peak_mb = peak_allocated_bytes(forward_backward) / 2**20
                results.append(result)
                print(_row(result), flush=True)
    return results


def _fmt(x, digits=1):
    return "-" if x is None else f"{x:.{digits}f}"


def _row(r: Result) -> str:
    head = f"{r.decay:>6} {r.backend:>9} T={r.T:<5}"
    if r.skipped:
        return f"{head} {r.skipped}"
    return (
        f"{head} fwd {_fmt(r.fwd_ms):>8} ms  fwd+bwd {_fmt(r.fwd_bwd_ms):>9} ms  "
        f"peak fwd {_fmt(r.fwd_peak_mb):>7} MiB  fwd+bwd {_fmt(r.fwd_bwd_peak_mb):>7} MiB"
    )


def table(results: list[Result], tokens_per_call: int) -> str:
    """Markdown table: one row per (decay, T), fwd+bwd ms and peak MiB per backend, chunk's speed-ups."""
    by_key = {(r.backend, r.decay, r.T): r for r in results}
    backends = list(dict.fromkeys(r.backend for r in results))
    decays = [d for d in dict.fromkeys(r.decay for r in results) if d != "none"]
    header = ["decay", "T"] + [f"{b} fwd / fwd+bwd ms (peak MiB)" for b in backends]
    header += ["chunk µs/token (fwd+bwd)", "chunk vs sdpa", "chunk vs recurrent"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for decay in decays:
        for T in sorted({r.T for r in results if r.decay == decay}):
            cells = [decay, str(T)]
            for b in backends:
                r = by_key.get((b, "none" if b == SDPA else decay, T))
                if r is None or r.skipped:
                    cells.append("skipped" if r is None else r.skipped.replace("skipped: ", "skipped (") + ")")
                else:
                    cells.append(f"{_fmt(r.fwd_ms)} / {_fmt(r.fwd_bwd_ms)} ({_fmt(r.fwd_bwd_peak_mb, 0)})")
            chunk = by_key.get(("chunk", decay, T))
            ok = chunk is not None and not chunk.skipped
            cells.append(_fmt(1e3 * chunk.fwd_bwd_ms / (T * tokens_per_call), 2) if ok else "-")
            for other in (by_key.get((SDPA, "none", T)), by_key.get(("recurrent", decay, T))):
                fine = ok and other is not None and not other.skipped
                cells.append(f"{other.fwd_bwd_ms / chunk.fwd_bwd_ms:.1f}x" if fine else "-")
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _shape(text: str) -> tuple[int, int, int, int]:
    try:
        B, T, H, D = (int(x) for x in text.lower().split("x"))
    except ValueError:
        raise ValueError(f"--shapes takes B x T x H x D such as 1x4096x8x64; got {text!r}") from None
    return B, T, H, D


def compare_decays(shapes, repeats) -> list[dict]:
    rows = []
    for text in shapes:
        B, T, H, D = _shape(text)
        calls = {}
        for case, vector, shift in (("scalar", False, 0.0), ("vector", True, 0.0), ("vector_strong", True, -2.0)):
            q, k, v, log_decay, d_o = _inputs(B, T, H, D, vector)
            calls[case] = _calls("chunk", q, k, v, log_decay + shift, d_o)[1]
        ms = {name: 1e3 * s for name, s in best_cpu_seconds(calls, repeats).items()}
        row = {"shape": f"B{B}·T{T}·H{H}·D{D}", **{f"{n}_ms": round(t, 2) for n, t in ms.items()},
               "vector/scalar": round(ms["vector"] / ms["scalar"], 2),
               "strong/scalar": round(ms["vector_strong"] / ms["scalar"], 2)}
        print(" ".join(f"{key} {value}" for key, value in row.items()), flush=True)
        rows.append(row)
    return rows


def compare_decode(shapes, repeats) -> list[dict]:
    import torch

    from decaylab.ops import decay_linear_attention

    rows = []
    for text in shapes:
        B, T, H, D = _shape(text)
        for decay in ("scalar", "vector"):
            q, k, v, log_decay, _ = _inputs(B, T, H, D, decay == "vector")
            state = torch.randn(B, H, D, D)

            def step(backend, q=q, k=k, v=v, log_decay=log_decay, state=state):
                def calls():
                    with torch.no_grad():
                        for _ in range(DECODE_CALLS):
                            decay_linear_attention(q, k, v, log_decay, initial_state=state,
                                                   output_final_state=True, backend=backend)
                return calls

            best = best_cpu_seconds({b: step(b) for b in ("recurrent", "chunk", "auto")}, repeats)
            row = {"shape": f"B{B}·T{T}·H{H}·D{D}", "decay": decay,
                   **{f"{b}_us_per_call": round(1e6 * s / DECODE_CALLS, 1) for b, s in best.items()}}
            print(" ".join(f"{key} {value}" for key, value in row.items()), flush=True)
            rows.append(row)
    return rows


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--T", type=int, nargs="+", default=None, metavar="T",
                        help=f"sequence lengths (default {' '.join(map(str, DEFAULT_T))})")
    parser.add_argument("--backends", nargs="+", default=None, metavar="NAME",
                        help=f"backends to measure: names in decaylab.ops.BACKENDS, and {SDPA} (default: all but triton)")
    parser.add_argument("--decay", choices=("scalar", "vector", "both"), default="both",
                        help="decay granularity (default both)")
    parser.add_argument("--repeats", type=int, default=3, help="timed calls per cell; the median is reported")
    parser.add_argument("--reference-repeats", type=int, default=1,
                        help="timed calls per cell for the slow references, recurrent and parallel (default 1)")
    parser.add_argument("--quick", action="store_true",
                        help=f"T {' '.join(map(str, QUICK_T))} and one repeat: a smoke test, not a measurement")
    parser.add_argument("--threads", type=int, default=os.cpu_count(),
                        help="torch intra-op threads (default: the number of CPU cores)")
    parser.add_argument("--batch", type=int, default=1, help="batch size B (default 1)")
    parser.add_argument("--heads", type=int, default=8, help="heads H (default 8)")
    parser.add_argument("--head-dim", type=int, default=64, help="K = V = head dim (default 64)")
    parser.add_argument("--recurrent-max-T", type=int, default=4096, help="longest T for the recurrent backend")
    parser.add_argument("--time-cap", type=float, default=60.0,
                        help="seconds: a backend whose warm-up fwd+bwd took longer is skipped at longer T")
    parser.add_argument("--memory-cap-gb", type=float, default=4.0,
                        help="skip quadratic paths whose T x T tensors would pass this many GB")
    parser.add_argument("--compare", choices=("decay", "decode", "loss"), default=None,
                        help="instead of the table: 'decay' = chunk fwd+bwd, scalar vs vector vs strong vector decay; "
                             "'decode' = per-token cost of one-token steps per backend; 'loss' = the LM loss from "
                             "hidden states, plain against blocks (decaylab.ops.linear_cross_entropy)")
    parser.add_argument("--shapes", nargs="+", default=None, metavar="BxTxHxD",
                        help=f"shapes for --compare (default decay: {' '.join(DECAY_SHAPES)}; "
                             f"decode: {' '.join(DECODE_SHAPES)}; loss, tokens x d x vocab: {' '.join(loss.LOSS_SHAPES)})")
    parser.add_argument("--out", default="bench-ops.json", help="JSON file for the results (default bench-ops.json)")
    parser.add_argument("--overwrite", action="store_true", help="replace --out if it already exists")


COMPARISONS = {"decay": (DECAY_SHAPES, compare_decays), "decode": (DECODE_SHAPES, compare_decode),
               "loss": (loss.LOSS_SHAPES, loss.compare_loss)}  # fmt: skip


def run(args: argparse.Namespace) -> int:
    import torch

    from decaylab.ops import BACKENDS

    names = [*BACKENDS.names(), SDPA]
    if args.backends is None:
        args.backends = [b for b in names if b != "triton"]
    unknown = [b for b in args.backends if b not in names]
    if unknown:
        raise ValueError(f"unknown backend(s) {', '.join(unknown)}; choose from {', '.join(names)}")
    if args.quick:
        args.T, args.repeats, args.reference_repeats = args.T or list(QUICK_T), 1, 1
    args.T = args.T or list(DEFAULT_T)
    if min(args.T) < 1 or min(args.repeats, args.reference_repeats, args.threads) < 1:
        raise ValueError("--T, --repeats, --reference-repeats and --threads must be positive")
    out = Path(args.out)
    if out.exists() and not args.overwrite:
        raise FileExistsError(f"{out} exists; pass --overwrite to replace it or choose another --out")
    args.decays = ["scalar", "vector"] if args.decay == "both" else [args.decay]

    torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)  # denormal arithmetic is many times slower on x86; same for every backend
    if args.compare is not None:
        shapes = args.shapes or COMPARISONS[args.compare][0]
        compare = COMPARISONS[args.compare][1]
        print(f"decaylab bench ops --compare {args.compare}: fp32, {torch.get_num_threads()} threads, "
              f"best CPU time of {args.repeats} interleaved rounds, load average {os.getloadavg()[0]:.1f}", flush=True)
        config = {"compare": args.compare, "threads": torch.get_num_threads(), "repeats": args.repeats,
                  "timing": "best CPU time (time.process_time) of interleaved rounds", "torch": torch.__version__,
                  "load_average_1min_start": os.getloadavg()[0]}
        rows = compare(shapes, args.repeats)
        config["load_average_1min_end"] = os.getloadavg()[0]
        out.write_text(json.dumps({"config": config, "results": rows}, indent=2) + "\n")
        print(f"\nwrote {out}")
        return 0
    config = {
        "B": args.batch, "H": args.heads, "K": args.head_dim, "V": args.head_dim, "dtype": "float32",
        "threads": torch.get_num_threads(), "flush_denormal": True, "repeats": args.repeats,
        "reference_repeats": args.reference_repeats,
        "torch": torch.__version__, "cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
        "timing": "median wall time after one warm-up call",
        "memory": "peak of bytes allocated minus freed by torch on CPU during the call (profiler records)",
    }
    print(f"decaylab bench ops: B{args.batch} H{args.heads} K=V={args.head_dim} fp32, "
          f"{config['threads']} threads, median of {args.repeats}", flush=True)
    results = measure(args)
    print()
    print(table(results, args.batch))
    out.write_text(json.dumps({"config": config, "results": [asdict(r) for r in results]}, indent=2) + "\n")
    print(f"\nwrote {out}")
    return 0
