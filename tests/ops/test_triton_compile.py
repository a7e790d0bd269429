"""Every kernel launch of the pinned GPU configs (and of the launch options) compiles for an H100/H200 (sm_90).

No GPU needed: the launches are captured on CPU tensors instead of run, then each distinct kernel is compiled
ahead of time by Triton's own pipeline down to machine code (ptxas). The interpreter tests check what the kernels
compute; this checks what only the compiler sees (types of loop-carried values, static loops, layouts), which
would otherwise surface only on a GPU.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

triton = pytest.importorskip("triton")
from triton.backends.compiler import GPUTarget  # noqa: E402
from triton.compiler import ASTSource  # noqa: E402
from triton.runtime.jit import JITFunction, mangle_type  # noqa: E402

from decaylab.ops.triton import function, gluon, use_config, with_knobs  # noqa: E402
from decaylab.ops.triton.configs import PINNED_CONFIGS  # noqa: E402

if gluon.AVAILABLE:
    from triton.experimental.gluon._runtime import GluonASTSource
    from triton.experimental.gluon.nvidia.hopper import TensorDescriptor

REPO = Path(__file__).resolve().parents[2]
TARGET = GPUTarget("cuda", 90, 32)
# Shared memory one block may take on sm_90 (227 KB): a kernel compiled past it fails only at launch, on a GPU.
SM90_SHARED_LIMIT = 232448
TRITON_TYPES = {torch.bfloat16: "bf16", torch.float16: "fp16", torch.float32: "fp32", torch.int64: "i64",
                torch.int32: "i32"}

# name -> (vector decay, head dim, overrides of the pinned config[, input dtype: bf16 if not named])
CONFIGS = {
    "scalar-D64": (False, 64, {}),
    "scalar-D128": (False, 128, {}),
    "scalar-D128-fp16": (False, 128, {}, torch.float16),
    "scalar-D128-fp32": (False, 128, {}, torch.float32),
    "vector-D64": (True, 64, {}),
    "vector-D128": (True, 128, {}),
    "scalar-D256": (False, 256, {}),
    "scalar-D256-fp16": (False, 256, {}, torch.float16),
    "scalar-D256-fp32": (False, 256, {}, torch.float32),
    "vector-D256": (True, 256, {}),
    "scalar-D256-segmented": (False, 256, dict(segment=64)),
    "vector-D256-segmented": (True, 256, dict(segment=64)),
    "scalar-D128-segmented": (False, 128, dict(segment=64)),
    "vector-D128-segmented": (True, 128, dict(segment=64)),
    "vector-D128-segmented-sweep-blocks": (True, 128, dict(segment=64, sweep_chunk=64, sweep_block=64)),
    "scalar-D64-stride128-fused-fwd-blocks": (False, 64, dict(state_stride=128, gate_stride=128, fused_dv=True,
                                                              bwd_key_block=0, bwd_value_block=32,
                                                              fwd_value_block=32)),
    "scalar-D64-two-sweeps": (False, 64, dict(chunk_parallel_backward=False, save_states=False, fused_dv=False,
                                              dv_in_sweep=False, spans_per_program=1)),
    "scalar-D128-two-sweeps": (False, 128, dict(chunk_parallel_backward=False, save_states=False, fused_dv=False,
                                                  dv_in_sweep=False, dv_sweep_num_stages=0, bwd_chunk=32)),
    "scalar-D128-recomputed-states": (False, 128, dict(save_states=False)),
    "scalar-D128-dv-kernel": (False, 128, dict(dv_in_sweep=False, dv_sweep_num_stages=0)),
    "scalar-D64-dv-in-sweep-blocks32": (False, 64, dict(dv_in_sweep=True, fused_dv=False, bwd_value_block=32)),
    "vector-D128-capped-registers-bf16-dv-partials": (True, 128, dict(segment=64, bwd_max_registers=168,
                                                                      bf16_dv_partials=True)),
    "scalar-D128-capped-registers": (False, 128, dict(fwd_max_registers=168, bwd_max_registers=200)),
    "scalar-D64-spans4-stages3": (False, 64, dict(spans_per_program=4, bwd_num_stages=3)),
    "scalar-D128-spans2-stride128": (False, 128, dict(spans_per_program=2, state_stride=128, gate_stride=128,
                                                     dv_in_sweep=False, dv_sweep_num_stages=0)),
    # vector decay's chunk-parallel backward (not pinned): each dv variant, key and value blocks, spans
    "vector-D64-chunk-parallel-fused-dv": (True, 64, dict(chunk_parallel_backward=True, fused_dv=True,
                                                          bwd_key_block=0, bwd_max_registers=0, save_states=True,
                                                          spans_per_program=2)),
    "vector-D128-chunk-parallel-dv-kernel": (True, 128, dict(chunk_parallel_backward=True, bwd_value_block=64,
                                                             state_stride=32)),
    "vector-D128-chunk-parallel-dv-in-sweep": (True, 128, dict(chunk_parallel_backward=True, dv_in_sweep=True,
                                                               bwd_value_block=64, save_states=True,
                                                               precise_intra=False)),
    "vector-D256-chunk-parallel-dv-kernel": (True, 256, dict(chunk_parallel_backward=True, bwd_value_block=64)),
}
if gluon.AVAILABLE:  # the Gluon kernels (gluon/) need a Triton with Gluon
    CONFIGS.update({
        "scalar-D128-hopper-sweeps": (False, 128, dict(hopper_sweeps=True, hopper_dqk=False)),
        "scalar-D128-hopper-sweeps-segmented": (False, 128, dict(hopper_sweeps=True, hopper_dqk=True, segment=64)),
        "scalar-D128-hopper-dqk": (False, 128, dict(hopper_sweeps=True, hopper_dqk=True)),
        "scalar-D64-hopper-dqk": (False, 64, dict(hopper_sweeps=True, hopper_dqk=True, fused_dv=False,
                                                  dv_in_sweep=True, spans_per_program=1)),
        "scalar-D64-hopper-sweeps": (False, 64, dict(hopper_sweeps=True, fused_dv=False, dv_in_sweep=True,
                                                     spans_per_program=1)),
    })


def _signature(fn: JITFunction, args: tuple, kwargs: dict) -> tuple[dict, dict, dict]:
    """Triton types of the launch's runtime arguments, its constexprs, and its launch options."""
    # fp fusion must be named at every launch: Triton 3.9 warns that its default changes, and a changed default
    # would compile other code than was measured and tested
    assert "enable_fp_fusion" in kwargs, f"{fn.fn.__name__} is launched without naming enable_fp_fusion"
    options = {key: kwargs.pop(key) for key in ("num_warps", "num_stages", "enable_fp_fusion", "maxnreg")
               if key in kwargs}
    bound = dict(zip(fn.arg_names, args), **kwargs)
    if fn.is_gluon():  # a Gluon kernel names its warps as a constexpr too
        bound["num_warps"] = options["num_warps"]
    signature, constexprs = {}, {}
    for param in fn.params:
        value = bound[param.name]
        if param.is_constexpr or value is None:
            signature[param.name] = "constexpr"
            constexprs[param.name] = value
        elif isinstance(value, torch.Tensor):
            signature[param.name] = "*" + TRITON_TYPES[value.dtype]
        elif gluon.AVAILABLE and isinstance(value, TensorDescriptor):
            signature[param.name] = mangle_type(value)
        elif isinstance(value, float):
            signature[param.name] = "fp32"
        else:
            signature[param.name] = "i64" if abs(int(value)) >= 2**31 else "i32"
    return signature, constexprs, options


def _launches(vector: bool, D: int, overrides: dict, dtype: torch.dtype = torch.bfloat16) -> list[tuple]:
    """Run one forward and backward on CPU tensors with every kernel launch captured instead of executed."""
    captured = []
    config = with_knobs(PINNED_CONFIGS[(None, vector, D)], **overrides)
    B, T, H = 1, 300, 2
    q, k, v = (torch.randn(B, T, H, D, dtype=dtype, requires_grad=True) for _ in range(3))
    g = -torch.rand((B, T, H, D) if vector else (B, T, H), requires_grad=True)
    h0 = torch.randn(B, H, D, D, requires_grad=True)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(JITFunction, "__getitem__",
                      lambda fn, grid: lambda *args, **kwargs: captured.append((fn, args, dict(kwargs))))
        patch.setattr(function, "interpreter_active", lambda: True)  # CPU tensors are fine: nothing runs
        patch.setattr(gluon, "sm90", lambda device: True)  # the configs with hopper_sweeps take the Gluon kernels
        patch.setattr(gluon, "interpreter_active", lambda: False)
        with use_config(config):
            o, ht = function.triton_decay_linear_attention(q, k, v, g, initial_state=h0, output_final_state=True)
        (o.float().sum() + ht.sum()).backward()
    return captured


# name -> (feature dim, input dtype, gated, replicas: a weight [R, D] per block of rows, or one [D])
NORM_CASES = {
    "norm-D256-bf16": (256, torch.bfloat16, False, 1),
    "norm-D256-bf16-gated": (256, torch.bfloat16, True, 1),
    "norm-D256-fp32-replicas": (256, torch.float32, False, 3),
    "norm-D64-bf16-gated-replicas": (64, torch.bfloat16, True, 3),
}


def _norm_launches(D: int, dtype: torch.dtype, gated: bool, replicas: int) -> list[tuple]:
    """One forward and backward of the norm kernels on CPU tensors, every launch captured instead of executed."""
    from decaylab.ops.triton import norm

    captured = []
    x = torch.randn(replicas, 40, D, dtype=dtype, requires_grad=True)
    gate = torch.randn(replicas, 40, D, dtype=dtype, requires_grad=True) if gated else None
    weight = torch.randn((replicas, D) if replicas > 1 else (D,), requires_grad=True)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(JITFunction, "__getitem__",
                      lambda fn, grid: lambda *args, **kwargs: captured.append((fn, args, dict(kwargs))))
        patch.setattr(norm, "interpreter_active", lambda: True)  # CPU tensors are fine: nothing runs
        y = norm.rms_norm(x, weight, 1e-5, gate)
        y.float().sum().backward()
    return captured


def compile_all(ptx_dir: Path | None = None, only: set[str] | None = None) -> dict:
    """Every distinct kernel of every config in CONFIGS (or of those named in ``only``), compiled once: name ->
    [(kernel, error or None)]. With
    ``ptx_dir``, each kernel's PTX is written there as <kernel>-<hash of its launch>.ptx, and <config>.txt lists the
    files of each config: two such folders compared file by file show whether a change of the Python code changed
    the compiled code (set TRITON_DISABLE_LINE_INFO=1, so that moved source lines do not count)."""
    cache, results = {}, {}
    launches = {name: (_launches, spec) for name, spec in CONFIGS.items()}
    launches.update({name: (_norm_launches, spec) for name, spec in NORM_CASES.items()})
    for name, (capture, spec) in launches.items():
        if only is not None and name not in only:
            continue
        results[name] = []
        for fn, args, kwargs in capture(*spec):
            signature, constexprs, options = _signature(fn, args, kwargs)
            key = (fn.__name__, tuple(signature.items()), tuple(constexprs.items()), tuple(options.items()))
            file = f"{fn.__name__}-{hashlib.sha1(repr(key).encode()).hexdigest()[:12]}.ptx"
            if key not in cache:
                try:
                    source = (GluonASTSource if fn.is_gluon() else ASTSource)(fn, signature, constexprs)
                    kernel = triton.compile(source, target=TARGET, options=options)
                    if ptx_dir is not None:
                        (ptx_dir / file).write_text(kernel.asm["ptx"])
                    cache[key] = None if kernel.asm.get("cubin") else "no machine code"
                    if kernel.metadata.shared > SM90_SHARED_LIMIT:
                        cache[key] = f"needs {kernel.metadata.shared} bytes of shared memory, over sm_90's " \
                                     f"{SM90_SHARED_LIMIT}"
                except Exception as error:  # reported per config below
                    cache[key] = f"{type(error).__name__}: {str(error)[:2000]}"
            results[name].append((fn.__name__, cache[key]))
            if ptx_dir is not None:
                with open(ptx_dir / f"{name}.txt", "a") as listing:
                    listing.write(file + "\n")
    return results


# Triton's Gluon bindings keep a few objects alive to the end of the process that built Gluon kernels (ir.attribute
# default arguments of GluonOpBuilder methods), which nanobind then reports as "leaked instances/types/functions"
# at exit. The compile runs in a child process so that the report is the child's; its stderr is passed on without
# those lines, everything else kept.
NANOBIND_REPORT = re.compile(r"^(nanobind: |See https://nanobind\.readthedocs\.io/| - leaked | - \.\.\. skipped)")


@pytest.fixture(scope="module")
def compiled(request) -> dict:
    """``compile_all()`` in a child process: of the configs whose tests are selected (``-k``), or of every one when
    the coverage test below, which needs them all, is selected too."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    mine = [item for item in request.session.items if item.module is sys.modules[__name__]]
    only = []
    if not any(item.originalname == "test_the_captured_launches_cover_each_path" for item in mine):
        names = sorted(item.callspec.params["name"] for item in mine if hasattr(item, "callspec"))
        only = ["--only", json.dumps(names)]
    child = subprocess.run([sys.executable, __file__, *only], env=env, capture_output=True, text=True, timeout=3600)
    kept = [line for line in child.stderr.splitlines(keepends=True) if not NANOBIND_REPORT.match(line)]
    sys.stderr.write("".join(kept))
    assert child.returncode == 0, f"compiling in a child process failed:\n{''.join(kept)[-4000:]}"
    return json.loads(child.stdout.splitlines()[-1])


@pytest.mark.parametrize("name", list(CONFIGS) + list(NORM_CASES))
def test_every_kernel_launch_compiles_for_sm90(compiled, name):
    launches = compiled[name]
    assert launches, f"{name}: no kernel was launched"
    failures = [f"{kernel}: {error}" for kernel, error in launches if error]
    assert not failures, f"{name}: " + "\n".join(failures)


def test_the_captured_launches_cover_each_path(compiled):
    """The configs above reach every kernel family: forward, both backwards, segments, the partial sums."""
    kernels = {kernel for launches in compiled.values() for kernel, _ in launches}
    assert {"forward_kernel", "backward_dq_kernel", "backward_dkv_kernel", "chunk_states_kernel",
            "chunk_dstates_kernel", "chunk_dv_kernel", "chunk_dqk_kernel", "segment_state_kernel",
            "segment_dstate_kernel", "sum_partials_kernel", "rms_norm_forward_kernel",
            "rms_norm_backward_kernel"} <= kernels, sorted(kernels)
    # vector decay's chunk-parallel backward: every one of its kernels
    vector_kernels = {kernel for name, launches in compiled.items() if "vector" in name and "chunk-parallel" in name
                      for kernel, _ in launches}
    assert {"chunk_states_kernel", "chunk_dstates_kernel", "chunk_dstates_dv_kernel", "chunk_dv_kernel",
            "chunk_dqk_kernel"} <= vector_kernels, sorted(vector_kernels)
    # the Gluon kernels (gluon/), which the interpreter cannot run: this compile is their only CPU check
    if gluon.AVAILABLE:
        gluon_kernels = {kernel for name, launches in compiled.items() if "hopper" in name for kernel, _ in launches}
        assert {"hopper_forward_kernel", "hopper_dstates_dv_kernel", "hopper_dqk_kernel"} <= gluon_kernels, \
            sorted(gluon_kernels)


if __name__ == "__main__":  # the child process of the ``compiled`` fixture; with --ptx DIR, also the PTX dump
    folder = Path(sys.argv[sys.argv.index("--ptx") + 1]) if "--ptx" in sys.argv else None
    if folder is not None:
        folder.mkdir(parents=True, exist_ok=True)
    only = set(json.loads(sys.argv[sys.argv.index("--only") + 1])) if "--only" in sys.argv else None
    print(json.dumps(compile_all(folder, only)))
