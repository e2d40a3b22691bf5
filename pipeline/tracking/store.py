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
from contextlib import closing, contextmanager
from pathlib import Path

DEFAULT_STORE_DIR = "mlruns"
DEFAULT_DB_NAME = "mlflow.db"
# A server that does not answer /health within this many seconds is reported as unreachable before any training.
HEALTH_TIMEOUT_S = 5.0


class TrackingError(RuntimeError):
    """The tracking store cannot be used; the message says what to do about it."""


# A URI's password (``scheme://user:PASSWORD@host``, also as Hydra prints overrides: ``\://user\:PASSWORD@``; it may
# hold ``@``, so it runs to the last ``@`` before a space or quote) and password-like query values (``?password=``).
_USERINFO = re.compile(r"(?P<head>[A-Za-z][A-Za-z0-9+.-]*\\?://[^\s/@:'\"\\]*)\\?:[^\s'\"]*@")
_QUERY_SECRET = re.compile(r"(?P<head>[?&;](?:password|passwd|pwd|secret|token|access_token|api_key)=)[^&;\s'\"]*",
                           re.IGNORECASE)
# Seconds to wait for a database to accept a TCP connection, then a login, before saying it cannot be used.
CONNECT_TIMEOUT_S = 5
DEFAULT_PORTS = {"postgresql": 5432, "mysql": 3306, "mssql": 1433}
# Database drivers MLflow can use here if installed: (module, URI form), for the message naming supported URIs.
DRIVERS = (("psycopg2", "postgresql+psycopg2://user:password@host:port/db"),
           ("pymysql", "mysql+pymysql://user:password@host:port/db"),
           ("MySQLdb", "mysql://user:password@host:port/db"),
           ("pyodbc", "mssql+pyodbc://user:password@host:port/db"))
# Drivers whose connect() takes a connect_timeout in seconds (the login probe uses it; others get the TCP probe only).
TIMEOUT_DRIVERS = ("psycopg2", "pymysql", "mysqldb")


def public_uri(text: str) -> str:
    """``text`` (a URI, or any line holding URIs) with every password masked: ``postgresql://user:****@host/db``.

    The one mask for everything the project prints or records; :mod:`pipeline.redaction` applies it to the
    process's own output and logs."""
    text = _USERINFO.sub(r"\g<head>:****@", str(text))
    return _QUERY_SECRET.sub(r"\g<head>****", text)


def supported_uris() -> str:
    """The tracking URIs that work with what is installed here, for error messages."""
    import importlib.util

    forms = ["sqlite:///path/to/mlflow.db", "http(s)://host:port (an MLflow server)"]
    forms += [form for module, form in DRIVERS if importlib.util.find_spec(module) is not None]
    return ", ".join(forms)


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
        f"tracking.uri={public_uri(uri)!r} is not supported: use {supported_uris()}. "
        "MLflow 3 no longer writes file stores."
    )


def sqlite_path(uri: str) -> Path | None:
    """The database file of an ``sqlite:///`` URI, or None for other stores."""
    return Path(uri[len("sqlite:///"):]) if uri.startswith("sqlite:///") else None


def check_reachable(uri: str, write: bool = True, create: bool = True) -> None:
    """Fail within seconds, before any training, if the store cannot be used: ``write`` (runs are written to it),
    ``create`` (a missing SQLite store may be created; else it is an error)."""
    db = sqlite_path(uri)
    if db is not None:
        _check_sqlite(db, write, create)
    elif uri.startswith(("http://", "https://")):
        _check_server(uri)
    elif uri.startswith(("postgresql", "mysql", "mssql")):
        _check_database(uri)


def _check_sqlite(db: Path, write: bool, create: bool) -> None:
    import sqlite3

    from pipeline.arguments import writable_folder

    if not db.exists():
        if not create:
            raise TrackingError(f"tracking.uri: no MLflow store at {db}; run a job first, or point tracking.uri "
                                "(or MLFLOW_TRACKING_URI) at an existing store")
        try:  # a real write, not os.access: root passes os.access where the kernel still refuses (/proc, read-only)
            writable_folder(f"tracking.uri=sqlite:///{db}", db.parent)
        except ValueError as exc:
            raise TrackingError(str(exc)) from None
        return
    try:
        with closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=CONNECT_TIMEOUT_S)) as con:
            tables = {row[0] for row in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    except sqlite3.Error as exc:
        raise TrackingError(f"tracking.uri: {db} is not a readable SQLite database ({exc}); point tracking.uri at "
                            "an MLflow store, or move the file away to start a new one") from None
    if tables and "experiments" not in tables:
        raise TrackingError(f"tracking.uri: {db} is an SQLite database but not an MLflow store (no experiments "
                            "table); point tracking.uri at an MLflow store")
    if not write:
        return
    if not os.access(db, os.W_OK):
        raise TrackingError(f"tracking.uri: the store {db} is read-only; make it writable (chmod u+w), or point "
                            "tracking.uri at a writable store")
    if not os.access(db.parent, os.W_OK | os.X_OK):  # SQLite writes its journal beside the database
        raise TrackingError(f"tracking.uri: the folder {db.parent} of the store is read-only (SQLite writes its "
                            "journal there); make it writable, or point tracking.uri at a writable store")


def _check_server(uri: str) -> None:
    import base64
    from urllib.parse import unquote, urlsplit

    parts = urlsplit(uri)
    request = urllib.request.Request(parts._replace(netloc=parts.netloc.rpartition("@")[2]).geturl().rstrip("/")
                                     + "/health")
    if parts.username is not None:  # urllib takes no user:password@ in the URL; MLflow sends it as basic auth
        token = f"{unquote(parts.username)}:{unquote(parts.password or '')}".encode()
        request.add_header("Authorization", "Basic " + base64.b64encode(token).decode("ascii"))
    shown = public_uri(uri)
    try:
        with urllib.request.urlopen(request, timeout=HEALTH_TIMEOUT_S) as resp:
            if resp.status != 200:
                raise TrackingError(f"tracking.uri={shown}: the tracking server answered {resp.status} on /health")
    except urllib.error.HTTPError as exc:
        if exc.code in (401, 403):
            return  # the server is up and asks for credentials; MLflow reads them from the environment
        raise TrackingError(f"tracking.uri={shown}: the tracking server answered {exc.code} on /health") from None
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise TrackingError(
            f"tracking.uri={shown}: the tracking server is unreachable ({getattr(exc, 'reason', exc)}); start it "
            "(make server) or unset MLFLOW_TRACKING_URI / tracking.uri to use the local SQLite store"
        ) from None


def _check_database(uri: str) -> None:
    """The driver is installed, the host answers on its port and the login works, each within seconds (MLflow
    itself retries an unreachable database for minutes)."""
    import socket

    from sqlalchemy import create_engine
    from sqlalchemy import exc as sa_exc
    from sqlalchemy.engine import make_url
    from sqlalchemy.pool import NullPool

    shown = public_uri(uri)
    try:
        url = make_url(uri)
        url.get_dialect().import_dbapi()
    except sa_exc.ArgumentError as exc:
        raise TrackingError(f"tracking.uri={shown} is not a database URI ({exc}); use {supported_uris()}") from None
    except (ImportError, sa_exc.NoSuchModuleError) as exc:
        raise TrackingError(f"tracking.uri={shown}: the driver for {url.drivername}:// is not installed ({exc}); "
                            f"supported here: {supported_uris()}") from None
    backend = url.get_backend_name()
    if url.host and "host" not in url.query:  # no host: a Unix socket, which the login probe below covers
        port = url.port or DEFAULT_PORTS.get(backend)
        try:
            socket.create_connection((url.host, port), timeout=CONNECT_TIMEOUT_S).close()
        except OSError as exc:
            raise TrackingError(f"tracking.uri={shown}: nothing answers at {url.host}:{port} "
                                f"({exc.strerror or exc}); start the database (make postgres) or fix host and port, "
                                "or unset MLFLOW_TRACKING_URI / tracking.uri to use the local SQLite store") from None
    if url.get_driver_name() not in TIMEOUT_DRIVERS:
        return
    engine = create_engine(url, poolclass=NullPool, connect_args={"connect_timeout": CONNECT_TIMEOUT_S})
    try:
        with engine.connect():
            pass
    except sa_exc.SQLAlchemyError as exc:
        reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
        if url.password:
            reason = reason.replace(url.password, "****")
        raise TrackingError(f"tracking.uri={shown}: cannot log in ({public_uri(reason)}); check the user, password "
                            "and database name") from None
    finally:
        engine.dispose()


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
                    f"tracking.experiment={experiment!r} is deleted in {public_uri(uri)}; restore it in the MLflow UI "
                    "or choose another name"
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
