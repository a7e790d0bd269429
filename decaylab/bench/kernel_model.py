"""Sections of ``decaylab bench kernels`` at the model level: tokens/s of the ``160m`` preset on the triton backend
(and on fla's kernels with ``--compare fla``), and what the op's ``log_decay <= 0`` check costs."""

from __future__ import annotations

import time

from decaylab.bench.kernel_timing import Request, Section

# decay granularity -> the decay the model sections train with
MODEL_DECAYS = {"vector": {"decay.kind": "simple", "decay.granularity": "vector"},
                "scalar": {"decay.kind": "mamba2", "decay.granularity": "scalar"}}


def register_fla_backend() -> None:
    """fla's chunk_gla as the ops backend "fla" (a scalar gate broadcast over K), so a model can be switched to it."""
    from fla.ops.gla import chunk_gla

    from decaylab.ops import BACKENDS

    def fla_backend(q, k, v, log_decay, *, scale=1.0, initial_state=None, output_final_state=False):
        if log_decay.ndim == 3:
            log_decay = log_decay[..., None].expand(*log_decay.shape, q.shape[-1])
        return chunk_gla(q, k, v, log_decay, scale=scale, initial_state=initial_state,
                         output_final_state=output_final_state)

    if "fla" not in BACKENDS:
        BACKENDS.register("fla")(fla_backend)


def model_step(backend: str, decay_overrides: dict, device, B: int = 8, T: int = 2048, graph: bool = False):
    """One training step of the 160m preset on random tokens (bf16 autocast, fused AdamW, the model's own loss as
    the trainer takes it), as a function returning the step's loss. ``graph``: the trainer's step on a GPU (one
    CUDA graph of forward, backward, gradient clipping and AdamW, replayed; ``decaylab.training.cuda_graph``)."""
    import torch

    from decaylab import DecayLM, ModelConfig

    torch.manual_seed(0)
    cfg = ModelConfig.from_preset("160m", decay_overrides)
    model = DecayLM(cfg).to(device).set_backend(backend)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True, capturable=graph)
    x = torch.randint(0, cfg.vocab_size, (B, T + 1), device=device)
    if graph:
        from decaylab.training.cuda_graph import GraphedTrainStep

        graphed = GraphedTrainStep(model, model, opt, rows=B, seq_len=T, grad_accum=1, max_norm=1.0,
                                   autocast_dtype=torch.bfloat16)  # fmt: skip
        inputs, targets = x[:, :-1].contiguous(), x[:, 1:].contiguous()
        return lambda: graphed(inputs, targets, 1e-4)[0]

    def step():
        with torch.autocast("cuda", dtype=torch.bfloat16):  # the trainer's loss (linear_cross_entropy)
            loss = model(x[:, :-1], targets=x[:, 1:])
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss

    return step


def model_tokens_per_s(backend: str, decay_overrides: dict, device, B: int = 8, T: int = 2048,
                       steps: int = 6, graph: bool = False) -> tuple[float, float]:
    """Training tokens/s of ``model_step`` over ``steps`` steps after 2 warm-up steps, and the last loss."""
    import torch

    step = model_step(backend, decay_overrides, device, B, T, graph)
    for _ in range(2):
        step()
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(steps):
        loss = step()
    torch.cuda.synchronize()
    return B * T * steps / (time.perf_counter() - start), loss.item()


def _backends(request: Request) -> list[str]:
    if "fla" in request.compare:
        register_fla_backend()
    return ["triton", *(["fla"] if "fla" in request.compare else [])]


def model_level(request: Request) -> list:
    import torch

    how = "the trainer's graphed step (--cuda-graph)" if request.cuda_graph else "eager steps"
    print(f"160m preset, B8·T2048, bf16 autocast, fused AdamW, {how}, 2 warm-up + 6 timed steps: tokens/s")
    out = []
    for decay in request.decays:
        for backend in _backends(request):
            tokens_per_s, loss = model_tokens_per_s(backend, MODEL_DECAYS[decay], request.device,
                                                    graph=request.cuda_graph)  # fmt: skip
            print(f"{MODEL_DECAYS[decay]} {backend}: {tokens_per_s:,.0f} tokens/s (loss {loss:.3f})", flush=True)
            out.append({"decay": MODEL_DECAYS[decay], "backend": backend, "graph": request.cuda_graph,
                        "tokens_per_s": tokens_per_s, "loss": loss})
            torch.cuda.empty_cache()
        rates = {row["backend"]: row["tokens_per_s"] for row in out if row["decay"] == MODEL_DECAYS[decay]}
        if "fla" in rates:
            print(f"{MODEL_DECAYS[decay]}: decaylab {rates['triton'] / rates['fla']:.2f}x fla's tokens/s", flush=True)
    return out


def check_cost(request: Request) -> list:
    """The public op's ``log_decay <= 0`` check reads a reduction back to the host (a sync); the layers skip it
    (``check_decay=False``). Timed with and without it, alternating: the op at B4·T2048·H16·D128 (scalar, eager
    fwd+bwd) and the 160m model with its layers forced to check."""
    import torch
    import torch.nn.functional as F
    from triton.testing import do_bench

    import decaylab.layers.linear_attention as layer_module
    from decaylab.ops import decay_linear_attention

    device = request.device
    out = []
    B, T, H, D = 4, 2048, 16, 128
    q, k, v = (torch.randn(B, T, H, D, device=device, dtype=torch.bfloat16, requires_grad=True) for _ in range(3))
    g = F.logsigmoid(torch.randn(B, T, H, device=device)).clamp_min(-5).requires_grad_()
    do = torch.randn(B, T, H, D, device=device, dtype=torch.bfloat16)
    for check in (True, False, True, False):

        def step(check=check):
            o, _ = decay_linear_attention(q, k, v, g, scale=D**-0.5, check_decay=check)
            o.backward(do)

        ms = do_bench(step, warmup=25, rep=200, return_mode="median")
        print(f"op B{B}·T{T}·H{H}·D{D} scalar, check_decay={check}: {ms:.3f} ms fwd+bwd", flush=True)
        out.append({"level": "op", "check": check, "ms": ms})
    layer_op = layer_module.decay_linear_attention

    def checking(*args, **kwargs):  # the layers pass check_decay=False; a functools.partial would be overridden
        return layer_op(*args, **{**kwargs, "check_decay": True})

    try:
        for decay in request.decays:
            for backend in _backends(request):
                for check in (True, False, True, False):
                    layer_module.decay_linear_attention = checking if check else layer_op
                    tokens_per_s, loss = model_tokens_per_s(backend, MODEL_DECAYS[decay], device, steps=10)
                    print(f"model 160m {MODEL_DECAYS[decay]} {backend} check={check}: {tokens_per_s:,.0f} tokens/s "
                          f"(loss {loss:.3f})", flush=True)
                    out.append({"level": "model", "decay": MODEL_DECAYS[decay], "backend": backend, "check": check,
                                "tokens_per_s": tokens_per_s})
                    torch.cuda.empty_cache()
    finally:
        layer_module.decay_linear_attention = layer_op
    return out


def loss_cost(request: Request, rows: int = 8 * 2048, width: int = 768, vocab: int = 50_432) -> list:
    """The language-model loss of the 160m preset's step (B8·T2048 rows, d 768, vocab 50,432, bf16 autocast):
    the plain formula (logits, ``.float()``, torch's cross_entropy) against the fused loss, forward+backward ms
    and peak memory, alternating."""
    import torch
    from triton.testing import do_bench

    from decaylab.ops.linear_cross_entropy import reference
    from decaylab.ops.triton.cross_entropy import fused

    device = request.device
    x = torch.randn(rows, width, device=device, dtype=torch.bfloat16, requires_grad=True)
    w = (torch.randn(vocab, width, device=device) * 0.02).requires_grad_()
    y = torch.randint(0, vocab, (rows,), device=device)
    print(f"loss of {rows} rows, d {width}, vocab {vocab:,}, bf16 autocast, fp32 weight: fwd+bwd")
    out = []
    for name, fn in (("plain", reference), ("fused", fused)) * 2:

        def step(fn=fn):
            with torch.autocast("cuda", dtype=torch.bfloat16):
                loss = fn(x, w, y)
            loss.backward()

        step()
        x.grad = w.grad = None
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        step()
        torch.cuda.synchronize()
        peak_gb = (torch.cuda.max_memory_allocated(device) - base) / 1e9
        ms = do_bench(step, warmup=25, rep=200, grad_to_none=[x, w], return_mode="median")
        print(f"{name}: {ms:.3f} ms, peak {peak_gb:.2f} GB over the inputs", flush=True)
        out.append({"loss": name, "ms": ms, "peak_gb": peak_gb})
        x.grad = w.grad = None
    return out


def swiglu_cost(request: Request, rows: int = 8 * 2048, hidden: int = 2048) -> list:
    """The FFN activation of the 160m preset's step (B8·T2048 rows, 2 x 2048 packed channels, bf16): the torch code
    (``silu(gate) * value`` on the halves, its gradients concatenated for the matmul) against the kernels,
    forward+backward ms, alternating."""
    import torch
    from triton.testing import do_bench

    from decaylab.ops import swiglu as op

    gv = torch.randn(rows, 2 * hidden, device=request.device, dtype=torch.bfloat16, requires_grad=True)
    dh = torch.randn(rows, hidden, device=request.device, dtype=torch.bfloat16)
    print(f"swiglu of {rows} rows x {hidden} channels (packed {2 * hidden}), bf16: fwd+bwd")
    out = []
    for kernels in (False, True) * 2:

        def step(kernels=kernels):
            with op.use_kernels(kernels):
                op.swiglu(gv).backward(dh)

        ms = do_bench(step, warmup=25, rep=200, grad_to_none=[gv], return_mode="median")
        name = "kernels" if kernels else "torch"
        print(f"{name}: {ms:.3f} ms", flush=True)
        out.append({"swiglu": name, "ms": ms})
    return out


SECTIONS = {
    "model": Section("training tokens/s of the 160m preset (B8·T2048) on the triton backend, and on fla's kernels "
                     "with --compare fla; with --cuda-graph the trainer's graphed step", model_level),
    "loss": Section("the language-model loss at the 160m step's size: the plain formula against the fused loss "
                    "(ms fwd+bwd, peak memory), alternating", loss_cost),
    "swiglu": Section("the FFN activation at the 160m step's size: the torch code against the kernels (ms "
                      "fwd+bwd), alternating", swiglu_cost),
    "check-cost": Section("the op's log_decay <= 0 check (a host sync): op ms and 160m tokens/s with and without it, "
                          "alternating", check_cost),
}
