"""Which layers helped or hurt training under each policy, from LCA summaries: pure pandas in, pandas out.

Input: a runs table (:func:`pipeline.tracking.runs.load_runs`), one row per run, with these columns:

- ``policy`` (str): the policy option the run used; rows are grouped by it.
- ``seed`` (int, optional): the job seed; only counted (``seeds``).
- ``summary/lca_cum/<layer>`` (float, loss units): the run's cumulative LCA of that layer over the measured steps,
  written by :class:`pipeline.methods.lca.callback.LCACallback`. Negative: the layer's motion lowered the training loss
  (it helped); positive: it raised it (it hurt). NaN or missing for runs without LCA.
- ``summary/lca_helping_frac`` (float in [0, 1]): the run's mean share of parameters with negative LCA per measured
  step (the paper finds barely over half).

Runs without any LCA column set are ignored; with no LCA data at all the outputs are empty tables with their
columns, so a report can test ``.empty``. Other columns are ignored.
"""

from __future__ import annotations

import math

import pandas as pd

CUM_PREFIX = "summary/lca_cum/"
HELPING = "summary/lca_helping_frac"
LAYER_COLUMNS = ["policy", "layer", "runs", "lca_mean", "lca_std", "verdict"]
POLICY_COLUMNS = ["policy", "runs", "seeds", "helping_frac", "helping_frac_std", "lca_total", "helped", "hurt"]


def _lca_runs(runs: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    """The runs with LCA data and the cumulative-LCA columns, in the table's order."""
    columns = [c for c in runs.columns if isinstance(c, str) and c.startswith(CUM_PREFIX)]
    present = columns + ([HELPING] if HELPING in runs.columns else [])
    if not present or "policy" not in runs.columns:
        return runs.iloc[0:0], columns
    return runs[runs[present].notna().any(axis=1)], columns


def lca_layers(runs: pd.DataFrame) -> pd.DataFrame:
    """One row per (policy, layer): mean and std over runs of the cumulative LCA, and ``helped`` / ``hurt``.

    The verdict is the sign of the mean (``neutral`` when it is exactly 0); ``lca_std`` is NaN with one run.
    Layers keep the order of their columns (the network's order when the callback wrote them).
    """
    lca, columns = _lca_runs(runs)
    rows = []
    for policy, group in lca.groupby("policy", sort=True):
        for column in columns:
            values = group[column].dropna()
            if values.empty:
                continue
            mean = float(values.mean())
            verdict = "helped" if mean < 0 else "hurt" if mean > 0 else "neutral"
            std = float(values.std(ddof=1)) if len(values) > 1 else math.nan
            rows.append([policy, column[len(CUM_PREFIX):], len(values), mean, std, verdict])
    return pd.DataFrame(rows, columns=LAYER_COLUMNS)


def lca_by_policy(runs: pd.DataFrame) -> pd.DataFrame:
    """One row per policy with LCA data.

    Columns: ``runs`` (with LCA), ``seeds`` (distinct seeds, 0 without a ``seed`` column), ``helping_frac`` and
    ``helping_frac_std`` (mean and std over runs of ``summary/lca_helping_frac``), ``lca_total`` (mean over runs of
    the sum of the layers' cumulative LCA), ``helped`` (layers with negative mean cumulative LCA, most helpful first)
    and ``hurt`` (positive, most harmful first), both tuples of layer names.
    """
    lca, columns = _lca_runs(runs)
    layers = lca_layers(runs)
    rows = []
    for policy, group in lca.groupby("policy", sort=True):
        helping = group[HELPING].dropna() if HELPING in group else pd.Series(dtype=float)
        mine = layers[layers["policy"] == policy]
        helped = mine[mine["verdict"] == "helped"].sort_values("lca_mean", kind="stable")
        hurt = mine[mine["verdict"] == "hurt"].sort_values("lca_mean", ascending=False, kind="stable")
        totals = group[columns].sum(axis=1, min_count=1).dropna() if columns else pd.Series(dtype=float)
        rows.append([
            policy,
            len(group),
            int(group["seed"].nunique()) if "seed" in group else 0,
            float(helping.mean()) if len(helping) else math.nan,
            float(helping.std(ddof=1)) if len(helping) > 1 else math.nan,
            float(totals.mean()) if len(totals) else math.nan,
            tuple(helped["layer"]),
            tuple(hurt["layer"]),
        ])
    return pd.DataFrame(rows, columns=POLICY_COLUMNS)
