"""Read runs back from any MLflow store (SQLite file or tracking server) as plain pandas tables, and record the
report's own run.

This is the only analysis code that imports mlflow (lazily, inside the functions: importing this module costs no
MLflow import). Two reads, both bounded:

- :func:`load_runs`: ONE paged ``search_runs`` query for every training run of the experiments (or of one sweep),
  tags, params and the latest value of every metric included. Summaries (``summary/*`` columns) come from here: the
  ``summary.*`` params runs record now, or the ``summary/*`` metrics of runs recorded before.
  :func:`load_scope` first picks what a report reads: by default the latest sweep (see :func:`latest_sweep`).
- curves come from :mod:`pipeline.tracking.histories` (only of the runs a report plots or scores exactly).
"""

from __future__ import annotations

import gc
import os
import re
from collections.abc import Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path

import pandas as pd

from pipeline.tracking import store

TRAIN_KIND = "train"
# MLflow's largest search_runs page (SEARCH_MAX_RESULTS_THRESHOLD).
PAGE_SIZE = 50_000
# Runs in these states are over: their metrics never change again, so their histories may be cached.
TERMINAL_STATUSES = ("FINISHED", "FAILED", "KILLED")
# Tags copied into columns; momentum and warmup default to "none" (a constant momentum, no warm-up).
TAG_COLUMNS = ("policy", "policy_spec", "model", "dataset", "optimizer", "momentum", "warmup", "sampler", "study",
               "failure", "error", "git_commit", "run_key", "task", "objective_metric", "objective_mode", "verifies",
               "config_dirs", "model_option", "dataset_option", "task_option", "policy_fit")
# Params copied into ``param.<key>`` columns: what a report needs to rebuild or describe a policy, its budget and the
# settings a verification run repeats.
PARAM_PREFIXES = ("policy.", "optimizer.", "trainer.", "warmup.", "momentum.", "schedule.", "dataset.", "model.",
                  "task.", "budget.")
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
    if row["failure"] == "pruned" and not row["error"]:  # a pruned study's decision: its rung, score and cut
        row["error"] = tags.get("pruned.reason") or f"pruned at rung {tags.get('pruned.rung', '?')}"
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
