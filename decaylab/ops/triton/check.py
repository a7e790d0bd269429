"""The kernels against the fp64 recurrence on random inputs: one forward and backward of each, every output and
gradient paired with its reference. Used by the GPU tests and by ``decaylab bench kernels --section accuracy``."""

from __future__ import annotations

import torch

from decaylab.ops.reference.recurrent import recurrent_decay_linear_attention as reference
from decaylab.ops.triton.configs import overridden_config, use_config
from decaylab.ops.triton.function import triton_decay_linear_attention

GRADIENTS = ("dq", "dk", "dv", "dlog_decay", "dh0")


def against_reference(B: int, T: int, H: int, K: int, V: int, vector: bool, dtype: torch.dtype, lowest: float,
                      offsets: list[int] | None = None, overrides: dict | None = None, seed: int | None = None,
                      device: torch.device | str = "cuda", scale: float = 0.5, initial_state: bool = True,
                      resets: float = 0.0) -> dict:
    """``{name: (kernel output, fp64 reference)}`` for o, final_state and every gradient (names in GRADIENTS; no
    dh0 without an initial state).

    q, v and do are standard normal, k scaled by K^-1/2, log decays uniform in [lowest, 0], a random initial state
    (unless ``initial_state`` is False) and final-state gradient; ``offsets`` packs sequences (cu_seqlens),
    ``overrides`` change the pinned launch config, ``seed`` defaults to T + K; ``resets``: the fraction of log decays
    (tokens, heads, and key channels for vector decay) set to -1e3 instead, hard resets among ordinary decays."""
    device = torch.device(device)
    gen = torch.Generator(device=device).manual_seed(T + K if seed is None else seed)

    def randn(*size):
        return torch.randn(*size, generator=gen, device=device)

    N = B if offsets is None else len(offsets) - 1
    q = randn(B, T, H, K).to(dtype)
    k = (randn(B, T, H, K) * K**-0.5).to(dtype)
    v = randn(B, T, H, V).to(dtype)
    gate_shape = (B, T, H, K) if vector else (B, T, H)
    g = torch.rand(gate_shape, generator=gen, device=device) * lowest
    if resets:
        g = torch.where(torch.rand(gate_shape, generator=gen, device=device) < resets, -1e3, g)
    h0 = randn(N, H, K, V) if initial_state else None
    dht = randn(N, H, K, V)
    do = randn(B, T, H, V).to(dtype)
    inputs = [t for t in (q, k, v, g, h0) if t is not None]
    leaves = [t.clone().requires_grad_() for t in inputs]
    h0_leaf = leaves[4] if initial_state else None
    cu = None if offsets is None else torch.tensor(offsets, device=device)
    with use_config(overridden_config(device, vector, K, V, overrides or {})):
        o, ht = triton_decay_linear_attention(*leaves[:4], scale=scale, initial_state=h0_leaf,
                                              output_final_state=True, cu_seqlens=cu)
    ((o.double() * do.double()).sum() + (ht.double() * dht.double()).sum()).backward()

    refs = [t.double().requires_grad_() for t in inputs]
    spans = [(0, T)] if offsets is None else list(zip(offsets[:-1], offsets[1:]))
    ref_o, ref_ht = [], []
    for n, (bos, eos) in enumerate(spans):
        h0_n = None
        if initial_state:
            h0_n = refs[4] if offsets is None else refs[4][n : n + 1]
        o_n, ht_n = reference(*(t[:, bos:eos] for t in refs[:4]), scale=scale, initial_state=h0_n,
                              output_final_state=True)
        ref_o.append(o_n)
        ref_ht.append(ht_n)
    ref_o, ref_ht = torch.cat(ref_o, 1), torch.cat(ref_ht)
    ((ref_o * do.double()).sum() + (ref_ht * dht.double()).sum()).backward()
    pairs = {"o": (o, ref_o), "final_state": (ht, ref_ht)}
    for name, leaf, ref_leaf in zip(GRADIENTS, leaves, refs):
        pairs[name] = (leaf.grad, ref_leaf.grad)
    return pairs


def error_summary(pairs: dict) -> dict:
    """``{name: [relative RMS error, all finite, max abs error]}`` of ``against_reference``'s pairs (plain floats and
    bools, for a child process to print as JSON)."""
    summary = {}
    for name, (out, ref) in pairs.items():
        out, ref = out.double(), ref.double()
        summary[name] = [((out - ref).norm() / ref.norm().clamp_min(1e-30)).item(), bool(torch.isfinite(out).all()),
                         (out - ref).abs().max().item()]
    return summary
