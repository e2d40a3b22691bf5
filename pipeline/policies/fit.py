"""Does a run's policy show its shape within the run's budget? One rule for the run's ``policy_fit`` tag, its terminal
warning and the report's mark.

:func:`policy_fit` takes the exact policy a run trained under (``PolicyChain.for_budget``, or the one the report
re-creates from the run's record) and the run's optimizer steps, and answers with a verdict:

- ``flat``: a policy other than FIX whose LR moves by less than ``FLAT_RATIO`` (max/min < 1.05) over the run;
- ``partial_cycle``: a cyclic policy (TRI, TRI2, TRIEXP, SIN, SIN2, SINEXP, COS) that shows less than half a cycle
  (``l``, in the run's steps) after its warm-up;
- ``partial_decay``: a decaying policy with a horizon (POLY's ``l``, WSD's, linear decay's, one-cycle's and cosine
  with warm-up's ``total_steps``) that the run ends before;
- ``ok``: none of these. ``flat`` wins over the others.
"""

from __future__ import annotations

from dataclasses import dataclass

from .compose import Scaled, Stretched, Warmup
from .lr import Cos, Fix, Policy, Poly, Sin, Sin2, SinExp, Triangle, Triangle2, TriangleExp
from .modern import CosineWarmup, LinearDecay, OneCycle, WarmupStableDecay

FLAT_RATIO = 1.05      # max/min LR below this over a run: the policy looks constant
MAX_SAMPLES = 10_000   # steps evaluated for the LR range; longer runs are sampled evenly (first and last step kept)
CYCLIC = (Triangle, Triangle2, TriangleExp, Sin, Sin2, SinExp, Cos)
WITH_HORIZON = (WarmupStableDecay, LinearDecay, OneCycle, CosineWarmup)
VERDICTS = ("ok", "flat", "partial_cycle", "partial_decay")


@dataclass(frozen=True)
class Fit:
    verdict: str     # one of VERDICTS
    lr_min: float    # over the run's steps 0 .. total_steps - 1
    lr_max: float
    reason: str      # one line for the terminal and the report; "" when the verdict is ok


def sample_steps(total_steps: int, max_points: int = MAX_SAMPLES) -> list[int]:
    """Every step of ``0 .. total_steps - 1``, or ``max_points`` of them evenly spaced with the first and the last:
    a policy is looked at (its range, its plot) without evaluating every step of a 10M-step budget."""
    if total_steps <= max_points:
        return list(range(total_steps))
    return sorted({round(i * (total_steps - 1) / (max_points - 1)) for i in range(max_points)})


def lr_range(policy: Policy, total_steps: int) -> tuple[float, float]:
    """The lowest and highest LR at :func:`sample_steps` (a step change is seen at most one sample late)."""
    values = [float(policy(t)) for t in sample_steps(total_steps)]
    return min(values), max(values)


def _unwrap(policy: Policy) -> tuple[Policy, int, float]:
    """The base policy under the job's wrappers, its warm-up (run steps) and run steps per policy step."""
    warmup, run_per_policy_step = 0, 1.0
    while True:
        if isinstance(policy, Scaled):
            policy = policy.policy
        elif isinstance(policy, Warmup):
            warmup += policy.warmup_steps
            policy = policy.policy
        elif isinstance(policy, Stretched):
            run_per_policy_step *= policy.total_steps / policy.horizon_steps
            policy = policy.policy
        else:
            return policy, warmup, run_per_policy_step


def _horizon(base: Policy) -> tuple[str, int, str] | None:
    """(verdict if the run ends before it, the policy steps it needs, what they are) for policies with a horizon."""
    if isinstance(base, CYCLIC):
        return "partial_cycle", base.l, "half a cycle, l"
    if isinstance(base, Poly):
        return "partial_decay", base.l, "its decay, l"
    if isinstance(base, WITH_HORIZON):
        return "partial_decay", base.total_steps, "its schedule, total_steps"
    return None


def policy_fit(policy: Policy, total_steps: int) -> Fit:
    """The verdict for ``policy`` (the exact policy of a run) over a run of ``total_steps`` optimizer steps."""
    lo, hi = lr_range(policy, total_steps)
    base, warmup, scale = _unwrap(policy)
    name = getattr(base, "lrbench_name", type(base).__name__)
    where = f"in this run's {total_steps} optimizer steps"
    if not isinstance(base, Fix) and (hi == 0 or (lo > 0 and hi / lo < FLAT_RATIO)):
        ratio = f"max/min {hi / lo:.3f}" if lo > 0 else "always 0"
        return Fit("flat", lo, hi, f"policy {name} looks constant {where}: its LR only moves between {lo:.4g} and "
                   f"{hi:.4g} ({ratio} < {FLAT_RATIO}); a clock written for a longer run? Give it as a fraction of "
                   "the budget (policy.l_frac=..., README 'LR policies')")
    horizon = _horizon(base)
    if horizon is not None:
        verdict, steps, what = horizon
        needed = steps * scale
        if total_steps - warmup < needed:
            after = f", but only {total_steps - warmup} follow the warm-up" if warmup else ""
            return Fit(verdict, lo, hi, f"policy {name} cannot show its shape {where}: {what} = {needed:.0f} run "
                       f"steps{after}; give it as a fraction of the budget (README 'LR policies')")
    return Fit("ok", lo, hi, "")
