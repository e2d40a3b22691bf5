"""Which run a job continues, or whether it is already done.

- :func:`find_resumable_run`: the latest unfinished run with the job's key (killed by -9, which leaves it RUNNING;
  interrupted; or crashed with an error), which the job continues.
- :func:`find_done_run`: a run that already did the job (FINISHED, or failed for good), which a sweep that runs
  again reports instead of training the job a second time.
"""

from __future__ import annotations

from dataclasses import dataclass

from pipeline.tracking import store

RESUMABLE = ("RUNNING", "KILLED")
# Failures that training the job again would repeat (same config, same seed): the job is done, and failed.
FAILED_FOR_GOOD = ("diverged",)
# Runs of one key read back at most; a job has one run, a few if older versions of the code duplicated it.
MAX_RUNS_PER_KEY = 100


@dataclass(frozen=True)
class DoneRun:
    run_id: str
    name: str
    status: str  # FINISHED | FAILED
    failure: str | None
    parent_run_id: str | None


def find_resumable_run(uri: str, experiment_id: str, key: str) -> str | None:
    runs = store.client(uri).search_runs(
        [experiment_id], filter_string=f"tags.run_key = '{key}'", order_by=["attributes.start_time DESC"],
        max_results=1,
    )
    if not runs:
        return None
    run = runs[0]
    if run.info.status in RESUMABLE or (run.info.status == "FAILED" and run.data.tags.get("failure") == "error"):
        return run.info.run_id
    return None


def find_done_run(uri: str, experiment: str, key: str, parent_run_id: str | None = None) -> DoneRun | None:
    """The run in ``experiment`` that already did the job with this key: FINISHED, or FAILED for good (diverged).
    One under ``parent_run_id`` (this sweep) is preferred, then the latest. None if there is none, or no such
    experiment yet. Read-only."""
    mlflow_client = store.client(uri)
    found = mlflow_client.get_experiment_by_name(experiment)
    if found is None:
        return None
    runs = mlflow_client.search_runs([found.experiment_id], filter_string=f"tags.run_key = '{key}'",
                                     order_by=["attributes.start_time DESC"], max_results=MAX_RUNS_PER_KEY)
    done = [run for run in runs if run.info.status == "FINISHED"
            or (run.info.status == "FAILED" and run.data.tags.get("failure") in FAILED_FOR_GOOD)]
    if not done:
        return None
    # Stable sort: this sweep's own runs first, each group still latest first; a finished run before a failed one.
    done.sort(key=lambda run: (run.data.tags.get("mlflow.parentRunId") != parent_run_id,
                               run.info.status != "FINISHED"))
    run = done[0]
    return DoneRun(run.info.run_id, run.info.run_name, run.info.status, run.data.tags.get("failure"),
                   run.data.tags.get("mlflow.parentRunId"))
