"""Regression: mean squared error on float targets; RMSE, MAE and R² (coefficient of determination).

The model's output has the targets' shape (``[batch, k]`` for k values per sample; ``[batch, 1]`` or ``[batch]``
for one). Every metric is over all target values pooled: for one value per sample, the usual RMSE, MAE and R²
(1 - SSE / SST, SST the sum of squared deviations from the split's mean target), in the targets' units.
"""

from __future__ import annotations

import math

import torch

from pipeline.tasks.base import Metric, Task, floating, shape


def align(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """The output in the targets' shape: ``[batch, 1]`` against ``[batch]`` targets (or the reverse) is one value per
    sample; any other mismatch is an error."""
    if output.shape == target.shape:
        return output
    if output.shape == (*target.shape, 1):
        return output.squeeze(-1)
    if target.shape == (*output.shape, 1):
        return output.unsqueeze(-1)
    raise ValueError(f"model: task=regression needs an output of the targets' shape ({shape(target)}; [batch, 1] "
                     f"for [batch] targets); the model gives {shape(output)}")


class RegressionStats:
    """Sums of squared and absolute errors and of the targets, for RMSE, MAE and R² over a whole split."""

    _N, _SSE, _SAE, _SY, _SYY = range(5)  # values (target elements), then the sums

    def __init__(self) -> None:
        self.state = torch.zeros(5, dtype=torch.float64)

    def reset(self) -> None:
        self.state.zero_()

    @torch.no_grad()
    def update(self, output: torch.Tensor, target: torch.Tensor) -> None:
        y = target.detach().double().cpu()
        error = align(output.detach(), target).double().cpu() - y
        s = self.state
        s[self._N] += y.numel()
        s[self._SSE] += (error * error).sum()
        s[self._SAE] += error.abs().sum()
        s[self._SY] += y.sum()
        s[self._SYY] += (y * y).sum()

    def compute(self) -> dict[str, float]:
        n, sse, sae, sy, syy = (v.item() for v in self.state)
        if n == 0:
            raise ValueError("no evaluation samples were seen")
        sst = syy - sy * sy / n
        mse = sse / n
        return {"loss": mse, "rmse": math.sqrt(mse), "mae": sae / n,
                "r2": 1.0 - sse / sst if sst > 0 else math.nan}


class Regression(Task):
    """Float targets, one or more values per sample; mean squared error."""

    name = "regression"
    metrics = (
        Metric("loss", "a mean squared error", 0.0, low_open=True, better="min"),
        Metric("rmse", "an RMSE (targets' units)", 0.0, low_open=True, better="min"),
        Metric("mae", "a mean absolute error (targets' units)", 0.0, low_open=True, better="min"),
        Metric("r2", "an R²", high=1.0, better="max"),
    )

    def loss(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        error = align(output, target) - target.to(output.dtype)
        return (error * error).reshape(len(target), -1).mean(dim=1)

    def stats(self, output_size: int) -> RegressionStats:
        return RegressionStats()

    def check_batch(self, output: torch.Tensor, target: torch.Tensor, output_size: int | None) -> None:
        if not floating(target):
            raise ValueError(f"dataset: task=regression needs float targets; the data gives targets {shape(target)}"
                             " (class labels? use task=classification)")
        if not floating(output):
            raise ValueError(f"model: task=regression needs a float output; the model gives {shape(output)}")
        align(output, target)
