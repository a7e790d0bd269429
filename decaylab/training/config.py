"""Run configuration: TrainConfig, RunConfig = {model, train, data}, and the run presets.

Every field is addressable by a dotted key (``train.max_steps``, ``model.decay.kind``, ``data.corpus``) through
``decaylab.config.with_overrides``; unknown keys and invalid values are answered with a clear ValueError.
A run's configuration is resolved in this order: preset (or the defaults) -> config file (.json/.toml) -> ``--set``;
then ``model.vocab_size``, when unset, follows the data (``settle_vocab``).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Literal, Mapping

from decaylab.config import flatten, with_overrides
from decaylab.data import DataConfig
from decaylab.model import ModelConfig
from decaylab.registry import Registry
from decaylab.training.optim import SCHEDULES


@dataclass(frozen=True, kw_only=True)
class TrainConfig:
    """How to train: optimizer, schedule, batch, logging, checkpoints and devices."""

    max_steps: int = 1000
    """Optimizer steps to take."""
    batch_size: int = 16
    """Sequences per optimizer step, over all devices and accumulation micro-steps (the global batch)."""
    seq_len: int = 256
    """Tokens per training sequence."""
    grad_accum: int = 1
    """Micro-steps per optimizer step; each device processes batch_size / (world_size * grad_accum) sequences."""
    lr: float = 1e-3
    """Peak learning rate."""
    min_lr_ratio: float = 0.1
    """Final learning rate as a fraction of lr (cosine and wsd)."""
    warmup_steps: int = 100
    """Linear warmup steps (more than max_steps is allowed: the peak is then never reached)."""
    schedule: str = "cosine"
    """Learning-rate schedule: cosine, wsd (warmup-stable-decay) or constant."""
    wsd_decay_fraction: float = 0.2
    """wsd only: fraction of max_steps spent decaying to min_lr_ratio * lr at the end."""
    weight_decay: float = 0.1
    """AdamW weight decay on matrices."""
    decay_everything: bool = False
    """Apply weight decay to every parameter (decay parameters, norms, embeddings), as the paper's code did."""
    beta1: float = 0.9
    beta2: float = 0.95
    eps: float = 1e-8
    grad_clip: float = 1.0
    """Clip the global gradient norm to this value (0 disables clipping)."""
    seed: int = 0
    """Seeds model initialization, dropout and the data order."""
    log_every: int = 10
    """Write a metrics.jsonl line every this many steps (and at the last step)."""
    eval_every: int = 0
    """Evaluate validation loss every this many steps (0: only at the end)."""
    eval_batches: int | None = None
    """Validation batches per periodic evaluation (None: the whole split)."""
    eval_batch_size: int | None = None
    """Batch size for validation (None: the per-device training micro-batch)."""
    ckpt_every: int = 0
    """Write a checkpoint every this many steps (0: only at the end)."""
    keep_checkpoints: int = 2
    """How many of the newest checkpoints to keep."""
    device: Literal["auto", "cpu", "cuda"] = "auto"
    """auto: cuda when available (the local GPU of each rank under torchrun), else cpu."""
    precision: Literal["auto", "fp32", "bf16"] = "auto"
    """auto: bf16 autocast on GPU, fp32 on CPU."""
    compile: bool = False
    """Wrap the model in torch.compile (first steps are slow while it compiles)."""
    cuda_graph: Literal["auto", "on", "off"] = "auto"
    """Capture the whole optimizer step as a CUDA graph and replay it (auto: on for one-process CUDA runs without
    compile). Small models are bound by kernel launches; a replay issues the whole step at once."""
    fsdp: bool = False
    """Under torchrun, shard parameters with FSDP2 (fully_shard) instead of replicating them with DDP."""
    tensorboard: bool = False
    """Also log metrics to RUN_DIR/tensorboard (needs the tensorboard package)."""
    progress: bool = True
    """Show a progress bar with loss, tokens/s and ETA."""

    def __post_init__(self) -> None:
        SCHEDULES.get(self.schedule)  # unknown schedule -> "did you mean"
        positive = ("max_steps", "batch_size", "seq_len", "grad_accum", "log_every", "keep_checkpoints")
        for name in positive:
            if getattr(self, name) < 1:
                raise ValueError(f"train.{name}={getattr(self, name)} must be >= 1")
        for name in ("warmup_steps", "eval_every", "ckpt_every"):
            if getattr(self, name) < 0:
                raise ValueError(f"train.{name}={getattr(self, name)} must be >= 0 (0 disables it)")
        if self.lr <= 0:
            raise ValueError(f"train.lr={self.lr} must be > 0")
        if not 0 <= self.min_lr_ratio <= 1:
            raise ValueError(f"train.min_lr_ratio={self.min_lr_ratio} must be in [0, 1]")
        if not 0 < self.wsd_decay_fraction <= 1:
            raise ValueError(f"train.wsd_decay_fraction={self.wsd_decay_fraction} must be in (0, 1]")
        if self.weight_decay < 0 or self.grad_clip < 0 or self.eps <= 0:
            raise ValueError("train.weight_decay and train.grad_clip must be >= 0 and train.eps > 0")
        for name in ("beta1", "beta2"):
            if not 0 <= getattr(self, name) < 1:
                raise ValueError(f"train.{name}={getattr(self, name)} must be in [0, 1)")
        if self.batch_size % self.grad_accum:
            raise ValueError(
                f"train.batch_size={self.batch_size} is not divisible by train.grad_accum={self.grad_accum}"
            )
        if self.cuda_graph == "on" and (self.compile or self.device == "cpu"):
            raise ValueError(
                f"train.cuda_graph=on needs a CUDA device and no train.compile (got device={self.device}, "
                f"compile={self.compile}); set train.cuda_graph=auto or off"
            )
        for name in ("eval_batches", "eval_batch_size"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"train.{name}={value} must be >= 1 or None")

    def micro_batch(self, world_size: int) -> int:
        """Sequences one device processes per micro-step."""
        if self.batch_size % (world_size * self.grad_accum):
            raise ValueError(
                f"train.batch_size={self.batch_size} must be divisible by world_size * train.grad_accum = "
                f"{world_size} * {self.grad_accum}; change the batch size or the accumulation"
            )
        return self.batch_size // (world_size * self.grad_accum)

    def tokens_per_step(self) -> int:
        return self.batch_size * self.seq_len


@dataclass(frozen=True, kw_only=True)
class RunConfig:
    """Everything a run needs: the model, how to train it and on which data. Stored as RUN_DIR/config.json."""

    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    """``model.vocab_size`` None (the presets' choice) follows the data; a number pins it."""
    train: TrainConfig = dataclasses.field(default_factory=TrainConfig)
    data: DataConfig = dataclasses.field(default_factory=DataConfig)


# -- run presets ---------------------------------------------------------------------------------------------
# name -> function returning a RunConfig; the docstring's first line is the --list-presets description.
RUN_PRESETS: Registry[Callable[[], RunConfig]] = Registry("run preset")


def preset_description(name: str) -> str:
    return (RUN_PRESETS.get(name).__doc__ or "").strip().splitlines()[0]


def run_preset(name: str) -> RunConfig:
    """The RunConfig of a registered preset (unknown names get the closest valid ones)."""
    return RUN_PRESETS.get(name)()


def load_config_file(path: str | Path) -> dict[str, Any]:
    """A nested settings table from a .json or .toml file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"--config {path} does not exist")
    if path.suffix == ".json":
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError as e:
            raise ValueError(f"--config {path} is not valid JSON ({e})") from None
    elif path.suffix == ".toml":
        try:
            import tomllib
        except ImportError:  # Python 3.10
            try:
                import tomli as tomllib
            except ImportError:
                raise ValueError(f"reading {path} needs Python >= 3.11 or `pip install tomli`; or use JSON") from None
        try:
            data = tomllib.loads(path.read_text())
        except tomllib.TOMLDecodeError as e:
            raise ValueError(f"--config {path} is not valid TOML ({e})") from None
    else:
        raise ValueError(f"--config {path}: expected a .json or .toml file")
    if not isinstance(data, dict):
        raise ValueError(f"--config {path}: expected a table of settings at the top level")
    return data


def resolve_run_config(
    preset: str | None = None, config_file: str | Path | None = None, overrides: Mapping[str, Any] | None = None
) -> RunConfig:
    """preset (or the defaults) -> config file -> dotted overrides, validated once at the end."""
    file_data = load_config_file(config_file) if config_file else {}
    file_preset = file_data.pop("preset", None)
    if preset and file_preset and preset != file_preset:
        raise ValueError(f"--preset {preset} conflicts with preset = {file_preset!r} in {config_file}; keep one")
    preset = preset or file_preset
    base = run_preset(preset) if preset else RunConfig()
    changes = {**flatten(file_data), **dict(overrides or {})}
    return settle_vocab(with_overrides(base, changes))


def vocab_mismatch(pinned: int, corpus: str, actual: int, exact: bool = True) -> ValueError:
    what = f"has {actual:,}" if exact else f"trains a BPE of at most data.vocab_size={actual:,}"
    fix = f"set model.vocab_size={actual}" if exact else f"set data.vocab_size={pinned}"
    return ValueError(
        f"model.vocab_size={pinned} but the tokenizer of data.corpus={corpus!r} {what} tokens; {fix}, or "
        "model.vocab_size=None to take the vocabulary from the data"
    )


def settle_vocab(cfg: RunConfig) -> RunConfig:
    """``model.vocab_size`` from the data settings when they fix it (PTB, MQAR); a pinned size they contradict
    is refused here, before any text is read. Otherwise it is settled once the tokenizer is built."""
    exact, at_most = cfg.data.vocab_size_known()
    pinned = cfg.model.vocab_size
    if pinned is None:
        return with_overrides(cfg, {"model.vocab_size": exact}) if exact is not None else cfg
    if exact is not None and pinned != exact:
        raise vocab_mismatch(pinned, cfg.data.corpus, exact)
    if at_most is not None and pinned > at_most:
        raise vocab_mismatch(pinned, cfg.data.corpus, at_most, exact=False)
    return cfg


def _run(model: ModelConfig, data: DataConfig, **train: Any) -> RunConfig:
    return RunConfig(model=model, train=TrainConfig(**train), data=data)


@RUN_PRESETS.register("tiny")
def tiny_run() -> RunConfig:
    """tiny model on PTB, about a minute on a CPU with its evaluation (smoke test of the whole pipeline)"""
    model = ModelConfig.from_preset("tiny", {"vocab_size": None, "d_model": 64, "ffn_dim": 128})
    return _run(model, DataConfig(corpus="ptb"), max_steps=120, batch_size=16, seq_len=64, lr=3e-3,
                warmup_steps=10, eval_every=60, eval_batches=10, ckpt_every=60, log_every=10)


@RUN_PRESETS.register("ptb-small")
def ptb_small_run() -> RunConfig:
    """Simple Decay on word-level PTB: test ppl below Kneser-Ney 5-gram (141) in <= 30 min on 2 CPU cores"""
    # Scalar (per-head) decay: its chunked form is the cheapest on a CPU (vector costs ~1.4x in the op), which
    # buys the ~3 epochs this budget allows. Measured: test ppl 140.9 (docs/benchmarks.md, "Training on the CPU").
    model = ModelConfig.from_preset(
        "small", {"vocab_size": None, "decay.kind": "simple", "decay.granularity": "scalar", "dropout": 0.3}
    )
    return _run(model, DataConfig(corpus="ptb"), max_steps=1400, batch_size=16, seq_len=128, lr=2.5e-3,
                warmup_steps=100, eval_every=200, eval_batches=20, ckpt_every=200, log_every=20)


@RUN_PRESETS.register("mqar")
def mqar_run() -> RunConfig:
    """small multi-query associative recall run (8 key-value pairs, 256 tokens), a few minutes on a CPU"""
    data = DataConfig(corpus="mqar", vocab_size=256, mqar_num_kv_pairs=8, mqar_eval_examples=256)
    model = ModelConfig.from_preset("tiny", {"vocab_size": None, "d_model": 64, "ffn_dim": 128})
    return _run(model, data, max_steps=1500, batch_size=64, seq_len=64, lr=3e-3, warmup_steps=100,
                weight_decay=0.0, eval_every=250, ckpt_every=500, log_every=50)


def _fineweb(size: str, lr: float, fsdp: bool) -> RunConfig:
    # The paper's setting: FineWeb-Edu 10B sample, 20k steps x 256 sequences x 2048 tokens (~10.5B tokens).
    data = DataConfig(corpus="hf", hf_path="HuggingFaceFW/fineweb-edu", hf_name="sample-10BT",
                      hf_valid_split=None, hf_test_split=None, valid_fraction=0.0005, test_fraction=0.0005,
                      vocab_size=50_432, hf_streaming=True)
    model = ModelConfig.from_preset(size, {"vocab_size": None})
    return _run(model, data, max_steps=20_000, batch_size=256, seq_len=2048, lr=lr, warmup_steps=1024,
                eval_every=1000, eval_batches=50, eval_batch_size=16, ckpt_every=1000, log_every=10,
                fsdp=fsdp, device="cuda")


@RUN_PRESETS.register("160m-fineweb")
def fineweb_160m_run() -> RunConfig:
    """the paper's 160M shape on FineWeb-Edu (GPU; torchrun --nproc-per-node 8, else raise train.grad_accum)"""
    return _fineweb("160m", lr=1e-3, fsdp=False)


@RUN_PRESETS.register("410m-fineweb")
def fineweb_410m_run() -> RunConfig:
    """the paper's 410M shape on FineWeb-Edu (GPU; torchrun, 8 GPUs)"""
    return _fineweb("410m", lr=6e-4, fsdp=False)


@RUN_PRESETS.register("1.45b-fineweb")
def fineweb_1_45b_run() -> RunConfig:
    """the paper's 1.45B shape on FineWeb-Edu (GPU; torchrun, 8 GPUs, FSDP2)"""
    return _fineweb("1.45b", lr=3e-4, fsdp=True)
