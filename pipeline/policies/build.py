"""The one place a run's LR policy is made from its parts: the chosen policy, its warm-up, its k scale and the
stretch of its clock to the run's budget.

Order (each wraps the one before): the policy of ``+policy=`` (or FIX at the optimizer's ``lr`` without one) ->
``Warmup`` (``+warmup=``) -> ``Scaled`` (``schedule.k_scale``) -> ``Stretched`` (``schedule.horizon_steps``). The
stretch needs the run's number of optimizer steps, known once the data is loaded, so the config stage keeps a
:class:`PolicyChain` and the job calls :meth:`PolicyChain.for_budget`.
"""

from __future__ import annotations

from dataclasses import dataclass

from .compose import Scaled, Stretched, Warmup
from .lr import Policy


@dataclass(frozen=True)
class PolicyChain:
    base: Policy                          # the policy of +policy= (or FIX)
    warmup_steps: int | None = None       # optimizer steps of linear warm-up; None: no warm-up
    warmup_start_lr: float = 0.0          # learning rate at step 0 of the warm-up
    k_scale: float = 1.0                  # factor on the policy's LR (LRBench's base-LR scale test)
    horizon_steps: int | None = None      # policy steps that span the run's budget; None: no stretch

    def __post_init__(self) -> None:
        self.for_budget(self.horizon_steps or 1)  # every part's own checks, before any data exists

    def for_budget(self, total_steps: int) -> Policy:
        """The exact policy of a run of ``total_steps`` optimizer steps."""
        policy = self.base
        if self.warmup_steps is not None:
            policy = Warmup(policy, self.warmup_steps, self.warmup_start_lr)
        if self.k_scale != 1.0:
            policy = Scaled(policy, self.k_scale)
        if self.horizon_steps:
            policy = Stretched(policy, self.horizon_steps, total_steps)
        return policy
