"""What one job trains: the data loaded, the model built for its shapes (and checked against the task on the first
real batch; a LightningModule of the user's own: that it logs the objective in validation, on one batch), and the
policy fixed to the run's number of optimizer steps (known only once the data is loaded)."""

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
    """Load the data set (into memory, or as far as its module loads eagerly); a missing or corrupt data set is a
    ConfigError (no run is created)."""
    try:
        job.dataset.setup("fit")
    except (FileNotFoundError, ValueError, RuntimeError, OSError) as exc:
        raise ConfigError(f"dataset: {exc}") from exc
    return job.dataset


def build_net(job: Job, datamodule):
    """The job's model for the loaded data, and one forward pass of the first two training samples checked against
    the task (torch's random state untouched: the run trains exactly as without the check); ConfigError naming the
    key at fault (model, dataset) before any run exists."""
    import lightning as L

    from pipeline.training.shapes import build_model, check_fit, first_batch

    try:
        batch = first_batch(datamodule)
    except (ValueError, RuntimeError, TypeError, IndexError, OSError) as exc:
        raise ConfigError(f"dataset: the first training batch cannot be read: {exc}") from exc
    try:
        net = build_model(job.model, datamodule, batch)
        if not isinstance(net, L.LightningModule):
            check_fit(net, job.task, datamodule, batch)
    except (ValueError, TypeError, RuntimeError) as exc:
        message = str(exc)
        raise ConfigError(message if message.split(":")[0] in ("model", "dataset") else f"model: {message}") from exc
    return net


def logged_in_validation(module, datamodule, accelerator: str = "cpu", precision: str = "32-true") -> dict[str, float]:
    """What a LightningModule of the user's own logs in validation (``validation_step`` and the epoch-end hooks), on
    one batch of the validation loader, by a Trainer of its own (one device of the run's accelerator, its precision)
    that records nothing; torch's CPU random state and the module's mode are left as they were. ConfigError naming
    ``model`` if it has no validation step or that step fails."""
    import warnings

    import lightning as L
    import torch
    from lightning.pytorch.utilities.model_helpers import is_overridden

    name = type(module).__name__
    if not is_overridden("validation_step", module, L.LightningModule):
        raise ConfigError(f"model: {name} has no validation_step; it must log the task's metrics with "
                          "self.log('val/<metric>', ...) (README: Your own LightningModule)")
    trainer = L.Trainer(accelerator=accelerator, devices=1, precision=precision, limit_val_batches=1, logger=False,
                        num_sanity_val_steps=0, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False)
    try:
        with warnings.catch_warnings(), torch.random.fork_rng(devices=[]):
            warnings.simplefilter("ignore")  # Lightning's loader tips belong to the run, not to this check
            trainer.validate(module, dataloaders=datamodule.val_dataloader(), verbose=False)
    except Exception as exc:  # noqa: BLE001 - any failure here would fail the run at its first evaluation
        raise ConfigError(f"model: {name}'s validation on one batch fails: {type(exc).__name__}: "
                          f"{' '.join(str(exc).split())}") from exc
    return {key: float(value) for key, value in trainer.callback_metrics.items()}


def check_logs_objective(module, datamodule, objective, trainer=None) -> None:
    """A LightningModule of the user's own logs the objective's metric as ``val/<metric>``: checked on one validation
    batch (on the run's accelerator and precision, ``trainer``: its TrainerSettings) before the run is opened, instead
    of failing the run at its first evaluation."""
    metric = objective.metric if objective is not None else "acc"  # a job without a task: classification
    device = {"accelerator": trainer.accelerator, "precision": trainer.precision} if trainer is not None else {}
    logged = logged_in_validation(module, datamodule, **device)
    if f"val/{metric}" not in logged:
        shown = ", ".join(sorted(logged)) or "nothing"
        raise ConfigError(f"task.objective.metric: {type(module).__name__} never logs val/{metric} in validation (it "
                          f"logs {shown}); log it with self.log('val/{metric}', ...), or set task.objective.metric "
                          "to a metric it logs as val/<metric>")


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
    from pipeline.training.module import PolicyModule, attach_policy
    from pipeline.training.shapes import model_arguments

    if job.run.num_threads:
        torch.set_num_threads(job.run.num_threads)
    L.seed_everything(job.seed, workers=True, verbose=False)
    datamodule = load_data(job)
    net = build_net(job, datamodule)
    loader = datamodule.train_dataloader()
    per_epoch = budget.steps_per_epoch(len(loader.dataset), loader.batch_size, job.trainer.world_size,
                                       job.trainer.accumulate_grad_batches)
    total_steps = budget.total_steps(job.trainer.max_steps, job.trainer.max_epochs, per_epoch)
    policy = job.policy.for_budget(total_steps)
    momentum = for_run(job.momentum, total_steps)  # Demon's T: this run's optimizer steps
    if isinstance(net, L.LightningModule):  # the user's own: it trains itself; the pipeline adds policy and records
        check_logs_objective(net, datamodule, job.objective, job.trainer)
        module = attach_policy(net, job.optimizer, policy, momentum)
    else:
        output_size = model_arguments(datamodule).get("output_size")
        module = PolicyModule(net, job.optimizer, policy, job.task, output_size, momentum=momentum,
                              channels_last=use_channels_last(job.run.memory_format, net))
    return Training(datamodule, module, policy, momentum, total_steps)
