"""A Hydra launcher that runs a sweep's jobs in a pool of persistent local worker processes.

Why not Hydra's joblib launcher: each of its workers re-imports torch, Lightning and MLflow (about 9 s on a
2-core machine), and nothing stops N jobs x M torch threads from oversubscribing the cores. Here a forkserver
imports the heavy modules once, every worker is forked from it (so imports are paid once per sweep, not per job or
worker), each worker runs jobs one after another, and torch gets ``threads_per_job`` threads in each worker, with
``n_jobs * threads_per_job`` no more than the cores.

Select it with ``hydra/launcher=pool`` (``hydra.launcher.n_jobs=2``).
"""
# No ``from __future__ import annotations`` here: Hydra imports plugins outside sys.modules, where dataclasses
# cannot resolve string annotations.

import logging
import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

import cloudpickle
from hydra.core.config_store import ConfigStore
from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, filter_overrides, run_job, setup_globals
from hydra.plugins.launcher import Launcher
from omegaconf import DictConfig, open_dict

log = logging.getLogger(__name__)

# Imported once in the forkserver, inherited by every worker.
PRELOAD = ["torch", "lightning", "mlflow", "pipeline.training.job", "pipeline.training.module"]


@dataclass
class PoolLauncherConf:
    _target_: str = "hydra_plugins.lrbench_launcher.pool_launcher.PoolLauncher"
    n_jobs: int = 0  # worker processes; 0 = one per core
    threads_per_job: int = 0  # torch threads in each worker; 0 = cores // n_jobs (at least 1)


ConfigStore.instance().store(group="hydra/launcher", name="pool", node=PoolLauncherConf, provider="lrbench")


def plan_workers(n_jobs: int, threads_per_job: int, jobs: int, cores: int) -> tuple:
    """How many workers and torch threads each: never more workers than jobs, never more threads than cores."""
    if n_jobs < 0 or threads_per_job < 0:
        raise ValueError(
            f"hydra.launcher.n_jobs and threads_per_job must be >= 0 (0 = automatic), got {n_jobs}, {threads_per_job}"
        )
    workers = max(1, min(n_jobs or cores, jobs))
    threads = threads_per_job or max(1, cores // workers)
    return workers, threads


def _init_worker(threads: int) -> None:
    import torch

    os.environ["OMP_NUM_THREADS"] = str(threads)
    torch.set_num_threads(threads)


def _execute(payload: bytes) -> bytes:
    idx, overrides, hydra_context, config, task_function, singleton_state = cloudpickle.loads(payload)
    setup_globals()
    Singleton.set_state(singleton_state)
    sweep_config = hydra_context.config_loader.load_sweep_config(config, list(overrides))
    with open_dict(sweep_config):
        sweep_config.hydra.job.id = idx
        sweep_config.hydra.job.num = idx
    ret = run_job(
        hydra_context=hydra_context,
        task_function=task_function,
        config=sweep_config,
        job_dir_key="hydra.sweep.dir",
        job_subdir_key="hydra.sweep.subdir",
    )
    return cloudpickle.dumps(ret)


class PoolLauncher(Launcher):
    def __init__(self, n_jobs: int = 0, threads_per_job: int = 0) -> None:
        self.n_jobs = n_jobs
        self.threads_per_job = threads_per_job
        self.config: Optional[DictConfig] = None
        self.hydra_context: Any = None
        self.task_function: Any = None

    def setup(self, *, hydra_context, task_function, config: DictConfig) -> None:
        self.config, self.hydra_context, self.task_function = config, hydra_context, task_function

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        setup_globals()
        assert self.config is not None
        Path(str(self.config.hydra.sweep.dir)).mkdir(parents=True, exist_ok=True)
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        workers, threads = plan_workers(self.n_jobs, self.threads_per_job, len(job_overrides), cores)
        log.info(f"Launching {len(job_overrides)} jobs on {workers} workers x {threads} torch threads")
        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload(PRELOAD)
        state = Singleton.get_state()
        payloads = []
        for offset, overrides in enumerate(job_overrides):
            idx = initial_job_idx + offset
            log.info(f"\t#{idx} : {' '.join(filter_overrides(overrides))}")
            payloads.append(
                cloudpickle.dumps((idx, overrides, self.hydra_context, self.config, self.task_function, state))
            )
        with ProcessPoolExecutor(workers, mp_context=context, initializer=_init_worker, initargs=(threads,)) as pool:
            futures = [pool.submit(_execute, payload) for payload in payloads]
            try:
                return [cloudpickle.loads(future.result()) for future in futures]
            except KeyboardInterrupt:
                pool.shutdown(wait=False, cancel_futures=True)
                raise
