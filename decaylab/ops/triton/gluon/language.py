"""What the Gluon kernels share: Gluon's names for Hopper (ImportError on a Triton without Gluon), the TMA copies
under the names this Triton has, and small device helpers.

Imported only by the kernel modules (sweeps.py, grads.py), which gluon/__init__.py imports at the first launch on a
GPU whose calls suit them.
"""

from triton.experimental import gluon
from triton.experimental.gluon import language as gl
from triton.experimental.gluon.language.nvidia.hopper import (  # noqa: F401  (re-exported to the kernel modules)
    fence_async_shared,
    mbarrier,
    tma,
    warpgroup_mma,
    warpgroup_mma_wait,
)

# Triton 3.9 renamed the TMA copies (async_copy_global_to_shared -> async_load, async_copy_shared_to_global ->
# async_store; the old names raise there), and 3.7 renamed gl.thread_barrier to gl.barrier: take the names this
# Triton has.
tma_load = getattr(tma, "async_load", None) or tma.async_copy_global_to_shared
tma_store = getattr(tma, "async_store", None) or tma.async_copy_shared_to_global
cta_barrier = getattr(gl, "barrier", None) or gl.thread_barrier


RCP_LN2 = gl.constexpr(1.4426950408889634)


@gluon.jit
def add(a, b):
    return a + b


@gluon.jit
def bounds(cu_seqlens, i_n, T, VARLEN: gl.constexpr):
    if VARLEN:
        bos = gl.load(cu_seqlens + i_n).to(gl.int64)
        eos = gl.load(cu_seqlens + i_n + 1).to(gl.int64)
    else:
        bos = i_n.to(gl.int64) * T
        eos = bos + T
    return bos, (eos - bos).to(gl.int32)


@gluon.jit
def log2_cumsum(g_raw):
    """Chunk-local cumulative decay in log2 units and its total."""
    g32 = g_raw.to(gl.float32)
    return gl.associative_scan(g32, 0, add) * RCP_LN2, gl.sum(g32, axis=0) * RCP_LN2


@gluon.constexpr_function
def mma_layout(N, num_warps):
    """wgmma accumulator layout of [64 * i, N] results on num_warps warps."""
    return gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[num_warps, 1], instr_shape=[16, N, 16])
