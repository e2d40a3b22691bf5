"""Where runs are stored: resolve the tracking URI, check it is usable, create the schema and experiment once.

The default store is SQLite under ``mlruns/`` (MLflow 3's file store raises unless opted in). SQLite URIs are made
absolute, because a relative one is resolved against the working directory of whichever process opens it first.
A fresh SQLite database races on its schema migration when several jobs open it at once, so :func:`prepare` creates
schema and experiment under a file lock, and sweeps call it once in the launcher before any job starts.
"""

from __future__ import annotations

import fcntl
import os
import re
import urllib.error
import urllib.request
from contextlib import contextmanager
from pathlib import Path

DEFAULT_STORE_DIR = "mlruns"
DEFAULT_DB_NAME = "mlflow.db"
# A server that does not answer /health within this many seconds is reported as unreachable before any training.
HEALTH_TIMEOUT_S = 5.0


class TrackingError(RuntimeError):
    """The tracking store cannot be used; the message says what to do about it."""


def resolve_uri(uri: str | None, root: str | os.PathLike | None = None) -> str:
    """The tracking URI to use: ``uri``, else ``$MLFLOW_TRACKING_URI``, else SQLite under ``<root>/mlruns``.

    SQLite paths are made absolute against ``root`` (default: the current directory). File-store URIs and plain paths
    are rejected with a message, since MLflow 3 refuses them.
    """
    root_path = Path(root or os.getcwd()).resolve()
    uri = uri or os.environ.get("MLFLOW_TRACKING_URI") or ""
    if not uri:
        return f"sqlite:///{root_path / DEFAULT_STORE_DIR / DEFAULT_DB_NAME}"
    if uri.startswith("sqlite:///"):
        path = Path(uri[len("sqlite:///"):])
        if not path.is_absolute():
            path = root_path / path
        return f"sqlite:///{path}"
    if uri.startswith(("http://", "https://", "postgresql", "mysql", "mssql", "databricks")):
        return uri
    raise TrackingError(
        f"tracking.uri={uri!r} is not supported: use an sqlite:///path/to/mlflow.db URI, a database URI "
        "(postgresql://...) or a tracking server (http://host:port). MLflow 3 no longer writes file stores."
    )


def sqlite_path(uri: str) -> Path | None:
    """The database file of an ``sqlite:///`` URI, or None for other stores."""
    return Path(uri[len("sqlite:///"):]) if uri.startswith("sqlite:///") else None


def check_reachable(uri: str) -> None:
    """Fail within seconds, before any training, if the store cannot be used."""
    db = sqlite_path(uri)
    if db is not None:
        try:
            db.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise TrackingError(f"tracking.uri: cannot create the store folder {db.parent}: {exc}") from exc
        if not os.access(db.parent, os.W_OK):
            raise TrackingError(f"tracking.uri: the store folder {db.parent} is not writable")
        return
    if uri.startswith(("http://", "https://")):
        url = uri.rstrip("/") + "/health"
        try:
            with urllib.request.urlopen(url, timeout=HEALTH_TIMEOUT_S) as resp:
                if resp.status != 200:
                    raise TrackingError(f"tracking server {uri} answered {resp.status} on /health")
        except urllib.error.HTTPError as exc:
            if exc.code in (401, 403):
                return  # the server is up and asks for credentials; MLflow reads them from the environment
            raise TrackingError(f"tracking server {uri} answered {exc.code} on /health") from exc
        except (urllib.error.URLError, OSError) as exc:
            raise TrackingError(
                f"tracking server {uri} is unreachable ({getattr(exc, 'reason', exc)}); start it (make server) "
                "or unset MLFLOW_TRACKING_URI / tracking.uri to use the local SQLite store"
            ) from exc


@contextmanager
def _store_lock(uri: str):
    """Serialise schema creation on a local SQLite store across processes (no-op for other stores)."""
    db = sqlite_path(uri)
    if db is None:
        yield
        return
    db.parent.mkdir(parents=True, exist_ok=True)
    with open(db.with_suffix(db.suffix + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


# MLflow's HTTP client retries a dead server for minutes by default (and logs a line per retry). Here one request
# is one try of at most 10 s: the recorder's sender thread retries metric writes in the background, so it notices
# an outage, and its end, within seconds; the writes a run waits for have the recorder's own retries.
HTTP_DEFAULTS = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "10",
}


def client(uri: str):
    """An MlflowClient bound to ``uri`` (imported lazily: mlflow costs seconds to import)."""
    for key, value in HTTP_DEFAULTS.items():
        os.environ.setdefault(key, value)
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=uri)


def prepare(uri: str, experiment: str) -> str:
    """Create the schema (if new) and the experiment (if missing), safely across processes; return its id."""
    from mlflow.exceptions import MlflowException

    if not experiment or not str(experiment).strip():
        raise TrackingError("tracking.experiment must be a non-empty name")
    check_reachable(uri)
    with _store_lock(uri):
        mlflow_client = client(uri)
        found = mlflow_client.get_experiment_by_name(experiment)
        if found is not None:
            if found.lifecycle_stage == "deleted":
                raise TrackingError(
                    f"tracking.experiment={experiment!r} is deleted in {uri}; restore it in the MLflow UI or "
                    "choose another name"
                )
            return found.experiment_id
        db = sqlite_path(uri)
        location = None
        if db is not None:
            # Artifacts beside the database, so the whole local store is one folder.
            location = str(db.parent / "artifacts" / re.sub(r"[^A-Za-z0-9._-]+", "_", experiment))
        try:
            return mlflow_client.create_experiment(experiment, artifact_location=location)
        except MlflowException:
            # Another process created it between our lookup and create (only possible for non-SQLite stores).
            found = mlflow_client.get_experiment_by_name(experiment)
            if found is None:
                raise
            return found.experiment_id
