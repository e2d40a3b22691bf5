"""A rung score fair to schedules that decay late: what a run would reach if its schedule ended at the rung.

From the run's current weights and optimizer state, a branch trains ``steps`` more optimizer steps with the LR taken
linearly from the policy's LR at the rung to zero (WSD's cooldown, driven by the pipeline's own LR adapter), is
evaluated with the module's own evaluation path, and is then discarded: the module's weights, buffers, train/eval
mode and the random number generators are exactly as before. Why: README, "Pruned studies".
"""

from __future__ import annotations

import copy
import itertools
import math
from collections.abc import Callable, Iterable
from contextlib import nullcontext
from dataclasses import dataclass

import torch

from pipeline.policies import Poly
from pipeline.training.scheduler import PolicyScheduler


@dataclass(frozen=True)
class Cooldown:
    """What a cooldown branch did and reached."""

    steps: int                 # optimizer steps the branch trained (not part of the run)
    start_lr: float            # the policy's LR at the rung, where the branch's linear decay starts
    lrs: tuple[float, ...]     # the LR of each branch step: start_lr * (1 - t / steps)
    raw: dict[str, float]      # the evaluation of the run's weights as they are
    cooled: dict[str, float]   # the evaluation of the branch's weights after the cooldown


def cooldown_steps(steps_so_far: int, cooldown_frac: float) -> int:
    """The branch's length: ``cooldown_frac`` of the optimizer steps trained so far, at least one step."""
    if steps_so_far < 1:
        raise ValueError(f"steps_so_far must be >= 1 (optimizer steps trained before the cooldown), got {steps_so_far}")
    if not 0 < cooldown_frac <= 1:
        raise ValueError(f"cooldown_frac must be in (0, 1] (fraction of the steps so far), got {cooldown_frac}")
    return max(1, round(cooldown_frac * steps_so_far))


def linear_to_zero(start_lr: float, steps: int):
    """The cooldown policy ``t -> start_lr * (1 - t / steps)``, 0 from ``t = steps`` on: LRBench's POLY with p = 1
    (k1 is its start LR, k0 its end LR); a policy whose LR is already 0 stays at 0."""
    from pipeline.policies import Fix

    return Poly(k0=0.0, k1=start_lr, p=1.0, l=steps) if start_lr > 0 else Fix(k0=0.0)


def evaluate(module, batches: Iterable) -> dict[str, float]:
    """The module's validation pass over ``batches`` (its own sums and metrics), in eval mode without gradients."""
    was_training = module.training
    module.eval()
    module.on_validation_epoch_start()
    with torch.no_grad():
        for i, batch in enumerate(batches):
            module.validation_step(batch, i)
    module.on_validation_epoch_end()
    module.train(was_training)
    return dict(module.last_eval)


def cooldown(module, optimizer, train_batches: Iterable, val_batches: Callable[[], Iterable], start_lr: float,
             steps: int, accumulate: int = 1, precision: Callable = nullcontext) -> Cooldown:
    """Score the module's weights as they are (``raw``) and after a cooldown branch (``cooled``); discard the branch.

    ``optimizer`` is the run's optimizer: the branch starts from a copy of its state (momentum buffers, Adam's
    moments) and leaves it untouched. ``train_batches`` yields the batches the branch trains on, ``accumulate`` per
    optimizer step; ``val_batches()`` the validation batches, on the module's device. ``precision`` is the run's
    autocast context (Lightning's ``precision_plugin.forward_context``).
    """
    if steps < 1:
        raise ValueError(f"steps must be >= 1 (optimizer steps of the cooldown), got {steps}")
    if not math.isfinite(start_lr) or start_lr < 0:
        raise ValueError(f"start_lr must be a finite learning rate >= 0, got {start_lr}")
    params = list(module.parameters())
    kept = {"state": copy.deepcopy(module.state_dict()), "training": module.training,
            "grads": [None if p.grad is None else p.grad.clone() for p in params],
            "last_eval": module.last_eval, "last_sample_losses": module.last_sample_losses}
    device = params[0].device
    try:
        with precision():
            raw = evaluate(module, val_batches())
        # The branch's own random draws (dropout, ...) must not shift the run's: the generators are restored after.
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            branch = module.optimizer_factory(module.parameters())
            branch.load_state_dict(copy.deepcopy(optimizer.state_dict()))
            scheduler = PolicyScheduler(branch, linear_to_zero(start_lr, steps))
            lrs = _train(module, branch, scheduler, train_batches, steps, accumulate, precision)
            with precision():
                cooled = evaluate(module, val_batches())
    finally:
        module.load_state_dict(kept["state"])
        for param, grad in zip(params, kept["grads"], strict=True):
            param.grad = grad
        module.train(kept["training"])
        module.last_eval, module.last_sample_losses = kept["last_eval"], kept["last_sample_losses"]
    return Cooldown(steps=steps, start_lr=float(start_lr), lrs=tuple(lrs), raw=raw, cooled=cooled)


def _train(module, optimizer, scheduler, batches: Iterable, steps: int, accumulate: int, precision) -> list[float]:
    """``steps`` optimizer steps of the module's own training step, ``accumulate`` batches each; the LRs used."""
    module.train()
    lrs: list[float] = []
    batches = iter(batches)
    for _ in range(steps):
        optimizer.zero_grad(set_to_none=True)
        group = list(itertools.islice(batches, accumulate))
        if len(group) < accumulate:
            raise ValueError(f"the cooldown ran out of training batches after {len(lrs)} of {steps} steps")
        for i, batch in enumerate(group):
            with precision():
                loss = module.training_step(batch, i)
            (loss / accumulate).backward()
        lrs.append(float(optimizer.param_groups[0]["lr"]))
        optimizer.step()
        scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    return lrs
