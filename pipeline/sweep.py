"""Sweeps: one MLflow parent run per Hydra multirun, one child run per job, and an honest exit code.

:class:`SweepTracking` is a Hydra callback that runs in the launcher process. Before any job starts it creates the
store's schema and the experiment (a fresh SQLite store races on migration when jobs open it together) and the
parent run, and exports the parent's id so every job's run nests under it. When the sweep ends it reads the
children back from the store, tags the parent with the tally, ends it FINISHED only if every job finished, and
exits with the number of failed jobs.

A sweep can be run again after any crash (launcher, worker, machine): the same command has the same
:func:`sweep_key`, so it continues the same parent run; each job that is already done is not trained again
(:func:`done_job`) and each unfinished one resumes its own run (``run_job``).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import sys
import traceback
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from pipeline.config.checks import ConfigError, job_config
from pipeline.tracking import resume, store, sweeps
from pipeline.tracking.recorder import open_run
from pipeline.training.identity import VOLATILE_KEYS, run_key

# Exit codes above 125 mean "killed by a signal" to shells, so the failed-job count is capped there.
MAX_EXIT_CODE = 125


def sweep_key(experiment: str, overrides: Sequence[str], sweeper_params: Mapping | None, config: Mapping) -> str:
    """A sweep's identity: the same command (experiment, task overrides in any order, the sweeper's own params, the
    resolved settings they apply to) gives the same key, so running it again continues the same parent run.
    Display-only settings (``trainer.progress``) do not count, as for a job's run key; nor does the launcher, which
    is one of Hydra's own overrides (``hydra/launcher=pool``), not a task override."""
    kept = sorted(override for override in overrides if not _is_volatile(override))
    payload = {"experiment": experiment, "overrides": kept, "sweeper_params": dict(sweeper_params or {}),
               "config": run_key(config)}
    return hashlib.sha1(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _is_volatile(override: str) -> bool:
    name = override.split("=", 1)[0].lstrip("+~")
    return tuple(name.split(".", 1)) in VOLATILE_KEYS


def _job_key(cfg: DictConfig) -> str | None:
    """The job's run key, as ``run_job`` computes it; None if its config cannot even be resolved (``run_job``'s
    checks then say what is wrong)."""
    try:
        return run_key(job_config(cfg))
    except Exception:  # noqa: BLE001 - any resolution error is reported by the job's own checks
        return None


def done_job(cfg: DictConfig):
    """The result of a sweep job that a run already did (FINISHED, or failed for good: diverged), so that running a
    sweep again trains only what is not done; None: train it. A run done outside this sweep (a single run, another
    sweep) keeps its own parent and is counted by this sweep's parent."""
    from pipeline.training.job import JobResult

    key = _job_key(cfg)
    if key is None:
        return None
    uri = store.resolve_uri(OmegaConf.select(cfg, "tracking.uri"))
    parent = sweeps.current_parent()
    done = resume.find_done_run(uri, str(OmegaConf.select(cfg, "tracking.experiment")), key, parent)
    if done is None:
        return None
    if parent and done.parent_run_id != parent:
        sweeps.count_reused(uri, parent, done.run_id, done.name)
    return JobResult(done.run_id, done.status, done.failure)


def failed_job_tags(cfg: DictConfig) -> dict[str, str]:
    """The tags of a job whose run could not start, as far as its config can be read, the same as its siblings'
    runs carry: the group choices with the names of what would have run (model, dataset, task), the seed, and the
    objective (``objective_metric``/``objective_mode``), so the report groups and scopes it with them. The objective
    is read without ``trainer.targets``: a target out of range is a common reason to fail, and leaves it readable."""
    from pipeline.config.checks import check_task, group_choices, ran_as
    from pipeline.training.identity import base_tags, objective_tags

    choices = group_choices(cfg)
    for group in ("model", "dataset", "task"):
        try:
            name = ran_as(cfg, group)
        except Exception:  # noqa: BLE001 - unreadable: the group's option stands
            continue
        if name is not None:
            choices[group] = name
    try:
        task, objective = check_task(cfg, ())
    except Exception:  # noqa: BLE001 - a task or objective that is itself the error: no objective tags
        return base_tags(choices, OmegaConf.select(cfg, "seed"))
    choices.setdefault("task", task.name)
    return {**base_tags(choices, OmegaConf.select(cfg, "seed")), **objective_tags(objective)}


def record_job_failure(cfg: DictConfig, exc: BaseException, failure: str):
    """Record a sweep job that failed before its run could start (e.g. a bad value) as a FAILED child run, tagged as
    its siblings are (:func:`failed_job_tags`); a sweep run again updates the record it made the first time instead
    of adding a second one."""
    from pipeline.training.identity import run_name
    from pipeline.training.job import JobResult

    seed = OmegaConf.select(cfg, "seed")
    tags = failed_job_tags(cfg)
    key = _job_key(cfg)
    try:
        uri = store.resolve_uri(OmegaConf.select(cfg, "tracking.uri"))
        experiment_id = store.prepare(uri, str(OmegaConf.select(cfg, "tracking.experiment")))
        parent = sweeps.current_parent()
        earlier = sweeps.failed_start(uri, parent, key, failure) if parent and key else None
        with open_run(uri, experiment_id, run_name(tags, seed), {**tags, "run_key": key}, resume_run_id=earlier,
                      parent_run_id=parent) as recorder:
            recorder.fail(failure, str(exc))
            run_id = recorder.run_id
    except Exception:  # noqa: BLE001 - the job's own error is the one to report
        traceback.print_exc()
        run_id = ""
    return JobResult(run_id, "FAILED", failure)


def record_lost_job(cfg: DictConfig, reason: str):
    """Record a sweep job that could not be run to its end for a reason outside it (its worker process kept dying):
    its unfinished run ends FAILED with ``failure=error`` (so running the sweep again resumes it), or, if it never
    got a run, a FAILED child records it."""
    from pipeline.training.job import JobResult

    key = _job_key(cfg)
    try:
        uri = store.resolve_uri(OmegaConf.select(cfg, "tracking.uri"))
        experiment_id = store.prepare(uri, str(OmegaConf.select(cfg, "tracking.experiment")))
        run_id = sweeps.end_unfinished(uri, experiment_id, key, reason) if key else None
    except Exception:  # noqa: BLE001 - the sweep goes on; its tally counts the job's run as unfinished
        traceback.print_exc()
        return JobResult("", "FAILED", "error")
    if run_id is None:
        return record_job_failure(cfg, RuntimeError(reason), "error")
    return JobResult(run_id, "FAILED", "error")


def _hold_lock(path: Path):
    """An exclusive lock on ``path``, held until the returned file is closed (or the process dies, even by -9)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle = open(path, "w")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        raise ConfigError(f"this sweep is already running in another process (its lock {path} is held); let it "
                          "finish or stop it, then run it again") from None
    return handle


class SweepTracking(Callback):
    def __init__(self) -> None:
        self.uri: str | None = None
        self.parent_run_id: str | None = None
        self._lock = None
        self._lock_path: Path | None = None

    def __getstate__(self) -> dict:
        # Launchers pickle Hydra's callbacks along with each job; the lock stays with the launcher process.
        return {**self.__dict__, "_lock": None}

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        # Hydra turns a callback's exception into a warning and starts the jobs anyway; a sweep whose store is
        # unusable must stop here instead, before any job trains.
        try:
            self._start(config)
        except Exception as exc:  # noqa: BLE001
            self._release()
            print(f"error: cannot start the sweep: {exc}", file=sys.stderr)
            sys.exit(2)

    def _start(self, config: DictConfig) -> None:
        self.uri = store.resolve_uri(OmegaConf.select(config, "tracking.uri"))
        experiment = str(OmegaConf.select(config, "tracking.experiment"))
        # Masked before anything uses them: a password in tracking.uri= never reaches a tag, a print or the key.
        overrides = [store.public_uri(o) for o in OmegaConf.select(config, "hydra.overrides.task", default=[]) or []]
        params = OmegaConf.select(config, "hydra.sweeper.params", default=None)
        params = OmegaConf.to_container(params) if OmegaConf.is_config(params) else {}
        try:
            settings = job_config(config)
        except Exception:  # noqa: BLE001 - a value that cannot resolve here fails in its job, with its key named
            settings = OmegaConf.to_container(OmegaConf.masked_copy(config, [k for k in config if k != "hydra"]))
        key = sweep_key(experiment, overrides, params, settings)
        experiment_id = store.prepare(self.uri, experiment)
        # One launcher per sweep at a time: a second one would race the first for the same jobs and parent.
        self._lock_path = Path(str(OmegaConf.select(config, "trainer.checkpoint_dir", default="checkpoints")),
                               f"sweep-{key}.lock")
        self._lock = _hold_lock(self._lock_path)
        study = OmegaConf.select(config, "study", default=None)
        tags = {"kind": "sweep", "sweep.overrides": " ".join(overrides), "study": study}
        name = f"sweep-{study}" if study else "sweep-" + "-".join(o.split("=")[0].lstrip("+") for o in overrides)[:80]
        self.parent_run_id, continued = sweeps.start_parent(self.uri, experiment_id, name, tags, key)
        print(f"sweep parent run {self.parent_run_id} in experiment {experiment!r} ({store.public_uri(self.uri)})"
              + (": continued, jobs already done are not trained again" if continued else ""), flush=True)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        if self.parent_run_id is None:
            return
        jobs, failed = sweeps.end_parent(self.uri, self.parent_run_id)
        print(f"sweep {self.parent_run_id}: {jobs - failed} of {jobs} jobs finished, "
              f"{failed} failed", flush=True)
        self._release()
        if failed:
            sys.exit(min(failed, MAX_EXIT_CODE))

    def _release(self) -> None:
        if self._lock is not None:
            self._lock_path.unlink(missing_ok=True)
            self._lock.close()
            self._lock = None
