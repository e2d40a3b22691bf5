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


def relative_reference(policy) -> float:
    """``policy(0)``, which relative mode divides by; ValueError unless it is a positive, finite rate."""
    import math

    first = float(policy(0))
    if not math.isfinite(first) or first <= 0:
        raise ValueError(f"relative=True scales each group's base lr by policy(t) / policy(0), but policy(0) is "
                         f"{first:g}; use a policy that starts above 0 (e.g. a warm-up with start_lr > 0)")
    return first


def group_rates(policy, t: int, base_lrs, reference: float | None) -> list[float]:
    """Each group's learning rate at step ``t``: ``policy(t)``, or ``base_lr * policy(t) / reference`` in relative
    mode (``reference`` is ``policy(0)``; None: absolute)."""
    lr, _ = rates_at(policy, None, t)
    return [lr if reference is None else base * lr / reference for base in base_lrs]


def set_momentum(optimizer, beta: float) -> None:
    """SGD's ``momentum`` or Adam's ``betas[0]`` (beta2 kept) of every group."""
    for group in optimizer.param_groups:
        if "betas" in group:
            group["betas"] = (beta, *group["betas"][1:])
        else:
            group["momentum"] = beta


def check_momentum_optimizer(optimizer, momentum) -> None:
    if momentum is None:
        return
    if not callable(momentum):
        raise TypeError(f"momentum must be callable t -> momentum, got {type(momentum).__name__}")
    if any("betas" not in g and "momentum" not in g for g in optimizer.param_groups):
        raise ValueError(f"a momentum policy needs an optimizer with momentum ('momentum' or 'betas' in its "
                         f"param groups); {type(optimizer).__name__} has neither")


def rates_at(policy, momentum, t: int) -> tuple[float, float | None]:
    """The learning rate and momentum for optimizer step ``t``: ``policy(t)``, and ``momentum(t)`` under a momentum
    policy; None without one (the optimizer keeps its own momentum)."""
    return float(policy(t)), None if momentum is None else float(momentum(t))


class PolicyScheduler(LRScheduler):
    """Set every parameter group's learning rate to ``policy(t)`` before optimizer step ``t`` (with ``relative``,
    ``base_lr * policy(t) / policy(0)``: see the module docstring), and its momentum to ``momentum(t)`` when a
    momentum policy is given.

    In a loop of your own, call ``scheduler.step()`` after every ``optimizer.step()``::

        scheduler = PolicyScheduler(optimizer, Triangle2(k0=0.01, k1=0.06, l=2000))
        for x, y in batches:
            loss_fn(model(x), y).backward()
            optimizer.step(); optimizer.zero_grad(); scheduler.step()
    """

    def __init__(self, optimizer, policy, last_epoch: int = -1, *, momentum=None, relative: bool = False):
        if not callable(policy):
            raise TypeError(f"policy must be callable t -> lr, got {type(policy).__name__}")
        check_momentum_optimizer(optimizer, momentum)
        if not isinstance(relative, bool):
            raise TypeError(f"relative must be True or False, got {relative!r}")
        self.policy = policy
        self.momentum = momentum
        self.reference = relative_reference(policy) if relative else None
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
        set_momentum(self.optimizer, beta)

    def get_lr(self) -> list[float]:
        return group_rates(self.policy, self.last_epoch, self.base_lrs, self.reference)
