"""Training batches are a pure function of their arguments and shard across ranks; evaluation windows score
every token of a split exactly once."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from decaylab.data.dataset import IGNORE_INDEX, window_starts


def test_train_batch_is_deterministic_and_varies(make_token_dataset):
    data = make_token_dataset(5000)
    x, y = data.train_batch(step=3, batch_size=4, seq_len=32, seed=7)
    x2, y2 = data.train_batch(step=3, batch_size=4, seq_len=32, seed=7)
    assert x.dtype == y.dtype == torch.long and x.shape == y.shape == (4, 32)
    assert torch.equal(x, x2) and torch.equal(y, y2)
    assert not torch.equal(x, data.train_batch(step=4, batch_size=4, seq_len=32, seed=7)[0])
    assert not torch.equal(x, data.train_batch(step=3, batch_size=4, seq_len=32, seed=8)[0])


def test_train_rows_are_shifted_windows_of_the_train_split(make_token_dataset):
    data = make_token_dataset(3000)
    tokens = torch.from_numpy(data.split("train").astype(np.int64))
    x, y = data.train_batch(step=11, batch_size=6, seq_len=20, seed=1)
    assert torch.equal(x[:, 1:], y[:, :-1])
    starts = window_starts(11, 6, 20, len(tokens), seed=1)
    for row, s in enumerate(starts):
        assert torch.equal(x[row], tokens[s : s + 20]) and torch.equal(y[row], tokens[s + 1 : s + 21])


@pytest.mark.parametrize("world_size", [2, 3])
def test_rank_shards_concatenate_to_the_single_process_batch(make_token_dataset, world_size):
    data = make_token_dataset(4000)
    full_x, full_y = data.train_batch(step=5, batch_size=2 * world_size, seq_len=16, seed=3)
    shards = [data.train_batch(5, 2, 16, 3, rank=r, world_size=world_size) for r in range(world_size)]
    assert torch.equal(torch.cat([s[0] for s in shards]), full_x)
    assert torch.equal(torch.cat([s[1] for s in shards]), full_y)
    assert not torch.equal(shards[0][0], shards[1][0])


def test_each_epoch_visits_every_window_once():
    num_tokens, seq_len, rows = 1000, 10, 7
    num_windows = (num_tokens - seq_len) // seq_len  # 99
    steps = -(-2 * num_windows // rows)  # two epochs and a bit
    stream = np.concatenate([window_starts(s, rows, seq_len, num_tokens, seed=0) for s in range(steps)])
    first, second = stream[:num_windows], stream[num_windows : 2 * num_windows]
    for epoch in (first, second):
        assert len(set((epoch - epoch[0]) % seq_len)) == 1  # one phase per epoch
        assert len(set(epoch)) == num_windows  # every window once
        assert epoch.min() >= 0 and epoch.max() + seq_len + 1 <= num_tokens
    assert not np.array_equal(first, second)  # a new order (and phase) each epoch


@pytest.mark.parametrize("seq_len,batch_size", [(16, 3), (50, 4), (7, 100)])
def test_eval_batches_cover_every_target_once(make_token_dataset, seq_len, batch_size):
    data = make_token_dataset(900)
    tokens = torch.from_numpy(data.split("valid").astype(np.int64))  # 307 tokens -> 306 targets
    xs, ys = zip(*data.eval_batches("valid", seq_len, batch_size))
    assert all(x.shape[0] <= batch_size and x.shape[1] == seq_len for x in xs)
    x, y = torch.cat(xs), torch.cat(ys)
    mask = y != IGNORE_INDEX
    assert torch.equal(y[mask], tokens[1:])  # row-major order: each target once, in order
    assert torch.equal(x[mask], tokens[:-1])  # each target's input is the token before it
    assert int(mask.sum()) == data.num_eval_targets("valid") == len(tokens) - 1
    assert mask[:-1].all()  # only the last window is padded


def test_eval_batches_with_exact_multiple_have_no_padding(make_token_dataset):
    data = make_token_dataset(900)
    n = len(data.split("test"))  # 230 tokens -> 229 targets
    batches = list(data.eval_batches("test", seq_len=229, batch_size=2))
    assert len(batches) == 1 and (batches[0][1] != IGNORE_INDEX).all() and n == 230


def test_batch_argument_errors(make_token_dataset):
    data = make_token_dataset(500)
    with pytest.raises(ValueError, match="seq_len=0 must be a positive"):
        data.train_batch(0, 2, 0, seed=0)
    with pytest.raises(ValueError, match="seq_len=-4 must be a positive"):
        next(data.eval_batches("valid", -4, 2))
    with pytest.raises(ValueError, match="batch_size=0"):
        data.train_batch(0, 0, 8, seed=0)
    with pytest.raises(ValueError, match="0 <= rank < world_size"):
        data.train_batch(0, 2, 8, seed=0, rank=2, world_size=2)
    with pytest.raises(ValueError, match="too long for a train split of 500 tokens; use seq_len <= 250"):
        data.train_batch(0, 2, 251, seed=0)
    with pytest.raises(ValueError, match="no split 'validation'.*available: train, valid, test"):
        data.split("validation")
    with pytest.raises(ValueError, match="step=-1"):
        data.train_batch(-1, 2, 8, seed=0)
