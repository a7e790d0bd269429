"""The chunked algorithm in plain torch, written to be read: the same function as the fast paths, none of their tuning.

Split T into chunks of C tokens. Inside a chunk let b_t = sum of log_decay over the chunk's tokens up to t (per key
channel; scalar decay broadcasts over K), so the decay from token s to token t (s <= t) is exp(b_t - b_s). Then

    o_t   = scale * [ (q_t * exp(b_t)) S_prev  +  sum_{s <= t in chunk} (sum_c q_tc k_sc exp(b_tc - b_sc)) v_s ]
    S_new = exp(b_last) * S_prev + sum_{s in chunk} (k_s * exp(b_last - b_s)) v_s^T

The first term carries everything before the chunk through its state, the second is a small masked attention
inside the chunk, and the state update replaces C token-by-token updates with one product. Every exponent is
of a difference b_t - b_s <= 0 (or of b itself), so nothing overflows, whatever the decay. Autograd gives the
backward. ``decaylab.ops.chunk`` (CPU) and ``decaylab.ops.triton`` (GPU) compute this, fast.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from decaylab.ops.precision import full_precision


@full_precision
def chunked_decay_linear_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    log_decay: torch.Tensor,
    *,
    scale: float = 1.0,
    initial_state: torch.Tensor | None = None,
    output_final_state: bool = False,
    chunk_size: int = 64,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Shapes as in :func:`decaylab.ops.decay_linear_attention`; ``chunk_size`` need not divide T."""
    B, T, H, K = q.shape
    in_dtype, dtype = q.dtype, torch.promote_types(q.dtype, torch.float32)
    q, k, v, g = (t.to(dtype).transpose(1, 2) for t in (q, k, v, log_decay))  # [B, H, T, ...]
    g = g if g.ndim == 4 else g.unsqueeze(-1).expand(B, H, T, K)  # scalar decay: the same for every channel
    state = q.new_zeros(B, H, K, v.shape[-1]) if initial_state is None else initial_state.to(dtype)
    outputs = []
    for start in range(0, T, chunk_size):
        qc, kc, vc, gc = (t[:, :, start : start + chunk_size] for t in (q, k, v, g))
        b = gc.cumsum(dim=2)  # [B, H, C, K] decay from the chunk start through each token
        n = b.shape[2]
        causal = torch.ones(n, n, dtype=torch.bool, device=q.device).tril()
        # decay from s to t per channel, zero above the diagonal (exp(-inf)), never exp of a positive number
        gap = (b[:, :, :, None, :] - b[:, :, None, :, :]).masked_fill(~causal[:, :, None], -torch.inf)
        scores = torch.einsum("bhtc,bhsc,bhtsc->bhts", qc, kc, gap.exp())
        inter = torch.einsum("bhtc,bhcv->bhtv", qc * b.exp(), state)
        outputs.append(scale * (inter + scores @ vc))
        last = b[:, :, -1:, :]  # [B, H, 1, K]
        state = last.transpose(-1, -2).exp() * state + (kc * (last - b).exp()).transpose(-1, -2) @ vc
    o = torch.cat(outputs, dim=2) if outputs else F.pad(q[..., :0], (0, v.shape[-1]))
    return o.transpose(1, 2).to(in_dtype), (state if output_final_state else None)
