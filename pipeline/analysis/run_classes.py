"""What each run counts as before any policy is scored: a seed of its policy (finished, or ended by a training
outcome), a run that could not run (setup), one that did not finish, or a repeat of a run already counted. Pure:
pandas in, pandas out."""

from __future__ import annotations

import re
from collections.abc import Mapping

import pandas as pd

from pipeline.analysis.objective import _column, _text

# Failure tags of runs that could not train: refused before training (a bad value, a missing or corrupt data set, an
# unusable store: the sweep records them as ``config``), or set up wrong by their environment.
SETUP_FAILURES = frozenset({"config", "setup", "data", "environment"})
# Failure tags that are training outcomes: the policy's result, counted against it.
OUTCOME_FAILURES = frozenset({"diverged", "pruned"})
# An exception (failure ``error``) whose text names a setup problem: no data, a missing file or module, no device,
# no memory, no permission. Such a run says nothing about its policy either.
SETUP_ERROR = re.compile(
    r"DatasetNotFoundError|FileNotFoundError|No such file|not found|ModuleNotFoundError|ImportError|"
    r"PermissionError|Permission denied|No space left|out of memory|OutOfMemoryError|CUDA is not available|"
    r"no CUDA|tracking store", re.IGNORECASE)
RUN_CLASSES = ("scored", "could_not_run", "did_not_finish", "duplicate")
CLASS_TEXT = {"could_not_run": "could not run", "did_not_finish": "did not finish", "duplicate": "duplicate"}


def run_class(failure: str, error: object = None) -> str:
    """``scored`` (finished, or ended by a training outcome: diverged, pruned), ``could_not_run`` (setup: see
    :data:`SETUP_FAILURES`, :data:`SETUP_ERROR`) or ``did_not_finish`` (killed, still running, crashed). Only
    scored runs are seeds of their policy."""
    if failure in SETUP_FAILURES or (failure == "error" and SETUP_ERROR.search(_text(error))):
        return "could_not_run"
    if not failure or failure in OUTCOME_FAILURES:
        return "scored"
    return "did_not_finish"


def _failure(row) -> str:
    if isinstance(row["failure"], str) and row["failure"]:
        return row["failure"]
    if row["summary/diverged"] == 1:
        return "diverged"
    if row["status"] != "FINISHED":
        return str(row["status"]).lower()
    return ""


def _budget_label(row: Mapping) -> str:
    steps = _text(row.get("param.trainer.max_steps"))
    epochs = _text(row.get("param.trainer.max_epochs")) or "?"
    return f"{steps} steps" if steps not in ("", "-1") else f"{epochs} epochs"


def _differences(kept: Mapping, other: Mapping, limit: int = 3) -> list[str]:
    keys = sorted(k for k in set(kept) | set(other) if str(k).startswith("param.") and k != "param.seed")
    out = []
    for key in keys:
        a, b = kept.get(key), other.get(key)
        if _text(a) != _text(b):
            out.append(f"{key[len('param.'):]} {_text(b) or '-'} vs {_text(a) or '-'}")
    return out[:limit]


def duplicates(outcomes: pd.DataFrame) -> pd.DataFrame:
    """Runs that repeat a run already counted: ``duplicate_of`` (the kept run's id, '' for a kept run) and
    ``duplicate_reason``. Repeats are the same ``run_key`` (the same command and seed), or the same candidate
    (policy, momentum, warm-up in the same model / data / optimizer) and seed: a second run of seed 0 is never a
    second seed, even with another budget or setting (the reason names the settings that differ). Of each set the
    newest finished run is kept (else the newest). Runs that could not run are left alone."""
    out = pd.DataFrame({"duplicate_of": "", "duplicate_reason": ""}, index=outcomes.index)
    eligible = outcomes[outcomes["run_class"] != "could_not_run"]
    if eligible.empty:
        return out
    order = eligible.assign(_unfinished=eligible["status"] != "FINISHED",
                            _start=_column(eligible, "start_time")).sort_values(
        ["_unfinished", "_start"], ascending=[True, False], na_position="last", kind="stable")
    records = order.to_dict("index")
    kept_ids = {}
    run_keys = _column(order, "run_key")
    for index in records:
        if not isinstance(run_keys[index], str) or not run_keys[index]:
            continue
        first = kept_ids.setdefault(("key", run_keys[index]), index)
        if first != index:
            out.loc[index] = [records[first]["run_id"],
                              f"repeats run {records[first]['run_name'] or records[first]['run_id']} (same run key "
                              f"{run_keys[index]}: the same command and seed)"]
    for index, row in records.items():
        if out.at[index, "duplicate_of"] or row["seed"] is None or row["seed"] is pd.NA:
            continue
        first = kept_ids.setdefault(("seed", row["group"], row["candidate"], int(row["seed"])), index)
        if first == index:
            continue
        kept = records[first]
        name = kept["run_name"] or kept["run_id"]
        differing = _differences(kept, row)
        if not differing:
            reason = (f"repeats run {name}: same policy, model, data, optimizer, seed {int(row['seed'])} and budget "
                      f"({_budget_label(row)})")
        else:
            reason = (f"same policy and seed {int(row['seed'])} as run {name} but other settings "
                      f"({'; '.join(differing)}): not a second seed")
        out.loc[index] = [kept["run_id"], reason]
    return out


def not_counted(outcomes: pd.DataFrame) -> pd.DataFrame:
    """The runs that are no seed of their policy, one row each: group, policy, seed, run_name, run_id, class (could
    not run, did not finish, duplicate) and why (the duplicate's reason, else the failure and its error)."""
    rows = outcomes[outcomes["run_class"] != "scored"]
    columns = ["group", "policy", "seed", "run_name", "run_id", "class", "why"]
    if rows.empty:
        return pd.DataFrame(columns=columns)
    why = [d if d else (f"{f}: {_text(e)}" if _text(e) else f) for d, f, e in
           zip(rows["duplicate_reason"], rows["failure"], _column(rows, "error"))]
    return pd.DataFrame({"group": rows["group"], "policy": rows["policy"], "seed": rows["seed"],
                         "run_name": rows["run_name"], "run_id": rows["run_id"],
                         "class": rows["run_class"].map(CLASS_TEXT), "why": why})[columns].reset_index(drop=True)


def _cut(text: str, chars: int) -> str:
    return text if len(text) <= chars else text[:chars - 1] + "…"


def not_counted_text(outcomes: pd.DataFrame, limit: int = 2) -> str:
    """How many of ``outcomes`` are not counted, by class, with their most frequent reasons (errors cut to one
    line), e.g. ``39 could not run (39× config: dataset: CIFAR-10 not found: ...)``; '' when all are scored."""
    table = not_counted(outcomes)
    parts = []
    for cls in ("could not run", "did not finish", "duplicate"):
        rows = table[table["class"] == cls]
        if rows.empty:
            continue
        first_lines = rows["why"].map(lambda w: _cut((w.splitlines() or [""])[0], 160))
        common = first_lines.value_counts().head(limit)
        what = ("duplicate" if len(rows) == 1 else "duplicates") if cls == "duplicate" else cls
        parts.append(f"{len(rows)} {what} ("
                     + "; ".join(f"{n}× {why}" for why, n in common.items())
                     + ("; ..." if first_lines.nunique() > limit else "") + ")")
    return ", ".join(parts)
