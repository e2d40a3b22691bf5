"""A Hydra launcher that runs a sweep's jobs in a pool of persistent local worker processes.

Why not Hydra's joblib launcher: each of its workers re-imports torch, Lightning and MLflow (about 9 s on a
2-core machine), and nothing stops N jobs x M torch threads from oversubscribing the cores. Here a forkserver
imports the heavy modules once, every worker is forked from it (so imports are paid once per sweep, not per job or
worker), each worker runs jobs one after another, and torch gets ``threads_per_job`` threads in each worker, with
``n_jobs * threads_per_job`` no more than the cores.

Select it with ``hydra/launcher=pool`` (``hydra.launcher.n_jobs=2``). The :class:`StartWorkersEarly` callback
(``conf/config.yaml``) starts the forkserver when the multirun starts, so its imports overlap the sweep's own set-up.

Packing (``pipeline/packing``) decides which jobs train together as one vectorised model in one worker
(``plan_sweep``) and trains each such group (``train_group``); each job still gets its own Hydra job and MLflow run.

Faults: each worker is a pool of its own, so a worker that dies (killed, out of memory) costs only its job a retry
on a fresh worker (:func:`run_on_workers`; the job resumes its own run), never the other jobs or the sweep. Each
worker ends itself and the forkserver as soon as the launcher process is gone, even killed by -9
(:func:`_exit_with_launcher`), so no process of a dead sweep keeps training; running the same command again
continues the sweep.
"""
# No ``from __future__ import annotations`` here: Hydra imports plugins outside sys.modules, where dataclasses
# cannot resolve string annotations.

import logging
import multiprocessing
import multiprocessing.forkserver
import os
import signal
import sys
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cloudpickle
from hydra.core.config_store import ConfigStore
from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, JobStatus, filter_overrides, run_job, setup_globals
from hydra.experimental.callback import Callback
from hydra.plugins.launcher import Launcher
from omegaconf import DictConfig, OmegaConf, open_dict

log = logging.getLogger(__name__)

# Imported once in the forkserver, inherited by every worker.
PRELOAD = ["torch", "lightning", "pipeline.tracking.preload", "pipeline.training.job", "pipeline.training.module"]
# Times a job whose worker process died is run again (on a fresh worker, resuming its own run) before it counts as
# failed: a worker killed by accident costs a retry, a job that kills its worker every time fails in the end.
MAX_RETRIES = 2
# Seconds between a worker's checks that the launcher is alive: how long a dead sweep's worker may go on training.
WATCH_INTERVAL_S = 0.5


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


def forkserver_context():
    """The multiprocessing context of the pool: a forkserver that has imported :data:`PRELOAD`."""
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(PRELOAD)
    return context


class StartWorkersEarly(Callback):
    """Start the pool's forkserver as the multirun starts: it imports torch, Lightning and MLflow (seconds) while
    the launcher process sets up the store and the parent run, instead of after. Jobs still see the launcher's
    environment as it is when they are submitted (:func:`_adopt_environment`)."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        if OmegaConf.select(config, "hydra.launcher._target_") == PoolLauncherConf._target_:
            forkserver_context()
            multiprocessing.forkserver.ensure_running()


def _adopt_environment(env: dict) -> None:
    """Take the launcher's environment at submit time: the forkserver may predate variables the sweep set since
    (its parent run id, the store URI). The worker's own thread setting stays."""
    threads = os.environ.get("OMP_NUM_THREADS")
    os.environ.clear()
    os.environ.update(env)
    if threads is not None:
        os.environ["OMP_NUM_THREADS"] = threads


def _enter_sweep(singleton_state, env: dict) -> None:
    """Give a worker the launcher's state before it runs a job: environment, Hydra's resolvers and singletons."""
    _adopt_environment(env)
    setup_globals()
    Singleton.set_state(singleton_state)


def _init_worker(threads: int, launcher_pid: int) -> None:
    _exit_with_launcher(launcher_pid)
    import torch

    os.environ["OMP_NUM_THREADS"] = str(threads)
    torch.set_num_threads(threads)


def _parent_of(pid: int) -> int | None:
    """A process's parent pid from ``/proc`` (Linux); None if it is gone or there is no ``/proc``."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return int(stat.read().rsplit(")", 1)[1].split()[1])  # after "(name)", which may hold spaces: state, ppid
    except (OSError, ValueError, IndexError):
        return None


def _launcher_alive(launcher_pid: int, forkserver_pid: int) -> bool:
    if os.getppid() != forkserver_pid:
        return False  # the forkserver is gone and this worker was handed to init
    if os.path.isdir("/proc/self"):
        # The forkserver is the launcher's child until the launcher dies; then init adopts it. Unlike a pid, this
        # cannot be fooled by a new process that reuses the launcher's pid. A read that fails proves nothing.
        parent = _parent_of(forkserver_pid)
        return parent is None or parent == launcher_pid
    try:
        os.kill(launcher_pid, 0)
        return True
    except ProcessLookupError:
        return False


def _exit_with_launcher(launcher_pid: int) -> None:
    """End this worker and its forkserver (SIGKILL) as soon as the launcher process is gone, even if it was killed
    by -9.

    A worker is the forkserver's child, not the launcher's, so a parent-death signal (``PR_SET_PDEATHSIG``) would
    follow the forkserver, which itself waits for its workers to end; a daemon thread watches the launcher instead.
    The forkserver serves this launcher only; left alone it would exit once its workers are gone, but its shutdown
    (torch and Lightning imported) takes seconds on a busy machine. The job the worker was running stays RUNNING in
    the store and resumes when the sweep runs again. multiprocessing's resource tracker ends by itself after them.
    """
    forkserver_pid = os.getppid()

    def watch() -> None:
        while _launcher_alive(launcher_pid, forkserver_pid):
            time.sleep(WATCH_INTERVAL_S)
        if os.getppid() == forkserver_pid:  # still this worker's parent, so the pid is still the forkserver's
            os.kill(forkserver_pid, signal.SIGKILL)
        os.kill(os.getpid(), signal.SIGKILL)

    threading.Thread(target=watch, name="launcher-watch", daemon=True).start()


def _sweep_config(hydra_context, config: DictConfig, overrides, idx: int) -> DictConfig:
    sweep_config = hydra_context.config_loader.load_sweep_config(config, list(overrides))
    with open_dict(sweep_config):
        sweep_config.hydra.job.id = idx
        sweep_config.hydra.job.num = idx
    return sweep_config


def _run(hydra_context, task_function, sweep_config: DictConfig) -> JobReturn:
    return run_job(
        hydra_context=hydra_context,
        task_function=task_function,
        config=sweep_config,
        job_dir_key="hydra.sweep.dir",
        job_subdir_key="hydra.sweep.subdir",
    )


def _execute(payload: bytes) -> bytes:
    idx, overrides, hydra_context, config, task_function, singleton_state, env = cloudpickle.loads(payload)
    _enter_sweep(singleton_state, env)
    return cloudpickle.dumps(_run(hydra_context, task_function, _sweep_config(hydra_context, config, overrides, idx)))


def _execute_pack(payload: bytes) -> bytes:
    """Train a group of jobs through packing's entry point; then each job gets its own Hydra job (output folder,
    JobReturn) that runs the task packing hands back for it. Jobs already done (a sweep run again) are not packed:
    their task reports the run that did them."""
    jobs, hydra_context, config, task_function, singleton_state, env = cloudpickle.loads(payload)
    _enter_sweep(singleton_state, env)
    from pipeline.packing.run import hydra_config_of, train_group
    from pipeline.sweep import done_job

    configs = [_sweep_config(hydra_context, config, overrides, idx) for idx, overrides in jobs]
    done = []
    for cfg in configs:
        with hydra_config_of(cfg):
            done.append(done_job(cfg) is not None)
    trained = iter(train_group([cfg for cfg, is_done in zip(configs, done, strict=True) if not is_done], task_function))
    tasks = [task_function if is_done else next(trained) for is_done in done]
    return cloudpickle.dumps([_run(hydra_context, task, cfg) for cfg, task in zip(configs, tasks, strict=True)])


def _lost_jobs(hydra_context, config: DictConfig, jobs, reason: str) -> list:
    """Record jobs whose worker died on every try (their runs end FAILED, resumable when the sweep runs again) and
    return their Hydra results, which say so without raising."""
    from pipeline.packing.run import hydra_config_of
    from pipeline.sweep import record_lost_job

    returns = []
    for idx, overrides in jobs:
        cfg = _sweep_config(hydra_context, config, overrides, idx)
        with hydra_config_of(cfg):
            result = record_lost_job(cfg, reason)
        returns.append(JobReturn(overrides=list(overrides), cfg=cfg, status=JobStatus.COMPLETED,
                                 _return_value=result))
    return returns


# What :func:`run_on_workers` yields for a task whose worker died on every try. A plain value, not object():
# Hydra's plugin scan may load this module a second time, and an identity sentinel from one copy is not the other's.
LOST = "<lost: its worker died on every try>"


def run_on_workers(tasks: Sequence[tuple], workers: int, new_worker: Callable[[], ProcessPoolExecutor],
                   retries: int = MAX_RETRIES, describe: Callable[[int], str] = lambda index: f"task {index + 1}",
                   say: Callable[[str], None] = print) -> Iterator[tuple]:
    """Run ``tasks`` (``(function, argument)`` pairs) on ``workers`` one-process pools made by ``new_worker``,
    yielding ``(task index, result)`` as each task ends (a task's own exception rises from here).

    A task whose worker process dies is run again on a fresh worker, first in line, up to ``retries`` times, and
    is then yielded with :data:`LOST`. The other workers and their tasks go on: one shared pool would be broken
    as a whole by the death of any of its workers (``BrokenProcessPool``), and its other workers terminated.
    """
    queue, tries, running, pools = deque(range(len(tasks))), Counter(), {}, []

    def feed(pool: ProcessPoolExecutor | None = None) -> None:
        if not queue:
            return
        if pool is None:
            pool = new_worker()
            pools.append(pool)
        index = queue.popleft()
        tries[index] += 1
        function, argument = tasks[index]
        running[pool.submit(function, argument)] = (pool, index)

    ended_well = False
    try:
        for _ in range(min(workers, len(tasks))):
            feed()
        while running:
            finished, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in finished:
                pool, index = running.pop(future)
                try:
                    result = future.result()
                except BrokenProcessPool:
                    pools.remove(pool)
                    pool.shutdown(wait=True)
                    if tries[index] <= retries:
                        say(f"[sweep] a worker process died running {describe(index)}; running it again on a fresh "
                            f"worker (retry {tries[index]} of {retries})")
                        queue.appendleft(index)
                    else:
                        say(f"[sweep] a worker process died running {describe(index)} on each of its "
                            f"{tries[index]} tries; it counts as failed")
                        yield index, LOST
                    feed()
                    continue
                yield index, result
                feed(pool)
        ended_well = True
    finally:
        for pool in pools:
            pool.shutdown(wait=ended_well, cancel_futures=True)


class PoolLauncher(Launcher):
    def __init__(self, n_jobs: int = 0, threads_per_job: int = 0) -> None:
        self.n_jobs = n_jobs
        self.threads_per_job = threads_per_job
        self.config: DictConfig | None = None
        self.hydra_context: Any = None
        self.task_function: Any = None

    def setup(self, *, hydra_context, task_function, config: DictConfig) -> None:
        self.config, self.hydra_context, self.task_function = config, hydra_context, task_function

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        setup_globals()
        assert self.config is not None
        Path(str(self.config.hydra.sweep.dir)).mkdir(parents=True, exist_ok=True)
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        packs = self._packs(job_overrides)
        workers, threads = plan_workers(self.n_jobs, self.threads_per_job, len(packs), cores)
        log.info(f"Launching {len(job_overrides)} jobs on {workers} workers x {threads} torch threads")
        context = forkserver_context()  # already running if StartWorkersEarly started it
        state, env, launcher_pid = Singleton.get_state(), dict(os.environ), os.getpid()
        for offset, overrides in enumerate(job_overrides):
            log.info(f"\t#{initial_job_idx + offset} : {' '.join(filter_overrides(overrides))}")
        payloads = []
        for pack in packs:
            jobs = [(initial_job_idx + offset, job_overrides[offset]) for offset in pack]
            if len(pack) == 1:
                payloads.append((_execute, (*jobs[0], self.hydra_context, self.config, self.task_function, state, env)))
            else:
                log.info(f"\tpack of {len(pack)}: {', '.join(f'#{idx}' for idx, _ in jobs)}")
                payloads.append((_execute_pack, (jobs, self.hydra_context, self.config, self.task_function, state,
                                                 env)))
        progress = SweepProgress(len(job_overrides))
        results: list = [None] * len(job_overrides)

        def new_worker() -> ProcessPoolExecutor:
            return ProcessPoolExecutor(1, mp_context=context, initializer=_init_worker,
                                       initargs=(threads, launcher_pid))

        def describe(index: int) -> str:
            return "; ".join(" ".join(filter_overrides(job_overrides[offset])) for offset in packs[index])

        tasks = [(fn, cloudpickle.dumps(args)) for fn, args in payloads]
        for index, blob in run_on_workers(tasks, workers, new_worker, describe=describe):
            pack = packs[index]
            if blob == LOST:
                jobs = [(initial_job_idx + offset, job_overrides[offset]) for offset in pack]
                rets = _lost_jobs(self.hydra_context, self.config, jobs, f"its worker process died on each of its "
                                  f"{MAX_RETRIES + 1} tries")
            else:
                rets = cloudpickle.loads(blob)
            for offset, ret in zip(pack, rets if isinstance(rets, list) else [rets]):
                results[offset] = ret
                progress.job_done(" ".join(filter_overrides(ret.overrides)), job_status(ret))
        return results

    def _packs(self, job_overrides: Sequence[Sequence[str]]) -> list:
        """Which jobs (offsets) train together as one vectorised model: packing's answer."""
        from pipeline.packing.run import plan_sweep

        def load(overrides: Sequence[str]) -> DictConfig:
            return self.hydra_context.config_loader.load_sweep_config(self.config, list(overrides))

        return plan_sweep(self.config, job_overrides, load)


def job_status(ret: JobReturn) -> str:
    """FINISHED or FAILED for a job's return, without raising the job's exception."""
    if ret.status != JobStatus.COMPLETED:
        return "FAILED"
    return getattr(ret.return_value, "status", None) or "FINISHED"


class SweepProgress:
    """One line per finished job: done/failed/remaining, elapsed time and an estimate of the time left.

    One line per event (no redrawing) stays readable when jobs finish out of order and in CI logs.
    """

    def __init__(self, total: int, out=None) -> None:
        self.total, self.done, self.failed = total, 0, 0
        self.start = time.monotonic()
        self.out = out or sys.stdout

    def job_done(self, label: str, status: str) -> None:
        self.done += 1
        self.failed += status != "FINISHED"
        elapsed = time.monotonic() - self.start
        left = self.total - self.done
        eta = f" · ~{_duration(elapsed / self.done * left)} left" if left else ""
        print(f"[sweep] {self.done}/{self.total} done, {self.failed} failed, {left} to go · "
              f"{_duration(elapsed)} elapsed"
              f"{eta} · {status}: {label}", file=self.out, flush=True)


def _duration(seconds: float) -> str:
    minutes, secs = divmod(int(round(seconds)), 60)
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"
