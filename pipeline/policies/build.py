"""The one place a run's LR policy is made from its parts: the chosen policy with its clock fixed to the run's budget,
its warm-up and its k scale.

Order (each wraps the one before): the policy of ``+policy=`` (or FIX at the optimizer's ``lr`` without one) ->
``Stretched`` (``schedule.horizon_steps``) -> ``Warmup`` (``+warmup=``) -> ``Scaled`` (``schedule.k_scale``). The
run's number of optimizer steps T is known only once the data is loaded, so the config stage keeps a
:class:`PolicyChain` and the job calls :meth:`PolicyChain.for_budget`.

Budget-relative clocks. A policy's config node may give its clock as fractions of the budget instead of LRBench's
absolute optimizer steps; :func:`resolve` turns them into steps, so the policy classes only ever see steps:

- ``l_frac`` -> ``l`` (a half cycle, POLY's or COS's horizon, or NSTEP's list of boundaries);
- ``<name>_frac`` -> ``<name>_steps`` (``warmup_frac``, ``decay_frac``, ``total_frac``, a segment's ``until_frac``);
- ``gamma_per_budget`` -> a per-step ``gamma``: the factor over the whole span for EXP, TRIEXP and SINEXP
  (``gamma = gamma_per_budget ** (1 / span)``), the rate over the whole span for INV (``gamma_per_budget / span``).

A fraction is of the policy's span: the run's T minus the warm-up (the policy's clock starts when the warm-up ends),
or ``schedule.horizon_steps`` when that is set (the policy's clock then runs to it, stretched over the same steps).
An absolute value, when set (``policy.l=2000``), replaces its fraction: LRBench's form stays exact. The warm-up is
in run steps (``warmup_steps``, or ``warmup_frac`` of T) and is never stretched.
"""

from __future__ import annotations

import math
import numbers
import re
from collections.abc import Mapping
from dataclasses import dataclass, fields, is_dataclass
from typing import Any

from .compose import Scaled, Stretched, Warmup
from .lr import Policy, check_steps

FRACTION = "_frac"                # <name>_frac: a fraction of the policy's span, resolved to steps
PER_BUDGET = "_per_budget"        # gamma_per_budget: a per-step gamma given over the whole span
GAMMA_KINDS = ("factor", "rate")  # the policies' ``gamma_per_step``: how gamma_per_budget becomes gamma
# Budget the config stage checks a chain at when the run's own is not known yet (a budget in epochs): the policy
# defaults' classic 10,000-step run.
PROBE_STEPS = 10_000


def fraction_steps(key: str, value: object, span_steps: int) -> int:
    """``value`` (a fraction >= 0) of ``span_steps``, rounded to whole optimizer steps; at least 1 unless it is 0."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0 <= value < math.inf:
        raise ValueError(f"{key} must be a number >= 0 (a fraction of the policy's span of optimizer steps), "
                         f"got {value!r}")
    steps = math.floor(value * span_steps + 0.5)
    return max(steps, 1) if value > 0 else 0


def _target_fields(node: Mapping) -> tuple[type | None, set[str]]:
    """The class a node builds and its field names; (None, set()) for a node without ``_target_`` (a segment)."""
    target = node.get("_target_")
    if not isinstance(target, str):
        return None, set()
    from hydra.utils import get_object

    try:
        cls = get_object(target)
    except (ImportError, ValueError) as exc:
        raise ValueError(f"_target_ {target!r} cannot be imported: {exc}") from None
    return cls, {f.name for f in fields(cls)} if is_dataclass(cls) else set()


def _relative_keys(node: Mapping, field_names: set[str]) -> dict[str, str]:
    """The node's budget-relative keys and the absolute key each one stands for (``l_frac`` -> ``l``)."""
    keys = {}
    for key in node:
        if not isinstance(key, str) or key in field_names:  # a field of its own (e.g. Demon's start_frac) stays
            continue
        if key.endswith(FRACTION):
            stem = key[: -len(FRACTION)]
            keys[key] = "l" if stem == "l" else f"{stem}_steps"
        elif key.endswith(PER_BUDGET):
            keys[key] = key[: -len(PER_BUDGET)]
    return keys


def needs_budget(node: object) -> bool:
    """Whether a policy node has a budget-relative value in use (one whose absolute value is not set)."""
    if isinstance(node, (list, tuple)):
        return any(needs_budget(v) for v in node)
    if not isinstance(node, Mapping):
        return False
    _, names = _target_fields(node)
    in_use = any(node[k] is not None and node.get(a) is None for k, a in _relative_keys(node, names).items())
    return in_use or any(needs_budget(v) for v in node.values())


def _gamma_kind(cls: type | None, key: str) -> str:
    kind = getattr(cls, "gamma_per_step", None)
    if kind not in GAMMA_KINDS:
        name = cls.__name__ if cls else "this node"
        raise ValueError(f"{key} is only for a gamma per optimizer step (EXP, INV, TRIEXP, SINEXP); {name} has none")
    return kind


def _gamma(cls: type | None, key: str, value: object, span_steps: int) -> float:
    kind = _gamma_kind(cls, key)
    ok = not isinstance(value, bool) and isinstance(value, numbers.Real) and 0 < value < math.inf
    if kind == "factor":
        if not (ok and value <= 1):
            raise ValueError(f"{key} must be in (0, 1] (factor over the policy's whole span), got {value!r}")
        return value ** (1 / span_steps)
    if not ok:
        raise ValueError(f"{key} must be a number > 0 (rate over the policy's whole span), got {value!r}")
    return value / span_steps


def _absolute(cls: type | None, key: str, value: object, span_steps: int) -> Any:
    if key.endswith(PER_BUDGET):
        return _gamma(cls, key, value, span_steps)
    if isinstance(value, (list, tuple)):
        return [fraction_steps(f"{key}[{i}]", v, span_steps) for i, v in enumerate(value)]
    return fraction_steps(key, value, span_steps)


def resolve(node: object, span_steps: int | None, where: str = "") -> Any:
    """A copy of a policy node with every budget-relative field replaced by its absolute value for a policy clock of
    ``span_steps`` optimizer steps (None: the budget is not known; only valid where :func:`needs_budget` is False).

    Errors are ValueErrors naming the key from the node's root (``segments[0].until_frac must be ...``).
    """
    if isinstance(node, (list, tuple)):
        return [resolve(v, span_steps, f"{where}[{i}]") for i, v in enumerate(node)]
    if not isinstance(node, Mapping):
        return node
    prefix = f"{where}." if where else ""
    cls, names = _target_fields(node)
    relative = _relative_keys(node, names)
    out = {k: resolve(v, span_steps, f"{prefix}{k}") for k, v in node.items() if k not in relative}
    for key, absolute in relative.items():
        if node[key] is None:
            continue
        if key.endswith(PER_BUDGET):
            _gamma_kind(cls, f"{prefix}{key}")  # wrong for this policy even where its gamma is set
        if out.get(absolute) is not None:  # replaced by the absolute value
            continue
        if span_steps is None:
            raise ValueError(f"{prefix}{key} is a fraction of the run's budget, which is not known yet")
        out[absolute] = _absolute(cls, f"{prefix}{key}", node[key], span_steps)
    return out


def build(node: Mapping, span_steps: int | None) -> Policy:
    """The policy a config node describes, its budget-relative fields resolved for ``span_steps``; a ValueError
    names the bad key (``l must be > 0 ...``)."""
    from hydra.errors import InstantiationException
    from hydra.utils import instantiate

    resolved = resolve(node, span_steps)
    try:
        return instantiate(resolved)
    except InstantiationException as exc:
        cause = exc.__cause__ or exc
        # A constructor's ValueError starts with its field name; put the path of a nested node in front of it
        # (Hydra's full_key: segments[0].policy). Anything else (an unknown key) is about the node.
        nested = re.search(r"full_key: (\S+)", str(exc))
        if not isinstance(cause, ValueError):
            raise ValueError(f": {cause}" + (f" (in {nested.group(1)})" if nested else "")) from exc
        raise ValueError(f"{nested.group(1)}.{cause}" if nested else str(cause)) from exc


def _prefixed(key: str, make, *args) -> Any:
    """``make(*args)`` with a ValueError's message prefixed by the config node it belongs to: ``policy.l must be
    ...`` for a field's error, ``policy: ...`` for one about the whole node."""
    try:
        return make(*args)
    except ValueError as exc:
        message = str(exc)
        raise ValueError(f"{key}{message}" if message.startswith(":") else f"{key}.{message}") from exc


@dataclass(frozen=True)
class PolicyChain:
    base: Policy | Mapping                # the policy of +policy= (or FIX), or its config node if budget-relative
    warmup_steps: int | None = None       # optimizer steps of linear warm-up (replaces warmup_frac when set)
    warmup_frac: float | None = None      # warm-up as a fraction of the run's optimizer steps; both None: none
    warmup_start_lr: float = 0.0          # learning rate at step 0 of the warm-up
    k_scale: float = 1.0                  # factor on the policy's LR (LRBench's base-LR scale test)
    horizon_steps: int | None = None      # policy steps that span the run after its warm-up; None: no stretch

    def __post_init__(self) -> None:
        if self.warmup_steps is not None:
            steps = _prefixed("warmup", check_steps, "warmup_steps", self.warmup_steps, "optimizer steps of linear "
                              "warm-up")
            object.__setattr__(self, "warmup_steps", steps)
        elif self.warmup_frac is not None:
            _prefixed("warmup", fraction_steps, "warmup_frac", self.warmup_frac, PROBE_STEPS)
        if isinstance(self.base, Mapping) and not _prefixed("policy", needs_budget, self.base):
            # LRBench's absolute form: the exact policy, built once here.
            object.__setattr__(self, "base", _prefixed("policy", build, self.base, None))
        self.for_budget(PROBE_STEPS + (self.warmup_steps or 0))  # every part's own checks, before any data exists

    def warmup_for(self, total_steps: int) -> int:
        """Optimizer steps of warm-up in a run of ``total_steps`` (0: none)."""
        if self.warmup_steps is not None:
            return self.warmup_steps
        if self.warmup_frac is not None:
            return fraction_steps("warmup_frac", self.warmup_frac, total_steps)
        return 0

    def for_budget(self, total_steps: int) -> Policy:
        """The exact policy of a run of ``total_steps`` optimizer steps; ValueErrors name the config key."""
        total_steps = check_steps("total_steps", total_steps, "the run's optimizer steps")
        warmup = self.warmup_for(total_steps)
        span = total_steps - warmup  # the policy's own steps, after the warm-up
        if span < 1:
            raise ValueError(f"warmup: the warm-up ({warmup} optimizer steps) must be shorter than the run "
                             f"({total_steps} optimizer steps)")
        policy = self.base
        if isinstance(policy, Mapping):
            policy = _prefixed("policy", build, policy, self.horizon_steps or span)
        if self.horizon_steps:
            policy = _prefixed("schedule", Stretched, policy, self.horizon_steps, span)
        if warmup:
            policy = _prefixed("warmup", Warmup, policy, warmup, self.warmup_start_lr)
        if self.k_scale != 1.0:
            policy = _prefixed("schedule", Scaled, policy, self.k_scale)
        return policy
