"""Sweeps: one MLflow parent run per Hydra multirun, one child run per job, and an honest exit code.

:class:`SweepTracking` is a Hydra callback that runs in the launcher process. Before any job starts it creates the
store's schema and the experiment (a fresh SQLite store races on migration when jobs open it together) and the
parent run, and exports the parent's id so every job's run nests under it. When the sweep ends it reads the
children back from the store, tags the parent with the tally, ends it FINISHED only if every child finished, and
exits with the number of failed jobs.
"""

from __future__ import annotations

import sys
import traceback
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from pipeline.tracking import store, sweeps
from pipeline.tracking.recorder import open_run

# Exit codes above 125 mean "killed by a signal" to shells, so the failed-job count is capped there.
MAX_EXIT_CODE = 125


def record_job_failure(cfg: DictConfig, exc: BaseException, failure: str):
    """Record a sweep job that failed before its run could start (e.g. a bad value) as a FAILED child run."""
    from pipeline.config.checks import group_choices
    from pipeline.training.identity import base_tags, run_name
    from pipeline.training.job import JobResult

    seed = OmegaConf.select(cfg, "seed")
    tags = base_tags(group_choices(cfg), seed)
    try:
        uri = store.resolve_uri(OmegaConf.select(cfg, "tracking.uri"))
        experiment_id = store.prepare(uri, str(OmegaConf.select(cfg, "tracking.experiment")))
        with open_run(uri, experiment_id, run_name(tags, seed), tags,
                      parent_run_id=sweeps.current_parent()) as recorder:
            recorder.fail(failure, str(exc))
            run_id = recorder.run_id
    except Exception:  # noqa: BLE001 - the job's own error is the one to report
        traceback.print_exc()
        run_id = ""
    return JobResult(run_id, "FAILED", failure)


class SweepTracking(Callback):
    def __init__(self) -> None:
        self.uri: str | None = None
        self.parent_run_id: str | None = None

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        # Hydra turns a callback's exception into a warning and starts the jobs anyway; a sweep whose store is
        # unusable must stop here instead, before any job trains.
        try:
            self._start(config)
        except Exception as exc:  # noqa: BLE001
            print(f"error: cannot start the sweep: {exc}", file=sys.stderr)
            sys.exit(2)

    def _start(self, config: DictConfig) -> None:
        self.uri = store.resolve_uri(OmegaConf.select(config, "tracking.uri"))
        experiment = str(OmegaConf.select(config, "tracking.experiment"))
        experiment_id = store.prepare(self.uri, experiment)
        overrides = list(OmegaConf.select(config, "hydra.overrides.task", default=[]) or [])
        study = OmegaConf.select(config, "study", default=None)
        tags = {"kind": "sweep", "sweep.overrides": " ".join(overrides), "study": study}
        name = f"sweep-{study}" if study else "sweep-" + "-".join(o.split("=")[0].lstrip("+") for o in overrides)[:80]
        self.parent_run_id = sweeps.start_parent(self.uri, experiment_id, name, tags)
        print(f"sweep parent run {self.parent_run_id} in experiment {experiment!r} ({self.uri})", flush=True)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        if self.parent_run_id is None:
            return
        jobs, failed = sweeps.end_parent(self.uri, self.parent_run_id)
        print(f"sweep {self.parent_run_id}: {jobs - failed} of {jobs} jobs finished, "
              f"{failed} failed", flush=True)
        if failed:
            sys.exit(min(failed, MAX_EXIT_CODE))
