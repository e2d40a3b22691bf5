"""The boss's training batches under AutoAssist: fixed-size batches of the raw samples the assistant keeps, a fixed
number per epoch, resumable exactly where the boss stopped."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterator
from typing import NamedTuple

import lightning as L
import torch
from torch import Tensor

from pipeline.arguments import check_int, check_number
from pipeline.methods.autoassist.assistant import Assistant, keep_probability
from pipeline.training import budget
from pipeline.training.data import derive_seed

# The keep/skip draws' random stream; keys 0-2 are the data module's (split, order, synthetic data).
_KEEP_STREAM = 3


class _Snapshot(NamedTuple):
    """The stream just before it produced one batch: enough to produce it, and all after it, again."""

    produced: int
    generator: Tensor
    raw_pass: int
    raw_batches: int
    buffer: tuple[Tensor, Tensor] | None
    seen: int
    kept: int


class KeptBatches:
    """Fixed-size batches of the samples the assistant keeps, ``batches_per_epoch`` of them per epoch.

    Args:
        loader: the data module's train loader, yielding ``(x, y)``; its sampler's ``set_epoch`` (if any) is called
            with the number of the pass, so pass k through the data has the order epoch k would have had.
        assistant: scores raw samples.
        base_prob: floor of the keep probability.
        batch_size: samples per emitted batch.
        seed: seeds the keep/skip draws (one stream per rank).
        position: batches of the current epoch already trained on (non-zero only when a run resumes mid-epoch):
            the epoch then emits only the rest.

    The stream is continuous across epochs: samples kept but not yet emitted at an epoch's end open the next epoch.
    """

    def __init__(self, loader, assistant: Assistant, *, base_prob: float, batch_size: int, seed: int,
                 position: Callable[[], int] | None = None) -> None:
        self.loader = loader
        self.assistant = assistant
        self.base_prob = check_number("base_prob", base_prob, 0.0, 1.0)
        self.batch_size = check_int("batch_size", batch_size, 1)
        self.seed = check_int("seed", seed, 0)
        self.position = position
        self.rank, self.world_size = 0, 1
        self.seen = 0  # raw samples scored
        self.kept = 0  # of which kept
        self.seconds = 0.0  # spent scoring and drawing
        self._restart(produced=0, raw_pass=0, raw_batches=0, buffer=None)
        self._generator = torch.Generator().manual_seed(derive_seed(self.seed, _KEEP_STREAM, self.rank))
        self._snapshots: deque[_Snapshot] = deque(maxlen=4)  # the prefetcher runs at most one or two batches ahead

    def shard(self, rank: int, world_size: int) -> None:
        """Take the ``rank``-th of ``world_size`` disjoint shards; call before the first batch."""
        check_int("world_size", world_size, 1)
        if not 0 <= rank < world_size:
            raise ValueError(f"rank must be in [0, {world_size - 1}], got {rank!r}")
        if self._produced:
            raise RuntimeError("KeptBatches.shard() must be called before the first batch")
        self.rank, self.world_size = rank, world_size
        self._generator = torch.Generator().manual_seed(derive_seed(self.seed, _KEEP_STREAM, rank))

    @property
    def num_samples(self) -> int:
        """Samples in one pass through the training data (all ranks)."""
        return len(self.loader.dataset)

    @property
    def batches_per_epoch(self) -> int:
        """As many boss batches per rank as an unfiltered epoch has (:func:`pipeline.training.budget.batches_per_epoch`:
        ``ceil((N // world_size) / batch_size)``, at least 1)."""
        return budget.batches_per_epoch(self.num_samples, self.batch_size, self.world_size)

    def __len__(self) -> int:
        return self.batches_per_epoch

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        done = min(max(self.position() if self.position else 0, 0), self.batches_per_epoch)
        for _ in range(self.batches_per_epoch - done):
            yield self.next_batch()

    def next_batch(self) -> tuple[Tensor, Tensor]:
        """The next ``batch_size`` kept samples."""
        self._snapshots.append(self._snapshot())
        xs, ys = ([self._buffer[0]], [self._buffer[1]]) if self._buffer is not None else ([], [])
        count = len(ys[0]) if ys else 0
        while count < self.batch_size:
            x, y = self._raw_batch()
            start = time.perf_counter()
            keep = self._keep(x, y)
            self.seconds += time.perf_counter() - start
            xs.append(x[keep])
            ys.append(y[keep])
            count += int(keep.sum())
        x, y = torch.cat(xs), torch.cat(ys)
        self._buffer = (x[self.batch_size :], y[self.batch_size :]) if count > self.batch_size else None
        self._produced += 1
        return x[: self.batch_size], y[: self.batch_size]

    def _keep(self, x: Tensor, y: Tensor) -> Tensor:
        p = self.assistant.prob(self.assistant.features(x), y)
        keep = torch.rand(len(y), generator=self._generator) < keep_probability(p, self.base_prob)
        self.seen += len(y)
        self.kept += int(keep.sum())
        return keep

    def _raw_batch(self) -> tuple[Tensor, Tensor]:
        """This rank's share of the next raw batch (never empty), starting a new pass through the data as needed."""
        while True:
            try:
                x, y = next(self._raw)
            except StopIteration:
                self._open_pass(self._raw_pass + 1, skip=0)
                continue
            start = (self.rank - self._raw_samples) % self.world_size  # position in the pass decides the rank
            self._raw_batches += 1
            self._raw_samples += len(y)
            if self.world_size > 1:
                x, y = x[start :: self.world_size], y[start :: self.world_size]
            if len(y):
                return x, y

    def _open_pass(self, raw_pass: int, skip: int) -> None:
        sampler = getattr(self.loader, "sampler", None)
        if callable(getattr(sampler, "set_epoch", None)):
            sampler.set_epoch(raw_pass)
        self._raw = iter(self.loader)
        self._raw_pass, self._raw_batches, self._raw_samples = raw_pass, 0, 0
        for _ in range(skip):
            self._raw_samples += len(next(self._raw)[1])
            self._raw_batches += 1

    def _restart(self, *, produced: int, raw_pass: int, raw_batches: int,
                 buffer: tuple[Tensor, Tensor] | None) -> None:
        self._produced = produced
        self._buffer = buffer
        self._raw = iter(())  # opened lazily: a loader is not iterated before training asks for a batch
        self._raw_pass, self._raw_batches, self._raw_samples = raw_pass, raw_batches, 0
        self._pending_pass = (raw_pass, raw_batches)

    def _snapshot(self) -> _Snapshot:
        if self._pending_pass is not None:  # the first batch after (re)starting: open the pass where it was
            raw_pass, skip = self._pending_pass
            self._open_pass(raw_pass, skip=skip)
            self._pending_pass = None
        return _Snapshot(self._produced, self._generator.get_state(), self._raw_pass, self._raw_batches,
                         self._buffer, self.seen, self.kept)

    # -- resuming (not named state_dict: Lightning would checkpoint a loader with one itself, prefetched batches
    # included) -------------------------------------------------------------------------------------------------
    def snapshot(self, trained_batches: int) -> dict:
        """The stream as it was just after the boss's ``trained_batches``-th batch (batches prefetched beyond it are
        produced again after a resume)."""
        snapshot = next((s for s in self._snapshots if s.produced == trained_batches), None)
        if snapshot is None:  # nothing prefetched: the stream is exactly there
            snapshot = self._snapshot()
        return {**snapshot._asdict(), "rank": self.rank, "world_size": self.world_size, "seconds": self.seconds}

    def restore(self, state: dict) -> None:
        """Go on from a :meth:`snapshot`."""
        if (state["rank"], state["world_size"]) != (self.rank, self.world_size):
            raise ValueError(f"cannot resume rank {state['rank']} of {state['world_size']} as rank {self.rank} of "
                             f"{self.world_size}")
        self._generator.set_state(state["generator"])
        self.seen, self.kept, self.seconds = state["seen"], state["kept"], state["seconds"]
        self._snapshots.clear()
        self._restart(produced=state["produced"], raw_pass=state["raw_pass"], raw_batches=state["raw_batches"],
                      buffer=state["buffer"])


class TrainBatchesData(L.LightningDataModule):
    """A data module that trains on ``train_batches`` and validates and tests on ``data``'s loaders."""

    def __init__(self, data: L.LightningDataModule, train_batches: KeptBatches) -> None:
        super().__init__()
        self.data, self.train_batches = data, train_batches

    def setup(self, stage: str) -> None:
        self.data.setup(stage)

    def train_dataloader(self) -> KeptBatches:
        return self.train_batches

    def val_dataloader(self):
        return self.data.val_dataloader()

    def test_dataloader(self):
        return self.data.test_dataloader()

