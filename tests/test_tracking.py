"""The tracking stage against a real SQLite MLflow store in a temp dir."""

import multiprocessing

import pytest
from mlflow.tracking import MlflowClient

from pipeline.tracking import store
from pipeline.tracking.recorder import RunRecorder, flatten, open_run


def test_default_uri_is_an_absolute_sqlite_path_under_mlruns(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert store.resolve_uri(None, tmp_path) == f"sqlite:///{tmp_path}/mlruns/mlflow.db"
    assert store.resolve_uri("sqlite:///rel/x.db", tmp_path) == f"sqlite:///{tmp_path}/rel/x.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5999")
    assert store.resolve_uri(None, tmp_path) == "http://127.0.0.1:5999"


@pytest.mark.parametrize("uri", ["file:./mlruns", "./mlruns", "s3://bucket"])
def test_file_store_and_unknown_uris_are_rejected_with_advice(uri):
    with pytest.raises(store.TrackingError, match="sqlite:///"):
        store.resolve_uri(uri)


def test_unreachable_server_is_reported_within_seconds():
    # Port 9 (discard) on loopback: nothing listens there in the test sandbox.
    with pytest.raises(store.TrackingError, match="unreachable"):
        store.check_reachable("http://127.0.0.1:9")


def _prepare(uri):
    return store.prepare(uri, "race")


def test_fresh_store_prepared_by_four_processes_at_once_gives_one_experiment(tmp_path):
    uri = f"sqlite:///{tmp_path}/fresh/mlflow.db"
    with multiprocessing.get_context("spawn").Pool(4) as pool:
        ids = pool.map(_prepare, [uri] * 4)
    assert len(set(ids)) == 1
    names = [e.name for e in MlflowClient(uri).search_experiments()]
    assert names.count("race") == 1


def test_recorder_buffers_metrics_and_writes_them_all(tmp_path):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    experiment_id = store.prepare(uri, "buf")
    client = store.client(uri)
    with open_run(client, experiment_id, "r", {"policy": "fix"}, flush_every=1000) as rec:
        for step in range(2500):
            rec.metric("lr", 0.1, step)
        assert rec.pending == 500  # two full batches already sent
    history = client.get_metric_history(rec.run_id, "lr")
    assert sorted(m.step for m in history) == list(range(2500))
    assert client.get_run(rec.run_id).info.status == "FINISHED"


def test_run_ends_failed_with_the_error_when_the_block_raises(tmp_path):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    client = store.client(uri)
    with pytest.raises(RuntimeError):
        with open_run(client, store.prepare(uri, "e"), "r", {}) as rec:
            rec.metric("lr", 1.0, 0)
            raise RuntimeError("boom")
    run = client.get_run(rec.run_id)
    assert run.info.status == "FAILED"
    assert run.data.tags["failure"] == "error" and "boom" in run.data.tags["error"]
    assert run.data.metrics["lr"] == 1.0  # buffered values are written before the run ends


def test_interrupted_run_ends_killed(tmp_path):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    client = store.client(uri)
    with pytest.raises(KeyboardInterrupt):
        with open_run(client, store.prepare(uri, "k"), "r", {}) as rec:
            raise KeyboardInterrupt
    assert client.get_run(rec.run_id).info.status == "KILLED"


def test_a_run_marked_failed_ends_failed_without_an_exception(tmp_path):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    client = store.client(uri)
    with open_run(client, store.prepare(uri, "d"), "r", {}) as rec:
        rec.fail("diverged", "loss nan at step 3")
    run = client.get_run(rec.run_id)
    assert run.info.status == "FAILED" and run.data.tags["failure"] == "diverged"


def test_flatten_joins_nested_keys_with_dots():
    assert flatten({"a": {"b": 1, "c": {"d": [1, 2]}}, "e": None}) == {"a.b": "1", "a.c.d": "[1, 2]", "e": "None"}


def test_recorder_rejects_a_zero_flush_interval():
    with pytest.raises(ValueError, match="flush_every"):
        RunRecorder(None, "x", flush_every=0)
