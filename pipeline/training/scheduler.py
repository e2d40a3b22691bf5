"""The one adapter that drives a torch optimizer from a policy value.

``t`` is the number of optimizer steps already taken (0-based), kept by torch's scheduler as ``last_epoch`` and
saved in checkpoints, so a resumed run continues the policy at the right step. Lightning steps it once per
optimizer step (``interval: step``), which also makes it correct under gradient accumulation.
"""

from __future__ import annotations

from torch.optim.lr_scheduler import LRScheduler


class PolicyScheduler(LRScheduler):
    """Set every parameter group's learning rate to ``policy(t)`` before optimizer step ``t``."""

    def __init__(self, optimizer, policy, last_epoch: int = -1):
        if not callable(policy):
            raise TypeError(f"policy must be callable t -> lr, got {type(policy).__name__}")
        self.policy = policy
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> list[float]:
        lr = float(self.policy(self.last_epoch))
        return [lr for _ in self.optimizer.param_groups]
