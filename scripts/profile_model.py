"""Where a training step of the ``160m`` preset spends its GPU time, on decaylab's kernels and on fla's: the step of
``decaylab bench kernels --section model`` (``kernel_model.model_step``: B8·T2048, bf16 autocast, fused AdamW),
profiled eagerly, its kernels grouped into the attention op's, the matmuls, the loss and the rest. Needs a CUDA
device (and fla for ``fla``).

    python scripts/profile_model.py [--decays scalar vector] [--backends triton fla] [--steps 3] [--rows 25]
        [--plain-loss]   (--plain-loss: the step as it was before the fused loss and FFN activation)
"""

import argparse
import contextlib
from unittest import mock

import torch
from torch.profiler import ProfilerActivity, profile

from decaylab.bench.kernel_model import MODEL_DECAYS, model_step, register_fla_backend
from decaylab.ops import linear_cross_entropy
from decaylab.ops import swiglu as swiglu_op

# kernel name fragments -> group (first match wins; the op's kernels are Triton's, named after their functions)
GROUPS = (
    ("attention op", ("chunk", "gluon", "fwd_kernel", "bwd_kernel", "two_sweep", "segment", "dstates", "dqk",
                      "recompute", "gla", "fused_recurrent")),
    ("matmul", ("gemm", "sm90_xmma", "cutlass", "nvjet", "ampere", "sm80")),
    ("loss", ("softmax", "nll", "cross_entropy")),
    ("optimizer", ("adam", "multi_tensor")),
    ("norm", ("norm",)),
    ("silu, products (FFN activation, q and k)", ("swiglu", "silu", "mul")),
)


def group_of(name: str) -> str:
    lowered = name.lower()
    for group, fragments in GROUPS:
        if any(f in lowered for f in fragments):
            return group
    return "other"


def run(backend: str, decay: str, steps: int, rows: int, plain_loss: bool) -> None:
    # the plain loss: the model's own loss below the fused loss's threshold is torch's formula on the logits
    plain = (mock.patch.object(linear_cross_entropy, "FUSED_MIN_LOGITS", float("inf")) if plain_loss
             else contextlib.nullcontext())  # fmt: skip
    with plain, swiglu_op.use_kernels(False if plain_loss else None):
        step = model_step(backend, MODEL_DECAYS[decay], "cuda")
        for _ in range(3):
            step()
        torch.cuda.synchronize()
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            for _ in range(steps):
                step()
            torch.cuda.synchronize()
    events = [e for e in prof.key_averages() if e.device_time_total > 0]
    total = sum(e.device_time_total for e in events) / steps / 1000
    groups: dict[str, float] = {}
    for e in events:
        groups[group_of(e.key)] = groups.get(group_of(e.key), 0.0) + e.device_time_total / steps / 1000
    print(f"== {backend} {decay}{' (plain loss, torch FFN activation)' if plain_loss else ''}: {total:.2f} ms of kernels per step; "
          + ", ".join(f"{g} {ms:.2f}" for g, ms in sorted(groups.items(), key=lambda kv: -kv[1])), flush=True)
    for e in sorted(events, key=lambda e: -e.device_time_total)[:rows]:
        print(f"   {e.device_time_total / steps / 1000:8.3f} ms {e.count // steps:5d}x  [{group_of(e.key)}] {e.key[:90]}")
    del step
    torch.cuda.empty_cache()


parser = argparse.ArgumentParser()
parser.add_argument("--decays", nargs="+", default=["scalar", "vector"], choices=sorted(MODEL_DECAYS))
parser.add_argument("--backends", nargs="+", default=["triton", "fla"])
parser.add_argument("--steps", type=int, default=3)
parser.add_argument("--rows", type=int, default=25)
parser.add_argument("--plain-loss", action="store_true",
                    help="torch's loss formula on the logits (not the fused loss) and the FFN activation in torch")
args = parser.parse_args()
if "fla" in args.backends:
    register_fla_backend()
for decay in args.decays:
    for backend in args.backends:
        run(backend, decay, args.steps, args.rows, args.plain_loss)
