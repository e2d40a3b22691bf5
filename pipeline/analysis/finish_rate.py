"""Finish rates: the share of settings in which each method finishes Top-1 / Top-3, the form of the Demon paper's
Table 1 (Chen et al., ICASSP 2022: "percentage of Top-1 / Top-3 finishes over 28 experiments"). Pure pandas.

Definitions:

- A **setting** is one (model, dataset) pair (``setting`` columns; add e.g. ``param.trainer.max_epochs`` to make
  the budget part of it, as the paper's "RN20-CIFAR10-SGDM-300epochs" does). The base optimizer is *not* part of
  a setting here: Demon-Adam competes with the SGD-momentum methods of the same model and data.
- A **method** is an (LR policy, momentum policy, optimizer) triple, labelled ``policy[+mom:momentum] (optimizer)``
  from the run tags, e.g. ``fix+mom:demon (adam)`` or ``step (momentum)``. Candidates that differ only in other
  respects (k scale, warm-up, policy parameters) count as one method, represented by its best-placed candidate.
- A method's **position** in a setting is 1 + the number of other methods whose best candidate ranks ahead of its
  own, under the analysis stage's ranking rule (:func:`pipeline.analysis.recommend.rank`: good candidates first,
  fastest to the target; then bad ones by failures, seeds reaching the target, objective), applied across every
  candidate of the setting, whatever their optimizer.
- **Top-k share** of a method: the number of settings where its position is <= k, divided by the number of
  settings in which the method was run (``settings``). With ``good_only`` a bad candidate (missed the target or
  failed in some seed) never counts as a finish, so in a setting with no good candidate nobody finishes.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import pandas as pd

SETTING_COLUMNS = ("model", "dataset")
# What the input needs: the setting and method keys, and what recommend.rank orders by.
REQUIRED_COLUMNS = ("policy", "momentum", "optimizer", "name", "good", "n_failed", "n_reached",
                    "final_val_mean", "best_val_mean")


def _text(value: object, default: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)) or value == "":
        return default
    return str(value)


def method_label(row) -> str:
    """``policy[+mom:momentum] (optimizer)``: the method a candidate belongs to."""
    label = _text(row["policy"], "?")
    momentum = _text(row["momentum"], "none")
    if momentum != "none":
        label += f"+mom:{momentum}"
    return f"{label} ({_text(row['optimizer'], '?')})"


def setting_positions(ranked: pd.DataFrame, setting: Sequence[str] = SETTING_COLUMNS,
                      rank_by: str = "steps") -> pd.DataFrame:
    """One row per (setting, method): the method's best candidate, with ``setting`` (label), ``method``,
    ``position`` (1-based place among the setting's methods) and ``good``.

    ``ranked`` is the analysis stage's candidate table (:func:`pipeline.analysis.recommend.classify` or
    :func:`~pipeline.analysis.recommend.rank` output): one row per candidate with the ``setting`` columns,
    :data:`REQUIRED_COLUMNS` and the ``rank_by`` column. Its own ``rank`` (within a (model, dataset, optimizer) group)
    is not used: candidates are ranked again across the whole setting.
    """
    from pipeline.analysis.recommend import RANK_COLUMNS, rank

    needed = (*setting, *REQUIRED_COLUMNS, RANK_COLUMNS.get(rank_by, f"{rank_by}_mean"))
    missing = [c for c in needed if c not in ranked]
    if missing:
        raise ValueError(f"the ranking table lacks the columns {missing}")
    columns = ["setting", "method", "position", *setting, "policy", "momentum", "optimizer", "name", "good", "rank"]
    if ranked.empty:
        return pd.DataFrame(columns=columns)
    data = ranked.copy()
    data["setting"] = data[list(setting)].astype(str).agg(" / ".join, axis=1)
    data["method"] = data.apply(method_label, axis=1)
    data["momentum"] = data["momentum"].map(lambda m: _text(m, "none"))
    reranked = rank(data.assign(group=data["setting"]), rank_by)  # "rank": place among the setting's candidates
    best = reranked.drop_duplicates(["setting", "method"], keep="first").copy()  # rank() sorted within settings
    best["position"] = best.groupby("setting").cumcount() + 1
    return best[columns].reset_index(drop=True)


def finish_rate(ranked: pd.DataFrame, setting: Sequence[str] = SETTING_COLUMNS, top: Sequence[int] = (1, 3),
                rank_by: str = "steps", good_only: bool = False) -> pd.DataFrame:
    """Per method: ``method``, ``policy``, ``momentum``, ``optimizer``, ``settings`` (in which it was run), and per
    k in ``top`` the count ``top{k}`` and ``top{k}_share`` (of its settings, 0..1). Sorted best first (Top-1 share,
    then Top-3 share). See the module docstring for the definitions; ``ranked`` as in :func:`setting_positions`."""
    ks = tuple(top)
    if not ks or any(isinstance(k, bool) or not isinstance(k, int) or k < 1 for k in ks):
        raise ValueError(f"top must be a non-empty list of places >= 1, e.g. [1, 3]; got {list(ks)!r}")
    positions = setting_positions(ranked, setting, rank_by)
    counts = [f"top{k}" for k in ks]
    shares = [f"top{k}_share" for k in ks]
    columns = ["method", "policy", "momentum", "optimizer", "settings", *counts, *shares]
    if positions.empty:
        return pd.DataFrame(columns=columns)
    finished = positions["good"].astype(bool) if good_only else pd.Series(True, index=positions.index)
    for k in ks:
        positions[f"top{k}"] = (finished & (positions["position"] <= k)).astype(int)
    table = (positions.groupby("method", sort=True)
             .agg(policy=("policy", "first"), momentum=("momentum", "first"), optimizer=("optimizer", "first"),
                  settings=("setting", "nunique"), **{c: (c, "sum") for c in counts})
             .reset_index())
    for k in ks:
        table[f"top{k}_share"] = table[f"top{k}"] / table["settings"]
    order = [*dict.fromkeys([shares[0], shares[-1]]), "method"]  # Top-1 share, then the widest Top-k share
    table = table.sort_values(order, ascending=[False] * (len(order) - 1) + [True], kind="stable")
    return table[columns].reset_index(drop=True)


def finish_rate_rows(table: pd.DataFrame) -> tuple[list[str], list[list[str]]]:
    """Header and rows of the finish-rate table as plain strings (percentages, as the paper prints them), for the
    HTML and Markdown renderers."""
    ks = [c[3:-6] for c in table.columns if c.startswith("top") and c.endswith("_share")]
    header = ["Method", "Settings", *(f"Top-{k}" for k in ks)]
    rows = [[r["method"], str(int(r["settings"])),
             *(f"{r[f'top{k}_share']:.2%} ({int(r[f'top{k}'])})" for k in ks)]
            for r in table.to_dict("records")]
    return header, rows
