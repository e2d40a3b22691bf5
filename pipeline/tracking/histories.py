"""Curves read back from any MLflow store as one long table [run_id, key, step, value]: only of the runs a report
plots (thinned to ``max_points``) or scores exactly (every point, :data:`ALL_POINTS`), with the store's bulk history
read (chunks of 100 run ids, a server's limit), never one call per run per metric unless the store has no bulk read
at all. Finished runs never change, so their curves are cached in a :class:`HistoryCache` (memory, and optionally
one parquet file on disk)."""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path

import pandas as pd

from pipeline.tracking import store
from pipeline.tracking.runs import ensure_planner_stats, no_cyclic_gc

# A tracking server accepts at most this many run ids, and returns at most this many points per run, per bulk read.
SERVER_BULK_RUNS = 100
SERVER_MAX_POINTS = 2500
BULK_ENDPOINT = "/ajax-api/2.0/mlflow/metrics/get-history-bulk-interval"
HISTORY_COLUMNS = ["run_id", "key", "step", "value"]
# max_points for a read of every point of a curve (exact first-reach steps), never thinned.
ALL_POINTS = None


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
