"""Write one MLflow run: params, tags, artifacts, and metrics through a buffer.

Each synchronous SQLite write costs about 5 ms, so per-step series (``lr``, ``train/loss``) are kept in memory and
sent with one ``log_batch`` per flush (at most 1,000 metrics each, MLflow's limit). A run always ends with a
status: FINISHED, FAILED (with ``failure`` and ``error`` tags) or KILLED, never left RUNNING.
"""

from __future__ import annotations

import math
import time
from contextlib import contextmanager
from typing import Any, Iterator, Mapping

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
        self._buffer: list = []
        self.failure: str | None = None  # set by fail(); the run then ends FAILED even without an exception
        self.error: str | None = None

    # -- metrics -------------------------------------------------------------------------------------------
    def metric(self, key: str, value: float, step: int, timestamp_ms: int | None = None) -> None:
        from mlflow.entities import Metric

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

    def flush(self) -> None:
        """Send buffered metrics; on repeated failure they stay buffered (nothing is dropped) and the error rises."""
        while self._buffer:
            chunk = self._buffer[:MAX_METRICS_PER_BATCH]
            self._with_retries(lambda: self.client.log_batch(self.run_id, metrics=chunk, synchronous=True))
            del self._buffer[: len(chunk)]

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
    def fail(self, failure: str, error: str) -> None:
        """Mark the run as failed for a reason found during training (e.g. divergence); it ends FAILED."""
        self.failure, self.error = failure, error

    def finish(self, status: str, failure: str | None = None, error: str | None = None) -> None:
        failure = failure or self.failure
        error = error or self.error
        if failure and status == "FINISHED":
            status = "FAILED"
        try:
            self.flush()
        finally:
            if failure or error:
                self.tags({"failure": failure or "error", "error": (error or "")[:MAX_TAG_CHARS]})
            self._with_retries(lambda: self.client.set_terminated(self.run_id, status=status))

    def _with_retries(self, call):
        for attempt in range(RETRIES + 1):
            try:
                return call()
            except Exception:  # noqa: BLE001 - MLflow raises many types for transient faults
                if attempt == RETRIES:
                    raise
                time.sleep(RETRY_BASE_S * 2**attempt)


@contextmanager
def open_run(
    mlflow_client,
    experiment_id: str,
    run_name: str,
    tags: Mapping[str, Any],
    flush_every: int = 500,
) -> Iterator[RunRecorder]:
    """Create a run and yield its recorder; the run ends FINISHED, FAILED or KILLED however the block exits."""
    run = mlflow_client.create_run(
        experiment_id, run_name=run_name, tags={k: str(v) for k, v in tags.items() if v is not None}
    )
    recorder = RunRecorder(mlflow_client, run.info.run_id, flush_every=flush_every)
    try:
        yield recorder
    except KeyboardInterrupt:
        recorder.finish("KILLED", failure="killed", error="interrupted (Ctrl-C or SIGTERM)")
        raise
    except BaseException as exc:
        recorder.finish("FAILED", failure=recorder.failure or "error", error=f"{type(exc).__name__}: {exc}")
        raise
    else:
        recorder.finish("FINISHED")
