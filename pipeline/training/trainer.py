"""Lightning's Trainer for one run, instantiated from the checked ``trainer`` node (the lightning-hydra-template
way) with the pipeline's callbacks and the settings that follow from its run settings."""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

from pipeline.config.schema import Job
from pipeline.training.checkpoints import CHECKPOINT_NAME


def quiet_frameworks() -> None:
    """Keep a job's output to what the user needs: Lightning's start-up notes (devices, tips) and a deprecation
    warning it triggers inside torch would otherwise repeat for every job of a sweep."""
    import lightning.pytorch  # noqa: F401 - importing it sets its logger to INFO, so import before lowering that

    for name in ("lightning.pytorch", "lightning.fabric"):
        logging.getLogger(name).setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=r".*LeafSpec.*is deprecated")


def checkpoint_callback(folder: Path, every: int, eval_every: int):
    """Lightning's ModelCheckpoint writing ``<folder>/last.ckpt`` every ``every`` optimizer steps, except that at a
    step that is also an evaluation step it writes after the evaluation, not before it: a checkpoint written first
    would not hold that evaluation, and a run killed before its values reached the store resumed past it, losing
    the evaluation for good. (Lightning's own deferral to ``on_validation_end``, which it uses when a monitored
    metric is not computed yet.)"""
    from lightning.pytorch.callbacks import ModelCheckpoint

    class AfterEvaluation(ModelCheckpoint):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
            step = trainer.global_step
            if eval_every and step % every == 0 and step % eval_every == 0 and trainer.enable_validation:
                self._defer_save_until_validation = True
                return
            super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)

    return AfterEvaluation(dirpath=folder, filename=CHECKPOINT_NAME, save_top_k=1, every_n_train_steps=every,
                           enable_version_counter=False)


def build_trainer(job: Job, callbacks: list, checkpoint_dir: Path):
    from hydra.utils import instantiate

    every = job.run.checkpoint_every_steps
    if every:
        callbacks = [*callbacks, checkpoint_callback(checkpoint_dir, every, job.run.eval_every_steps)]
    return instantiate(
        job.trainer.node,
        val_check_interval=job.run.eval_every_steps * job.trainer.accumulate_grad_batches,  # counted in batches
        check_val_every_n_epoch=None,
        num_sanity_val_steps=0,
        use_distributed_sampler=False,  # the data module shards its own loaders exactly (see data/)
        logger=False,  # the metrics callback records; Lightning's loggers would write a second copy
        enable_checkpointing=bool(every),
        enable_progress_bar=job.run.progress,
        enable_model_summary=False,
        callbacks=callbacks,
        _convert_="all",
    )
