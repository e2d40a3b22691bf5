"""Any LR policy on a Lightning Trainer of your own: a callback that sets every optimizer's learning rate (and,
with a momentum policy, its momentum) before each optimizer step, from the policy's value at that step.

``t`` is ``trainer.global_step``, the optimizer steps already taken: Lightning saves it in checkpoints, so a resumed
fit continues the policy where it stopped, and under gradient accumulation every batch of one step gets the same
rate. The rule is the scheduler's (:mod:`pipeline.training.scheduler`), relative mode included::

    from pipeline.policies import Triangle2
    from pipeline.training.policy_callback import PolicyCallback

    trainer = L.Trainer(max_steps=3000, callbacks=[PolicyCallback(Triangle2(k0=0.01, k1=0.06, l=500))])
    trainer.fit(MyLightningModule(), datamodule)   # any configure_optimizers; no LR scheduler of its own
"""

from __future__ import annotations

import lightning as L

from pipeline.training.scheduler import (
    check_momentum_optimizer,
    group_rates,
    rates_at,
    relative_reference,
    set_momentum,
)


class PolicyCallback(L.Callback):
    """Set ``lr = policy(t)`` (``relative=True``: ``base_lr * policy(t) / policy(0)`` per group, the base being the
    group's lr when training starts, kept as its ``initial_lr``) and ``momentum(t)`` before optimizer step ``t``."""

    def __init__(self, policy, momentum=None, relative: bool = False):
        if not callable(policy):
            raise TypeError(f"policy must be callable t -> lr, got {type(policy).__name__}")
        if momentum is not None and not callable(momentum):
            raise TypeError(f"momentum must be callable t -> momentum, got {type(momentum).__name__}")
        if not isinstance(relative, bool):
            raise TypeError(f"relative must be True or False, got {relative!r}")
        self.policy = policy
        self.momentum = momentum
        self.reference = relative_reference(policy) if relative else None

    def on_fit_start(self, trainer, pl_module) -> None:
        for optimizer in trainer.optimizers:
            check_momentum_optimizer(optimizer, self.momentum)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        apply_policy(trainer.optimizers, self.policy, self.momentum, trainer.global_step, self.reference)


def apply_policy(optimizers, policy, momentum, t: int, reference: float | None = None) -> None:
    """Set the rates of step ``t`` on every group of every optimizer (a plain loop can call this before each step)."""
    _, beta = rates_at(policy, momentum, t)
    for optimizer in optimizers:
        # The base of relative mode: the group's lr before the policy first touched it (saved with the optimizer).
        bases = [group.setdefault("initial_lr", group["lr"]) for group in optimizer.param_groups]
        for group, lr in zip(optimizer.param_groups, group_rates(policy, t, bases, reference), strict=True):
            group["lr"] = lr
        if beta is not None:
            set_momentum(optimizer, beta)
