"""Ctrl-C and SIGTERM during a run: held while a store write is under way, then the run ends KILLED."""

import os
import signal
import threading
import time

import pytest
from mlflow.tracking import MlflowClient

from pipeline.tracking import interrupts, store
from pipeline.tracking.recorder import open_run


def _signal_self(sig=signal.SIGINT):
    os.kill(os.getpid(), sig)
    time.sleep(0.01)  # the handler runs in the main thread at the next bytecode; make sure it has


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_outside_a_store_write_interrupts_at_once(sig):
    done = []
    with interrupts.signals_as_interrupt():
        with pytest.raises(KeyboardInterrupt):
            _signal_self(sig)
            done.append("after")
    assert done == []


def test_a_signal_inside_a_store_write_waits_for_it_then_interrupts():
    done = []
    with interrupts.signals_as_interrupt():
        with pytest.raises(KeyboardInterrupt, match="held"):
            with interrupts.deferred():
                with interrupts.deferred():  # nested blocks: raised when the outermost ends
                    _signal_self()
                    done.append("inner")
                done.append("outer")
            done.append("after")
    assert done == ["inner", "outer"]


def test_a_second_signal_stops_at_once_even_inside_a_store_write():
    done = []
    with interrupts.signals_as_interrupt():
        with pytest.raises(KeyboardInterrupt):
            with interrupts.deferred():
                _signal_self()
                done.append("held")
                _signal_self()
                done.append("not reached")
    assert done == ["held"]


def test_previous_handlers_come_back_after_the_run():
    before = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    with interrupts.signals_as_interrupt():
        assert signal.getsignal(signal.SIGINT) is not before[0]
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == before


@pytest.mark.slow
def test_ctrl_c_at_any_point_of_a_flush_ends_the_run_killed_with_every_value_once(tmp_path):
    """A KeyboardInterrupt inside MLflow's SQLite transaction used to leak the write lock: every later write waited
    20 s and failed, and the run could not be marked KILLED. Interrupt flushes at points spread over a whole write."""
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    experiment_id = store.prepare(uri, "ctrl-c")
    client = store.client(uri)
    steps = 3000
    start = time.perf_counter()
    with open_run(client, experiment_id, "timing", {}, flush_every=10**6) as rec:
        for step in range(steps):
            rec.metric("lr", 0.1, step)
        rec.flush()
    flush_s = time.perf_counter() - start
    for i in range(12):
        offset = flush_s * i / 10
        with interrupts.signals_as_interrupt():
            with pytest.raises(KeyboardInterrupt):
                with open_run(client, experiment_id, f"r{i}", {}, flush_every=10**6) as rec:
                    rec.retries = 1  # a locked store would fail fast instead of retrying for minutes
                    for step in range(steps):
                        rec.metric("lr", 0.1, step)
                    threading.Timer(offset, os.kill, (os.getpid(), signal.SIGINT)).start()
                    rec.flush()
                    time.sleep(30)  # the signal lands here at the latest
        run = MlflowClient(uri).get_run(rec.run_id)
        assert run.info.status == "KILLED", (i, offset)
        assert run.data.tags["failure"] == "killed"
        assert sorted(m.step for m in client.get_metric_history(rec.run_id, "lr")) == list(range(steps)), (i, offset)
