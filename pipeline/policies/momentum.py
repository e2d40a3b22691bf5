"""Momentum policies: pure, frozen values mapping the optimizer step t to a momentum (SGD's ``momentum``, Adam's
``beta1``), the momentum counterpart of the LR policies in ``lr.py``.

:class:`PolicyScheduler <pipeline.training.scheduler.PolicyScheduler>` writes ``policy(t)`` into every parameter
group next to the learning rate; nothing here touches an optimizer.

- :class:`Demon` (Chen et al., "Demon: Improved Neural Network Training with Momentum Decay", ICASSP 2022): decays
  the total contribution of a gradient to all future updates, ``beta/(1-beta)``, linearly to 0 at the last step T.
  T is the run's number of optimizer steps, known only once the data is loaded: a Demon from the config is
  *unbound* (``total_steps=None``) and the job binds it with :func:`for_run`.
- :class:`CyclicMomentum` (Smith, "A disciplined approach to neural network hyper-parameters", 2018): a triangle
  wave that moves against a triangle LR of the same ``l``, high momentum where the LR is low.
- :class:`OneCycleMomentum`: the momentum torch's ``OneCycleLR`` cycles (``cycle_momentum=True``) against a
  one-cycle LR, to pair with :class:`OneCycle <pipeline.policies.modern.OneCycle>`; unbound like Demon.
"""

from __future__ import annotations

import dataclasses
import numbers
from dataclasses import dataclass
from typing import ClassVar, Protocol

from .lr import _lrbench_value, _number, check_step, check_steps

FIRST_MOMENTS = ("ema",)
PROBE_STEPS = 1000  # an unbound one-cycle momentum's settings are checked on a cycle of this many steps


class MomentumPolicy(Protocol):
    """What the pipeline relies on: a pure map from optimizer step to momentum, and a name for tags."""

    def __call__(self, t: int) -> float: ...

    def describe(self) -> str: ...


def _momentum(name: str, value: object, meaning: str) -> float:
    """A momentum coefficient in [0, 1): 1 would never forget a gradient, < 0 is not heavy-ball momentum."""
    x = _number(name, value, meaning)
    if not 0 <= x < 1:
        raise ValueError(f"{name} must be in [0, 1) ({meaning}), got {value}")
    return x


def _describe(policy: object, short: str) -> str:
    """LRBench-style string, e.g. ``momPolicy_DEMON+beta_init_0.9+total_steps_860+start_frac_0.0``."""
    params = [f"{f.name}_{_lrbench_value(getattr(policy, f.name))}" for f in dataclasses.fields(policy)]
    return "+".join([f"momPolicy_{short}", *params])


@dataclass(frozen=True)
class Demon:
    """Decaying momentum: ``beta(t) = beta_init * p / ((1 - beta_init) + beta_init * p)`` with ``p`` the fraction
    of the decay left, ``p = 1 - (t - t0) / (T - t0)``, ``t0 = start_frac * T``.

    Equivalently ``beta/(1-beta) = p * beta_init/(1-beta_init)``: the heavy-ball step multiplier ``1/(1-beta)``
    falls linearly from ``1/(1-beta_init)`` (10 for 0.9) to 1, so at a constant LR Demon carries an implicit linear
    decay of the effective LR down to the LR itself (notes seeds_methods.md section A.1).

    - ``beta_init``: momentum at step 0 (and until ``t0``), in [0, 1). The paper's default is 0.9.
    - ``total_steps``: T, optimizer steps; beta reaches 0 at t = T and stays there (t is capped at T: past it the
      formula turns negative). None until bound with :meth:`bound` (the job binds it to the run's steps).
    - ``start_frac``: fraction of T before the decay starts ("delaying the decaying"), in [0, 1); 0 decays from
      the first step.
    - ``first_moment``: how Adam/AdamW apply beta1. Only ``ema`` is offered: torch's Adam with ``betas[0] =
      beta(t)``, ``m = beta m + (1 - beta) g`` with bias correction ``1 - beta(t)**step``, which is what every
      third-party Demon Adam does. The paper's algorithm box transcribes an undamped ``m = g + beta m`` (``sum``)
      but still writes a bias-corrected ``m_hat`` that is undefined for that sum; it would need a custom Adam and
      the PDF has not been checked (notes section A.1), so ``sum`` is not offered. SGD's heavy-ball buffer
      (``dampening=0``) is already the paper's undamped form and ignores this field.
    """

    beta_init: float = 0.9
    total_steps: int | None = None
    start_frac: float = 0.0
    first_moment: str = "ema"
    name: ClassVar[str] = "DEMON"

    def __post_init__(self) -> None:
        object.__setattr__(self, "beta_init", _momentum("beta_init", self.beta_init, "momentum at step 0"))
        if self.total_steps is not None:
            meaning = "T, optimizer steps until momentum reaches 0; null binds it to the run's steps"
            object.__setattr__(self, "total_steps", check_steps("total_steps", self.total_steps, meaning))
        start = _number("start_frac", self.start_frac, "fraction of total_steps before the decay starts")
        if not 0 <= start < 1:
            raise ValueError(f"start_frac must be in [0, 1) (fraction of total_steps before the decay starts), "
                             f"got {self.start_frac}")
        object.__setattr__(self, "start_frac", start)
        if self.first_moment not in FIRST_MOMENTS:
            raise ValueError(
                f"first_moment must be one of {list(FIRST_MOMENTS)} (Adam's EMA first moment with beta1 = beta(t)), "
                f"got {self.first_moment!r}; the paper's undamped 'sum' form is not offered (see pipeline.policies."
                "momentum.Demon)"
            )

    def bound(self, total_steps: int) -> Demon:
        """A copy with ``T = total_steps`` (optimizer steps)."""
        return dataclasses.replace(self, total_steps=total_steps)

    def __call__(self, t: int) -> float:
        if self.total_steps is None:
            raise ValueError(
                "Demon.total_steps is unset: bind it to the run's number of optimizer steps with "
                "Demon.bound(total_steps) (the job does this) or set momentum.total_steps"
            )
        big_t = self.total_steps
        t = min(check_step(t), big_t)
        start = self.start_frac * big_t
        # Fraction of the decay still ahead: 1 until start, then linear down to 0 at T.
        p = 1.0 if t <= start else (big_t - t) / (big_t - start)
        beta = self.beta_init
        return beta * p / ((1 - beta) + beta * p)

    def describe(self) -> str:
        return _describe(self, self.name)


def _triangle_down(t: int, l: int) -> float:
    """1 at t = 0, 0 at t = l, 1 at t = 2l, linear in between: the mirror of LRBench's TRI wave."""
    phase = t % (2 * l)
    return abs(l - phase) / l


@dataclass(frozen=True)
class CyclicMomentum:
    """Cyclical momentum: ``m(t) = m0 + (m1 - m0) * (1 - TRI(t))``, a triangle between ``m1`` and ``m0``.

    Starts at the upper momentum ``m1`` at t = 0, falls linearly to the lower ``m0`` at t = l, back to ``m1`` at
    t = 2l. A triangle or triangle2 LR policy with the same ``l`` starts at its low k0 and peaks at t = l, so the
    momentum is high where the LR is low and low where it is high (Smith 2018, e.g. 0.95 -> 0.85).
    ``l`` is half a cycle in the run's own optimizer steps: ``schedule.horizon_steps`` stretches the LR policy's
    clock but not this one, so pair it with an LR policy whose ``l`` is in the same unit.
    """

    m0: float = 0.85
    m1: float = 0.95
    l: int = 2000
    name: ClassVar[str] = "CYCLIC"

    def __post_init__(self) -> None:
        m0 = _momentum("m0", self.m0, "lower momentum, at the LR's peak t = l")
        m1 = _momentum("m1", self.m1, "upper momentum, at t = 0 and t = 2l")
        if m1 < m0:
            raise ValueError(f"m1 must be >= m0 (m1 is the upper momentum), got m0={self.m0}, m1={self.m1}")
        object.__setattr__(self, "m0", m0)
        object.__setattr__(self, "m1", m1)
        object.__setattr__(self, "l", check_steps("l", self.l, "optimizer steps; half a cycle"))

    def __call__(self, t: int) -> float:
        return self.m0 + (self.m1 - self.m0) * _triangle_down(check_step(t), self.l)

    def describe(self) -> str:
        return _describe(self, self.name)


@dataclass(frozen=True)
class OneCycleMomentum:
    """The momentum of torch's ``OneCycleLR`` with ``cycle_momentum=True``, for the same arguments: from
    ``max_momentum`` down to ``base_momentum`` while a one-cycle LR rises (to step ``pct_start * total_steps - 1``),
    then back up to ``max_momentum`` while it anneals (``anneal_strategy`` as the LR's). ``phases=3`` is torch's
    ``three_phase``: back up by ``2 * pct_start * total_steps - 2``, then flat. ``total_steps=None`` (the config's
    default) is the run's optimizer steps, bound by :func:`for_run`, as the one-cycle LR's ``total_frac: 1.0``.
    Give it the LR policy's ``pct_start``, ``anneal_strategy`` and ``phases`` (conf/momentum/one_cycle.yaml does)."""

    base_momentum: float = 0.85
    max_momentum: float = 0.95
    pct_start: float = 0.3
    anneal_strategy: str = "cos"
    phases: int = 2
    total_steps: int | None = None
    name: ClassVar[str] = "ONECYCLE"

    def __post_init__(self) -> None:
        from .modern import OneCycle

        low = _momentum("base_momentum", self.base_momentum, "lowest momentum, where the LR peaks")
        high = _momentum("max_momentum", self.max_momentum, "momentum at the start and the end of the cycle")
        if high < low:
            raise ValueError(f"max_momentum must be >= base_momentum, got base_momentum={self.base_momentum}, "
                             f"max_momentum={self.max_momentum}")
        object.__setattr__(self, "base_momentum", low)
        object.__setattr__(self, "max_momentum", high)
        # The LR twin checks pct_start, anneal_strategy, phases and (once bound) that every phase has a step.
        twin = OneCycle(1.0, PROBE_STEPS if self.total_steps is None else self.total_steps, self.pct_start,
                        self.anneal_strategy, phases=self.phases)
        object.__setattr__(self, "phases", twin.phases)
        object.__setattr__(self, "pct_start", twin.pct_start)
        if self.total_steps is not None:
            object.__setattr__(self, "total_steps", twin.total_steps)

    def bound(self, total_steps: int) -> OneCycleMomentum:
        return dataclasses.replace(self, total_steps=total_steps)

    def __call__(self, t: int) -> float:
        from .modern import one_cycle_ends, one_cycle_value

        if self.total_steps is None:
            raise ValueError("total_steps is not set: bind the policy to the run first (for_run)")
        low, high = self.base_momentum, self.max_momentum
        values = [high, low, high, high] if self.phases == 3 else [high, low, high]
        ends = one_cycle_ends(self.pct_start, self.total_steps, self.phases)
        return one_cycle_value(ends, values, self.anneal_strategy, min(check_step(t), self.total_steps - 1))

    def describe(self) -> str:
        return _describe(self, self.name)


def for_run(policy: MomentumPolicy | None, total_steps: int) -> MomentumPolicy | None:
    """The momentum policy as a run of ``total_steps`` optimizer steps uses it.

    An unbound :class:`Demon` or :class:`OneCycleMomentum` gets ``T = total_steps``. One whose ``total_steps`` was
    set in the config keeps it (an override, e.g. for a run resumed with a longer budget); other policies need no
    horizon.
    """
    if isinstance(total_steps, bool) or not isinstance(total_steps, numbers.Integral) or total_steps < 1:
        raise ValueError(f"total_steps must be an int >= 1 (the run's optimizer steps), got {total_steps!r}")
    if isinstance(policy, (Demon, OneCycleMomentum)) and policy.total_steps is None:
        return policy.bound(int(total_steps))
    return policy
