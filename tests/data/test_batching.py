"""Length-grouped training batches and length-sorted evaluation batches."""

from __future__ import annotations

import numpy as np
import pytest

from src.data import batching
from src.data.batching import LengthGroupedBatchSampler, sorted_batches

# GoEmotions-like lengths: mean ~19 tokens, long tail to 64
LENGTHS = np.clip(np.random.default_rng(0).lognormal(2.8, 0.5, size=3000).astype(int) + 3, 3, 64)


def padded_tokens(batches, lengths) -> int:
    return sum(max(lengths[i] for i in batch) * len(batch) for batch in batches)


def test_each_index_once_per_epoch_in_full_batches():
    batches = list(LengthGroupedBatchSampler(LENGTHS, batch_size=32, seed=1))
    flat = [i for batch in batches for i in batch]
    assert sorted(flat) == list(range(len(LENGTHS)))
    assert max(len(b) for b in batches) == 32
    assert sum(len(b) < 32 for b in batches) <= -(-len(LENGTHS) // (32 * 50))  # at most one short batch a window
    assert len(batches) == len(LengthGroupedBatchSampler(LENGTHS, batch_size=32, seed=1))


def test_grouping_removes_most_padding():
    grouped = list(LengthGroupedBatchSampler(LENGTHS, batch_size=32, seed=1))
    random = np.array_split(np.random.default_rng(1).permutation(len(LENGTHS)), len(LENGTHS) // 32)
    real = int(LENGTHS.sum())
    assert padded_tokens(grouped, LENGTHS) / real < 1.05
    assert padded_tokens(random, LENGTHS) / real > 1.5


def test_deterministic_by_seed_and_epoch_and_random_order():
    sampler = LengthGroupedBatchSampler(LENGTHS, batch_size=32, seed=7)
    first = list(sampler)
    assert first == list(LengthGroupedBatchSampler(LENGTHS, batch_size=32, seed=7))
    sampler.set_epoch(1)
    assert list(sampler) != first
    assert list(LengthGroupedBatchSampler(LENGTHS, batch_size=32, seed=8)) != first
    longest = [max(LENGTHS[i] for i in b) for b in first]
    assert longest != sorted(longest) and longest != sorted(longest, reverse=True)  # batch order is shuffled


@pytest.mark.parametrize("size", [3000, 2999, 97])
def test_ddp_ranks_split_the_same_order_evenly(monkeypatch, size):
    lengths = LENGTHS[:size]
    per_rank = []
    for rank in (0, 1):
        monkeypatch.setattr(batching, "_world", lambda rank=rank: (2, rank))
        sampler = LengthGroupedBatchSampler(lengths, batch_size=16, seed=3)
        per_rank.append(list(sampler))
        assert len(per_rank[-1]) == len(sampler)
    assert len(per_rank[0]) == len(per_rank[1])
    seen = [i for batches in per_rank for batch in batches for i in batch]
    assert set(seen) == set(range(size))
    assert len(seen) - size <= 16  # only the padding batch repeats


def test_sorted_batches_cover_everything_longest_first():
    batches = sorted_batches(LENGTHS, 100)
    assert sorted(i for b in batches for i in b) == list(range(len(LENGTHS)))
    order = [LENGTHS[i] for b in batches for i in b]
    assert order == sorted(LENGTHS.tolist(), reverse=True)


@pytest.mark.parametrize(("rows", "replicas"), [(1000, 2), (32, 2), (1, 2), (0, 3), (7, 3), (1000, 1)])
def test_evaluation_shards_give_every_rank_the_same_number_of_batches_and_every_row(monkeypatch, rows, replicas):
    lengths = np.random.default_rng(0).integers(1, 60, size=rows)
    shards = []
    for rank in range(replicas):
        monkeypatch.setattr(batching, "_world", lambda rank=rank: (replicas, rank))
        shards.append(batching.shard(lengths, 128))
    assert len({len(batches) for batches in shards}) == 1  # no rank waits, none has an empty loader
    assert all(len(batch) <= 128 for batches in shards for batch in batches)
    seen = [i for batches in shards for batch in batches for i in batch]
    assert set(seen) == set(range(rows))  # rows may repeat (padding), never go missing
    if replicas == 1:
        assert shards[0] == sorted_batches(lengths, 128)  # outside DDP: the plain length-sorted batches
    elif rows:
        assert all(batches and all(batches) for batches in shards)
