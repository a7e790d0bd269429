"""Positional encodings for q and k, and LightNet's TPE on the layer input; registered in ``POSITIONAL_ENCODINGS``.

With t the absolute position (a decode offset included; a ``[B]`` tensor offset gives each row its own) and
theta_i = base^(-2i/K):

* ``none``: q, k unchanged.
* ``rope``: standard rotary embedding in the rotate-half layout: channel i pairs with i + K/2, and
  (x_i, x_{i+K/2}) -> (x_i cos t theta_i - x_{i+K/2} sin t theta_i, x_{i+K/2} cos t theta_i + x_i sin t theta_i).
  With vector decay both channels of a pair must share one decay (a rotation commutes with diag(lambda) only
  then), so the decay gives K/2 values per head and ``widen_channels`` tiles them, [lambda, lambda], onto the
  pair layout. Softmax attention uses the same rotation.
* ``lrpe``: the paper's cosine form. theta_c = base^(-2c/K) for c < K/2 and 0 for the second half;
  x -> [x * cos(t theta), x * sin(t theta)], so q_t . k_s = sum_c q_c k_c cos((t - s) theta_c). q and k double
  to 2K; a vector decay is repeated over the cos and sin copies (``widen_decay``).
* ``tpe``: LightNet's temporal PE, a module on the layer input instead of q and k (``input_module``):
  y_t = o_proj(RMSNorm(o_t)), o_t = (qbar_h . kbar_h) sum_{s<=t} lambda_h^(t-s) x_{s,h}, lambda_h = sigmoid(w_h);
  it replaces the embedding output (not a residual). It does not shift layer indices.

``rope`` and ``lrpe`` compute through :mod:`decaylab.ops.positional` (one-launch Triton kernels for q and k on CUDA,
torch code elsewhere) with the angle tables cached here.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from decaylab.layers.norms import RMSNorm
from decaylab.ops import decay_linear_attention, positional
from decaylab.registry import Registry

POSITIONAL_ENCODINGS: Registry = Registry("positional encoding")


class AngleTable:
    """cos and sin of t * theta for positions t = 0 .. n - 1, per device and dtype, grown by doubling.

    Computing the angles on every call cost a host-to-device copy of theta and a handful of kernels per layer and
    call (2-3x the whole training step of a small model); a slice of a cached table costs nothing. The values
    are those of the direct formula: t is an exact integer in the table's dtype, so t * theta rounds the same.
    With ``rotate_half`` the tables are RoPE's full-width ones, [cos, cos] and [-sin, sin]
    (``decaylab.ops.positional.rope``).
    """

    def __init__(self, theta: torch.Tensor, rotate_half: bool = False):
        self.theta = theta  # [C] fp64 on the CPU
        self.rotate_half = rotate_half
        self.tables: dict[tuple[torch.device, torch.dtype], tuple[torch.Tensor, torch.Tensor]] = {}
        # theta per device and dtype, copied from the host once: a copy inside a CUDA graph capture would fail
        self.thetas: dict[tuple[torch.device, torch.dtype], torch.Tensor] = {}

    def _cos_sin(self, angle: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        cos, sin = angle.cos(), angle.sin()
        if self.rotate_half:
            return torch.cat([cos, cos], dim=-1), torch.cat([-sin, sin], dim=-1)
        return cos, sin

    def __call__(self, offset: int | torch.Tensor, T: int, dtype, device) -> tuple[torch.Tensor, torch.Tensor]:
        """``(cos, sin)``, each ``[T, 1, C]`` (2C with rotate_half) for positions offset .. offset + T - 1
        (broadcast over heads).

        A ``[B]`` tensor offset gives each row its own positions (a left-padded batch decoding rows of different
        lengths): ``[B, T, 1, C]``, computed directly (reading the table would need the largest offset on the host).
        """
        key = (torch.device(device), dtype)
        if key not in self.thetas:
            self.thetas[key] = self.theta.to(device=device, dtype=dtype)
        theta = self.thetas[key]
        if isinstance(offset, torch.Tensor):
            t = offset.to(device=device, dtype=dtype)[:, None] + torch.arange(T, device=device, dtype=dtype)
            return self._cos_sin((t[..., None] * theta)[..., None, :])
        cos, sin = self.tables.get(key, (None, None))
        if cos is None or cos.shape[0] < offset + T:
            n = max(offset + T, 2 * (0 if cos is None else cos.shape[0]), 64)
            t = torch.arange(n, device=device, dtype=dtype)
            cos, sin = self._cos_sin((t[:, None] * theta[None, :])[:, None, :])
            self.tables[key] = (cos, sin)
        return cos[offset : offset + T], sin[offset : offset + T]


class PositionalEncoding(nn.Module):
    """Identity encoding; the base of the others. Acts on ``[B, T, H, K]`` q and k."""

    acts_on_input = False

    def __init__(self, head_dim: int, base: float = 10000.0):
        super().__init__()
        self.head_dim = head_dim
        self.base = base

    @property
    def decay_channels(self) -> int:
        """Vector-decay values per head the decay must produce."""
        return self.head_dim

    @property
    def qk_dim(self) -> int:
        """Width of q and k after the encoding."""
        return self.head_dim

    def widen_channels(self, x: torch.Tensor) -> torch.Tensor:
        """``[..., decay_channels] -> [..., head_dim]`` (vector log decay and shared key, before the encoding)."""
        return x

    def widen_decay(self, log_decay: torch.Tensor) -> torch.Tensor:
        """``[..., head_dim] -> [..., qk_dim]`` (vector log decay, matching the encoded q and k)."""
        return log_decay

    def forward(self, q: torch.Tensor, k: torch.Tensor, offset: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
        return q, k

    @staticmethod
    def input_module(d_model: int, n_heads: int, eps: float) -> nn.Module | None:
        """A module applied to the embedding output, or None."""
        return None


POSITIONAL_ENCODINGS.register("none")(PositionalEncoding)


@POSITIONAL_ENCODINGS.register("rope")
class RotaryEncoding(PositionalEncoding):
    def __init__(self, head_dim: int, base: float = 10000.0):
        super().__init__(head_dim, base)
        if head_dim % 2:
            raise ValueError(f"pos='rope' needs an even head dimension; got {head_dim} (change d_model or n_heads)")
        # A plain CPU fp64 tensor (not a buffer): exact angles whatever the module dtype or device.
        self.theta = base ** (-torch.arange(0, head_dim, 2, dtype=torch.float64, device="cpu") / head_dim)  # [K/2]
        self.angles = AngleTable(self.theta, rotate_half=True)

    @property
    def decay_channels(self) -> int:
        return self.head_dim // 2

    def widen_channels(self, x):
        return torch.cat([x, x], dim=-1)  # channel i and i + K/2 form one rotated pair

    def forward(self, q, k, offset=0):
        cos, sin = self.angles(offset, q.shape[1], torch.promote_types(q.dtype, torch.float32), q.device)
        return positional.rope(q, k, cos, sin)  # [(B,) T, 1, K] tables in the rotate-half layout


@POSITIONAL_ENCODINGS.register("lrpe")
class CosineEncoding(PositionalEncoding):
    def __init__(self, head_dim: int, base: float = 10000.0):
        super().__init__(head_dim, base)
        half = head_dim // 2
        theta = torch.zeros(head_dim, dtype=torch.float64, device="cpu")
        theta[:half] = base ** (-2.0 * torch.arange(half, dtype=torch.float64, device="cpu") / head_dim)
        self.theta = theta  # [K]; the second half carries no position signal
        self.angles = AngleTable(theta)

    @property
    def qk_dim(self) -> int:
        return 2 * self.head_dim

    def widen_decay(self, log_decay):
        return torch.cat([log_decay, log_decay], dim=-1)  # the cos and sin copies of a channel share its decay

    def forward(self, q, k, offset=0):
        cos, sin = self.angles(offset, q.shape[1], torch.promote_types(q.dtype, torch.float32), q.device)
        return positional.lrpe(q, k, cos, sin)  # [B, T, H, 2K]


class TemporalPositionEncoding(nn.Module):
    """LightNet's TPE: a fixed-query, fixed-key, scalar-decay linear attention over the embeddings."""

    def __init__(self, d_model: int, n_heads: int, eps: float = 1e-5):
        super().__init__()
        self.n_heads = n_heads
        self.query = nn.Parameter(torch.ones(d_model))  # qbar, per head [H, e]
        self.key = nn.Parameter(torch.ones(d_model))  # kbar
        self.decay_logit = nn.Parameter(torch.zeros(n_heads))  # lambda_h = sigmoid(w_h) = 0.5 at init
        for p in (self.query, self.key, self.decay_logit):
            p._no_weight_decay = True
        self.norm = RMSNorm(d_model, eps)
        self.o_proj = nn.Linear(d_model, d_model, bias=False)
        self.backend = "auto"

    @torch.no_grad()
    def reset_parameters(self) -> None:
        self.query.fill_(1.0)
        self.key.fill_(1.0)
        self.decay_logit.zero_()

    def forward(self, x: torch.Tensor, state: torch.Tensor | None = None, output_state: bool = False):
        """x ``[B, T, d]``; state ``[B, H, 1, e]``. Returns ``(y [B, T, d], state or None)``."""
        B, T, d = x.shape
        H = self.n_heads
        v = x.view(B, T, H, d // H)
        coef = (self.query.view(H, -1) * self.key.view(H, -1)).sum(-1)  # qbar . kbar per head, [H]
        q = coef.to(x.dtype).view(1, 1, H, 1).expand(B, T, H, 1)
        k = torch.ones_like(q)
        dtype = torch.promote_types(x.dtype, torch.float32)
        log_decay = F.logsigmoid(self.decay_logit.to(dtype)).expand(B, T, H)
        o, state = decay_linear_attention(  # logsigmoid: no value check, which would sync with the GPU
            q, k, v, log_decay, initial_state=state, output_final_state=output_state, backend=self.backend,
            check_decay=False,
        )
        return self.o_proj(self.norm(o.reshape(B, T, d))), state


@POSITIONAL_ENCODINGS.register("tpe")
class TemporalEncodingSpec(PositionalEncoding):
    """``pos='tpe'``: q and k stay as they are; the model puts a TemporalPositionEncoding after the embedding."""

    acts_on_input = True

    @staticmethod
    def input_module(d_model: int, n_heads: int, eps: float) -> nn.Module:
        return TemporalPositionEncoding(d_model, n_heads, eps)
