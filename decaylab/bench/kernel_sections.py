"""Sections of ``decaylab bench kernels`` on the op alone: accuracy, profiles, host time, registers, packed
documents and the chunk fallback. Each prints its table and returns what goes to ``--json``."""

from __future__ import annotations

import itertools
import math
import statistics
import sys
import time

from decaylab.bench.kernel_timing import (
    PROVIDERS,
    Request,
    Section,
    Shape,
    configured,
    leaves_of,
    make_inputs,
    replay_of,
)

# (B, T, H, K = V, vector, dtype name, lowest log decay, packed sequence offsets, launch-config overrides)
ACCURACY_CASES = [
    *((2, 333, 2, 128, vector, "bfloat16", lowest, None, None) for vector in (False, True) for lowest in (-5.0, 0.0)),
    *((2, 333, 2, 64, vector, "bfloat16", -5.0, None, None) for vector in (False, True)),
    *((1, 1024, 2, 128, vector, "bfloat16", -5.0, None, None) for vector in (False, True)),
    *((1, 600, 2, 128, vector, "bfloat16", -1.0, (0, 100, 101, 357, 600), None) for vector in (False, True)),
    (2, 200, 2, 128, True, "float16", -3.0, None, None),
    *((1, 1024, 2, 128, vector, "bfloat16", -5.0, None, {"segment": 256}) for vector in (False, True)),
    (1, 600, 2, 128, True, "bfloat16", -1.0, (0, 100, 101, 357, 600), {"segment": 128}),
    *((1, 4096, 2, 128, vector, "bfloat16", -5.0, None, None) for vector in (False, True)),
]
EXTREME_LOG_DECAY = -1000.0  # finiteness only: every output and gradient with log decays down to this
ACCURACY_COLUMNS = ("o", "final_state", "dq", "dk", "dv", "dlog_decay", "dh0")


def _label(case) -> str:
    B, T, _, D, vector, dtype, lowest, offsets, overrides = case
    text = f"{'vector' if vector else 'scalar'} {dtype} D{D} lowest {lowest:g} "
    text += f"varlen {list(offsets)}" if offsets else f"B{B}·T{T}"
    return text + (f" {overrides}" if overrides else "")


def relative_errors(case, device) -> dict:
    """{tensor: relative RMS error against the fp64 recurrence} (NaN where the kernel's output is not finite), on
    inputs of seed 0 (decaylab.ops.triton.check says how they are drawn)."""
    import torch

    from decaylab.ops.triton.check import against_reference

    B, T, H, D, vector, dtype, lowest, offsets, overrides = case
    pairs = against_reference(B, T, H, D, D, vector, getattr(torch, dtype), lowest, list(offsets or []) or None,
                              overrides, seed=0, device=device)
    errors = {}
    for name, (out, ref) in pairs.items():
        out, ref = out.double(), ref.double()
        finite = bool(torch.isfinite(out).all())
        errors[name] = ((out - ref).norm() / ref.norm().clamp_min(1e-30)).item() if finite else float("nan")
    return errors


def accuracy(request: Request) -> dict:
    rows = []
    print("| case | " + " | ".join(ACCURACY_COLUMNS) + " |\n|" + "---|" * (len(ACCURACY_COLUMNS) + 1))
    for case in ACCURACY_CASES:
        if ("vector" if case[4] else "scalar") not in request.decays:
            continue
        errors = relative_errors(case, request.device)
        print(f"| {_label(case)} | " + " | ".join(f"{errors[c]:.1e}" if c in errors else "–" for c in ACCURACY_COLUMNS)
              + " |", flush=True)
        rows.append({"case": _label(case), "errors": errors, "worst": max(errors.values())})
    extreme = []
    for decay in request.decays:
        case = (2, 200, 2, 128, decay == "vector", "bfloat16", EXTREME_LOG_DECAY, None, None)
        finite = not any(math.isnan(e) for e in relative_errors(case, request.device).values())  # NaN: not finite
        print(f"{decay}: log decays down to {EXTREME_LOG_DECAY:g}, every output and gradient finite: {finite}")
        extreme.append({"decay": decay, "finite": finite})
    return {"cases": rows, "extreme": extreme}


def _profile_one(shape: Shape, vector: bool, spec: str, device) -> str:
    import torch
    from torch.profiler import ProfilerActivity, profile

    from decaylab.ops import BACKENDS

    op = BACKENDS.get("triton")
    inputs = make_inputs(shape, vector, device)
    leaves = leaves_of(inputs)
    with configured(spec, device, vector, shape.D):
        for _ in range(3):
            op(*leaves)[0].backward(inputs["do"])
        for leaf in leaves:  # else the first profiled backward adds to the warm-up's gradients
            leaf.grad = None
        torch.cuda.synchronize()
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            for _ in range(5):
                op(*leaves)[0].backward(inputs["do"])
                for leaf in leaves:  # no gradient accumulation kernels in the table
                    leaf.grad = None
            torch.cuda.synchronize()
    return prof.key_averages().table(sort_by="self_device_time_total", row_limit=12, max_name_column_width=40)


def kernel_profile(request: Request) -> list:
    out = []
    for shape in request.shapes:
        for decay in request.decays:
            for spec in request.configs or ("",):
                print(f"\n### {shape} {decay} {spec or '(pinned config)'}: CUDA time of 5 fwd+bwd")
                text = _profile_one(shape, decay == "vector", spec, request.device)
                print(text, flush=True)
                out.append({"shape": str(shape), "decay": decay, "config": spec, "table": text})
    return out


def host_time(request: Request, calls: int = 200) -> list:
    """Calls queued back to back, timed before the closing sync: at a shape whose GPU work is smaller than the
    host's, the Python and launch cost of the op, with the kernels launched through Triton's JIT and through their
    compiled binaries (launch.launch_kernel), alternating. Then the same fwd+bwd replayed from a CUDA graph (GPU
    time), and for the first shape where the host's time goes (cProfile, own time)."""
    import cProfile
    import pstats

    import torch
    from triton.testing import do_bench

    from decaylab.ops import BACKENDS
    from decaylab.ops.triton import launch

    op = BACKENDS.get("triton")
    out, profiled, enabled = [], set(), launch.ENABLED
    for index, shape in enumerate(request.shapes):
        for decay, launches in ((d, mode) for d in request.decays for mode in ("jit", "binary", "jit", "binary")):
            launch.ENABLED = launches == "binary"
            inputs = make_inputs(shape, decay == "vector", request.device)
            leaves = leaves_of(inputs)

            def fwd():
                with torch.no_grad():
                    op(*leaves)

            def fwd_bwd():
                op(*leaves)[0].backward(inputs["do"])
                for leaf in leaves:
                    leaf.grad = None

            row = {"shape": str(shape), "decay": decay, "launches": launches}
            for name, fn in (("fwd", fwd), ("fwd_bwd", fwd_bwd)):
                for _ in range(5):
                    fn()
                torch.cuda.synchronize()
                start = time.perf_counter()
                for _ in range(calls):
                    fn()
                queued = time.perf_counter() - start
                torch.cuda.synchronize()
                row[f"{name}_host_us"] = queued / calls * 1e6
                row[f"{name}_wall_us"] = (time.perf_counter() - start) / calls * 1e6
            row["graph_fwd_bwd_us"] = do_bench(replay_of(fwd_bwd), warmup=25, rep=100, return_mode="median") * 1e3
            print(f"{shape} {decay}, launches through the {launches}: "
                  + ", ".join(f"{k} {v:.1f}" for k, v in row.items() if k.endswith("us")), flush=True)
            out.append(row)
            if index == 0 and launches == "binary" and decay not in profiled:
                profiled.add(decay)
                prof = cProfile.Profile()
                prof.enable()
                for _ in range(50):
                    fwd_bwd()
                prof.disable()
                torch.cuda.synchronize()
                pstats.Stats(prof, stream=sys.stdout).sort_stats("tottime").print_stats(18)
    launch.ENABLED = enabled
    for shape in request.shapes:
        for decay in request.decays:
            medians = {mode: statistics.median(row["fwd_bwd_host_us"] for row in out if row["shape"] == str(shape)
                                               and row["decay"] == decay and row["launches"] == mode)
                       for mode in ("jit", "binary")}
            print(f"{shape} {decay}: median fwd_bwd_host_us through the jit {medians['jit']:.1f}, through the "
                  f"binary {medians['binary']:.1f}", flush=True)
    return out


def compiled_kernels():
    """(kernel name, compiled kernel) for every kernel of decaylab.ops.triton compiled in this process."""
    seen = set()
    for module_name, module in sorted(sys.modules.items()):
        if not module_name.startswith("decaylab.ops.triton") or module is None:
            continue
        for fn in vars(module).values():
            caches = getattr(fn, "device_caches", None)
            if not isinstance(caches, dict) or id(fn) in seen:
                continue
            seen.add(id(fn))
            name = getattr(getattr(fn, "fn", fn), "__name__", str(fn))
            for cache in caches.values():
                try:  # (compiled kernels by key, ...) in the Triton versions supported
                    compiled_by_key = cache[0]
                    yield from ((name, compiled) for compiled in compiled_by_key.values())
                except (TypeError, IndexError, KeyError, AttributeError) as e:
                    print(f"{name}: no compiled-kernel cache to read ({type(e).__name__}: {e})")


def registers(request: Request) -> list:
    """One fwd+bwd per shape, decay and config, then the registers, spills and shared memory of every kernel
    compiled."""
    from decaylab.ops import BACKENDS

    op = BACKENDS.get("triton")
    for shape in request.shapes:
        for decay in request.decays:
            inputs = make_inputs(shape, decay == "vector", request.device)
            for spec in request.configs or ("",):
                with configured(spec, request.device, decay == "vector", shape.D):
                    op(*leaves_of(inputs))[0].backward(inputs["do"])
    out = []
    print("| kernel | warps | registers | spilled bytes | shared memory bytes |\n|---|---|---|---|---|")
    for name, compiled in compiled_kernels():
        meta = compiled.metadata
        row = {"kernel": name, "warps": meta.num_warps, "registers": compiled.n_regs, "spills": compiled.n_spills,
               "shared": meta.shared}
        print(f"| {name} | {row['warps']} | {row['registers']} | {row['spills']} | {row['shared']} |")
        out.append(row)
    return out


def packed_documents(request: Request, lengths=(8192,) + (80,) * 100, H: int = 16, D: int = 128) -> list:
    """fwd+bwd ms of one packed batch holding one long document among short ones: the pinned configs (whose
    imbalance rule cuts the long one into segments) against split_below=0 (every document whole)."""
    import torch
    from triton.testing import do_bench

    from decaylab.ops import BACKENDS

    print(f"{len(lengths)} sequences, longest {max(lengths)}, T {sum(lengths)}, H{H}·D{D}: fwd+bwd ms")
    shape = Shape(1, sum(lengths), H, D)
    cu = torch.tensor([0, *itertools.accumulate(lengths)], device=request.device)
    op = BACKENDS.get("triton")
    out = []
    for decay in request.decays:
        inputs = make_inputs(shape, decay == "vector", request.device)
        leaves = leaves_of(inputs)
        for label, spec in (("pinned", ""), ("whole documents", "split_below=0")):

            def fwd_bwd(spec=spec):
                with configured(spec, request.device, decay == "vector", D):
                    op(*leaves, cu_seqlens=cu)[0].backward(inputs["do"])

            fwd_bwd()
            torch.cuda.synchronize()
            ms = do_bench(fwd_bwd, warmup=25, rep=100, grad_to_none=leaves, return_mode="median")
            print(f"{decay} {label}: {ms:.3f} ms", flush=True)
            out.append({"decay": decay, "config": label, "fwd_bwd_ms": ms})
        del inputs, leaves
        torch.cuda.empty_cache()
    return out


def fallback(request: Request) -> list:
    """The torch chunked backend's vector path on the GPU (what head dims outside the kernels run): eager fwd+bwd
    with every chunk on the halving path (forced; what a CUDA graph capture takes) against the per-chunk pick (the
    eager default, which reads the decays on the host), alternating, then the halving path replayed from a graph."""
    from triton.testing import do_bench

    from decaylab.ops.chunk import intra

    out = []
    for shape in request.shapes:
        inputs = make_inputs(shape, True, request.device)
        fn = PROVIDERS["chunk"](dict(inputs))
        leaves = leaves_of(inputs)

        def fwd_bwd():
            fn(*leaves).backward(inputs["do"])
            for leaf in leaves:
                leaf.grad = None

        row = {"shape": str(shape)}
        default = intra.plans_per_chunk
        try:
            for name, per_chunk in (("halving", False), ("per_chunk", True), ("halving_again", False),
                                    ("per_chunk_again", True)):
                intra.plans_per_chunk = lambda like, _p=per_chunk: _p
                fwd_bwd()
                row[f"{name}_ms"] = do_bench(fwd_bwd, warmup=25, rep=200, return_mode="median")
        finally:
            intra.plans_per_chunk = default
        row["halving_graph_ms"] = do_bench(replay_of(fwd_bwd), warmup=25, rep=200, return_mode="median")
        print(", ".join(f"{k} {v:.1f}" if isinstance(v, float) else f"{k} {v}" for k, v in row.items()), flush=True)
        out.append(row)
    return out


SECTIONS = {
    "accuracy": Section("relative RMS error of o, the final state and every gradient against the fp64 recurrence "
                        "(bf16 unless named), and finiteness with log decays down to -1e3", accuracy),
    "profile": Section("CUDA time per kernel of 5 fwd+bwd (torch.profiler), per shape, decay and --configs spec",
                       kernel_profile, ("4x4096x64x128",)),
    "host": Section("host time per eager call (queued back to back), wall time and CUDA-graph replay; cProfile of "
                    "the first shape", host_time, ("1x64x1x64", "4x2048x16x128")),
    "registers": Section("registers, spills and shared memory of every kernel compiled for the shapes, decays and "
                         "--configs specs", registers, ("4x4096x64x128", "4x2048x16x128", "32x2048x12x64")),
    "packed": Section("one 8192-token document packed with 100 of 80 tokens (H16 D128): the pinned segment rule "
                      "against every document whole", packed_documents),
    "fallback": Section("the torch chunk backend's vector path (head dims outside the kernels): halving path against "
                        "the per-chunk pick, eager and in a CUDA graph", fallback, ("4x2048x8x256", "4x2048x16x48")),
}
