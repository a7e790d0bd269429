"""Triton backend on a CUDA GPU: bf16/fp16/fp32 forward, final state and every gradient vs the fp64 recurrence.

Skipped without CUDA (the ``gpu`` marker). bf16 is only testable here: the CPU interpreter's bf16 dot is broken.
"""

from __future__ import annotations

import pytest
import torch

from tests.conftest import rel_rms_error

# Relative RMS error allowed per input dtype, for o, the final state and every gradient.
RATIO = {torch.bfloat16: 5e-3, torch.float16: 5e-3, torch.float32: 1e-4}


def _run(B, T, H, K, V, vector, dtype, lowest, offsets=None, overrides=None):
    from decaylab.ops.triton.check import against_reference

    return against_reference(B, T, H, K, V, vector, dtype, lowest, offsets, overrides)


CASES = [
    pytest.param(2, 333, 2, D, D, vector, dtype, lowest, None,
                 id=f"{'vector' if vector else 'scalar'}-B2-T333-H2-D{D}-{str(dtype)[6:]}-decay{lowest}")
    for D in (64, 128, 256) for vector in (False, True) for dtype in (torch.bfloat16, torch.float16, torch.float32)
    for lowest in (-5.0, 0.0)
] + [
    pytest.param(1, 600, 2, 128, 128, vector, torch.bfloat16, -1.0, [0, 100, 101, 357, 600],
                 id=f"{'vector' if vector else 'scalar'}-varlen-T600-D128-bf16")
    for vector in (False, True)
] + [
    pytest.param(2, 333, 2, K, V, vector, torch.bfloat16, -5.0, None,
                 id=f"{'vector' if vector else 'scalar'}-B2-T333-H2-K{K}-V{V}-bf16-decay-5.0")
    for K, V in ((64, 128), (128, 64), (32, 64), (128, 256)) for vector in (False, True)
] + [
    pytest.param(1, 4096, 2, 128, 128, vector, torch.bfloat16, -5.0, None,
                 id=f"{'vector' if vector else 'scalar'}-B1-T4096-H2-D128-bf16-decay-5.0")
    for vector in (False, True)
]


@pytest.mark.gpu
@pytest.mark.parametrize("B,T,H,K,V,vector,dtype,lowest,offsets", CASES)
def test_triton_matches_recurrence_on_gpu(B, T, H, K, V, vector, dtype, lowest, offsets):
    for name, (out, ref) in _run(B, T, H, K, V, vector, dtype, lowest, offsets).items():
        assert torch.isfinite(out).all(), f"{name}: non-finite values"
        ratio = RATIO[dtype]
        err = rel_rms_error(ref, out)
        assert err < ratio, f"{name}: relative RMS error {err:.3e} >= {ratio:.1e}"


# Scalar-decay backwards. The two sweeps (the low-memory path, no stored chunk states) miss 5e-3 on the bf16 gate
# gradient at D64: 5.3e-3 / 5.8e-3 / 6.5e-3 on 64/32/16-token chunks in the varlen case below (3.5e-3 to 4.3e-3 at
# D128), so their gate gradient is held to GATE_RATIO_SEQUENTIAL; the chunk-parallel default restarts the gate
# gradient at every chunk end and holds 5e-3 like every other tensor.
GATE_RATIO_SEQUENTIAL = 7e-3
# Every option named (not left to the pinned config, which changes with the sweeps). hopper_sweeps (sm_90 only) is
# on in the modes whose chunks allow it, so that the Gluon forward (and dv sweep) runs with those backwards, except
# "chunk-parallel-dv-in-sweep", which keeps the Triton dv sweep tested on sm_90 too; hopper_dqk (the Gluon dq/dk
# kernel) with the recomputed states and separate dv kernel (the pinned plan and the hopper test run it otherwise),
# the Triton dq/dk kernel in the other chunk-parallel modes.
SCALAR_BACKWARDS = {
    "sequential": dict(chunk_parallel_backward=False, save_states=False, fused_dv=False, dv_in_sweep=False,
                       dv_sweep_num_stages=0, spans_per_program=1, bwd_chunk=32, hopper_sweeps=False,
                       hopper_dqk=False),
    "chunk-parallel-recomputed-states": dict(chunk_parallel_backward=True, save_states=False, fused_dv=False,
                                             dv_in_sweep=False, dv_sweep_num_stages=0, bwd_key_block=0,
                                             bwd_value_block=0, hopper_sweeps=True, hopper_dqk=True),
    "chunk-parallel-saved-states-blocks32": dict(chunk_parallel_backward=True, save_states=True, fused_dv=False,
                                                 dv_in_sweep=False, dv_sweep_num_stages=0, bwd_key_block=32,
                                                 bwd_value_block=32, hopper_sweeps=True, hopper_dqk=False),
    "chunk-parallel-dv-in-sweep": dict(chunk_parallel_backward=True, save_states=True, fused_dv=False,
                                       dv_in_sweep=True, bwd_key_block=0, bwd_value_block=0, hopper_sweeps=False,
                                       hopper_dqk=False),
    "chunk-parallel-dv-in-sweep-2-stages-blocks64": dict(chunk_parallel_backward=True, save_states=True,
                                                         fused_dv=False, dv_in_sweep=True, dv_sweep_num_stages=2,
                                                         lone_stages=0, bwd_key_block=64, bwd_value_block=64,
                                                         fwd_value_block=64, hopper_sweeps=True, hopper_dqk=False),
    "chunk-parallel-4-spans-per-program-3-stages": dict(chunk_parallel_backward=True, save_states=True,
                                                        fused_dv=True, dv_in_sweep=False, dv_sweep_num_stages=0,
                                                        bwd_key_block=0, bwd_value_block=0, spans_per_program=4,
                                                        bwd_num_stages=3, hopper_sweeps=True, hopper_dqk=False),
    "chunk-parallel-stride128-fused-fwd-blocks32": dict(chunk_parallel_backward=True, save_states=True,
                                                        state_stride=128, gate_stride=128, fused_dv=True,
                                                        dv_in_sweep=False, dv_sweep_num_stages=0, bwd_key_block=0,
                                                        bwd_value_block=32, fwd_value_block=32,
                                                        hopper_sweeps=False, hopper_dqk=False),
}


@pytest.mark.gpu
@pytest.mark.parametrize(
    "vector, overrides", [(False, None), (True, None), (False, SCALAR_BACKWARDS["sequential"])],
    ids=["scalar", "vector", "scalar-sequential-backward"],
)
def test_triton_extreme_decay_stays_finite_on_gpu(vector, overrides):
    results = _run(2, 200, 2, 128, 128, vector, torch.bfloat16, -1000.0, None, overrides)
    for name, (out, _) in results.items():
        assert torch.isfinite(out).all(), f"{name}: non-finite values with log decays down to -1e3"


@pytest.mark.gpu
@pytest.mark.parametrize("vector", [False, True], ids=["scalar", "vector"])
@pytest.mark.parametrize("offsets", [None, [0, 100, 101, 357, 1000]], ids=["dense", "varlen"])
@pytest.mark.parametrize("sweeps", [{}, dict(sweep_chunk=128, sweep_block=64)], ids=["pinned-sweeps", "block-sweeps"])
def test_triton_segmented_sequences_match_recurrence_on_gpu(vector, offsets, sweeps):
    """Sequences cut into 128-token segments (segments.py) give the same result as the whole sequences, with the
    pinned segment sweeps and with 128-token steps over 64 x 64 state blocks."""
    B = 2 if offsets is None else 1
    results = _run(B, 1000, 2, 128, 128, vector, torch.bfloat16, -2.0, offsets, dict(segment=128, **sweeps))
    for name, (out, ref) in results.items():
        assert torch.isfinite(out).all(), f"{name}: non-finite values"
        err = rel_rms_error(ref, out)
        assert err < RATIO[torch.bfloat16], f"{name}: relative RMS error {err:.3e}"


@pytest.mark.gpu
@pytest.mark.parametrize("D", [64, 128])
@pytest.mark.parametrize("offsets", [None, [0, 100, 101, 357, 1000]], ids=["dense", "varlen"])
@pytest.mark.parametrize("mode", list(SCALAR_BACKWARDS))
def test_triton_scalar_backwards_match_recurrence_on_gpu(D, offsets, mode):
    """Each scalar-decay backward in bf16, log decays down to -5: the two sweeps (kernels.py), and the
    chunk-parallel one (chunk_parallel.py) with recomputed or forward-saved states, whole or in blocks of 32, with
    dv in the reverse sweep on its pinned 3 stages (these few programs leave one per SM: lone_stages) or on 2, with
    4 chunks per gradient program on 3 pipeline stages, with one state per 128 tokens, dv fused and the forward in
    value blocks."""
    B = 2 if offsets is None else 1
    overrides = SCALAR_BACKWARDS[mode]
    results = _run(B, 1000, 2, D, D, False, torch.bfloat16, -5.0, offsets, overrides)
    for name, (out, ref) in results.items():
        assert torch.isfinite(out).all(), f"{name}: non-finite values"
        err = rel_rms_error(ref, out)
        bound = GATE_RATIO_SEQUENTIAL if (mode == "sequential" and name == "dlog_decay") else RATIO[torch.bfloat16]
        assert err < bound, f"{name}: relative RMS error {err:.3e} >= {bound:.1e}"


# Vector-decay chunk-parallel backwards (chunk_parallel.py, chunk_parallel_vector.py; not pinned), each named in
# full. bf16 runs only here: the interpreter's bf16 dot is broken (tests/ops/test_triton_vector_chunk_parallel.py
# checks fp32 and fp16 on CPU). With the intra-chunk dots on bf16 operands (precise_intra=False) the gate gradient
# misses 5e-3: 5.6e-3 to 6.3e-3 on an H100 (2026-12-07) in the cases below, so it is held to GATE_RATIO_BF16_INTRA;
# precise_intra (every pinned vector plan) holds 5e-3 like every other tensor.
GATE_RATIO_BF16_INTRA = 8e-3
VECTOR_BACKWARDS = {
    "chunk-parallel-dv-kernel-blocks64": dict(chunk_parallel_backward=True, save_states=False, fused_dv=False,
                                              dv_in_sweep=False, bwd_key_block=64, bwd_value_block=64,
                                              precise_intra=True),
    "chunk-parallel-fused-dv-saved-states": dict(chunk_parallel_backward=True, save_states=True, fused_dv=True,
                                                 dv_in_sweep=False, bwd_key_block=0, bwd_value_block=64,
                                                 spans_per_program=2, precise_intra=True),
    "chunk-parallel-dv-in-sweep": dict(chunk_parallel_backward=True, save_states=True, fused_dv=False,
                                       dv_in_sweep=True, bwd_key_block=32, bwd_value_block=64, precise_intra=True),
    "chunk-parallel-stride64-bf16-intra": dict(chunk_parallel_backward=True, save_states=True, fused_dv=False,
                                               dv_in_sweep=False, state_stride=64, gate_stride=64, bwd_key_block=32,
                                               bwd_value_block=0, precise_intra=False),
}


@pytest.mark.gpu
@pytest.mark.parametrize("D", [64, 128])
@pytest.mark.parametrize("offsets", [None, [0, 100, 101, 357, 1000]], ids=["dense", "varlen"])
@pytest.mark.parametrize("mode", list(VECTOR_BACKWARDS))
def test_triton_vector_chunk_parallel_backwards_match_recurrence_on_gpu(D, offsets, mode):
    """The chunk-parallel backward under vector decay in bf16, log decays down to -5: dv by its own kernel, fused
    into the dq/dk kernel or in the reverse sweep, key and value blocks, one stored state per 64 tokens, the
    intra-chunk dots on fp32 operands (precise_intra) or on bf16 ones."""
    B = 2 if offsets is None else 1
    results = _run(B, 1000, 2, D, D, True, torch.bfloat16, -5.0, offsets, VECTOR_BACKWARDS[mode])
    for name, (out, ref) in results.items():
        assert torch.isfinite(out).all(), f"{name}: non-finite values"
        err = rel_rms_error(ref, out)
        bf16_gate = name == "dlog_decay" and not VECTOR_BACKWARDS[mode]["precise_intra"]
        bound = GATE_RATIO_BF16_INTRA if bf16_gate else RATIO[torch.bfloat16]
        assert err < bound, f"{name}: relative RMS error {err:.3e} >= {bound:.1e}"


@pytest.mark.gpu
def test_triton_vector_chunk_parallel_backward_with_hard_resets_stays_finite_on_gpu():
    """Log decays of -1e3 in 5 % of the (token, head, channel) entries, bf16, D128: finite everywhere."""
    from decaylab.ops.triton.check import against_reference

    results = against_reference(2, 300, 2, 128, 128, True, torch.bfloat16, -1.0, None,
                                VECTOR_BACKWARDS["chunk-parallel-dv-kernel-blocks64"], resets=0.05)
    for name, (out, _) in results.items():
        assert torch.isfinite(out).all(), f"{name}: non-finite values with hard resets"


# Launch options that trade a little precision or spill registers for speed, each named in full.
LAUNCH_TRADES = {
    "vector-bf16-dv-partials": (True, dict(bwd_key_block=64, bf16_dv_partials=True, segment=256)),
    "scalar-sequential-bf16-dv-partials": (False, dict(SCALAR_BACKWARDS["sequential"], bwd_key_block=64,
                                                       bf16_dv_partials=True)),
    "vector-registers-capped-168": (True, dict(fwd_max_registers=168, bwd_max_registers=168, segment=256)),
    "scalar-registers-capped-168": (False, dict(fwd_max_registers=168, bwd_max_registers=168)),
}


@pytest.mark.gpu
@pytest.mark.parametrize("mode", list(LAUNCH_TRADES))
def test_triton_launch_trades_match_recurrence_on_gpu(mode):
    """Partial dv kept in bf16, and the kernels compiled under a register cap (spilling), stay within the bf16
    bounds: D128, 1000 tokens, log decays down to -5."""
    vector, overrides = LAUNCH_TRADES[mode]
    results = _run(2, 1000, 2, 128, 128, vector, torch.bfloat16, -5.0, None, overrides)
    for name, (out, ref) in results.items():
        assert torch.isfinite(out).all(), f"{name}: non-finite values"
        err = rel_rms_error(ref, out)
        sequential_gate = not vector and not overrides.get("chunk_parallel_backward", True) and name == "dlog_decay"
        bound = GATE_RATIO_SEQUENTIAL if sequential_gate else RATIO[torch.bfloat16]
        assert err < bound, f"{name}: relative RMS error {err:.3e} >= {bound:.1e}"


@pytest.mark.gpu
@pytest.mark.parametrize("vector", [False, True], ids=["scalar", "vector"])
@pytest.mark.parametrize("B,T,H,D", [(1, 1000, 2, 128), (4, 256, 48, 64), (1, 300, 2, 48)],
                         ids=["segmented", "whole", "fallback-D48"])
def test_triton_forward_backward_replays_in_a_cuda_graph(vector, B, T, H, D):
    """After an eager warm-up call (compilation, cached segment plans and chunk tables), a forward+backward with an
    initial state and the final state's gradient captures in a CUDA graph, and replaying it on new inputs copied
    into the captured ones gives the eager results on those inputs, bit for bit (the kernels are deterministic).
    So does a head dim outside the kernels, on the torch chunked fallback, to rounding: under capture its vector path
    takes the halving path for every chunk where the eager call picks per chunk (intra.plans_per_chunk)."""
    from decaylab.ops import BACKENDS
    from decaylab.ops.triton.configs import SUPPORTED_DIMS

    def same(ref, out):
        return torch.equal(ref, out) if D in SUPPORTED_DIMS else rel_rms_error(ref, out) < 1e-3

    op = BACKENDS.get("triton")
    gen = torch.Generator(device="cuda").manual_seed(0)

    def inputs():
        randn = lambda *s: torch.randn(*s, generator=gen, device="cuda")  # noqa: E731
        gate = (B, T, H, D) if vector else (B, T, H)
        return dict(q=randn(B, T, H, D).bfloat16(), k=(randn(B, T, H, D) * D**-0.5).bfloat16(),
                    v=randn(B, T, H, D).bfloat16(), log_decay=torch.nn.functional.logsigmoid(randn(*gate)),
                    initial_state=randn(B, H, D, D), do=randn(B, T, H, D).bfloat16(), dht=randn(B, H, D, D))

    leaf_names = ("q", "k", "v", "log_decay", "initial_state")

    def step(x):
        o, ht = op(*(x[n] for n in leaf_names[:4]), scale=0.5, initial_state=x["initial_state"],
                   output_final_state=True)
        torch.autograd.backward([o, ht], [x["do"], x["dht"]])
        return o, ht

    def leaves(x):
        return {n: (t.detach().clone().requires_grad_() if n in leaf_names else t.clone()) for n, t in x.items()}

    captured = leaves(inputs())
    side = torch.cuda.Stream()  # warm-up off the capture stream, as torch.cuda.graph asks
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        step(captured)
    torch.cuda.current_stream().wait_stream(side)
    for n in leaf_names:
        captured[n].grad = None  # the captured backward allocates the gradients it writes on every replay
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        o, ht = step(captured)

    fresh = inputs()
    with torch.no_grad():
        for n, t in fresh.items():
            captured[n].copy_(t)
    graph.replay()
    eager = leaves(fresh)
    o_ref, ht_ref = step(eager)
    torch.cuda.synchronize()
    assert same(o_ref, o) and same(ht_ref, ht), "replayed outputs differ from the eager call"
    for n in leaf_names:
        assert same(eager[n].grad, captured[n].grad), f"d{n}: replayed gradient differs from the eager call"


@pytest.mark.gpu
@pytest.mark.parametrize("vector,B,T,H,D", [(False, 2, 1000, 3, 128), (False, 2, 333, 3, 64), (True, 2, 1000, 3, 64),
                                            (True, 1, 4096, 2, 128), (False, 1, 4096, 2, 128)],
                         ids=["scalar-D128", "scalar-D64", "vector-D64", "vector-segments", "scalar-segments"])
def test_binary_launches_match_the_jit_bit_for_bit(vector, B, T, H, D, monkeypatch):
    """Every launch of a forward+backward through the compiled binaries (launch.launch_kernel, after each key's first
    launch) gives the JIT path's outputs and gradients bit for bit, and goes through no JIT launch at all (checked
    to be able to fail: with the binaries off, the same call does reach the JIT)."""
    from triton.runtime.jit import JITFunction

    from decaylab.ops import BACKENDS
    from decaylab.ops.triton import launch

    op = BACKENDS.get("triton")
    gen = torch.Generator(device="cuda").manual_seed(0)
    randn = lambda *s: torch.randn(*s, generator=gen, device="cuda")  # noqa: E731
    x = dict(q=randn(B, T, H, D).bfloat16(), k=(randn(B, T, H, D) * D**-0.5).bfloat16(), v=randn(B, T, H, D).bfloat16(),
             log_decay=torch.nn.functional.logsigmoid(randn(*((B, T, H, D) if vector else (B, T, H)))),
             initial_state=randn(B, H, D, D))
    do, dht = randn(B, T, H, D).bfloat16(), randn(B, H, D, D)

    def step():
        leaves = {n: t.detach().clone().requires_grad_() for n, t in x.items()}
        o, ht = op(leaves["q"], leaves["k"], leaves["v"], leaves["log_decay"], scale=0.5,
                   initial_state=leaves["initial_state"], output_final_state=True)
        torch.autograd.backward([o, ht], [do, dht])
        return [o, ht, *(leaves[n].grad for n in x)]

    monkeypatch.setattr(launch, "ENABLED", False)
    through_jit = step()
    monkeypatch.setattr(launch, "ENABLED", True)
    step()  # each key's first launch: through the JIT, its binary kept
    with monkeypatch.context() as patch:
        def no_jit(fn, grid):
            raise AssertionError(f"{fn} launched through the JIT")

        patch.setattr(JITFunction, "__getitem__", no_jit)
        through_binaries = step()
        patch.setattr(launch, "ENABLED", False)
        with pytest.raises(AssertionError, match="launched through the JIT"):
            step()
    torch.cuda.synchronize()
    for name, ref, out in zip(("o", "ht", *(f"d{n}" for n in x)), through_jit, through_binaries):
        assert torch.equal(ref, out), f"{name}: the binary launches differ from the JIT's"


@pytest.mark.gpu
@pytest.mark.parametrize("K,V", [(128, 128), (64, 128), (128, 64)], ids=lambda d: str(d))
@pytest.mark.parametrize("offsets", [None, [0, 100, 101, 357, 1000]], ids=["dense", "varlen"])
@pytest.mark.parametrize("segment", [0, 128], ids=["whole", "segments"])
@pytest.mark.parametrize("lowest", [-5.0, 0.0])
@pytest.mark.parametrize("dqk", [False, True], ids=["triton-dqk", "gluon-dqk"])
def test_hopper_sweeps_match_recurrence_on_gpu(K, V, offsets, segment, lowest, dqk, monkeypatch):
    """The Gluon forward and dv sweep (gluon/sweeps.py), and the Gluon dq/dk kernel (gluon/grads.py) or the Triton one,
    on sm_90, checked to have run: packed sequences whose chunks end mid-tile (the TMA tiles then hold the next
    sequence's tokens), segments (initial states per segment), K != V, several items per persistent program."""
    from decaylab.ops.triton import gluon

    if not gluon.sm90(torch.device("cuda")):
        pytest.skip("the Gluon sweeps are for sm_90 (Hopper) GPUs")
    ran = []
    for name in ("forward", "dstates_dv", "dqk"):
        launch = getattr(gluon, name)
        monkeypatch.setattr(gluon, name, lambda *a, _launch=launch, _name=name: (ran.append(_name), _launch(*a))[1])
    B, T = (1, 1000) if offsets else (2, 333)
    results = _run(B, T, 2, K, V, False, torch.bfloat16, lowest, offsets,
                   dict(hopper_sweeps=True, hopper_dqk=dqk, segment=segment))
    expected = {"forward", "dstates_dv"} | ({"dqk"} if dqk else set())
    assert expected <= set(ran), f"the Gluon kernels did not run: {ran}"
    for name, (out, ref) in results.items():
        assert torch.isfinite(out).all(), f"{name}: non-finite values"
        err = rel_rms_error(ref, out)
        assert err < RATIO[torch.bfloat16], f"{name}: relative RMS error {err:.3e} >= 5e-3"
