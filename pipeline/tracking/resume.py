"""Which run a job resumes: the latest unfinished run with the job's key (killed by -9, which leaves it RUNNING;
interrupted; or crashed with an error)."""

from __future__ import annotations

from pipeline.tracking import store

RESUMABLE = ("RUNNING", "KILLED")


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
