"""The metrics callback: every optimizer step's ``lr``, ``momentum`` and ``train/loss``, every evaluation's
``val/*``, the final ``test/*``, and the bookkeeping for ``summary/*``.

Step ``t`` of every series is the 0-based optimizer step: ``lr`` at ``t`` is the rate the optimizer used for step
``t`` (read just before the step), ``train/loss`` at ``t`` the mean loss of the batches that step consumed.
Evaluation metrics are logged at the number of optimizer steps done when they were measured. Values go to the
recorder's buffer; it writes them in batches. Divergence (a non-finite loss, or a loss above ``divergence_factor``
times the first one) stops training at once and marks the run failed.
"""

from __future__ import annotations

import dataclasses
import time

import lightning as L

from pipeline.training.metrics import RunProgress, divergence, divergence_error, first_finite


def momentum_of(param_group: dict) -> float | None:
    """SGD's ``momentum`` or Adam's ``beta1``; None for optimizers without momentum."""
    if "betas" in param_group:
        return float(param_group["betas"][0])
    if "momentum" in param_group:
        return float(param_group["momentum"])
    return None


class MetricsCallback(L.Callback):
    def __init__(self, recorder, targets=(), divergence_factor: float = 10.0):
        if divergence_factor <= 1:
            raise ValueError(f"divergence_factor must be > 1, got {divergence_factor}")
        self.recorder = recorder
        self.divergence_factor = divergence_factor
        self.progress = RunProgress(targets=tuple(sorted(targets)))
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
            # Values the store has not taken yet (it is down): kept with the checkpoint, sent after a resume.
            "unsent": self.recorder.unsent(),
        }

    def on_save_checkpoint(self, trainer, pl_module, checkpoint) -> None:
        # A checkpoint at step S lets a re-run continue from S: every value of the steps before S must be in the
        # store by then, or a kill -9 after the checkpoint would lose them for good.
        self.recorder.flush()

    def load_state_dict(self, state: dict) -> None:
        progress = dict(state["progress"])
        progress["targets"] = tuple(progress["targets"])
        progress["evals"] = [tuple(e) for e in progress["evals"]]
        progress["reached"] = {float(k): tuple(v) for k, v in progress["reached"].items()}
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
        self.progress.samples += len(batch[1]) * trainer.world_size  # (x, y): y holds one label per sample
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
        if trainer.sanity_checking or pl_module.last_eval is None:
            return
        step = trainer.global_step
        if trainer.state.fn == "fit":
            self.train_seconds = self._train_seconds()
        seconds = self.train_seconds  # after fit (the end-of-budget evaluation), the training clock has stopped
        if self.progress.evals and self.progress.evals[-1][0] == step:
            return  # the end-of-training evaluation may repeat the last scheduled one
        values = pl_module.last_eval
        self.recorder.metrics({f"val/{k}": v for k, v in values.items()}, step)
        self.progress.add_eval(step, seconds, values["acc"])
        self.recorder.flush()

    def on_fit_end(self, trainer, pl_module):
        self.train_seconds = self._train_seconds()

    def on_test_end(self, trainer, pl_module):
        if pl_module.last_eval is not None:
            self.recorder.metrics({f"test/{k}": v for k, v in pl_module.last_eval.items()}, trainer.global_step)
