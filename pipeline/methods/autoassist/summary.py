"""With and without AutoAssist: samples, optimizer steps and seconds to a target accuracy, per policy, over seeds.

A pure function of the runs table (:func:`pipeline.tracking.runs.load_runs`, or any frame with these columns):

- ``policy``: the policy tag; ``sampler``: the sampler tag (``autoassist``); a missing column or an empty value
  means ``"none"`` (a run without a sampler); ``seed``; optional ``dataset`` and ``model`` (also grouped by when
  present, so one table may hold both studies); optional ``run_id``.
- ``summary/samples_to_acc_{T}``, ``summary/steps_to_acc_{T}``, ``summary/seconds_to_acc_{T}`` (``{T}`` is
  ``f"{target:g}"``, e.g. ``0.85``), NaN or absent for a run that never reached T; ``summary/reached_acc_{T}`` (1/0)
  when present decides whether a run reached T, otherwise a non-NaN ``steps_to`` does.

Samples are the samples the model trained on (with AutoAssist: the kept ones; the raw samples the assistant scored are
``summary/autoassist_seen``). Failed runs stay in the table: they count in ``n_runs`` and reach nothing unless their
summary says they did.
"""

from __future__ import annotations

import math

import pandas as pd

from pipeline.analysis.scoring import target_label

NO_SAMPLER = "none"
COSTS = ("samples", "steps", "seconds")
OPTIONAL_KEYS = ("dataset", "model")


def _column(runs: pd.DataFrame, name: str) -> pd.Series:
    return runs[name].astype(float) if name in runs else pd.Series(math.nan, index=runs.index, dtype=float)


def autoassist_comparison(runs: pd.DataFrame, target: float) -> pd.DataFrame:
    """One row per ([dataset, model,] policy, sampler) for ``target`` (validation accuracy, a fraction).

    Columns: the keys; ``n_runs``; ``n_reached`` and ``share_reached`` (runs that reached ``target``); ``seeds``
    (sorted list); ``<cost>_mean`` and ``<cost>_std`` (sample std, NaN below 2 runs) for cost in samples, steps and
    seconds, over the runs that reached the target only (so read them with ``share_reached``); and
    ``<cost>_vs_none``: ``<cost>_mean`` divided by that of the same policy without a sampler (1.0 for the ``none``
    row itself, NaN when there is no such row). A ratio below 1 means fewer samples, steps or seconds than without.
    Rows are sorted by keys, ``none`` first within a policy.
    """
    if not 0 < target <= 1:
        raise ValueError(f"target must be an accuracy in (0, 1], got {target!r}")
    for column in ("policy", "seed"):
        if column not in runs:
            raise ValueError(f"runs table lacks the {column!r} column")
    label = target_label(target)
    frame = pd.DataFrame({"policy": runs["policy"].astype(str), "seed": runs["seed"]}, index=runs.index)
    keys = [k for k in OPTIONAL_KEYS if k in runs] + ["policy", "sampler"]
    for key in OPTIONAL_KEYS:
        if key in runs:
            frame[key] = runs[key].astype(str)
    sampler = runs["sampler"] if "sampler" in runs else pd.Series(None, index=runs.index, dtype=object)
    frame["sampler"] = sampler.where(sampler.notna() & (sampler.astype(str) != ""), NO_SAMPLER).astype(str)
    for cost in COSTS:
        frame[cost] = _column(runs, f"summary/{cost}_to_acc_{label}")
    flag = _column(runs, f"summary/reached_acc_{label}")
    frame["reached"] = (flag == 1) if f"summary/reached_acc_{label}" in runs else frame["steps"].notna()
    for cost in COSTS:
        frame[cost] = frame[cost].where(frame["reached"])

    rows = []
    for group_key, group in frame.groupby(keys, sort=True, dropna=False):
        row = dict(zip(keys, group_key))
        reached = group[group["reached"]]
        row.update(n_runs=len(group), n_reached=len(reached), share_reached=len(reached) / len(group),
                   seeds=sorted(int(s) for s in group["seed"].dropna()))
        for cost in COSTS:
            values = reached[cost].dropna()
            row[f"{cost}_mean"] = float(values.mean()) if len(values) else math.nan
            row[f"{cost}_std"] = float(values.std(ddof=1)) if len(values) > 1 else math.nan
        rows.append(row)
    columns = keys + ["n_runs", "n_reached", "share_reached", "seeds"] + [
        f"{cost}_{stat}" for cost in COSTS for stat in ("mean", "std")]
    table = pd.DataFrame(rows, columns=columns)

    policy_keys = keys[:-1]
    baseline = table.loc[table["sampler"] == NO_SAMPLER, policy_keys + [f"{cost}_mean" for cost in COSTS]]
    matched = table[policy_keys].merge(baseline, on=policy_keys, how="left")  # keeps table's row order
    for cost in COSTS:
        table[f"{cost}_vs_none"] = table[f"{cost}_mean"].to_numpy() / matched[f"{cost}_mean"].to_numpy()
    order = table["sampler"].ne(NO_SAMPLER)
    table = table.assign(_order=order).sort_values(policy_keys + ["_order", "sampler"]).drop(columns="_order")
    return table.reset_index(drop=True)


__all__ = ["COSTS", "NO_SAMPLER", "autoassist_comparison"]
