"""The training loop of a pack: every copy trains on the same batches for the same budget and is recorded as the
metrics callback records a separate run. Each copy's rates come from the scheduler's rule
(:func:`~pipeline.training.scheduler.rates_at`) and its divergence from the metrics rule
(:func:`~pipeline.training.metrics.divergence`); this module only applies them to K copies at once."""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from pipeline.packing.nets import PackedNets
from pipeline.packing.sgd import PackedSGD


@dataclass
class Copy:
    """One job of a pack while it trains: its policies, its run, and what its summary needs."""

    recorder: Any
    policy: Callable[[int], float]
    momentum: Callable[[int], float] | None
    progress: Any
    first_loss: float | None = None
    active: bool = True
    steps: int = 0
    train_s: float = 0.0
    test: dict | None = None


class Clock:
    """Training seconds: wall-clock minus the time spent evaluating."""

    def __init__(self):
        self.start, self.paused = time.perf_counter(), 0.0

    def seconds(self) -> float:
        return time.perf_counter() - self.start - self.paused

    @contextmanager
    def pause(self):
        began = time.perf_counter()
        try:
            yield
        finally:
            self.paused += time.perf_counter() - began


def evaluate(nets: PackedNets, loader, copies: list[int], num_classes: int, device, dtype) -> dict[int, dict]:
    """Evaluation metrics (:class:`EvalStats`) of the chosen copies on one split."""
    from pipeline.training.metrics import EvalStats

    stats = {k: EvalStats(num_classes) for k in copies}
    for x, y in loader:
        x, y = x.to(device=device, dtype=dtype), y.to(device)
        for logits, k in zip(nets.logits(x, copies), copies):
            stats[k].update(logits, y)
    return {k: s.compute() for k, s in stats.items()}


def step_rates(copies: list[Copy], constant_momentum: float, step: int) -> tuple[list[float], list[float]]:
    """Every copy's learning rate and momentum for optimizer ``step`` (a frozen copy's rate is 0): the scheduler's
    rule per copy, and SGD's own momentum where a copy has no momentum policy, as a torch param group keeps it."""
    from pipeline.training.scheduler import rates_at

    rates = [rates_at(c.policy, c.momentum, step) for c in copies]
    lrs = [lr if c.active else 0.0 for c, (lr, _) in zip(copies, rates)]
    return lrs, [constant_momentum if m is None else m for _, m in rates]


def record_loss(c: Copy, loss: float, step: int, samples: int, factor: float, clock: Clock) -> None:
    """Record one copy's training loss as the metrics callback does; a diverged copy is frozen and its run fails."""
    from pipeline.training.metrics import divergence, divergence_error, first_finite

    c.recorder.metric("train/loss", loss, step)
    c.progress.last_train_loss = loss
    c.progress.samples += samples
    c.first_loss = first_finite(c.first_loss, loss)
    reason = divergence(loss, c.first_loss, factor)
    if reason:
        c.active, c.steps, c.train_s = False, step + 1, clock.seconds()
        c.progress.diverged_at = step
        c.recorder.fail("diverged", divergence_error(loss, step, reason))


def train_pack(nets: PackedNets, sgd: PackedSGD, copies: list[Copy], datamodule, trainer_cfg, total_steps: int,
               device, dtype, num_classes: int) -> None:
    """Train every copy for ``total_steps`` optimizer steps on the same batches, recording as the metrics callback
    does; evaluate every ``eval_every_steps`` and at the end, then test. Leaves ``steps`` and ``train_s`` per copy."""
    loader = datamodule.train_dataloader()
    val_loader, test_loader = datamodule.val_dataloader(), datamodule.test_dataloader()
    every, factor = trainer_cfg.eval_every_steps, trainer_cfg.divergence_factor
    clock = Clock()

    def validate(step: int) -> None:
        ks = [k for k, c in enumerate(copies) if c.active and (not c.progress.evals or c.progress.evals[-1][0] != step)]
        if not ks:
            return
        seconds = clock.seconds()
        with clock.pause():
            results = evaluate(nets, val_loader, ks, num_classes, device, dtype)
            for k, values in results.items():
                copies[k].recorder.metrics({f"val/{key}": v for key, v in values.items()}, step)
                copies[k].progress.add_eval(step, seconds, values["acc"])
                copies[k].recorder.flush()

    step, epoch = 0, 0
    while step < total_steps and any(c.active for c in copies):
        loader.sampler.set_epoch(epoch)  # the data module's shuffle is a pure function of (seed, epoch)
        for x, y in loader:
            x, y = x.to(device=device, dtype=dtype), y.to(device)
            active = [c.active for c in copies]
            lrs, momenta = step_rates(copies, sgd.rule.momentum, step)
            for c, lr, m in zip(copies, lrs, momenta):
                if c.active:
                    c.recorder.metric("lr", lr, step)
                    c.recorder.metric("momentum", m, step)
            grads, losses = nets.grads_and_losses(x, y)
            sgd.step(nets.params, grads, lrs, momenta, active)
            for c, loss in zip(copies, losses.tolist()):
                if c.active:
                    record_loss(c, loss, step, len(y), factor, clock)
            step += 1
            if step % every == 0:
                validate(step)
            if step >= total_steps or not any(c.active for c in copies):
                break
        epoch += 1
    for c in copies:
        if c.active:
            c.steps, c.train_s = step, clock.seconds()
    validate(step)  # end-of-budget evaluation, unless the last scheduled one was at this step
    tested = [k for k, c in enumerate(copies) if c.active]
    if tested:
        for k, values in evaluate(nets, test_loader, tested, num_classes, device, dtype).items():
            copies[k].test = values  # recorded in the summary (summary.test_*), as a separate run's
