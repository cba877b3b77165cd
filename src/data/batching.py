"""Batch samplers that put texts of similar length together, so little of each forward pass is padding.

GoEmotions texts average 19 tokens, but random batches of 32 pad to ~37: half the compute would be padding.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, Sampler

from src.progress import progress
from src.runtime import autocast_for


def _world() -> tuple[int, int]:
    """(replicas, rank) of the running process group; (1, 0) outside DDP."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size(), dist.get_rank()
    return 1, 0


class LengthGroupedBatchSampler(Sampler[list[int]]):
    """Training batches: shuffle all indices, cut them into windows of ``batch_size * window`` examples, sort
    each window by length and cut it into batches, then shuffle the batch order.

    Batches stay random in content and order (windows are random samples) while nearly uniform in length.
    Deterministic given ``seed`` and the epoch (Lightning calls :meth:`set_epoch`). Under DDP each rank takes
    every ``replicas``-th batch of the same global order; the list is padded by repeating its first batches so
    every rank runs the same number of steps. :meth:`resume` makes one epoch start after the batches a checkpoint
    had already trained on (a mid-epoch resume continues from the same batch).

    ``costs`` (chunks per document, a hierarchical model) with ``max_cost``: documents are grouped by cost first and
    a batch of cost-``c`` documents holds ``min(batch_size, max_cost // c)`` of them (at least one), so no batch
    encodes more than ``max_cost`` chunks, none pads a document with empty chunks, and the number of batches is the
    same every epoch (the groups' sizes fix it) as Lightning and the LR schedule expect.
    """

    def __init__(self, lengths: Sequence[int], batch_size: int, seed: int = 0, window: int = 50,
                 costs: Sequence[int] | None = None, max_cost: int | None = None):
        self.lengths = np.asarray(lengths)
        self.batch_size = batch_size
        self.seed = seed
        self.window = window
        self.costs = None if costs is None else np.asarray(costs)
        self.max_cost = max_cost
        self.epoch = 0
        self._resume_at: tuple[int, int] | None = None

    @property
    def sampler(self) -> LengthGroupedBatchSampler:
        """Lightning calls ``set_epoch`` on ``batch_sampler.sampler`` (the index sampler torch's BatchSampler wraps),
        never on the batch sampler itself; this one draws its own indices, so it stands there for itself (without it
        every epoch repeated the first epoch's batches)."""
        return self

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def resume(self, epoch: int, batches: int) -> None:
        """The next iteration of ``epoch`` skips its first ``batches`` batches (this rank's)."""
        self._resume_at = (epoch, batches)

    def per_batch(self, cost: int) -> int:
        """Documents per batch when each costs ``cost`` chunks."""
        return self.batch_size if self.max_cost is None else max(1, min(self.batch_size, self.max_cost // cost))

    def _groups(self, order: np.ndarray) -> list[tuple[np.ndarray, int]]:
        """``order`` split by cost (kept in order within each), with each group's documents per batch."""
        if self.costs is None:
            return [(order, self.batch_size)]
        costs = self.costs[order]
        return [(order[costs == cost], self.per_batch(int(cost))) for cost in np.unique(costs)]

    def _global_batches(self) -> list[np.ndarray]:
        rng = np.random.default_rng([self.seed, self.epoch])
        batches = []
        for group, per in self._groups(rng.permutation(len(self.lengths))):
            size = per * self.window
            for start in range(0, len(group), size):
                chunk = group[start : start + size]
                chunk = chunk[np.argsort(self.lengths[chunk], kind="stable")]
                batches.extend(chunk[i : i + per] for i in range(0, len(chunk), per))
        return [batches[i] for i in rng.permutation(len(batches))]

    def __iter__(self) -> Iterator[list[int]]:
        batches = self._global_batches()
        replicas, rank = _world()
        per_rank = -(-len(batches) // replicas)
        batches += batches[: per_rank * replicas - len(batches)]
        skip = 0
        if self._resume_at is not None and self._resume_at[0] == self.epoch:
            skip, self._resume_at = self._resume_at[1], None
        for batch in batches[rank::replicas][skip:]:
            yield batch.tolist()

    def __len__(self) -> int:
        """Batches per rank, counted without drawing the epoch: full windows of ``window`` batches, then the
        rest."""
        batches = 0
        for group, per in self._groups(np.arange(len(self.lengths))):
            full_windows, rest = divmod(len(group), per * self.window)
            batches += full_windows * self.window + -(-rest // per)
        return -(-batches // _world()[0])


class ResumableDataLoader(DataLoader):
    """A training DataLoader that Lightning checkpoints mid-epoch (it has ``state_dict``/``load_state_dict``): its
    state is the epoch and the batches trained in it, as ``trained()`` counts them (the fit loop's count: the loader
    itself runs a batch ahead, Lightning prefetches one). Loading it makes the sampler skip those batches."""

    def __init__(self, *args, trained: Callable[[], int], **kwargs):
        super().__init__(*args, **kwargs)
        self.trained = trained

    def state_dict(self) -> dict[str, int]:
        return {"epoch": int(self.batch_sampler.epoch), "batches": int(self.trained())}

    def load_state_dict(self, state_dict: dict[str, int]) -> None:
        self.batch_sampler.resume(state_dict["epoch"], state_dict["batches"])


def sizes(rows: list) -> tuple[list[int], list[int] | None]:
    """Tokens per row and, for rows that are lists of windows (a hierarchical model's documents), windows per row
    (None for plain rows): what batches are sorted and capped by."""
    if rows and isinstance(rows[0], list):
        return [sum(map(len, windows)) for windows in rows], [len(windows) for windows in rows]
    return [len(row) for row in rows], None


def sorted_batches(lengths: Sequence[int], batch_size: int, costs: Sequence[int] | None = None,
                   max_cost: int | None = None) -> list[list[int]]:
    """Evaluation/prediction batches of indices sorted by length, longest first (the largest batch fails
    first if memory is short). Callers that need input order restore it from the indices. With ``costs`` (chunks per
    document) a batch also ends before its chunks would pass ``max_cost`` (a document alone may)."""
    order = np.argsort(-np.asarray(lengths), kind="stable")
    if costs is None or max_cost is None:
        return [order[i : i + batch_size].tolist() for i in range(0, len(order), batch_size)]
    batches, batch, total = [], [], 0
    for index in order.tolist():
        if batch and (len(batch) == batch_size or total + costs[index] > max_cost):
            batches.append(batch)
            batch, total = [], 0
        batch.append(index)
        total += costs[index]
    return batches + [batch] if batch else batches


def shard(lengths: Sequence[int], batch_size: int, costs: Sequence[int] | None = None,
          max_cost: int | None = None) -> list[list[int]]:
    """This DDP rank's evaluation batches (all of :func:`sorted_batches` outside DDP).

    Under DDP every rank gets the same number of batches, so none waits for another or has none (Lightning refuses an
    empty loader): the length-sorted rows are cut into a multiple of ``replicas`` batches of at most ``batch_size``,
    dealt round-robin; a batch left without rows (fewer rows than ranks) repeats the first row. The evaluation
    callback gathers the rows by index and keeps each once. Chunked documents (``costs``) keep their batches, so
    that none passes ``max_cost`` chunks; the list is padded with one-document batches to a multiple of ``replicas``.
    """
    replicas, rank = _world()
    batches = sorted_batches(lengths, batch_size, costs, max_cost)
    if replicas == 1:
        return batches
    if costs is not None:
        count = -(-max(len(batches), 1) // replicas) * replicas
        batches += [batches[0][:1] if batches else [0]] * (count - len(batches))
        return batches[rank::replicas]
    order = [index for batch in batches for index in batch]
    count = -(-max(len(batches), 1) // replicas) * replicas
    size = -(-len(order) // count)
    cut = [order[i * size : (i + 1) * size] or order[:1] for i in range(count)]
    return cut[rank::replicas]


class PadCollator:
    """Pads a batch to its longest sequence, rounded up to a multiple of ``multiple_of``."""

    def __init__(self, pad_token_id: int, multiple_of: int = 8):
        self.pad_token_id = pad_token_id
        self.multiple_of = multiple_of

    def pad(self, rows: list) -> dict[str, torch.Tensor]:
        """Rows of token ids to ``[B, L]``; rows that are lists of windows (chunked documents) to ``[B, K, L]``,
        a document with fewer than K windows padded with empty ones (mask all zeros)."""
        if rows and isinstance(rows[0], list):
            chunks = max(len(windows) for windows in rows)
            flat = self.pad([window for windows in rows for window in windows])
            out = {key: torch.zeros((len(rows), chunks, value.shape[1]), dtype=value.dtype)
                   for key, value in flat.items()}
            out["input_ids"].fill_(self.pad_token_id)
            start = 0
            for row, windows in enumerate(rows):
                for key in out:
                    out[key][row, : len(windows)] = flat[key][start : start + len(windows)]
                start += len(windows)
            return out
        longest = max(len(ids) for ids in rows)
        width = -(-longest // self.multiple_of) * self.multiple_of
        input_ids = torch.full((len(rows), width), self.pad_token_id, dtype=torch.long)
        attention_mask = torch.zeros((len(rows), width), dtype=torch.long)
        for row, ids in enumerate(rows):
            input_ids[row, : len(ids)] = torch.from_numpy(ids)
            attention_mask[row, : len(ids)] = 1
        return {"input_ids": input_ids, "attention_mask": attention_mask}

    def __call__(self, batch: list[tuple[np.ndarray, torch.Tensor, int]]) -> dict[str, torch.Tensor]:
        """Items are ``(token ids, target row, row index)``."""
        return {**self.pad([ids for ids, _, _ in batch]), "labels": torch.stack([target for _, target, _ in batch]),
                "index": torch.tensor([index for _, _, index in batch])}


@torch.inference_mode()
def map_sorted_batches(function: Callable[[dict[str, torch.Tensor]], torch.Tensor], ids: list, pad_token_id: int,
                       batch_size: int, width: int, device: torch.device, precision: str, multiple_of: int = 1,
                       description: str | None = None, max_chunks_per_batch: int | None = None) -> np.ndarray:
    """``function`` over padded batches of token ids (on ``device``, under ``precision``'s autocast), batched by
    length; its ``[B, width]`` rows returned as float32 in input order. ``description`` shows a progress bar. Rows
    that are lists of windows (a hierarchical model's documents) are batched by ``max_chunks_per_batch`` too."""
    collate = PadCollator(pad_token_id, multiple_of)
    out = np.zeros((len(ids), width), dtype=np.float32)
    lengths, costs = sizes(ids)
    with autocast_for(device, precision), progress(description, total=len(ids), unit="texts") as advance:
        for batch in sorted_batches(lengths, batch_size, costs, max_chunks_per_batch):
            padded = {key: value.to(device) for key, value in collate.pad([ids[i] for i in batch]).items()}
            out[batch] = function(padded).float().cpu().numpy()
            advance(len(batch))
    return out
