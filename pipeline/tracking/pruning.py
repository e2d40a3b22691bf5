"""A pruned study's decisions in MLflow: the runs of a pruned candidate end KILLED with ``failure=pruned`` and the
decision's ``pruned.rung``, ``pruned.score`` and ``pruned.reason`` tags, and stay in the store for the report."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from pipeline.tracking import interrupts, store
from pipeline.tracking.runs import summaries

PRUNED = "pruned"
# Runs a decision ends: paused at a rung (RUNNING), or interrupted there (KILLED, not yet marked pruned). A run that
# failed (diverged, crashed) keeps its own status and reason.
OPEN = ("RUNNING", "KILLED")


def end_pruned(uri: str, run_ids: Iterable[str], why: Mapping[str, object]) -> list[str]:
    """End each open run KILLED with the pruned tags (runs already marked are left alone, so a resumed study can
    call this again); returns the run keys of the runs it ended, whose checkpoints are no longer needed."""
    from mlflow.entities import RunTag

    client = store.client(uri)
    tags = [RunTag(k, str(v)) for k, v in {"failure": PRUNED, **why}.items()]
    ended = []
    for run_id in run_ids:
        run = client.get_run(run_id)
        done = run.info.status == "KILLED" and run.data.tags.get("failure") == PRUNED
        if done or run.info.status not in OPEN:
            continue
        with interrupts.deferred():
            client.log_batch(run_id, tags=tags, synchronous=True)
            client.set_terminated(run_id, status="KILLED")
        ended.append(run.data.tags.get("run_key", ""))
    return ended


def settled(uri: str, run_ids: Iterable[str]) -> dict[str, float | None]:
    """The runs among ``run_ids`` that are over for good, which a study must not train again: finished (with their
    final validation accuracy) or failed for a reason a re-run would meet again (diverged, a bad config: None)."""
    client = store.client(uri)
    found = {}
    for run_id in run_ids:
        run = client.get_run(run_id)
        if run.info.status == "FINISHED":
            # The summary is params now (summary.final_val_acc); runs recorded before them have it as a metric.
            found[run_id] = summaries(run.data.metrics, run.data.params).get("summary/final_val_acc")
        elif run.info.status == "FAILED" and run.data.tags.get("failure") != "error":  # "error" runs are resumed
            found[run_id] = None
    return found
