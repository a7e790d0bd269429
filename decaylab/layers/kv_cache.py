"""KVCache: the softmax baseline's encoded keys and values, in buffers that decoding appends to in place.

The buffers are ``[B, H, capacity, K]``; the first ``length`` positions are the cache, and ``k``, ``v`` and
``valid`` are views of them. Appending T tokens writes them into the next T slots: O(T) work, no copy of the cache.
When the buffers are full they move into new ones of twice the capacity (or more, when a capacity is asked for), so
a token costs amortized O(1) copying; a caller that knows the final length (prompt + new tokens) asks for it once.

Aliasing rule: a cache object never changes, and ``append`` returns a new one that shares the buffers. Objects of
one set of buffers share a counter of the positions written, so the first append from a given length claims the
slots after it and writes in place; an append from an object that is no longer the newest (a second branch from
the same prefix, an older object used again) sees the claim and first copies its own positions into new buffers.
Every object thus keeps reading exactly what it held. Rows picked or reordered by ``decaylab.model.padding.map_rows``
(beam search) keep the counter: whichever object appends first writes, the others copy. While autograd records
(or for inference tensors outside inference mode) an append copies too, as concatenation did: changing a tensor in
place would corrupt what the backward pass saved.

``StaticKVCache`` is the form a decoding step replayed from a CUDA graph needs (``decaylab.model.decoding``): fixed
buffers, its length a device tensor, each step attending over the whole capacity with a mask of the filled slots.
``KVCache.to_static`` makes one, taking over the buffers when it may.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F


class _Written:
    """Positions of a set of buffers already taken, shared by every cache object over those buffers."""

    __slots__ = ("length",)

    def __init__(self, length: int):
        self.length = length


class KVCache(NamedTuple):
    """Build with ``KVCache.from_tensors``; grow with ``append``; read ``k``, ``v``, ``valid``."""

    key_buffer: torch.Tensor
    """``[B, H, capacity, K']`` encoded keys; positions past ``length`` are not part of this cache."""
    value_buffer: torch.Tensor
    """``[B, H, capacity, K]`` values."""
    valid_buffer: torch.Tensor | None
    """``[B, capacity]`` bool, False at padding slots; None when every slot is a real key."""
    length: int
    """Positions this cache holds."""
    written: _Written
    """Positions of the buffers taken by any cache object over them (see the aliasing rule above)."""

    @property
    def k(self) -> torch.Tensor:
        """``[B, H, length, K']`` encoded keys."""
        return self.key_buffer[:, :, : self.length]

    @property
    def v(self) -> torch.Tensor:
        """``[B, H, length, K]`` values."""
        return self.value_buffer[:, :, : self.length]

    @property
    def valid(self) -> torch.Tensor | None:
        """``[B, length]`` bool, False at padding slots; None when every slot is a real key."""
        return None if self.valid_buffer is None else self.valid_buffer[:, : self.length]

    @property
    def capacity(self) -> int:
        return self.key_buffer.shape[2]

    @classmethod
    def from_tensors(cls, k: torch.Tensor, v: torch.Tensor, valid: torch.Tensor | None = None,
                     capacity: int | None = None) -> KVCache:
        """A cache of ``k, v [B, H, T, K]`` (``valid [B, T]``) with room for ``capacity`` positions in all.

        Without room to spare it holds the tensors themselves: they are full, so no append writes into them.
        """
        T = k.shape[2]
        if capacity is None or capacity <= T:
            return cls(k, v, valid, T, _Written(T))
        return cls(k, v, valid, T, _Written(T))._moved(capacity, k, v)

    @classmethod
    def stack(cls, caches) -> KVCache:
        """One batch from per-row caches of any lengths: shorter rows are left-padded and masked out."""
        n = max(c.length for c in caches)
        ks, vs, valid = [], [], []
        for c in caches:
            pad = n - c.length
            ks.append(F.pad(c.k, (0, 0, pad, 0)))
            vs.append(F.pad(c.v, (0, 0, pad, 0)))
            row = torch.ones(c.k.shape[0], c.length, dtype=torch.bool, device=c.k.device)
            valid.append(F.pad(row if c.valid is None else c.valid, (pad, 0), value=False))
        return cls.from_tensors(torch.cat(ks), torch.cat(vs), torch.cat(valid))

    def append(self, k: torch.Tensor, v: torch.Tensor, capacity: int | None = None) -> KVCache:
        """This cache followed by ``k, v [B, H, T, K]`` (real keys); ``capacity``: room to make if it must grow."""
        held = (*self.key_buffer.shape[:2], self.key_buffer.shape[3], self.value_buffer.shape[3])
        if (*k.shape[:2], k.shape[3], v.shape[3]) != held or k.shape[:3] != v.shape[:3]:
            raise ValueError(f"keys {tuple(k.shape)} and values {tuple(v.shape)} do not continue this cache (batch, "
                             f"heads, key and value channels {held}): continue a cache with the rows it was made for")
        start, end = self.length, self.length + k.shape[2]
        if self._may_write(k, v) and end <= self.capacity:
            cache = self
        else:
            room = self.capacity if end <= self.capacity else 2 * self.capacity  # doubling: amortized O(1) a token
            cache = self._moved(max(end, room, capacity or 0), k, v)
        cache.key_buffer[:, :, start:end] = k
        cache.value_buffer[:, :, start:end] = v
        if cache.valid_buffer is not None:
            cache.valid_buffer[:, start:end] = True
        cache.written.length = end
        return cache._replace(length=end)

    def to_static(self, steps: int) -> StaticKVCache:
        """This cache in buffers with room for ``steps`` more tokens, for a decoding step replayed from a CUDA graph.

        When these buffers have the room and this object may write into them, it takes them over: every slot is
        claimed, so an append from any other object over them copies first (the aliasing rule) and this cache stays
        what it was. Otherwise the positions move into new buffers.
        """
        end = self.length + steps
        if end <= self.capacity and self._may_write(self.key_buffer, self.value_buffer):
            cache = self
            self.written.length = self.capacity
        else:
            cache = self._moved(end, self.key_buffer, self.value_buffer)
        # A step reads every slot (masked): one of uninitialized memory holding a NaN would leak through the mask.
        cache.key_buffer[:, :, self.length :].zero_()
        cache.value_buffer[:, :, self.length :].zero_()
        device = cache.key_buffer.device
        return StaticKVCache(cache.key_buffer, cache.value_buffer, cache.valid_buffer,
                             torch.full((1,), self.length, dtype=torch.long, device=device),
                             torch.arange(cache.capacity, device=device))

    def _may_write(self, k: torch.Tensor, v: torch.Tensor) -> bool:
        """Whether appending may write into these buffers: this object is the newest over them, the new keys fit
        their dtype, and no autograd graph or inference-mode rule forbids changing them in place."""
        buffers = (self.key_buffer, self.value_buffer)
        return (self.written.length == self.length and k.dtype == self.key_buffer.dtype
                and v.dtype == self.value_buffer.dtype
                and not any(t.requires_grad for t in (k, v, *buffers))
                and (torch.is_inference_mode_enabled() or not any(t.is_inference() for t in buffers)))

    def _moved(self, capacity: int, k: torch.Tensor, v: torch.Tensor) -> KVCache:
        """A copy of this cache in new buffers of ``capacity`` positions (of a dtype that also holds ``k``, ``v``, as
        concatenation would promote), with its own counter."""
        B, H = self.key_buffer.shape[:2]

        def buffer(old: torch.Tensor, new_keys: torch.Tensor) -> torch.Tensor:
            dtype = torch.promote_types(old.dtype, new_keys.dtype)
            new = old.new_empty(B, H, capacity, old.shape[3], dtype=dtype)
            new[:, :, : self.length] = old[:, :, : self.length]
            return new

        valid = None
        if self.valid_buffer is not None:
            valid = self.valid_buffer.new_empty(B, capacity)
            valid[:, : self.length] = self.valid
        keys, values = buffer(self.key_buffer, k), buffer(self.value_buffer, v)
        return KVCache(keys, values, valid, self.length, _Written(self.length))


class StaticKVCache(NamedTuple):
    """A KV cache whose every tensor keeps its address from step to step: the form a CUDA graph can replay.

    The length is a ``[1]`` device tensor, and ``k``, ``v`` are the whole buffers: a step attends over every slot,
    with ``valid`` (built on the device from the length) masking the slots not filled yet, so that no shape or
    address depends on the length. ``append`` takes one token, writes it into slot ``length`` in place and returns
    the cache with a new length tensor, which the caller copies into this one's (``decaylab.model.decoding``). The
    caller also counts the steps on the host so that no slot past the capacity is written.
    """

    key_buffer: torch.Tensor
    """``[B, H, capacity, K']`` encoded keys."""
    value_buffer: torch.Tensor
    """``[B, H, capacity, K]`` values."""
    valid_buffer: torch.Tensor | None
    """``[B, capacity]`` bool, False at padding slots (a left-padded batch); None when every filled slot is real."""
    length: torch.Tensor
    """``[1]`` long: positions filled."""
    slots: torch.Tensor
    """``[capacity]`` long: 0 .. capacity - 1, kept so that a step does not rebuild it."""

    @property
    def k(self) -> torch.Tensor:
        return self.key_buffer

    @property
    def v(self) -> torch.Tensor:
        return self.value_buffer

    @property
    def valid(self) -> torch.Tensor:
        """``[B, capacity]`` bool: the filled slots that hold real keys."""
        filled = self.slots < self.length
        if self.valid_buffer is None:
            return filled.expand(self.key_buffer.shape[0], -1)
        return filled & self.valid_buffer

    @property
    def capacity(self) -> int:
        return self.key_buffer.shape[2]

    def append(self, k: torch.Tensor, v: torch.Tensor, capacity: int | None = None) -> StaticKVCache:
        """This cache followed by one token's ``k, v [B, H, 1, K]``, written in place (``capacity`` is ignored)."""
        if k.shape[2] != 1:
            raise ValueError(f"a StaticKVCache takes one token a step (decoding); got {k.shape[2]}: run a prompt "
                             "through the model with an ordinary cache (use_cache=True), then make the static one")
        self.key_buffer.index_copy_(2, self.length, k.to(self.key_buffer.dtype))
        self.value_buffer.index_copy_(2, self.length, v.to(self.value_buffer.dtype))
        if self.valid_buffer is not None:
            self.valid_buffer.index_fill_(1, self.length, True)
        return self._replace(length=self.length + 1)
