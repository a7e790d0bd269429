"""The chunked algorithm on chunk-major tensors, forward and hand-written backward.

Layout: ``Z = B*H`` sequences of ``N`` chunks of ``C`` tokens; q, k ``[Z, N, C, K]``, v ``[Z, N, C, V]``, log
decay ``ld`` ``[Z, N, C, D]`` with D = 1 (scalar, broadcast over keys) or D = K (vector).
q arrives already multiplied by ``scale``. Within chunk n, with S_n the state entering it (the state after chunk n-1):

    in_i  = sum_{t<=i} ld_t        decay from the chunk start to token i          (inclusive cumsum, <= 0)
    out_j = sum_{t>j}  ld_t        decay from token j to the chunk end            (exclusive reverse cumsum, <= 0)
    tot   = sum_t ld_t             decay across the whole chunk

    S_{n+1} = exp(tot) * S_n + (k * exp(out))^T v                                 (state passing)
    o       = (q * exp(in)) S_n + A v,  A[i, j] = sum_c q_ic k_jc exp(in_ic - in_jc) (j <= i; see intra.py)

Backward, with dS_{n+1} the gradient of the state leaving chunk n (dS_N = d final state):

    dS_n = exp(tot) * dS_{n+1} + (q * exp(in))^T do                               (reverse state passing)
    dq   = (do S_n^T) * exp(in) + [A's q-gradient of dA = mask(do v^T)]
    dk   = (v dS_{n+1}^T) * exp(out) + [A's k-gradient]
    dv   = (k * exp(out)) dS_{n+1} + A^T do,        d initial state = dS_0

Log decay: every term depends on the decays only through exp(G_i - G_j) with coefficient q_i (+) and k_j (-),
where G is the running sum of ld over the whole sequence, and every term of the final state carries +G_last.
Hence dG_t = q_t * dq_t - k_t * dk_t (+ sum_v S_final * dS_final at the last token) and d ld_t is the
reverse cumulative sum of dG over the sequence. No exponential is differentiated.
"""

from __future__ import annotations

import torch

from decaylab.ops.chunk import intra


def _scores(q, k, ld):
    """Intra-chunk A ``[Z, N, C, C]`` and what its backward needs (scalar: the decay matrix)."""
    if ld.shape[-1] == 1:
        return intra.scalar_scores(q, k, ld)
    return intra.vector_scores(q, k, ld), None


def forward(q, k, v, ld, initial_state):
    """Returns o ``[Z, N, C, V]``, entering states ``[Z, N, K, V]``, final state ``[Z, K, V]``, A, decay matrix."""
    Z, N, C, K = q.shape
    V = v.shape[-1]
    # 1. Decay factors relative to the chunk boundaries.
    into_token, out_of_token, across_chunk = intra.chunk_decays(ld)  # [Z, N, C, D] x2, [Z, N, D]
    # 2. Each chunk's own contribution to the state it hands on: (k * exp(out))^T v.
    states = (k * out_of_token).transpose(-1, -2) @ v  # [Z, N, K, V]
    # 3. State passing, sequential over chunks only; states[:, n] is overwritten by S_n, entering chunk n.
    state = q.new_zeros(Z, K, V) if initial_state is None else initial_state.clone()  # never alias an input
    decay = across_chunk.unsqueeze(-1)  # [Z, N, D, 1]: broadcasts over the state's value columns
    for n in range(N):
        state, states[:, n] = torch.addcmul(states[:, n], decay[:, n], state), state
    # 4. Intra-chunk scores.
    A, decay_matrix = _scores(q, k, ld)  # [Z, N, C, C]
    # 5. Output: the causal decayed attention inside the chunk, plus what the entering state contributes.
    o = (A @ v).view(Z * N, C, V).baddbmm_((q * into_token).view(Z * N, C, K), states.view(Z * N, K, V))
    return o.view(Z, N, C, V), states, state, A, decay_matrix


def backward(do, d_final, q, k, v, ld, initial_state, states, final_state, A, decay_matrix):
    """Gradients (dq, dk, dv, dld, d_initial_state) on chunk-major tensors; dq is w.r.t. the scaled q."""
    Z, N, C, K = q.shape
    V = v.shape[-1]
    into_token, out_of_token, across_chunk = intra.chunk_decays(ld)

    # 1. Reverse state passing; d_leaving[:, n] ends up as the gradient of the state leaving chunk n.
    d_leaving = (q * into_token).transpose(-1, -2) @ do  # [Z, N, K, V]: what chunk n's outputs send back
    d_state = q.new_zeros(Z, K, V) if d_final is None else d_final
    decay = across_chunk.unsqueeze(-1)  # [Z, N, D, 1]
    for n in range(N - 1, -1, -1):
        d_state, d_leaving[:, n] = torch.addcmul(d_leaving[:, n], decay[:, n], d_state), d_state
    d_initial = d_state if initial_state is not None else None

    # 2. Intra-chunk part: dA = causal(do v^T), then through A to q and k.
    dA = do @ v.transpose(-1, -2)  # [Z, N, C, C]; the upper triangle is ignored by both score backwards
    if decay_matrix is not None:
        dq, dk = intra.scalar_scores_backward(dA, q, k, decay_matrix)
    else:
        dq, dk = intra.vector_scores_backward(dA, q, k, ld)

    # 3. Inter-chunk part: through the entering state (q side) and the leaving state (k, v side).
    dq.addcmul_(do @ states.transpose(-1, -2), into_token)
    dk.addcmul_(v @ d_leaving.transpose(-1, -2), out_of_token)
    dv = ((k * out_of_token) @ d_leaving).view(Z * N, C, V)
    dv = dv.baddbmm_(A.view(Z * N, C, C).transpose(-1, -2), do.view(Z * N, C, V)).view(Z, N, C, V)

    # 4. Log decay: dG = q*dq - k*dk (+ the final-state term at the last token), reverse-summed over the
    #    sequence: inside each chunk by a 0/1 matrix product, across chunks by carrying the later chunks' totals.
    dG = (q * dq).addcmul_(k, dk, value=-1)  # [Z, N, C, K]
    if ld.shape[-1] == 1:
        dG = dG.sum(-1, keepdim=True)  # [Z, N, C, 1]
    D = dG.shape[-1]
    if d_final is not None:
        carried = (final_state * d_final).sum(-1)  # [Z, K]
        dG[:, -1, -1] += carried.sum(-1, keepdim=True) if D == 1 else carried
    W = intra._segment_matrix("suffix", C, ld.dtype, ld.device)
    dld = intra.segment_sums(dG.view(Z * N, C, D), W).view(Z, N, C, D)  # sum over t >= j inside the chunk
    if N > 1:  # add the totals of all later chunks, [Z, N-1, D]
        dld[:, :-1] += dld[:, 1:, 0].flip(1).cumsum(1).flip(1).unsqueeze(2)
    return dq, dk, dv, dld, d_initial
