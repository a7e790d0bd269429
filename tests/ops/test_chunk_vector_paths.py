"""The two intra-chunk paths for vector decay: factored (one matmul per chunk) and halving (exact, any decay).

Each is checked against the other and against the fp64 recurrence; calls whose chunks take different paths,
spans at the factored path's limit, and overflow above the diagonal are covered.
"""

from __future__ import annotations

import pytest
import torch

from decaylab.ops.chunk import chunk_decay_linear_attention, factored, halving, intra
from tests.conftest import TOLERANCE, assert_close
from tests.ops.helpers import make_inputs, run


def _tile(G, C, K, *, seed=0, shift=0.0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    q, k = (torch.randn(G, C, K, generator=g, dtype=torch.float64) for _ in range(2))
    ld = torch.nn.functional.logsigmoid(torch.randn(G, C, K, generator=g, dtype=torch.float64)) + shift
    return q.to(dtype), k.to(dtype), ld.to(dtype)


def _both_paths(q, k, ld, dA):
    """(A, dq, dk) from the factored path and from the halving path on the same tile."""
    G, C, K = q.shape
    results = []
    for path in ("factored", "halving"):
        A, dq, dk = q.new_empty(G, C, C), torch.empty_like(q), torch.empty_like(k)
        if path == "factored":
            work = factored.Workspace(q, G)
            e = factored.exponents(ld, work)
            assert bool(factored.within_limit(e).all())
            factored.scores(q, k, e.clone(), A, work)
            factored.scores_backward(dA.clone(), q, k, factored.exponents(ld, work), dq, dk, work)
        else:
            work = halving.Workspace(q, G, backward=True)
            halving.scores(q, k, ld, A, work)
            halving.scores_backward(dA.clone(), q, k, ld, dq, dk, work)
        results.append((A, dq, dk))
    return results


@pytest.mark.parametrize("C", [1, 2, 16, 64])
def test_factored_matches_halving_fp64(C):
    q, k, ld = _tile(5, C, 7, seed=C)
    dA = torch.randn(5, C, C, dtype=torch.float64)  # the upper triangle must be ignored by both
    (A_f, dq_f, dk_f), (A_h, dq_h, dk_h) = _both_paths(q, k, ld, dA)
    assert torch.equal(A_f.triu(1), torch.zeros_like(A_f))
    for name, ref, out in (("A", A_h, A_f), ("dq", dq_h, dq_f), ("dk", dk_h, dk_f)):
        assert_close(name, ref, out, TOLERANCE[torch.float64])


def test_typical_decays_take_the_factored_path_and_strong_ones_the_halving_path(monkeypatch):
    calls = {"factored": 0, "halving": 0}
    for name, module in (("factored", factored), ("halving", halving)):
        for fn in ("scores", "scores_backward"):
            original = getattr(module, fn)

            def counted(*args, _original=original, _name=name, **kwargs):
                calls[_name] += 1
                return _original(*args, **kwargs)

            monkeypatch.setattr(module, fn, counted)
    # logsigmoid(randn + 2): every 64-token chunk spans far less than the limit.
    inputs = make_inputs(1, 128, 2, 8, 4, vector=True, dtype=torch.float32)
    run("chunk", *inputs)
    assert calls == {"factored": 2, "halving": 0}
    # -5 per token: about 160 nats from the middle of a chunk to either end, over the 40-nat float32 limit.
    q, k, v, ld, h0 = inputs
    run("chunk", q, k, v, ld - 5.0, h0)
    assert calls == {"factored": 2, "halving": 2}


def test_without_the_per_chunk_pick_every_chunk_takes_the_halving_path_and_matches_recurrent(monkeypatch):
    """Under CUDA graph capture the per-chunk pick is skipped (it reads the decays on the host): forced here on CPU,
    every chunk, typical or strong, runs the halving path, with the recurrence's results."""
    monkeypatch.setattr(intra, "plans_per_chunk", lambda like: False)
    calls = {"factored": 0, "halving": 0}
    for name, module in (("factored", factored), ("halving", halving)):
        original = module.scores

        def counted(*args, _original=original, _name=name, **kwargs):
            calls[_name] += 1
            return _original(*args, **kwargs)

        monkeypatch.setattr(module, "scores", counted)
    B, T, H, K, V = 2, 300, 2, 6, 5
    q, k, v, ld, h0 = make_inputs(B, T, H, K, V, vector=True, initial_state=True, log_decay=_mixed_log_decay(B, T, H, K))
    ref = run("recurrent", q, k, v, ld, h0, scale=0.6)
    out = run("chunk", q, k, v, ld, h0, scale=0.6)
    assert calls["factored"] == 0 and calls["halving"] > 0
    for name in ref:
        assert_close(name, ref[name], out[name], TOLERANCE[torch.float64])


def _mixed_log_decay(B, T, H, K, seed=2):
    """Typical decays, with a few chunks (and single heads) of strong ones and -1e3 resets."""
    g = torch.Generator().manual_seed(seed)
    ld = torch.nn.functional.logsigmoid(torch.randn(B, T, H, K, generator=g, dtype=torch.float64) + 2)
    ld[:, 64:128, 0] -= 4.0  # one chunk of one head: over the float32 and float64 limits
    ld[:, 200, 1, :3] = -1e3  # a reset in a few channels
    return ld


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=str)
def test_chunks_on_different_paths_match_recurrent(dtype):
    B, T, H, K, V = 2, 300, 2, 6, 5
    q, k, v, ld, h0 = make_inputs(B, T, H, K, V, vector=True, initial_state=True, log_decay=_mixed_log_decay(B, T, H, K))
    ref = run("recurrent", q, k, v, ld, h0, scale=0.6)
    q, k, v, ld_in = (x.to(dtype) for x in (q, k, v, ld))
    out = run("chunk", q, k, v, ld_in, h0.to(torch.float32) if dtype == torch.float32 else h0, scale=0.6)
    scale = ref["dq"].abs().max().item()
    for name in ref:
        assert torch.isfinite(out[name]).all(), name
        assert_close(name, ref[name], out[name], TOLERANCE[dtype], atol=TOLERANCE[dtype] * scale)


def test_float32_at_the_span_limit_is_accurate():
    # Constant decays that put both ends of every chunk just inside the 40-nat limit: the factors reach e^+-39,
    # where the factored path's rounding is largest (about u * 80 relative on the entries near the diagonal).
    B, T, H, K, V = 1, 256, 2, 8, 8
    per_token = -39.0 / 32  # from the middle token (32) to either end of a 64-token chunk
    ld = torch.full((B, T, H, K), per_token, dtype=torch.float64)
    ld[..., ::2] *= torch.rand(B, T, H, K // 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    q, k, v, ld, h0 = make_inputs(B, T, H, K, V, vector=True, initial_state=True, log_decay=ld, dtype=torch.float32)
    chunks = ld[0].transpose(0, 1).reshape(-1, 64, K).float()  # [H * T/64, 64, K]
    e = factored.exponents(chunks, factored.Workspace(chunks, len(chunks)))
    assert bool(factored.within_limit(e).all()) and e.abs().max() > 38
    ref = run("recurrent", *(x.double() for x in (q, k, v, ld)), h0)
    out = run("chunk", q, k, v, ld, h0.float())
    scale = ref["dq"].abs().max().item()
    for name in ref:
        assert_close(name, ref[name], out[name], TOLERANCE[torch.float32], atol=TOLERANCE[torch.float32] * scale)


def test_overflow_above_the_diagonal_is_selected_away():
    # Large q, k and spans at the limit: the products above the diagonal overflow float32 to inf (and inf - inf
    # to NaN inside the matmul); the causal select must drop them and leave every output and gradient finite.
    G, C, K = 3, 64, 16
    q, k, _ = _tile(G, C, K, dtype=torch.float32)
    q, k = q * 1e3, k * 1e3
    ld = torch.full((G, C, K), -39.5 / 32)  # e = +39.5 at the first token, -38.3 at the last
    work = factored.Workspace(q, G)
    e = factored.exponents(ld, work)
    assert bool(factored.within_limit(e).all())
    raw = (q * e.exp()) @ (k * (-e).exp()).transpose(-1, -2)
    assert not torch.isfinite(raw.triu(1)).all()  # the case is real: the unmasked product overflows
    A, dq, dk = torch.empty(G, C, C), torch.empty_like(q), torch.empty_like(k)
    factored.scores(q, k, e, A, work)
    factored.scores_backward(torch.randn(G, C, C), q, k, factored.exponents(ld, work), dq, dk, work)
    ref = torch.empty(G, C, C, dtype=torch.float64)
    halving.scores(q.double(), k.double(), ld.double(), ref, halving.Workspace(q.double(), G, backward=False))
    assert torch.isfinite(A).all() and torch.isfinite(dq).all() and torch.isfinite(dk).all()
    assert_close("A", ref, A, TOLERANCE[torch.float32])


def test_within_limit_uses_the_chunk_ends():
    ld = torch.full((2, 64, 4), -1.0)
    ld[1, :, 2] = -1.5  # 1.5 * 32 = 48 nats from the first token to the middle one: over 40
    e = factored.exponents(ld, factored.Workspace(ld, 2))
    assert factored.within_limit(e).tolist() == [True, False]
    assert intra.VectorWorkspace(ld, 2, backward=False).factored.exponent.shape == (2, 64, 4)


def test_chunk_sizes_with_strong_vector_decay():
    # Every chunk size over the halving path (fp64, 450 nats per token: past the float64 limit).
    inputs = list(make_inputs(1, 77, 2, 6, 3, vector=True, initial_state=True))
    inputs[3] = inputs[3] - 450.0
    ref = run("recurrent", *inputs)
    for C in (2, 8, 64):
        out = run(chunk_decay_linear_attention, *inputs, chunk_size=C)
        for name in ref:
            assert_close(f"C{C}/{name}", ref[name], out[name], TOLERANCE[torch.float64], atol=1e-12)
