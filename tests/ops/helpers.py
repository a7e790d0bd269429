"""Random inputs, a forward+backward runner, a few training steps and a Triton-interpreter child process shared by the
ops tests."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import torch

from decaylab.ops import decay_linear_attention


def make_inputs(B, T, H, K, V, *, vector, dtype=torch.float64, initial_state=False, log_decay=None, seed=0):
    """q, k, v, log_decay, initial_state (or None) on CPU; decays are logsigmoid of shifted normals (<= 0)."""
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(B, T, H, K, generator=g, dtype=torch.float64)
    k = torch.randn(B, T, H, K, generator=g, dtype=torch.float64)
    v = torch.randn(B, T, H, V, generator=g, dtype=torch.float64)
    shape = (B, T, H, K) if vector else (B, T, H)
    if log_decay is None:
        log_decay = torch.nn.functional.logsigmoid(torch.randn(shape, generator=g, dtype=torch.float64) + 2.0)
    h0 = torch.randn(B, H, K, V, generator=g, dtype=torch.float64) if initial_state else None
    q, k, v = (x.to(dtype) for x in (q, k, v))
    return q, k, v, log_decay.to(dtype), h0


def run(backend, q, k, v, log_decay, h0, *, scale=1.0, seed=1, **kwargs):
    """Forward, then backward with random upstream gradients on o and on the final state.

    Returns a dict of o, final_state and the gradient of every input (grads in the inputs' dtypes).
    """
    leaves = {n: t.detach().clone().requires_grad_() for n, t in zip(["q", "k", "v", "log_decay"], (q, k, v, log_decay))}
    if h0 is not None:
        leaves["initial_state"] = h0.detach().clone().requires_grad_()
    fn = backend if callable(backend) else (lambda *a, **kw: decay_linear_attention(*a, **kw, backend=backend))
    o, final = fn(
        leaves["q"], leaves["k"], leaves["v"], leaves["log_decay"],
        scale=scale, initial_state=leaves.get("initial_state"), output_final_state=True, **kwargs,
    )
    g = torch.Generator().manual_seed(seed)
    # Upstream gradients from fixed shapes (not *_like: outputs may be strided views).
    d_o = torch.randn(tuple(o.shape), generator=g, dtype=torch.float64).to(o.dtype)
    d_final = torch.randn(tuple(final.shape), generator=g, dtype=torch.float64).to(final.dtype)
    ((o.double() * d_o.double()).sum() + (final.double() * d_final.double()).sum()).backward()
    out = {"o": o.detach(), "final_state": final.detach()}
    out.update({f"d{name}": t.grad for name, t in leaves.items()})
    return out


def train_steps(model, batches) -> list[float]:
    """Plain AdamW steps (lr 3e-3) of next-token loss on ``[B, T+1]`` token batches; the loss of each step."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for ids in batches:
        loss = torch.nn.functional.cross_entropy(model(ids[:, :-1]).flatten(0, 1), ids[:, 1:].flatten())
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    return losses


def run_under_interpreter(script: str, cases: dict) -> dict:
    """Run ``script`` (``python -c``, given the JSON of ``cases`` as argv[1]) in a child process under
    TRITON_INTERPRET=1, which must be set before triton is imported; merge the JSON line it prints per case."""
    repo = Path(__file__).resolve().parents[2]
    env = dict(os.environ, TRITON_INTERPRET="1", PYTHONPATH=f"{repo}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
    out = subprocess.run([sys.executable, "-c", script, json.dumps(cases)], capture_output=True, text=True, env=env,
                         cwd=repo, timeout=600, check=False)  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    found = {}
    for line in out.stdout.splitlines():
        found.update(json.loads(line))
    return found


# The interpreter tests' bounds (test_triton_interpret.py, and the vector ones here): relative RMS error allowed per
# input dtype (fp32 kernels run in true fp32 under the interpreter).
RATIO = {"float32": 1e-5, "float16": 5e-3}
# With log decays down to -1e3 a chunk's cumulative decays reach -1e4 (log2 units) or more, and hard resets put them
# near -1.4e3 per reset, where an fp32 ulp is ~1e-4 to ~1e-3: every pair decay 2^(G_i - G_j) then carries that much
# error in its exponent, and so do o and every gradient. fp32 measured up to 2.3e-5 relative RMS (o, dq, dk, dv over
# seeds) against ~1e-7 with ordinary decays, and 1.7e-5 to 5.7e-5 in the reset cases, the same as the two-sweep
# backward's on the same inputs.
RATIO_EXTREME = {"float32": 1e-4, "float16": 5e-3}
# There the true gate gradient is ~0 (exp(-1000) underflows) while q*dq and k*dk are O(1) and cancel in the
# reverse-cumsum identity: a relative error is meaningless, so dlog_decay gets an absolute bound on that rounding
# noise instead (fp32 measured 3.6e-5 to 1.1e-4 over 40 to 150 tokens).
ATOL_GATE_EXTREME = {"float32": 3e-4, "float16": 5e-3}


def assert_errors_within(name: str, errors: dict, dtype: str, lowest: float, resets: float) -> None:
    """Every tensor of ``errors`` (``check.error_summary``'s) finite and within its relative RMS bound for ``dtype``:
    RATIO_EXTREME where log decays reach -100 or hard resets are in, and where every decay may be that low an
    absolute bound on the gate gradient (its true value is ~0 while the terms that make it are O(1) and cancel)."""
    extreme = lowest <= -100 or resets > 0
    for tensor, (rel, finite, max_abs) in errors.items():
        assert finite, f"{name}: {tensor} has non-finite values"
        if tensor == "dlog_decay" and lowest <= -100:
            atol = ATOL_GATE_EXTREME[dtype]
            assert max_abs < atol, f"{name}: {tensor} max abs error {max_abs:.3e} >= {atol:.1e}"
            continue
        bound = (RATIO_EXTREME if extreme else RATIO)[dtype]
        assert rel < bound, f"{name}: {tensor} relative RMS error {rel:.3e} >= {bound:.1e}"


class _Traced(Exception):
    pass


def dynamo_kernel_launches(fn, *args, monkeypatch) -> tuple[int, int]:
    """Triton kernel launches in Dynamo's forward and backward graphs of ``fn(*args)`` traced whole
    (``fullgraph``); nothing runs: the backend records the graph and stops. Dynamo recognises Triton kernels only
    where torch finds a GPU, so that check is patched. Asserts one graph."""
    import torch.utils._triton

    monkeypatch.setattr(torch.utils._triton, "has_triton", lambda: True)
    graphs = []

    def backend(graph, example_inputs):
        graphs.append(graph)

        def stop(*_):
            raise _Traced

        return stop

    torch._dynamo.reset()
    try:
        try:
            torch.compile(fn, fullgraph=True, backend=backend)(*args)
        except _Traced:
            pass
        else:
            raise AssertionError("the compiled function ran instead of stopping at its graph")
    finally:
        torch._dynamo.reset()
    assert len(graphs) == 1, f"{len(graphs)} graphs"
    launch = "higher_order.triton_kernel_wrapper"
    return graphs[0].fwd_body_0.code.count(launch), graphs[0].bwd_body_0.code.count(launch)
