"""Decayed linear attention: one functional entry point over interchangeable backends.

    S_t = diag(lambda_t) S_{t-1} + k_t v_t^T,    o_t = scale * S_t^T q_t,    lambda_t = exp(log_decay_t)

``log_decay`` is ``[B, T, H]`` (scalar decay: one per head and token) or ``[B, T, H, K]`` (vector decay: one
per key channel). Every backend has the same signature and is registered in ``BACKENDS``; ``backend="auto"``
picks the fastest correct one for the device and length. Packed variable-length sequences (``cu_seqlens``) work
with every backend (:mod:`decaylab.ops.varlen`).
"""

from __future__ import annotations

import torch

from decaylab.ops import varlen
from decaylab.ops.backends import BACKENDS
from decaylab.ops.replicas import fold_rows, under_vmap

_FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def _register_optional_backends() -> None:
    # Each import registers its backend; a missing optional dependency (triton) leaves it out.
    import importlib

    for module in ("decaylab.ops.reference.parallel", "decaylab.ops.chunk", "decaylab.ops.triton"):
        try:
            importlib.import_module(module)
        except ImportError:
            pass


def triton_available() -> bool:
    return "triton" in BACKENDS


def auto_backend(device: torch.device, T: int | None = None) -> str:
    """The fastest correct backend for a device and sequence length T (None: a long one).

    Triton on CUDA when present. Elsewhere the chunked torch path, except for one-token steps (decoding), where
    the recurrence is one state update and one product while the chunked path pays for its setup (about 4x
    slower per token on CPU at H8 K=V=64; docs/benchmarks.md, "CPU ops").
    """
    if device.type == "cuda" and "triton" in BACKENDS:
        return "triton"
    if T == 1 or "chunk" not in BACKENDS:
        return "recurrent"
    return "chunk"


def _check_inputs(q, k, v, log_decay, initial_state, cu_seqlens=None, check_decay=True) -> list[int] | None:
    """ValueError naming the bad tensor; returns the packed-sequence offsets (None without cu_seqlens)."""
    for name, t in (("q", q), ("k", k), ("v", v), ("log_decay", log_decay)):
        if not isinstance(t, torch.Tensor):
            raise ValueError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
        if t.dtype not in _FLOAT_DTYPES:
            raise ValueError(f"{name} has dtype {t.dtype}; expected float16, bfloat16, float32 or float64")
    if q.ndim != 4:
        raise ValueError(f"q must be [B, T, H, K]; got shape {tuple(q.shape)}")
    B, T, H, K = q.shape
    if k.shape != q.shape:
        raise ValueError(f"k must be [B, T, H, K] = {tuple(q.shape)} like q; got {tuple(k.shape)}")
    if v.ndim != 4 or v.shape[:3] != q.shape[:3]:
        raise ValueError(f"v must be [B, T, H, V] = [{B}, {T}, {H}, V]; got {tuple(v.shape)}")
    if tuple(log_decay.shape) not in ((B, T, H), (B, T, H, K)):
        raise ValueError(
            f"log_decay must be [B, T, H] = {(B, T, H)} (scalar decay) or [B, T, H, K] = {(B, T, H, K)} "
            f"(vector decay); got {tuple(log_decay.shape)}"
        )
    bounds = None if cu_seqlens is None else varlen.check_cu_seqlens(cu_seqlens, q)
    if not (q.dtype == k.dtype == v.dtype):
        raise ValueError(f"q, k, v must share one dtype; got {q.dtype}, {k.dtype}, {v.dtype}")
    for name, t in (("k", k), ("v", v), ("log_decay", log_decay)):
        if t.device != q.device:
            raise ValueError(f"{name} is on {t.device} but q is on {q.device}; move all inputs to one device")
    if initial_state is not None:
        V = v.shape[-1]
        N, name = (B, "B") if bounds is None else (len(bounds) - 1, "N")  # N packed sequences
        if not isinstance(initial_state, torch.Tensor) or tuple(initial_state.shape) != (N, H, K, V):
            shape = tuple(initial_state.shape) if isinstance(initial_state, torch.Tensor) else initial_state
            raise ValueError(f"initial_state must be [{name}, H, K, V] = {(N, H, K, V)}; got {shape}")
        if initial_state.dtype not in (torch.float32, torch.float64):
            raise ValueError(f"initial_state must be float32 (float64 allowed for tests); got {initial_state.dtype}")
        if initial_state.device != q.device:
            raise ValueError(f"initial_state is on {initial_state.device} but q is on {q.device}")
    # One reduction; a positive log decay means lambda > 1, which makes the state grow without bound. Reading its
    # result waits for the GPU's queue (a host-device sync), hence check_decay=False for callers whose decays are
    # non-positive by construction.
    if check_decay and log_decay.numel() and bool(log_decay.amax() > 0):
        raise ValueError(
            "log_decay has positive values (decay > 1); it must be <= 0. Compute it with a non-positive map "
            "such as logsigmoid or -softplus, or clamp it with log_decay.clamp(max=0)"
        )
    return bounds


def decay_linear_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    log_decay: torch.Tensor,
    *,
    scale: float = 1.0,
    initial_state: torch.Tensor | None = None,
    output_final_state: bool = False,
    backend: str = "auto",
    cu_seqlens: torch.Tensor | None = None,
    check_decay: bool = True,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Decayed linear attention.

    Args:
        q, k: ``[B, T, H, K]``.
        v: ``[B, T, H, V]`` (V may differ from K).
        log_decay: ``[B, T, H]`` (scalar) or ``[B, T, H, K]`` (vector), values <= 0; any float dtype.
        scale: multiplies the output (1 in the paper's models).
        initial_state: ``[B, H, K, V]`` (``[N, H, K, V]`` with cu_seqlens) float32 state to start from, or None
            for zeros.
        output_final_state: also return the float32 state after the last token, shaped like initial_state.
        backend: ``"auto"`` or a name in ``BACKENDS`` (``recurrent``, ``parallel``, ``chunk``, ``triton``).
        cu_seqlens: optional ``[N+1]`` int32/int64 offsets of N sequences packed along time in a batch of one
            (FlashAttention convention: starts at 0, never decreases, ends at T); each sequence runs on its own.
        check_decay: verify log_decay <= 0 (a ValueError otherwise). On a GPU the check reads a reduction back to
            the host, which waits for every queued kernel: pass False where the decay is non-positive by
            construction (logsigmoid, -softplus, a decaylab decay kind), so that the host keeps queueing ahead.

    Returns:
        ``(o, final_state)``: o ``[B, T, H, V]`` (contiguous) in the input dtype; final_state or None.
    """
    if under_vmap(q, k, v, log_decay, initial_state, cu_seqlens):  # replicas of a model: their rows at once
        if cu_seqlens is not None:
            raise ValueError("cu_seqlens under vmap (replicated models): packed sequences are not supported there")

        def one_call(q, k, v, log_decay, initial_state):
            return decay_linear_attention(q, k, v, log_decay, scale=scale, initial_state=initial_state,
                                          output_final_state=output_final_state, backend=backend,
                                          check_decay=check_decay)

        return fold_rows(one_call, (q, k, v, log_decay, initial_state), (True,) * 5)
    bounds = _check_inputs(q, k, v, log_decay, initial_state, cu_seqlens, check_decay)
    if backend != "auto":
        BACKENDS.get(backend)  # an unknown name fails here, with the closest names
    kwargs = dict(scale=scale, initial_state=initial_state, output_final_state=output_final_state)

    def pick(T: int):
        return BACKENDS.get(auto_backend(q.device, T) if backend == "auto" else backend)

    if bounds is None:
        return pick(q.shape[1])(q, k, v, log_decay, **kwargs)
    fn = pick(q.shape[1])
    if varlen.takes_cu_seqlens(fn):
        return fn(q, k, v, log_decay, cu_seqlens=cu_seqlens.to(q.device), **kwargs)
    return varlen.per_sequence(pick, bounds, q, k, v, log_decay, **kwargs)


_register_optional_backends()

__all__ = ["decay_linear_attention", "BACKENDS", "auto_backend", "triton_available"]
