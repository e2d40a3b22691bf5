"""The rule that turns range-test curves into k0/k1: pure, plain numbers in and out.

Each seed's curve comes from Lightning's record of ``Tuner.lr_find``: the LR of every optimizer step of an exponential
sweep and the training loss as an exponential moving average (beta 0.98, Lightning 2.x's bias correction, checked on
2.6). :func:`from_lightning` recovers each step's own loss from it and smooths that with a centred window of 5 steps
instead: a moving average over ~50 steps lags far behind a loss that falls fast, so its lowest point comes well after
the LR where training turned unstable (on least squares: 2.5x past gradient descent's stability limit).
The rule (LRBench's use of Smith's LR range test, "Cyclical Learning Rates for Training Neural Networks", arXiv
1506.01186 section 3.3: "the optimum learning rate is usually within a factor of two of the largest one that
converges", and "set base_lr to 1/3 or 1/4 of max_lr"):

1. average the seeds' smoothed losses at each LR of the sweep (up to the shortest curve: a seed whose loss blew up
   stopped there, and every LR beyond diverges), a non-finite loss counting as infinitely bad;
2. k1 = the LR of the lowest averaged loss / ``k1_div`` (2): the lowest point is where the loss stops falling, the
   largest LR that still converges; half of it is the optimum by Smith's rule of thumb, with a margin below the edge
   (fastai's more cautious ``lr_min`` is k1_div 10);
3. k0 = k1 / ``k0_div`` (4): the low end of a cycle, where the loss starts to fall (Smith: 1/3 to 1/4 of max_lr).

The same rule on each seed alone gives the spread that is reported beside the result; Lightning's own suggestion
(the steepest descent of the smoothed loss, noisy: Lightning#1767, #14248) is reported per seed too, never used.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

# LR grids of two seeds are the same sweep when they agree to this relative tolerance.
GRID_RTOL = 1e-9
# Lightning's moving-average factor (_LRCallback's beta; Tuner.lr_find does not expose it).
SMOOTHING = 0.98
# The rule's smoothing: each step's loss averaged with this many steps on either side (a centred window has no lag).
HALF_WINDOW = 2


class RangeTestError(ValueError):
    """The curves cannot give k values; the message names the setting to change."""


@dataclass(frozen=True)
class Curve:
    seed: int
    lr: tuple[float, ...]             # the LR of each optimizer step of the sweep
    loss: tuple[float, ...]           # the smoothed training loss after that step
    steepest_lr: float | None = None  # Lightning's suggestion (steepest descent); None when it had too few points
    raw: tuple[float, ...] = ()       # each step's own training loss, where known


def centred(raw: Sequence[float], half: int = HALF_WINDOW) -> tuple[float, ...]:
    """Each value averaged with its ``half`` neighbours on either side (fewer at the ends); a non-finite value makes
    every average it is in infinite."""
    values = [_finite(v) for v in raw]
    out = []
    for i in range(len(values)):
        window = values[max(0, i - half): i + half + 1]
        out.append(sum(window) / len(window))
    return tuple(out)


def lightning_raw(smoothed: Sequence[float], beta: float = SMOOTHING, first_step: int = 1) -> tuple[float, ...]:
    """Each step's loss behind Lightning's record: it stores ``avg_t / (1 - beta**(g_t + 1))`` with ``g_t`` the
    global step after step t (``first_step + t``), so ``avg_t`` and then ``raw_t = (avg_t - beta*avg_{t-1}) /
    (1 - beta)`` follow exactly."""
    out, previous = [], 0.0
    for t, value in enumerate(smoothed):
        avg = value * (1 - beta ** (first_step + t + 1))
        out.append((avg - beta * previous) / (1 - beta))
        previous = avg
    return tuple(out)


def from_lightning(seed: int, lr: Sequence[float], lightning_loss: Sequence[float],
                   steepest_lr: float | None = None) -> Curve:
    """A seed's curve from ``lr_find``'s ``results`` (``lr``, ``loss``): each step's loss, and its centred average."""
    raw = lightning_raw([float(v) for v in lightning_loss])
    return Curve(seed, tuple(float(v) for v in lr[: len(raw)]), centred(raw), steepest_lr, raw)


@dataclass(frozen=True)
class RangeResult:
    k0: float
    k1: float
    lr_at_min: float                  # LR of the lowest seed-averaged smoothed loss
    min_loss: float                   # that loss
    lr: tuple[float, ...]             # the averaged curve: LRs ...
    mean_loss: tuple[float, ...]      # ... and the seeds' mean smoothed loss (inf where a seed had no finite loss)
    k1_per_seed: tuple[float, ...]    # the rule on each seed alone: the spread of k1
    steepest_per_seed: tuple[float | None, ...]
    warning: str | None = None        # the sweep did not bracket the minimum: which setting to change


def _finite(value: float) -> float:
    return value if math.isfinite(value) else math.inf


def _argmin(values: Sequence[float]) -> int | None:
    best = None
    for i, value in enumerate(values):
        if math.isfinite(value) and (best is None or value < values[best]):
            best = i
    return best


def k_from_curves(curves: Sequence[Curve], k1_div: float, k0_div: float, steps: int | None = None,
                  min_lr: float | None = None, max_lr: float | None = None) -> RangeResult:
    """k0/k1 of a range test from its seeds' curves (module docstring); ``steps``, ``min_lr`` and ``max_lr`` (the
    sweep's settings, when known) only word the warning. RangeTestError when no LR has a finite loss."""
    if not curves:
        raise RangeTestError("range_test.seeds: no curves to read (at least one seed)")
    if k1_div < 1 or k0_div <= 1:
        raise RangeTestError(f"range_test.k1_div must be >= 1 and range_test.k0_div > 1, got {k1_div!r} and "
                             f"{k0_div!r}")
    n = min(len(c.loss) for c in curves)
    if n == 0 or any(len(c.lr) < len(c.loss) for c in curves):
        raise RangeTestError("range_test.steps: a seed's sweep recorded no loss (is the training set empty?)")
    grid = curves[0].lr[:n]
    for c in curves[1:]:
        if any(abs(a - b) > GRID_RTOL * abs(a) for a, b in zip(grid, c.lr[:n])):
            raise RangeTestError(f"range test: seed {c.seed} swept other LRs than seed {curves[0].seed}")
    mean = tuple(sum(_finite(c.loss[i]) for c in curves) / len(curves) for i in range(n))
    best = _argmin(mean)
    if best is None:
        raise RangeTestError(f"range_test.min_lr: no LR of the sweep gave a finite loss, even the first "
                             f"({grid[0]:.3g}); lower range_test.min_lr")
    k1 = grid[best] / k1_div
    per_seed = []
    for c in curves:
        i = _argmin([_finite(v) for v in c.loss])
        per_seed.append(c.lr[i] / k1_div if i is not None else math.nan)
    warning = None
    if best == 0:
        warning = (f"the loss was lowest at the sweep's first LR ({grid[0]:.3g}): lower range_test.min_lr"
                   + (f" (now {min_lr:g})" if min_lr is not None else ""))
    elif best == n - 1 and (steps is None or n >= steps):
        warning = (f"the loss still fell at the sweep's last LR ({grid[-1]:.3g}), so k1 may be too low: raise "
                   "range_test.max_lr" + (f" (now {max_lr:g})" if max_lr is not None else "")
                   + " or range_test.steps")
    return RangeResult(k0=k1 / k0_div, k1=k1, lr_at_min=grid[best], min_loss=mean[best], lr=tuple(grid),
                       mean_loss=mean, k1_per_seed=tuple(per_seed),
                       steepest_per_seed=tuple(c.steepest_lr for c in curves), warning=warning)
