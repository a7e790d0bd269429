"""The training loop: ``train(run_config, out_dir, resume=False) -> summary``.

Each optimizer step s (0-based) draws rows of global batch s from the dataset (a pure function of s and the
seed), splits this process's rows into ``grad_accum`` micro-batches, averages their mean token loss, clips
the gradient norm and takes an AdamW step with lr(s). A checkpoint after step s holds the model, the
optimizer, s and every random-number state (per process), so a resumed run continues exactly where the
killed one was: on CPU it reproduces the uninterrupted loss curve bit for bit.
"""

from __future__ import annotations

import contextlib
import json
import math
import sys
import time
from collections.abc import Callable, Generator
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from decaylab import rundir
from decaylab.config import with_overrides
from decaylab.files import atomic_write_text
from decaylab.run.checkpoint import load_latest, save_checkpoint
from decaylab.run.config import RunConfig, TrainConfig, settle_vocab
from decaylab.run.schedules import learning_rate
from decaylab.training import distributed as dist_utils
from decaylab.training import stopping
from decaylab.training.cuda_graph import GraphedTrainStep, graph_step_unsupported
from decaylab.training.lagged import LaggedRecords
from decaylab.training.optim import build_optimizer, set_learning_rate
from decaylab.training.resume import check_fresh, load_stored_config, resume_changes, write_config
from decaylab.training.support import (
    print_progress,
    progress_bar,
    rng_state,
    save_final_model,
    seed_all,
    set_rng_state,
)

IGNORE_INDEX = -100


class TrainingDiverged(RuntimeError):
    """The loss or the gradient norm became NaN or infinite."""


def resolve_vocab(cfg: RunConfig, dataset_vocab: int) -> RunConfig:
    """Fill ``model.vocab_size`` from the dataset when unset; an explicit mismatch is an error."""
    if cfg.model.vocab_size is None:
        return with_overrides(cfg, {"model.vocab_size": dataset_vocab})
    if cfg.model.vocab_size != dataset_vocab:
        raise ValueError(
            f"model.vocab_size={cfg.model.vocab_size} but the dataset ({cfg.data.corpus}) has {dataset_vocab} "
            f"tokens; set model.vocab_size={dataset_vocab} or leave it unset (None) to take it from the data"
        )
    return cfg


def _uses_bf16(device: torch.device, precision: str) -> bool:
    return precision == "bf16" or (precision == "auto" and device.type == "cuda")


def _autocast(device: torch.device, precision: str):
    if _uses_bf16(device, precision):
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def _use_cuda_graph(train: TrainConfig, ctx: dist_utils.DistContext) -> bool:
    """Whether the run replays its step from a CUDA graph (train.cuda_graph; see decaylab.training.cuda_graph)."""
    if train.cuda_graph == "off":
        return False
    reason = graph_step_unsupported(ctx.device, ctx.world_size, train.compile)
    if reason is not None and train.cuda_graph == "on":
        raise ValueError(f"train.cuda_graph=on cannot be used here: {reason}; set train.cuda_graph=auto or off")
    return reason is None


def _token_loss(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return model(x, targets=y)  # the mean over scored tokens, without a [B, T, vocab] tensor on a CPU


# Tokens per validation forward on a GPU: the periodic validation's batches are joined up to this many tokens, so
# that 20 batches of 16 x 128 tokens cost 5 launches of the model's kernels instead of 20 (its host time is most of
# a small model's validation); the windows scored stay the same.
EVAL_TOKENS_PER_FORWARD = 8192


@torch.no_grad()
def validation_loss(model, dataset, cfg: RunConfig, device, max_batches: int | None,
                    rows_per_forward: int | None = None, on_device: bool = False) -> float | torch.Tensor:
    """Mean token loss (nats) on the valid split, over at most ``max_batches`` batches of the evaluation batch size.

    ``rows_per_forward``: rows per forward pass (default: the batch size on a CPU; on a GPU, batches joined up to
    EVAL_TOKENS_PER_FORWARD tokens). It changes how the same windows are grouped, not which are scored.
    ``on_device``: return the mean as a 0-d float64 tensor on the model's device, not read back (a graphed run
    reads it with its step's numbers, ``decaylab.training.lagged``); NaN when nothing was scored.
    """
    train = cfg.train
    batch_size = train.eval_batch_size or max(1, train.batch_size // train.grad_accum)
    if rows_per_forward is None:
        on_gpu = torch.device(device).type == "cuda"
        rows_per_forward = max(batch_size, EVAL_TOKENS_PER_FORWARD // train.seq_len) if on_gpu else batch_size
    was_training = model.training
    model.eval()
    # Summed on the device and read once: a read per batch would stall a GPU at every batch.
    total = torch.zeros((), dtype=torch.float64, device=device)
    count = torch.zeros((), dtype=torch.int64, device=device)
    pending: list[tuple[torch.Tensor, torch.Tensor]] = []

    def score(pieces):
        nonlocal total, count
        x, y = (torch.cat(part).to(device, non_blocking=True) for part in zip(*pieces))
        with _autocast(device, train.precision):
            logits = model(x)
        loss = F.cross_entropy(logits.float().flatten(0, 1), y.flatten(), ignore_index=IGNORE_INDEX, reduction="sum")
        total += loss.double()
        count += (y != IGNORE_INDEX).sum()

    for i, batch in enumerate(dataset.eval_batches("valid", train.seq_len, batch_size)):
        if max_batches is not None and i >= max_batches:
            break
        pending.append(batch)
        if sum(len(x) for x, _ in pending) >= rows_per_forward:
            score(pending)
            pending = []
    if pending:
        score(pending)
    model.train(was_training)
    if on_device:
        return total / count  # 0 / 0 = NaN when the split holds no window, caught as a divergence when read
    total, count = float(total), int(count)
    if count == 0:
        raise ValueError("the valid split is shorter than one evaluation window; lower train.seq_len")
    return float(total / count)


def train(run_config: RunConfig | None, out_dir: str | Path, resume: bool = False) -> dict[str, Any]:
    """Train into ``out_dir`` (see the module docstring and docs/training.md); returns the summary.

    ``run_config`` may be None with ``resume=True``: the run's stored configuration is used. On resume it may
    differ from the stored one only in the settings of ``decaylab.training.resume.RESUMABLE`` (train.max_steps,
    ...); config.json then takes the new values.
    """
    run_config, stored, changes = prepare_run(run_config, Path(out_dir), resume)
    ctx = dist_utils.setup(run_config.train.device)
    try:
        return _Trainer(run_config, stored, Path(out_dir), ctx, changes).run()
    finally:
        dist_utils.teardown(ctx)


def prepare_run(
    run_config: RunConfig | None, run_dir: Path, resume: bool
) -> tuple[RunConfig, RunConfig | None, list[str]]:
    """(config to train, the stored config when resuming, the settings a resume changes); refusals as train()."""
    if run_config is None and not resume:
        raise ValueError("train() needs a run_config for a new run (None is only allowed with resume=True)")
    if run_config is not None:
        run_config = settle_vocab(run_config)  # a pinned vocabulary the data settings contradict: refused now
    changes: list[str] = []
    if resume:
        stored = load_stored_config(run_dir, RunConfig)
        if run_config is None:
            run_config = stored
        elif run_config.model.vocab_size is None:  # follows the data, that is the run's tokenizer: the stored size
            run_config = with_overrides(run_config, {"model.vocab_size": stored.model.vocab_size})
        changes = resume_changes(run_dir, stored, run_config)  # refuses what may not change, by name
    else:
        check_fresh(run_dir)
        stored = None
    return run_config, stored, changes


class _Trainer:
    def __init__(self, cfg: RunConfig, stored: RunConfig | None, run_dir: Path, ctx: dist_utils.DistContext,
                 changes: list[str]):
        from decaylab.data import build_dataset
        from decaylab.model import DecayLM

        self.ctx, self.run_dir = ctx, run_dir
        if ctx.device.type == "cpu":
            torch.set_flush_denormal(True)  # denormal floats slow the CPU backward pass by up to 13x
        # Rank 0 builds (and caches) the dataset first, so the other processes only read the cache.
        if not ctx.is_main:
            dist_utils.barrier(ctx)
        # On resume the data layer checks that the run's saved tokenizer is the one the corpus uses now.
        # A pinned model.vocab_size that the tokenizer contradicts is refused before the corpus is tokenized.
        self.dataset = build_dataset(cfg.data, run_dir if stored is not None else None, cfg.model.vocab_size)
        if ctx.is_main:
            dist_utils.barrier(ctx)
        self.cfg = cfg = resolve_vocab(cfg, self.dataset.vocab_size)
        self.micro_batch = cfg.train.micro_batch(ctx.world_size)
        self.resumed_from: int | None = None
        self.step, self.train_time_s = 0, 0.0
        self._checkpointed_at = -1  # the step of the newest checkpoint written or restored (-1: none)

        seed_all(cfg.train.seed)
        self.model = DecayLM(cfg.model).to(ctx.device)
        self.num_params = self.model.num_params()
        self.wrapped = dist_utils.wrap_model(self.model, ctx, cfg.train.fsdp)
        self.use_graph = _use_cuda_graph(cfg.train, ctx)
        self.optimizer = build_optimizer(self.model, cfg.train, capturable=self.use_graph)
        # Dropout draws from its own stream per process, started after initialization.
        torch.manual_seed(cfg.train.seed + 1 + ctx.rank)
        self.forward_model = torch.compile(self.wrapped) if cfg.train.compile else self.wrapped
        self.graphed_step = None  # built at the first step, after a resumed run has restored its state
        # Runs stacked as replicas of one model (decaylab.training.replicas) step through their group instead.
        self.replicas = None
        # Called when the summary is written; its fields join it (runs trained together add their group's timing).
        self.summary_extra: Callable[[], dict[str, Any]] | None = None

        if stored is not None:
            self._restore()
            if ctx.is_main and changes:
                print(f"resume: changed {'; '.join(changes)}", flush=True)
                write_config(run_dir, cfg)
        elif ctx.is_main:
            run_dir.mkdir(parents=True, exist_ok=True)
            write_config(run_dir, cfg)
            tokenizer_json = json.dumps(self.dataset.tokenizer.to_json()) + "\n"
            atomic_write_text(run_dir / rundir.TOKENIZER, tokenizer_json)
        dist_utils.barrier(ctx)

    # -- state ------------------------------------------------------------------------------------------
    def _restore(self) -> None:
        found = load_latest(self.run_dir, map_location="cpu")
        if found is None:  # killed before its first checkpoint: start over, keeping config and tokenizer
            if self.ctx.is_main:
                rundir.truncate_metrics(self.run_dir, 0)
                print(f"resume: {self.run_dir} has no checkpoint yet (it stopped before the first one); training "
                      "starts again from step 0 with its stored configuration and tokenizer", flush=True)
            return
        step, parts = found
        if step > self.cfg.train.max_steps:
            raise ValueError(
                f"train.max_steps={self.cfg.train.max_steps} is below step {step} of the newest checkpoint in "
                f"{self.run_dir}; give train.max_steps >= {step}"
            )
        dist_utils.load_model_state(self.model, parts["model"], self.ctx, self.cfg.train.fsdp)
        dist_utils.load_optimizer_state(self.model, self.optimizer, parts["optimizer"], self.ctx, self.cfg.train.fsdp)
        trainer = parts["trainer"]
        self.step, self.train_time_s = trainer["step"], trainer["train_time_s"]
        self._checkpointed_at = self.step
        rng = trainer["rng"]
        set_rng_state(rng[self.ctx.rank] if self.ctx.rank < len(rng) else rng[0])
        self.resumed_from = step
        if self.ctx.is_main:
            rundir.truncate_metrics(self.run_dir, step)
            if step < self.cfg.train.max_steps:
                print(f"resume: from checkpoint {self.run_dir / rundir.CHECKPOINTS / rundir.checkpoint_name(step)} "
                      f"(step {step} of {self.cfg.train.max_steps})", flush=True)

    def _checkpoint_on_stop(self, records: LaggedRecords, loss: Any, grad_norm: Any, lr: float) -> None:
        """A checkpoint of the step just ended, for a stop between steps (``decaylab.training.stopping``): written
        after that step's numbers are read and checked, unless one exists for it already. Not for several processes
        (they would have to agree on the step) nor for a replica whose stacked state has moved past its own step."""
        if self.step == self._checkpointed_at or self.ctx.world_size > 1:
            return
        if self.replicas is not None and self.replicas.steps_done != self.step:
            return
        if torch.is_tensor(loss):
            records.settle(self.step - 1, loss, grad_norm, lr)  # raises TrainingDiverged on a bad step
        records.flush(wait=True)
        self._checkpoint()
        if self.ctx.is_main:
            print(f"stopped after step {self.step}: checkpoint in {self.run_dir / rundir.CHECKPOINTS}", flush=True)

    def _sync_model(self) -> None:
        """A replica's parameters and optimizer state into its own model and optimizer, before they are read."""
        if self.replicas is not None:
            self.replicas.write_back(self)

    def _checkpoint(self) -> None:
        self._sync_model()
        model_state = dist_utils.model_state(self.model, self.ctx, self.cfg.train.fsdp)
        optim_state = dist_utils.optimizer_state(self.model, self.optimizer, self.ctx, self.cfg.train.fsdp)
        rng = dist_utils.gather_objects(rng_state(), self.ctx)
        if self.ctx.is_main:
            trainer = {"step": self.step, "train_time_s": self.train_time_s, "rng": rng}
            parts = {"model": model_state, "optimizer": optim_state, "trainer": trainer}
            save_checkpoint(self.run_dir, self.step, parts, keep=self.cfg.train.keep_checkpoints)
        self._checkpointed_at = self.step
        dist_utils.barrier(self.ctx)

    # -- one optimizer step ------------------------------------------------------------------------------
    def graph_settings(self) -> dict[str, Any]:
        """The shape and numerics of this run's graphed step (``GraphedTrainStep``'s keyword arguments)."""
        train = self.cfg.train
        return dict(rows=train.batch_size, seq_len=train.seq_len, grad_accum=train.grad_accum,
                    max_norm=train.grad_clip if train.grad_clip > 0 else math.inf,
                    autocast_dtype=torch.bfloat16 if _uses_bf16(self.ctx.device, train.precision) else None)

    def _graphed_train_step(self, step: int) -> tuple[torch.Tensor, torch.Tensor, float]:
        """The step replayed from a CUDA graph: loss and gradient norm stay on the GPU (read when logged)."""
        train, ctx = self.cfg.train, self.ctx
        if self.replicas is not None:
            return self.replicas.step(self, step)
        if self.graphed_step is None:
            self.graphed_step = GraphedTrainStep(self.model, self.forward_model, self.optimizer,
                                                 **self.graph_settings())
        lr = learning_rate(step, train)
        x, y = self.dataset.train_batch(step, train.batch_size, train.seq_len, train.seed, ctx.rank, ctx.world_size)
        loss, grad_norm = self.graphed_step(x, y, lr)
        return loss, grad_norm, lr

    def _check_finite(self, step: int, loss: float, grad_norm: float, lr: float) -> None:
        if not (math.isfinite(loss) and math.isfinite(grad_norm)):
            raise TrainingDiverged(
                f"training diverged at step {step + 1}: loss={loss}, grad_norm={grad_norm} (lr={lr:.3g}). "
                f"The last good checkpoint is kept in {self.run_dir / rundir.CHECKPOINTS}; lower train.lr or raise "
                "train.warmup_steps and start a new run"
            )

    def _train_step(self, step: int) -> tuple[float, float, float]:
        train, ctx = self.cfg.train, self.ctx
        lr = learning_rate(step, train)
        set_learning_rate(self.optimizer, lr)
        rows = train.batch_size // ctx.world_size
        x, y = self.dataset.train_batch(step, rows, train.seq_len, train.seed, ctx.rank, ctx.world_size)
        x, y = x.to(ctx.device, non_blocking=True), y.to(ctx.device, non_blocking=True)
        self.forward_model.train()
        loss_sum = torch.zeros((), device=ctx.device)
        for i in range(train.grad_accum):
            part = slice(i * self.micro_batch, (i + 1) * self.micro_batch)
            last = i == train.grad_accum - 1
            # DDP would all-reduce after every backward; only the last micro-step needs it.
            sync = contextlib.nullcontext() if last or not hasattr(self.wrapped, "no_sync") else self.wrapped.no_sync()
            with sync:
                with _autocast(ctx.device, train.precision):
                    loss = _token_loss(self.forward_model, x[part], y[part])
                (loss / train.grad_accum).backward()
            loss_sum += loss.detach()
        max_norm = train.grad_clip if train.grad_clip > 0 else math.inf
        grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), max_norm)
        if hasattr(grad_norm, "full_tensor"):  # FSDP2 returns a sharded (DTensor) norm
            grad_norm = grad_norm.full_tensor()
        loss_value = float(dist_utils.all_reduce_mean(loss_sum / train.grad_accum, ctx))
        grad_value = float(grad_norm)
        self._check_finite(step, loss_value, grad_value, lr)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return loss_value, grad_value, lr

    # -- the loop -----------------------------------------------------------------------------------------
    def run(self) -> dict[str, Any]:
        steps = self.steps()
        while True:
            try:
                next(steps)
            except StopIteration as done:
                return done.value

    def steps(self) -> Generator[None, None, dict[str, Any]]:
        """The loop, paused after every optimizer step (``decaylab.training.together`` interleaves several runs);
        returns the summary."""
        cfg, ctx, train = self.cfg, self.ctx, self.cfg.train
        summary_path = self.run_dir / rundir.SUMMARY
        if summary_path.exists() and self.step >= train.max_steps:
            if ctx.is_main:
                print(f"{self.run_dir} has already finished its {train.max_steps} steps; nothing to resume (to train "
                      f"longer: --resume --out {self.run_dir} --set train.max_steps=N)", flush=True)
            return json.loads(summary_path.read_text())
        log = rundir.MetricsLog(self.run_dir, train.tensorboard) if ctx.is_main else None
        # A terminal gets a live bar; a log file (nohup, sweeps) gets one plain line per metrics record.
        plain_progress = train.progress and ctx.is_main and not sys.stderr.isatty()
        bar = progress_bar(train, self.step, enabled=train.progress and ctx.is_main and not plain_progress)
        started, first = time.perf_counter(), self.step
        tokens_per_step = train.tokens_per_step()
        window_tokens, window_time = 0, 0.0
        loss = val_loss = None

        def emit(record: dict[str, Any]) -> None:
            if log is not None:
                log.write(record)
                if plain_progress:
                    print_progress(record, train.max_steps, time.perf_counter() - started, record["step"] - first)
            if bar is not None:
                bar.set_postfix(loss=f"{record['loss']:.3f}", tok_s=f"{record['tokens_per_s']:,.0f}", refresh=False)

        # A graphed step's numbers are read back once it has run (decaylab.training.lagged); an eager step's are
        # floats already.
        records = LaggedRecords(emit, self._check_finite)
        try:
            while self.step < train.max_steps:
                t0 = time.perf_counter()
                log_now = self.step + 1 == train.max_steps or (self.step + 1) % train.log_every == 0
                evaluate_now = train.eval_every and (
                    (self.step + 1) % train.eval_every == 0 or self.step + 1 == train.max_steps
                )
                checkpoint_now = train.ckpt_every and (self.step + 1) % train.ckpt_every == 0
                event = None
                if self.use_graph or self.replicas is not None:
                    # Replays queue up on the GPU. The host waits only where it must (a checkpoint, the last step)
                    # and checks there that nothing diverged; a log line and a validation wait for their step.
                    loss, grad_norm, lr = self._graphed_train_step(self.step)
                    if checkpoint_now or self.step + 1 == train.max_steps:
                        loss, grad_norm, event = records.settle(self.step, loss, grad_norm, lr)
                else:
                    loss, grad_norm, lr = self._train_step(self.step)
                elapsed = time.perf_counter() - t0
                self.step += 1
                self.train_time_s += elapsed
                window_tokens, window_time = window_tokens + tokens_per_step, window_time + elapsed
                tokens_per_s = window_tokens / max(window_time, 1e-9)
                record = None
                if log_now or evaluate_now:
                    record = {"step": self.step, "tokens": self.step * tokens_per_step, "loss": loss, "lr": lr,
                              "grad_norm": grad_norm, "tokens_per_s": round(tokens_per_s, 1)}
                    if log_now:
                        window_tokens, window_time = 0, 0.0
                if evaluate_now:
                    self._sync_model()
                    val_loss = validation_loss(self.forward_model, self.dataset, cfg, ctx.device, train.eval_batches,
                                               on_device=torch.is_tensor(loss))
                    record["val_loss"] = val_loss  # read (and val_ppl added) with the step's numbers when lagged
                    if not torch.is_tensor(val_loss):
                        record["val_ppl"] = math.exp(min(val_loss, 700.0))
                if record is not None:
                    if torch.is_tensor(loss):
                        records.add(record, loss, grad_norm)  # written by a later flush
                    else:
                        records.write_now(record, event)
                records.flush()
                if bar is not None:
                    bar.update(1)
                if (train.ckpt_every and self.step % train.ckpt_every == 0) or self.step == train.max_steps:
                    self._checkpoint()
                yield
                if stopping.requested():
                    self._checkpoint_on_stop(records, loss, grad_norm, lr)
                    raise KeyboardInterrupt(f"stopped at step {self.step} of {train.max_steps}")
        except BaseException as error:
            if isinstance(error, GeneratorExit) and stopping.requested():
                # closed at a step's end: runs trained together, after another of them stopped
                try:
                    self._checkpoint_on_stop(records, loss, grad_norm, lr)
                except Exception as failure:  # noqa: BLE001 - the runs closed after this one must still be saved
                    print(f"{self.run_dir}: no checkpoint at the stop: {failure}", file=sys.stderr, flush=True)
            with contextlib.suppress(Exception):
                records.flush(wait=True)  # the records of the steps that ran before the error or interrupt
            raise
        finally:
            if bar is not None:
                bar.close()
            if log is not None:
                log.close()
        return self._finish(loss, val_loss)

    def _finish(self, loss: float | None, val_loss: float | None) -> dict[str, Any]:
        train = self.cfg.train
        sharded = train.fsdp and self.ctx.distributed
        self._sync_model()
        final_state = dist_utils.model_state(self.model, self.ctx, train.fsdp) if sharded else None
        summary = {
            "status": "finished",
            "steps": self.step,
            "tokens": self.step * train.tokens_per_step(),
            "train_time_s": round(self.train_time_s, 3),
            "tokens_per_s": round(self.step * train.tokens_per_step() / max(self.train_time_s, 1e-9), 1),
            "final_loss": loss,
            "num_params": self.num_params,
            "world_size": self.ctx.world_size,
            "device": self.ctx.device.type,
            "resumed_from": self.resumed_from,
        }
        if loss is None:  # resumed at the last step: take the final loss from the log
            records = rundir.read_metrics(self.run_dir) if self.ctx.is_main else []
            summary["final_loss"] = records[-1]["loss"] if records else None
        if torch.is_tensor(val_loss):  # a lagged validation (the last step's is read at once; this is a guard)
            val_loss = float(val_loss)
        if val_loss is not None:
            # The last periodic validation, over train.eval_batches batches: an estimate, named apart from the
            # val_loss / val_ppl of eval.json (the whole split), so that neither is read as the other.
            summary.update(val_loss_estimate=val_loss, val_ppl_estimate=math.exp(min(val_loss, 700.0)),
                           val_estimate_batches=train.eval_batches)
        if self.ctx.is_main:
            save_final_model(self.model, self.cfg, final_state, self.run_dir)
            if self.summary_extra is not None:
                summary.update(self.summary_extra())
            atomic_write_text(self.run_dir / rundir.SUMMARY, json.dumps(summary, indent=2) + "\n")
        dist_utils.barrier(self.ctx)
        return summary
