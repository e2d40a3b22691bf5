"""The report's figures as PNG bytes (matplotlib's Agg canvas, no pyplot state, no display needed).

:func:`group_figure` takes plain tables (histories [run_id, key, step, value], ranked candidate scores) and
labels, and returns the encoded image, so the report can embed it (HTML, base64) or write it next to the Markdown.
:func:`runs_to_plot` says which runs' histories a figure needs, so nothing else is read.
"""

from __future__ import annotations

import io
import math
from collections.abc import Mapping

import pandas as pd
from matplotlib.lines import Line2D

from pipeline.analysis.scoring import CLASSIFICATION, Objective

DPI = 100
GOOD, BAD, TARGET = "#2e7d32", "#c62828", "#555555"


def palette(names: list[str]) -> dict[str, str]:
    """A stable colour per candidate name (in the given order), shared by all panels of a group."""
    from matplotlib import colormaps

    colours = colormaps["tab10"].colors + colormaps["Dark2"].colors
    return {name: "#%02x%02x%02x" % tuple(int(255 * c) for c in colours[i % len(colours)])
            for i, name in enumerate(names)}


def _time_to_target(ax, ranked: pd.DataFrame, prefix: str, unit: str, target: float, labels: bool) -> None:
    """Horizontal bars: mean steps or seconds to the target (error bar: std over seeds); green good, red bad;
    a candidate with no seed at the target has no bar and is marked "missed"."""
    rows = ranked.iloc[::-1]
    n = len(rows)
    means = rows[f"{prefix}_mean"]
    ax.barh(range(n), means.fillna(0), xerr=rows[f"{prefix}_std"].fillna(0),
            color=[GOOD if g else BAD for g in rows["good"]], alpha=0.85, error_kw=dict(lw=0.8))
    for i, row in enumerate(rows.to_dict("records")):
        if row["n_reached"] < row["n_runs"]:  # a bar over the seeds that reached it, or none
            text = " missed" if row["n_reached"] == 0 else f" {row['n_reached']}/{row['n_runs']} seeds"
            ax.text(0 if row["n_reached"] == 0 else row[f"{prefix}_mean"], i, text, va="center", fontsize=7,
                    color=BAD)
    right = float((means.fillna(0) + rows[f"{prefix}_std"].fillna(0)).max())
    ax.set_xlim(0, right * 1.2 if right > 0 else 1)  # room for the "k/n seeds" notes
    ax.set_yticks(range(n), rows["name"].tolist() if labels else [""] * n, fontsize=7)
    ax.set_xlabel(f"{unit} to the target {target:g} (mean ± std)", fontsize=8)
    ax.tick_params(axis="x", labelsize=7)
    ax.grid(axis="x", alpha=0.3)


def _lr_curves(ax, histories: pd.DataFrame, labels: Mapping[str, str], colours: Mapping[str, str]) -> None:
    """Learning rate against optimizer step, one line per candidate (one seed each)."""
    lr = histories[histories["key"] == "lr"]
    for run_id, curve in lr.groupby("run_id", sort=False):
        name = labels.get(run_id)
        if name is not None:
            ax.plot(curve["step"], curve["value"], lw=1.2, color=colours.get(name))
    ax.set_xlabel("optimizer step", fontsize=8)
    ax.set_ylabel("learning rate", fontsize=8)
    ax.set_title("LR policies (one seed each)", fontsize=9)


def _accuracy_curves(by_step, by_time, histories: pd.DataFrame, labels: Mapping[str, str],
                     colours: Mapping[str, str], seconds_per_step: Mapping[str, float], target: float,
                     objective: Objective = CLASSIFICATION) -> None:
    """The validation objective against optimizer steps and against training seconds (each run's step times its
    mean training seconds per step), every plotted seed of every plotted candidate; the target dashed."""
    acc = histories[histories["key"] == objective.key]
    for run_id, curve in acc.groupby("run_id", sort=False):
        name = labels.get(run_id)
        if name is None:
            continue
        style = dict(lw=0.9, alpha=0.8, color=colours.get(name))
        by_step.plot(curve["step"], curve["value"], **style)
        rate = seconds_per_step.get(run_id, math.nan)
        if rate == rate:  # not NaN
            by_time.plot(curve["step"] * rate, curve["value"], **style)
    for ax, xlabel, title in ((by_step, "optimizer step", f"{objective.label} vs step"),
                              (by_time, "training seconds (estimated)", f"{objective.label} vs training time")):
        ax.axhline(target, color=TARGET, ls="--", lw=1)
        ax.set_xlabel(xlabel, fontsize=8)
        ax.set_title(f"{title} (dashed: {target:g}, {objective.direction})", fontsize=9)


def group_figure(ranked: pd.DataFrame, lr_histories: pd.DataFrame, lr_runs: Mapping[str, str],
                 acc_histories: pd.DataFrame, acc_runs: Mapping[str, str], seconds_per_step: Mapping[str, float],
                 target: float, objective: Objective = CLASSIFICATION) -> bytes:
    """One group's evidence as one PNG: time to target in steps and seconds (top), LR curves and the validation
    objective against steps and seconds of the plotted candidates (bottom), with one legend for the colours.

    One figure per group with a fixed layout: matplotlib's automatic layout and each extra PNG cost about as much
    as the drawing itself, and the report has a time budget (a 1,000-run report in under 10 s).
    """
    from matplotlib.figure import Figure

    n = len(ranked)
    bars_in = 0.35 + 0.17 * max(n, 3)
    height_in = bars_in + 3.8
    fig = Figure(figsize=(12, height_in), dpi=DPI)
    grid = fig.add_gridspec(2, 6, height_ratios=[bars_in, 2.6], left=0.17, right=0.985, top=1 - 0.3 / height_in,
                            bottom=0.45 / height_in, hspace=0.9 / (height_in / 2), wspace=1.2)
    steps_ax, seconds_ax = fig.add_subplot(grid[0, :3]), fig.add_subplot(grid[0, 3:])
    lr_ax, by_step, by_time = (fig.add_subplot(grid[1, 2 * i:2 * i + 2]) for i in range(3))
    _time_to_target(steps_ax, ranked, "steps", "optimizer steps", target, labels=True)
    _time_to_target(seconds_ax, ranked, "seconds", "training seconds", target, labels=False)
    steps_ax.set_title("time to target: green good, red bad", fontsize=9)
    colours = palette(list(dict.fromkeys([*lr_runs.values(), *acc_runs.values()])))
    _lr_curves(lr_ax, lr_histories, lr_runs, colours)
    _accuracy_curves(by_step, by_time, acc_histories, acc_runs, colours, seconds_per_step, target, objective)
    for ax in (lr_ax, by_step, by_time):
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    by_step.set_ylabel(objective.key, fontsize=8)
    handles = [Line2D([], [], color=c, lw=2) for c in colours.values()]
    lr_ax.legend(handles, list(colours), loc="center right", bbox_to_anchor=(-0.2, 0.5), fontsize=7,
                 frameon=False, title="plotted", title_fontsize=7)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return buffer.getvalue()


def runs_to_plot(ranked: pd.DataFrame, outcomes: pd.DataFrame, top_n: int, plot_seeds: int,
                 baseline: str | None = None) -> tuple[dict[str, str], dict[str, str]]:
    """Which runs one group's figures draw, so that only their histories are read: the ``top_n`` ranked
    candidates plus the baseline policy. Returns (lr runs: one seed per candidate, finished runs first;
    accuracy runs: the first ``plot_seeds`` seeds per candidate), each run id -> candidate name."""
    chosen = ranked.head(top_n)
    if baseline is not None:
        extra = ranked[(ranked["policy"] == baseline) & ~ranked["candidate"].isin(chosen["candidate"])]
        chosen = pd.concat([chosen, extra.head(1)])
    lr_runs: dict[str, str] = {}
    acc_runs: dict[str, str] = {}
    for candidate, name in zip(chosen["candidate"], chosen["name"]):
        runs = outcomes[outcomes["candidate"] == candidate].sort_values("seed", na_position="last")
        runs = runs.assign(_failed=runs["failure"] != "").sort_values(["_failed", "seed"], kind="stable")
        if len(runs):
            lr_runs[runs["run_id"].iloc[0]] = name
        for run_id in runs["run_id"].head(plot_seeds):
            acc_runs[run_id] = name
    return lr_runs, acc_runs
