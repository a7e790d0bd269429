"""Token-by-token decayed linear attention: the ground truth every other backend is tested against.

Per head, with state S in R^{K x V}:

    S_t = diag(exp(log_decay_t)) S_{t-1} + k_t v_t^T,    o_t = scale * S_t^T q_t

It is also the one-token decode step (T = 1): ``backend="auto"`` picks it for T = 1 on CPU. Computation runs
in fp32 (fp64 for fp64 inputs), also under autocast.
"""

from __future__ import annotations

import torch

from decaylab.ops.precision import full_precision


@full_precision
def recurrent_decay_linear_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    log_decay: torch.Tensor,
    *,
    scale: float = 1.0,
    initial_state: torch.Tensor | None = None,
    output_final_state: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Reference recurrence; shapes as in :func:`decaylab.ops.decay_linear_attention`."""
    B, T, H, K = q.shape
    V = v.shape[-1]
    in_dtype = q.dtype
    dtype = torch.promote_types(in_dtype, torch.float32)
    q, k, v = q.to(dtype), k.to(dtype), v.to(dtype)
    decay = log_decay.to(dtype).exp()
    if decay.ndim == 3:  # scalar decay: one per head, broadcast over the key channels
        decay = decay.unsqueeze(-1)
    state = q.new_zeros(B, H, K, V) if initial_state is None else initial_state.to(dtype)
    outputs = []
    for t in range(T):
        # S = diag(lambda) S + k v^T, then o = S^T q as a [1, K] x [K, V] product per head
        state = torch.addcmul(k[:, t, :, :, None] * v[:, t, :, None, :], decay[:, t, :, :, None], state)
        outputs.append(torch.matmul(q[:, t, :, None, :], state).squeeze(-2))  # [B, H, V]
    o = torch.stack(outputs, dim=1) * scale if outputs else q.new_zeros(B, 0, H, V)  # [B, T, H, V]
    return o.to(in_dtype), (state if output_final_state else None)
