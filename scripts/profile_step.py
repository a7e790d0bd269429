"""Where a graphed ptb-small training step's GPU time goes, and how steps of several runs (or bigger batches) share
one card (docs/benchmarks.md, "Training on a GPU"). Needs a CUDA device.

    python scripts/profile_step.py

Prints, for scalar and vector decay, the kernels one eager step launches and their summed GPU time (the table of
the costliest), then tokens/s of CUDA-graph replays of whole steps (random tokens, bf16 autocast): one run of 16
or 48 rows, and several runs each on a stream of its own, replayed in turns, with the batch copied in from
pageable or pinned host memory before each replay or not at all ("replay").
"""

import time

import torch
from torch.profiler import ProfilerActivity, profile

from decaylab.layers.projections import fuse
from decaylab.model import DecayLM
from decaylab.ops import norm
from decaylab.training import resolve_run_config
from decaylab.training.cuda_graph import GraphedTrainStep
from decaylab.training.optim import build_optimizer

VARIANTS = {
    "scalar": {},
    "vector": {"model.decay.granularity": "vector", "model.decay.kind": "gla"},
    "softmax": {"model.mixer": "softmax", "model.pos": "rope"},
}


def build(changes, rows, seed=0, cast=True):
    cfg = resolve_run_config("ptb-small", None, {**changes, "model.vocab_size": 10000})
    torch.manual_seed(seed)
    model = DecayLM(cfg.model).cuda()
    opt = build_optimizer(model, cfg.train, capturable=True)
    g = GraphedTrainStep(
        model, model, opt, rows=rows, seq_len=128, grad_accum=1, max_norm=1.0, autocast_dtype=torch.bfloat16
    )
    if not cast:
        g.cast_weights = {}
    x = torch.randint(0, 10000, (rows, 128))
    y = torch.randint(0, 10000, (rows, 128))
    g(x, y, 1e-3)
    return g, x, y


def eager_profile(label, changes, steps=10, fused=True):
    """Kernels of one step launched eagerly; ``fused=False``: the torch norms, per-layer weight casts and
    projections instead."""
    with norm.use_kernels(None if fused else False), fuse(None if fused else False):
        g, _, _ = build(changes, 16, cast=fused)
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            for _ in range(steps):
                g.optimizer.zero_grad(set_to_none=True)
                g._step()
            torch.cuda.synchronize()
    label = label if fused else f"{label} (unfused: torch norms, per-layer casts and projections)"
    ev = [e for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA]
    total = sum(e.device_time for e in ev) / steps
    print(f"== {label}: {len(ev) / steps:.0f} kernels/step, {total / 1000:.3f} ms summed kernel time/step")
    print(prof.key_averages().table(sort_by="cuda_time_total", row_limit=22, max_name_column_width=60))
    print(prof.key_averages().table(sort_by="count", row_limit=30, max_name_column_width=60))


def rate(steps_list, n, mode):
    """tokens/s of round-robin replays of several graphed steps, each on its own stream."""
    pinned = [(x.pin_memory(), y.pin_memory()) for _, x, y in steps_list]
    torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(n):
        for (g, x, y), (px, py), s in zip(steps_list, pinned, streams[: len(steps_list)]):
            with torch.cuda.stream(s):
                if mode == "replay":
                    g.graph.replay()
                elif mode == "pageable":
                    g(x, y, 1e-3)
                else:
                    g(px, py, 1e-3)
    torch.cuda.synchronize()
    dt = time.perf_counter() - t
    return sum(g.x.numel() for g, _, _ in steps_list) * n / dt


streams = [torch.cuda.Stream() for _ in range(16)]


def packed(label, changes, rows, k, n=150, fused=True):
    steps_list = []
    for i in range(k):
        with torch.cuda.stream(streams[i]), norm.use_kernels(None if fused else False), fuse(None if fused else False):
            g, x, y = build(changes, rows, seed=i, cast=fused)
            steps_list.append((g, x, y))
    label = label if fused else f"{label} (unfused: torch norms, per-layer casts and projections)"
    torch.cuda.synchronize()
    out = {m: rate(steps_list, n, m) for m in ("replay", "pageable", "pinned")}
    print(f"== {label} B{rows} x{k} streams: " + ", ".join(f"{m} {v:,.0f} tok/s" for m, v in out.items()), flush=True)
    del steps_list
    torch.cuda.empty_cache()


for label in ("scalar", "vector"):
    eager_profile(label, VARIANTS[label])
    eager_profile(label, VARIANTS[label], fused=False)
for label, rows, k in (("scalar", 16, 1), ("scalar", 16, 8), ("vector", 16, 1)):
    packed(label, VARIANTS[label], rows, k, n=100, fused=False)
for label, rows, k in (
    ("scalar", 16, 1),
    ("scalar", 48, 1),
    ("scalar", 16, 8),
    ("scalar", 48, 4),
    ("scalar", 16, 16),
    ("vector", 16, 1),
    ("vector", 48, 1),
    ("vector", 16, 8),
    ("softmax", 16, 1),
):
    packed(label, VARIANTS[label], rows, k, n=100)
