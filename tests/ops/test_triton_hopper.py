"""The Hopper (Gluon) kernels' dispatch and descriptors, without a GPU: which calls take them, and what TMA sees.

What the kernels compute is tested on an sm_90 GPU (tests/ops/test_triton_gpu.py); that they compile for sm_90,
in tests/ops/test_triton_compile.py.
"""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("triton")
from decaylab.ops.triton import LaunchConfig, gluon, with_knobs  # noqa: E402
from decaylab.ops.triton.configs import PINNED_CONFIGS  # noqa: E402

pytestmark = pytest.mark.skipif(not gluon.AVAILABLE, reason="this Triton has no Gluon")
CONFIG = PINNED_CONFIGS[(9, False, 128)]


def _inputs(K=128, V=128, dtype=torch.bfloat16, vector=False):
    q, k = torch.randn(2, 70, 3, K, dtype=dtype), torch.randn(2, 70, 3, K, dtype=dtype)
    return q, k, torch.randn(2, 70, 3, V, dtype=dtype), -torch.rand((2, 70, 3, K) if vector else (2, 70, 3))


@pytest.fixture
def on_sm90(monkeypatch):
    """CPU tensors standing in for an sm_90 GPU's (nothing is launched here)."""
    monkeypatch.setattr(gluon, "sm90", lambda device: True)
    monkeypatch.setattr(gluon, "interpreter_active", lambda: False)


def _gluon_dqk(cfg) -> bool:
    return getattr(cfg.backward, "gluon_dqk", False)


def test_pinned_for_sm90_scalar_d128_only():
    assert CONFIG.gluon_sweeps and _gluon_dqk(CONFIG)
    assert not PINNED_CONFIGS[(None, False, 128)].gluon_sweeps  # other GPUs keep the Triton kernels
    assert not any(cfg.gluon_sweeps or _gluon_dqk(cfg) for key, cfg in PINNED_CONFIGS.items()
                   if key != (9, False, 128))


def test_covers_the_pinned_case(on_sm90):
    assert gluon.covers(*_inputs(), CONFIG)
    assert gluon.covers(*_inputs(K=64, V=192), CONFIG)


@pytest.mark.parametrize("case", ["config off", "fp16", "fp32", "vector decay", "K=32", "K=256", "V=96", "V=320",
                                  "unaligned", "int32 coordinates"])
def test_other_calls_take_the_triton_kernels(on_sm90, case):
    cfg, inputs = CONFIG, _inputs()
    if case == "config off":
        cfg = with_knobs(CONFIG, hopper_sweeps=False)
    elif case in ("fp16", "fp32"):
        inputs = _inputs(dtype=torch.float16 if case == "fp16" else torch.float32)
    elif case == "vector decay":
        inputs = _inputs(vector=True)
    elif case.startswith("K="):
        inputs = _inputs(K=int(case[2:]))
    elif case.startswith("V="):
        inputs = _inputs(V=int(case[2:]))
    elif case == "unaligned":  # a view starting one element in: TMA needs 16-byte aligned addresses
        q, k, v, g = inputs
        inputs = (torch.randn(q.numel() + 1, dtype=q.dtype)[1:].view(q.shape), k, v, g)
    else:  # 2**37 elements (a broadcast view, no memory): chunk-state rows past int32
        q, k, v, g = inputs
        inputs = (q[:1, :1, :1].expand(2**22, 2**8, 1, 128), k, v, g)
    assert not gluon.covers(*inputs, cfg)


def test_not_taken_off_sm90_or_in_the_interpreter(monkeypatch):
    assert not gluon.covers(*_inputs(), CONFIG)  # CPU tensors
    monkeypatch.setattr(gluon, "sm90", lambda device: True)
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    assert not gluon.covers(*_inputs(), CONFIG)


def test_descriptors_address_tokens_and_state_blocks():
    from decaylab.ops.triton.gluon import descriptors

    q = torch.randn(2, 70, 3, 128, dtype=torch.bfloat16)
    d = descriptors.tokens(q, 64)
    assert (d.base.data_ptr(), d.shape, d.strides, d.block_shape) == (q.data_ptr(), [140, 384], [384, 1], [64, 64])
    states = torch.empty(5, 3, 128, 192, dtype=torch.bfloat16)
    d = descriptors.states(states)
    assert (d.shape, d.strides, d.block_shape) == ([5 * 3 * 128, 192], [192, 1], [128, 64])


def test_dqk_descriptors_address_64_by_64_tiles():
    from decaylab.ops.triton.gluon import descriptors

    q = torch.randn(2, 70, 3, 128, dtype=torch.bfloat16)
    d = descriptors.tiles(q)
    assert (d.base.data_ptr(), d.shape, d.strides, d.block_shape) == (q.data_ptr(), [140, 384], [384, 1], [64, 64])
    d = descriptors.state_tiles(torch.empty(5, 3, 128, 192, dtype=torch.bfloat16))
    assert (d.shape, d.strides, d.block_shape) == ([5 * 3 * 128, 192], [192, 1], [64, 64])
    assert gluon._programs(torch.device("cpu")) == 1  # the compile test's captured launch


@pytest.mark.parametrize("overrides", [dict(chunk_parallel_backward=False, save_states=False, dv_in_sweep=False,
                                            dv_sweep_num_stages=0, hopper_dqk=True),
                                       dict(fused_dv=True, dv_in_sweep=False, dv_sweep_num_stages=0)],
                         ids=["two-sweep-backward", "fused-dv"])
def test_config_refuses_the_gluon_dqk_kernel_off_its_plan(overrides):
    with pytest.raises(ValueError, match="hopper_dqk is the chunk-parallel backward's dq/dk kernel"):
        with_knobs(CONFIG, **overrides)


@pytest.mark.parametrize("overrides", [dict(chunk=32), dict(bwd_chunk=32), dict(state_stride=128, gate_stride=128)])
def test_config_refuses_other_chunks(overrides):
    base = dict(chunk=64, num_warps=4, num_stages=2, chunk_parallel_backward=True, hopper_sweeps=True)
    with pytest.raises(ValueError, match="hopper_sweeps runs 64-token chunks"):
        LaunchConfig(**dict(base, **overrides))


def _run_captured(monkeypatch, gluon_error, failing=None, cfg=CONFIG):
    """One forward and backward on CPU tensors with ``cfg`` (the sm_90 pin), every launch captured instead of run,
    and the Gluon launches (those named ``failing``, or all) raising ``gluon_error`` (if given): the names of the
    kernels launched."""
    from triton.runtime.jit import JITFunction

    from decaylab.ops.triton import function, use_config

    launched = []

    def launch(fn, grid):
        def run(*args, **kwargs):
            if fn.is_gluon() and gluon_error is not None and failing in (None, fn.__name__):
                raise gluon_error
            launched.append(fn.__name__)
        return run

    monkeypatch.setattr(JITFunction, "__getitem__", launch)
    monkeypatch.setattr(function, "interpreter_active", lambda: True)  # CPU tensors are fine: nothing runs
    q, k, v, g = (x.requires_grad_() for x in _inputs())
    with use_config(cfg):
        o, _ = function.triton_decay_linear_attention(q, k, v, g)
        o.float().sum().backward()
    return launched


@pytest.mark.parametrize("dqk", [True, False], ids=["gluon-dqk", "triton-dqk"])
def test_the_pin_runs_the_gluon_kernels(on_sm90, monkeypatch, dqk):
    launched = _run_captured(monkeypatch, None, cfg=with_knobs(CONFIG, hopper_dqk=dqk))
    assert {"hopper_forward_kernel", "hopper_dstates_dv_kernel"} <= set(launched), launched
    assert ("hopper_dqk_kernel" in launched) == dqk and ("chunk_dqk_kernel" in launched) != dqk, launched


def test_the_gluon_dqk_kernel_runs_with_the_triton_sweeps(on_sm90, monkeypatch):
    launched = _run_captured(monkeypatch, None, cfg=with_knobs(CONFIG, hopper_sweeps=False))
    assert {"forward_kernel", "chunk_dstates_dv_kernel", "hopper_dqk_kernel"} <= set(launched), launched
    assert not {"hopper_forward_kernel", "hopper_dstates_dv_kernel", "chunk_dqk_kernel"} & set(launched), launched


def test_a_dqk_kernel_that_cannot_build_leaves_it_to_the_triton_one(on_sm90, monkeypatch):
    monkeypatch.setattr(gluon, "unusable", [])
    launched = _run_captured(monkeypatch, AttributeError("no attribute 'barrier'"), failing="hopper_dqk_kernel")
    assert {"hopper_forward_kernel", "hopper_dstates_dv_kernel", "chunk_dqk_kernel"} <= set(launched), launched
    assert len(gluon.unusable) == 1 and not gluon.covers(*_inputs(), CONFIG)


def test_a_triton_whose_gluon_cannot_build_them_runs_the_triton_kernels(on_sm90, monkeypatch, caplog):
    """Gluon's API moves between Triton releases: a build failure (here a name this Gluon lacks) is logged once,
    and that call and every later one take the Triton kernels."""
    monkeypatch.setattr(gluon, "unusable", [])
    with caplog.at_level("WARNING", logger="decaylab.ops"):
        launched = _run_captured(monkeypatch, AttributeError("module 'tma' has no attribute 'async_load'"))
    assert {"forward_kernel", "chunk_dstates_dv_kernel", "chunk_dqk_kernel"} <= set(launched), launched
    assert len(gluon.unusable) == 1 and "async_load" in gluon.unusable[0]
    warnings = [r.getMessage() for r in caplog.records if "Gluon kernels" in r.getMessage()]
    assert len(warnings) == 1 and "hopper_sweeps=False" in warnings[0], warnings
    assert not gluon.covers(*_inputs(), CONFIG)


def test_a_cuda_error_in_a_gluon_launch_is_raised(on_sm90, monkeypatch):
    """Errors of running a kernel (CUDA's) are not build failures: they surface, and the Gluon path stays on."""
    monkeypatch.setattr(gluon, "unusable", [])
    with pytest.raises(RuntimeError, match="illegal memory access"):
        _run_captured(monkeypatch, RuntimeError("Triton Error [CUDA]: an illegal memory access was encountered"))
    assert gluon.unusable == []


def test_releases_before_the_kernels_are_refused():
    assert gluon._release("3.5.1") < gluon.OLDEST_TRITON <= gluon._release("3.6.0")
    assert gluon._release("3.9.0+git1234") == (3, 9) and gluon._release("3.10.0rc1") == (3, 10)
