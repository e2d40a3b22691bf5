"""LR range-test runs in the store: find a finished one by its key, record a new one.

A range test is a run of its own (tag ``kind=range_test``, which the report's ``kind=train`` query leaves out), keyed
by ``range_test_key`` (model, data, task, optimizer and the test's settings: :func:`pipeline.range_test.run.test_key`)
so that every job of a sweep reads the same one. Its result is in params ``result.k0`` and ``result.k1``.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass

from pipeline.tracking import interrupts, store

KIND = "range_test"
KEY_TAG = "range_test_key"
RESULT = "result."


@dataclass(frozen=True)
class FoundRangeTest:
    run_id: str
    k0: float
    k1: float
    params: dict[str, str]


def find_finished(uri: str, experiment: str, key: str) -> FoundRangeTest | None:
    """The latest FINISHED range-test run with ``key`` in ``experiment``; None if there is none (or no experiment)."""
    mlflow_client = store.client(uri)
    found = mlflow_client.get_experiment_by_name(experiment)
    if found is None:
        return None
    runs = mlflow_client.search_runs(
        [found.experiment_id],
        filter_string=f"tags.kind = '{KIND}' and tags.{KEY_TAG} = '{key}' and attributes.status = 'FINISHED'",
        order_by=["attributes.start_time DESC"], max_results=1,
    )
    if not runs:
        return None
    params = dict(runs[0].data.params)
    try:
        k0, k1 = float(params[RESULT + "k0"]), float(params[RESULT + "k1"])
    except (KeyError, ValueError):
        return None  # a finished run without its result is no result
    return FoundRangeTest(runs[0].info.run_id, k0, k1, params)


@contextmanager
def open_range_test(uri: str, experiment: str, run_name: str, key: str, tags: Mapping[str, object],
                    flush_every: int = 500) -> Iterator:
    """Create a ``kind=range_test`` run and yield its recorder (:class:`~pipeline.tracking.recorder.RunRecorder`);
    it ends FINISHED, or FAILED with the error, as every run does."""
    from pipeline.tracking.recorder import open_run

    experiment_id = store.prepare(uri, experiment)
    with open_run(uri, experiment_id, run_name, {**tags, "kind": KIND, KEY_TAG: key}, flush_every) as recorder:
        yield recorder


def end_abandoned(uri: str, experiment: str, key: str) -> list[str]:
    """End as KILLED the range-test runs with ``key`` left RUNNING by a process that died (kill -9, a lost machine);
    called by the one process that holds the test's lock, so none of them is still being written. Returns their ids."""
    from mlflow.entities import RunTag

    mlflow_client = store.client(uri)
    found = mlflow_client.get_experiment_by_name(experiment)
    if found is None:
        return []
    stale = mlflow_client.search_runs(
        [found.experiment_id],
        filter_string=f"tags.kind = '{KIND}' and tags.{KEY_TAG} = '{key}' and attributes.status = 'RUNNING'")
    tags = [RunTag("failure", "killed"), RunTag("error", "the process died before the range test finished; a later "
                                                         "range test with the same key replaced it")]
    for run in stale:
        with interrupts.deferred():  # tags and status together, as every other end of a run in tracking/
            mlflow_client.log_batch(run.info.run_id, tags=tags, synchronous=True)
            mlflow_client.set_terminated(run.info.run_id, status="KILLED")
    return [run.info.run_id for run in stale]


def artifact_uri(uri: str, run_id: str) -> str:
    """Where a run's artifacts are (to print)."""
    return store.client(uri).get_run(run_id).info.artifact_uri
