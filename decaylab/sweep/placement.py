"""Worker slots of a local sweep: the device of each worker process, and how many workers share a CUDA card.

``--devices`` lists devices; each worker slot gets one entry (``decaylab.sweep.runner``). A CUDA card named once
gets an automatic number of workers (or ``--workers-per-device N``); a list that repeats a device is taken as
written, one worker per entry; ``cpu`` is always one worker per entry. The automatic number, per card, is

    min(cpu cap, memory cap, flight cap, hard cap), at least 1
    cpu cap    = the cores this process may run on // the number of cards named
    memory cap = floor(MEMORY_SHARE * free bytes of the card / the largest run's estimate, run_memory_bytes)
    flight cap = ceil(RUNS_IN_FLIGHT / runs per worker)
    hard cap   = HARD_CAP

The rule works on plain numbers (``choose_workers``), so it is tested without a GPU; only ``free_memory`` asks
a card, from a short child process, so that the sweep process does not keep a CUDA context to read it.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from typing import Any, Callable, Iterable, Mapping

GiB = 1 << 30
# Every worker is a process of its own, and each process on a card holds its own CUDA context before it allocates
# a tensor: the driver's state, the kernel images torch, cuBLAS and Triton load, cuBLAS's workspace. A torch
# process that has only initialised CUDA typically shows about 0.5 GiB in nvidia-smi; 0.6 GiB leaves room for the
# kernels a run compiles and loads as it goes.
CONTEXT_BYTES = int(0.6 * GiB)
# Bytes a block keeps for the backward pass, per token, per unit of model width, per layer. Measured on a CPU
# (the `small` model, d 256, ffn 768, batch 8 x 128; the bytes of every tensor autograd saved, weights left out):
# 144-152 in fp32 and 118-126 under bf16 autocast for simple, mamba2, gla, hgrn2 and lightnet vector decays.
# Rounded up. The GPU's Triton kernels were not measured this way.
ACTIVATION_BYTES = 160
# Bytes per token per vocabulary entry: the logits autograd keeps (4.2-4.9 measured as above: bf16 logits and
# their fp32 copy for the loss) and the fp32 gradient of the logits the backward makes. Rounded up.
LOGIT_BYTES = 10
# Vocabulary assumed when a config does not fix it (a tokenizer file): GPT-2's BPE padded to a multiple of 256.
FALLBACK_VOCAB = 50_432
# Share of a card's free memory the workers may plan to fill: the rest absorbs the allocator's fragmentation and
# the estimate's error.
MEMORY_SHARE = 0.9
# Measured on one H100 80GB (16 CPU cores, 2026-12-06): the `paper` sweep with 12 workers on the card finished 79
# ptb-small runs in 7 min 47 s (46-76 s each). Six graphed runs in separate processes made 1.01x the training
# tokens/s of one alone: the card takes turns between processes, so more workers only overlap the runs' start-up
# and evaluation, not their training. 12 is the most measured.
HARD_CAP = 12
# Runs in training on a card at once, over all its workers, when a worker trains several together. Measured on one
# H100 (2026-12-06): eight graphed ptb-small steps on their own streams fill the card (16 make no more tokens/s), and
# the paper sweep with 4 workers of 8 runs took 13 min 49 s, against about 20 minutes with 12 workers of one run;
# the other workers' runs keep the card busy while one group starts or evaluates. With one run a worker it is
# above the hard cap, so the measured 12 stands.
RUNS_IN_FLIGHT = 32


# ---------------------------------------------------------------- the rule, on numbers


def run_memory_bytes(params: int, tokens: int, d_model: int, n_layers: int, vocab: int) -> int:
    """Estimated GPU memory of one training run (bytes), from its shape.

    CONTEXT_BYTES (the worker's CUDA context) + params * 16 (fp32 weights, gradients and AdamW's two moments)
    + tokens * d_model * n_layers * ACTIVATION_BYTES (what the blocks keep for the backward pass)
    + tokens * vocab * LOGIT_BYTES (the logits and their gradient), where tokens = sequences per micro-step
    (batch_size / grad_accum) * seq_len.
    """
    activations = tokens * (d_model * n_layers * ACTIVATION_BYTES + vocab * LOGIT_BYTES)
    return CONTEXT_BYTES + params * 16 + activations


@dataclasses.dataclass(frozen=True)
class CardWorkers:
    """The automatic number of workers on one card, with the caps it came from."""

    device: str
    workers: int
    cpu_cap: int
    memory_cap: int
    hard_cap: int
    run_bytes: int
    flight_cap: int

    def describe(self) -> str:
        return (
            f"{self.device}: {self.workers} worker{'s' if self.workers != 1 else ''} (cpu cap {self.cpu_cap}, "
            f"memory cap {self.memory_cap} at ~{self.run_bytes / GiB:.1f} GiB a worker, "
            + (f"flight cap {self.flight_cap}, " if self.flight_cap < self.hard_cap else "")
            + f"hard cap {self.hard_cap}; "
            "override with --workers-per-device N)"
        )


def choose_workers(device: str, cores: int, cards: int, free_bytes: int, run_bytes: int,
                   hard_cap: int = HARD_CAP, runs_per_worker: int = 1) -> CardWorkers:  # fmt: skip
    """Workers for one of ``cards`` named cards: each needs a host core to issue its kernels and room for its runs
    (``run_bytes``: all of a worker's), and the card is full with RUNS_IN_FLIGHT runs training at once."""
    cpu_cap = cores // cards
    memory_cap = int(MEMORY_SHARE * free_bytes) // run_bytes
    flight_cap = -(-RUNS_IN_FLIGHT // runs_per_worker)
    workers = max(1, min(cpu_cap, memory_cap, flight_cap, hard_cap))
    return CardWorkers(device, workers, cpu_cap, memory_cap, hard_cap, run_bytes, flight_cap)


# ---------------------------------------------------------------- --devices -> worker slots


def parse_devices(text: str | None) -> list[str]:
    return [d.strip() for d in text.split(",") if d.strip()] if text else []


def is_cuda(device: str) -> bool:
    return device.partition(":")[0] == "cuda"


def _canonical(device: str) -> str:
    return "cuda:0" if device == "cuda" else device  # a worker sees "cuda" as card 0 (runner._enter_worker)


def _repeats(devices: list[str]) -> bool:
    """Whether a CUDA card is named twice (today's way to put several workers on it: taken as written)."""
    cards = [_canonical(d) for d in devices if is_cuda(d)]
    return len(set(cards)) < len(cards)


def check_worker_args(devices: list[str], per_device: int | None) -> None:
    """Refuse --workers-per-device where it has no meaning, with the fix; before anything is written."""
    if per_device is None:
        return
    named = ",".join(devices)
    if not devices:
        raise ValueError(f"--workers-per-device {per_device} needs the cards: add --devices cuda:0 (or cuda:0,cuda:1)")
    if not any(is_cuda(d) for d in devices):
        raise ValueError(f"--workers-per-device counts workers per CUDA card, and --devices {named} names none; "
                         f"list a device once per worker instead: --devices {','.join(devices * per_device)}")  # fmt: skip
    if _repeats(devices):
        raise ValueError(f"--workers-per-device {per_device} with --devices {named}: name each card once (e.g. "
                         f"--devices cuda:0 --workers-per-device {per_device}), or leave out --workers-per-device "
                         "for one worker per listed entry")  # fmt: skip


def worker_devices(devices: list[str], per_device: int | None, workers: int | None,
                   automatic: Callable[[list[str]], Mapping[str, int]]) -> list[str]:  # fmt: skip
    """The device of each worker slot, from --devices, --workers-per-device (None: auto) and --workers.

    Each CUDA card gets ``per_device`` slots, or ``automatic(cards)[card]`` when ``per_device`` and ``workers`` are
    None and no card is named twice. Every other entry (a cpu, or any entry of a list that repeats a card) gets one.
    Slots go round the entries (cuda:0, cuda:1, cuda:0, ...), so a sweep with few runs spreads over the cards;
    ``workers`` keeps the first ``workers`` slots, as it always has: ``--workers 2 --devices cuda:0,cuda:1``.
    """
    check_worker_args(devices, per_device)
    cards = [d for d in devices if is_cuda(d)]
    if per_device is not None:
        counts: Mapping[str, int] = dict.fromkeys(cards, per_device)
    elif workers is None and cards and not _repeats(devices):
        counts = automatic(cards)
    else:
        counts = {}
    slots = [d for round_ in range(max([1, *counts.values()])) for d in devices if counts.get(d, 1) > round_]
    if workers is not None and devices and workers > len(slots):
        if per_device is not None:
            fix = f"lower --workers, or raise --workers-per-device (now {per_device})"
        elif not cards:
            fix = f"list the device once per worker: --devices {','.join([devices[0]] * workers)}"
        else:
            fix = (
                f"for several workers per card give --devices {','.join(dict.fromkeys(cards))} "
                f"--workers-per-device {workers} (or leave out --workers for the automatic count)"
            )
        raise ValueError(f"--workers {workers} exceeds the {len(slots)} worker slot(s) of --devices "
                         f"{','.join(devices)}; {fix}")  # fmt: skip
    return slots[:workers] if workers is not None else slots


# ---------------------------------------------------------------- what the machine and the runs need


def available_cores() -> int:
    """CPU cores this process may run on (its affinity mask where the OS has one, else all)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


# The child sees exactly the cards the workers will see: runner._enter_worker sets CUDA_VISIBLE_DEVICES likewise.
_QUERY = "import torch; print(*(torch.cuda.mem_get_info(i)[0] for i in range(torch.cuda.device_count())))"


def free_memory(cards: list[str]) -> dict[str, int]:
    """Free bytes of each CUDA card, read by torch.cuda.mem_get_info in a short child process.

    mem_get_info initialises CUDA in the calling process: its context (~0.5 GiB a card) would stay in the sweep
    process for the whole sweep, beside the workers. The child pays it for a few seconds and exits first.
    """
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ",".join(_canonical(c).partition(":")[2] for c in cards)}
    done = subprocess.run(
        [sys.executable, "-c", _QUERY], check=False, env=env, capture_output=True, text=True, timeout=300
    )
    named = ",".join(cards)
    if done.returncode:
        lines = done.stderr.strip().splitlines() or ["no error output"]
        raise ValueError(f"could not read the free memory of --devices {named} ({lines[-1]}); give "
                         "--workers-per-device N to choose the number of workers per card yourself")  # fmt: skip
    free = [int(v) for v in done.stdout.split()]
    if len(free) != len(cards):
        raise ValueError(f"--devices {named} names {len(cards)} CUDA card(s) but {len(free)} can be used here; "
                         "name cards that exist (nvidia-smi lists them), or use --devices cpu")  # fmt: skip
    return dict(zip(cards, free))


def config_run_bytes(config: Mapping[str, Any]) -> int:
    """run_memory_bytes of a resolved decaylab run config; parameters counted on a model built on the meta device."""
    import torch

    from decaylab.config import from_dict
    from decaylab.model.lm import DecayLM
    from decaylab.run.config import RunConfig

    cfg = from_dict(RunConfig, dict(config))
    vocab = cfg.model.vocab_size or cfg.data.vocab_size_known()[1] or FALLBACK_VOCAB
    model = dataclasses.replace(cfg.model, vocab_size=vocab)
    with torch.device("meta"):  # shapes only: no memory, no initialisation cost
        params = sum(p.numel() for p in DecayLM(model).parameters())
    tokens = cfg.train.micro_batch(1) * cfg.train.seq_len  # a worker trains on one device
    return run_memory_bytes(params, tokens, model.d_model, model.n_layers, vocab)


def largest_run_bytes(configs: Iterable[Mapping[str, Any]]) -> int:
    """The largest config_run_bytes over the configs; configs that differ only in their seed count once."""
    unique = {}
    for config in configs:
        key = json.dumps({**config, "train": {**config["train"], "seed": None}}, sort_keys=True, default=str)
        unique.setdefault(key, config)
    return max(config_run_bytes(c) for c in unique.values())


def worker_bytes(run_bytes: int, runs_per_worker: int) -> int:
    """A worker training ``runs_per_worker`` runs together: one CUDA context, the rest of each run's estimate."""
    return CONTEXT_BYTES + runs_per_worker * (run_bytes - CONTEXT_BYTES)


def automatic_workers(cards: list[str], configs: Iterable[Mapping[str, Any]], runs_per_worker: int = 1,
                      log: Callable[[str], None] = print) -> dict[str, int]:  # fmt: skip
    """The automatic number of workers of each card for runs of these configs, each worker training
    ``runs_per_worker`` of them together; one line per card to ``log``."""
    run_bytes = worker_bytes(largest_run_bytes(configs), runs_per_worker)
    cores, free = available_cores(), free_memory(cards)
    choices = [choose_workers(card, cores, len(cards), free[card], run_bytes, runs_per_worker=runs_per_worker)
               for card in cards]  # fmt: skip
    for choice in choices:
        log(choice.describe())
    return {c.device: c.workers for c in choices}
