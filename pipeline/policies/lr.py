"""The 13 learning-rate functions of LRBench (Wu & Liu) as values.

Every policy is a frozen dataclass whose ``__call__(t)`` maps the 0-based optimizer step ``t`` to a learning rate.
There are no counters and no hidden state, so a policy can be evaluated at any ``t`` in any order (plots, resuming,
reports). Field names and their order are LRBench's (``k0, k1, gamma, p, l``); ``l`` is always in optimizer steps and
is *half a cycle* for the cyclic functions.

The arithmetic is LRBench's code (``LRBench/lr/LRfunctions.py``), not the paper's table, with three of its bugs fixed:
NSTEP is stateless, POLY is clamped at ``t = l`` (LRBench returns complex numbers past ``l``) and inputs are validated.
"""

from __future__ import annotations

import bisect
import math
import numbers
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, fields
from typing import ClassVar, Protocol

# Units quoted in error messages, so that a user sees what a field means next to its accepted range.
_LR = "learning rate"
_LOW_LR = "lower learning rate of the cycle"
_HIGH_LR = "upper learning rate of the cycle"
_HALF_CYCLE = "optimizer steps; half a cycle"
_PER_STEP = "amplitude factor per optimizer step"


class Policy(Protocol):
    """What the rest of the pipeline relies on: a pure map from optimizer step to learning rate."""

    def __call__(self, t: int) -> float: ...

    def lrbench_string(self) -> str: ...


# ---------------------------------------------------------------------------------------------------------------
# Validation. Each helper returns the normalised value (float or int) or raises ValueError starting with the field
# name, then the accepted range, then the bad value. Hydra configs may deliver strings or bools, so types are checked.
# ---------------------------------------------------------------------------------------------------------------


def check_step(t: object) -> int:
    """Return ``t`` as an int if it is a valid 0-based optimizer step (Python or numpy int, not bool)."""
    if isinstance(t, bool) or not isinstance(t, numbers.Integral) or t < 0:
        raise ValueError(f"t must be an int >= 0 (0-based optimizer step), got {type(t).__name__} {t!r}")
    return int(t)


def _number(name: str, value: object, meaning: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"{name} must be a number ({meaning}), got {type(value).__name__} {value!r}")
    if not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number ({meaning}), got {value}")
    return float(value)


def _positive(name: str, value: object, meaning: str) -> float:
    x = _number(name, value, meaning)
    if x <= 0:
        raise ValueError(f"{name} must be > 0 ({meaning}), got {value}")
    return x


def _non_negative(name: str, value: object, meaning: str) -> float:
    x = _number(name, value, meaning)
    if x < 0:
        raise ValueError(f"{name} must be >= 0 ({meaning}), got {value}")
    return x


def _decay_factor(name: str, value: object, meaning: str) -> float:
    x = _number(name, value, meaning)
    if not 0 < x <= 1:
        raise ValueError(f"{name} must be in (0, 1] ({meaning}), got {value}")
    return x


def check_steps(name: str, value: object, meaning: str) -> int:
    """A positive whole number of optimizer steps; an integral float such as ``2e3`` is accepted as 2000."""
    x = _number(name, value, meaning)
    if not x.is_integer():
        raise ValueError(f"{name} must be a whole number of optimizer steps ({meaning}), got {value}")
    if x <= 0:
        raise ValueError(f"{name} must be > 0 ({meaning}), got {value}")
    return int(x)


def _boundaries(name: str, value: object) -> tuple[int, ...]:
    meaning = "optimizer steps at which the LR is multiplied by gamma"
    if isinstance(value, (str, bytes, Mapping)) or not isinstance(value, Iterable):
        raise ValueError(f"{name} must be a non-empty list of step boundaries ({meaning}), got {value!r}")
    steps = tuple(check_steps(f"{name}[{i}]", v, meaning) for i, v in enumerate(value))
    if not steps:
        raise ValueError(f"{name} must be a non-empty list of step boundaries ({meaning}), got []")
    if any(b <= a for a, b in zip(steps, steps[1:])):
        raise ValueError(f"{name} must be strictly increasing step boundaries, got {list(steps)}")
    return steps


def _set(policy: object, **values: object) -> None:
    """Store normalised field values on a frozen dataclass (only ever called from ``__post_init__``)."""
    for name, value in values.items():
        object.__setattr__(policy, name, value)


def _validate_cyclic(policy: _LRFunction) -> None:
    """Shared by the six cyclic functions and COS: 0 <= k0 < k1, l > 0, and gamma in (0, 1] where present."""
    k0 = _non_negative("k0", policy.k0, _LOW_LR)
    k1 = _number("k1", policy.k1, _HIGH_LR)
    if k1 <= k0:
        raise ValueError(f"k1 must be > k0 for a cyclic policy (k0={policy.k0}, k1={policy.k1})")
    _set(policy, k0=k0, k1=k1, l=check_steps("l", policy.l, _HALF_CYCLE))
    if hasattr(policy, "gamma"):
        _set(policy, gamma=_decay_factor("gamma", policy.gamma, _PER_STEP))


# ---------------------------------------------------------------------------------------------------------------
# Waves and amplitude modifiers shared by the cyclic functions. The phase is reduced modulo the period 2*l with
# integer arithmetic first: the result equals LRBench's expression but is exactly periodic and stays precise at large t.
# ---------------------------------------------------------------------------------------------------------------


def _triangle(t: int, l: int) -> float:
    """LRBench's ``(2/pi)*|asin(sin(pi*t/(2l)))|``: 0 at t=0, 1 at t=l, 0 at t=2l (piecewise linear)."""
    phase = t % (2 * l)
    return (phase if phase <= l else 2 * l - phase) / l


def _sine(t: int, l: int) -> float:
    """LRBench's ``|sin(pi*t/(2l))|``: 0 at t=0, 1 at t=l, 0 at t=2l."""
    return abs(math.sin(math.pi * (t % (2 * l)) / (2 * l)))


def _cosine(t: int, l: int) -> float:
    """LRBench's ``0.5*(1+cos(pi*t/l))``: 1 at t=0, 0 at t=l, 1 at t=2l."""
    return 0.5 * (1 + math.cos(math.pi * (t % (2 * l)) / l))


def _halved_per_cycle(t: int, l: int) -> float:
    """LRBench's ``1/2**floor(t/(2l))``; ``0.5**n`` underflows to 0 where ``2**n`` would overflow a float."""
    return 0.5 ** (t // (2 * l))


def _between(k0: float, k1: float, fraction: float) -> float:
    return (k1 - k0) * fraction + k0


# ---------------------------------------------------------------------------------------------------------------
# The 13 functions.
# ---------------------------------------------------------------------------------------------------------------


def _lrbench_value(value: object) -> str:
    # LRBench writes a list as its elements joined by '+' (trimLRparamStr), e.g. NSTEP l_5000+7500.
    if isinstance(value, tuple):
        return "+".join(str(v) for v in value)
    return str(value)


@dataclass(frozen=True)
class _LRFunction:
    """Shared behaviour: the step check on call and LRBench's string form. Subclasses implement ``_lr``."""

    lrbench_name: ClassVar[str]

    def __call__(self, t: int) -> float:
        return self._lr(check_step(t))

    def _lr(self, t: int) -> float:
        raise NotImplementedError

    def lrbench_string(self) -> str:
        """LRBench's name for this policy, e.g. ``lrPolicy_TRI2+k0_0.01+k1_0.06+l_2000`` (used as a run name)."""
        params = [f"{f.name}_{_lrbench_value(getattr(self, f.name))}" for f in fields(self)]
        return "+".join([f"lrPolicy_{self.lrbench_name}", *params])


@dataclass(frozen=True)
class Fix(_LRFunction):
    """FIX: ``lr(t) = k0``, a constant learning rate."""

    k0: float
    lrbench_name: ClassVar[str] = "FIX"

    def __post_init__(self) -> None:
        _set(self, k0=_positive("k0", self.k0, _LR))

    def _lr(self, t: int) -> float:
        return self.k0


@dataclass(frozen=True)
class Step(_LRFunction):
    """STEP: ``lr(t) = k0 * gamma**floor(t/l)``; multiply by gamma every ``l`` optimizer steps."""

    k0: float
    gamma: float
    l: int
    lrbench_name: ClassVar[str] = "STEP"

    def __post_init__(self) -> None:
        _set(
            self,
            k0=_positive("k0", self.k0, _LR),
            gamma=_decay_factor("gamma", self.gamma, "factor applied every l optimizer steps"),
            l=check_steps("l", self.l, "optimizer steps between decays"),
        )

    def _lr(self, t: int) -> float:
        return self.k0 * self.gamma ** (t // self.l)


@dataclass(frozen=True)
class NStep(_LRFunction):
    """NSTEP: ``lr(t) = k0 * gamma**i`` where i is the number of boundaries in ``l`` that are <= t.

    ``l`` is a strictly increasing list of optimizer steps, e.g. ``[5000, 7500]``: k0 before step 5000, k0*gamma from
    5000, k0*gamma**2 from 7500. Unlike LRBench's NSTEP (which counts boundaries in mutable global state, one per call)
    this is ``bisect_right(l, t)``: stateless and valid for any t in any order.
    """

    k0: float
    gamma: float
    l: tuple[int, ...]
    lrbench_name: ClassVar[str] = "NSTEP"

    def __post_init__(self) -> None:
        _set(
            self,
            k0=_positive("k0", self.k0, _LR),
            gamma=_decay_factor("gamma", self.gamma, "factor applied at each boundary in l"),
            l=_boundaries("l", self.l),
        )

    def _lr(self, t: int) -> float:
        return self.k0 * self.gamma ** bisect.bisect_right(self.l, t)


@dataclass(frozen=True)
class Exp(_LRFunction):
    """EXP: ``lr(t) = k0 * gamma**t``; gamma is per optimizer step, so it must be close to 1 (e.g. 0.99994)."""

    k0: float
    gamma: float
    lrbench_name: ClassVar[str] = "EXP"
    gamma_per_step: ClassVar[str] = "factor"  # how a budget-relative gamma_per_budget becomes gamma

    def __post_init__(self) -> None:
        _set(
            self,
            k0=_positive("k0", self.k0, _LR),
            gamma=_decay_factor("gamma", self.gamma, "factor per optimizer step"),
        )

    def _lr(self, t: int) -> float:
        return self.k0 * self.gamma**t


@dataclass(frozen=True)
class Inv(_LRFunction):
    """INV (Caffe's ``inv``): ``lr(t) = k0 * (1 + gamma*t)**(-p)``; gamma per optimizer step."""

    k0: float
    gamma: float
    p: float
    lrbench_name: ClassVar[str] = "INV"
    gamma_per_step: ClassVar[str] = "rate"  # how a budget-relative gamma_per_budget becomes gamma

    def __post_init__(self) -> None:
        _set(
            self,
            k0=_positive("k0", self.k0, _LR),
            gamma=_positive("gamma", self.gamma, "rate per optimizer step"),
            p=_positive("p", self.p, "power"),
        )

    def _lr(self, t: int) -> float:
        return self.k0 * (1 + self.gamma * t) ** (-self.p)


@dataclass(frozen=True)
class Poly(_LRFunction):
    """POLY: ``lr(t) = (k1 - k0) * (1 - min(t, l)/l)**p + k0``.

    NOTE THE SWAP, copied from LRBench's code: **k1 is the START learning rate and k0 the END learning rate** (the
    paper names them the other way round). The LR falls from k1 at t=0 to k0 at t=l (optimizer steps, usually the
    run length) and stays at k0 after that; LRBench returns complex numbers past l, this clamps.
    """

    k0: float
    k1: float
    p: float
    l: int
    lrbench_name: ClassVar[str] = "POLY"

    def __post_init__(self) -> None:
        k0 = _non_negative("k0", self.k0, "END learning rate, reached at t=l")
        k1 = _number("k1", self.k1, "START learning rate")
        if k1 <= k0:
            raise ValueError(
                f"k1 must be > k0 for POLY, whose k1 is the START LR and k0 the END LR (k0={self.k0}, k1={self.k1})"
            )
        _set(
            self,
            k0=k0,
            k1=k1,
            p=_positive("p", self.p, "power"),
            l=check_steps("l", self.l, "optimizer steps from k1 to k0"),
        )

    def _lr(self, t: int) -> float:
        return _between(self.k0, self.k1, (1 - min(t, self.l) / self.l) ** self.p)


@dataclass(frozen=True)
class Triangle(_LRFunction):
    """TRI: triangle wave ``(k1 - k0) * (2/pi)*|asin(sin(pi*t/(2l)))| + k0``.

    Starts at k0, rises linearly to k1 at t=l, back to k0 at t=2l; l is half a cycle in optimizer steps.
    """

    k0: float
    k1: float
    l: int
    lrbench_name: ClassVar[str] = "TRI"

    def __post_init__(self) -> None:
        _validate_cyclic(self)

    def _lr(self, t: int) -> float:
        return _between(self.k0, self.k1, _triangle(t, self.l))


@dataclass(frozen=True)
class Triangle2(_LRFunction):
    """TRI2: ``(k1 - k0) * TRI(t) / 2**floor(t/(2l)) + k0``; the triangle's amplitude halves every full cycle (2l)."""

    k0: float
    k1: float
    l: int
    lrbench_name: ClassVar[str] = "TRI2"

    def __post_init__(self) -> None:
        _validate_cyclic(self)

    def _lr(self, t: int) -> float:
        return _between(self.k0, self.k1, _triangle(t, self.l) * _halved_per_cycle(t, self.l))


@dataclass(frozen=True)
class TriangleExp(_LRFunction):
    """TRIEXP: ``(k1 - k0) * TRI(t) * gamma**t + k0``; gamma is per optimizer step (near 1, e.g. 0.99994)."""

    k0: float
    k1: float
    gamma: float
    l: int
    lrbench_name: ClassVar[str] = "TRIEXP"
    gamma_per_step: ClassVar[str] = "factor"  # how a budget-relative gamma_per_budget becomes gamma

    def __post_init__(self) -> None:
        _validate_cyclic(self)

    def _lr(self, t: int) -> float:
        return _between(self.k0, self.k1, _triangle(t, self.l) * self.gamma**t)


@dataclass(frozen=True)
class Sin(_LRFunction):
    """SIN: ``(k1 - k0) * |sin(pi*t/(2l))| + k0``; starts at k0, k1 at t=l, k0 at t=2l (l = half cycle, steps)."""

    k0: float
    k1: float
    l: int
    lrbench_name: ClassVar[str] = "SIN"

    def __post_init__(self) -> None:
        _validate_cyclic(self)

    def _lr(self, t: int) -> float:
        return _between(self.k0, self.k1, _sine(t, self.l))


@dataclass(frozen=True)
class Sin2(_LRFunction):
    """SIN2: ``(k1 - k0) * |sin(pi*t/(2l))| / 2**floor(t/(2l)) + k0``; amplitude halves every full cycle (2l)."""

    k0: float
    k1: float
    l: int
    lrbench_name: ClassVar[str] = "SIN2"

    def __post_init__(self) -> None:
        _validate_cyclic(self)

    def _lr(self, t: int) -> float:
        return _between(self.k0, self.k1, _sine(t, self.l) * _halved_per_cycle(t, self.l))


@dataclass(frozen=True)
class SinExp(_LRFunction):
    """SINEXP: ``(k1 - k0) * |sin(pi*t/(2l))| * gamma**t + k0``; gamma is per optimizer step (near 1)."""

    k0: float
    k1: float
    gamma: float
    l: int
    lrbench_name: ClassVar[str] = "SINEXP"
    gamma_per_step: ClassVar[str] = "factor"  # how a budget-relative gamma_per_budget becomes gamma

    def __post_init__(self) -> None:
        _validate_cyclic(self)

    def _lr(self, t: int) -> float:
        return _between(self.k0, self.k1, _sine(t, self.l) * self.gamma**t)


@dataclass(frozen=True)
class Cos(_LRFunction):
    """COS: ``(k1 - k0) * 0.5*(1 + cos(pi*t/l)) + k0``.

    Unlike TRI and SIN it STARTS AT k1 and reaches k0 at t=l. l is HALF the period in optimizer steps (LRBench's code;
    the paper's table says otherwise, issue #1). With l = run length this is a one-shot cosine anneal from k1 to k0.
    """

    k0: float
    k1: float
    l: int
    lrbench_name: ClassVar[str] = "COS"

    def __post_init__(self) -> None:
        _validate_cyclic(self)

    def _lr(self, t: int) -> float:
        return _between(self.k0, self.k1, _cosine(t, self.l))


def curve(policy: Policy, steps: int | Iterable[int]) -> list[float]:
    """The learning rate at steps ``0 .. steps-1`` for an int, else at each step of ``steps``, for plots (a long
    budget is plotted at a few thousand of its steps, not at every one)."""
    if isinstance(steps, numbers.Integral) and not isinstance(steps, bool) and steps >= 0:
        steps = range(steps)
    elif isinstance(steps, (numbers.Number, bool, str)) or not isinstance(steps, Iterable):
        raise ValueError(f"steps must be an int >= 0 (number of optimizer steps) or a list of steps, got {steps!r}")
    return [policy(t) for t in steps]
