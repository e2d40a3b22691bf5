"""How a split held in memory becomes training batches: one indexing op per batch, in an order that is a pure
function of (seed, epoch), resumable mid-epoch.

Data order: the validation split is a permutation seeded by ``split_seed`` (fixed in the configs, so every job seed
and every policy is validated on the same samples); the training order of epoch ``e`` is a permutation seeded by
``(seed, e)`` (:class:`EpochShuffleSampler`), and the configs set ``seed`` to the job's seed. Lightning calls
``sampler.set_epoch(e)`` at the start of every epoch, including the first epoch after resuming from a checkpoint, so
a resumed run sees the same order for the same epoch as an uninterrupted one; :class:`ResumableLoader` then skips
the batches of that epoch already trained on.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Sampler

from pipeline.arguments import check_int
from pipeline.training.budget import batches_per_epoch, steps_per_epoch

# Independent random streams: each derived seed is keyed by (user seed, stream, ...). AutoAssist's keep/skip draws
# use stream 3 (pipeline/methods/autoassist/).
SPLIT_STREAM = 0
ORDER_STREAM = 1
SYNTHETIC_STREAM = 2  # keyed by `gen_seed`, not `seed`


def derive_seed(*keys: int) -> int:
    """A well-mixed 64-bit seed from non-negative integer keys (numpy's SeedSequence), for independent streams."""
    return int(np.random.SeedSequence(list(keys)).generate_state(1, dtype=np.uint64)[0])


class TensorBatchDataset(Dataset):
    """Rows ``index`` of in-memory tensors ``x`` and ``y``; a whole batch is fetched with one indexing op."""

    def __init__(self, x: Tensor, y: Tensor, index: Tensor) -> None:
        self.x, self.y, self.index = x, y, index

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, i: int) -> tuple[Tensor, Tensor]:
        row = self.index[i]
        return self.x[row], self.y[row]

    def __getitems__(self, indices: Sequence[int]) -> tuple[Tensor, Tensor]:
        # DataLoader calls this with a whole batch of positions when it exists (torch >= 2.1).
        rows = self.index[torch.as_tensor(indices, dtype=torch.long)]
        return self.x[rows], self.y[rows]


def keep_batch(batch: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor]:
    """Pass-through ``collate_fn``: ``__getitems__`` already returns the stacked batch."""
    return batch


class EpochShuffleSampler(Sampler[int]):
    """Random order of ``range(n)`` that is a pure function of ``(seed, epoch)``, optionally one rank's shard of it.

    ``set_epoch`` (called by Lightning at every epoch start, like ``DistributedSampler``'s) selects the epoch; a
    plain PyTorch loop must call it too, or every epoch repeats epoch 0's order.

    Under DDP (``world`` processes) rank ``r`` takes positions ``r, r + world, ...`` of the same order, cut to
    ``n // world`` so every rank runs the same number of steps. With a per-rank batch of ``B``, global step ``b``
    then trains on exactly the samples ``order[b*B*world : (b+1)*B*world]``: the batch a single process with batch
    ``B*world`` would see, so a DDP run is the same optimisation as that single-process run.
    """

    def __init__(self, n: int, seed: int, rank: int = 0, world: int = 1) -> None:
        check_int("n", n, 1)
        check_int("seed", seed, 0)
        check_int("world", world, 1)
        check_int("rank", rank, 0, world - 1)
        self.n, self.seed, self.epoch, self.rank, self.world = n, seed, 0, rank, world

    def set_epoch(self, epoch: int) -> None:
        check_int("epoch", epoch, 0)
        self.epoch = epoch

    def order(self, epoch: int) -> Tensor:
        """The permutation used in `epoch` (all ranks)."""
        generator = torch.Generator().manual_seed(derive_seed(self.seed, ORDER_STREAM, epoch))
        return torch.randperm(self.n, generator=generator)

    def __iter__(self) -> Iterator[int]:
        return iter(self.order(self.epoch)[self.rank :: self.world][: len(self)].tolist())

    def __len__(self) -> int:
        return self.n // self.world


def batches_done(global_step: int, epoch: int, num_samples: int, batch_size: int, world_size: int = 1,
                 accumulate: int = 1) -> int:
    """Batches of ``epoch`` one process has trained on when the run stands at optimizer step ``global_step``.

    Non-zero only when a run resumed mid-epoch: the restored global step is past the steps of the earlier epochs.
    Steps and batches per epoch follow the one rule in :mod:`pipeline.training.budget`.
    """
    per_epoch = steps_per_epoch(num_samples, batch_size, world_size, accumulate)
    done = (global_step - epoch * per_epoch) * accumulate
    return min(max(done, 0), batches_per_epoch(num_samples, batch_size, world_size))


class ResumableLoader(DataLoader):
    """A train loader that continues a resumed epoch where it stopped instead of restarting it.

    ``position()`` says how many batches of the current epoch were already trained on (see :func:`batches_done`);
    that many batches of the epoch's fixed order are skipped. With the sampler's order a pure function of
    (seed, epoch), a run killed mid-epoch and resumed from a checkpoint sees exactly the batches an uninterrupted run
    would.
    """

    def __init__(self, *args, position: Callable[[], int] | None = None, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.position = position

    def __iter__(self):
        return self._batches()

    # Lightning treats loaders with these methods as resumable (and stops warning that results will differ). The
    # position needs no saved state: it follows from the restored global step.
    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass

    def _batches(self):
        # A generator: nothing runs until the first batch is asked for, which is after Lightning has set the
        # sampler's epoch and restored the trainer's step, so the skip reads the right epoch and position.
        iterator = super().__iter__()
        for _ in range(self.position() if self.position else 0):
            next(iterator)
        yield from iterator
