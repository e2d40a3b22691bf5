"""The metrics callback: every optimizer step's ``lr``, ``momentum`` and ``train/loss``, every evaluation's
``val/*``, and the bookkeeping for ``summary/*``, judged on the task's objective. The final test values are not
metrics: the job records them in the summary (params ``summary.test_*`` and the summary table).

Step ``t`` of every series is the 0-based optimizer step: ``lr`` at ``t`` is the rate the optimizer used for step
``t`` (read just before the step), ``train/loss`` at ``t`` the mean loss of the batches that step consumed.
Evaluation metrics are logged at the number of optimizer steps done when they were measured. Values go to the
recorder's buffer; it writes them in batches. Divergence (a non-finite loss, or a loss above ``divergence_factor``
times the first one) stops training at once and marks the run failed.

Evaluation values come from the module's ``last_eval`` (the pipeline's module sets it) or, for a LightningModule of
your own, from what it logged with ``self.log("val/<metric>", ...)`` (``trainer.callback_metrics``).
"""

from __future__ import annotations

import dataclasses
import time

import lightning as L

from pipeline.tasks.base import Objective
from pipeline.training.metrics import RunProgress, divergence, divergence_error, first_finite


def momentum_of(param_group: dict) -> float | None:
    """SGD's ``momentum`` or Adam's ``beta1``; None for optimizers without momentum."""
    if "betas" in param_group:
        return float(param_group["betas"][0])
    if "momentum" in param_group:
        return float(param_group["momentum"])
    return None


def batch_size_of(batch) -> int:
    """Samples in a training batch: ``(x, y)`` (or a longer tuple, or a dict) of tensors with the samples first."""
    first = next(iter(batch.values())) if isinstance(batch, dict) else batch[1] if len(batch) == 2 else batch[0]
    return len(first)


def evaluation(pl_module, trainer, prefix: str) -> dict[str, float] | None:
    """The values of the evaluation that just ended: the pipeline module's ``last_eval``; for a module of the user's
    own, the ``<prefix>/*`` metrics it logged, which are then also its ``last_eval`` (the job reads the test values
    from there)."""
    from pipeline.training.module import PolicyModule

    if isinstance(pl_module, PolicyModule):
        return pl_module.last_eval
    logged = {key.removeprefix(f"{prefix}/"): float(value) for key, value in trainer.callback_metrics.items()
              if key.startswith(f"{prefix}/")}
    pl_module.last_eval = logged or None
    return pl_module.last_eval


class MetricsCallback(L.Callback):
    def __init__(self, recorder, objective: Objective, divergence_factor: float = 10.0):
        if divergence_factor <= 1:
            raise ValueError(f"divergence_factor must be > 1, got {divergence_factor}")
        if not isinstance(objective, Objective):
            raise TypeError(f"objective must be a pipeline.tasks.Objective, got {type(objective).__name__}")
        self.recorder = recorder
        self.objective = objective
        self.divergence_factor = divergence_factor
        self.progress = RunProgress.for_objective(objective)
        self._loss_sum = 0.0
        self._loss_count = 0
        self._first_loss: float | None = None
        self._last_global_step = 0
        self._fit_start = 0.0
        self._eval_seconds = 0.0
        self._eval_start = 0.0
        self.train_seconds = 0.0

    # -- checkpointed state, so a resumed run's summary covers the whole run ------------------------------------
    def state_dict(self) -> dict:
        return {
            "progress": dataclasses.asdict(self.progress),
            "first_loss": self._first_loss,
            "train_seconds": self._train_seconds() if self._fit_start else self.train_seconds,
            # Values the store does not hold yet (buffered until the next evaluation, queued, or the store is down):
            # kept with the checkpoint and sent after a resume, so a kill -9 after a checkpoint loses none of them.
            "unsent": self.recorder.unsent(),
        }

    def load_state_dict(self, state: dict) -> None:
        progress = dict(state["progress"])
        progress["targets"] = tuple(progress["targets"])
        progress["evals"] = [tuple(e) for e in progress["evals"]]
        progress["reached"] = {float(k): tuple(v) for k, v in progress["reached"].items()}
        if "best_acc" in progress:  # a checkpoint written before tasks existed (its best was an accuracy, -1: none)
            best = progress.pop("best_acc")
            progress["best_value"] = None if best < 0 else best
        self.progress = RunProgress(**progress)
        self._first_loss = state["first_loss"]
        self.train_seconds = state["train_seconds"]
        self.recorder.requeue(state.get("unsent", []))

    # -- timing: seconds count training only, not evaluation ----------------------------------------------
    def on_fit_start(self, trainer, pl_module):
        self._fit_start = time.perf_counter() - self.train_seconds
        self._last_global_step = trainer.global_step

    def _train_seconds(self) -> float:
        return time.perf_counter() - self._fit_start - self._eval_seconds

    def on_validation_start(self, trainer, pl_module):
        self._eval_start = time.perf_counter()

    # -- per optimizer step --------------------------------------------------------------------------------
    def on_before_optimizer_step(self, trainer, pl_module, optimizer):
        step = trainer.global_step
        group = optimizer.param_groups[0]
        self.recorder.metric("lr", group["lr"], step)
        momentum = momentum_of(group)
        if momentum is not None:
            self.recorder.metric("momentum", momentum, step)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        self._loss_sum += float(loss.detach())
        self._loss_count += 1
        self.progress.samples += batch_size_of(batch) * trainer.world_size
        # global_step advances when an optimizer step consumed the accumulated batches; until then, keep summing.
        if trainer.global_step != self._last_global_step:
            self._last_global_step = trainer.global_step
            step = trainer.global_step - 1
            mean = self._loss_sum / self._loss_count
            self._loss_sum, self._loss_count = 0.0, 0
            self.recorder.metric("train/loss", mean, step)
            self.progress.last_train_loss = mean
            if trainer.progress_bar_callback is not None:  # shown next to the bar's steps and it/s
                lr = trainer.optimizers[0].param_groups[0]["lr"]
                pl_module.log_dict({"loss": mean, "lr": lr}, prog_bar=True, logger=False, on_step=True)
            self._check_divergence(trainer, mean, step)

    def _check_divergence(self, trainer, loss: float, step: int) -> None:
        self._first_loss = first_finite(self._first_loss, loss)
        reason = divergence(loss, self._first_loss, self.divergence_factor)
        diverged = reason is not None
        if trainer.world_size > 1:  # every rank stops together, or the others would wait forever in the next step
            diverged = trainer.strategy.reduce_boolean_decision(diverged, all=False)
        if diverged:
            self.progress.diverged_at = step
            reason = reason or f"above {self.divergence_factor:g}x the first loss"  # another rank's loss diverged
            self.recorder.fail("diverged", divergence_error(loss, step, reason))
            trainer.should_stop = True

    # -- evaluation ----------------------------------------------------------------------------------------
    def on_validation_end(self, trainer, pl_module):
        self._eval_seconds += time.perf_counter() - self._eval_start
        values = evaluation(pl_module, trainer, "val")
        if trainer.sanity_checking or values is None:
            return
        step = trainer.global_step
        if trainer.state.fn == "fit":
            self.train_seconds = self._train_seconds()
        seconds = self.train_seconds  # after fit (the end-of-budget evaluation), the training clock has stopped
        if self.progress.evals and self.progress.evals[-1][0] == step:
            return  # the end-of-training evaluation may repeat the last scheduled one
        metric = self.objective.metric
        if metric not in values:
            raise ValueError(f"task.objective.metric: val/{metric} was never logged; the module logged "
                           f"{', '.join('val/' + k for k in sorted(values))}")
        self.recorder.metrics({f"val/{k}": v for k, v in values.items()}, step)
        self.progress.add_eval(step, seconds, values[metric])
        self.recorder.flush()

    def on_fit_end(self, trainer, pl_module):
        self.train_seconds = self._train_seconds()

    def on_test_end(self, trainer, pl_module):
        # Not logged as test/* metrics: six single-point charts came before lr on the run's MLflow page. The job
        # reads the values from last_eval into the summary (summary.test_*).
        evaluation(pl_module, trainer, "test")
