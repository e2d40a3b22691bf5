"""The LightningModule: a classifier trained with cross-entropy under an LR policy.

The module knows nothing of MLflow. It keeps evaluation sums (:class:`EvalStats`) for the current validation or
test pass, reduces them across processes at the end of the pass, and leaves the result in ``last_eval`` for the
metrics callback to record.
"""

from __future__ import annotations

from typing import Callable

import lightning as L
import torch
import torch.nn.functional as F

from pipeline.training.metrics import EvalStats
from pipeline.training.scheduler import PolicyScheduler


class PolicyClassifier(L.LightningModule):
    def __init__(
        self,
        net: torch.nn.Module,
        optimizer: Callable[..., torch.optim.Optimizer],
        policy: Callable[[int], float],
        num_classes: int,
        momentum: Callable[[int], float] | None = None,  # momentum policy (Demon); None: constant momentum
        channels_last: bool = False,  # NHWC weights and images: oneDNN's fast path for convolutions and pooling
    ):
        super().__init__()
        self.channels_last = channels_last
        self.net = net.to(memory_format=torch.channels_last) if channels_last else net
        self.optimizer_factory = optimizer
        self.policy = policy
        self.momentum = momentum
        self._eval = EvalStats(num_classes)
        self.last_eval: dict[str, float] | None = None
        self.last_sample_losses: torch.Tensor | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.channels_last and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        return self.net(x)

    def training_step(self, batch, batch_idx):
        x, y = batch
        losses = F.cross_entropy(self(x), y, reduction="none")
        # Per-sample losses of the last training batch, for callbacks that learn from them (AutoAssist).
        self.last_sample_losses = losses.detach()
        return losses.mean()

    # -- evaluation: the same sums for validation and test ----------------------------------------------------
    def _eval_step(self, batch) -> None:
        x, y = batch
        self._eval.update(self(x), y)

    def _eval_start(self) -> None:
        self._eval.reset()
        self.last_eval = None

    def _eval_end(self) -> None:
        state = self._eval.state
        if self.trainer is not None and self.trainer.world_size > 1:
            state = self.trainer.strategy.reduce(state.to(self.device), reduce_op="sum").cpu()
            self._eval.state = state
        self.last_eval = self._eval.compute()

    def on_validation_epoch_start(self):
        self._eval_start()

    def validation_step(self, batch, batch_idx):
        self._eval_step(batch)

    def on_validation_epoch_end(self):
        self._eval_end()

    def on_test_epoch_start(self):
        self._eval_start()

    def test_step(self, batch, batch_idx):
        self._eval_step(batch)

    def on_test_epoch_end(self):
        self._eval_end()

    def configure_optimizers(self):
        optimizer = self.optimizer_factory(self.parameters())
        scheduler = PolicyScheduler(optimizer, self.policy, momentum=self.momentum)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step", "frequency": 1}}
