"""The LightningModule: a network trained on its task's loss under an LR policy.

The module knows nothing of MLflow. It keeps the task's evaluation sums (``task.stats``) for the current validation
or test pass, reduces them across processes at the end of the pass, and leaves the result in ``last_eval`` for the
metrics callback to record. A LightningModule of the user's own gets the policy through :func:`attach_policy`.
"""

from __future__ import annotations

from collections.abc import Callable

import lightning as L
import torch

from pipeline.tasks.base import Task
from pipeline.tasks.classification import Classification
from pipeline.training.scheduler import PolicyScheduler


class PolicyModule(L.LightningModule):
    def __init__(
        self,
        net: torch.nn.Module,
        optimizer: Callable[..., torch.optim.Optimizer],
        policy: Callable[[int], float],
        task: Task,
        output_size: int,  # classes, values per sample or vocabulary: sizes the task's evaluation sums
        momentum: Callable[[int], float] | None = None,  # momentum policy (Demon); None: constant momentum
        channels_last: bool = False,  # NHWC weights and images: oneDNN's fast path for convolutions and pooling
    ):
        super().__init__()
        self.channels_last = channels_last
        self.net = net.to(memory_format=torch.channels_last) if channels_last else net
        self.optimizer_factory = optimizer
        self.policy = policy
        self.momentum = momentum
        self.task = task
        self._eval = task.stats(output_size)
        self.last_eval: dict[str, float] | None = None
        self.last_sample_losses: torch.Tensor | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.channels_last and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        return self.net(x)

    def training_step(self, batch, batch_idx):
        x, y = batch
        losses = self.task.loss(self(x), y)
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


class PolicyClassifier(PolicyModule):
    """A classifier trained with cross-entropy: :class:`PolicyModule` on the classification task."""

    def __init__(self, net, optimizer, policy, num_classes: int, momentum=None, channels_last: bool = False):
        super().__init__(net, optimizer, policy, Classification(), num_classes, momentum=momentum,
                         channels_last=channels_last)


def attach_policy(module: L.LightningModule, optimizer: Callable, policy, momentum=None) -> L.LightningModule:
    """Put the run's policy on a LightningModule of the user's own: its ``configure_optimizers`` (or, when it has
    none, the ``optimizer`` group's optimizer over its parameters) gets a :class:`PolicyScheduler` stepped every
    optimizer step. An LR scheduler of its own is refused: the policy is what the run measures."""
    from lightning.pytorch.utilities.model_helpers import is_overridden

    own = module.configure_optimizers if is_overridden("configure_optimizers", module, L.LightningModule) else None

    def configure_optimizers():
        built = own() if own is not None else optimizer(module.parameters())
        if isinstance(built, dict):
            if built.get("lr_scheduler") is not None:
                raise ValueError(f"model: {type(module).__name__}.configure_optimizers returns an lr_scheduler; the "
                                 "pipeline's policy sets the learning rate: return only the optimizer")
            built = built["optimizer"]
        if not isinstance(built, torch.optim.Optimizer):
            raise ValueError(f"model: {type(module).__name__}.configure_optimizers must return one torch optimizer "
                             f"(or {{'optimizer': ...}}), got {type(built).__name__}")
        scheduler = PolicyScheduler(built, policy, momentum=momentum)
        return {"optimizer": built, "lr_scheduler": {"scheduler": scheduler, "interval": "step", "frequency": 1}}

    module.configure_optimizers = configure_optimizers
    module.last_eval = None
    return module
