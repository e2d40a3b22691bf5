"""Policies built from other policies: consecutive segments (LRBench's piecewiseLR) and a linear warm-up.

Both are frozen values like the functions in ``lr.py``: any t, any order, no state.
"""

from __future__ import annotations

import bisect
import numbers
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import ClassVar

from .lr import Policy, check_step, check_steps

_CLOCKS = ("local", "global")


def _check_policy(name: str, policy: object) -> None:
    if isinstance(policy, Mapping):
        # A node without _target_, or a built policy that Hydra (_convert_: none) stored back into a DictConfig,
        # which turns a dataclass into a dict of its fields.
        raise ValueError(
            f"{name} must be a policy (a callable t -> lr), got the mapping {dict(policy)!r}; give the node a "
            "_target_ and, under Hydra, set _convert_: all on the composite node"
        )
    if not callable(policy):
        raise ValueError(f"{name} must be a policy (a callable t -> lr), got {type(policy).__name__} {policy!r}")


@dataclass(frozen=True)
class Segment:
    """One piece of a Composite: ``policy`` runs until the absolute optimizer step ``until_steps`` (exclusive).

    The last segment of a Composite has ``until_steps=None``: it runs to the end of training.
    """

    policy: Policy
    until_steps: int | None = None

    def __post_init__(self) -> None:
        _check_policy("policy", self.policy)
        if self.until_steps is not None:
            meaning = "absolute optimizer step where the next segment starts"
            object.__setattr__(self, "until_steps", check_steps("until_steps", self.until_steps, meaning))


def _segment(i: int, item: object) -> Segment:
    """A Segment, or a dict/DictConfig ``{policy, until_steps}`` as Hydra's recursive instantiate delivers it."""
    if isinstance(item, Segment):
        return item
    if not isinstance(item, Mapping):
        raise ValueError(f"segments[{i}] must be a segment {{policy, until_steps}}, got {type(item).__name__} {item!r}")
    unknown = sorted(str(k) for k in item if k not in ("policy", "until_steps"))
    if unknown:
        raise ValueError(f"segments[{i}] has unknown keys {unknown}; a segment has only policy and until_steps")
    if "policy" not in item:
        raise ValueError(f"segments[{i}].policy is required (a conf/policy node with _target_)")
    try:
        return Segment(policy=item["policy"], until_steps=item.get("until_steps"))
    except ValueError as error:
        # Name the segment so the user can find the bad key: "segments[1].until_steps must be > 0 ...".
        raise ValueError(f"segments[{i}].{error}") from error


def _segments(value: object) -> tuple[Segment, ...]:
    if isinstance(value, (str, bytes, Mapping)) or not isinstance(value, Iterable):
        raise ValueError(f"segments must be a non-empty list of {{policy, until_steps}}, got {value!r}")
    segments = [_segment(i, item) for i, item in enumerate(value)]
    if not segments:
        raise ValueError("segments must be a non-empty list of {policy, until_steps}, got []")
    *inner, last = segments
    for i, segment in enumerate(inner):
        if segment.until_steps is None:
            raise ValueError(
                f"segments[{i}].until_steps is required for every segment but the last "
                "(absolute optimizer step where the next segment starts)"
            )
        if i > 0 and segment.until_steps <= inner[i - 1].until_steps:
            raise ValueError(
                f"segments[{i}].until_steps must be > segments[{i - 1}].until_steps={inner[i - 1].until_steps} "
                f"(absolute optimizer steps, strictly increasing), got {segment.until_steps}"
            )
    if last.until_steps is not None:
        raise ValueError(
            f"segments[{len(segments) - 1}].until_steps must be omitted for the last segment "
            f"(it runs to the end of training), got {last.until_steps}"
        )
    return tuple(segments)


@dataclass(frozen=True)
class Composite:
    """Consecutive segments, each with its own policy (LRBench's piecewiseLR, the paper's multi-policy LR).

    Segment i is active for ``until_steps[i-1] <= t < until_steps[i]`` (absolute optimizer steps; the first starts at
    0, the last runs to the end). ``clock="local"`` restarts each segment's clock at 0 where it starts, as LRBench's
    piecewiseLR does, so a SIN2 segment that starts at step 5000 sees t=0 there. ``clock="global"`` gives every
    segment the global step t (as LRBench's ChangeLROnPlateau does).

    ``segments`` accepts Segment objects or dicts/DictConfigs ``{policy: <policy>, until_steps: int | None}``.
    """

    segments: tuple[Segment, ...]
    clock: str = "local"
    lrbench_name: ClassVar[str] = "COMPOSITE"

    def __post_init__(self) -> None:
        object.__setattr__(self, "segments", _segments(self.segments))
        if self.clock not in _CLOCKS:
            raise ValueError(f"clock must be one of {list(_CLOCKS)}, got {self.clock!r}")

    @property
    def boundaries(self) -> tuple[int, ...]:
        """The absolute optimizer steps at which the next segment starts."""
        return tuple(s.until_steps for s in self.segments[:-1])

    def __call__(self, t: int) -> float:
        t = check_step(t)
        boundaries = self.boundaries
        i = bisect.bisect_right(boundaries, t)
        start = boundaries[i - 1] if i > 0 else 0
        return self.segments[i].policy(t - start if self.clock == "local" else t)

    def lrbench_string(self) -> str:
        """LRBench's form, e.g. ``lrPolicy_SIN2+k0_0.01+k1_0.06+l_1000-lrPolicy_FIX+k0_0.005-AT-5000``.

        LRBench has only the local clock; a global-clock composite gets a ``-CLOCK-global`` suffix so that its
        name differs from the local one.
        """
        text = "-".join(s.policy.lrbench_string() for s in self.segments)
        if self.boundaries:
            text += "-AT-" + "+".join(str(b) for b in self.boundaries)
        if self.clock != "local":
            text += f"-CLOCK-{self.clock}"
        return text


@dataclass(frozen=True)
class Warmup:
    """Linear warm-up in front of a policy.

    ``lr(t) = start_lr + (policy(0) - start_lr) * t / warmup_steps`` for ``t < warmup_steps``, then
    ``policy(t - warmup_steps)``: the inner policy's clock starts when warm-up ends, so its whole shape (a cycle, a
    step boundary, POLY's l) is kept and shifted by ``warmup_steps`` optimizer steps.
    """

    policy: Policy
    warmup_steps: int
    start_lr: float = 0.0
    lrbench_name: ClassVar[str] = "WARMUP"

    def __post_init__(self) -> None:
        _check_policy("policy", self.policy)
        object.__setattr__(
            self, "warmup_steps", check_steps("warmup_steps", self.warmup_steps, "optimizer steps of linear warm-up")
        )
        start_lr = self.start_lr
        if isinstance(start_lr, bool) or not isinstance(start_lr, numbers.Real) or not 0 <= start_lr < float("inf"):
            raise ValueError(f"start_lr must be a number >= 0 (learning rate at step 0), got {start_lr!r}")
        object.__setattr__(self, "start_lr", float(start_lr))

    def __call__(self, t: int) -> float:
        t = check_step(t)
        if t >= self.warmup_steps:
            return self.policy(t - self.warmup_steps)
        return self.start_lr + (self.policy(0) - self.start_lr) * t / self.warmup_steps

    def lrbench_string(self) -> str:
        """``warmup_<steps>-`` before the inner policy's string (``warmup_<steps>+start_<lr>-`` if start_lr > 0)."""
        start = f"+start_{self.start_lr}" if self.start_lr else ""
        return f"warmup_{self.warmup_steps}{start}-{self.policy.lrbench_string()}"


@dataclass(frozen=True)
class Scaled:
    """A policy with its learning rate multiplied by ``k_scale``: LRBench's base-LR scale test.

    Every LRBench function is linear in its k values (``(k1 - k0) * g(t) + k0`` or ``k0 * g(t)``), so scaling the
    LR is exactly scaling k0 and k1 by the same factor.
    """

    policy: Policy
    k_scale: float
    lrbench_name: ClassVar[str] = "SCALED"

    def __post_init__(self) -> None:
        _check_policy("policy", self.policy)
        k = self.k_scale
        if isinstance(k, bool) or not isinstance(k, numbers.Real) or not 0 < k < float("inf"):
            raise ValueError(f"k_scale must be a number > 0 (factor on the policy's k values), got {k!r}")
        object.__setattr__(self, "k_scale", float(k))

    def __call__(self, t: int) -> float:
        return self.k_scale * self.policy(t)

    def lrbench_string(self) -> str:
        return f"{self.policy.lrbench_string()}-SCALE-{self.k_scale:g}"


@dataclass(frozen=True)
class Stretched:
    """A policy whose clock is stretched so its ``horizon_steps`` fit into a run of ``total_steps``.

    ``lr(t) = policy(floor(t * horizon_steps / total_steps))``. A policy written for a 10,000-step run (every
    ``l``, boundary and per-step ``gamma`` in its units) keeps its shape in a 900-step study. Values are exactly the
    inner policy's, sampled at the stretched step.
    """

    policy: Policy
    horizon_steps: int
    total_steps: int
    lrbench_name: ClassVar[str] = "STRETCHED"

    def __post_init__(self) -> None:
        _check_policy("policy", self.policy)
        object.__setattr__(self, "horizon_steps", check_steps("horizon_steps", self.horizon_steps, "policy steps"))
        object.__setattr__(self, "total_steps", check_steps("total_steps", self.total_steps, "optimizer steps"))

    def __call__(self, t: int) -> float:
        return self.policy(check_step(t) * self.horizon_steps // self.total_steps)

    def lrbench_string(self) -> str:
        return f"{self.policy.lrbench_string()}-STRETCH-{self.horizon_steps}/{self.total_steps}"
