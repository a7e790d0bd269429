"""Quadratic ("attention") form of decayed linear attention: the oracle for short sequences.

Unrolling S_t = diag(lambda_t) S_{t-1} + k_t v_t^T gives, per head, with segment sums of the log decay
seg(i, j) = sum_{t=j+1..i} log_decay_t (zero when i = j) and G_i = sum_{t<=i} log_decay_t:

    o_i   = scale * [ sum_{j<=i} (q_i * exp(seg(i, j))) . k_j  v_j  +  (q_i * exp(G_i))^T S_0 ]
    S_T   = exp(G_{T-1}) * S_0 + sum_j (k_j * exp(seg(T-1, j))) v_j^T

(`*` is elementwise over the key channels; scalar decay broadcasts over them.) Every segment sum is formed
by adding only the decays inside the segment (a masked cumulative sum, as in mamba's ``segsum``), never as a
difference of two long prefix sums, so nothing cancels; the upper triangle (j > i) is set to -inf before the
exponential, so every exp argument is <= 0 and nothing overflows. Memory is O(T^2) (O(T^2 K) for vector
decay): use it for short sequences and tests. Gradients come from autograd. Computation runs in fp32 (fp64
for fp64 inputs); the output is returned in the input dtype.
"""

from __future__ import annotations

import torch

from decaylab.ops.backends import BACKENDS
from decaylab.ops.precision import full_precision


def segment_sums(log_decay: torch.Tensor) -> torch.Tensor:
    """seg[..., i, j, :] = sum_{t=j+1..i} log_decay[..., t, :] for j <= i, -inf above the diagonal.

    Args:
        log_decay: ``[..., T, D]`` (D = 1 for scalar decay, K for vector decay).
    Returns:
        ``[..., T, T, D]``.
    """
    T = log_decay.shape[-2]
    x = log_decay.unsqueeze(-3).expand(*log_decay.shape[:-2], T, T, log_decay.shape[-1])  # [..., j, t, D]
    x = x.transpose(-3, -2)  # [..., t, j, D]: the decay of token t, repeated for every key position j
    keep = torch.ones(T, T, dtype=torch.bool, device=log_decay.device).tril(-1)[:, :, None]  # t > j
    seg = x.masked_fill(~keep, 0.0).cumsum(dim=-3)  # [..., i, j, D]: sum over j < t <= i
    causal = torch.ones(T, T, dtype=torch.bool, device=log_decay.device).tril()[:, :, None]  # j <= i
    return seg.masked_fill(~causal, float("-inf"))


@BACKENDS.register("parallel")
@full_precision
def parallel_decay_linear_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    log_decay: torch.Tensor,
    *,
    scale: float = 1.0,
    initial_state: torch.Tensor | None = None,
    output_final_state: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Masked quadratic form; shapes as in :func:`decaylab.ops.decay_linear_attention`."""
    B, T, H, K = q.shape
    V = v.shape[-1]
    in_dtype = q.dtype
    dtype = torch.promote_types(in_dtype, torch.float32)
    # 1. Heads first, compute dtype; scalar decay becomes a K-broadcastable channel dim of size 1.
    q, k, v = (x.to(dtype).transpose(1, 2) for x in (q, k, v))  # [B, H, T, D]
    ld = log_decay.to(dtype).transpose(1, 2)  # [B, H, T] or [B, H, T, K]
    if ld.ndim == 3:
        ld = ld.unsqueeze(-1)  # [B, H, T, 1]

    # 2. Intra-sequence term: decayed scores with every exponent <= 0 (upper triangle is exp(-inf) = 0).
    decay = segment_sums(ld).exp()  # [B, H, T(i), T(j), 1 or K]
    if decay.shape[-1] == 1:
        scores = (q @ k.transpose(-1, -2)) * decay[..., 0]  # [B, H, T, T]
    else:
        scores = torch.einsum("bhik,bhjk,bhijk->bhij", q, k, decay)  # [B, H, T, T]
    o = scores @ v  # [B, H, T, V]

    # 3. Decays measured from the sequence start (to the initial state) and to the end (into the final state).
    from_start = ld.cumsum(dim=2)  # [B, H, T, 1 or K]: G_i, sums of non-positive terms, <= 0
    if T > 0:
        to_end = torch.zeros_like(ld)  # [B, H, T, 1 or K]: sum over t > j, built from the tail only
        to_end[:, :, :-1] = ld[:, :, 1:].flip(2).cumsum(dim=2).flip(2)
    else:
        to_end = ld
    if initial_state is not None:
        h0 = initial_state.to(dtype)  # [B, H, K, V]
        o = o + (q * from_start.exp()) @ h0
    o = o * scale

    final_state = None
    if output_final_state:
        final_state = (k * to_end.exp()).transpose(-1, -2) @ v  # [B, H, K, V]
        if initial_state is not None:
            total = from_start[:, :, -1] if T > 0 else ld.new_zeros(B, H, ld.shape[-1])  # [B, H, 1 or K]
            final_state = final_state + total.exp()[..., None] * h0
    return o.transpose(1, 2).to(in_dtype).contiguous(), final_state
