"""One-call GPU check of the Triton backend: bf16 correctness, config sweep, speed vs fla and the floor, model tok/s.

Run on the GPU machine from the repository root (fla-core optional, for --compare):
    python3 scripts/gpu_kernels.py [--sections correctness,sweep,bench,model,varlen,profile,cprofile,host,check,
        fallback]
        [--out DIR]
Prints short tables; writes results.json to --out.
"""

from __future__ import annotations

import argparse
import functools
import itertools
import json
import os
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from decaylab.bench import kernels as kb  # noqa: E402
from decaylab.ops import BACKENDS  # noqa: E402
from decaylab.ops.triton import use_config  # noqa: E402
from decaylab.ops.triton.check import against_reference  # noqa: E402
from decaylab.ops.triton.configs import overridden_config  # noqa: E402
from decaylab.ops.triton.knobs import knobs_of  # noqa: E402

DEV = torch.device("cuda")


def rel(out, ref):
    out, ref = out.double(), ref.double()
    if not torch.isfinite(out).all():
        return float("nan")
    return ((out - ref).norm() / ref.norm().clamp_min(1e-30)).item()


def check_case(B, T, H, K, V, vector, dtype, lowest, offsets=None, seed=0, overrides=None):
    """Relative RMS error of every output and gradient against the fp64 recurrence, and whether all are finite."""
    pairs = against_reference(B, T, H, K, V, vector, dtype, lowest, offsets, overrides, seed=seed, device=DEV)
    short = {"final_state": "ht", "dlog_decay": "dg"}
    errs = {short.get(name, name): rel(out, ref) for name, (out, ref) in pairs.items()}
    finite = all(torch.isfinite(out).all().item() for out, _ in pairs.values())
    return errs, finite


def correctness():
    bf = torch.bfloat16
    cases = [dict(B=2, T=333, H=2, K=128, V=128, vector=v, dtype=bf, lowest=lo) for v in (False, True)
             for lo in (-5.0, 0.0)]
    cases += [dict(B=2, T=333, H=2, K=64, V=64, vector=v, dtype=bf, lowest=-5.0) for v in (False, True)]
    cases += [dict(B=1, T=1024, H=2, K=128, V=128, vector=v, dtype=bf, lowest=-5.0) for v in (False, True)]
    cases += [dict(B=1, T=600, H=2, K=128, V=128, vector=v, dtype=bf, lowest=-1.0, offsets=[0, 100, 101, 357, 600])
              for v in (False, True)]
    cases += [dict(B=2, T=200, H=2, K=128, V=128, vector=True, dtype=torch.float16, lowest=-3.0)]
    # segmented sequences, and the vector gate-gradient precision options
    cases += [dict(B=1, T=1024, H=2, K=128, V=128, vector=v, dtype=bf, lowest=-5.0, overrides=dict(segment=256))
              for v in (False, True)]
    cases += [dict(B=1, T=600, H=2, K=128, V=128, vector=True, dtype=bf, lowest=-1.0, offsets=[0, 100, 101, 357, 600],
                   overrides=dict(segment=128))]
    cases += [dict(B=1, T=4096, H=2, K=128, V=128, vector=v, dtype=bf, lowest=-5.0) for v in (False, True)]
    results = []
    print("\n## correctness vs fp64 recurrence (relative RMS error)")
    for c in cases:
        errs, finite = check_case(**c)
        worst = max(errs.values())
        tag = f"{'vec' if c['vector'] else 'sca'} B{c['B']} T{c['T']} D{c['K']} {str(c['dtype'])[6:]} " \
              f"lo{c['lowest']}{' varlen' if c.get('offsets') else ''} s{c.get('seed', 0)} {c.get('overrides') or ''}"
        print(f"{tag:72s} worst {worst:.2e} " + " ".join(f"{k}={v:.1e}" for k, v in errs.items()))
        results.append(dict(case=tag, errs=errs, worst=worst))
    for vector in (False, True):  # extreme decays: finiteness only
        _, finite = check_case(2, 200, 2, 128, 128, vector, torch.bfloat16, -1000.0)
        print(f"{'vec' if vector else 'sca'} log decay down to -1e3: all finite = {finite}")
        results.append(dict(case=f"extreme-{vector}", finite=finite))
    return results


# (vector decay, overrides of the pinned config, shapes to time it at: None for every sweep shape). The pinned
# config against the launch order it replaced (docs/benchmarks.md, "Where the time goes"); add candidates here.
SWEEP_VARIANTS = [
    (False, {}, None),
    (False, dict(blocks_adjacent=False), None),
    (True, {}, None),
    (True, dict(blocks_adjacent=False), None),
]


def sweep(shape_texts, variants=SWEEP_VARIANTS):
    """Time each config variant (overrides of the pinned config) at its shapes; print registers and spills."""
    out = []
    for shape_text in shape_texts:
        shape = kb.Shape.parse(shape_text)
        print(f"\n## config sweep at {shape}")
        for vector in (False, True):
            chosen = [o for v, o, shapes in variants if v == vector and (shapes is None or shape_text in shapes)]
            if not chosen:
                continue
            inputs = kb.make_inputs(shape, vector, DEV)
            for overrides in chosen:
                cfg = overridden_config(DEV, vector, shape.D, shape.D, overrides)
                with use_config(cfg):
                    try:
                        r = kb.time_provider("decaylab", inputs)
                    except Exception as e:
                        print(f"{'vec' if vector else 'sca'} {overrides}: FAILED {type(e).__name__}: {str(e)[:200]}")
                        continue
                print(f"{'vec' if vector else 'sca'} {str(overrides):48s} fwd {r['fwd_ms']:.3f} fwd+bwd "
                      f"{r['fwd_bwd_ms']:.3f} ms (first call {r['first_call_s']:.1f}s)")
                out.append(dict(shape=str(shape), vector=vector, cfg=knobs_of(cfg), **r))
            del inputs
            torch.cuda.empty_cache()
    print("\n## registers / spills per compiled kernel")
    from decaylab.ops.triton import chunk_parallel, kernels, segments

    for fn in (kernels.forward_kernel, kernels.backward_dq_kernel, kernels.backward_dkv_kernel,
               segments.segment_state_kernel, segments.segment_dstate_kernel, chunk_parallel.chunk_states_kernel,
               chunk_parallel.chunk_dstates_kernel, chunk_parallel.chunk_dstates_dv_kernel,
               chunk_parallel.chunk_dv_kernel, chunk_parallel.chunk_dqk_kernel):
        try:
            for cache in fn.device_caches.values():
                for compiled in cache[0].values():
                    c = compiled.metadata
                    print(f"{fn.fn.__name__}: warps {c.num_warps} regs {compiled.n_regs} spills {compiled.n_spills} "
                          f"shared {c.shared}")
        except Exception as e:
            print(f"{fn}: no cache info ({type(e).__name__}: {e})")
    return out


def profile(shape_text="4x4096x64x128", overrides=None):
    """CUDA time per kernel of one forward+backward at the pinned configs (or overrides of them)."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    shape = kb.Shape.parse(shape_text)
    for vector in (False, True) if overrides is None else (False,):
        inputs = kb.make_inputs(shape, vector, DEV)
        op = BACKENDS.get("triton")
        if overrides is not None:
            cfg = use_config(overridden_config(DEV, vector, shape.D, shape.D, overrides))
            op = functools.partial(_with_config, cfg, BACKENDS.get("triton"))
        leaves = [inputs[n].detach().clone().requires_grad_() for n in ("q", "k", "v", "log_decay")]
        for _ in range(3):
            op(*leaves)[0].backward(inputs["do"])
        for leaf in leaves:  # else the first profiled backward adds to the warm-up's gradients
            leaf.grad = None
        torch.cuda.synchronize()
        with torch_profile(activities=[ProfilerActivity.CUDA]) as prof:
            for _ in range(5):
                op(*leaves)[0].backward(inputs["do"])
                for leaf in leaves:  # no gradient accumulation kernels in the table
                    leaf.grad = None
            torch.cuda.synchronize()
        print(f"\n## profile {shape} {'vector' if vector else 'scalar'} (5 fwd+bwd)")
        for key in ("self_device_time_total", "self_cuda_time_total"):
            try:
                print(prof.key_averages().table(sort_by=key, row_limit=12, max_name_column_width=40))
                break
            except Exception as e:  # the sort key was renamed across torch versions
                print(f"(sort key {key}: {type(e).__name__})")
        del inputs, leaves
        torch.cuda.empty_cache()


def host_time(shape_texts=("1x64x1x64", "4x2048x16x128"), calls=200):
    """Host time per call: calls queued back to back, timed before the closing sync, so that at a shape whose GPU
    work is smaller than the host's this is the Python and launch cost of the op; the same forward+backward
    replayed from a CUDA graph (the GPU's time alone); then where the host time goes
    (cProfile, own time)."""
    import cProfile
    import pstats

    from triton.testing import do_bench

    op = BACKENDS.get("triton")
    out = []
    for text in shape_texts:
        shape = kb.Shape.parse(text)
        for vector in (False, True):
            inputs = kb.make_inputs(shape, vector, DEV)
            leaves = [inputs[n].detach().clone().requires_grad_() for n in ("q", "k", "v", "log_decay")]

            def fwd():
                with torch.no_grad():
                    op(*leaves)

            def fwd_bwd():
                op(*leaves)[0].backward(inputs["do"])
                for leaf in leaves:
                    leaf.grad = None

            row = dict(shape=str(shape), vector=vector)
            for name, fn in (("fwd", fwd), ("fwd_bwd", fwd_bwd)):
                for _ in range(5):
                    fn()
                torch.cuda.synchronize()
                start = time.perf_counter()
                for _ in range(calls):
                    fn()
                queued = time.perf_counter() - start
                torch.cuda.synchronize()
                done = time.perf_counter() - start
                row[f"{name}_host_us"] = queued / calls * 1e6
                row[f"{name}_wall_us"] = done / calls * 1e6
            row["graph_fwd_bwd_us"] = do_bench(kb.replay_of(fwd_bwd), warmup=25, rep=100, return_mode="median") * 1e3
            print(f"{shape} {'vector' if vector else 'scalar'}: " + ", ".join(
                f"{k} {v:.1f}" for k, v in row.items() if k.endswith("us")))
            out.append(row)
            if text == shape_texts[0]:
                prof = cProfile.Profile()
                prof.enable()
                for _ in range(50):
                    fwd_bwd()
                prof.disable()
                torch.cuda.synchronize()
                pstats.Stats(prof).sort_stats("tottime").print_stats(18)
            del inputs, leaves
    return out


def _with_config(cfg, op, *args, **kwargs):
    with cfg:
        return op(*args, **kwargs)


def model_tokens_per_s(backend, decay_overrides, B=8, T=2048, steps=6):
    from decaylab import DecayLM, ModelConfig

    torch.manual_seed(0)
    cfg = ModelConfig.from_preset("160m", decay_overrides)
    model = DecayLM(cfg).to(DEV).set_backend(backend)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True)
    x = torch.randint(0, cfg.vocab_size, (B, T + 1), device=DEV)

    def step():
        with torch.autocast("cuda", dtype=torch.bfloat16):
            logits = model(x[:, :-1])
            loss = torch.nn.functional.cross_entropy(logits.float().flatten(0, 1), x[:, 1:].flatten())
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss

    for _ in range(2):
        step()
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(steps):
        loss = step()
    torch.cuda.synchronize()
    dt = time.perf_counter() - t0
    return B * T * steps / dt, loss.item()


def register_fla_backend():
    from fla.ops.gla import chunk_gla

    def fla_backend(q, k, v, log_decay, *, scale=1.0, initial_state=None, output_final_state=False):
        if log_decay.ndim == 3:
            log_decay = log_decay[..., None].expand(*log_decay.shape, q.shape[-1])
        return chunk_gla(q, k, v, log_decay, scale=scale, initial_state=initial_state,
                         output_final_state=output_final_state)

    if "fla" not in BACKENDS:
        BACKENDS.register("fla")(fla_backend)


def model_level():
    print("\n## model level: 160m, B8 T2048, bf16 autocast, AdamW, tokens/s")
    register_fla_backend()
    out = []
    for overrides in ({"decay.kind": "simple", "decay.granularity": "vector"},
                      {"decay.kind": "mamba2", "decay.granularity": "scalar"}):
        for backend in ("triton", "fla"):
            try:
                tps, loss = model_tokens_per_s(backend, overrides)
                print(f"{overrides} {backend}: {tps:,.0f} tok/s (loss {loss:.3f})")
                out.append(dict(overrides=overrides, backend=backend, tokens_per_s=tps))
            except Exception as e:
                print(f"{overrides} {backend}: FAILED {type(e).__name__}: {str(e)[:300]}")
            torch.cuda.empty_cache()
    return out


def _forcing_the_check(op):
    # the layers pass check_decay=False; a functools.partial keyword would be overridden by theirs
    return lambda *args, **kwargs: op(*args, **{**kwargs, "check_decay": True})


def value_check_cost():
    """The public op's log_decay <= 0 check reads a reduction back to the host (a sync): the op at B4*T2048*H16*D128
    (scalar, eager fwd+bwd) and the 160m model (the layers forced to check) with and without it, alternating."""
    import torch.nn.functional as F
    from triton.testing import do_bench

    import decaylab.layers.linear_attention as layer_module
    from decaylab.ops import decay_linear_attention

    print("\n## the value check's cost: op ms per fwd+bwd; model tok/s")
    out = []
    B, T, H, D = 4, 2048, 16, 128
    q, k, v = (torch.randn(B, T, H, D, device=DEV, dtype=torch.bfloat16, requires_grad=True) for _ in range(3))
    g = F.logsigmoid(torch.randn(B, T, H, device=DEV)).clamp_min(-5).requires_grad_()
    do = torch.randn(B, T, H, D, device=DEV, dtype=torch.bfloat16)
    for check in (True, False, True, False):
        def step():
            o, _ = decay_linear_attention(q, k, v, g, scale=D**-0.5, check_decay=check)
            o.backward(do)

        ms = do_bench(step, warmup=25, rep=200, return_mode="median")
        print(f"op {B}x{T}x{H}x{D} scalar, check_decay={check}: {ms:.3f} ms")
        out.append(dict(level="op", check=check, ms=ms))
    layer_op = layer_module.decay_linear_attention
    register_fla_backend()
    try:
        for overrides in ({"decay.kind": "simple", "decay.granularity": "vector"},
                          {"decay.kind": "mamba2", "decay.granularity": "scalar"}):
            for backend in ("triton", "fla"):
                for check in (True, False, True, False):
                    layer_module.decay_linear_attention = _forcing_the_check(layer_op) if check else layer_op
                    tps, loss = model_tokens_per_s(backend, overrides, steps=10)
                    print(f"model 160m {overrides} {backend} check={check}: {tps:,.0f} tok/s (loss {loss:.3f})")
                    out.append(dict(level="model", overrides=overrides, backend=backend, check=check,
                                    tokens_per_s=tps))
                    torch.cuda.empty_cache()
    finally:
        layer_module.decay_linear_attention = layer_op
    return out


def packed_documents(lengths=(8192,) + (80,) * 100, H=16, D=128):
    """fwd+bwd ms of one packed batch holding one long document among short ones: the pinned configs (whose
    imbalance rule cuts the long one into segments) against split_below=0 (every document whole)."""
    from triton.testing import do_bench

    print(f"\n## packed documents: {len(lengths)} sequences, longest {max(lengths)}, T {sum(lengths)}, H{H} D{D}")
    shape = kb.Shape(1, sum(lengths), H, D)
    cu = torch.tensor([0, *itertools.accumulate(lengths)], device=DEV)
    op = BACKENDS.get("triton")
    out = []
    for vector in (False, True):
        inputs = kb.make_inputs(shape, vector, DEV)
        leaves = [inputs[n].detach().clone().requires_grad_() for n in ("q", "k", "v", "log_decay")]
        for label, overrides in (("pinned", {}), ("whole documents", dict(split_below=0))):
            cfg = overridden_config(DEV, vector, D, D, overrides)

            def fwd_bwd():
                with use_config(cfg):
                    op(*leaves, cu_seqlens=cu)[0].backward(inputs["do"])

            fwd_bwd()
            torch.cuda.synchronize()
            ms = do_bench(fwd_bwd, warmup=25, rep=100, grad_to_none=leaves, return_mode="median")
            print(f"{'vec' if vector else 'sca'} {label:16s} fwd+bwd {ms:.3f} ms")
            out.append(dict(vector=vector, config=label, fwd_bwd_ms=ms))
        del inputs, leaves
        torch.cuda.empty_cache()
    return out


def fallback_plans(shape_texts=("4x2048x8x256", "4x2048x16x48")):
    """The torch chunked backend's vector path on the GPU (what head dims outside the kernels run): eager fwd+bwd
    with every chunk on the halving path (forced; what a CUDA graph capture takes) against the per-chunk pick (the
    eager default, which reads the decays on the host), alternating, and the fwd+bwd replayed from a CUDA graph."""
    from triton.testing import do_bench

    from decaylab.ops.chunk import intra

    out = []
    for text in shape_texts:
        shape = kb.Shape.parse(text)
        inputs = kb.make_inputs(shape, True, DEV)
        fn = kb.PROVIDERS["chunk"](dict(inputs))
        leaves = [inputs[n].detach().clone().requires_grad_() for n in ("q", "k", "v", "log_decay")]

        def fwd_bwd():
            fn(*leaves).backward(inputs["do"])
            for leaf in leaves:
                leaf.grad = None

        row = dict(shape=str(shape))
        default = intra.plans_per_chunk
        for name, per_chunk in (("halving", False), ("per_chunk", True), ("halving_again", False),
                                ("per_chunk_again", True)):
            intra.plans_per_chunk = lambda like, _p=per_chunk: _p
            fwd_bwd()
            row[f"{name}_ms"] = do_bench(fwd_bwd, warmup=25, rep=200, return_mode="median")
        intra.plans_per_chunk = default
        row["halving_graph_ms"] = do_bench(kb.replay_of(fwd_bwd), warmup=25, rep=200, return_mode="median")
        print(row, flush=True)
        out.append(row)
    return out


def limit_autotune(max_configs):
    """Cap every triton autotuner at its first configs (fla autotunes ~400 s per shape otherwise)."""
    from triton.runtime.autotuner import Autotuner

    original = Autotuner.prune_configs

    def prune(self, *args, **kwargs):
        return original(self, *args, **kwargs)[:max_configs]

    Autotuner.prune_configs = prune


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--sections", default="correctness,sweep,bench,model")
    p.add_argument("--out", default=os.environ.get("OUT", "."))
    p.add_argument("--sweep-shapes", default=",".join(kb.DEFAULT_SHAPES), help="comma-separated BxTxHxD")
    p.add_argument("--profile-shapes", default="4x4096x64x128", help="comma-separated BxTxHxD for --sections profile")
    args = p.parse_args()
    import triton

    print(f"{torch.cuda.get_device_name()} torch {torch.__version__} triton {triton.__version__}")
    results = {}
    sections = args.sections.split(",")
    try:
        import fla  # noqa: F401
        has_fla = True
    except ImportError:
        has_fla = False
    if "correctness" in sections:
        results["correctness"] = correctness()
    if "profile" in sections:
        for shape_text in args.profile_shapes.split(","):
            profile(shape_text)
    if "cprofile" in sections:  # the chunk-parallel scalar backward, per kernel
        for shape_text in ("4x4096x64x128", "32x2048x12x64"):
            profile(shape_text, dict(chunk_parallel_backward=True, bwd_chunk=0, bwd_num_warps=4, bwd_value_block=64,
                                         bwd_key_block=64, save_states=True))
    if "hopper" in sections:  # scalar decay's Gluon kernels (the sm_90 pin) against the Triton ones, per kernel
        for shape_text in args.profile_shapes.split(","):
            for overrides in ({}, dict(hopper_dqk=False), dict(hopper_sweeps=False, hopper_dqk=False)):
                print(f"\n# overrides {overrides}")
                profile(shape_text, overrides)
    if "host" in sections:
        results["host"] = host_time()
    if "sweep" in sections:
        results["sweep"] = sweep(args.sweep_shapes.split(","))
    if has_fla:
        limit_autotune(int(os.environ.get("FLA_MAX_CONFIGS", "4")))
    if "bench" in sections:
        providers = ["decaylab"] + (["fla"] if has_fla else [])
        shapes = [kb.Shape.parse(s) for s in kb.DEFAULT_SHAPES]
        res = kb.bench(shapes, ["scalar", "vector"], providers, DEV)
        c = res["ceilings"]
        print(f"\n## bench: copy {c['copy_bytes_per_s'] / 1e9:.0f} GB/s, "
              f"matmul {c['bf16_flops_per_s'] / 1e12:.0f} TF/s")
        print(kb.format_table(res, providers))
        print("first call s:", {f"{r['shape']} {r['decay']}": round(r.get("decaylab_first_call_s", -1), 1)
                                for r in res["rows"]})
        results["bench"] = res
    if "varlen" in sections:
        results["varlen"] = packed_documents()
    if "model" in sections and has_fla:
        results["model"] = model_level()
    if "fallback" in sections:
        results["fallback"] = fallback_plans()
    if "check" in sections and has_fla:
        results["check"] = value_check_cost()
    Path(args.out).mkdir(parents=True, exist_ok=True)
    with open(Path(args.out) / "results.json", "w") as f:
        json.dump(results, f, indent=1, default=str)


if __name__ == "__main__":
    main()
