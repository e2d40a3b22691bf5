"""How many batches and optimizer steps one training epoch has: the one rule every part of a run uses.

Each process trains on its own shard of every epoch's order (``num_samples // world_size`` samples, see
``EpochShuffleSampler``); the last batch of a shard may be partial, and Lightning steps the optimizer on a partial
accumulation at the end of an epoch, hence the ceilings.
"""

from __future__ import annotations

import math


def batches_per_epoch(num_samples: int, batch_size: int, world_size: int = 1) -> int:
    """Batches one process trains on in an epoch (at least 1)."""
    return max(math.ceil((num_samples // world_size) / batch_size), 1)


def steps_per_epoch(num_samples: int, batch_size: int, world_size: int = 1, accumulate: int = 1) -> int:
    """Optimizer steps in an epoch: its batches, ``accumulate`` at a time (a partial group still steps)."""
    return math.ceil(batches_per_epoch(num_samples, batch_size, world_size) / accumulate)


def total_steps(max_steps: int, max_epochs: int, per_epoch: int) -> int:
    """The run's budget in optimizer steps: ``max_steps`` when set (> 0), else ``max_epochs`` epochs."""
    return max_steps if max_steps > 0 else max_epochs * per_epoch
