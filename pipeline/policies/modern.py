"""Schedules in common use today, as values like LRBench's functions: warmup-stable-decay, linear decay (to zero),
one-cycle and cosine with linear warm-up.

Every step count here (``warmup_steps``, ``decay_steps``, ``total_steps``) is absolute, in optimizer steps; the
configs in ``conf/policy`` give them as fractions of the run's budget (``*_frac``), which
:mod:`pipeline.policies.build` resolves once the budget is known. Each class follows the published formula named in
its docstring (``notes/schedules_today.md``); ``tests/test_modern_policies.py`` checks them against it, and one-cycle
against torch's ``OneCycleLR`` stepped in order.

Warm-ups start at 0 and reach the peak at ``t = warmup_steps`` (HF's ``lr * t / W``), so with ``warmup_steps = 0``
the first step already runs at the peak.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

from .lr import _LRFunction, _non_negative, _number, _positive, _set, check_steps

DECAY_SHAPES = ("linear", "cosine", "1-sqrt")
ANNEAL_STRATEGIES = ("cos", "linear")
ONE_CYCLE_PHASES = (2, 3)


def _steps_or_zero(name: str, value: object, meaning: str) -> int:
    """A whole number of optimizer steps >= 0 (a warm-up may be absent)."""
    if _number(name, value, meaning) == 0:
        return 0
    return check_steps(name, value, meaning)


def _end_lr(policy: object, peak_name: str) -> float:
    peak = getattr(policy, peak_name)
    end = _non_negative("end_lr", policy.end_lr, "learning rate at the end of the decay")
    if end > peak:
        raise ValueError(f"end_lr must be <= {peak_name} (the decay ends below its peak), got end_lr={end}, "
                         f"{peak_name}={peak}")
    return end


def _ramp(t: int, warmup_steps: int, peak: float) -> float:
    """Linear warm-up: 0 at t = 0, ``peak`` at t = warmup_steps."""
    return peak * t / warmup_steps


def _progress(t: int, start: int, steps: int) -> float:
    """Fraction s in [0, 1] of a phase of ``steps`` optimizer steps that starts at ``start``; 1 after it."""
    return min((t - start) / steps, 1.0)


def _decay(shape: str, peak: float, end: float, s: float) -> float:
    """From ``peak`` at s = 0 to ``end`` at s = 1 (Hägele et al.'s cooldown shapes)."""
    if shape == "linear":
        factor = 1.0 - s
    elif shape == "cosine":
        factor = 0.5 * (1.0 + math.cos(math.pi * s))
    else:  # 1-sqrt
        factor = 1.0 - math.sqrt(s)
    return end + (peak - end) * factor


@dataclass(frozen=True)
class WarmupStableDecay(_LRFunction):
    """WSD, warmup-stable-decay (MiniCPM, arXiv 2404.06395; HF ``get_wsd_schedule``; cooldown shapes: Hägele et al.,
    NeurIPS'24, arXiv 2405.18392).

    1. warm-up, ``t < warmup_steps``: linear from 0 to ``peak_lr``;
    2. stable, until ``total_steps - decay_steps``: ``peak_lr``;
    3. decay over the last ``decay_steps``, s = progress through it: ``linear`` end + (peak - end)(1 - s), ``cosine``
       end + (peak - end)·½(1 + cos πs), ``1-sqrt`` end + (peak - end)(1 - √s); ``end_lr`` from ``total_steps`` on.

    HF's warm-up starts at ``min_lr_ratio * peak``; this one starts at 0 (the same for ``end_lr = 0``).
    """

    peak_lr: float
    total_steps: int
    decay_steps: int
    warmup_steps: int = 0
    end_lr: float = 0.0
    decay_shape: str = "1-sqrt"
    lrbench_name: ClassVar[str] = "WSD"

    def __post_init__(self) -> None:
        _set(
            self,
            peak_lr=_positive("peak_lr", self.peak_lr, "learning rate of the stable phase"),
            total_steps=check_steps("total_steps", self.total_steps, "optimizer steps until the decay ends"),
            decay_steps=check_steps("decay_steps", self.decay_steps, "optimizer steps of the final decay"),
            warmup_steps=_steps_or_zero("warmup_steps", self.warmup_steps, "optimizer steps of linear warm-up"),
        )
        _set(self, end_lr=_end_lr(self, "peak_lr"))
        if self.warmup_steps + self.decay_steps > self.total_steps:
            raise ValueError(f"warmup_steps + decay_steps must be <= total_steps={self.total_steps} (optimizer steps), "
                             f"got {self.warmup_steps} + {self.decay_steps}")
        if self.decay_shape not in DECAY_SHAPES:
            raise ValueError(f"decay_shape must be one of {list(DECAY_SHAPES)}, got {self.decay_shape!r}")

    def _lr(self, t: int) -> float:
        if t < self.warmup_steps:  # 1) warm-up
            return _ramp(t, self.warmup_steps, self.peak_lr)
        decay_start = self.total_steps - self.decay_steps
        if t < decay_start:  # 2) stable
            return self.peak_lr
        s = _progress(t, decay_start, self.decay_steps)  # 3) decay, then end_lr
        return _decay(self.decay_shape, self.peak_lr, self.end_lr, s)


@dataclass(frozen=True)
class _WarmupThenDecay(_LRFunction):
    """Shared by linear decay and cosine with warm-up: a linear warm-up, then one ``shape`` of decay to the end."""

    peak_lr: float
    total_steps: int
    warmup_steps: int = 0
    end_lr: float = 0.0
    shape: ClassVar[str]  # a DECAY_SHAPES name

    def __post_init__(self) -> None:
        _set(
            self,
            peak_lr=_positive("peak_lr", self.peak_lr, "learning rate where the decay starts"),
            total_steps=check_steps("total_steps", self.total_steps, "optimizer steps until the decay ends"),
            warmup_steps=_steps_or_zero("warmup_steps", self.warmup_steps, "optimizer steps of linear warm-up"),
        )
        _set(self, end_lr=_end_lr(self, "peak_lr"))
        if self.warmup_steps >= self.total_steps:
            raise ValueError(f"warmup_steps must be < total_steps={self.total_steps} (the decay needs at least one "
                             f"optimizer step), got {self.warmup_steps}")

    def _lr(self, t: int) -> float:
        if t < self.warmup_steps:  # 1) warm-up
            return _ramp(t, self.warmup_steps, self.peak_lr)
        s = _progress(t, self.warmup_steps, self.total_steps - self.warmup_steps)  # 2) decay, then end_lr
        return _decay(self.shape, self.peak_lr, self.end_lr, s)


@dataclass(frozen=True)
class LinearDecay(_WarmupThenDecay):
    """Linear decay to zero, or to ``end_lr`` (Bergsma et al., ICLR'25, arXiv 2502.15938; HF
    ``get_linear_schedule_with_warmup``).

    1. warm-up, ``t < warmup_steps``: linear from 0 to ``peak_lr``;
    2. decay: end + (peak - end)(1 - s), s = (t - warmup_steps) / (total_steps - warmup_steps); ``end_lr`` from
       ``total_steps`` on.
    """

    shape: ClassVar[str] = "linear"
    lrbench_name: ClassVar[str] = "LINDECAY"


@dataclass(frozen=True)
class CosineWarmup(_WarmupThenDecay):
    """Cosine with linear warm-up (HF ``get_cosine_schedule_with_warmup``; timm ``CosineLRScheduler``).

    1. warm-up, ``t < warmup_steps``: linear from 0 to ``peak_lr``;
    2. cosine: end + (peak - end)·½(1 + cos πs), s = (t - warmup_steps) / (total_steps - warmup_steps); ``end_lr``
       from ``total_steps`` on (HF's cosine would rise again after it).
    """

    shape: ClassVar[str] = "cosine"
    lrbench_name: ClassVar[str] = "COSWARMUP"


def _anneal(strategy: str, start: float, end: float, pct: float) -> float:
    """torch ``OneCycleLR``'s ``_annealing_cos`` / ``_annealing_linear``, with the same order of float operations."""
    if strategy == "cos":
        return end + (start - end) / 2.0 * (math.cos(math.pi * pct) + 1)
    return (end - start) * pct + start


def one_cycle_ends(pct_start: float, total_steps: int, phases: int) -> list[float]:
    """torch ``OneCycleLR``'s phase end steps, in torch's arithmetic: the rise ends at ``pct_start * T - 1``; with 3
    phases the fall back ends at ``2 * pct_start * T - 2``; the last phase ends at ``T - 1``."""
    rise_end = float(pct_start * total_steps) - 1
    if phases == 3:
        return [rise_end, float(2 * pct_start * total_steps) - 2, total_steps - 1]
    return [rise_end, total_steps - 1]


def one_cycle_value(ends: list[float], values: list[float], strategy: str, t: int) -> float:
    """A one-cycle schedule at step ``t`` (at most the last end): phase i anneals from ``values[i]`` to
    ``values[i + 1]`` by step ``ends[i]``; torch takes the first phase not yet passed. The LR and the momentum
    (:class:`pipeline.policies.momentum.OneCycleMomentum`) of ``OneCycleLR`` are both this."""
    i = next(i for i, end in enumerate(ends) if t <= end)
    start = ends[i - 1] if i else 0.0
    return _anneal(strategy, values[i], values[i + 1], (t - start) / (ends[i] - start))


@dataclass(frozen=True)
class OneCycle(_LRFunction):
    """One-cycle (Smith & Topin, arXiv 1708.07120), the values of torch's ``OneCycleLR`` for the same arguments.

    Starts at ``max_lr / div_factor``, rises to ``max_lr`` by step ``pct_start * total_steps - 1``, then anneals
    (``anneal_strategy`` ``cos`` or ``linear``) to ``max_lr / div_factor / final_div_factor`` at ``total_steps - 1``
    and stays there (torch refuses to step past ``total_steps``). ``phases=3`` is torch's ``three_phase=True``: back
    down to the start LR by ``2 * pct_start * total_steps - 2``, then to the minimum. torch also cycles momentum
    against the LR; here that is the momentum policy :class:`~pipeline.policies.momentum.OneCycleMomentum`.
    """

    max_lr: float
    total_steps: int
    pct_start: float = 0.3
    anneal_strategy: str = "cos"
    div_factor: float = 25.0
    final_div_factor: float = 1e4
    phases: int = 2
    lrbench_name: ClassVar[str] = "ONECYCLE"

    def __post_init__(self) -> None:
        _set(
            self,
            max_lr=_positive("max_lr", self.max_lr, "peak learning rate"),
            total_steps=check_steps("total_steps", self.total_steps, "optimizer steps of the cycle"),
            pct_start=_number("pct_start", self.pct_start, "fraction of the cycle spent rising"),
            div_factor=_positive("div_factor", self.div_factor, "start LR = max_lr / div_factor"),
            final_div_factor=_positive("final_div_factor", self.final_div_factor,
                                       "final LR = start LR / final_div_factor"),
        )
        if not 0 < self.pct_start < 1:
            raise ValueError(f"pct_start must be in (0, 1) (fraction of the cycle spent rising), got {self.pct_start}")
        if self.anneal_strategy not in ANNEAL_STRATEGIES:
            raise ValueError(f"anneal_strategy must be one of {list(ANNEAL_STRATEGIES)}, got {self.anneal_strategy!r}")
        if isinstance(self.phases, bool) or self.phases not in ONE_CYCLE_PHASES:
            raise ValueError(f"phases must be one of {list(ONE_CYCLE_PHASES)} (3 = torch's three_phase), "
                             f"got {self.phases!r}")
        _set(self, phases=int(self.phases))
        ends = one_cycle_ends(self.pct_start, self.total_steps, self.phases)
        if any(end <= start for start, end in zip([0.0, *ends[:-1]], ends, strict=True)):
            raise ValueError(f"pct_start * total_steps must be > 1 and every phase at least one step long (phases end "
                             f"at optimizer steps {ends}), got pct_start={self.pct_start}, "
                             f"total_steps={self.total_steps}")

    def _lr(self, t: int) -> float:
        initial = self.max_lr / self.div_factor
        final = initial / self.final_div_factor
        values = [initial, self.max_lr, initial, final] if self.phases == 3 else [initial, self.max_lr, final]
        ends = one_cycle_ends(self.pct_start, self.total_steps, self.phases)
        return one_cycle_value(ends, values, self.anneal_strategy, min(t, self.total_steps - 1))
