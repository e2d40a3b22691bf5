"""Lightning's ``Tuner.lr_find`` on the job's model, data, task and optimizer, once per seed: the curves of the range
test. Always in this one process on one device: under DDP the launching process (rank 0) runs it before the ranks
start, and the sweep is never run under a DDP strategy."""

from __future__ import annotations

import copy
import functools
import tempfile
import warnings
from contextlib import contextmanager

from pipeline.config.schema import Job, RangeTestSettings
from pipeline.range_test.rule import Curve, from_lightning

# Lightning's Trainer arguments the range test sets itself: one process, no logger, no checkpoints, no validation.
SINGLE_DEVICE = {"devices": 1, "num_nodes": 1, "strategy": "auto"}


def seeded(datamodule, seed: int):
    """The data module with its training order drawn from ``seed``: the pipeline's data modules shuffle each epoch
    with a generator seeded by their ``seed``; a LightningDataModule of the user's own keeps its own order."""
    from pipeline.training.data.base import SplitDataModule

    if not isinstance(datamodule, SplitDataModule):
        return datamodule
    data = copy.copy(datamodule)
    data.seed = seed
    return data


def _module(job: Job, net, datamodule, lr: float):
    """The LightningModule a job trains (the pipeline's, or the user's own), at a constant ``lr`` that Lightning's
    sweep replaces at once."""
    import lightning as L

    from pipeline.policies import Fix
    from pipeline.training.assemble import use_channels_last
    from pipeline.training.module import PolicyModule, attach_policy
    from pipeline.training.shapes import model_arguments

    if isinstance(net, L.LightningModule):
        return attach_policy(net, job.optimizer, Fix(k0=lr))
    return PolicyModule(net, job.optimizer, Fix(k0=lr), job.task, model_arguments(datamodule).get("output_size"),
                        channels_last=use_channels_last(job.run.memory_format, net))


def _trainer(job: Job, settings: RangeTestSettings, root: str):
    from hydra.utils import instantiate

    # One device sees the batches of all the job's ranks in turn: an optimizer step averages the same number of
    # samples as the job's DDP step does.
    accumulate = job.trainer.accumulate_grad_batches * job.trainer.world_size
    node = {**job.trainer.node, **SINGLE_DEVICE, "max_steps": settings.steps, "max_epochs": -1,
            "accumulate_grad_batches": accumulate}
    return instantiate(node, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                       enable_model_summary=False, num_sanity_val_steps=0, use_distributed_sampler=False,
                       default_root_dir=root, _convert_="all")


def sweep_seed(job: Job, datamodule, settings: RangeTestSettings, seed: int) -> Curve:
    """One seed's curve: a fresh model from ``seed``, the data in ``seed``'s order, Lightning's exponential sweep."""
    import lightning as L
    from lightning.pytorch.tuner import Tuner

    from pipeline.training.assemble import build_net

    L.seed_everything(seed, workers=True, verbose=False)
    data = seeded(datamodule, seed)
    module = _module(job, build_net(job, data), data, settings.min_lr)
    with tempfile.TemporaryDirectory(prefix="range-test-") as root, warnings.catch_warnings():
        # The sweep trains on the training batches only: Lightning's note that validation is skipped is expected.
        warnings.filterwarnings("ignore", message=r".*defined a `validation_step` but have no `val_dataloader`")
        trainer = _trainer(job, settings, root)
        finder = Tuner(trainer).lr_find(module, train_dataloaders=data.train_dataloader(), min_lr=settings.min_lr,
                                        max_lr=settings.max_lr, num_training=settings.steps, mode="exponential",
                                        early_stop_threshold=settings.early_stop, update_attr=False)
    steepest = finder.suggestion() if len(finder.results["loss"]) > 2 else None
    return from_lightning(seed, finder.results["lr"], finder.results["loss"],
                          float(steepest) if steepest is not None else None)


@contextmanager
def _tqdm_bar(shown: bool):
    """Lightning's sweep draws its own tqdm bar whatever the Trainer says (its callback's refresh rate is fixed at
    1); ``trainer.progress=false`` hides it too, by handing the sweep's module a tqdm that is disabled, for the
    sweep only (tqdm reads TQDM_DISABLE once, at import)."""
    from lightning.pytorch.tuner import lr_finder

    saved = lr_finder.tqdm
    if not shown:
        lr_finder.tqdm = functools.partial(saved, disable=True)
    try:
        yield
    finally:
        lr_finder.tqdm = saved


def sweep(job: Job, datamodule, settings: RangeTestSettings, say=print) -> list[Curve]:
    """The curves of seeds 0 .. settings.seeds-1 on the loaded ``datamodule``."""
    import torch

    if job.run.num_threads:
        torch.set_num_threads(job.run.num_threads)
    curves = []
    for seed in range(settings.seeds):
        with _tqdm_bar(job.run.progress):
            curve = sweep_seed(job, datamodule, settings, seed)
        say(f"range test seed {seed}: {len(curve.loss)} steps, LR {curve.lr[0]:.3g} to {curve.lr[-1]:.3g}")
        curves.append(curve)
    return curves
