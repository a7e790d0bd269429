"""MQAR: every query's target is the value paired with that key earlier; deterministic, sharded, scored."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from decaylab.data import IGNORE_INDEX, DataConfig, build_dataset, load_tokenizer, mqar_accuracy
from decaylab.data.mqar import MQARTask


def check_sequences(x: torch.Tensor, y: torch.Tensor, task: MQARTask) -> None:
    P, Q, half = task.num_kv_pairs, task.num_queries, task.vocab_size // 2
    for row_x, row_y in zip(x.tolist(), y.tolist()):
        keys, values = row_x[0 : 2 * P : 2], row_x[1 : 2 * P : 2]
        assert len(set(keys)) == P and all(1 <= k < half for k in keys)
        assert len(set(values)) == P and all(half <= v < task.vocab_size for v in values)
        pairs = dict(zip(keys, values))
        asked = [t for t, target in enumerate(row_y) if target != IGNORE_INDEX]
        assert len(asked) == Q and all(t >= 2 * P and (t - 2 * P) % 2 == 0 for t in asked)
        assert len({row_x[t] for t in asked}) == Q  # distinct keys are queried
        for t in asked:
            assert row_x[t] in pairs and row_y[t] == pairs[row_x[t]]


@pytest.mark.parametrize("pairs,queries,filler", [(8, None, True), (4, 2, False), (16, 16, True)])
def test_queries_recall_the_paired_values(pairs, queries, filler):
    cfg = DataConfig(corpus="mqar", vocab_size=256, mqar_num_kv_pairs=pairs, mqar_num_queries=queries,
                     mqar_random_filler=filler)
    data = build_dataset(cfg)
    x, y = data.train_batch(step=2, batch_size=16, seq_len=80, seed=0)
    assert x.shape == y.shape == (16, 80) and x.dtype == y.dtype == torch.long
    assert int(x.max()) < 256 and int(x.min()) >= 0
    check_sequences(x, y, data.mqar)
    if not filler:
        mask = torch.ones_like(x, dtype=torch.bool)
        mask[:, : 2 * pairs] = False
        mask[y != IGNORE_INDEX] = False
        assert (x[mask] == 0).all()
    for xv, yv in data.eval_batches("valid", 80, batch_size=7):
        check_sequences(xv, yv, data.mqar)


def test_deterministic_sharded_and_split_apart(tmp_path):
    run_dir = tmp_path / "run"
    data = build_dataset(DataConfig(corpus="mqar", vocab_size=128, mqar_eval_examples=20), run_dir)
    assert load_tokenizer(run_dir / "tokenizer.json").vocab_size == 128 == data.vocab_size
    a = data.train_batch(4, 6, 64, seed=1)
    assert all(torch.equal(u, v) for u, v in zip(a, data.train_batch(4, 6, 64, seed=1)))
    assert not torch.equal(a[0], data.train_batch(5, 6, 64, seed=1)[0])
    assert not torch.equal(a[0], data.train_batch(4, 6, 64, seed=2)[0])
    shards = [data.train_batch(4, 2, 64, seed=1, rank=r, world_size=3) for r in range(3)]
    assert torch.equal(torch.cat([s[0] for s in shards]), a[0]) and torch.equal(torch.cat([s[1] for s in shards]), a[1])
    valid = torch.cat([x for x, _ in data.eval_batches("valid", 64, 8)])
    assert valid.shape == (20, 64)
    assert torch.equal(valid, torch.cat([x for x, _ in data.eval_batches("valid", 64, 3)]))  # fixed set
    test = torch.cat([x for x, _ in data.eval_batches("test", 64, 8)])
    assert not torch.equal(valid, test)
    with pytest.raises(ValueError, match="no split 'train'"):
        next(data.eval_batches("train", 64, 8))


def test_power_law_places_queries_early():
    rng = np.random.default_rng(0)
    positions = {}
    for a in (0.01, 1.0):
        task = MQARTask(vocab_size=512, num_kv_pairs=4, num_queries=4, power_a=a, random_filler=False)
        _, y = task.generate(rng, 400, 256)
        positions[a] = np.nonzero(y != IGNORE_INDEX)[1].mean()
    assert positions[0.01] < positions[1.0] - 30  # uniform: mean near the middle of the query region


def test_accuracy_function_and_model_score():
    y = torch.tensor([[IGNORE_INDEX, 3, IGNORE_INDEX, 1], [2, IGNORE_INDEX, IGNORE_INDEX, IGNORE_INDEX]])
    logits = torch.zeros(2, 4, 5)
    logits[0, 1, 3] = logits[0, 3, 0] = logits[1, 0, 2] = 1.0  # right, wrong, right
    assert mqar_accuracy(logits, y) == pytest.approx(2 / 3)
    with pytest.raises(ValueError, match="every target is -100"):
        mqar_accuracy(logits, torch.full_like(y, IGNORE_INDEX))

    data = build_dataset(DataConfig(corpus="mqar", vocab_size=64, mqar_num_kv_pairs=4, mqar_eval_examples=10))

    class Oracle(torch.nn.Module):
        """Looks each token up among the pairs at the start of its sequence (a perfect recall model)."""

        def __init__(self):
            super().__init__()
            self.dummy = torch.nn.Parameter(torch.zeros(1))

        def forward(self, x):
            logits = torch.zeros(*x.shape, 64)
            for b, row in enumerate(x.tolist()):
                pairs = dict(zip(row[0:8:2], row[1:8:2]))
                for t, token in enumerate(row):
                    logits[b, t, pairs.get(token, 0)] = 1.0
            return logits

    class Constant(Oracle):
        def forward(self, x):
            return torch.zeros(*x.shape, 64)

    assert data.mqar_accuracy(Oracle(), "test", seq_len=32) == 1.0
    assert data.mqar_accuracy(Constant(), "test", seq_len=32) == 0.0  # predicts token 0, never a value
    with pytest.raises(ValueError, match="seq_len"):
        data.mqar_accuracy(Oracle(), "test")


def test_mqar_errors():
    with pytest.raises(ValueError, match="too small for 8 key-value pairs; use at least 18"):
        DataConfig(corpus="mqar", vocab_size=16)
    with pytest.raises(ValueError, match="mqar_num_queries=9 must be between 1 and"):
        DataConfig(corpus="mqar", mqar_num_queries=9)
    with pytest.raises(ValueError, match="mqar_power_a"):
        DataConfig(corpus="mqar", mqar_power_a=0.0)
    data = build_dataset(DataConfig(corpus="mqar", vocab_size=64))
    with pytest.raises(
        ValueError, match="seq_len=31 is too short for MQAR with 8 pairs and 8 queries; use seq_len >= 32"
    ):
        data.train_batch(0, 2, 31, seed=0)
    with pytest.raises(ValueError, match="recall accuracy"):
        data.bytes_in_split("test")
