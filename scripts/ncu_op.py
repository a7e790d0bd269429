"""One forward+backward of the triton op between cudaProfilerStart/Stop, after warm-up calls, for
``ncu --profile-from-start off``: hardware counters of the kernels alone.

    ncu --clock-control none --profile-from-start off --section WarpStateStats python scripts/ncu_op.py \
        --shape 4x4096x64x128 --decay vector
"""

import argparse

import torch

from decaylab.bench.kernel_timing import Shape, leaves_of, make_inputs
from decaylab.ops import BACKENDS


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", default="4x4096x64x128")
    parser.add_argument("--decay", choices=("scalar", "vector"), default="vector")
    args = parser.parse_args()
    inputs = make_inputs(Shape.parse(args.shape), args.decay == "vector", torch.device("cuda"))
    leaves = leaves_of(inputs)
    op = BACKENDS.get("triton")

    def fwd_bwd():
        op(*leaves)[0].backward(inputs["do"])
        for leaf in leaves:  # no gradients to add to: the backward writes them, as in training
            leaf.grad = None

    for _ in range(3):
        fwd_bwd()
    torch.cuda.synchronize()
    torch.cuda.cudart().cudaProfilerStart()
    fwd_bwd()
    torch.cuda.synchronize()
    torch.cuda.cudart().cudaProfilerStop()


if __name__ == "__main__":
    main()
