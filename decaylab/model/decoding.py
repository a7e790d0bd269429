"""One-token decoding steps: eager, or over fixed cache tensors updated in place and replayed from a CUDA graph.

An eager step is the model's forward on one token: a few hundred kernel launches and the Python around them, for
well under a millisecond of GPU work in a small model, so the host sets the pace. A CUDA graph records a step's
kernels once and replays them with one launch, which needs every tensor the step reads or writes to stay at one
address. ``StaticDecoder`` therefore owns:

* the input ids ``[B, 1]``, copied in before each step;
* the position offset as a ``[B]`` device tensor (rope and lrpe compute their angles from it on the device);
* every layer's cache in fixed tensors (each cache type's ``to_static``): the linear state ``[B, H, K', V]`` with
  the decay's carried state (lightnet, lssp), TPE's state, and for softmax layers a ``StaticKVCache``
  (``layers/kv_cache.py``) that attends over its whole capacity with a mask of the filled slots.

A step runs the model's ordinary forward on that cache and copies the new Cache it returns into the fixed tensors
(``copy_cache_``): the eager forward is the same code, unchanged. On CUDA the first step runs eagerly on a side
stream, which also warms up (Triton compiles its kernels, cuBLAS sets up), and is then captured; every later step
replays the graph. Sampling stays outside the graph. With ``graph=False`` (any device) every step runs the same
in-place code eagerly: that is how the tests check it against the ordinary step on a CPU.
"""

from __future__ import annotations

import torch

GRAPH_MODES = ("auto", "on", "off")
# Fewest steps for which ``auto`` captures a graph. A capture is not free: torch.cuda.graph synchronizes, runs the
# garbage collector and empties the allocator's cache, and the first step runs eagerly besides; a graph for a
# handful of tokens could cost more than it saves. Not measured: an eager step of the 160m model is ~10 ms on an
# H100, and 16 steps put the break-even at a capture of up to ~0.15 s.
GRAPH_MIN_STEPS = 16


class EagerDecoder:
    """``decoder(ids [B, 1]) -> logits [B, vocab]``: the model's ordinary step, carrying a new Cache each time."""

    def __init__(self, model, cache):
        self.model, self.cache = model, cache

    def __call__(self, ids: torch.Tensor) -> torch.Tensor:
        logits, self.cache = self.model(ids, cache=self.cache)
        return logits[:, -1]


class StaticDecoder:
    """``decoder(ids [B, 1]) -> logits [B, vocab]`` for up to ``steps`` tokens after ``cache`` (left intact).

    The logits are a tensor that the next call overwrites: sample from them before calling again.
    """

    def __init__(self, model, cache, steps: int, graph: bool):
        why = unsupported(model, cache, graph)
        if why:
            raise ValueError(f"no static decoding step here: {why}; decode eagerly (cuda_graph='off')")
        device = cache.layers[0][0].device
        batch = cache.layers[0][0].shape[0]
        offset = cache.offset
        if isinstance(offset, torch.Tensor):
            offset = offset.to(device=device, dtype=torch.long, copy=True)
        else:
            offset = torch.full((batch,), offset, dtype=torch.long, device=device)
        state = cache.input_state
        state = None if state is None else state.clone(memory_format=torch.contiguous_format)
        self.cache = cache._replace(layers=tuple(layer.to_static(steps) for layer in cache.layers), input_state=state,
                                    offset=offset)
        self.model, self.steps_left, self.use_graph = model, steps, graph
        self.ids = torch.zeros(batch, 1, dtype=torch.long, device=device)
        self.graph: torch.cuda.CUDAGraph | None = None
        self.logits: torch.Tensor | None = None

    def _step(self) -> torch.Tensor:
        logits, cache = self.model(self.ids, cache=self.cache)
        copy_cache_(self.cache, cache)
        return logits[:, -1]

    @torch.no_grad()
    def __call__(self, ids: torch.Tensor) -> torch.Tensor:
        if self.steps_left == 0:
            raise ValueError("this decoder has taken every step it was built for (its KV caches are full); build a "
                             "new one from the cache with more steps")
        self.steps_left -= 1
        self.ids.copy_(ids)
        if not self.use_graph:
            return self._step()
        if self.graph is not None:
            self.graph.replay()
            return self.logits
        # The first step runs for real on a side stream (a capture must not be the first run: lazy setup such as a
        # Triton compilation would fall inside it), then the same step is recorded, not run, for the later ones.
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            logits = self._step()
        torch.cuda.current_stream().wait_stream(side)
        logits.record_stream(torch.cuda.current_stream())  # made on the side stream, read on this one
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            self.logits = self._step()
        return logits


def copy_cache_(dst, src) -> None:
    """Copy each tensor of ``src`` into the tensor in the same place of ``dst`` (a model Cache, or a part of one)."""
    if isinstance(dst, torch.Tensor):
        if src is not dst:
            dst.copy_(src)
    elif isinstance(dst, tuple):
        if not isinstance(src, tuple) or len(src) != len(dst):
            raise ValueError(f"cannot copy a {type(src).__name__} into a {type(dst).__name__}: not the same layout")
        for d, s in zip(dst, src):
            copy_cache_(d, s)
    elif dst is not None or src is not None:
        raise ValueError(f"a static cache holds tensors; got {type(dst).__name__} and {type(src).__name__}")


def unsupported(model, cache, graph: bool) -> str | None:
    """Why ``StaticDecoder`` cannot decode from ``cache`` (None: it can)."""
    device = cache.layers[0][0].device
    if graph and device.type != "cuda":
        return f"the model is on {device}; a CUDA graph needs a CUDA device"
    if graph and torch.is_autocast_enabled(device.type):
        return "autocast is on (its cast cache does not outlive a graph capture); cast the model to the dtype instead"
    if model.training:
        return "the model is in training mode (dropout); call model.eval()"
    for i, layer in enumerate(cache.layers):
        if not hasattr(layer, "to_static"):
            return f"layer {i}'s cache ({type(layer).__name__}) has no fixed-size form (to_static)"
    return None


def check_graph_mode(cuda_graph: str) -> None:
    if cuda_graph not in GRAPH_MODES:
        raise ValueError(f"cuda_graph={cuda_graph!r} must be one of {', '.join(GRAPH_MODES)}")


def make_decoder(model, cache, steps: int, cuda_graph: str = "auto") -> EagerDecoder | StaticDecoder:
    """The decoder for ``steps`` tokens after ``cache``: ``auto`` replays a CUDA graph where one can be used (CUDA,
    every layer's cache of a fixed-size form) and may pay off (``GRAPH_MIN_STEPS`` steps or more), ``on``
    insists (ValueError where it cannot), ``off`` steps eagerly."""
    check_graph_mode(cuda_graph)
    if cuda_graph == "off" or (cuda_graph == "auto" and steps < GRAPH_MIN_STEPS):
        return EagerDecoder(model, cache)
    why = unsupported(model, cache, graph=True)
    if why is None:
        return StaticDecoder(model, cache, steps, graph=True)
    if cuda_graph == "on":
        raise ValueError(f"cuda_graph='on' cannot be honoured: {why}. Or pass cuda_graph='auto' (a graph where one "
                         "can be used) or 'off'")
    return EagerDecoder(model, cache)
