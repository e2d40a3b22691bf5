"""What every task is made of: the metrics it logs (with the range a target may take), the objective a run is judged
on, and the :class:`Task` base (loss, evaluation statistics, the check that model output and data targets fit).

A task's evaluation statistics are running sums in one float64 tensor (``state``), so a whole split is scored
without keeping its outputs and DDP reduces them with one all-reduce, as :class:`~pipeline.tasks.classification
.EvalStats` does.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol

import torch

MODES = ("max", "min")


@dataclass(frozen=True)
class Metric:
    """One evaluation metric, logged as ``val/<name>`` and ``test/<name>``; the bounds are those a *target* may take
    (``acc`` targets lie in (0, 1]: a target of 0 is reached by any run)."""

    name: str
    noun: str                      # "an accuracy": for messages
    low: float = -math.inf
    high: float = math.inf
    low_open: bool = False
    high_open: bool = False
    better: str | None = None      # max | min | None (no direction: e.g. a confidence spread)

    def accepts(self, value: object) -> bool:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        return ok and (value > self.low if self.low_open else value >= self.low) and (
            value < self.high if self.high_open else value <= self.high)

    def accepted(self) -> str:
        """``an accuracy in (0, 1]``, ``an RMSE in (0, inf)``."""
        low = "-inf" if self.low == -math.inf else f"{self.low:g}"
        high = "inf" if self.high == math.inf else f"{self.high:g}"
        return (f"{self.noun} in {'(' if self.low_open or self.low == -math.inf else '['}{low}, {high}"
                f"{')' if self.high_open or self.high == math.inf else ']'}")


@dataclass(frozen=True)
class Objective:
    """What a run is judged on: a metric of its task, whether higher (``max``) or lower (``min``) is better, and
    targets in the metric's units whose first-reach step, seconds and samples the summary records."""

    metric: str = "acc"
    mode: str = "max"
    targets: tuple[float, ...] = ()

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"mode must be max or min, got {self.mode!r}")

    def better(self, value: float, than: float) -> bool:
        return value > than if self.mode == "max" else value < than

    def reached(self, value: float, target: float) -> bool:
        return value >= target if self.mode == "max" else value <= target

    @property
    def worst(self) -> float:
        """A value every real evaluation beats (the best before any evaluation)."""
        return -math.inf if self.mode == "max" else math.inf


class Stats(Protocol):
    """Running evaluation sums of a task (see the module docstring)."""

    state: torch.Tensor  # float64; DDP sums it over the processes

    def reset(self) -> None: ...

    def update(self, output: torch.Tensor, target: torch.Tensor) -> None: ...

    def compute(self) -> dict[str, float]: ...


def shape(t: torch.Tensor) -> str:
    """``[2, 10] float32``: a tensor's shape and dtype for messages."""
    return f"[{', '.join(str(d) for d in t.shape)}] {str(t.dtype).removeprefix('torch.')}"


class Task:
    """The loss, the evaluation metrics and what a model's output must look like for one kind of problem.

    Subclasses set ``name`` and ``metrics`` and implement :meth:`loss`, :meth:`stats` and :meth:`check_batch`. A task
    holds no state: the job builds one from ``conf/task/<name>.yaml`` and every run of the job shares it.
    """

    name: str = "task"
    metrics: tuple[Metric, ...] = ()

    @property
    def eval_keys(self) -> tuple[str, ...]:
        """What every evaluation logs, as ``val/<key>`` and ``test/<key>``."""
        return tuple(m.name for m in self.metrics)

    def metric(self, name: str) -> Metric:
        for m in self.metrics:
            if m.name == name:
                return m
        raise KeyError(name)

    def loss(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """The per-sample training loss, shape ``[batch]``; training minimises its mean."""
        raise NotImplementedError

    def stats(self, output_size: int) -> Stats:
        """Empty evaluation sums for a model with ``output_size`` outputs (classes, values, vocabulary)."""
        raise NotImplementedError

    def check_batch(self, output: torch.Tensor, target: torch.Tensor, output_size: int | None) -> None:
        """Raise ``ValueError`` starting ``dataset:`` (targets of the wrong kind) or ``model:`` (an output that does
        not fit them), saying what is accepted."""
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


def floating(t: torch.Tensor) -> bool:
    return t.is_floating_point()


def integer(t: torch.Tensor) -> bool:
    return not t.is_floating_point() and not t.is_complex() and t.dtype != torch.bool
