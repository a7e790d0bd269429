"""The chunked algorithm on chunk-major tensors, forward and hand-written backward.

Layout: ``Z = B*H`` sequences of ``N`` chunks of ``C`` tokens; q, k ``[Z, N, C, K]``, v ``[Z, N, C, V]``, log
decay ``ld`` ``[Z, N, C, D]`` with D = 1 (scalar, broadcast over keys) or D = K (vector).
q arrives already multiplied by ``scale``. Within chunk n, with S_n the state entering it (the state after chunk n-1):

    in_i  = sum_{t<=i} ld_t        decay from the chunk start to token i          (<= 0)
    out_j = sum_{t>j}  ld_t        decay from token j to the chunk end            (<= 0)
    tot   = sum_t ld_t             decay across the whole chunk                   (<= 0)

    S_{n+1} = exp(tot) * S_n + (k * exp(out))^T v                                 (state passing)
    o       = (q * exp(in)) S_n + A v,  A[i, j] = sum_c q_ic k_jc exp(in_ic - in_jc) (j <= i; intra.py)

Backward, with dS_{n+1} the gradient of the state leaving chunk n (dS_N = d final state):

    dS_n = exp(tot) * dS_{n+1} + (q * exp(in))^T do                               (reverse state passing)
    dq   = (do S_n^T) * exp(in) + [A's q-gradient of dA = mask(do v^T)]
    dk   = (v dS_{n+1}^T) * exp(out) + [A's k-gradient]
    dv   = (k * exp(out)) dS_{n+1} + A^T do,        d initial state = dS_0

Log decay: every term depends on the decays only through exp(G_i - G_j) with coefficient q_i (+) and k_j (-),
where G is the running sum of ld over the whole sequence, and every term of the final state carries +G_last.
Hence dG_t = q_t * dq_t - k_t * dk_t (+ sum_v S_final * dS_final at the last token) and d ld_t is the
reverse cumulative sum of dG over the sequence. No exponential is differentiated.

Both directions are three steps: a pass over tiles of chunks (independent chunks, batched matmuls), the
sequential pass over chunks (one K x V state each), and a second pass over tiles.
"""

from __future__ import annotations

import torch

from decaylab.ops.chunk import intra
from decaylab.ops.chunk.segments import chunk_decays, exp_, segment_matrix, segment_sums

# Chunks processed together between the two sequential state passes. Everything made per tile (decay factors,
# scores, partial products) then stays in the CPU cache and lives in buffers reused tile after tile, so the
# time per token does not grow with T; only inputs, outputs, saved tensors and per-chunk states are full size.
TILE_CHUNKS = 64


def _tiles(*tensors: torch.Tensor):
    """Yield aligned ``[G, ...]`` views of at most TILE_CHUNKS chunks of each ``[Z, N, ...]`` tensor."""
    flat = [t.flatten(0, 1) for t in tensors]
    for start in range(0, flat[0].shape[0], TILE_CHUNKS):
        yield [t[start : start + TILE_CHUNKS] for t in flat]


class _Buffers:
    """Per-call scratch tensors for one tile; a shorter last tile uses their leading views."""

    def __init__(self, q, v, D, backward):
        G, (C, K), V = TILE_CHUNKS, q.shape[2:], v.shape[-1]
        self.decays = q.new_empty(G, 2 * C, D)
        self.scaled = q.new_empty(G, C, K)  # q * exp(in), then k * exp(out)
        self.product = q.new_empty(G, C, max(K, V))
        self.scores = q.new_empty(G, C, C) if backward else None
        self.vector = intra.VectorWorkspace(q, G, backward) if D > 1 else None

    def take(self, G, name, *shape):
        buffer = getattr(self, name)[:G]
        return buffer if not shape else buffer.flatten(1)[:, : shape[0] * shape[1]].view(G, *shape)


def _scores(q, k, ld, A, decay, buffers):
    if decay is not None:
        intra.scalar_scores(q, k, ld, A, decay)
    else:
        intra.vector_scores(q, k, ld, A, buffers.vector)


def forward(q, k, v, ld, initial_state):
    """Returns o ``[Z, N, C, V]``, entering states ``[Z, N, K, V]``, final state ``[Z, K, V]``, A, decay matrix."""
    Z, N, C, K = q.shape
    V, D = v.shape[-1], ld.shape[-1]
    states = q.new_empty(Z, N, K, V)
    A = q.new_empty(Z, N, C, C)
    decay = q.new_empty(Z, N, C, C) if D == 1 else None
    buffers = _Buffers(q, v, D, backward=False)
    # 1. Per tile: decay factors, each chunk's own contribution (k * exp(out))^T v to the state it hands on,
    #    and the intra-chunk scores A.
    for q_t, k_t, v_t, ld_t, S_t, A_t, *L_t in _tiles(q, k, v, ld, states, A, *([decay] if D == 1 else [])):
        G = q_t.shape[0]
        out_of_token = chunk_decays(ld_t, buffers.take(G, "decays"), "out_of")  # [G, C, D]
        k_out = torch.mul(k_t, out_of_token, out=buffers.take(G, "scaled"))
        torch.matmul(k_out.transpose(-1, -2), v_t, out=S_t)
        _scores(q_t, k_t, ld_t, A_t, L_t[0] if L_t else None, buffers)
    # 2. State passing, sequential over chunks only; states[:, n] is overwritten by S_n, entering chunk n.
    state = q.new_zeros(Z, K, V) if initial_state is None else initial_state.clone()  # never alias an input
    across_chunk = exp_(ld.sum(2)).unsqueeze(-1)  # [Z, N, D, 1]: broadcasts over the state's value columns
    for n in range(N):
        state, states[:, n] = torch.addcmul(states[:, n], across_chunk[:, n], state), state
    # 3. Per tile: output = causal decayed attention inside the chunk + what the entering state contributes.
    o = q.new_empty(Z, N, C, V)
    for q_t, v_t, ld_t, S_t, A_t, o_t in _tiles(q, v, ld, states, A, o):
        G = q_t.shape[0]
        into_token = chunk_decays(ld_t, buffers.take(G, "decays"), "into")
        q_in = torch.mul(q_t, into_token, out=buffers.take(G, "scaled"))
        torch.matmul(A_t, v_t, out=o_t).baddbmm_(q_in, S_t)
    return o, states, state, A, decay


def backward(do, d_final, q, k, v, ld, initial_state, states, final_state, A, decay):
    """Gradients (dq, dk, dv, dld, d_initial_state) on chunk-major tensors; dq is w.r.t. the scaled q."""
    Z, N, C, K = q.shape
    V, D = v.shape[-1], ld.shape[-1]
    buffers = _Buffers(q, v, D, backward=True)
    # 1. Per tile: what chunk n's outputs send back to the state entering it, (q * exp(in))^T do.
    d_leaving = q.new_empty(Z, N, K, V)
    for q_t, do_t, ld_t, dS_t in _tiles(q, do, ld, d_leaving):
        G = q_t.shape[0]
        into_token = chunk_decays(ld_t, buffers.take(G, "decays"), "into")
        q_in = torch.mul(q_t, into_token, out=buffers.take(G, "scaled"))
        torch.matmul(q_in.transpose(-1, -2), do_t, out=dS_t)
    # 2. Reverse state passing; d_leaving[:, n] ends up as the gradient of the state leaving chunk n.
    d_state = q.new_zeros(Z, K, V) if d_final is None else d_final
    across_chunk = exp_(ld.sum(2)).unsqueeze(-1)  # [Z, N, D, 1]
    for n in range(N - 1, -1, -1):
        d_state, d_leaving[:, n] = torch.addcmul(d_leaving[:, n], across_chunk[:, n], d_state), d_state
    d_initial = d_state if initial_state is not None else None

    # 3. Per tile: intra-chunk part through dA = causal(do v^T), then the inter-chunk part through the entering
    #    state (q side) and the leaving state (k, v side), then the log-decay gradient of the tile.
    dq, dk, dv = torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)
    dld = ld.new_empty(Z, N, C, D)
    W_suffix = segment_matrix("suffix", C, ld.dtype, ld.device)
    tiles = _tiles(q, k, v, ld, do, states, d_leaving, A, dq, dk, dv, dld, *([decay] if D == 1 else []))
    for q_t, k_t, v_t, ld_t, do_t, S_t, dS_t, A_t, dq_t, dk_t, dv_t, dld_t, *L_t in tiles:
        G = q_t.shape[0]
        dA = torch.matmul(do_t, v_t.transpose(-1, -2), out=buffers.take(G, "scores"))  # upper triangle unused
        if L_t:
            intra.scalar_scores_backward(dA, q_t, k_t, L_t[0], dq_t, dk_t)
        else:
            intra.vector_scores_backward(dA, q_t, k_t, ld_t, dq_t, dk_t, buffers.vector)
        decays = chunk_decays(ld_t, buffers.take(G, "decays"))
        into_token, out_of_token = decays[:, :C], decays[:, C:]
        through_state = buffers.take(G, "product", C, K)
        dq_t.addcmul_(torch.matmul(do_t, S_t.transpose(-1, -2), out=through_state), into_token)
        dk_t.addcmul_(torch.matmul(v_t, dS_t.transpose(-1, -2), out=through_state), out_of_token)
        k_out = torch.mul(k_t, out_of_token, out=buffers.take(G, "scaled"))
        torch.matmul(k_out, dS_t, out=dv_t).baddbmm_(A_t.transpose(-1, -2), do_t)
        # Log decay: dG = q*dq - k*dk, summed over t >= j inside the chunk by a 0/1 matrix product.
        dG = torch.mul(q_t, dq_t, out=buffers.take(G, "product", C, K)).addcmul_(k_t, dk_t, value=-1)
        segment_sums(dG.sum(-1, keepdim=True) if D == 1 else dG, W_suffix, out=dld_t)

    # 4. Log decay across chunks: add the totals of all later chunks, then the final-state term, which sits at
    #    the last token and so reaches every token of its sequence.
    if N > 1:
        dld[:, :-1] += dld[:, 1:, 0].flip(1).cumsum(1).flip(1).unsqueeze(2)
    if d_final is not None:
        carried = (final_state * d_final).sum(-1)  # [Z, K]
        dld += (carried.sum(-1, keepdim=True) if D == 1 else carried)[:, None, None, :]
    return dq, dk, dv, dld, d_initial
