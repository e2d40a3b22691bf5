"""Entry points of packing: train K jobs as one pack, each recorded as its own MLflow run (:func:`run_packed`), and
the pool launcher's two questions, which jobs of a sweep share a pack (:func:`plan_sweep`) and what each job of a
group runs as its Hydra task (:func:`train_group`)."""

from __future__ import annotations

import dataclasses
import sys
import traceback
import uuid
from collections.abc import Callable, Sequence
from contextlib import ExitStack, contextmanager

from omegaconf import DictConfig

from pipeline.config.checks import ConfigError, check, job_config
from pipeline.packing.loop import Copy, train_pack
from pipeline.packing.nets import PackedNets
from pipeline.packing.plan import PRECISION_DTYPES, asks_to_pack, check_same_but_policies, group_jobs, pack_refusal
from pipeline.packing.sgd import PackedSGD, SGDRule
from pipeline.policies.fit import policy_fit
from pipeline.range_test.run import apply as apply_range_test
from pipeline.tracking import interrupts, packs, store
from pipeline.training.artifacts import record_curves, record_setup, record_summary
from pipeline.training.assemble import build_training
from pipeline.training.checkpoints import checkpoint_folder, job_lock
from pipeline.training.identity import run_key, run_name, run_tags
from pipeline.training.job import JobResult


@contextmanager
def hydra_config_of(cfg: DictConfig):
    """Point Hydra's global runtime config at this job's own while it is read: ``group_choices`` (the tags) and
    ``${hydra:...}`` interpolations read it, and a pack holds several jobs at once. Restored on exit."""
    from hydra.core.hydra_config import HydraConfig

    instance = HydraConfig.instance()
    previous = instance.cfg
    if "hydra" in cfg:
        instance.set_config(cfg)
    try:
        yield
    finally:
        instance.cfg = previous


def resolved(cfg: DictConfig) -> dict:
    """A job's resolved config (what its run records), read under its own Hydra config."""
    with hydra_config_of(cfg):
        return job_config(cfg)


def _cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def device_and_dtype(trainer):
    """The device and dtype a pack trains in, from the checked Lightning settings."""
    import torch

    accelerator = trainer.accelerator
    if accelerator in ("gpu", "cuda") and not torch.cuda.is_available():
        raise ConfigError(f"trainer.accelerator={accelerator} but CUDA is not available on this machine")
    if accelerator == "auto":
        accelerator = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device({"gpu": "cuda"}.get(accelerator, accelerator))
    return device, getattr(torch, PRECISION_DTYPES[trainer.precision])


def run_packed(cfgs: list[DictConfig]) -> list[JobResult]:
    """Train K jobs as one vectorised model, each recorded as its own MLflow run; one result per job, in order.

    Raises :class:`ConfigError` before any run exists when a job's config is bad or the jobs cannot share a pack
    (the message names the key); a training error ends every run of the pack FAILED and rises.
    """
    import torch

    from pipeline.training.metrics import RunProgress, summarize

    if not cfgs:
        raise ConfigError("a pack needs at least one job")
    # 1. Config stage: every job checked as run_job checks it, then the rules of a pack.
    jobs = []
    for cfg in cfgs:
        reason = pack_refusal(cfg)
        if reason:
            raise ConfigError(reason)
        with hydra_config_of(cfg):
            jobs.append(check(cfg))
    jobs = [apply_range_test(job) for job in jobs]  # policy.k_from=range_test: one test, read by every job
    check_same_but_policies([job.config for job in jobs])
    job0 = jobs[0]
    rule = SGDRule.of(job0.optimizer([torch.nn.Parameter(torch.zeros(1))]))
    device, dtype = device_and_dtype(job0.trainer)
    experiment_id = store.prepare(job0.tracking.uri, job0.tracking.experiment)

    # 2. Data (loaded once, shared), each copy's network from its own seed, policies fixed to the budget.
    if job0.trainer.node.get("deterministic"):
        torch.use_deterministic_algorithms(True)
    datamodule = job0.dataset
    trainings = [build_training(dataclasses.replace(job, dataset=datamodule)) for job in jobs]
    total_steps = trainings[0].total_steps
    nets = PackedNets([t.module.net for t in trainings], device, dtype)
    sgd = PackedSGD(rule, len(cfgs), momentum_policies=any(t.momentum is not None for t in trainings))

    # 3. The runs: one per job, all ending with a status whatever happens.
    pack_id = uuid.uuid4().hex[:12]
    with ExitStack() as stack:
        for job in jobs:  # the same job cannot run twice at once, packed or not
            stack.enter_context(job_lock(checkpoint_folder(job.run.checkpoint_dir, run_key(job.config))
                                         .with_suffix(".lock")))
        stack.enter_context(interrupts.signals_as_interrupt())
        new_run = stack.enter_context(packs.run_opener(job0.tracking.uri, experiment_id, job0.tracking.flush_every))
        copies, titles = [], []
        for job, training in zip(jobs, trainings):
            fit = policy_fit(training.policy, training.total_steps)
            tags = {**run_tags(job, training.policy, training.momentum, run_key(job.config), fit.verdict),
                    "packed": str(len(jobs)), "pack_id": pack_id}
            name = run_name(job.choices, job.seed, job.run_name)
            recorder = new_run(name, tags)
            titles.append(f"{job.policy_name}: {name}")
            record_setup(recorder, job.recorded_config, training.policy, training.total_steps, titles[-1])
            progress = RunProgress(targets=tuple(sorted(job.run.targets)))
            copies.append(Copy(recorder, training.policy, training.momentum, progress))
        print(f"pack {pack_id}: {len(copies)} jobs as one vectorised model on {device} ({dtype})", flush=True)
        train_pack(nets, sgd, copies, datamodule, job0.run, total_steps, device, dtype, datamodule.num_classes)
        for c, title in zip(copies, titles):  # as a separate run records them: params, table, one figure
            record_summary(c.recorder, summarize(c.progress, c.steps, c.train_s, c.test), c.steps)
            record_curves(c.recorder, c.policy, c.steps, c.progress.evals, title)
    return [JobResult(c.recorder.run_id, "FAILED" if c.recorder.failure else "FINISHED", c.recorder.failure)
            for c in copies]


def plan_sweep(config: DictConfig, job_overrides: Sequence[Sequence[str]],
               load: Callable[[Sequence[str]], DictConfig]) -> list[list[int]]:
    """Which jobs of a sweep (offsets) train together: each alone unless ``trainer.pack`` asks, else the packs of
    :func:`~pipeline.packing.plan.group_jobs`. ``load`` composes one job's config from its overrides."""
    if not asks_to_pack(config, job_overrides):
        return [[offset] for offset in range(len(job_overrides))]
    return group_jobs([load(overrides) for overrides in job_overrides], resolved, _cuda_available)


def train_group(cfgs: list[DictConfig], task_function: Callable) -> list[Callable]:
    """Train a group of sweep jobs as one pack; per job, the Hydra task to run for it: one that reports what the pack
    recorded, or ``task_function`` itself for a job the pack could not take (it failed its own checks, which the
    normal path records, or the jobs could not share a pack)."""
    return [task_function if outcome is None else _replay(outcome) for outcome in _train_sweep_pack(cfgs)]


def _train_sweep_pack(cfgs: list[DictConfig]) -> list:
    """Per job, its :class:`JobResult`, the training error (its run is already recorded FAILED), or None: train this
    job on its own."""
    ok = []
    for i, cfg in enumerate(cfgs):
        try:
            with hydra_config_of(cfg):
                check(cfg)
            ok.append(i)
        except ConfigError:
            pass
    outcomes: list = [None] * len(cfgs)
    if len(ok) < 2:
        return outcomes
    try:
        results = run_packed([cfgs[i] for i in ok])
    except ConfigError as exc:
        print(f"warning: these {len(ok)} jobs train one at a time: {exc}", file=sys.stderr, flush=True)
        return outcomes
    except Exception as exc:  # noqa: BLE001 - every run of the pack is recorded FAILED with it
        traceback.print_exc()
        results = [exc] * len(ok)
    for i, result in zip(ok, results):
        outcomes[i] = result
    return outcomes


def _replay(outcome):
    """The Hydra task function of a job whose pack has trained: it says and returns what the pack recorded for it,
    as the CLI's task does for a job that trained alone."""

    def task(cfg: DictConfig):
        if isinstance(outcome, BaseException):
            print(f"error: {type(outcome).__name__}: {outcome}", file=sys.stderr)
            return None
        print(f"run {outcome.run_id} {outcome.status} (packed)")
        return outcome

    return task
