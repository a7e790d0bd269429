"""The positional-encoding ops on CPU: the torch code against the definitions, its dispatch, the kernels' checks.

The Triton kernels themselves are checked under the interpreter (test_positional_triton.py) and compiled for sm_90
(test_positional_compile.py).
"""

from __future__ import annotations

import pytest
import torch

from decaylab.layers.positional import AngleTable, CosineEncoding, RotaryEncoding
from decaylab.ops import positional


def _rope_tables(K: int, T: int, offset: int, dtype=torch.float32):
    theta = 10000.0 ** (-torch.arange(0, K, 2, dtype=torch.float64) / K)
    return AngleTable(theta, rotate_half=True)(offset, T, dtype, "cpu")


def _lrpe_tables(K: int, T: int, offset: int, dtype=torch.float32):
    return AngleTable(CosineEncoding(K).theta)(offset, T, dtype, "cpu")


def _half_width_rope(x, cos, sin):
    """The rotation as four half-width products (how RoPE was computed before the full-width tables)."""
    C = x.shape[-1] // 2
    c, s = cos[..., :C], sin[..., C:]
    x1, x2 = x.to(cos.dtype).chunk(2, dim=-1)
    return torch.cat([x1 * c - x2 * s, x2 * c + x1 * s], dim=-1).to(x.dtype)


def _values_and_grads(fn, q, k, *tables, seed=0):
    q, k = (t.detach().clone().requires_grad_() for t in (q, k))
    qe, ke = fn(q, k, *tables)
    g = torch.Generator().manual_seed(seed)
    dq_out, dk_out = (torch.randn(tuple(t.shape), generator=g).to(t.dtype) for t in (qe, ke))
    dq, dk = torch.autograd.grad([qe, ke], [q, k], [dq_out, dk_out])
    return qe.detach(), ke.detach(), dq, dk


def test_angle_table_rotate_half_layout():
    K, T, offset = 8, 5, 3
    cos, sin = _rope_tables(K, T, offset, torch.float64)
    theta = 10000.0 ** (-torch.arange(0, K, 2, dtype=torch.float64) / K)
    angle = torch.arange(offset, offset + T, dtype=torch.float64)[:, None, None] * theta
    assert cos.shape == sin.shape == (T, 1, K)
    assert torch.equal(cos, torch.cat([angle.cos(), angle.cos()], -1))
    assert torch.equal(sin, torch.cat([-angle.sin(), angle.sin()], -1))
    row_cos, row_sin = AngleTable(theta, rotate_half=True)(torch.tensor([offset, 0]), T, torch.float64, "cpu")
    assert row_cos.shape == (2, T, 1, K) and torch.equal(row_cos[0], cos) and torch.equal(row_sin[0], sin)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_rope_full_width_form_gives_the_half_width_bits(dtype):
    """y = x cos + [x2, x1] sin rounds exactly as the four half-width products, forward and backward."""
    g = torch.Generator().manual_seed(1)
    q, k = (torch.randn(2, 13, 3, 32, generator=g).to(dtype) for _ in range(2))
    cos, sin = _rope_tables(32, 13, 7)
    new = _values_and_grads(positional.rope, q, k, cos, sin)
    old = _values_and_grads(lambda a, b, c, s: (_half_width_rope(a, c, s), _half_width_rope(b, c, s)), q, k, cos, sin)
    for name, a, b in zip(("q", "k", "dq", "dk"), new, old):
        assert a.dtype == dtype and torch.equal(a, b), name


def test_rope_is_a_rotation_of_half_pairs():
    K, T, offset = 16, 9, 4
    q = torch.randn(2, T, 3, K, dtype=torch.float64)
    cos, sin = _rope_tables(K, T, offset, torch.float64)
    qe, _ = positional.rope(q, q, cos, sin)
    t = torch.arange(offset, offset + T, dtype=torch.float64)[:, None, None]
    theta = 10000.0 ** (-torch.arange(0, K, 2, dtype=torch.float64) / K)
    z = torch.complex(q[..., : K // 2], q[..., K // 2 :]) * torch.exp(1j * t * theta)
    torch.testing.assert_close(qe, torch.cat([z.real, z.imag], -1), rtol=1e-12, atol=1e-12)


def test_lrpe_is_cos_and_sin_copies():
    K, T, offset = 6, 5, 2
    q, k = torch.randn(2, 2, T, 3, K, dtype=torch.float64)
    cos, sin = _lrpe_tables(K, T, offset, torch.float64)
    qe, ke = positional.lrpe(q, k, cos, sin)
    assert qe.shape == (2, T, 3, 2 * K)
    torch.testing.assert_close(qe, torch.cat([q * cos, q * sin], -1), rtol=0, atol=0)
    torch.testing.assert_close(ke, torch.cat([k * cos, k * sin], -1), rtol=0, atol=0)


class _NoKernels:
    """Stands in for the Triton module: any call fails the test."""

    def __getattr__(self, name):
        raise AssertionError(f"the kernels ran ({name}) where the torch code should")


def test_cpu_tensors_take_the_torch_code(monkeypatch):
    monkeypatch.setattr(positional, "_triton", _NoKernels())
    q = torch.randn(1, 4, 2, 8)
    for module in (RotaryEncoding(8), CosineEncoding(8)):
        module(q, q, 3)
        with positional.use_kernels(False):
            module(q, q, 3)


def test_per_row_offsets_take_the_torch_code_even_when_kernels_are_asked_for(monkeypatch):
    monkeypatch.setattr(positional, "_triton", _NoKernels())
    q = torch.randn(2, 3, 2, 8)
    rope = RotaryEncoding(8)
    with positional.use_kernels(True):
        rows, _ = rope(q, q, torch.tensor([0, 5]))
    assert torch.equal(rows[0], rope(q[:1], q[:1], 0)[0][0]) and torch.equal(rows[1], rope(q[1:], q[1:], 5)[0][0])


@pytest.fixture
def triton_positional():
    return pytest.importorskip("decaylab.ops.triton.positional", exc_type=ImportError)


def test_kernels_on_cpu_say_how_to_run_them(triton_positional):
    q = torch.randn(1, 4, 2, 8)
    cos, sin = _rope_tables(8, 4, 0)
    with pytest.raises(ValueError, match="run on CUDA tensors.*TRITON_INTERPRET=1"):
        triton_positional.rope(q, q, cos, sin)
    with positional.use_kernels(True), pytest.raises(ValueError, match="run on CUDA tensors"):
        RotaryEncoding(8)(q, q, 0)


@pytest.mark.parametrize("make, match", [
    (lambda q, c: (q, q[:, :3], c, c), "of one shape"),
    (lambda q, c: (q.double(), q.double(), c, c), "float16, bfloat16 or float32"),
    (lambda q, c: (q, q, c.double(), c.double()), "float32 \\[T, 1, K\\]"),
    (lambda q, c: (q, q, c[:3], c[:3]), "float32 \\[T, 1, K\\] = \\[4, 1, 8\\]"),
    (lambda q, c: (q, q, c.expand(2, 4, 1, 8), c.expand(2, 4, 1, 8)), "per-row"),
])  # fmt: skip
def test_kernels_reject_bad_inputs_with_the_fix(triton_positional, make, match):
    q = torch.randn(1, 4, 2, 8)
    cos, _ = _rope_tables(8, 4, 0)
    with pytest.raises(ValueError, match=match):
        triton_positional.lrpe(*make(q, cos))
