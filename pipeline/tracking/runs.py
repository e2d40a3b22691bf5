"""Read runs back from any MLflow store (SQLite file or tracking server) as plain pandas tables, and record the
report's own run.

This is the only analysis code that imports mlflow (lazily, inside the functions: importing this module costs no
MLflow import). Two reads, both bounded:

- :func:`load_runs`: ONE paged ``search_runs`` query for every training run of the experiments (or of one sweep),
  tags, params and the latest value of every metric included. Summaries (``summary/*`` columns) come from here: the
  ``summary.*`` params runs record now, or the ``summary/*`` metrics of runs recorded before.
  :func:`load_scope` first picks what a report reads: by default the latest sweep (see :func:`latest_sweep`).
- :func:`load_histories`: curves, only of the runs a report plots (or whose summaries lack the report's target),
  with the store's bulk history read (``get_metric_history_bulk_interval``; chunks of 100 run ids, a server's
  limit), never one call per run per metric unless the store has no bulk read at all. Finished runs never change,
  so their curves are cached in a :class:`HistoryCache` (memory, and optionally one parquet file on disk).
"""

from __future__ import annotations

import gc
import os
import re
from contextlib import contextmanager
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import pandas as pd

from pipeline.tracking import store

TRAIN_KIND = "train"
# MLflow's largest search_runs page (SEARCH_MAX_RESULTS_THRESHOLD).
PAGE_SIZE = 50_000
# A tracking server accepts at most this many run ids, and returns at most this many points per run, per bulk read.
SERVER_BULK_RUNS = 100
SERVER_MAX_POINTS = 2500
BULK_ENDPOINT = "/ajax-api/2.0/mlflow/metrics/get-history-bulk-interval"
# Runs in these states are over: their metrics never change again, so their histories may be cached.
TERMINAL_STATUSES = ("FINISHED", "FAILED", "KILLED")
# Tags copied into columns; momentum and warmup default to "none" (a constant momentum, no warm-up).
TAG_COLUMNS = ("policy", "policy_spec", "model", "dataset", "optimizer", "momentum", "warmup", "sampler", "study",
               "failure", "error", "git_commit", "run_key", "objective_metric", "objective_mode", "verifies")
# Params copied into ``param.<key>`` columns: what a report needs to rebuild or describe a policy, its budget and the
# settings a verification run repeats.
PARAM_PREFIXES = ("policy.", "optimizer.", "trainer.", "warmup.", "momentum.", "schedule.", "dataset.", "model.")
# End-of-run figures: params ``summary.<name>`` (runs recorded before them: metrics ``summary/<name>``); both become
# the runs table's ``summary/<name>`` columns.
SUMMARY_PARAM = "summary."
SUMMARY_METRIC = "summary/"
SWEEP_KIND = "sweep"
# Scopes of a report: the latest sweep of the experiments (default), or every training run of them.
SCOPES = ("latest_sweep", "all")
# A sweep of a report's proposed composite (verify=true or the command it prints) is never "the latest sweep".
COMPOSITE_PREFIX = "proposed_composite"
VERIFY_TAG = "verifies"
NOTE_TAG = "mlflow.note.content"
# The param holding the JSON spec of the exact policy a run trained under (pipeline.policies.spec); runs recorded
# before it existed have none.
POLICY_CONFIG = "policy_config"
HISTORY_COLUMNS = ["run_id", "key", "step", "value"]
# max_points that reads every point of a curve, unthinned: where an exact step matters (first step at a target).
ALL_POINTS = None
BASE_COLUMNS = ["run_id", "run_name", "experiment", "experiment_id", "status", "start_time", "end_time",
                "parent_run_id", *TAG_COLUMNS, "seed", "k_scale", POLICY_CONFIG]
# Rows per index that a bounded ANALYZE samples (SQLite's recommended range is 100-1000).
ANALYSIS_LIMIT = 400
_RUN_ID = re.compile(r"^[0-9A-Za-z_-]{1,64}$")


class RunsError(ValueError):
    """The runs asked for cannot be read; the message names the config key (``experiments``, ``parent_run_id``)."""


# -- planner statistics --------------------------------------------------------------------------------------------


def ensure_planner_stats(uri: str) -> bool:
    """Give a SQLite store's query planner the table statistics MLflow never collects; True if it has them.

    Without ``sqlite_stat1`` SQLite answers MLflow's per-run metric queries through the ``(key, ...)`` primary key,
    scanning every value of the key in the store: ~0.4 s per run at 1,000 runs x 2,000 steps instead of ~10 ms.
    A bounded ``ANALYZE`` (``analysis_limit`` rows per index: milliseconds at any size) writes only SQLite's own
    statistics table, no MLflow data. Skipped for other stores, for stores that have statistics, and silently
    when the file is read-only or locked (reads are then slower, not wrong).
    """
    import sqlite3

    db = store.sqlite_path(uri)
    if db is None or not db.exists():
        return False
    try:
        with sqlite3.connect(db, timeout=5) as con:
            if con.execute("SELECT 1 FROM sqlite_master WHERE name = 'sqlite_stat1'").fetchone() and \
                    con.execute("SELECT 1 FROM sqlite_stat1 WHERE tbl = 'metrics' LIMIT 1").fetchone():
                return True
            con.execute(f"PRAGMA analysis_limit = {ANALYSIS_LIMIT}")
            con.execute("ANALYZE")
        return True
    except sqlite3.Error:
        return False


# -- runs ----------------------------------------------------------------------------------------------------------


def _experiment_ids(mlflow_client, uri: str, experiments: Sequence[str] | None) -> dict[str, str]:
    """Experiment id -> name for the names asked for (all active experiments for None)."""
    existing = {e.name: e.experiment_id for e in mlflow_client.search_experiments()}
    if experiments is None:
        return {eid: name for name, eid in existing.items()}
    missing = [name for name in experiments if name not in existing]
    if missing:
        listed = ", ".join(sorted(existing)) or "none"
        raise RunsError(f"experiments: no experiment named {', '.join(map(repr, missing))} in {uri}; "
                        f"existing experiments: {listed}")
    return {existing[name]: name for name in experiments}


@contextmanager
def no_cyclic_gc():
    """Pause Python's cyclic garbage collector: building ~100 ORM objects per run (MLflow's SQLAlchemy store) sets
    off collection after collection over every object alive, which cost 3.6 s CPU against 1.2 s without, for
    1,000 runs. Reference counting still frees everything acyclic; the collector resumes afterwards."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def _search_all(mlflow_client, experiment_ids: list[str], filter_string: str) -> list:
    runs, token = [], None
    with no_cyclic_gc():
        while True:
            page = mlflow_client.search_runs(experiment_ids, filter_string=filter_string, max_results=PAGE_SIZE,
                                             page_token=token)
            runs.extend(page)
            token = page.token
            if not token:
                return runs


def _as_int(text: str | None) -> int | None:
    try:
        return int(float(text)) if text not in (None, "", "None") else None
    except ValueError:
        return None


def _as_float(text: str | None, default: float) -> float:
    try:
        return float(text) if text not in (None, "", "None") else default
    except ValueError:
        return default


def run_row(run, experiment_name: str) -> dict:
    """One run as a flat dict: info, contract tags, ``summary/*`` metrics and ``param.<key>`` params."""
    info, data = run.info, run.data
    tags, params = data.tags, data.params
    row = {
        "run_id": info.run_id,
        "run_name": info.run_name or tags.get("mlflow.runName", ""),
        "experiment": experiment_name,
        "experiment_id": info.experiment_id,
        "status": info.status,
        "start_time": info.start_time,
        "end_time": info.end_time,
        "parent_run_id": tags.get("mlflow.parentRunId"),
    }
    for key in TAG_COLUMNS:
        row[key] = tags.get(key)
    row["momentum"] = row["momentum"] or "none"
    row["warmup"] = row["warmup"] or "none"
    row["seed"] = _as_int(tags.get("seed", params.get("seed")))
    row["k_scale"] = _as_float(tags.get("k_scale"), 1.0)
    row[POLICY_CONFIG] = params.get(POLICY_CONFIG)
    row.update(summaries(data.metrics, params))
    row.update({f"param.{k}": v for k, v in params.items() if k.startswith(PARAM_PREFIXES)})
    return row


def summaries(metrics: Mapping[str, float], params: Mapping[str, str]) -> dict[str, float]:
    """A run's end-of-run figures as ``summary/<name>`` floats: its ``summary.<name>`` params, else (runs recorded
    before those) its ``summary/<name>`` metrics. ``summaries(run.data.metrics, run.data.params)``."""
    out = {k: float(v) for k, v in metrics.items() if k.startswith(SUMMARY_METRIC)}
    for key, text in params.items():
        if key.startswith(SUMMARY_PARAM):
            value = _as_float(text, float("nan"))
            if value == value:  # not NaN
                out[SUMMARY_METRIC + key[len(SUMMARY_PARAM):]] = value
    return out


def runs_frame(rows: list[dict]) -> pd.DataFrame:
    """The runs table from :func:`run_row` dicts, with typed columns (also for zero runs)."""
    frame = pd.DataFrame(rows)
    for column in BASE_COLUMNS:
        if column not in frame:
            frame[column] = pd.Series(dtype=object)
    for column in ("start_time", "end_time"):
        frame[column] = pd.to_datetime(frame[column], unit="ms", utc=True)
    frame["seed"] = frame["seed"].astype("Int64")
    frame["k_scale"] = frame["k_scale"].astype(float)
    summary_columns = sorted(c for c in frame if c.startswith(SUMMARY_METRIC))
    frame[summary_columns] = frame[summary_columns].astype(float)
    params = sorted(c for c in frame if c.startswith("param."))
    return frame[BASE_COLUMNS + summary_columns + params].reset_index(drop=True)


def _open(uri: str):
    db = store.sqlite_path(uri)
    if db is not None and not db.exists():
        raise RunsError(f"tracking.uri: no MLflow store at {db}")
    ensure_planner_stats(uri)
    return store.client(uri)


def _parent(mlflow_client, uri: str, parent_run_id: str):
    from mlflow.exceptions import MlflowException

    if not _RUN_ID.match(parent_run_id):
        raise RunsError(f"parent_run_id must be an MLflow run id (letters, digits), got {parent_run_id!r}")
    try:
        return mlflow_client.get_run(parent_run_id)
    except MlflowException as exc:
        raise RunsError(f"parent_run_id: no run {parent_run_id!r} in {uri}") from exc


def load_runs(uri: str, experiments: Sequence[str] | None = None, parent_run_id: str | None = None) -> pd.DataFrame:
    """Every ``kind=train`` run of ``experiments`` (all experiments for None), or of the sweep ``parent_run_id``.

    One paged ``search_runs`` query. Report and sweep runs (``kind=report``, ``kind=sweep``) are left out. Columns:
    run_id, run_name, experiment, experiment_id, status, start_time, end_time (UTC), parent_run_id, the contract
    tags (momentum and warmup default to ``"none"``; ``run_key``, ``objective_metric``/``objective_mode`` where
    recorded), seed (Int64), k_scale (float, default 1.0), policy_config (the JSON spec of the run's policy; None
    before runs recorded it), every summary (:func:`summaries`: float, NaN where absent) and the ``policy.*``,
    ``optimizer.*``, ``trainer.*``, ``warmup.*``, ``momentum.*``, ``schedule.*``, ``dataset.*`` and ``model.*``
    params as ``param.<key>`` strings.
    """
    mlflow_client = _open(uri)
    filter_string = f"tags.kind = '{TRAIN_KIND}'"
    if parent_run_id:
        parent = _parent(mlflow_client, uri, parent_run_id)
        experiment = mlflow_client.get_experiment(parent.info.experiment_id)
        names = {experiment.experiment_id: experiment.name}
        filter_string += f" and tags.mlflow.parentRunId = '{parent_run_id}'"
    else:
        names = _experiment_ids(mlflow_client, uri, experiments)
    if not names:
        return runs_frame([])
    runs = _search_all(mlflow_client, list(names), filter_string)
    return runs_frame([run_row(run, names.get(run.info.experiment_id, "")) for run in runs])


# -- scope ---------------------------------------------------------------------------------------------------------


def _is_verification(sweep) -> bool:
    """A sweep of a report's proposed composite: tagged by the report, or launched with its printed command."""
    tags = sweep.data.tags
    return VERIFY_TAG in tags or f"+policy={COMPOSITE_PREFIX}" in tags.get("sweep.overrides", "")


def latest_sweep(uri: str, experiments: Sequence[str] | None = None) -> tuple[object | None, int, dict[str, str]]:
    """The newest sweep parent (tag ``kind=sweep``, latest start time) of ``experiments`` (all for None), leaving
    out sweeps that verify a proposed composite. Returns (the MLflow run or None, how many sweeps there are,
    experiment id -> name)."""
    mlflow_client = _open(uri)
    names = _experiment_ids(mlflow_client, uri, experiments)
    if not names:
        return None, 0, names
    sweeps = [r for r in _search_all(mlflow_client, list(names), f"tags.kind = '{SWEEP_KIND}'")
              if not _is_verification(r)]
    sweeps.sort(key=lambda r: (r.info.start_time or 0, r.info.run_id), reverse=True)
    return (sweeps[0] if sweeps else None), len(sweeps), names


def _when(ms: int | None) -> str | None:
    return None if ms is None else pd.Timestamp(ms, unit="ms", tz="UTC").isoformat(timespec="seconds")


def load_scope(uri: str, experiments: Sequence[str] | None = None, parent_run_id: str | None = None,
               scope: str = "latest_sweep") -> tuple[pd.DataFrame, dict]:
    """The runs a report reads and a plain description of that choice.

    ``parent_run_id``: that sweep's children. Else ``scope=latest_sweep``: the children of the newest sweep of
    ``experiments`` (:func:`latest_sweep`; every training run when they hold no sweep), or ``scope=all``: every
    training run of ``experiments``. The description: ``how`` (parent_run_id, latest_sweep, no_sweep, all),
    ``experiments``, ``experiment_ids``, ``parent_run_id``, ``sweep_name``, ``sweep_started`` (ISO, UTC),
    ``sweep_status``, ``sweeps`` (how many sweeps the experiments hold, for latest_sweep), ``id`` (the sweep's run id,
    or ``all``) and ``text`` (one sentence for the report's first line).
    """
    if scope not in SCOPES:
        raise RunsError(f"scope must be one of {', '.join(SCOPES)}; got {scope!r}")
    info = {"how": "all", "experiments": list(experiments) if experiments else None, "parent_run_id": None,
            "sweep_name": None, "sweep_started": None, "sweep_status": None, "sweeps": None, "id": "all"}
    sweep = None
    if parent_run_id:
        mlflow_client = _open(uri)
        sweep = _parent(mlflow_client, uri, parent_run_id)
        experiment = mlflow_client.get_experiment(sweep.info.experiment_id)
        info.update(how="parent_run_id", experiments=[experiment.name], experiment_ids=[experiment.experiment_id])
    elif scope == "latest_sweep":
        sweep, count, names = latest_sweep(uri, experiments)
        info.update(how="latest_sweep" if sweep else "no_sweep", sweeps=count, experiments=sorted(names.values()),
                    experiment_ids=sorted(names))
    else:
        names = _experiment_ids(_open(uri), uri, experiments)
        info.update(experiments=sorted(names.values()), experiment_ids=sorted(names))
    if sweep is not None:
        info.update(parent_run_id=sweep.info.run_id, id=sweep.info.run_id, sweep_status=sweep.info.status,
                    sweep_name=sweep.info.run_name or sweep.data.tags.get("mlflow.runName"),
                    sweep_started=_when(sweep.info.start_time))
        runs = load_runs(uri, parent_run_id=sweep.info.run_id)
    else:
        runs = load_runs(uri, info["experiments"])
    info["text"] = scope_text(info, len(runs))
    return runs, info


def scope_text(info: Mapping, n_runs: int) -> str:
    """One sentence: which runs a report read, why, and how to choose others."""
    where = ", ".join(repr(e) for e in info.get("experiments") or []) or "(none)"
    runs = f"{n_runs} training run{'' if n_runs == 1 else 's'}"
    if info["how"] in ("parent_run_id", "latest_sweep"):
        sweep = f"sweep {info['sweep_name']!r} (parent run {info['parent_run_id']}, started {info['sweep_started']}"
        sweep += ", still running)" if info.get("sweep_status") == "RUNNING" else ")"
        if info["how"] == "parent_run_id":
            return f"Scope: {runs} of {sweep} in experiment {where}, chosen with parent_run_id."
        others = info["sweeps"] - 1
        return (f"Scope: {runs} of {sweep}, the latest of {info['sweeps']} sweep{'' if info['sweeps'] == 1 else 's'} "
                f"in experiment {where}; " + (f"the other {others} and " if others else "")
                + "runs outside any sweep are not read (scope=all reads every run, parent_run_id=<id> one sweep).")
    if info["how"] == "no_sweep":
        return f"Scope: all {runs} of experiment {where} (it holds no sweep, so scope=latest_sweep reads every run)."
    return f"Scope: all {runs} of experiment {where} (scope=all), whichever sweep they belong to."


def load_verification_runs(uri: str, experiment_ids: Sequence[str]) -> pd.DataFrame:
    """Training runs of a report's proposed composite (policy option ``proposed_composite*``) in these experiments,
    whichever sweep ran them: the report matches them to its proposal by their recorded policy."""
    if not experiment_ids:
        return runs_frame([])
    mlflow_client = _open(uri)
    names = {e.experiment_id: e.name for e in mlflow_client.search_experiments()}
    filter_string = f"tags.kind = '{TRAIN_KIND}' and tags.policy LIKE '{COMPOSITE_PREFIX}%'"
    runs = _search_all(mlflow_client, list(experiment_ids), filter_string)
    return runs_frame([run_row(run, names.get(run.info.experiment_id, "")) for run in runs])


def tag_sweep(uri: str, parent_run_id: str, tags: Mapping[str, str]) -> list[str]:
    """Set ``tags`` on a sweep's parent and every child run; return the children's ids."""
    mlflow_client = _open(uri)
    children = load_runs(uri, parent_run_id=parent_run_id)["run_id"].tolist()
    for run_id in [parent_run_id, *children]:
        for key, value in tags.items():
            mlflow_client.set_tag(run_id, key, str(value))
    return children


EXPERIMENT_NOTE = """Runs of lrbench-pipeline (LR policy benchmarks).

- kind=train: one training run per job; a sweep's jobs nest under its kind=sweep parent run.
- kind=report: the reports of python -m pipeline.report (files only, no metrics). To chart training runs only,
  search: tags.kind = 'train'
- Per run: lr, momentum and train/loss every step, val/* at each evaluation; the end-of-run figures as params
  summary.* and the artifact summary.csv; lr_objective.png draws the LR and the objective over steps.
"""


# The MLflow UI opens an experiment of this kind on its runs and charts ("Model training"), not on GenAI traces.
KIND_TAG, TRAINING_KIND = "mlflow.experimentKind", "custom_model_development"


def describe_experiment(uri: str, experiment: str, text: str = EXPERIMENT_NOTE) -> bool:
    """Give an experiment a description (the MLflow UI's note) and the model-training kind where it has none;
    True if the description was set now."""
    mlflow_client = _open(uri)
    found = mlflow_client.get_experiment_by_name(experiment)
    if found is None:
        return False
    if not found.tags.get(KIND_TAG):
        mlflow_client.set_experiment_tag(found.experiment_id, KIND_TAG, TRAINING_KIND)
    if found.tags.get(NOTE_TAG):
        return False
    mlflow_client.set_experiment_tag(found.experiment_id, NOTE_TAG, text)
    return True


# -- histories -----------------------------------------------------------------------------------------------------


def _points_key(max_points: int | None) -> int:
    """The cache's max_points: 0 stands for ALL_POINTS (a parquet column holds ints, not None)."""
    return 0 if max_points is ALL_POINTS else max_points


class HistoryCache:
    """Histories of finished runs, keyed by (run id, metric key, max points, None for every point); in memory, and
    on disk if a folder is given (one parquet file, replaced atomically). Run ids are unique across stores, so one
    cache serves all."""

    FILE = "histories.parquet"

    def __init__(self, cache_dir: str | os.PathLike | None = None):
        self.path = Path(cache_dir) / self.FILE if cache_dir else None
        self._frames: dict[tuple[str, str, int], pd.DataFrame] = {}
        self._dirty = False
        if self.path is not None and self.path.exists():
            try:
                stored = pd.read_parquet(self.path)
            except (OSError, ValueError):
                stored = None  # a damaged cache is rebuilt from the store
            if stored is not None:
                stored = _typed(stored)
                for (run_id, key, points), part in stored.groupby(["run_id", "key", "max_points"], sort=False):
                    self._frames[(run_id, key, int(points))] = part[HISTORY_COLUMNS].reset_index(drop=True)

    def get(self, run_id: str, key: str, max_points: int | None) -> pd.DataFrame | None:
        return self._frames.get((run_id, key, _points_key(max_points)))

    def put(self, run_id: str, key: str, max_points: int | None, frame: pd.DataFrame) -> None:
        self._frames[(run_id, key, _points_key(max_points))] = frame
        self._dirty = True

    def save(self) -> None:
        """Write the disk cache if anything was added (no-op for a memory-only cache)."""
        if self.path is None or not self._dirty:
            return
        parts = [f.assign(max_points=k[2]) for k, f in self._frames.items() if len(f)]
        if not parts:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")  # same folder: os.replace is atomic
        try:
            pd.concat(parts, ignore_index=True).to_parquet(tmp, index=False)
            os.replace(tmp, self.path)
        finally:
            if os.path.exists(tmp):
                os.remove(tmp)
        self._dirty = False


def _typed(frame: pd.DataFrame) -> pd.DataFrame:
    """History columns with one set of dtypes, whether built here or read back from parquet."""
    return frame.astype({"run_id": object, "key": object, "step": "int64", "value": "float64"})


def _frame(rows: list[tuple[str, str, int, float]]) -> pd.DataFrame:
    return _typed(pd.DataFrame(rows, columns=HISTORY_COLUMNS))


def _sample(points: list, max_points: int | None) -> list:
    """At most ``max_points`` evenly spaced points, first and last kept (MLflow's own sampling); all for None."""
    if max_points is ALL_POINTS or len(points) <= max_points:
        return points
    picks = {round(i * (len(points) - 1) / (max_points - 1)) for i in range(max_points)}
    return [p for i, p in enumerate(points) if i in picks]


def _own(tracking_store, method: str) -> bool:
    """The store implements ``method`` itself, not as the abstract store's loop of one request per run."""
    from mlflow.store.tracking.abstract_store import AbstractStore

    found = getattr(type(tracking_store), method, None)
    return found is not None and found is not getattr(AbstractStore, method, None)


def _whole_history(tracking_store, run_id: str, key: str) -> list:
    """Every point of one run's curve in step order, following a server's pages if it sends them."""
    history = tracking_store.get_metric_history(run_id, key)
    points, token = list(history), getattr(history, "token", None)
    while token:
        page = tracking_store.get_metric_history(run_id, key, page_token=token)
        points, token = points + list(page), getattr(page, "token", None)
    return sorted(points, key=lambda m: (m.step, m.timestamp))


def _server_bulk(tracking_store, run_ids: list[str], key: str, max_points: int) -> list[tuple] | None:
    """The tracking server's bulk endpoint (what the MLflow UI uses); None if the server does not have it."""
    from mlflow.utils.rest_utils import http_request

    rows = []
    for i in range(0, len(run_ids), SERVER_BULK_RUNS):
        chunk = run_ids[i:i + SERVER_BULK_RUNS]
        response = http_request(tracking_store.get_host_creds(), BULK_ENDPOINT, "GET", raise_on_status=False,
                                params={"run_ids": chunk, "metric_key": key,
                                        "max_results": min(max_points, SERVER_MAX_POINTS)})
        if response.status_code == 404:
            return None
        response.raise_for_status()
        rows += [(m["run_id"], m["key"], int(m.get("step", 0)), float(m["value"]))
                 for m in response.json().get("metrics", [])]
    return rows


def _chunk(tracking_store, run_ids: list[str], key: str, max_points: int | None, points_per_run: int | None
           ) -> list:
    """One key's histories of at most 100 runs, with as few store requests as the store allows."""
    whole = max_points is ALL_POINTS
    if points_per_run and (whole or points_per_run <= max_points) and _own(tracking_store, "get_metric_history_bulk"):
        # Short series (one point per evaluation): one query for all the runs beats sampling each run on its own.
        limit = len(run_ids) * points_per_run * 2 + 1  # x2: room for re-logged steps; hitting it means "dense"
        found = tracking_store.get_metric_history_bulk(run_ids, key, limit)
        if len(found) < limit:
            by_run: dict[str, list] = {}
            for m in found:
                by_run.setdefault(m.run_id, []).append(m)
            return [(run_id, key, m.step, m.value) for run_id, points in by_run.items()
                    for m in _sample(sorted(points, key=lambda m: (m.step, m.timestamp)), max_points)]
    if not whole and _own(tracking_store, "get_metric_history_bulk_interval"):
        return [(m.run_id, m.key, m.step, m.value)
                for m in tracking_store.get_metric_history_bulk_interval(run_ids, key, max_points, None, None)]
    rows = []  # every point (the interval read samples), or a store without a bulk read of its own
    for run_id in run_ids:
        rows += [(run_id, key, m.step, m.value) for m in _sample(_whole_history(tracking_store, run_id, key),
                                                                  max_points)]
    return rows


def _store_bulk(tracking_store, run_ids: list[str], key: str, max_points: int | None,
                points_per_run: int | None = None) -> pd.DataFrame:
    """One key's histories: bulk requests of at most 100 runs each (a server's limit), per-run reads only on a
    store without a bulk read, or for every point of long curves (a server's bulk read samples them)."""
    from mlflow.store.tracking.rest_store import RestStore

    if isinstance(tracking_store, RestStore) and max_points is not ALL_POINTS:
        found = _server_bulk(tracking_store, run_ids, key, max_points)
        if found is not None:
            return _frame(found)
    rows = []
    for i in range(0, len(run_ids), SERVER_BULK_RUNS):
        rows += _chunk(tracking_store, run_ids[i:i + SERVER_BULK_RUNS], key, max_points, points_per_run)
    return _frame(rows)


def fetch_histories(open_store, run_ids: Sequence[str], keys: Sequence[str], max_points: int | None,
                    cache: HistoryCache | None = None, terminal: Iterable[str] = (),
                    points_per_run: int | None = None) -> pd.DataFrame:
    """:func:`load_histories` on the tracking store that ``open_store()`` returns; it is called only when some
    history is not cached (the seam tests use to count store calls)."""
    if max_points is not ALL_POINTS and max_points < 1:
        raise ValueError(f"max_points must be >= 1 or None (every point), got {max_points}")
    cache = cache if cache is not None else HistoryCache()
    terminal = set(terminal)
    ids = list(dict.fromkeys(run_ids))
    parts = []
    tracking_store = None
    for key in dict.fromkeys(keys):
        missing = []
        for run_id in ids:
            cached = cache.get(run_id, key, max_points)
            if cached is None:
                missing.append(run_id)
            else:
                parts.append(cached)
        if not missing:
            continue
        if tracking_store is None:
            tracking_store = open_store()
        with no_cyclic_gc():
            fresh = _store_bulk(tracking_store, missing, key, max_points, points_per_run)
        parts.append(fresh)
        by_run = dict(tuple(fresh.groupby("run_id", sort=False)))
        for run_id in missing:
            if run_id in terminal:
                part = by_run.get(run_id)
                cache.put(run_id, key, max_points, part.reset_index(drop=True) if part is not None else _frame([]))
    cache.save()
    if not parts:
        return _frame([])
    out = pd.concat(parts, ignore_index=True)
    return out.sort_values(["run_id", "key", "step"], kind="stable").reset_index(drop=True)


def load_histories(uri: str, run_ids: Sequence[str], keys: Sequence[str], max_points: int | None = 1000,
                   cache: HistoryCache | str | os.PathLike | None = None, terminal: Iterable[str] = (),
                   points_per_run: int | None = None) -> pd.DataFrame:
    """Curves of ``keys`` for ``run_ids`` as a long table [run_id, key, step, value], sorted by run, key and step.

    At most ``max_points`` points per run and key, evenly spaced, first and last kept (MLflow's sampling);
    ``max_points=ALL_POINTS`` (None) reads every point, for exact steps (the first evaluation at a target). Runs in
    ``terminal`` (finished, failed or killed: their metrics never change) are cached in ``cache`` (a
    :class:`HistoryCache`, or the folder of one; None: no cache beyond this call). ``points_per_run``, the
    expected length of a series (e.g. the number of evaluations), lets a SQL store read short series of many runs
    with one query instead of one sampling query per run.
    """
    def open_store():
        ensure_planner_stats(uri)
        return store.client(uri)._tracking_client.store

    if not isinstance(cache, HistoryCache):
        cache = HistoryCache(cache)
    return fetch_histories(open_store, run_ids, keys, max_points, cache, terminal, points_per_run)


# -- the report run ------------------------------------------------------------------------------------------------


REPORT_NOTE = ("A report of python -m pipeline.report, not a training run: it logs no metrics. Its files are the "
               "artifacts (report.html). To chart training runs only, search: tags.kind = 'train'")


def log_report(uri: str, experiment: str, run_name: str, tags: Mapping[str, object], params: Mapping[str, object],
               files: Mapping[str, str | os.PathLike]) -> str:
    """Record a report as a ``kind=report`` run (which :func:`load_runs` skips and a ``tags.kind = 'train'`` search
    in the MLflow UI leaves out of charts): tags, params and the files as artifacts (``{artifact path: local file}``;
    a path with a folder, e.g. ``policy/x.yaml``, keeps it). The experiment gets its description if it has none."""
    from pipeline.tracking.recorder import flatten, open_run

    experiment_id = store.prepare(uri, experiment)
    describe_experiment(uri, experiment)
    tags = {**tags, "kind": "report", NOTE_TAG: REPORT_NOTE}
    with open_run(store.client(uri), experiment_id, run_name, tags) as recorder:
        recorder.params(flatten(dict(params)))
        for name, path in files.items():
            folder = str(Path(name).parent)
            recorder.artifact(str(path), None if folder == "." else folder)
        return recorder.run_id
