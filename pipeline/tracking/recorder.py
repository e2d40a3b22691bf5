"""Write one MLflow run: params, tags, artifacts, and metrics through a buffer and a background sender.

Each synchronous SQLite write costs about 5 ms, so per-step series (``lr``, ``train/loss``) are kept in memory and
every ``flush_every`` values handed to the run's sender thread (``sender.py``), which writes them in batches of at
most 1,000 while training goes on, and keeps them while the store is down. Params, tags and artifacts are written
at once. A run always ends with a status: FINISHED, FAILED (with ``failure`` and ``error`` tags) or KILLED, never
left RUNNING; values the store did not take by then are spooled to disk (``spool.py``).
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from pipeline.tracking import interrupts
from pipeline.tracking.sender import Sender, retry_wait_s

# MLflow's per-request limits for log_batch (metrics: see sender.py).
MAX_PARAMS_PER_BATCH = 100
MAX_PARAM_CHARS = 6000
MAX_TAG_CHARS = 8000
# Transient store errors (a busy server, a locked database) in a write the run waits for are retried this many
# times, waiting as the sender does (0.5 s, 1 s, 2 s, ...).
RETRIES = 4


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
    """A handle on one open run, used from one thread (its sender thread is internal); one per job (rank 0 only
    under DDP)."""

    def __init__(self, mlflow_client, run_id: str, flush_every: int = 500):
        if flush_every < 1:
            raise ValueError(f"flush_every must be >= 1 metric, got {flush_every}")
        self.client = mlflow_client
        self.run_id = run_id
        self.flush_every = flush_every
        self.retries = RETRIES
        self._buffer: list = []  # values since the last flush, not yet handed to the sender
        self._sender = Sender(self._send_metrics, name=run_id[:8])
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
        if len(self._buffer) >= self.flush_every:
            self.flush()

    def metrics(self, values: Mapping[str, float], step: int) -> None:
        ts = int(time.time() * 1000)
        for key, value in values.items():
            if value is None or (isinstance(value, float) and math.isnan(value) and key.startswith("summary/")):
                continue  # a summary that does not exist (e.g. a target never reached) is absent, not NaN
            self.metric(key, value, step, ts)

    def flush(self, final: bool = False) -> None:
        """Hand the buffered values to the sender thread and return at once: safe in any training hook, since
        nothing here waits for the store (a store that is down only delays the values, see ``sender.py``).

        ``final`` (the end of the run): send everything now and wait, retrying (once only if the store is known to
        be down); the error rises if the store still fails, and ``finish`` spools.
        """
        with interrupts.deferred():  # the buffer changes hands whole: an interrupt cannot fall in between
            values, self._buffer = self._buffer, []
            if final:
                self._sender.drain(self.retries, values)
            else:
                self._sender.put(values)

    def _send_metrics(self, batch: list) -> None:
        # Called from the sender thread, or from the main thread inside flush(final=True)'s deferred block.
        self.client.log_batch(self.run_id, metrics=batch, synchronous=True)

    def recorded_params(self) -> dict[str, str]:
        """The params the store holds for this run (a resumed run may have recorded some already)."""
        return dict(self._with_retries(lambda: self.client.get_run(self.run_id)).data.params)

    def unsent(self) -> list[tuple[str, float, int, int]]:
        """Values the store has not confirmed (queued, in flight or buffered) as (key, value, timestamp_ms, step),
        oldest first: what a checkpoint keeps, so that none is lost if the process dies before they are sent."""
        return [(m.key, m.value, m.timestamp, m.step) for m in [*self._sender.unsent(), *self._buffer]]

    def requeue(self, values) -> None:
        """Buffer values a checkpoint kept (:meth:`unsent`); those the store already holds are skipped."""
        for key, value, timestamp_ms, step in values:
            self.metric(key, value, step, timestamp_ms)

    @property
    def pending(self) -> int:
        """Values buffered for the next flush (not yet handed to the sender)."""
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

            path = spool.write(self.client.tracking_uri, self.run_id, self._sender.take(), end_tags, status)
            raise TrackingError(
                f"the tracking store did not answer at the end of run {self.run_id} ({type(exc).__name__}); its "
                f"unsent metrics and final status ({status}) are kept in {path}; send them when the store is back "
                "with: python -m pipeline.tracking.spool"
            ) from exc

    def _with_retries(self, call):
        """Call a store write the run waits for (main thread), retrying transient errors; never interrupted half-way."""
        for attempt in range(self.retries + 1):
            try:
                with interrupts.deferred():  # never stop inside a store write (see interrupts.py)
                    return call()
            except Exception:  # noqa: BLE001 - MLflow raises many types for transient faults
                if attempt == self.retries:
                    raise
                time.sleep(retry_wait_s(attempt + 1))


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
            # The earlier attempt's ending (killed, crashed) is not this one's: a resumed run that finishes is not
            # tagged failure=killed.
            stale = mlflow_client.get_run(run_id).data.tags
            for key in ("failure", "error"):
                if key in stale:
                    mlflow_client.delete_tag(run_id, key)
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
