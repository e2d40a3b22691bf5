"""One run, top to bottom: check the config, load the data, open the MLflow run, fit, test, summarise.

Everything that can be wrong with the input (config values, a missing or corrupt data set, an unusable tracking
store) fails before the MLflow run is created, so a bad command leaves no trace in the store.
"""

from __future__ import annotations

import functools
import os
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from pipeline.config.checks import ConfigError, Job, check
from pipeline.tracking import store
from pipeline.tracking.recorder import flatten, open_run

PROJECT_ROOT = Path(__file__).resolve().parents[2]
# Set by the sweep callback in the launcher process: every job of a sweep becomes a child of one parent run.
PARENT_RUN_ENV = "LRBENCH_PARENT_RUN_ID"


@dataclass(frozen=True)
class JobResult:
    run_id: str
    status: str  # FINISHED | FAILED
    failure: str | None = None


@functools.lru_cache(maxsize=1)
def git_commit() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=5, check=True
        )
        return out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def job_config(cfg: DictConfig) -> dict:
    """The resolved job config without Hydra's own node: what the run's params and config artifact hold."""
    job_only = OmegaConf.masked_copy(cfg, [key for key in cfg if key != "hydra"])
    return OmegaConf.to_container(job_only, resolve=True)


def run_tags(cfg: DictConfig, job: Job, policy) -> dict[str, str]:
    tags = {group: option for group, option in job.choices.items() if group not in ("trainer", "tracking")}
    tags.update(
        seed=str(cfg.seed),
        git_commit=git_commit(),
        policy_spec=policy.lrbench_string(),
        k_scale=f"{cfg.schedule.k_scale:g}",
        kind="train",
    )
    if cfg.get("study"):
        tags["study"] = str(cfg.study)
    parent = os.environ.get(PARENT_RUN_ENV)
    if parent:
        tags["mlflow.parentRunId"] = parent
    return tags


def lr_curve_png(policy, steps: int, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from pipeline.policies import curve

    fig, ax = plt.subplots(figsize=(6, 3), dpi=100)
    ax.plot(range(steps), curve(policy, steps), lw=1.2)
    ax.set(xlabel="optimizer step", ylabel="learning rate", title=title)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def load_data(job: Job):
    """Load the data set into memory; a missing or corrupt data set is a ConfigError (no run is created)."""
    try:
        job.dataset.setup("fit")
    except (FileNotFoundError, ValueError, RuntimeError, OSError) as exc:
        raise ConfigError(f"dataset: {exc}") from exc
    return job.dataset


def run_job(cfg: DictConfig) -> JobResult:
    """Train and record one job; raises ConfigError (before any run exists) or the training error (run FAILED)."""
    import lightning as L
    import torch

    from pipeline.policies import Stretched
    from pipeline.training.callbacks import MetricsCallback
    from pipeline.training.metrics import summarize
    from pipeline.training.module import PolicyClassifier

    # 1. Config stage: every check that needs no data.
    job = check(cfg)
    uri = store.resolve_uri(cfg.tracking.uri)
    experiment_id = store.prepare(uri, cfg.tracking.experiment)

    # 2. Data and model.
    if cfg.trainer.num_threads:
        torch.set_num_threads(cfg.trainer.num_threads)
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    datamodule = load_data(job)
    net = job.model(
        in_channels=datamodule.in_channels, num_classes=datamodule.num_classes, image_size=datamodule.image_size
    )
    accumulate = cfg.trainer.accumulate_grad_batches
    steps_per_epoch = max(len(datamodule.train_dataloader()) // accumulate, 1)
    total_steps = job.max_steps if job.max_steps > 0 else job.max_epochs * steps_per_epoch
    policy = job.policy
    if cfg.schedule.horizon_steps:
        policy = Stretched(policy, cfg.schedule.horizon_steps, total_steps)

    module = PolicyClassifier(net, job.optimizer, policy, datamodule.num_classes)

    # 3. The run: everything from here on is recorded, and the run ends with a status whatever happens.
    choices = job.choices
    run_name = cfg.run_name or f"{choices['policy']}-{choices.get('model')}-{choices.get('dataset')}-s{cfg.seed}"
    mlflow_client = store.client(uri)
    tags = run_tags(cfg, job, policy)
    with open_run(mlflow_client, experiment_id, run_name, tags, cfg.tracking.flush_every) as recorder:
        config = job_config(cfg)
        recorder.params(flatten(config))
        with tempfile.TemporaryDirectory() as tmp:
            (Path(tmp) / "config.yaml").write_text(OmegaConf.to_yaml(config))
            lr_curve_png(policy, total_steps, Path(tmp) / "lr_curve.png", f"{choices['policy']}: {run_name}")
            recorder.artifact(str(Path(tmp) / "config.yaml"))
            recorder.artifact(str(Path(tmp) / "lr_curve.png"))

        metrics = MetricsCallback(recorder, cfg.trainer.targets, cfg.trainer.divergence_factor)
        trainer = L.Trainer(
            max_steps=job.max_steps,
            max_epochs=job.max_epochs,
            val_check_interval=cfg.trainer.eval_every_steps * accumulate,
            check_val_every_n_epoch=None,
            num_sanity_val_steps=0,
            accumulate_grad_batches=accumulate,
            accelerator=cfg.trainer.accelerator,
            devices=cfg.trainer.devices,
            strategy=cfg.trainer.strategy,
            precision=cfg.trainer.precision,
            deterministic=cfg.trainer.deterministic,
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=cfg.trainer.progress,
            enable_model_summary=False,
            callbacks=[metrics, *(extra(recorder=recorder) for extra in job.callbacks)],
        )
        trainer.fit(module, datamodule=datamodule)
        test = None
        if metrics.progress.diverged_at is None:
            trainer.validate(module, datamodule=datamodule, verbose=False)  # the end-of-budget evaluation
            trainer.test(module, datamodule=datamodule, verbose=False)
            test = module.last_eval
        recorder.metrics(summarize(metrics.progress, trainer.global_step, metrics.train_seconds, test),
                         trainer.global_step)
        run_id = recorder.run_id
    return JobResult(run_id, "FAILED" if recorder.failure else "FINISHED", recorder.failure)
