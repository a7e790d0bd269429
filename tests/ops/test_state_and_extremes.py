"""State carry across calls, and finite, accurate results for extreme decays in every input dtype."""

from __future__ import annotations

import pytest
import torch

from decaylab.ops import decay_linear_attention
from tests.conftest import TOLERANCE, assert_close
from tests.ops.helpers import make_inputs, run

BACKENDS = ["recurrent", "parallel", "chunk"]


@pytest.mark.parametrize("decay", ["scalar", "vector"])
@pytest.mark.parametrize("backend", BACKENDS)
def test_two_halves_equal_one_pass(backend, decay):
    q, k, v, ld, h0 = make_inputs(2, 150, 2, 6, 5, vector=decay == "vector", initial_state=True)
    cut = 67  # not a chunk boundary
    kwargs = dict(scale=0.5, output_final_state=True, backend=backend)
    o_all, s_all = decay_linear_attention(q, k, v, ld, initial_state=h0, **kwargs)
    o_1, s_1 = decay_linear_attention(q[:, :cut], k[:, :cut], v[:, :cut], ld[:, :cut], initial_state=h0, **kwargs)
    o_2, s_2 = decay_linear_attention(q[:, cut:], k[:, cut:], v[:, cut:], ld[:, cut:], initial_state=s_1, **kwargs)
    tol = TOLERANCE[torch.float64]
    assert_close("o", o_all, torch.cat([o_1, o_2], dim=1), tol)
    assert_close("final_state", s_all, s_2, tol)


def _extreme_log_decay(kind, shape, seed=3):
    g = torch.Generator().manual_seed(seed)
    if kind == "zero":  # lambda = 1 exactly: nothing is ever forgotten
        return torch.zeros(shape, dtype=torch.float64)
    if kind == "minus1000":  # lambda = exp(-1000): everything is forgotten at every step
        return torch.full(shape, -1e3, dtype=torch.float64)
    # mixed: 0, -1e3 and moderate decays side by side, so large and small exponents meet in one chunk
    choice = torch.randint(0, 3, shape, generator=g)
    moderate = torch.nn.functional.logsigmoid(torch.randn(shape, generator=g, dtype=torch.float64) + 2)
    return torch.where(choice == 0, 0.0, torch.where(choice == 1, -1e3, moderate))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("kind", ["zero", "minus1000", "mixed"])
@pytest.mark.parametrize("decay", ["scalar", "vector"])
@pytest.mark.parametrize("backend", ["parallel", "chunk"])
def test_extreme_decays_finite_and_close(backend, decay, kind, dtype):
    B, T, H, K, V = 1, 100, 2, 8, 4
    shape = (B, T, H, K) if decay == "vector" else (B, T, H)
    q, k, v, ld, h0 = make_inputs(B, T, H, K, V, vector=decay == "vector", dtype=dtype, initial_state=True,
                                  log_decay=_extreme_log_decay(kind, shape))
    h0 = h0.float()
    # The fp64 reference sees exactly the same (rounded) inputs, so only the op's own error is measured.
    ref = run("recurrent", *(x.double() for x in (q, k, v, ld, h0)), scale=0.5)
    out = run(backend, q, k, v, ld, h0, scale=0.5)
    for name, value in out.items():
        assert torch.isfinite(value).all(), f"{name} has non-finite values"
    # Gradients that vanish in exact arithmetic (e.g. of a log decay that multiplies a zero state) come out as
    # rounding-level noise: judge those against the scale of the problem, not against zero.
    scale = ref["dq"].abs().max().item()
    assert out["o"].dtype == dtype and out["final_state"].dtype == torch.float32
    for name in ref:
        assert_close(name, ref[name], out[name], TOLERANCE[dtype], atol=TOLERANCE[dtype] * scale)
