"""Pure metric computations: the end-of-run summary and the progress it is made from.

A run is judged on its task's objective (:class:`~pipeline.tasks.base.Objective`: a metric, ``max`` or ``min``,
targets in the metric's units); for classification that is validation accuracy, and the summary keys are those from
before tasks existed (``summary/steps_to_acc_0.8``, ``summary/best_val_acc``, ...). The evaluation statistics live
with their task (``pipeline/tasks/``); :class:`EvalStats` and :data:`EVAL_KEYS` are classification's, re-exported.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from pipeline.tasks.base import Objective
from pipeline.tasks.classification import EVAL_KEYS, EvalStats

__all__ = ["EVAL_KEYS", "EvalStats", "RunProgress", "divergence", "divergence_error", "first_finite", "summarize"]


@dataclass
class RunProgress:
    """What the metrics callback has seen of a run, enough to write its summary. ``metric`` and ``mode`` are the
    objective's (validation accuracy, higher is better, unless the task says otherwise)."""

    targets: tuple[float, ...]
    evals: list[tuple[int, float, float]] = field(default_factory=list)  # (step, train seconds, objective value)
    reached: dict[float, tuple[int, float]] = field(default_factory=dict)  # target -> (step, train seconds)
    best_value: float | None = None  # the objective's best validation value so far; None before the first
    best_step: int = -1
    last_train_loss: float = math.nan
    diverged_at: int | None = None
    samples: int = 0  # training samples the model has trained on so far (all processes)
    reached_samples: dict[float, int] = field(default_factory=dict)  # target -> samples trained on by then
    metric: str = "acc"
    mode: str = "max"

    @classmethod
    def for_objective(cls, objective: Objective) -> RunProgress:
        return cls(targets=tuple(sorted(objective.targets)), metric=objective.metric, mode=objective.mode)

    @property
    def objective(self) -> Objective:
        return Objective(self.metric, self.mode, self.targets)

    def add_eval(self, step: int, seconds: float, value: float) -> None:
        objective = self.objective
        self.evals.append((step, seconds, value))
        if self.best_value is None or objective.better(value, self.best_value):
            self.best_value, self.best_step = value, step
        for target in self.targets:
            if target not in self.reached and objective.reached(value, target):
                self.reached[target] = (step, seconds)
                self.reached_samples[target] = self.samples


def first_finite(first_loss: float | None, loss: float) -> float | None:
    """The loss :func:`divergence` measures against once ``loss`` is seen: the run's first finite training loss."""
    return loss if first_loss is None and math.isfinite(loss) else first_loss


def divergence(loss: float, first_loss: float | None, factor: float) -> str | None:
    """Why a training loss means the run diverged (non-finite, or above ``factor`` x the first finite loss), or
    None. The rule of separate runs (the metrics callback) and of packed copies alike."""
    if not math.isfinite(loss):
        return "non-finite"
    if first_loss is not None and loss > factor * first_loss:
        return f"above {factor:g}x the first loss"
    return None


def divergence_error(loss: float, step: int, reason: str) -> str:
    """The ``error`` a diverged run is recorded FAILED with."""
    return f"training loss {loss:.4g} at step {step} is {reason}"


# How many of the last evaluations the "late fluctuation" (LRBench's variance) is measured over.
LAST_EVALS = 5


def summarize(progress: RunProgress, steps: int, train_s: float, test: dict[str, float] | None) -> dict[str, float]:
    """The ``summary/*`` metrics of a run, named for its objective's metric ``m`` (``acc`` for classification):
    ``best_val_<m>``, ``final_val_<m>``, ``steps_to_<m>_<target>``, ...; a target never reached has no
    ``steps_to``/``seconds_to``/``samples_to`` entry."""
    m = progress.metric
    out: dict[str, float] = {
        "summary/steps": float(steps),
        "summary/samples": float(progress.samples),
        "summary/train_s": train_s,
        "summary/diverged": 1.0 if progress.diverged_at is not None else 0.0,
        "summary/final_train_loss": progress.last_train_loss,
    }
    if progress.diverged_at is not None:
        out["summary/diverged_step"] = float(progress.diverged_at)
    if progress.evals:
        values = [value for _, _, value in progress.evals]
        last = values[-LAST_EVALS:]
        mean_last = sum(last) / len(last)
        out[f"summary/best_val_{m}"] = progress.best_value
        out[f"summary/best_val_{m}_step"] = float(progress.best_step)
        out[f"summary/final_val_{m}"] = values[-1]
        out[f"summary/val_{m}_last_std"] = math.sqrt(sum((a - mean_last) ** 2 for a in last) / len(last))
        # Area under the objective-vs-step curve, normalised by the span: rewards reaching a good value early.
        if len(progress.evals) > 1:
            pts = progress.evals
            area = sum((s1 - s0) * (a0 + a1) / 2 for (s0, _, a0), (s1, _, a1) in zip(pts, pts[1:]))
            out[f"summary/val_{m}_auc"] = area / max(pts[-1][0] - pts[0][0], 1)
    for target in progress.targets:
        out[f"summary/reached_{m}_{target:g}"] = 1.0 if target in progress.reached else 0.0
        if target in progress.reached:
            step, seconds = progress.reached[target]
            out[f"summary/steps_to_{m}_{target:g}"] = float(step)
            out[f"summary/seconds_to_{m}_{target:g}"] = seconds
            if target in progress.reached_samples:
                out[f"summary/samples_to_{m}_{target:g}"] = float(progress.reached_samples[target])
    if test:
        for key, value in test.items():
            out[f"summary/test_{key}"] = value
        if not math.isnan(progress.last_train_loss) and "loss" in test:
            # LRBench's robustness proxy: final training loss minus test loss.
            out["summary/loss_gap"] = progress.last_train_loss - test["loss"]
    return out
