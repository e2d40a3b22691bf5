"""What runs are judged on: the objective (a ``val/`` metric and whether higher or lower is better), read from the
runs' ``objective_metric`` / ``objective_mode`` tags (classification's ``val/acc``, higher is better, without), its
possible values, and the check of a report target against them. Pure: pandas in, values out."""

from __future__ import annotations

import math
from dataclasses import dataclass

import pandas as pd

INF = math.inf
# The possible values of an objective metric: seed intervals are clipped to them.
METRIC_BOUNDS = {"acc": (0.0, 1.0), "acc_top5": (0.0, 1.0), "loss": (0.0, INF), "rmse": (0.0, INF),
                 "mse": (0.0, INF), "mae": (0.0, INF), "perplexity": (1.0, INF)}
# The mode of a metric whose runs did not record ``objective_mode``.
DEFAULT_MODES = {"acc": "max", "acc_top5": "max", "loss": "min", "rmse": "min", "mse": "min", "mae": "min",
                 "perplexity": "min"}

@dataclass(frozen=True)
class Objective:
    """What the runs optimise: ``val/<metric>``, to maximise or minimise. Runs without the ``objective_metric``
    and ``objective_mode`` tags are classification runs: ``acc``, ``max``."""

    metric: str = "acc"
    mode: str = "max"

    def __post_init__(self):
        if self.mode not in ("max", "min"):
            raise ValueError(f"objective_mode must be max or min, got {self.mode!r}")
        if not self.metric or "/" in self.metric:
            raise ValueError(f"objective_metric must be a metric name under val/, got {self.metric!r}")

    @property
    def key(self) -> str:
        return f"val/{self.metric}"

    @property
    def label(self) -> str:
        return f"val {self.metric}"

    @property
    def maximise(self) -> bool:
        return self.mode == "max"

    @property
    def comparator(self) -> str:
        return "≥" if self.maximise else "≤"

    @property
    def direction(self) -> str:
        return "higher is better" if self.maximise else "lower is better"

    @property
    def bounds(self) -> tuple[float, float]:
        return METRIC_BOUNDS.get(self.metric, (-INF, INF))

    def reaches(self, value: float, target: float) -> bool:
        return value >= target if self.maximise else value <= target

    def summary(self, name: str, target: float | None = None) -> str:
        """The summary key of ``name`` (``steps_to``, ``seconds_to``, ``samples_to``, ``reached``, ``best``, ``final``,
        ``late_std``, ``test``) for this objective, e.g. ``summary/steps_to_acc_0.85``, ``summary/best_val_loss``."""
        m = self.metric
        if name in ("steps_to", "seconds_to", "samples_to", "reached"):
            return f"summary/{name}_{m}_{target_label(target)}"
        return {"best": f"summary/best_val_{m}", "final": f"summary/final_val_{m}",
                "late_std": f"summary/val_{m}_last_std", "test": f"summary/test_{m}"}[name]

    def as_dict(self) -> dict:
        return {"metric": self.metric, "mode": self.mode, "key": self.key, "direction": self.direction}


CLASSIFICATION = Objective()


def _text(value) -> str:
    return value if isinstance(value, str) and value else ""


def objectives(runs: pd.DataFrame) -> pd.Series:
    """Each run's objective, from its ``objective_metric`` / ``objective_mode`` tags (classification without)."""
    metric = _column(runs, "objective_metric").map(lambda m: _text(m) or "acc")
    mode = _column(runs, "objective_mode").map(_text)
    return pd.Series([Objective(m, o or DEFAULT_MODES.get(m, "max")) for m, o in zip(metric, mode)],
                     index=runs.index, dtype=object)


def scope_objective(runs: pd.DataFrame) -> Objective:
    """The one objective of the runs; ValueError naming them when they have several (one target cannot serve)."""
    found = list(dict.fromkeys(objectives(runs))) if len(runs) else [CLASSIFICATION]
    if len(found) > 1:
        listed = ", ".join(f"{o.key} ({o.mode})" for o in found)
        raise ValueError(f"target: the runs in scope optimise different objectives ({listed}); one target cannot "
                         "serve them all: narrow the scope (parent_run_id=, experiments=)")
    return found[0]


def check_target(target: float, objective: Objective) -> None:
    """ValueError naming ``target`` when it lies outside the objective's possible values (e.g. accuracy 1.5)."""
    low, high = objective.bounds
    if not low <= target <= high or (objective.metric.startswith("acc") and target == 0):
        span = f"({low:g}, {high:g}]" if objective.metric.startswith("acc") else f"[{low:g}, {high:g}]"
        raise ValueError(f"target must be a value of {objective.key} in {span} (the runs' objective, "
                         f"{objective.direction}), got {target!r}")


def _column(runs: pd.DataFrame, name: str) -> pd.Series:
    return runs[name] if name in runs else pd.Series([None] * len(runs), index=runs.index, dtype=object)


def target_label(target: float) -> str:
    """The suffix of the ``summary/*_<metric>_{T}`` keys: ``{T:g}`` as the training stage writes it."""
    return f"{target:g}"
