"""Launch plans spelled as flat knobs, the names benchmark sweeps, tests and docs use: ``chunk=32``,
``bwd_num_warps=8``, ``chunk_parallel_backward=True``, ``fused_dv=True`` ...

Three knobs choose types (``chunk_parallel_backward``: the backward strategy; ``fused_dv`` and ``dv_in_sweep``: how
the chunk-parallel backward computes dv); every other knob is one field of one part of the plan (plans.py). A knob
set away from its default on a part the plan does not have is refused, naming the knob that would bring the part.
``knobs_of`` is the inverse, so that ``with_knobs(plan, chunk=32)`` overrides one knob of a plan.
"""

from __future__ import annotations

from dataclasses import MISSING, dataclass, fields

from decaylab.ops.triton.plans import ChunkParallelBackward, DvInSweep, DvKernel, ForwardPlan, FusedDv, LaunchPlan, \
    Splitting, TwoSweepBackward


@dataclass(frozen=True)
class Knob:
    part: str  # a key of PARTS
    field: str  # the field of that part


# part -> (type whose fields the knobs set, what brings it into a plan when it is missing)
PARTS: dict[str, tuple[type, str]] = {
    "forward": (ForwardPlan, ""),
    "backward": (TwoSweepBackward, ""),  # the fields both backward types share
    "two_sweep": (TwoSweepBackward, "chunk_parallel_backward=False"),
    "chunk_parallel": (ChunkParallelBackward, "chunk_parallel_backward=True"),
    "dv_in_sweep": (DvInSweep, "dv_in_sweep=True"),
    "splitting": (Splitting, ""),
    "plan": (LaunchPlan, ""),
}
_PART_NAMES = {"two_sweep": "the two-sweep backward", "chunk_parallel": "the chunk-parallel backward",
               "dv_in_sweep": "the dv_in_sweep kernel"}

_TABLE: dict[str, Knob] = {
    **{name: Knob("forward", name) for name in ("chunk", "num_warps", "num_stages")},
    "fwd_value_block": Knob("forward", "value_block"),
    "fwd_max_registers": Knob("forward", "max_registers"),
    **{f"bwd_{name}": Knob("backward", name) for name in ("chunk", "num_warps", "num_stages", "max_registers",
                                                           "key_block")},
    **{name: Knob("backward", name) for name in ("gate_stride", "precise_intra")},
    **{name: Knob("two_sweep", name) for name in ("bf16_boundaries", "bf16_dv_partials")},
    "bwd_value_block": Knob("chunk_parallel", "value_block"),
    **{name: Knob("chunk_parallel", name) for name in ("state_stride", "spans_per_program", "save_states")},
    "hopper_dqk": Knob("chunk_parallel", "gluon_dqk"),
    "dv_sweep_num_warps": Knob("dv_in_sweep", "num_warps"),
    "dv_sweep_num_stages": Knob("dv_in_sweep", "num_stages"),
    **{name: Knob("splitting", name) for name in ("split_below", "target_programs", "programs_per_sm",
                                                  "split_percent", "segment", "sweep_chunk", "sweep_block")},
    "hopper_sweeps": Knob("plan", "gluon_sweeps"),
    **{name: Knob("plan", name) for name in ("lone_stages", "sms", "blocks_adjacent", "exact_intra")},
}
_SELECTORS = ("chunk_parallel_backward", "fused_dv", "dv_in_sweep")
# A knob whose part is missing gets this message instead of the generic one.
_OWN_MESSAGE = {
    "hopper_dqk": "hopper_dqk is the chunk-parallel backward's dq/dk kernel, which computes no dv: it needs "
                  "chunk_parallel_backward=True and fused_dv=False: set those, or set hopper_dqk=False",
}


def _default(knob: Knob):
    found = next(f for f in fields(PARTS[knob.part][0]) if f.name == knob.field)
    return 0 if found.default is MISSING else found.default  # no default: the forward's chunk, warps and stages


# Every knob's name and value type (int or bool), e.g. for parsing "chunk=32,fused_dv=true".
KNOBS: dict[str, type] = {**{name: type(_default(knob)) for name, knob in _TABLE.items()},
                          **dict.fromkeys(_SELECTORS, bool)}


def launch_plan(chunk: int, num_warps: int, num_stages: int, **knobs) -> LaunchPlan:
    """The plan the flat knobs describe (the forward's chunk, warps and stages are required)."""
    unknown = sorted(set(knobs) - set(KNOBS))
    if unknown:
        raise ValueError(f"unknown launch knobs {', '.join(unknown)}; the knobs are {', '.join(KNOBS)}")
    chunk_parallel = bool(knobs.pop("chunk_parallel_backward", False))
    fused_dv, dv_in_sweep = bool(knobs.pop("fused_dv", False)), bool(knobs.pop("dv_in_sweep", False))
    if fused_dv and dv_in_sweep:
        raise ValueError("dv_in_sweep and fused_dv both compute dv: choose one")
    present = _parts(chunk_parallel, dv_in_sweep)
    for name, selected in (("fused_dv", fused_dv), ("dv_in_sweep", dv_in_sweep)):
        if selected and not chunk_parallel:
            _refuse(name, "chunk_parallel")
    parts: dict[str, dict] = {part: {} for part in PARTS}
    for name, value in dict(knobs, chunk=chunk, num_warps=num_warps, num_stages=num_stages).items():
        knob = _TABLE[name]
        if knob.part not in present:
            if value != _default(knob):
                _refuse(name, knob.part)
            continue
        parts[knob.part][knob.field] = value
    if chunk_parallel:
        dv = DvInSweep(**parts["dv_in_sweep"]) if dv_in_sweep else FusedDv() if fused_dv else DvKernel()
        backward = ChunkParallelBackward(**parts["backward"], **parts["chunk_parallel"], dv=dv)
    else:
        backward = TwoSweepBackward(**parts["backward"], **parts["two_sweep"])
    return LaunchPlan(ForwardPlan(**parts["forward"]), backward, Splitting(**parts["splitting"]), **parts["plan"])


def _parts(chunk_parallel: bool, dv_in_sweep: bool) -> set[str]:
    """The parts of a plan with these selectors."""
    present = {"forward", "backward", "splitting", "plan", "chunk_parallel" if chunk_parallel else "two_sweep"}
    if chunk_parallel and dv_in_sweep:
        present.add("dv_in_sweep")
    return present


def _refuse(name: str, part: str):
    if name in _OWN_MESSAGE:
        raise ValueError(_OWN_MESSAGE[name])
    raise ValueError(f"{name} is an option of {_PART_NAMES[part]}: set {PARTS[part][1]} as well, or drop {name} "
                     f"(set it to {_default(_TABLE[name]) if name in _TABLE else False})")


def knobs_of(plan: LaunchPlan) -> dict:
    """The flat knobs of ``plan``: ``launch_plan(**knobs_of(plan)) == plan``."""
    backward = plan.backward
    objects = {"forward": plan.forward, "backward": backward, "splitting": plan.splitting, "plan": plan,
               "two_sweep": backward, "chunk_parallel": backward, "dv_in_sweep": getattr(backward, "dv", None)}
    chunk_parallel = isinstance(backward, ChunkParallelBackward)
    knobs = {"chunk_parallel_backward": chunk_parallel, "fused_dv": chunk_parallel and isinstance(backward.dv, FusedDv),
             "dv_in_sweep": chunk_parallel and isinstance(backward.dv, DvInSweep)}
    for name, knob in _TABLE.items():
        owner = objects[knob.part]
        present = knob.part not in _PART_NAMES or isinstance(owner, PARTS[knob.part][0])
        knobs[name] = getattr(owner, knob.field) if present else _default(knob)
    return knobs


def with_knobs(plan: LaunchPlan, **overrides) -> LaunchPlan:
    """``plan`` with some knobs changed, validated as a new plan. Where the overrides change the backward strategy
    (or the chunk-parallel backward's dv), ``plan``'s options of the part they remove go with it; the overrides
    themselves must fit the new plan."""
    knobs = {**knobs_of(plan), **overrides}
    for name, other in (("fused_dv", "dv_in_sweep"), ("dv_in_sweep", "fused_dv")):
        if overrides.get(name) and other not in overrides:  # one way of computing dv replaces the other
            knobs[other] = False
    if not knobs["chunk_parallel_backward"]:
        knobs.update({name: overrides.get(name, False) for name in ("fused_dv", "dv_in_sweep")})
    present = _parts(bool(knobs["chunk_parallel_backward"]), bool(knobs["dv_in_sweep"]))
    for name, knob in _TABLE.items():
        if name not in overrides and knob.part not in present:
            knobs[name] = _default(knob)
    return launch_plan(**knobs)
