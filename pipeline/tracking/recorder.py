"""Write one MLflow run: params, tags, artifacts, and metrics through a buffer.

Each synchronous SQLite write costs about 5 ms, so per-step series (``lr``, ``train/loss``) are kept in memory and
sent with one ``log_batch`` per flush (at most 1,000 metrics each, MLflow's limit). A run always ends with a
status: FINISHED, FAILED (with ``failure`` and ``error`` tags) or KILLED, never left RUNNING.
"""

from __future__ import annotations

import math
import sys
import time
from contextlib import contextmanager
from typing import Any, Iterator, Mapping

from pipeline.tracking import interrupts

# MLflow's per-request limits for log_batch.
MAX_METRICS_PER_BATCH = 1000
MAX_PARAMS_PER_BATCH = 100
MAX_PARAM_CHARS = 6000
MAX_TAG_CHARS = 8000
# Transient store errors (a busy server, a locked database) are retried this many times, waiting 2**i * base.
RETRIES = 4
RETRY_BASE_S = 0.5


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """Flatten nested mappings to ``a.b.c`` keys with string values (lists become their repr)."""
    flat: dict[str, str] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = str(value)[:MAX_PARAM_CHARS]
    return flat


class RunRecorder:
    """A handle on one open run. Not thread-safe; one per job (rank 0 only under DDP)."""

    def __init__(self, mlflow_client, run_id: str, flush_every: int = 500):
        if flush_every < 1:
            raise ValueError(f"flush_every must be >= 1 metric, got {flush_every}")
        self.client = mlflow_client
        self.run_id = run_id
        self.flush_every = flush_every
        self.retries = RETRIES
        self._buffer: list = []
        self._flush_at = flush_every
        # Per metric key, the last step already in the store: a resumed run re-computes the steps between its
        # checkpoint and the crash, and those must not be written twice.
        self.floor: dict[str, int] = {}
        self.failure: str | None = None  # set by fail(); the run then ends FAILED even without an exception
        self.error: str | None = None
        self.open_after = False  # set by keep_open(): a normal end flushes but leaves the run RUNNING

    # -- metrics -------------------------------------------------------------------------------------------
    def metric(self, key: str, value: float, step: int, timestamp_ms: int | None = None) -> None:
        from mlflow.entities import Metric

        if step <= self.floor.get(key, -1):
            return
        ts = timestamp_ms if timestamp_ms is not None else int(time.time() * 1000)
        self._buffer.append(Metric(key=key, value=float(value), timestamp=ts, step=int(step)))
        if len(self._buffer) >= self._flush_at:
            self.flush()

    def metrics(self, values: Mapping[str, float], step: int) -> None:
        ts = int(time.time() * 1000)
        for key, value in values.items():
            if value is None or (isinstance(value, float) and math.isnan(value) and key.startswith("summary/")):
                continue  # a summary that does not exist (e.g. a target never reached) is absent, not NaN
            self.metric(key, value, step, ts)

    def flush(self, final: bool = False) -> None:
        """Send buffered metrics in batches of at most 1,000.

        A store that fails after the retries keeps the values buffered (nothing is dropped): mid-run training goes
        on and a later flush tries again; at the end of the run (``final``) the error rises and ``finish`` spools.
        """
        try:
            while self._buffer:
                chunk = self._buffer[:MAX_METRICS_PER_BATCH]

                def send():  # sent and dropped from the buffer together: an interrupt cannot fall in between
                    self.client.log_batch(self.run_id, metrics=chunk, synchronous=True)
                    del self._buffer[: len(chunk)]

                self._with_retries(send)
            self._flush_at = self.flush_every
        except Exception as exc:  # noqa: BLE001
            if final:
                raise
            self._flush_at = len(self._buffer) + self.flush_every  # try again after as many new values
            print(f"warning: tracking store unavailable ({type(exc).__name__}); {len(self._buffer)} metric values "
                  "kept in memory and sent later", file=sys.stderr, flush=True)

    def unsent(self) -> list[tuple[str, float, int, int]]:
        """The buffered values as (key, value, timestamp_ms, step): what a checkpoint keeps if the store is down."""
        return [(m.key, m.value, m.timestamp, m.step) for m in self._buffer]

    def requeue(self, values) -> None:
        """Buffer values a checkpoint kept (:meth:`unsent`); those the store already holds are skipped."""
        for key, value, timestamp_ms, step in values:
            self.metric(key, value, step, timestamp_ms)

    @property
    def pending(self) -> int:
        return len(self._buffer)

    # -- params, tags, artifacts ---------------------------------------------------------------------------
    def params(self, values: Mapping[str, Any]) -> None:
        from mlflow.entities import Param

        items = [Param(k, str(v)[:MAX_PARAM_CHARS]) for k, v in values.items()]
        for i in range(0, len(items), MAX_PARAMS_PER_BATCH):
            chunk = items[i : i + MAX_PARAMS_PER_BATCH]
            self._with_retries(lambda: self.client.log_batch(self.run_id, params=chunk, synchronous=True))

    def tags(self, values: Mapping[str, Any]) -> None:
        from mlflow.entities import RunTag

        items = [RunTag(k, str(v)[:MAX_TAG_CHARS]) for k, v in values.items() if v is not None]
        if items:
            self._with_retries(lambda: self.client.log_batch(self.run_id, tags=items, synchronous=True))

    def artifact(self, path: str, artifact_path: str | None = None) -> None:
        self._with_retries(lambda: self.client.log_artifact(self.run_id, path, artifact_path))

    # -- ending --------------------------------------------------------------------------------------------
    def resume_from_store(self, keys) -> None:
        """Set the floor of each key to the last step the store already holds for this run."""
        for key in keys:
            history = self._with_retries(lambda: self.client.get_metric_history(self.run_id, key))
            if history:
                self.floor[key] = max(m.step for m in history)

    def fail(self, failure: str, error: str) -> None:
        """Mark the run as failed for a reason found during training (e.g. divergence); it ends FAILED."""
        self.failure, self.error = failure, error

    def keep_open(self) -> None:
        """Leave the run RUNNING when its block ends normally: it goes on later (a pruned study's next rung)."""
        self.open_after = True

    def finish(self, status: str, failure: str | None = None, error: str | None = None) -> None:
        """End the run with ``status``; a signal that arrives meanwhile waits until the run has ended."""
        with interrupts.deferred():
            self._finish(status, failure, error)

    def _finish(self, status: str, failure: str | None, error: str | None) -> None:
        failure = failure or self.failure
        error = error or self.error
        if failure and status == "FINISHED":
            status = "FAILED"
        end_tags = {"failure": failure or "error", "error": (error or "")[:MAX_TAG_CHARS]} if failure or error else {}
        try:
            self.flush(final=True)
            if status == "FINISHED" and self.open_after:
                return
            if end_tags:
                self.tags(end_tags)
            self._with_retries(lambda: self.client.set_terminated(self.run_id, status=status))
        except Exception as exc:  # noqa: BLE001 - the store stays down: keep everything on disk
            from pipeline.tracking import spool
            from pipeline.tracking.store import TrackingError

            path = spool.write(self.client.tracking_uri, self.run_id, self._buffer, end_tags, status)
            self._buffer = []
            raise TrackingError(
                f"the tracking store did not answer at the end of run {self.run_id} ({type(exc).__name__}); its "
                f"unsent metrics and final status ({status}) are kept in {path}; send them when the store is back "
                "with: python -m pipeline.tracking.spool"
            ) from exc

    def _with_retries(self, call):
        for attempt in range(self.retries + 1):
            try:
                with interrupts.deferred():  # never stop inside a store write (see interrupts.py)
                    return call()
            except Exception:  # noqa: BLE001 - MLflow raises many types for transient faults
                if attempt == self.retries:
                    raise
                time.sleep(RETRY_BASE_S * 2**attempt)


@contextmanager
def open_run(
    store_or_client,
    experiment_id: str,
    run_name: str,
    tags: Mapping[str, Any],
    flush_every: int = 500,
    resume_run_id: str | None = None,
    parent_run_id: str | None = None,
) -> Iterator[RunRecorder]:
    """Create a run (or reopen ``resume_run_id``) in the store at a tracking URI (or through an MlflowClient) and
    yield its recorder; ``parent_run_id`` nests it under a sweep's parent run.

    The run ends FINISHED, FAILED or KILLED however the block exits: an interrupt (Ctrl-C, SIGTERM, which Lightning
    turns into ``SystemExit``) ends it KILLED, any other exception FAILED with the error.
    """
    if isinstance(store_or_client, str):
        from pipeline.tracking.store import client

        mlflow_client = client(store_or_client)
    else:
        mlflow_client = store_or_client
    if parent_run_id:
        tags = {**tags, "mlflow.parentRunId": parent_run_id}
    with interrupts.deferred():
        if resume_run_id:
            mlflow_client.update_run(resume_run_id, status="RUNNING")
            run_id = resume_run_id
        else:
            tag_values = {k: str(v) for k, v in tags.items() if v is not None}
            run_id = mlflow_client.create_run(experiment_id, run_name=run_name, tags=tag_values).info.run_id
    recorder = RunRecorder(mlflow_client, run_id, flush_every=flush_every)
    try:
        yield recorder
    except (KeyboardInterrupt, SystemExit):
        recorder.finish("KILLED", failure="killed", error="interrupted (Ctrl-C or SIGTERM)")
        raise
    except BaseException as exc:
        recorder.finish("FAILED", failure=recorder.failure or "error", error=f"{type(exc).__name__}: {exc}")
        raise
    else:
        recorder.finish("FINISHED")
