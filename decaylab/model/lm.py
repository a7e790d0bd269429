"""DecayLM: a pre-norm decoder of decay-linear-attention (or softmax) blocks with SwiGLU FFNs.

    x_0 = Dropout(TPE?(Embed(ids)))
    x  <- x + Dropout(Mixer(RMSNorm(x)))          mixer: MIXERS[cfg.mixer]
    x  <- x + Dropout(SwiGLU(RMSNorm(x)))
    logits = LMHead(RMSNorm(x))                    untied head (tie_embeddings: RMSNorm(x) @ Embed^T)

The model owns HGRN2's per-layer lower bound when the decay uses it: Gamma in R^{L x decay shape} (init ones),
P = softmax(Gamma, over layers), C = cumsum(P), lb_l = C_l - C_0 (so lb_0 = 0; lb_l = l/L at init); each layer's
decay receives its lb_l. Init (the paper's intent): embeddings and linears ~ TruncNormal(0, 0.02, +-3 std), the FFN
output w3 zero, every norm weight one, decay parameters by their kind, lower-bound logits one.

Calling conventions:
    logits = model(ids)                                   [B, T, vocab]
    logits, log_decays = model(ids, return_decays=True)   one fp32 tensor per layer (empty list for softmax)
    logits, cache = model(ids, use_cache=True)            start decoding; then model(next_ids, cache=cache)
    logits = model(ids, logits_to_keep=1)                 logits of the last position only [B, 1, vocab]
    logits, log_decays, cache = model(ids, cache=cache, return_decays=True)
    logits, cache = model(ids, use_cache=True, cache_capacity=n)   room for n positions in growing (KV) caches
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, NamedTuple

import torch
from torch import nn
from torch.nn import functional as F

from decaylab.decay import DecayParam
from decaylab.layers import MIXERS, POSITIONAL_ENCODINGS, RMSNorm, ShortConv, SwiGLU, TemporalPositionEncoding
from decaylab.model.config import ModelConfig
from decaylab.ops.linear_cross_entropy import linear_cross_entropy


class Cache(NamedTuple):
    """Everything decoding carries between calls; a call returns a new Cache and leaves the old one intact.

    Softmax layers' KV caches share preallocated buffers between the old and the new Cache: continuing twice from
    one Cache (branching) is still correct, the second continuation copies its keys (``layers/kv_cache.py``).
    """

    layers: tuple[Any, ...]
    """Per-layer mixer caches (LinearAttentionCache or KVCache)."""
    input_state: torch.Tensor | None
    """State of an input positional encoding (TPE), or None."""
    offset: int | torch.Tensor
    """Number of tokens already processed: the position of the next token (a ``[B]`` tensor when the rows of a
    left-padded batch sit at different positions, see ``decaylab.model.padding``)."""


class Block(nn.Module):
    def __init__(self, cfg: ModelConfig, layer_idx: int):
        super().__init__()
        self.mixer_norm = RMSNorm(cfg.d_model, cfg.norm_eps)
        self.mixer = MIXERS.get(cfg.mixer)(cfg, layer_idx)
        self.ffn_norm = RMSNorm(cfg.d_model, cfg.norm_eps)
        self.ffn = SwiGLU(cfg.d_model, cfg.ffn_dim)
        self.dropout = nn.Dropout(cfg.dropout)

    def forward(self, x, *, lower_bound=None, cache=None, offset=0, use_cache=False, cache_capacity=None):
        out = self.mixer(self.mixer_norm(x), lower_bound=lower_bound, cache=cache, offset=offset, use_cache=use_cache,
                         cache_capacity=cache_capacity)
        x = x + self.dropout(out.y)
        x = x + self.dropout(self.ffn(self.ffn_norm(x)))
        return x, out


class DecayLM(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        if not isinstance(cfg, ModelConfig):
            raise ValueError(f"DecayLM needs a ModelConfig, got {type(cfg).__name__}; use ModelConfig.from_preset")
        if cfg.vocab_size is None:
            raise ValueError("ModelConfig.vocab_size is None (a training run takes it from its data); give the "
                             "vocabulary size to build a model on its own, e.g. {'vocab_size': 10000}")
        self.cfg = cfg
        self.embed = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.input_pe = POSITIONAL_ENCODINGS.get(cfg.pos).input_module(cfg.d_model, cfg.n_heads, cfg.norm_eps)
        self.dropout = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(Block(cfg, i) for i in range(cfg.n_layers))
        self.norm = RMSNorm(cfg.d_model, cfg.norm_eps)
        # Tied: the logits are x @ embed.weight.T; no second matrix, so the state dict has one tensor to save.
        self.lm_head = None if cfg.tie_embeddings else nn.Linear(cfg.d_model, cfg.vocab_size, bias=False)
        self.lower_bound_logits = None
        if cfg.mixer == "linear" and cfg.decay.uses_lower_bound:
            shape = self.blocks[0].mixer.decay.shape
            self.lower_bound_logits = nn.Parameter(torch.ones(cfg.n_layers, *shape))
            self.lower_bound_logits._no_weight_decay = True
        self.init_weights()

    # ----------------------------------------------------------------------------------------------- init
    @torch.no_grad()
    def init_weights(self) -> None:
        std = self.cfg.init_std
        for m in self.modules():
            if isinstance(m, (nn.Linear, nn.Embedding)):
                nn.init.trunc_normal_(m.weight, 0.0, std, -3 * std, 3 * std)
        for m in self.modules():
            if isinstance(m, (RMSNorm, DecayParam, TemporalPositionEncoding, ShortConv)):
                m.reset_parameters()
        for block in self.blocks:
            nn.init.zeros_(block.ffn.w3.weight)
        if self.lower_bound_logits is not None:
            self.lower_bound_logits.fill_(1.0)

    # -------------------------------------------------------------------------------------------- forward
    def lower_bounds(self) -> list[torch.Tensor | None]:
        """Each layer's decay lower bound ``[*decay shape]`` (None where there is none; layer 0 is always 0)."""
        L = self.cfg.n_layers
        if self.lower_bound_logits is None:
            return [None] * L
        gamma = self.lower_bound_logits
        c = torch.softmax(gamma.to(torch.promote_types(gamma.dtype, torch.float32)), dim=0).cumsum(dim=0)
        lb = c - c[:1]
        return [None] + [lb[i] for i in range(1, L)]  # lb_0 = C_0 - C_0 = 0 exactly, whatever Gamma is

    def forward(self, input_ids: torch.Tensor, *, cache: Cache | None = None, use_cache: bool = False,
                return_decays: bool = False, logits_to_keep: int | torch.Tensor = 0,
                targets: torch.Tensor | None = None, cache_capacity: int | None = None):
        """Logits ``[B, T, vocab]`` (plus the per-layer log decays and the cache when asked for).

        With ``targets`` ``[B, T]`` (-100: not scored) it returns the mean token loss instead, computed from the
        hidden states by ``decaylab.ops.linear_cross_entropy`` without a logits tensor on a CPU.

        ``cache_capacity``: positions to make room for in caches that grow with the sequence (softmax layers' KV
        caches) when they are created or must grow; the final length, when known, so decoding allocates once.
        """
        if targets is not None and (use_cache or cache is not None or return_decays or _keeps_some(logits_to_keep)):
            raise ValueError("targets= returns the loss only; call without targets for logits, decays or a cache")
        if not isinstance(input_ids, torch.Tensor) or input_ids.ndim != 2 or input_ids.dtype not in (
            torch.long, torch.int32
        ):
            got = tuple(input_ids.shape) if isinstance(input_ids, torch.Tensor) else type(input_ids).__name__
            raise ValueError(f"input_ids must be a [batch, tokens] integer tensor; got {got}")
        if cache is not None and not isinstance(cache, Cache):
            raise ValueError("cache must be the Cache a previous call returned (pass use_cache=True to start one)")
        if cache_capacity is not None and (not isinstance(cache_capacity, int) or cache_capacity < 1):
            raise ValueError(f"cache_capacity={cache_capacity!r} must be a positive number of positions or None")
        use_cache = use_cache or cache is not None
        offset = 0 if cache is None else cache.offset
        x = self.embed(input_ids)
        input_state = None
        if self.input_pe is not None:
            x, input_state = self.input_pe(x, None if cache is None else cache.input_state, use_cache)
        x = self.dropout(x)
        log_decays, layer_caches = [], []
        for i, (block, lb) in enumerate(zip(self.blocks, self.lower_bounds())):
            x, out = block(x, lower_bound=lb, cache=None if cache is None else cache.layers[i], offset=offset,
                           use_cache=use_cache, cache_capacity=cache_capacity)
            if out.log_decay is not None:
                log_decays.append(out.log_decay)
            layer_caches.append(out.cache)
        if isinstance(logits_to_keep, torch.Tensor):  # positions to keep
            x = x[:, logits_to_keep]
        elif logits_to_keep:  # the last n positions (decoding needs only the last: no [T, vocab] matmul)
            x = x[:, -logits_to_keep:]
        x = self.norm(x)
        head = self.embed.weight if self.lm_head is None else self.lm_head.weight
        if targets is not None:
            return linear_cross_entropy(x.flatten(0, 1), head, targets.flatten())
        logits = F.linear(x, head)
        result: tuple = (logits,)
        if return_decays:
            result += (log_decays,)
        if use_cache:
            result += (Cache(tuple(layer_caches), input_state, offset + input_ids.shape[1]),)
        return result[0] if len(result) == 1 else result

    # ------------------------------------------------------------------------------------------- utilities
    def set_backend(self, backend: str) -> "DecayLM":
        """Pick the ``decaylab.ops`` backend of every linear-attention call (``auto`` by default)."""
        from decaylab.ops import BACKENDS

        if backend != "auto":
            BACKENDS.get(backend)  # unknown name -> ValueError with the available ones
        for m in self.modules():
            if hasattr(m, "backend"):
                m.backend = backend
        return self

    def param_groups(self, weight_decay: float, decay_everything: bool = False) -> list[dict]:
        """AdamW parameter groups: matrices decayed; decay parameters, norms, embeddings not.

        ``decay_everything=True`` puts every parameter in one decayed group (the paper's training setup).
        """
        params = [p for p in self.parameters() if p.requires_grad]
        if decay_everything:
            return [{"params": params, "weight_decay": weight_decay}]
        embed = self.embed.weight
        decayed, other = [], []
        for p in params:
            keep = p.ndim >= 2 and p is not embed and not getattr(p, "_no_weight_decay", False)
            (decayed if keep else other).append(p)
        return [{"params": decayed, "weight_decay": weight_decay}, {"params": other, "weight_decay": 0.0}]

    def num_params(self, non_embedding: bool = False) -> int:
        """Parameter count; ``non_embedding`` leaves out the embedding and the LM head (when it is not tied)."""
        n = sum(p.numel() for p in self.parameters())
        if non_embedding:
            n -= self.embed.weight.numel() + (0 if self.lm_head is None else self.lm_head.weight.numel())
        return n

    @torch.no_grad()
    def generate(self, input_ids: torch.Tensor, max_new_tokens: int, temperature: float = 1.0,
                 top_k: int | None = None, top_p: float | None = None, *, generator: torch.Generator | None = None,
                 prefill_chunk_size: int | None = None, cuda_graph: str = "auto") -> torch.Tensor:
        """Sample continuations: ``[B, T] -> [B, T + max_new_tokens]``; see ``decaylab.model.generation``
        (``cuda_graph``: auto, on or off: replay the decoding step from a CUDA graph on a CUDA device)."""
        from decaylab.model.generation import generate

        return generate(self, input_ids, max_new_tokens, temperature, top_k, top_p, generator=generator,
                        prefill_chunk_size=prefill_chunk_size, cuda_graph=cuda_graph)

    def save_pretrained(self, directory: str | Path, overwrite: bool = False) -> Path:
        """Write ``config.json`` and ``model.safetensors`` into ``directory``."""
        from decaylab.model.checkpoint import save_pretrained

        return save_pretrained(self, directory, overwrite=overwrite)

    @classmethod
    def from_pretrained(cls, directory: str | Path, map_location: str | torch.device = "cpu") -> "DecayLM":
        """Load a model written by ``save_pretrained``."""
        from decaylab.model.checkpoint import load_pretrained

        return load_pretrained(cls, directory, map_location=map_location)


def _keeps_some(logits_to_keep: int | torch.Tensor) -> bool:
    return isinstance(logits_to_keep, torch.Tensor) or logits_to_keep != 0
