"""One run, top to bottom: check the config, load the data, open the MLflow run, fit, test, summarise.

Everything that can be wrong with the input (config values, a missing or corrupt data set, an unusable tracking
store) fails before the MLflow run is created, so a bad command leaves no trace in the store.
"""

from __future__ import annotations

import fcntl
import functools
import hashlib
import json
import logging
import math
import os
import shutil
import subprocess
import tempfile
import warnings
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from pipeline.config.checks import ConfigError, Job, check
from pipeline.training.distributed import (
    NullRecorder,
    process_rank,
    relaunch_only_this_job,
    process_group_scope,
)
from pipeline.tracking import interrupts, store
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


def run_tags(cfg: DictConfig, job: Job, training: Training, key: str) -> dict[str, str]:
    """The tags of a job's run: its group choices, seed, the exact policies it runs under, and its ``run_key``."""
    tags = {group: option for group, option in job.choices.items() if group not in ("trainer", "tracking")}
    tags.update(
        seed=str(cfg.seed),
        git_commit=git_commit(),
        policy_spec=training.policy.lrbench_string(),
        k_scale=f"{cfg.schedule.k_scale:g}",
        kind="train",
        run_key=key,
    )
    if training.momentum is not None:
        tags["momentum_spec"] = training.momentum.describe()
    if cfg.get("study"):
        tags["study"] = str(cfg.study)
    parent = os.environ.get(PARENT_RUN_ENV)
    if parent:
        tags["mlflow.parentRunId"] = parent
    return tags


# Display-only settings: changing them does not make a different job (a re-run with them changed still resumes).
VOLATILE_KEYS = {("trainer", "progress")}


def run_key(config: dict) -> str:
    """The identity of a job: the same command (same resolved config) gives the same key, so a re-run resumes."""
    stable = {group: ({k: v for k, v in value.items() if (group, k) not in VOLATILE_KEYS}
                      if isinstance(value, dict) else value) for group, value in config.items()}
    return hashlib.sha1(json.dumps(stable, sort_keys=True, default=str).encode()).hexdigest()[:16]


def run_name(cfg: DictConfig, job: Job) -> str:
    """``run_name`` if set, else ``<policy>-<model>-<dataset>-s<seed>``."""
    choices = job.choices
    return cfg.run_name or f"{choices['policy']}-{choices.get('model')}-{choices.get('dataset')}-s{cfg.seed}"


def job_checkpoint_dir(cfg: DictConfig, key: str) -> Path:
    """The job's checkpoint folder; its lock file sits beside it (``<folder>.lock``)."""
    return Path(cfg.trainer.checkpoint_dir).resolve() / key


def find_resumable_run(client, experiment_id: str, key: str) -> str | None:
    """The latest unfinished run of this job: killed (-9 leaves it RUNNING), interrupted, or crashed with an error."""
    runs = client.search_runs(
        [experiment_id], filter_string=f"tags.run_key = '{key}'", order_by=["attributes.start_time DESC"],
        max_results=1,
    )
    if not runs:
        return None
    run = runs[0]
    if run.info.status in ("RUNNING", "KILLED") or (
        run.info.status == "FAILED" and run.data.tags.get("failure") == "error"
    ):
        return run.info.run_id
    return None


@contextmanager
def job_lock(path: Path):
    """Hold an exclusive lock on a job's lock file: the same job cannot run twice at once. A killed process releases
    it (the kernel drops the lock), so a re-run after ``kill -9`` can take over."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ConfigError(f"this job is already running (its lock {path} is held)") from None
        try:
            yield
        finally:
            path.unlink(missing_ok=True)


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


@dataclass
class Training:
    """What one job trains: the data, the Lightning module and the exact policy it runs under."""

    datamodule: Any
    module: Any
    policy: Any
    momentum: Any
    total_steps: int


def devices_per_node(cfg: DictConfig) -> int:
    """Processes per machine (``trainer.devices``; ``auto`` counts as 1 until Lightning resolves it)."""
    return cfg.trainer.devices if isinstance(cfg.trainer.devices, int) else 1


def world_size(cfg: DictConfig) -> int:
    return devices_per_node(cfg) * cfg.trainer.num_nodes


def build_training(cfg: DictConfig, job: Job) -> Training:
    """Load the data, build the model, and fix the policy to this run's number of optimizer steps."""
    import lightning as L
    import torch

    from pipeline.policies import Stretched
    from pipeline.policies.momentum import for_run
    from pipeline.training.module import PolicyClassifier

    if cfg.trainer.num_threads:
        torch.set_num_threads(cfg.trainer.num_threads)
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    datamodule = load_data(job)
    net = job.model(
        in_channels=datamodule.in_channels, num_classes=datamodule.num_classes, image_size=datamodule.image_size
    )
    # Each process trains on its shard of the data; Lightning steps the optimizer on a partial accumulation at the
    # end of an epoch, hence the ceilings.
    loader = datamodule.train_dataloader()
    batches_per_epoch = math.ceil(len(loader.dataset) // world_size(cfg) / loader.batch_size)
    steps_per_epoch = math.ceil(batches_per_epoch / cfg.trainer.accumulate_grad_batches)
    total_steps = job.max_steps if job.max_steps > 0 else job.max_epochs * steps_per_epoch
    policy = job.policy
    if cfg.schedule.horizon_steps:
        policy = Stretched(policy, cfg.schedule.horizon_steps, total_steps)
    momentum = for_run(job.momentum, total_steps)  # Demon's T: this run's optimizer steps
    module = PolicyClassifier(net, job.optimizer, policy, datamodule.num_classes, momentum=momentum,
                              channels_last=use_channels_last(cfg.trainer.memory_format, net))
    return Training(datamodule, module, policy, momentum, total_steps)


def use_channels_last(memory_format: str, net) -> bool:
    """``trainer.memory_format``: ``auto`` picks channels-last for nets with 2-d convolutions, where oneDNN (CPU) and
    cuDNN run convolutions and pooling faster in NHWC; a net of linear layers gains nothing from it."""
    import torch

    if memory_format == "auto":
        return any(isinstance(m, torch.nn.Conv2d) for m in net.modules())
    return memory_format == "channels_last"


def record_setup(recorder, config: dict, training: Training, title: str) -> None:
    """Params and the artifacts every run carries from its start: the resolved config and its LR curve."""
    from pipeline.policies.spec import to_spec

    # policy_config: the exact policy it trains under (warm-up, k scale, stretch), for the report to re-create it.
    recorder.params({**flatten(config), "policy_config": json.dumps(to_spec(training.policy), sort_keys=True)})
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "config.yaml").write_text(OmegaConf.to_yaml(config))
        lr_curve_png(training.policy, training.total_steps, Path(tmp) / "lr_curve.png", title)
        recorder.artifact(str(Path(tmp) / "config.yaml"))
        recorder.artifact(str(Path(tmp) / "lr_curve.png"))


def build_trainer(cfg: DictConfig, job: Job, callbacks: list, checkpoint_dir: Path):
    import lightning as L
    from lightning.pytorch.callbacks import ModelCheckpoint

    every = cfg.trainer.checkpoint_every_steps
    if every:
        callbacks = [*callbacks, ModelCheckpoint(dirpath=checkpoint_dir, filename="last", save_top_k=1,
                                                 every_n_train_steps=every, enable_version_counter=False)]
    accumulate = cfg.trainer.accumulate_grad_batches
    return L.Trainer(
        max_steps=job.max_steps,
        max_epochs=job.max_epochs,
        val_check_interval=cfg.trainer.eval_every_steps * accumulate,  # counted in batches
        check_val_every_n_epoch=None,
        num_sanity_val_steps=0,
        accumulate_grad_batches=accumulate,
        accelerator=cfg.trainer.accelerator,
        devices=cfg.trainer.devices,
        num_nodes=cfg.trainer.num_nodes,
        strategy=cfg.trainer.strategy,
        use_distributed_sampler=False,  # the data module shards its own loaders exactly (see data.py)
        precision=cfg.trainer.precision,
        deterministic=cfg.trainer.deterministic,
        logger=False,  # the metrics callback records; Lightning's loggers would write a second copy
        enable_checkpointing=bool(every),
        enable_progress_bar=cfg.trainer.progress,
        enable_model_summary=False,
        callbacks=callbacks,
    )


def quiet_frameworks() -> None:
    """Keep a job's output to what the user needs: Lightning's start-up notes (devices, tips) and a deprecation
    warning it triggers inside torch would otherwise repeat for every job of a sweep."""
    import lightning.pytorch  # noqa: F401 - importing it sets its logger to INFO, so import before lowering that

    for name in ("lightning.pytorch", "lightning.fabric"):
        logging.getLogger(name).setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=r".*LeafSpec.*is deprecated")


def run_job(cfg: DictConfig) -> JobResult:
    """Train and record one job; raises ConfigError (before any run exists) or the training error (run FAILED)."""
    quiet_frameworks()
    from pipeline.training.callbacks import MetricsCallback
    from pipeline.training.metrics import EVAL_KEYS, summarize

    # 1. Config stage: every check that needs no data, then the store (rank 0 only: see distributed.py).
    job = check(cfg)
    uri = store.resolve_uri(cfg.tracking.uri)
    rank = process_rank(devices_per_node(cfg))
    experiment_id = store.prepare(uri, cfg.tracking.experiment) if rank == 0 else ""

    # 2. Data, model, and the policy fixed to this run's budget.
    training = build_training(cfg, job)
    datamodule = training.datamodule

    # 3. The run: from here on everything is recorded, and the run ends with a status whatever happens. A job
    #    killed mid-run resumes when the same command runs again: same config, same key, same MLflow run.
    config = job_config(cfg)
    key = run_key(config)
    tags = run_tags(cfg, job, training, key)
    name = run_name(cfg, job)
    checkpoint_dir = job_checkpoint_dir(cfg, key)
    checkpoint = checkpoint_dir / "last.ckpt"
    if cfg.trainer.strategy.startswith("ddp"):
        relaunch_only_this_job()
    with process_group_scope():
        lock = job_lock(checkpoint_dir.with_suffix(".lock")) if rank == 0 else nullcontext()
        with lock, interrupts.signals_as_interrupt():
            if rank == 0:
                client = store.client(uri)
                resume_id = find_resumable_run(client, experiment_id, key) if checkpoint.exists() else None
                if resume_id is None:
                    checkpoint.unlink(missing_ok=True)  # left by a run that has since finished or been deleted
                run = open_run(client, experiment_id, name, tags, cfg.tracking.flush_every, resume_id)
            else:  # rank 0 decided, before it started this process, whether the job resumes
                resume_id, run = None, nullcontext(NullRecorder())
            resuming = checkpoint.exists()
            with run as recorder:
                if resume_id:
                    print(f"resuming run {resume_id} from {checkpoint}", flush=True)
                    recorder.resume_from_store(["lr", "momentum", "train/loss", *(f"val/{k}" for k in EVAL_KEYS)])
                elif rank == 0:
                    record_setup(recorder, config, training, f"{job.choices['policy']}: {name}")

                metrics = MetricsCallback(recorder, cfg.trainer.targets, cfg.trainer.divergence_factor)
                callbacks = [metrics, *(extra(recorder=recorder) for extra in job.callbacks)]
                if job.sampler is not None:  # +sampler=autoassist: train on the batches it emits (val/test unchanged)
                    sampler = job.sampler(datamodule=datamodule, recorder=recorder)
                    callbacks.append(sampler)
                    datamodule = sampler.datamodule
                trainer = build_trainer(cfg, job, callbacks, checkpoint_dir)
                trainer.fit(training.module, datamodule=datamodule, ckpt_path=str(checkpoint) if resuming else None)
                test = None
                if metrics.progress.diverged_at is None:
                    evals = metrics.progress.evals
                    if not evals or evals[-1][0] != trainer.global_step:  # unless the last scheduled one was at the end
                        trainer.validate(training.module, datamodule=datamodule, verbose=False)  # end-of-budget eval
                    trainer.test(training.module, datamodule=datamodule, verbose=False)
                    test = training.module.last_eval
                summary = summarize(metrics.progress, trainer.global_step, metrics.train_seconds, test)
                recorder.metrics(summary, trainer.global_step)
            # The run is over (finished, or failed for good): its checkpoint is no longer needed.
            shutil.rmtree(checkpoint_dir, ignore_errors=True)
    return JobResult(recorder.run_id, "FAILED" if recorder.failure else "FINISHED", recorder.failure)
