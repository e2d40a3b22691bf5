"""A pruned study's rung inside one job (``+search=rung``, set by ``hydra/sweeper=halving``): where training stops,
and what the job leaves there: a checkpoint to continue from, the rung's scores in its run, and the run still open.

The policy keeps the run's whole budget for its clock (``training.total_steps``); only Lightning's ``max_steps`` is
the rung's stop. The settings are left out of the run key (``identity.VOLATILE_KEYS``), so every rung of a job
continues the same MLflow run from ``checkpoints/<key>/last.ckpt``.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from pipeline.arguments import check_choice, check_number

SCORES = ("cooldown", "raw")
# The validation metric a rung is scored by (higher is better) and the one the study reports to Optuna.
SCORE_KEY = "acc"


@dataclass(frozen=True)
class RungSettings:
    """How far a pruned study trains this job now, and how it scores it there."""

    rung_frac: float = 1.0        # stop at this fraction of the run's budget (optimizer steps); 1.0 = the whole run
    score: str = "cooldown"       # cooldown: val metric after a short LR-to-zero branch; raw: the val metric as it is
    cooldown_frac: float = 0.1    # the branch's length, as a fraction of the optimizer steps trained so far

    def __post_init__(self) -> None:
        check_number("rung_frac", self.rung_frac, 0.0, 1.0, low_open=True)
        check_choice("score", self.score, SCORES)
        check_number("cooldown_frac", self.cooldown_frac, 0.0, 1.0, low_open=True)

    @classmethod
    def from_mapping(cls, node: Mapping) -> RungSettings:
        """The settings of a ``search`` config node; unknown keys are a ValueError naming the known ones."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(node) - known)
        if unknown:
            raise ValueError(f"{unknown[0]} is not a rung setting (search has {', '.join(sorted(known))})")
        return cls(**node)

    def stop_step(self, total_steps: int) -> int | None:
        """The optimizer step this rung stops the run at, or None when it trains the whole budget."""
        stop = max(1, round(self.rung_frac * total_steps))
        return None if stop >= total_steps else stop


def stopping_at(job, stop: int | None, checkpoint: Path):
    """The job with Lightning's ``max_steps`` at the rung's stop (its policy keeps the whole budget) and a callback
    that saves ``checkpoint`` there."""
    if stop is None:
        return job
    trainer = dataclasses.replace(job.trainer, node={**job.trainer.node, "max_steps": stop})
    return dataclasses.replace(job, trainer=trainer,
                               callbacks=(*job.callbacks, functools.partial(_save_at, stop, checkpoint)))


def _save_at(stop: int, checkpoint: Path, recorder=None):
    import lightning as L

    class SaveAtStop(L.Callback):
        """Save the checkpoint the next rung continues from at optimizer step ``stop``, inside the training loop
        (after the step's evaluation, if one is due): a checkpoint saved once fit has ended marks the epoch as done,
        and a run resumed from it would skip the rest of that epoch's batches."""

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            if trainer.global_step == stop:
                trainer.save_checkpoint(checkpoint)

        def on_validation_end(self, trainer, pl_module):
            if trainer.state.fn == "fit" and trainer.global_step == stop:
                trainer.save_checkpoint(checkpoint)

    return SaveAtStop()


def rung_keys() -> list[str]:
    """The metrics a rung logs at its step: each evaluation key raw and after the cooldown, and the branch's length."""
    from pipeline.training.metrics import EVAL_KEYS

    return [f"rung/{kind}_{key}" for kind in ("raw", "cooldown") for key in EVAL_KEYS] + ["rung/cooldown_steps"]


def upcoming_batches(datamodule, global_step: int, accumulate: int = 1):
    """The training batches the run would take next, from step ``global_step`` on: the rest of this epoch's fixed
    order, then the next epochs' (one process; a pruned study's jobs train on one device)."""
    from pipeline.training.budget import steps_per_epoch
    from pipeline.training.data.batching import batches_done

    n, batch_size = len(datamodule.train_set), datamodule.batch_size
    epoch = global_step // steps_per_epoch(n, batch_size, 1, accumulate)
    skip = batches_done(global_step, epoch, n, batch_size, 1, accumulate)
    while True:
        loader = datamodule.train_dataloader()
        loader.position = None  # the skip is done here, for this epoch only
        loader.sampler.set_epoch(epoch)
        yield from itertools.islice(loader, skip, None)
        skip, epoch = 0, epoch + 1


def end_rung(settings: RungSettings, trainer, training, recorder) -> float:
    """At the rung's stop (its checkpoint saved by :func:`stopping_at`'s callback): log the rung's scores at this
    step (the raw values, and the cooldown's when the study scores by it) and leave the run open; return the score."""
    from pipeline.search.cooldown import cooldown, cooldown_steps, evaluate

    module, step = training.module, trainer.global_step
    device = trainer.strategy.root_device
    module.to(device)  # Lightning moves the module back to the CPU when fit ends

    def val_batches():
        return ([t.to(device) for t in batch] for batch in training.datamodule.val_dataloader())

    # A job re-run at a rung it already scored (the study resumed) scores again but logs nothing twice.
    recorder.resume_from_store(rung_keys())
    precision = trainer.precision_plugin.forward_context
    if settings.score == "raw":
        with precision():
            values = {f"rung/raw_{k}": v for k, v in evaluate(module, val_batches()).items()}
    else:
        accumulate = trainer.accumulate_grad_batches
        train = ([t.to(device) for t in batch] for batch in upcoming_batches(training.datamodule, step, accumulate))
        result = cooldown(module, trainer.optimizers[0], train, val_batches, training.policy(step),
                          cooldown_steps(step, settings.cooldown_frac), accumulate, precision)
        values = {**{f"rung/raw_{k}": v for k, v in result.raw.items()},
                  **{f"rung/cooldown_{k}": v for k, v in result.cooled.items()},
                  "rung/cooldown_steps": result.steps}
    recorder.metrics(values, step)
    recorder.keep_open()
    return float(values[f"rung/{settings.score}_{SCORE_KEY}"])
