"""Triton GPU kernels for decayed linear attention (scalar and vector decay), registered as backend "triton".

    S_t = diag(exp(log_decay_t)) S_{t-1} + k_t v_t^T,    o_t = scale * S_t^T q_t

Importing this package raises ImportError when triton is missing, so ``decaylab.ops`` simply leaves the backend
out. The kernels run on CUDA tensors, or on CPU tensors when TRITON_INTERPRET=1 was set before triton was
imported (slow; used by the tests).
"""

import triton  # noqa: F401  (ImportError here keeps the backend unregistered)

from decaylab.ops.backends import BACKENDS
from decaylab.ops.triton.configs import use_config
from decaylab.ops.triton.function import triton_decay_linear_attention
from decaylab.ops.triton.knobs import launch_plan, with_knobs
from decaylab.ops.triton.plans import LaunchPlan

BACKENDS.register("triton")(triton_decay_linear_attention)

# The flat-knob constructor under its earlier name: LaunchConfig(chunk=32, num_warps=4, num_stages=2, ...).
LaunchConfig = launch_plan

__all__ = ["triton_decay_linear_attention", "LaunchPlan", "launch_plan", "with_knobs", "use_config", "LaunchConfig"]
