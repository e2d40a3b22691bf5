"""The one adapter that drives a torch optimizer from a policy value.

``t`` is the number of optimizer steps already taken (0-based), kept by torch's scheduler as ``last_epoch`` and
saved in checkpoints, so a resumed run continues the policy at the right step. Lightning steps it once per
optimizer step (``interval: step``), which also makes it correct under gradient accumulation.

An optional momentum policy (``pipeline.policies.momentum``) is applied the same way: before step ``t`` every group's
momentum, SGD's ``momentum`` or Adam's ``betas[0]`` (the keys the metrics callback logs), is ``momentum(t)``.
:func:`rates_at` is the rule itself; packed copies (``pipeline.packing``) take their rates from it too.
"""

from __future__ import annotations

from torch.optim.lr_scheduler import LRScheduler


def rates_at(policy, momentum, t: int) -> tuple[float, float | None]:
    """The learning rate and momentum for optimizer step ``t``: ``policy(t)``, and ``momentum(t)`` under a momentum
    policy; None without one (the optimizer keeps its own momentum)."""
    return float(policy(t)), None if momentum is None else float(momentum(t))


class PolicyScheduler(LRScheduler):
    """Set every parameter group's learning rate to ``policy(t)`` before optimizer step ``t``, and its momentum to
    ``momentum(t)`` when a momentum policy is given."""

    def __init__(self, optimizer, policy, last_epoch: int = -1, *, momentum=None):
        if not callable(policy):
            raise TypeError(f"policy must be callable t -> lr, got {type(policy).__name__}")
        if momentum is not None:
            if not callable(momentum):
                raise TypeError(f"momentum must be callable t -> momentum, got {type(momentum).__name__}")
            if any("betas" not in g and "momentum" not in g for g in optimizer.param_groups):
                raise ValueError(f"a momentum policy needs an optimizer with momentum ('momentum' or 'betas' in its "
                                 f"param groups); {type(optimizer).__name__} has neither")
        self.policy = policy
        self.momentum = momentum
        super().__init__(optimizer, last_epoch)

    def step(self, epoch: int | None = None) -> None:
        super().step(epoch)
        self._set_momentum()

    # Policies are values rebuilt from the config, so checkpoints keep only the step counter (and load with
    # torch's safe weights-only unpickler, which refuses arbitrary classes).
    _NOT_SAVED = ("optimizer", "policy", "momentum")

    def state_dict(self) -> dict:
        return {key: value for key, value in self.__dict__.items() if key not in self._NOT_SAVED}

    def load_state_dict(self, state_dict: dict) -> None:
        # Restores last_epoch; momentum(t) is written again so the groups match the restored t.
        self.__dict__.update({k: v for k, v in state_dict.items() if k not in self._NOT_SAVED})
        self._set_momentum()

    def _set_momentum(self) -> None:
        if self.momentum is None:
            return
        _, beta = rates_at(self.policy, self.momentum, self.last_epoch)  # policies are pure: policy(t) again is free
        for group in self.optimizer.param_groups:
            if "betas" in group:  # Adam, AdamW: only beta1; beta2 is kept
                group["betas"] = (beta, *group["betas"][1:])
            else:
                group["momentum"] = beta

    def get_lr(self) -> list[float]:
        lr, _ = rates_at(self.policy, None, self.last_epoch)
        return [lr for _ in self.optimizer.param_groups]
