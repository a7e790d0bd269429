"""Kernel launches at a lower host cost: ``launch_kernel(kernel, grid, *args, **kwargs)`` is ``kernel[grid](*args,
**kwargs)``, but after the first launch of each specialization the compiled binary is launched directly
(``CompiledKernel[grid](*args)``, Triton's own launcher), skipping the JIT's per-call work: binding the arguments,
specializing each of them (a TMA descriptor's layout is printed for its key), building the cache key from the
options' text, and the cache lookup. That work was most of a Gluon launch's host time in a profile on a lent H100 host
(``scripts/host_profile.py``), and an eager call of the op makes three to six launches.

The binary is the one the JIT returned at the first launch of the key, so it is the one Triton picks; the key
holds all that Triton specializes a launch on, and more: each tensor's dtype and 16-byte alignment, None, the
exact value of every int, bool and constexpr, a descriptor's dtype, block, layout, shape and strides, and the
launch options. A call that Triton would specialize differently therefore never shares a key. The interpreter
(TRITON_INTERPRET=1), a machine without CUDA (where tests capture the launches) and torch.compile's tracing take
the JIT's path every time, as does every call while ``ENABLED`` is False (``decaylab bench kernels --section host``
times both paths).

Off by default (``decaylab.ops.triton.launch.ENABLED = True``, or ``DECAYLAB_BINARY_LAUNCHES=1`` in the
environment before the import, turns it on). Its GPU test (tests/ops/test_triton_gpu.py,
``binary_launches``: outputs and gradients bit for bit against the JIT's, no JIT launch once warm) passed on an H100,
but the host time it saved there was within the host's noise (docs/benchmarks-log.md, "2026-12-07 (night)"), and
CUDA-graph capture through it has not run on a GPU.
"""

from __future__ import annotations

import inspect
import os

import torch

from decaylab.ops.triton.configs import interpreter_active

ENABLED = os.environ.get("DECAYLAB_BINARY_LAUNCHES", "0") == "1"
MAX_KEYS = 4096
_binaries: dict[tuple, object] = {}  # (kernel, key) -> compiled binary
_parameters: dict[int, tuple[tuple[str, ...], dict]] = {}  # id(kernel) -> (parameter names, defaults)


def launch_kernel(kernel, grid: tuple[int, ...], *args, **kwargs) -> None:
    """``kernel[grid](*args, **kwargs)``, through the compiled binary once the JIT has built it for this key."""
    if not ENABLED or interpreter_active() or not torch.cuda.is_available() or torch.compiler.is_compiling():
        kernel[grid](*args, **kwargs)
        return
    names, defaults = _parameters_of(kernel)
    # the device too: a binary is loaded into one device's context
    key = (id(kernel), torch.cuda.current_device(), *map(_token, args),
           *((name, _token(value)) for name, value in kwargs.items()))
    try:
        binary = _binaries.get(key)
    except TypeError:  # an argument that cannot be hashed: leave it to the JIT
        kernel[grid](*args, **kwargs)
        return
    if binary is None:
        binary = kernel[grid](*args, **kwargs)  # compiles (or loads) and launches; returns the binary
        if binary is not None and hasattr(binary, "function"):
            if len(_binaries) >= MAX_KEYS:  # ints that vary from call to call (packed lengths) would grow it forever
                _binaries.clear()
            _binaries[key] = binary
        return
    # the binary takes every parameter of the kernel in order, constexprs included (its launcher skips them);
    # the launch options (num_warps, ...) are in the binary already
    values = list(args)
    for name in names[len(args):]:
        values.append(kwargs[name] if name in kwargs else defaults[name])
    binary[(*grid, 1, 1)[:3]](*values)  # the binary's runner takes all three grid sizes


def _parameters_of(kernel) -> tuple[tuple[str, ...], dict]:
    found = _parameters.get(id(kernel))
    if found is None:
        signature = inspect.signature(kernel.fn)
        found = (tuple(signature.parameters),
                 {name: p.default for name, p in signature.parameters.items() if p.default is not p.empty})
        _parameters[id(kernel)] = found
    return found


def _tensor_token(x: torch.Tensor):
    return x.dtype, x.data_ptr() % 16 == 0


def _descriptor_token(d):
    return "desc", d.base.dtype, d.base.data_ptr() % 16 == 0, tuple(d.block_shape), getattr(d, "layout", None), \
        tuple(d.shape), tuple(d.strides)


_TOKENS = {torch.Tensor: _tensor_token, torch.nn.Parameter: _tensor_token, bool: lambda x: ("bool", x),
           int: lambda x: x, float: lambda x: float, type(None): lambda x: None}


def _token(x):
    """What of ``x`` the binary depends on (see the module docstring)."""
    make = _TOKENS.get(type(x))
    if make is not None:
        return make(x)
    if isinstance(x, torch.Tensor):
        return _tensor_token(x)
    if hasattr(x, "block_shape") and hasattr(x, "base"):  # a host-side TMA descriptor (Triton's or Gluon's)
        return _descriptor_token(x)
    return type(x), x  # constexpr values (dtypes, strings, ...): hashable, compared by value
