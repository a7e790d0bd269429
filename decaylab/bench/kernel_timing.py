"""What every section of ``decaylab bench kernels`` shares: shapes, inputs, the memory floor, the timed providers.

Times are medians of ``triton.testing.do_bench`` after warm-up calls outside the timed region; GPU time alone is
the same work captured once in a CUDA graph and replayed (``replay_of``). The floor is the larger of two times
measured on the same card in the same run: the fewest bytes (each input read once, each output written once; q, k,
v, o in bf16, the log decay and its gradient in fp32) over the measured copy bandwidth, and the chunked
algorithm's matmul FLOPs over the measured bf16 matmul rate. torch is imported inside the functions, so that the
command's ``--help`` needs none of it.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass
from typing import Any, Callable

DEFAULT_SHAPES = ("4x4096x64x128", "4x2048x16x128", "32x2048x12x64")


@dataclass(frozen=True)
class Shape:
    B: int
    T: int
    H: int
    D: int

    @classmethod
    def parse(cls, text: str) -> "Shape":
        try:
            B, T, H, D = (int(x) for x in text.lower().split("x"))
        except ValueError:
            raise ValueError(f"shape {text!r} must be BxTxHxD, e.g. 4x4096x64x128") from None
        return cls(B, T, H, D)

    def __str__(self) -> str:
        return f"B{self.B}·T{self.T}·H{self.H}·D{self.D}"


@dataclass(frozen=True)
class Request:
    """What one section is asked to measure: its shapes (the section's own when ``--shapes`` is not given), the
    decay granularities, the launch configs (override specs of the pinned one; ``""`` is the pinned one), the
    libraries to compare with, whether to time CUDA-graph replays, and the device."""

    shapes: tuple[Shape, ...]
    decays: tuple[str, ...]
    configs: tuple[str, ...]
    compare: tuple[str, ...]
    cuda_graph: bool
    device: Any


@dataclass(frozen=True)
class Section:
    """One section of ``decaylab bench kernels``: ``run(request)`` prints its table and returns what goes to JSON."""

    about: str
    run: Callable[[Request], Any]
    shapes: tuple[str, ...] = ()  # default shapes; () for a section with fixed cases of its own


def floor_bytes(shape: Shape, vector: bool, backward: bool) -> float:
    """Fewest HBM bytes: bf16 q, k, v, o (+ do, dq, dk, dv), fp32 log decay (+ its gradient)."""
    D = shape.D
    gate = 4 * (D if vector else 1)
    per_token_head = 2 * 4 * D + gate  # q, k, v in, o out; gate in
    if backward:
        per_token_head += 2 * 4 * D + gate  # q, k, v, do in; gate in
        per_token_head += 2 * 3 * D + gate  # dq, dk, dv out; dgate out
    return per_token_head * shape.B * shape.T * shape.H


def floor_flops(shape: Shape, backward: bool, chunk: int = 64) -> float:
    """Matmul FLOPs of the chunked algorithm on C-token chunks, per token and head: 4D^2+4CD forward, 10D^2+8CD
    more for the backward."""
    D = shape.D
    per = 4 * D * D + 4 * chunk * D + ((10 * D * D + 8 * chunk * D) if backward else 0)
    return per * shape.B * shape.T * shape.H


def measure_ceilings(device) -> dict:
    """Copy bandwidth (read + write bytes) and bf16 matmul rate on random data."""
    import torch
    from triton.testing import do_bench

    src = torch.randn(2**29, device=device, dtype=torch.bfloat16)  # 1 GiB
    dst = torch.empty_like(src)
    ms = do_bench(lambda: dst.copy_(src), warmup=25, rep=100, return_mode="median")
    bandwidth = 2 * src.numel() * src.element_size() / (ms * 1e-3)
    a = torch.randn(8192, 8192, device=device, dtype=torch.bfloat16)
    b = torch.randn(8192, 8192, device=device, dtype=torch.bfloat16)
    ms = do_bench(lambda: a @ b, warmup=25, rep=100, return_mode="median")
    del src, dst, a, b
    return {"copy_bytes_per_s": bandwidth, "bf16_flops_per_s": 2 * 8192**3 / (ms * 1e-3)}


def make_inputs(shape: Shape, vector: bool, device, dtype=None, seed: int = 0) -> dict:
    """bf16 (or ``dtype``) q, k, v, do and an fp32 log decay ``logsigmoid(randn).clamp_min(-5)``, fla's benchmark
    gate."""
    import torch

    dtype = dtype or torch.bfloat16
    gen = torch.Generator(device=device).manual_seed(seed)
    B, T, H, D = shape.B, shape.T, shape.H, shape.D

    def randn(*size):
        return torch.randn(*size, generator=gen, device=device)

    gate_shape = (B, T, H, D) if vector else (B, T, H)
    return {
        "q": randn(B, T, H, D).to(dtype),
        "k": (randn(B, T, H, D) * D**-0.5).to(dtype),
        "v": randn(B, T, H, D).to(dtype),
        "log_decay": torch.nn.functional.logsigmoid(randn(*gate_shape)).clamp_min(-5.0),
        "do": randn(B, T, H, D).to(dtype),
    }


def leaves_of(inputs: dict) -> list:
    """Fresh leaf copies of q, k, v and the log decay, gradients required."""
    return [inputs[n].detach().clone().requires_grad_() for n in ("q", "k", "v", "log_decay")]


def _backend_op(backend: str):
    """A provider timing one of decaylab's backends: "triton" (the kernels) or "chunk" (the torch chunked backend,
    what the kernels fall back to outside their head dims)."""

    def provider(inputs: dict):
        from decaylab.ops import BACKENDS

        op = BACKENDS.get(backend)
        return lambda q, k, v, g: op(q, k, v, g, scale=1.0)[0]

    return provider


def _fla_op(inputs: dict):
    """fla's chunk_gla; a scalar gate is broadcast over K first (fla's scalar backward refuses triton 3.6)."""
    from fla.ops.gla import chunk_gla

    if inputs["log_decay"].ndim == 3:
        K = inputs["q"].shape[-1]
        inputs["log_decay"] = inputs["log_decay"][..., None].expand(*inputs["log_decay"].shape, K).contiguous()
    return lambda q, k, v, g: chunk_gla(q, k, v, g, scale=1.0)[0]


PROVIDERS = {"decaylab": _backend_op("triton"), "fla": _fla_op, "chunk": _backend_op("chunk")}


def replay_of(fn):
    """``fn`` captured once in a CUDA graph (warmed up on a side stream first, as capture asks); returns the replay."""
    import torch

    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        fn()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        fn()
    return graph.replay


def time_provider(name: str, inputs: dict, warmup_calls: int = 3, graph: bool = False) -> dict:
    """Median ms of forward and of forward+backward, after warm-up calls outside the timed region; with ``graph``
    also of the forward+backward replayed from a CUDA graph."""
    import torch
    from triton.testing import do_bench

    inputs = dict(inputs)
    fn = PROVIDERS[name](inputs)
    leaves = leaves_of(inputs)
    do = inputs["do"]

    def fwd():
        with torch.no_grad():
            fn(*leaves)

    def fwd_bwd():
        fn(*leaves).backward(do)

    start = time.perf_counter()
    fwd_bwd()
    torch.cuda.synchronize()
    first_call_s = time.perf_counter() - start
    for _ in range(warmup_calls):
        fwd_bwd()
    fwd_ms = do_bench(fwd, warmup=25, rep=100, return_mode="median")
    fwd_bwd_ms = do_bench(fwd_bwd, warmup=25, rep=100, grad_to_none=leaves, return_mode="median")
    result = {"fwd_ms": fwd_ms, "fwd_bwd_ms": fwd_bwd_ms, "first_call_s": first_call_s}
    if graph:

        def fresh_fwd_bwd():  # no gradients left to add to: the captured backward writes them, as do_bench's calls
            fwd_bwd()
            for leaf in leaves:
                leaf.grad = None

        try:  # replay_of's warm-up call clears the gradients the eager timing left, before the capture
            result["fwd_bwd_graph_ms"] = do_bench(replay_of(fresh_fwd_bwd), warmup=25, rep=100, return_mode="median")
        except Exception as e:  # a provider that cannot be captured keeps its eager times
            result["fwd_bwd_graph_error"] = f"{type(e).__name__}: {str(e)[:120]}"
    return result


def parse_config_spec(spec: str) -> dict:
    """``"chunk=32,bwd_num_warps=8,precise_intra=true"`` -> overrides of the pinned launch plan (typed knobs)."""
    from decaylab.ops.triton.knobs import KNOBS

    fields = KNOBS
    overrides = {}
    for item in filter(None, spec.split(",")):
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep or key not in fields:
            raise ValueError(f"config override {item!r} must be key=value with key one of {', '.join(fields)}")
        if fields[key] in (bool, "bool"):
            if text.strip().lower() not in ("true", "false", "1", "0"):
                raise ValueError(f"config override {item!r}: {key} takes true or false")
            overrides[key] = text.strip().lower() in ("true", "1")
        else:
            try:
                overrides[key] = int(text)
            except ValueError:
                raise ValueError(f"config override {item!r}: {key} takes an integer") from None
    return overrides


def check_config_spec(spec: str, decays: tuple[str, ...] = ("scalar", "vector"),
                      dims: tuple[int, ...] = (64, 128)) -> None:
    """Raise ValueError unless ``spec`` makes a valid config over the pinned config of each decay and head dim timed
    (an option of the scalar-only backwards, or one that only one head width's pinned plan takes, is no error when
    only those are timed)."""
    import torch

    from decaylab.ops.triton.configs import pick_config
    from decaylab.ops.triton.knobs import with_knobs

    overrides = parse_config_spec(spec)
    for decay in decays:
        for D in dims:
            with_knobs(pick_config(torch.device("cpu"), decay == "vector", D, D), **overrides)


def configured(spec: str, device, vector: bool, D: int):
    """A context in which the triton backend runs the pinned config overridden by ``spec`` ("" keeps it)."""
    from decaylab.ops.triton.configs import overridden_config, use_config

    return use_config(overridden_config(device, vector, D, D, parse_config_spec(spec)))


def limit_autotune(max_configs: int) -> None:
    """Cap every Triton autotuner at its first ``max_configs`` configs (fla autotunes for minutes per shape
    otherwise; decaylab's kernels do not autotune, so this changes only fla's)."""
    from triton.runtime.autotuner import Autotuner

    original = Autotuner.prune_configs

    def prune(self, *args, **kwargs):
        return original(self, *args, **kwargs)[:max_configs]

    Autotuner.prune_configs = prune


def versions(device) -> dict:
    """The card, the software and the UTC date, for every printed or saved figure."""
    import datetime
    import importlib.metadata

    import torch
    import triton

    out = {"device": torch.cuda.get_device_name(device), "torch": torch.__version__, "triton": triton.__version__,
           "date_utc": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M")}
    try:
        out["fla_core"] = importlib.metadata.version("fla-core")
    except importlib.metadata.PackageNotFoundError:
        pass
    return out


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The arguments every section reads (``Request``'s fields)."""
    parser.add_argument("--shapes", nargs="+", default=None, metavar="BxTxHxD",
                        help=f"shapes to time (default: each section's own; the table's: {' '.join(DEFAULT_SHAPES)})")
    parser.add_argument("--decay", choices=("scalar", "vector", "both"), default="both",
                        help="decay granularity to time (default: both)")
    parser.add_argument("--compare", choices=("fla", "chunk"), nargs="*", default=[],
                        help="also time, in the same run, fla-core's chunk_gla (fla; needs fla-core installed) and "
                             "decaylab's torch chunked backend (chunk), which runs head dims outside the kernels")
    parser.add_argument("--configs", nargs="+", metavar="SPEC", default=[],
                        help="time these launch configs instead of the pinned one, each as overrides of it, e.g. "
                             "'chunk=32,bwd_num_warps=8' '' (the empty spec is the pinned config); fields: see "
                             "decaylab.ops.triton.knobs")
    parser.add_argument("--cuda-graph", action="store_true",
                        help="also time the forward+backward replayed from a CUDA graph: the GPU's time alone, "
                             "without the host's launch and autograd cost (most of an eager call at small shapes)")
