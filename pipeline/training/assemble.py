"""What one job trains: the data loaded, the model built for its shapes, and the policy fixed to the run's number of
optimizer steps (known only once the data is loaded)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pipeline.config.checks import ConfigError
from pipeline.config.schema import Job
from pipeline.training import budget


@dataclass
class Training:
    datamodule: Any
    module: Any
    policy: Any          # the exact policy t -> lr of this run
    momentum: Any        # the exact momentum policy, or None
    total_steps: int


def load_data(job: Job):
    """Load the data set into memory; a missing or corrupt data set is a ConfigError (no run is created)."""
    try:
        job.dataset.setup("fit")
    except (FileNotFoundError, ValueError, RuntimeError, OSError) as exc:
        raise ConfigError(f"dataset: {exc}") from exc
    return job.dataset


def use_channels_last(memory_format: str, net) -> bool:
    """``trainer.memory_format``: ``auto`` picks channels-last for nets with 2-d convolutions, where oneDNN (CPU) and
    cuDNN run convolutions and pooling faster in NHWC; a net of linear layers gains nothing from it."""
    import torch

    if memory_format == "auto":
        return any(isinstance(m, torch.nn.Conv2d) for m in net.modules())
    return memory_format == "channels_last"


def build_training(job: Job) -> Training:
    """Load the data, build the model, and fix the policy to this run's number of optimizer steps."""
    import lightning as L
    import torch

    from pipeline.policies.momentum import for_run
    from pipeline.training.module import PolicyClassifier

    if job.run.num_threads:
        torch.set_num_threads(job.run.num_threads)
    L.seed_everything(job.seed, workers=True, verbose=False)
    datamodule = load_data(job)
    net = job.model(
        in_channels=datamodule.in_channels, num_classes=datamodule.num_classes, image_size=datamodule.image_size
    )
    loader = datamodule.train_dataloader()
    per_epoch = budget.steps_per_epoch(len(loader.dataset), loader.batch_size, job.trainer.world_size,
                                       job.trainer.accumulate_grad_batches)
    total_steps = budget.total_steps(job.trainer.max_steps, job.trainer.max_epochs, per_epoch)
    policy = job.policy.for_budget(total_steps)
    momentum = for_run(job.momentum, total_steps)  # Demon's T: this run's optimizer steps
    module = PolicyClassifier(net, job.optimizer, policy, datamodule.num_classes, momentum=momentum,
                              channels_last=use_channels_last(job.run.memory_format, net))
    return Training(datamodule, module, policy, momentum, total_steps)
