"""AutoAssist's maths: the acceptance rule and the assistant, an online logistic regression on pooled images."""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

from pipeline.arguments import check_int, check_number


def keep_probability(p: Tensor | float, base_prob: float) -> Tensor | float:
    """Probability that a sample the assistant scores ``p`` (in [0, 1]) is kept: at least ``base_prob``, 1 at p = 1.

    The paper draws c ~ U(0, 1) and keeps when c < base_prob, else when (c - base_prob) / (1 - base_prob) < p: the
    same probability, with one draw.
    """
    check_number("base_prob", base_prob, 0.0, 1.0)
    return base_prob + (1.0 - base_prob) * p


class AssistantStep(NamedTuple):
    """What one update saw, measured before the update: accuracy, share labelled informative, the loss threshold."""

    accuracy: float
    informative_frac: float
    threshold: float


class Assistant:
    """Online logistic regression ``p(informative | x, y) = sigmoid(W . pool(x) + U[y])``, on the CPU.

    Args:
        in_channels: image channels.
        num_classes: classes (one bias each).
        pool_size: the image is average-pooled to ``pool_size x pool_size`` per channel (``d = C * pool_size**2``).
        lr: SGD learning rate on the mean log loss of a batch.
        l2: L2 penalty on W and U (added to the gradient as ``l2 * parameter``).
        loss_ema: decay, per batch, of the running mean loss that separates informative from uninformative samples.

    Parameters start at zero: every sample scores p = 0.5 until the boss's losses have taught it something.
    """

    def __init__(self, in_channels: int, num_classes: int, *, pool_size: int = 7, lr: float = 0.1, l2: float = 1e-3,
                 loss_ema: float = 0.75) -> None:
        check_int("in_channels", in_channels, 1)
        check_int("num_classes", num_classes, 2)
        self.pool_size = check_int("pool_size", pool_size, 1)
        self.lr = check_number("lr", lr, 0.0, low_open=True)
        self.l2 = check_number("l2", l2, 0.0)
        self.loss_ema = check_number("loss_ema", loss_ema, 0.0, 1.0, high_open=True)
        self.weight = torch.zeros(in_channels * pool_size * pool_size)
        self.class_bias = torch.zeros(num_classes)
        self.loss_sum = 0.0  # EMAs over batches of the boss's loss sum and sample count: their ratio is the threshold
        self.loss_count = 0.0

    def features(self, x: Tensor) -> Tensor:
        """``[B, C, H, W]`` images -> ``[B, C * pool_size**2]`` float32 features on the CPU."""
        pooled = F.adaptive_avg_pool2d(x.detach().float(), self.pool_size).flatten(1)
        return pooled.cpu()

    def prob(self, features: Tensor, y: Tensor) -> Tensor:
        """p(informative) of each sample."""
        return torch.sigmoid(features @ self.weight + self.class_bias[y])

    @property
    def threshold(self) -> float:
        """The running mean loss (NaN before the first update)."""
        return self.loss_sum / self.loss_count if self.loss_count else math.nan

    def labels(self, losses: Tensor) -> Tensor:
        """Fold the batch into the running mean loss, then label samples above it informative (1.0) or not (0.0)."""
        self.loss_sum = self.loss_ema * self.loss_sum + float(losses.sum())
        self.loss_count = self.loss_ema * self.loss_count + losses.numel()
        return (losses > self.threshold).float()

    def update(self, features: Tensor, y: Tensor, losses: Tensor) -> AssistantStep:
        """One SGD step on a batch the boss trained on, given the boss's per-sample losses (CPU tensors)."""
        labels = self.labels(losses.detach().float().cpu())
        y = y.cpu()
        p = self.prob(features, y)
        accuracy = float(((p > 0.5).float() == labels).float().mean())
        residual = (p - labels) / len(labels)  # d(mean log loss)/d(logit)
        self.weight -= self.lr * (features.T @ residual + self.l2 * self.weight)
        bias_grad = torch.zeros_like(self.class_bias).index_add_(0, y, residual)
        self.class_bias -= self.lr * (bias_grad + self.l2 * self.class_bias)
        return AssistantStep(accuracy, float(labels.mean()), self.threshold)

    def state_dict(self) -> dict:
        return {"weight": self.weight.clone(), "class_bias": self.class_bias.clone(), "loss_sum": self.loss_sum,
                "loss_count": self.loss_count}

    def load_state_dict(self, state: dict) -> None:
        self.weight = state["weight"].clone()
        self.class_bias = state["class_bias"].clone()
        self.loss_sum, self.loss_count = state["loss_sum"], state["loss_count"]


class UpdateMeans:
    """Means of the assistant's updates (:class:`AssistantStep`): over the boss batches of the current optimizer step
    (reset by :meth:`close_step`) and over the run."""

    def __init__(self) -> None:
        self.step_accuracy, self.step_informative, self.step_updates = 0.0, 0.0, 0
        self.run_accuracy, self.run_updates = 0.0, 0  # sums: checkpointed as ``(run_accuracy, run_updates)``

    def add(self, step: AssistantStep) -> None:
        self.step_accuracy += step.accuracy
        self.step_informative += step.informative_frac
        self.step_updates += 1
        self.run_accuracy += step.accuracy
        self.run_updates += 1

    def close_step(self) -> tuple[float, float]:
        """The step's mean accuracy and mean informative share; the next update opens a new step."""
        means = self.step_accuracy / self.step_updates, self.step_informative / self.step_updates
        self.step_accuracy, self.step_informative, self.step_updates = 0.0, 0.0, 0
        return means

    @property
    def accuracy(self) -> float:
        """Mean accuracy over the run (NaN before the first update)."""
        return self.run_accuracy / self.run_updates if self.run_updates else math.nan
