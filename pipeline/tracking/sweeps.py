"""A sweep's parent run: created (or, for a sweep that runs again, reopened) in the launcher process before any job
starts, read by every job (in this process or in workers started after it) to nest its run, tallied and ended when
the sweep ends.

A sweep is known by its key (the ``sweep_key`` tag, see :func:`pipeline.sweep.sweep_key`): the same command run
again after a crash continues the same parent. The parent's id travels to the jobs in one environment variable,
written and read only here.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from pipeline.tracking import interrupts, resume, store

PARENT_RUN_ENV = "LRBENCH_PARENT_RUN_ID"
PARENT_TAG = "mlflow.parentRunId"
SWEEP_KEY_TAG = "sweep_key"
# Tag prefix on a parent for each job it counts whose run was done earlier outside it (a single run, another sweep).
REUSED_TAG = "sweep.reused."
# Children read back per tally; far more than any sweep's jobs (MLflow's largest page).
MAX_CHILDREN = 50_000


def current_parent() -> str | None:
    """The parent run of the sweep this process works for; None outside a sweep."""
    return os.environ.get(PARENT_RUN_ENV) or None


def start_parent(uri: str, experiment_id: str, name: str, tags: Mapping[str, object],
                 sweep_key: str) -> tuple[str, bool]:
    """Open the sweep's parent run and make it the parent of every job started from now on: the latest parent with
    this ``sweep_key`` (set RUNNING again), else a new one. Returns (run id, whether an earlier parent continues)."""
    mlflow_client = store.client(uri)
    earlier = mlflow_client.search_runs(
        [experiment_id], filter_string=f"tags.kind = 'sweep' and tags.{SWEEP_KEY_TAG} = '{sweep_key}'",
        order_by=["attributes.start_time DESC"], max_results=1,
    )
    with interrupts.deferred():
        if earlier:
            run_id = earlier[0].info.run_id
            mlflow_client.update_run(run_id, status="RUNNING")
        else:
            values = {k: str(v) for k, v in {**tags, SWEEP_KEY_TAG: sweep_key}.items() if v}
            run_id = mlflow_client.create_run(experiment_id, run_name=name, tags=values).info.run_id
    os.environ[PARENT_RUN_ENV] = run_id
    # Jobs in workers started after this point open the same store, whatever their own default would be.
    os.environ["MLFLOW_TRACKING_URI"] = uri
    return run_id, bool(earlier)


def count_reused(uri: str, parent_run_id: str, run_id: str, run_name: str) -> None:
    """Make the parent count a job whose run was done outside it (the run keeps its own parent)."""
    with interrupts.deferred():
        store.client(uri).set_tag(parent_run_id, REUSED_TAG + run_id, run_name or run_id)


def failed_start(uri: str, parent_run_id: str, key: str, failure: str) -> str | None:
    """The run that already records, under this parent, that the job with this key could not start (``failure``);
    None if there is none."""
    mlflow_client = store.client(uri)
    parent = mlflow_client.get_run(parent_run_id)
    runs = mlflow_client.search_runs(
        [parent.info.experiment_id],
        filter_string=(f"tags.`{PARENT_TAG}` = '{parent_run_id}' and tags.run_key = '{key}' "
                       f"and tags.failure = '{failure}'"),
        order_by=["attributes.start_time DESC"], max_results=1,
    )
    return runs[0].info.run_id if runs else None


def end_unfinished(uri: str, experiment_id: str, key: str, error: str) -> str | None:
    """End the unfinished run of the job with this key FAILED (``failure=error``, which a later run of the job
    resumes) and return its id; None if the job has no unfinished run."""
    run_id = resume.find_resumable_run(uri, experiment_id, key)
    if run_id is not None:
        mlflow_client = store.client(uri)
        with interrupts.deferred():
            mlflow_client.set_tag(run_id, "failure", "error")
            mlflow_client.set_tag(run_id, "error", error)
            mlflow_client.set_terminated(run_id, status="FAILED")
    return run_id


PRUNED = "PRUNED"  # a job's status in the tally when a pruned study stopped it (its run ends KILLED, failure=pruned)


def _job_statuses(mlflow_client, parent) -> list[str]:
    """One status per job of the sweep: its children grouped by job (``run_key``; a run without one is a job of its
    own), FINISHED if any run of the job finished, else its latest run's status; plus the runs it reused."""
    children = mlflow_client.search_runs(
        [parent.info.experiment_id], filter_string=f"tags.`{PARENT_TAG}` = '{parent.info.run_id}'",
        order_by=["attributes.start_time DESC"], max_results=MAX_CHILDREN,
    )
    jobs: dict[str, str] = {}
    for run in children:  # latest first
        job = run.data.tags.get("run_key") or run.info.run_id
        if job not in jobs or run.info.status == "FINISHED":
            jobs[job] = PRUNED if run.data.tags.get("failure") == "pruned" else run.info.status
    from mlflow.exceptions import MlflowException

    for tag in parent.data.tags:
        if tag.startswith(REUSED_TAG):
            try:
                run = mlflow_client.get_run(tag[len(REUSED_TAG):])
            except MlflowException:  # removed from the store since: no longer a job of this sweep
                continue
            if run.info.lifecycle_stage == "active":
                jobs.setdefault(run.data.tags.get("run_key") or run.info.run_id, run.info.status)
    return list(jobs.values())


def end_parent(uri: str, parent_run_id: str) -> tuple[int, int]:
    """Tag the parent with the tally of its jobs and end it: FINISHED only if every job finished. Returns
    (jobs, failed)."""
    client = store.client(uri)
    with interrupts.deferred():
        statuses = _job_statuses(client, client.get_run(parent_run_id))
        # A pruned study's pruned runs (KILLED, failure=pruned) are its decisions, not failures.
        failed = sum(status not in ("FINISHED", PRUNED) for status in statuses)
        client.set_tag(parent_run_id, "sweep.jobs", str(len(statuses)))
        client.set_tag(parent_run_id, "sweep.failed", str(failed))
        client.set_terminated(parent_run_id, status="FINISHED" if failed == 0 and statuses else "FAILED")
    os.environ.pop(PARENT_RUN_ENV, None)
    return len(statuses), failed
