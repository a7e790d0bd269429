"""DecayConfig: which decay parameterization a linear-attention layer uses, and how.

The fields map onto the four design axes of decay linear attention:

* ``kind``         the parameterization (a name in ``DECAY_KINDS``: mamba2, gla, hgrn2, lightnet, simple, ...);
* ``share``        no decay projection: the decay is computed from the key projection and the key from the decay;
* ``granularity``  ``"vector"`` (one decay per key channel) or ``"scalar"`` (one per head);
* the positional encoding lives on the model config (``pos``) because it also shapes q and k.

Which combinations exist is declared by each kind's capability flags (``supports_scalar``, ``supports_vector``,
``supports_share``, ``supports_lower_bound``) and by the settings it reads (``options``); anything else is a
``ValueError`` here, at construction time, naming the fields and the allowed values.
"""

from __future__ import annotations

import dataclasses
from typing import Literal


@dataclasses.dataclass(frozen=True)
class DecayConfig:
    kind: str = "simple"
    """Decay parameterization, a name in ``decaylab.DECAY_KINDS`` (see docs/design-space.md)."""
    granularity: Literal["vector", "scalar"] = "vector"
    """``vector``: one decay per head and key channel; ``scalar``: one decay per head."""
    share: bool = False
    """Tie the key to the decay (no decay projection; the key is derived from the decay). Vector decay only."""
    p: float = 0.99
    """Simple Decay only: the median decay at initialization (bias init logit(p))."""
    gla_form: Literal["paper", "original"] = "paper"
    """GLA only: ``paper`` lambda = sigmoid(x / 16); ``original`` (the GLA paper) log lambda = logsigmoid(x) / 16."""
    lower_bound: bool | None = None
    """HGRN2's learnable per-layer lower bound, lambda = lb_l + (1 - lb_l) * lambda_raw. None: the kind's default
    (on for hgrn2, off elsewhere). Only for the sigmoid family (gla, hgrn2, simple)."""
    rank: int | None = None
    """Rank of the low-rank vector decay projection d -> rank -> H*K. None: the head dimension (64 in the paper)."""

    def __post_init__(self) -> None:
        from decaylab.decay.kinds import DECAY_KINDS  # imported here: the config module itself needs no torch

        cls = DECAY_KINDS.get(self.kind)  # unknown kind -> ValueError with the closest names
        if self.granularity == "vector" and not cls.supports_vector:
            raise ValueError(
                f"decay.kind={self.kind!r} is a per-head (scalar) decay; set decay.granularity='scalar' "
                f"(allowed for {self.kind!r}: 'scalar')"
            )
        if self.granularity == "scalar" and not cls.supports_scalar:
            raise ValueError(f"decay.kind={self.kind!r} has no scalar form; set decay.granularity='vector'")
        if self.share and not cls.supports_share:
            raise ValueError(
                f"decay.share=True is not defined for decay.kind={self.kind!r} (a data-independent decay cannot "
                f"produce a key); set decay.share=False. Kinds that support sharing: "
                + ", ".join(n for n, c in DECAY_KINDS.items() if c.supports_share)
            )
        if self.share and self.granularity == "scalar":
            raise ValueError(
                "decay.share=True needs decay.granularity='vector': a shared key is derived channel by channel "
                "from the decay, and a scalar decay has one value per head, which would give every key channel the "
                "same value. Set decay.granularity='vector' or decay.share=False"
            )
        if self.lower_bound and not cls.supports_lower_bound:
            raise ValueError(
                "decay.lower_bound=True applies to the sigmoid family only (allowed kinds: "
                + ", ".join(repr(n) for n, c in DECAY_KINDS.items() if c.supports_lower_bound)
                + f"); decay.kind={self.kind!r} cannot take it. Set decay.lower_bound=None"
            )
        if not 0.0 < self.p < 1.0:
            raise ValueError(f"decay.p={self.p} must be in (0, 1) (the initial median decay)")
        if self.rank is not None and self.rank < 1:
            raise ValueError(f"decay.rank={self.rank} must be a positive integer or None (head dimension)")
        defaults = DecayConfig.__dataclass_fields__
        for option in ("p", "gla_form"):
            if getattr(self, option) != defaults[option].default and option not in cls.options:
                users = [n for n, c in DECAY_KINDS.items() if option in c.options]
                raise ValueError(
                    f"decay.{option}={getattr(self, option)!r} has no effect on decay.kind={self.kind!r}; it applies "
                    f"to {', '.join(repr(u) for u in users)}. Leave decay.{option} at its default"
                )

    @property
    def uses_lower_bound(self) -> bool:
        """The resolved lower-bound switch: the explicit setting, else the kind's default."""
        from decaylab.decay.kinds import DECAY_KINDS

        if self.lower_bound is None:
            return DECAY_KINDS.get(self.kind).default_lower_bound
        return self.lower_bound
