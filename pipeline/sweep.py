"""Sweeps: one MLflow parent run per Hydra multirun, one child run per job, and an honest exit code.

:class:`SweepTracking` is a Hydra callback that runs in the launcher process. Before any job starts it creates the
store's schema and the experiment (a fresh SQLite store races on migration when jobs open it together) and the
parent run, and exports the parent's id so every job's run nests under it. When the sweep ends it reads the
children back from the store, tags the parent with the tally, ends it FINISHED only if every child finished, and
exits with the number of failed jobs.
"""

from __future__ import annotations

import os
import sys
import traceback
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from pipeline.tracking import store
from pipeline.tracking.recorder import open_run
from pipeline.training.job import PARENT_RUN_ENV, JobResult

# Exit codes above 125 mean "killed by a signal" to shells, so the failed-job count is capped there.
MAX_EXIT_CODE = 125


def record_job_failure(cfg: DictConfig, exc: BaseException, failure: str) -> JobResult:
    """Record a sweep job that failed before its run could start (e.g. a bad value) as a FAILED child run."""
    from pipeline.config.checks import group_choices

    uri = store.resolve_uri(OmegaConf.select(cfg, "tracking.uri"))
    experiment_id = store.prepare(uri, str(OmegaConf.select(cfg, "tracking.experiment")))
    choices = group_choices(cfg)
    tags: dict[str, Any] = {group: option for group, option in choices.items() if group not in ("trainer", "tracking")}
    tags.setdefault("policy", "fix")
    tags.update(seed=str(OmegaConf.select(cfg, "seed")), kind="train", **{"mlflow.parentRunId": os.environ.get(PARENT_RUN_ENV)})
    name = f"{tags['policy']}-{tags.get('model')}-{tags.get('dataset')}-s{tags['seed']}"
    try:
        with open_run(store.client(uri), experiment_id, name, tags) as recorder:
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
        client = store.client(self.uri)
        run = client.create_run(experiment_id, run_name=name, tags={k: str(v) for k, v in tags.items() if v})
        self.parent_run_id = run.info.run_id
        # Jobs (in this process or in workers started after this point) read these.
        os.environ[PARENT_RUN_ENV] = self.parent_run_id
        os.environ["MLFLOW_TRACKING_URI"] = self.uri
        print(f"sweep parent run {self.parent_run_id} in experiment {experiment!r} ({self.uri})", flush=True)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        if self.parent_run_id is None:
            return
        client = store.client(self.uri)
        parent = client.get_run(self.parent_run_id)
        children = client.search_runs(
            [parent.info.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{self.parent_run_id}'"
        )
        statuses = [run.info.status for run in children]
        failed = sum(status != "FINISHED" for status in statuses)
        client.set_tag(self.parent_run_id, "sweep.jobs", str(len(statuses)))
        client.set_tag(self.parent_run_id, "sweep.failed", str(failed))
        client.set_terminated(self.parent_run_id, status="FINISHED" if failed == 0 and statuses else "FAILED")
        os.environ.pop(PARENT_RUN_ENV, None)
        print(f"sweep {self.parent_run_id}: {len(statuses) - failed} of {len(statuses)} jobs finished, "
              f"{failed} failed", flush=True)
        if failed:
            sys.exit(min(failed, MAX_EXIT_CODE))
