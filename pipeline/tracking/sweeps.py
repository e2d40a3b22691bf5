"""A sweep's parent run: created in the launcher process before any job starts, read by every job (in this process
or in workers started after it) to nest its run, tallied and ended when the sweep ends.

The parent's id travels to the jobs in one environment variable, written and read only here.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from pipeline.tracking import interrupts, store

PARENT_RUN_ENV = "LRBENCH_PARENT_RUN_ID"
PARENT_TAG = "mlflow.parentRunId"


def current_parent() -> str | None:
    """The parent run of the sweep this process works for; None outside a sweep."""
    return os.environ.get(PARENT_RUN_ENV) or None


def start_parent(uri: str, experiment_id: str, name: str, tags: Mapping[str, object]) -> str:
    """Create the sweep's parent run and make it the parent of every job started from now on."""
    with interrupts.deferred():
        run = store.client(uri).create_run(experiment_id, run_name=name,
                                           tags={k: str(v) for k, v in tags.items() if v})
    os.environ[PARENT_RUN_ENV] = run.info.run_id
    # Jobs in workers started after this point open the same store, whatever their own default would be.
    os.environ["MLFLOW_TRACKING_URI"] = uri
    return run.info.run_id


def end_parent(uri: str, parent_run_id: str) -> tuple[int, int]:
    """Tag the parent with the tally of its children and end it: FINISHED only if every child finished. Returns
    (jobs, failed)."""
    client = store.client(uri)
    with interrupts.deferred():
        parent = client.get_run(parent_run_id)
        children = client.search_runs(
            [parent.info.experiment_id], filter_string=f"tags.`{PARENT_TAG}` = '{parent_run_id}'"
        )
        statuses = [run.info.status for run in children]
        # A pruned study's pruned runs (KILLED, failure=pruned) are its decisions, not failures.
        failed = sum(run.info.status != "FINISHED" and run.data.tags.get("failure") != "pruned" for run in children)
        client.set_tag(parent_run_id, "sweep.jobs", str(len(statuses)))
        client.set_tag(parent_run_id, "sweep.failed", str(failed))
        client.set_terminated(parent_run_id, status="FINISHED" if failed == 0 and statuses else "FAILED")
    os.environ.pop(PARENT_RUN_ENV, None)
    return len(statuses), failed
