"""Registers and stack bytes (spills) per thread of each attention kernel, compiled for sm_90 on this machine.

    python scripts/sm90_registers.py --decay vector --dims 64 128 --configs '' 'chunk_parallel_backward=true'

No GPU needed: one forward and backward on CPU tensors with the launches captured instead of run (as in
tests/ops/test_triton_compile.py), each kernel compiled ahead of time for an H100/H200 by Triton's pipeline, and its
machine code read by the cuobjdump that Triton ships. A kernel whose stack is not 0 spills registers to local
memory. This is what ``decaylab bench kernels --section registers`` reports on a GPU, for configs to weigh before
a GPU is at hand; it says nothing about time.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import triton
from triton.compiler import ASTSource

from decaylab.bench.kernel_timing import parse_config_spec
from tests.ops.test_triton_compile import TARGET, _launches, _signature

CUOBJDUMP = Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "cuobjdump"


def resource_usage(kernel) -> dict[str, int]:
    """REG, STACK, SHARED and LOCAL of a compiled kernel's machine code."""
    with tempfile.TemporaryDirectory() as folder:
        cubin = Path(folder) / "kernel.cubin"
        cubin.write_bytes(kernel.asm["cubin"])
        text = subprocess.run([str(CUOBJDUMP), "--dump-resource-usage", str(cubin)], capture_output=True, text=True,
                              check=True).stdout  # fmt: skip
    return {name: int(value) for name, value in re.findall(r"\b(REG|STACK|SHARED|LOCAL):(\d+)", text)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--decay", choices=("scalar", "vector"), default="vector")
    parser.add_argument("--dims", type=int, nargs="+", default=[64, 128], help="head dims (pinned plans: 64, 128, 256)")
    parser.add_argument("--configs", nargs="+", default=[""], help="knob overrides of the pinned plan, as for "
                        "decaylab bench kernels --configs ('' is the pinned plan)")  # fmt: skip
    args = parser.parse_args()
    os.environ.setdefault("TRITON_DISABLE_LINE_INFO", "1")
    compiled: dict[tuple, dict[str, int]] = {}
    print(f"{'head dim':>8s}  {'config':52s} {'kernel':28s} {'warps':>5s} {'regs':>5s} {'stack B':>7s}")
    for D in args.dims:
        for spec in args.configs:
            for fn, launch_args, kwargs in _launches(args.decay == "vector", D, parse_config_spec(spec)):
                signature, constexprs, options = _signature(fn, launch_args, kwargs)
                key = (fn.__name__, tuple(signature.items()), tuple(constexprs.items()), tuple(options.items()))
                if key not in compiled:
                    source = ASTSource(fn, signature, constexprs)
                    compiled[key] = resource_usage(triton.compile(source, target=TARGET, options=options))
                usage = compiled[key]
                print(f"{D:>8d}  {spec or '(pinned)':52s} {fn.__name__:28s} {options.get('num_warps', ''):>5} "
                      f"{usage['REG']:>5d} {usage['STACK']:>7d}")


if __name__ == "__main__":
    main()
