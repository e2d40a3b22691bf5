"""Metric writes go through a background sender: a tracking store that is down or slow never holds up training,
and no value is lost, doubled or stored out of order. A real SQLite store behind a client whose metric writes can
be made to fail (a dead server) or to wait (a request under way)."""

import os
import signal
import threading
import time

import pytest
from mlflow.tracking import MlflowClient

from pipeline.tracking import interrupts, sender, spool, store
from pipeline.tracking.recorder import open_run


class FlakyClient:
    """An MlflowClient on a SQLite store whose metric writes raise while ``down`` is set, like a dead tracking
    server, and wait while ``gate`` is closed, like a slow one. Records the steps of each write the store took."""

    def __init__(self, uri: str):
        self.inner = MlflowClient(uri)
        self.tracking_uri = uri
        self.down = False
        self.gate = threading.Event()
        self.gate.set()
        self.in_flight = threading.Event()
        self.refused = 0  # metric writes that failed
        self.stored_steps: list[tuple[str, int]] = []

    def log_batch(self, run_id, metrics=(), params=(), tags=(), synchronous=True):
        if metrics:
            self.in_flight.set()
            self.gate.wait()
            if self.down:
                self.refused += 1
                raise ConnectionError("[Errno 111] Connection refused")
        self.inner.log_batch(run_id, metrics=metrics, params=params, tags=tags, synchronous=synchronous)
        self.stored_steps += [(m.key, m.step) for m in metrics]

    def __getattr__(self, name):
        return getattr(self.inner, name)


@pytest.fixture(scope="module")
def shared_store(tmp_path_factory):
    """One SQLite store for the module (a new one costs seconds of schema migrations); each test has its own runs."""
    uri = f"sqlite:///{tmp_path_factory.mktemp('store')}/mlflow.db"
    return uri, store.prepare(uri, "outage")


@pytest.fixture
def flaky(shared_store, tmp_path, monkeypatch):
    """A flaky client, the experiment's id, a private spool folder and short retry waits (the outages are short)."""
    monkeypatch.setattr(sender, "RETRY_BASE_S", 0.01)
    monkeypatch.setattr(sender, "RETRY_MAX_S", 0.05)
    monkeypatch.setenv(spool.SPOOL_ENV, str(tmp_path / "spool"))
    uri, experiment_id = shared_store
    return FlakyClient(uri), experiment_id


def _wait_until(condition, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "not reached in time"
        time.sleep(0.01)


def _steps(client, run_id, key):
    return sorted(m.step for m in client.inner.get_metric_history(run_id, key))


def test_values_logged_while_the_store_is_down_are_kept_then_sent_in_order_with_one_line_each_way(flaky, capfd):
    client, experiment_id = flaky
    with open_run(client, experiment_id, "r", {}, flush_every=100) as rec:
        for step in range(300):
            rec.metric("lr", 0.1, step)
        _wait_until(lambda: not rec.unsent())
        client.down = True
        for step in range(300, 3000):  # 27 flushes while the store is down: each returns at once
            rec.metric("lr", 0.1, step)
            rec.metric("train/loss", 1.0, step)
        assert len(rec.unsent()) == 2 * 2700  # all kept
        _wait_until(lambda: client.refused >= 2)  # the sender has met the outage, and retried
        client.down = False
        _wait_until(lambda: not rec.unsent())
    run_id = rec.run_id
    assert _steps(client, run_id, "lr") == list(range(3000))
    assert _steps(client, run_id, "train/loss") == list(range(300, 3000))
    # Sent in the order logged: the store held a prefix of each key's steps at every moment (resume relies on it).
    for key in ("lr", "train/loss"):
        stored = [step for k, step in client.stored_steps if k == key]
        assert stored == sorted(stored) and len(stored) == len(set(stored)), key
    assert client.inner.get_run(run_id).info.status == "FINISHED"
    lines = capfd.readouterr().err.splitlines()
    assert len([line for line in lines if "tracking store unavailable" in line]) == 1, lines
    assert len([line for line in lines if "tracking store is back" in line]) == 1, lines


def test_a_batch_in_flight_stays_unsent_until_the_store_confirms_it(flaky):
    client, experiment_id = flaky
    with open_run(client, experiment_id, "r", {}, flush_every=10) as rec:
        client.gate.clear()
        for step in range(10):
            rec.metric("lr", 0.1, step)  # the 10th hands the buffer to the sender, which waits inside the write
        client.in_flight.wait(timeout=30)
        assert rec.pending == 0 and [v[3] for v in rec.unsent()] == list(range(10))  # a checkpoint would keep them
        client.gate.set()
        _wait_until(lambda: not rec.unsent())
        assert _steps(client, rec.run_id, "lr") == list(range(10))


def test_a_run_that_ends_while_the_store_is_down_is_spooled_whole_and_resent(flaky, tmp_path):
    client, experiment_id = flaky
    with pytest.raises(store.TrackingError, match="pipeline.tracking.spool"):
        with open_run(client, experiment_id, "r", {}, flush_every=50) as rec:
            for step in range(100):
                rec.metric("lr", 0.1, step)
            _wait_until(lambda: not rec.unsent())
            client.down = True
            for step in range(100, 230):
                rec.metric("lr", 0.1, step)
    assert [f.stem for f in (tmp_path / "spool").glob("*.json")] == [rec.run_id]
    client.down = False
    assert spool.resend(tmp_path / "spool") == 1
    assert _steps(client, rec.run_id, "lr") == list(range(230))
    assert client.inner.get_run(rec.run_id).info.status == "FINISHED"


def test_no_sender_thread_outlives_its_run(flaky):
    client, experiment_id = flaky
    before = threading.active_count()
    for i in range(6):
        client.down = i % 3 == 2  # every third run ends with the store down: spooled
        try:
            with open_run(client, experiment_id, f"r{i}", {}, flush_every=5) as rec:
                for step in range(20):
                    rec.metric("lr", 0.1, step)
        except store.TrackingError:
            pass
        assert threading.active_count() == before, i


def test_ctrl_c_while_the_sender_is_writing_ends_the_run_killed_with_every_value_once(flaky):
    client, experiment_id = flaky
    with interrupts.signals_as_interrupt():
        with pytest.raises(KeyboardInterrupt):
            with open_run(client, experiment_id, "r", {}, flush_every=50) as rec:
                client.gate.clear()
                for step in range(120):
                    rec.metric("lr", 0.1, step)
                client.in_flight.wait(timeout=30)
                threading.Timer(0.3, client.gate.set).start()  # the write under way ends after the signal
                os.kill(os.getpid(), signal.SIGINT)
                time.sleep(30)  # the signal lands here
    run = client.inner.get_run(rec.run_id)
    assert run.info.status == "KILLED" and run.data.tags["failure"] == "killed"
    assert _steps(client, rec.run_id, "lr") == list(range(120))
