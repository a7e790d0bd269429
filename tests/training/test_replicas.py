"""Runs stacked as replicas of one model (decaylab.training.replicas): each replica's loss, clipped gradient norm,
parameters and AdamW state after several steps are those of its model trained alone, on a CPU (the step's math
without the graph) for several decay designs; the graphed step on a GPU (``gpu`` marker) replays the eager one."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from decaylab.config import with_overrides
from decaylab.model import DecayLM
from decaylab.run.config import run_preset
from decaylab.training.replicas import ReplicatedGraphedStep, clip_per_replica, replica_losses

R, ROWS, T, VOCAB = 3, 4, 24, 97


def _models(device, **overrides):
    cfg = with_overrides(run_preset("ptb-small"), {"model.vocab_size": VOCAB, "model.dropout": 0.0,
                                                   "model.d_model": 64, "model.n_layers": 2, "model.n_heads": 2,
                                                   **{f"model.{k}": v for k, v in overrides.items()}})  # fmt: skip
    models = []
    for seed in range(R):
        torch.manual_seed(seed)
        models.append(DecayLM(cfg.model).to(device))
    return models


def _adamw(model, capturable=False):
    groups = [dict(g, params=list(g["params"])) for g in model.param_groups(weight_decay=0.1)]
    return torch.optim.AdamW(groups, lr=3e-3, betas=(0.9, 0.95), weight_decay=0.1, foreach=False,
                             capturable=capturable)  # fmt: skip


def _batches(steps, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [(torch.randint(0, VOCAB, (R, ROWS, T), generator=g), torch.randint(0, VOCAB, (R, ROWS, T), generator=g))
            for _ in range(steps)]  # fmt: skip


def _alone(model, optimizer, batches, r, grad_accum, max_norm, lrs):
    """Model r trained alone as the trainer's eager step does: (losses, grad norms) per step."""
    losses, norms = [], []
    micro = ROWS // grad_accum
    for (x, y), lr in zip(batches, lrs):
        for group in optimizer.param_groups:
            group["lr"] = lr
        total = 0.0
        for i in range(grad_accum):
            part = slice(i * micro, (i + 1) * micro)
            logits = model(x[r, part])
            loss = F.cross_entropy(logits.float().flatten(0, 1), y[r, part].flatten())
            (loss / grad_accum).backward()
            total += loss.item() / grad_accum
        norms.append(torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm).item())
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(total)
    return losses, norms


@pytest.mark.parametrize("design", [
    {"decay.kind": "simple", "decay.granularity": "scalar"},
    {"decay.kind": "gla", "decay.granularity": "vector", "pos": "rope"},
    {"decay.kind": "mamba2", "decay.granularity": "vector", "decay.share": True},
    {"decay.kind": "hgrn2", "decay.granularity": "vector", "short_conv": 4},
    {"mixer": "softmax", "pos": "rope"},
    {"mixer": "softmax", "pos": "none"},
], ids=["simple-scalar", "gla-vector-rope", "mamba2-shared-key", "hgrn2-short-conv", "softmax-rope", "softmax"])
def test_each_replica_trains_as_its_model_alone(design):
    grad_accum, max_norm, lrs = 2, 0.5, [3e-3, 2e-3, 1e-3]  # a low clip: every step clips
    models = _models("cpu", **design)
    alone = _models("cpu", **design)  # built again, not deep-copied: a copied Parameter loses its _no_weight_decay
    step = ReplicatedGraphedStep(models, _adamw(models[0]), rows=ROWS, seq_len=T, grad_accum=grad_accum,
                                 max_norm=max_norm, autocast_dtype=None)  # fmt: skip
    batches = _batches(len(lrs))
    got = []
    for (x, y), lr in zip(batches, lrs):
        step.x.copy_(x)
        step.y.copy_(y)
        step.lr.fill_(lr)
        step.optimizer.zero_grad(set_to_none=True)
        got.append([t.clone() for t in step._step()])  # the step's math, eagerly (a graph needs a GPU)
    for r in range(R):
        optimizer = _adamw(alone[r])
        losses, norms = _alone(alone[r], optimizer, batches, r, grad_accum, max_norm, lrs)
        torch.testing.assert_close(torch.tensor([g[0][r].item() for g in got]), torch.tensor(losses))
        torch.testing.assert_close(torch.tensor([g[1][r].item() for g in got]), torch.tensor(norms))
        assert max(norms) > max_norm  # clipping took part
        own = _adamw(models[r])
        step.write_back(r, own)
        # AdamW moves an entry by about lr a step whatever its gradient's size, so where the gradient is tiny and
        # mostly float32 rounding (cancelling sums), the two orders of summation (one batched matmul for the
        # replicas, one per model alone) move it differently: up to a few 1e-7 here, more on other CPUs' BLAS.
        # Parameters agree to 0.1 % of the steps' summed size; the moments, checked next, carry any real mismatch.
        atol = 1e-3 * sum(lrs)
        for name, p in alone[r].named_parameters():
            torch.testing.assert_close(models[r].get_parameter(name), p, rtol=1e-5, atol=atol, msg=name)
            mine = own.state[models[r].get_parameter(name)]
            for key in ("exp_avg", "exp_avg_sq"):
                torch.testing.assert_close(mine[key], optimizer.state[p][key], rtol=1e-5, atol=1e-8, msg=name)
            assert float(mine["step"]) == len(lrs)


def test_replica_losses_leave_out_ignored_tokens():
    g = torch.Generator().manual_seed(0)
    logits, y = torch.randn(2, 3, 5, 7, generator=g), torch.randint(0, 7, (2, 3, 5), generator=g)
    y[1, 0, :4] = -100
    want = torch.stack([F.cross_entropy(logits[r].flatten(0, 1), y[r].flatten(), ignore_index=-100) for r in (0, 1)])
    torch.testing.assert_close(replica_losses(logits, y), want)


def test_clipping_is_per_replica():
    big, small = torch.full((4, 3), 10.0), torch.full((4, 3), 0.01)
    p = torch.stack([big, small]).requires_grad_()
    p.grad = p.detach().clone()
    norms = clip_per_replica([p], max_norm=1.0)
    torch.testing.assert_close(norms, torch.stack([big.norm(), small.norm()]))
    torch.testing.assert_close(p.grad[0].norm(), torch.tensor(1.0), rtol=1e-5, atol=0)  # clipped
    assert p.grad[1].equal(small)  # below the limit: untouched


@pytest.mark.gpu
@pytest.mark.parametrize("design", [{"decay.granularity": "scalar"}, {"decay.granularity": "vector"},
                                    {"decay.granularity": "vector", "short_conv": 4}], ids=["scalar", "vector", "conv"])
def test_graphed_replicas_replay_the_eager_step_on_gpu(design):
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    lrs, batches = [3e-3, 2e-3, 1e-3], _batches(3)
    results = []
    for graphed in (False, True):
        models = _models("cuda", **design)
        step = ReplicatedGraphedStep(models, _adamw(models[0], capturable=True), rows=ROWS, seq_len=T, grad_accum=1,
                                     max_norm=1.0, autocast_dtype=torch.bfloat16)  # fmt: skip
        out = []
        for (x, y), lr in zip(batches, lrs):
            if graphed:
                loss, norm = step(x.cuda(), y.cuda(), lr)
            else:
                step.x.copy_(x)
                step.y.copy_(y)
                step.lr.fill_(lr)
                step.optimizer.zero_grad(set_to_none=True)
                loss, norm = step._step()
            out.append(torch.cat([loss, norm]).cpu())
        results.append(torch.stack(out))
    # the same kernels in the same order: the replay gives the eager step's numbers
    torch.testing.assert_close(results[1], results[0], rtol=1e-6, atol=1e-6)


def test_only_fresh_runs_differing_in_their_seeds_share_a_key(tmp_path):
    from training_helpers import small_run

    from decaylab import rundir
    from decaylab.training.together import _replica_key

    a, b = small_run(**{"train.seed": 1}), small_run(**{"train.seed": 2})
    new = tmp_path / "new"
    assert _replica_key(a, None, new) == _replica_key(b, None, new) is not None
    assert _replica_key(small_run(**{"model.decay.kind": "gla"}), None, new) != _replica_key(a, None, new)
    assert _replica_key(small_run(**{"train.lr": 1e-3}), None, new) != _replica_key(a, None, new)
    assert _replica_key(small_run(**{"train.cuda_graph": "off"}), None, new) is None
    assert _replica_key(small_run(**{"model.mixer": "softmax"}), None, new) is None  # SDPA under vmap: NaN on a GPU
    (tmp_path / "killed").mkdir()  # interrupted before its first checkpoint: it starts again, so it may stack
    assert _replica_key(a, a, tmp_path / "killed") == _replica_key(a, None, new)
    checkpoint = tmp_path / "resumed" / rundir.CHECKPOINTS / rundir.checkpoint_name(3)
    checkpoint.mkdir(parents=True)
    (checkpoint / "model.pt").write_bytes(b"")
    assert _replica_key(a, a, tmp_path / "resumed") is None  # resumes from its checkpoint: trains on its own


def _check_stacked_runs(tmp_path, base, designs, rtol):
    """Each design's three seeds stacked, trained together; each run against itself trained alone: the same logged
    steps, losses within ``rtol``, and a saved model that is the replica's (its final validation loss recomputed
    from the checkpoint)."""
    from training_helpers import small_run

    from decaylab.data import build_dataset
    from decaylab.model import DecayLM
    from decaylab.rundir import read_metrics
    from decaylab.training.loop import train, validation_loss
    from decaylab.training.together import train_together

    configs = [small_run(**base, **design, **{"train.seed": seed}) for design in designs for seed in (1, 2, 3)]
    for i, cfg in enumerate(configs):
        train(cfg, tmp_path / f"alone-{i}")
    results = train_together([(cfg, tmp_path / f"stacked-{i}", False) for i, cfg in enumerate(configs)],
                             replicas=3)
    assert [r["together_replicas"] for r in results] == [3] * len(configs)
    device = torch.device("cuda" if base.get("train.device") == "cuda" else "cpu")
    for i, cfg in enumerate(configs):
        alone, stacked = read_metrics(tmp_path / f"alone-{i}"), read_metrics(tmp_path / f"stacked-{i}")
        assert [r["step"] for r in stacked] == [r["step"] for r in alone]
        for a, b in zip(alone, stacked):
            torch.testing.assert_close(torch.tensor(b["loss"]), torch.tensor(a["loss"]), rtol=rtol, atol=0)
        steps = cfg.train.max_steps
        model = DecayLM(cfg.model).to(device)
        model.load_state_dict(torch.load(tmp_path / f"stacked-{i}" / "checkpoints" / f"step-{steps}" / "model.pt",
                                         weights_only=True, map_location=device))
        dataset = build_dataset(cfg.data, None, cfg.model.vocab_size)
        again = validation_loss(model, dataset, cfg, device, cfg.train.eval_batches)
        torch.testing.assert_close(torch.tensor(again), torch.tensor(stacked[-1]["val_loss"]), rtol=1e-5, atol=0)


def test_seeds_stacked_on_a_cpu_train_as_the_runs_alone(tmp_path):
    """Without dropout (the one thing replicas draw otherwise) and in float32, a stacked run is its run alone."""
    _check_stacked_runs(tmp_path, {"model.dropout": 0.0}, [{}, {"model.decay.kind": "gla"}], rtol=1e-4)


@pytest.mark.gpu
def test_seeds_stacked_on_a_gpu_train_as_the_runs_alone(tmp_path):
    """The graphed replicas under bf16: losses within bf16 noise of the runs alone."""
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    base = {"train.device": "cuda", "train.precision": "bf16", "train.cuda_graph": "on", "train.max_steps": 40,
            "train.eval_every": 20, "train.log_every": 5, "model.dropout": 0.0}
    _check_stacked_runs(tmp_path, base, [{}, {"model.decay.kind": "gla", "model.pos": "rope"}], rtol=2e-2)


def test_a_run_killed_before_its_first_checkpoint_joins_its_replicas_again(tmp_path):
    """An interrupted sweep resumes its runs; one that stopped before any checkpoint starts again from step 0, so it
    is stacked with its point's other seeds and trains as it would alone (no dropout: to float32 rounding)."""
    import shutil

    from training_helpers import small_run

    from decaylab import rundir
    from decaylab.training.loop import train
    from decaylab.training.together import train_together

    configs = [small_run(**{"model.dropout": 0.0, "train.seed": seed}) for seed in (1, 2, 3)]
    train(configs[1], tmp_path / "alone")
    killed = tmp_path / "killed"
    killed.mkdir()
    for name in (rundir.CONFIG, rundir.TOKENIZER):  # what a run leaves before its first checkpoint
        shutil.copy(tmp_path / "alone" / name, killed / name)
    runs = [(configs[0], tmp_path / "a", False), (configs[1], killed, True), (configs[2], tmp_path / "c", False)]
    results = train_together(runs, replicas=3)
    assert [r["together_replicas"] for r in results] == [3, 3, 3]
    again = torch.tensor([r["loss"] for r in rundir.read_metrics(killed)])
    torch.testing.assert_close(again, torch.tensor([r["loss"] for r in rundir.read_metrics(tmp_path / "alone")]),
                               rtol=1e-4, atol=0)  # fmt: skip
