"""Where an eager forward+backward of the triton op spends host time, function by function (cProfile), at one
shape and decay: the forward (with grad) and the backward profiled apart, each sorted by own time and by
cumulative time. cProfile inflates Python-heavy paths; host_split.py gives the unprofiled totals.

    python scripts/host_profile.py [--shape 4x2048x16x128] [--decay scalar] [--calls 100] [--lines 30]
"""

import argparse
import cProfile
import io
import pstats

import torch

from decaylab.bench.kernel_timing import Shape, leaves_of, make_inputs
from decaylab.ops import BACKENDS

parser = argparse.ArgumentParser()
parser.add_argument("--shape", default="4x2048x16x128")
parser.add_argument("--decay", default="scalar", choices=("scalar", "vector"))
parser.add_argument("--calls", type=int, default=100)
parser.add_argument("--lines", type=int, default=30)
args = parser.parse_args()

op = BACKENDS.get("triton")
inputs = make_inputs(Shape.parse(args.shape), args.decay == "vector", torch.device("cuda"))
leaves, do = leaves_of(inputs), inputs["do"]
forward, backward = cProfile.Profile(), cProfile.Profile()


def call(profile: bool) -> None:
    if profile:
        forward.enable()
    o = op(*leaves)[0]
    if profile:
        forward.disable()
        backward.enable()
    o.backward(do)
    if profile:
        backward.disable()
    for leaf in leaves:
        leaf.grad = None


for _ in range(10):
    call(False)
torch.cuda.synchronize()
for _ in range(args.calls):
    call(True)
torch.cuda.synchronize()
for name, prof in (("forward (with grad)", forward), ("backward", backward)):
    for order in ("tottime", "cumulative"):
        text = io.StringIO()
        pstats.Stats(prof, stream=text).sort_stats(order).print_stats(args.lines)
        print(f"\n### {args.shape} {args.decay}: {name}, {args.calls} calls, by {order}\n{text.getvalue()}", flush=True)
