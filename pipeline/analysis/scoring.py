"""Scores of LR policies from a runs table (:func:`pipeline.tracking.runs.load_runs`): pure pandas in, pandas out.

Runs are grouped by (model, dataset, optimizer). Within a group a *candidate* is one exact policy: its LRBench
string (``policy_spec``) plus its momentum schedule and warm-up; its runs are the seeds. Everything is measured on
the runs' *objective* (:class:`Objective`: ``val/acc``, higher is better, unless the runs' tags name another metric
and mode). Per candidate, over seeds (LRBench's metric families, notes lrbench.md section 3):

- utility: best and final validation objective, test top-1/top-5 (mean, std, t-interval), confidence AC/CV/CVAC;
- cost: optimizer steps and training seconds to the target, and whether it was reached within budget;
- variance: std across seeds, and late fluctuation (std of the last evaluations, ``summary/val_<metric>_last_std``);
- robustness: the train-test loss gap, and sensitivity to scaling k (:func:`k_scale_robustness`);
- failures: diverged and pruned runs stay in the table and are counted against their candidate.

Runs that say nothing about a policy are never seeds (:func:`run_class`): runs that could not run (a bad config,
missing data, the environment), runs that did not finish (interrupted, still running, crashed), and repeats of a
run already counted (:func:`duplicates`). They are listed by :func:`not_counted`.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from pipeline.analysis.objective import (  # noqa: F401 - part of this module's interface too
    CLASSIFICATION,
    DEFAULT_MODES,
    METRIC_BOUNDS,
    Objective,
    _text,
    check_target,
    objectives,
    scope_objective,
    target_label,
)
from pipeline.analysis.run_classes import (  # noqa: F401 - part of this module's interface too
    CLASS_TEXT,
    OUTCOME_FAILURES,
    RUN_CLASSES,
    SETUP_ERROR,
    SETUP_FAILURES,
    _failure,
    duplicates,
    not_counted,
    not_counted_text,
    run_class,
)

GROUP_COLUMNS = ("model", "dataset", "optimizer")
CANDIDATE_COLUMNS = ("policy_spec", "momentum", "warmup")
INF = math.inf
COST_BOUNDS = (0.0, INF)  # steps and seconds
# How many of the last evaluations the late fluctuation is measured over (pipeline.training.metrics.LAST_EVALS).
LATE_EVALS = 5


@dataclass(frozen=True)
class Criteria:
    """What "good" means: reach ``target`` (in the objective's units) within the budget."""

    target: float
    budget_steps: int | None = None  # optimizer steps; None: each run's own trainer.max_steps (or steps run)
    budget_s: float | None = None    # training seconds; None: no time limit
    confidence: float = 0.95         # level of the seed t-intervals
    objective: Objective = CLASSIFICATION


def seed_stats(values: Sequence[float], confidence: float = 0.95, bounds: tuple[float, float] | None = None
               ) -> dict[str, float]:
    """n, mean, sample std (ddof 1) and the two-sided t-interval of the mean over seeds; NaN where undefined.

    ``bounds``: the values' possible range; an interval reaching past it is clipped to it (``clipped`` True): an
    accuracy interval of [0.675, 1.27] is reported as [0.675, 1]. The t quantile is ``scipy.special.stdtrit``, the
    function behind ``scipy.stats.t.ppf`` (importing ``scipy.stats`` alone costs about a second).
    """
    from scipy.special import stdtrit

    x = np.asarray([v for v in values if v is not None and not math.isnan(v)], dtype=float)
    n = len(x)
    out = {"n": n, "mean": math.nan, "std": math.nan, "ci_low": math.nan, "ci_high": math.nan, "clipped": False}
    if n == 0:
        return out
    out["mean"] = float(x.mean())
    if n >= 2:
        std = float(x.std(ddof=1))
        half = float(stdtrit(n - 1, (1 + confidence) / 2)) * std / math.sqrt(n)
        low, high = out["mean"] - half, out["mean"] + half
        if bounds is not None:
            clipped = low < bounds[0] or high > bounds[1]
            low, high = max(low, bounds[0]), min(high, bounds[1])
            out["clipped"] = clipped
        out.update(std=std, ci_low=low, ci_high=high)
    return out


def _column(runs: pd.DataFrame, name: str) -> pd.Series:
    return runs[name] if name in runs else pd.Series(math.nan, index=runs.index, dtype=float)


def needs_history(runs: pd.DataFrame, target: float, objective: Objective = CLASSIFICATION) -> list[str]:
    """Runs whose summaries do not say whether they reached ``target`` (it was not among their targets):
    their first step at ``target`` has to come from the objective's ``val/`` history."""
    reached = _column(runs, objective.summary("reached", target))
    has_evals = _column(runs, objective.summary("best")).notna()
    return runs.loc[reached.isna() & has_evals, "run_id"].tolist()


def first_reach_steps(histories: pd.DataFrame, target: float, objective: Objective = CLASSIFICATION
                      ) -> dict[str, float]:
    """Run id -> first step whose objective reaches ``target`` (>= for max, <= for min; NaN if never), for every
    run in ``histories``."""
    curve = histories[histories["key"] == objective.key]
    out = {run_id: math.nan for run_id in curve["run_id"].unique()}
    at = curve["value"] >= target if objective.maximise else curve["value"] <= target
    hits = curve[at].sort_values("step")
    for run_id, step in hits.groupby("run_id")["step"].first().items():
        out[run_id] = float(step)
    return out


# -- scores of runs --------------------------------------------------------------------------------------------------


def _diverged_step(row: Mapping) -> float:
    step = row.get("summary/diverged_step")
    if step is not None and not (isinstance(step, float) and math.isnan(step)):
        return float(step)
    found = re.search(r"at step (\d+)", _text(row.get("error")))
    return float(found.group(1)) if found else math.nan


def score_cutoffs(runs: pd.DataFrame, criteria: Criteria) -> dict[str, int]:
    """Run id -> the last step whose evaluation may count towards its best, final and late-fluctuation scores,
    for runs where the summaries do not already stop there: diverged runs (evaluations at or after the divergence
    step measure a broken model: they never feed the run's final score) and runs longer than ``budget_steps``."""
    out = {}
    for row in runs.to_dict("records"):
        cut = math.inf
        if row.get("failure") == "diverged" or row.get("summary/diverged") == 1:
            step = _diverged_step(row)
            cut = step - 1 if not math.isnan(step) else cut
        steps = row.get("summary/steps")
        if criteria.budget_steps is not None and steps is not None and steps > criteria.budget_steps:
            cut = min(cut, criteria.budget_steps)
        if cut != math.inf:
            out[row["run_id"]] = int(cut)
    return out


def cut_scores(histories: pd.DataFrame, cutoffs: Mapping[str, int], objective: Objective = CLASSIFICATION
               ) -> dict[str, dict[str, float]]:
    """Run id -> best, final and late std (population std of the last 5) of the objective over the evaluations at
    steps <= its cutoff (:func:`score_cutoffs`); NaN where no evaluation came before it."""
    curve = histories[(histories["key"] == objective.key) & histories["run_id"].isin(list(cutoffs))]
    out = {run_id: {"best": math.nan, "final": math.nan, "late_std": math.nan} for run_id in cutoffs}
    for run_id, points in curve.sort_values("step").groupby("run_id"):
        values = points.loc[points["step"] <= cutoffs[run_id], "value"].tolist()
        if values:
            late = values[-LATE_EVALS:]
            out[run_id] = {"best": max(values) if objective.maximise else min(values), "final": values[-1],
                           "late_std": float(np.std(late))}
    return out


def _joined(columns: pd.DataFrame, separator: str) -> pd.Series:
    if columns.empty:
        return pd.Series(dtype=object, index=columns.index)
    return columns.astype(str).agg(separator.join, axis=1)


def _run_budget(runs: pd.DataFrame, criteria: Criteria) -> pd.Series:
    if criteria.budget_steps is not None:
        return pd.Series(float(criteria.budget_steps), index=runs.index)
    own = pd.to_numeric(_column(runs, "param.trainer.max_steps"), errors="coerce")
    recorded = pd.to_numeric(_column(runs, "param.budget.total_steps"), errors="coerce")  # epochs resolved to steps
    return own.where(own > 0, recorded.where(recorded > 0, _column(runs, "summary/steps"))).astype(float)


def run_outcomes(runs: pd.DataFrame, criteria: Criteria, reached_steps: Mapping[str, float] | None = None,
                 cut: Mapping[str, Mapping[str, float]] | None = None) -> pd.DataFrame:
    """The runs table plus, per run: ``group``, ``candidate``, ``failure`` ('' if none), ``run_class``
    (:data:`RUN_CLASSES`), ``duplicate_of``/``duplicate_reason``, ``budget_steps``, ``steps_to`` and ``seconds_to``
    the target (NaN if never), ``reached`` (within budget), ``target_source``, and the objective's ``val_best``,
    ``val_final``, ``val_late_std`` and ``test_value``.

    ``reached_steps`` (from :func:`first_reach_steps`) answers for runs whose summaries did not record the
    target; their seconds are estimated from the run's mean training seconds per step. ``cut`` (from
    :func:`cut_scores`) replaces the summaries' best, final and late std of diverged or over-budget runs.
    """
    reached_steps = reached_steps or {}
    cut = cut or {}
    objective, target = criteria.objective, criteria.target
    out = runs.copy()
    for column in ("summary/diverged", "summary/steps", "summary/train_s", "start_time", "run_key"):
        out[column] = _column(out, column)
    out["group"] = _joined(out[list(GROUP_COLUMNS)].fillna("?"), " / ")
    spec = out["policy_spec"].where(out["policy_spec"].notna(), "policy=" + out["policy"].fillna("?").astype(str))
    out["policy_spec"] = spec
    out["candidate"] = _joined(out[list(CANDIDATE_COLUMNS)], " | ")
    out["failure"] = out.apply(_failure, axis=1) if len(out) else pd.Series(dtype=str)
    out["run_class"] = [run_class(f, e) for f, e in zip(out["failure"], _column(out, "error"))]
    out[["duplicate_of", "duplicate_reason"]] = duplicates(out)
    out.loc[out["duplicate_of"] != "", "run_class"] = "duplicate"
    out["budget_steps"] = _run_budget(out, criteria)
    seconds_per_step = out["summary/train_s"] / out["summary/steps"].where(out["summary/steps"] > 0)
    reached_flag = _column(out, objective.summary("reached", target))
    steps = _column(out, objective.summary("steps_to", target)).where(reached_flag == 1)
    seconds = _column(out, objective.summary("seconds_to", target)).where(reached_flag == 1)
    from_history = out["run_id"].map(lambda r: reached_steps.get(r, math.nan)).astype(float)
    use_history = reached_flag.isna() & out["run_id"].isin(list(reached_steps))
    out["steps_to"] = steps.where(~use_history, from_history)
    out["seconds_to"] = seconds.where(~use_history, from_history * seconds_per_step)
    out["target_source"] = np.where(reached_flag.notna(), "summary", np.where(use_history, "history", "missing"))
    within = out["steps_to"] <= out["budget_steps"]
    if criteria.budget_s is not None:
        within &= out["seconds_to"] <= criteria.budget_s
    out["reached"] = out["steps_to"].notna() & within
    out["seconds_per_step"] = seconds_per_step
    for name, summary in (("val_best", "best"), ("val_final", "final"), ("val_late_std", "late_std")):
        recorded = _column(out, objective.summary(summary)).astype(float)
        out[name] = [cut[r][summary] if r in cut else v for r, v in zip(out["run_id"], recorded)]
    out["test_value"] = _column(out, objective.summary("test")).astype(float)
    return out


# -- scores of candidates --------------------------------------------------------------------------------------------


def _stats_columns(prefix: str, values, confidence: float, bounds=None) -> dict:
    s = seed_stats(values, confidence, bounds)
    return {f"{prefix}_mean": s["mean"], f"{prefix}_std": s["std"], f"{prefix}_ci_low": s["ci_low"],
            f"{prefix}_ci_high": s["ci_high"], f"{prefix}_ci_clipped": s["clipped"]}


# Seed statistics (prefix -> run column); None bounds: the objective's. Means of the confidence metrics.
SEED_STATS = {"best_val": ("val_best", None), "final_val": ("val_final", None), "test_val": ("test_value", None),
              "test_top5": ("summary/test_acc_top5", (0.0, 1.0)), "loss_gap": ("summary/loss_gap", (-INF, INF))}
MEANS = {"ac": "summary/test_conf_mean", "cv": "summary/test_conf_std", "cvac": "summary/test_conf_class_std"}
_RUN_FIELDS = ["group", *GROUP_COLUMNS, "candidate", "policy", *CANDIDATE_COLUMNS, "k_scale", "run_id", "run_name",
               "seed", "failure", "error", "reached", "steps_to", "seconds_to", "budget_steps", "seconds_per_step",
               "target_source", *(c for c, _ in SEED_STATS.values()), *MEANS.values(), "val_late_std", "policy_fit"]


def policy_fit(values) -> str | None:
    """A candidate's ``policy_fit`` over its runs' tags (:func:`pipeline.policies.fit.policy_fit`): the first verdict
    other than ``ok`` (the policy did not show its shape in some run's budget), ``ok``, or None for runs recorded
    without the tag."""
    verdicts = [v for v in values if isinstance(v, str) and v]
    return next((v for v in verdicts if v != "ok"), "ok" if verdicts else None)


def _seed(value) -> int | None:
    return None if value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value)) else int(value)


def _mean(values: list[float]) -> float:
    kept = [v for v in values if not math.isnan(v)]
    return sum(kept) / len(kept) if kept else math.nan


def _score(runs: list[dict], confidence: float, objective: Objective) -> dict:
    first = runs[0]
    failed = [r for r in runs if r["failure"]]
    reached = [r for r in runs if r["reached"]]
    k_scales = {r["k_scale"] for r in runs}
    row = {c: first[c] for c in ("group", *GROUP_COLUMNS, "candidate", "policy", *CANDIDATE_COLUMNS)}
    row.update(
        k_scale=k_scales.pop() if len(k_scales) == 1 else math.nan,
        objective_metric=objective.metric,
        objective_mode=objective.mode,
        n_runs=len(runs),
        n_failed=len(failed),
        n_reached=len(reached),
        seeds=[_seed(r["seed"]) for r in runs],
        run_ids=[r["run_id"] for r in runs],
        reached_seeds=[_seed(r["seed"]) for r in reached],
        failures=[{"run_id": r["run_id"], "run_name": r["run_name"], "seed": _seed(r["seed"]), "failure": r["failure"],
                   "error": r["error"] if isinstance(r["error"], str) else ""} for r in failed],
        missed=[{"run_id": r["run_id"], "seed": _seed(r["seed"]), "best": r["val_best"]}
                for r in runs if not r["failure"] and not r["reached"]],
        steps_values=[r["steps_to"] for r in reached],
        seconds_values=[r["seconds_to"] for r in reached],
        final_values=[r["val_final"] for r in runs if not math.isnan(r["val_final"])],
        budget_steps=max(r["budget_steps"] for r in runs),
        seconds_per_step=_mean([r["seconds_per_step"] for r in runs]),
        target_source=",".join(sorted({r["target_source"] for r in runs})),
        policy_fit=policy_fit(r["policy_fit"] for r in runs),
    )
    row.update(_stats_columns("steps", row["steps_values"], confidence, COST_BOUNDS))
    row.update(_stats_columns("seconds", row["seconds_values"], confidence, COST_BOUNDS))
    for prefix, (column, bounds) in SEED_STATS.items():
        row.update(_stats_columns(prefix, [r[column] for r in runs], confidence, bounds or objective.bounds))
    for name, column in MEANS.items():
        row[f"{name}_mean"] = _mean([r[column] for r in runs])
    fluct = [r["val_late_std"] for r in runs if not math.isnan(r["val_late_std"])]
    row["fluct_mean"] = _mean(fluct)
    row["fluct_max"] = max(fluct) if fluct else math.nan
    return row


def score_candidates(outcomes: pd.DataFrame, criteria: Criteria) -> pd.DataFrame:
    """One row per (group, candidate) over its scored runs (``run_class == "scored"``) with seed statistics; see
    the module docstring for the families.

    ``<metric>_mean/_std/_ci_low/_ci_high/_ci_clipped`` for steps, seconds (over the seeds that reached the target
    within budget), best_val, final_val, test_val (the objective's best and final validation and its test value),
    test_top5, loss_gap; ``ac/cv/cvac_mean``; ``fluct_mean/_max``; counts ``n_runs``, ``n_failed``, ``n_reached``;
    lists ``seeds``, ``run_ids``, ``failures``, ``missed``, ``steps_values``, ``seconds_values``, ``final_values``;
    ``objective_metric``/``objective_mode``; and ``name``, the display name (:func:`display_names`).
    """
    scored = outcomes[outcomes["run_class"] == "scored"] if "run_class" in outcomes else outcomes
    if scored.empty:
        return pd.DataFrame(columns=["group", "candidate", "name", "n_runs"])
    slim = pd.DataFrame({c: _column(scored, c) for c in _RUN_FIELDS}).sort_values(["group", "candidate", "seed"])
    by_candidate: dict[tuple, list[dict]] = {}
    for record in slim.to_dict("records"):
        by_candidate.setdefault((record["group"], record["candidate"]), []).append(record)
    scores = pd.DataFrame([_score(runs, criteria.confidence, criteria.objective) for runs in by_candidate.values()])
    scores["name"] = display_names(scores)
    return scores


def _base_name(row) -> str:
    name = str(row["policy"] if isinstance(row["policy"], str) else "?")
    if row["warmup"] != "none":
        name += f"+{row['warmup']}"
    if row["momentum"] != "none":
        name += f"+mom:{row['momentum']}"
    if not math.isnan(row["k_scale"]) and row["k_scale"] != 1.0:
        name += f" ×{row['k_scale']:g}"
    return name


def _spec_tokens(spec: str) -> list[str]:
    return [t for t in spec.replace("-", "+").split("+") if t]


def display_names(scores: pd.DataFrame) -> pd.Series:
    """The policy name of each candidate, made unique within its group: warm-up, momentum schedule and k scale are
    appended, then the LRBench fields that tell same-named policies apart (``triangle2 [k1_0.1]``), then a hash."""
    names = scores.apply(_base_name, axis=1)
    for _, index in scores.groupby(["group", names]).groups.items():
        if len(index) < 2:
            continue
        tokens = {i: _spec_tokens(scores.at[i, "policy_spec"]) for i in index}
        common = set.intersection(*(set(t) for t in tokens.values()))
        for i in index:
            differing = [t for t in tokens[i] if t not in common][:2]
            names[i] = f"{names[i]} [{','.join(differing)}]" if differing else names[i]
    for _, index in scores.groupby(["group", names]).groups.items():
        if len(index) > 1:  # the same spec with different momentum/warm-up values under the same option names
            for i in index:
                names[i] += " #" + hashlib.sha1(scores.at[i, "candidate"].encode()).hexdigest()[:6]
    return names


def k_scale_robustness(outcomes: pd.DataFrame, objective: Objective = CLASSIFICATION
                       ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """LRBench's base-LR-scale robustness, for policies run at several ``k_scale`` values (robustness preset).

    Returns (per_scale, sensitivity). per_scale: one row per (group, policy, momentum, warmup, k_scale) with
    n_runs, n_failed, share_reached (of runs), final_val_mean. sensitivity: one row per policy with n_scales,
    share_scales_reaching (scales where every run reached the target within budget) and final_val_spread (max -
    min of the per-scale mean final objective; a failed run counts as the objective's worst possible value, e.g.
    accuracy 0, or is left out where that is unbounded). Empty tables when no policy was run at more than one
    scale. Only scored runs count.
    """
    keys = ["group", "policy", "momentum", "warmup"]
    if outcomes.empty:
        return pd.DataFrame(), pd.DataFrame()
    if "run_class" in outcomes:
        outcomes = outcomes[outcomes["run_class"] == "scored"]
    scaled = outcomes.groupby(keys)["k_scale"].transform("nunique") > 1
    data = outcomes[scaled].copy()
    if data.empty:
        return pd.DataFrame(), pd.DataFrame()
    worst = objective.bounds[0] if objective.maximise else objective.bounds[1]
    worst = worst if math.isfinite(worst) else math.nan
    data["final_val"] = _column(data, "val_final").where(data["failure"] == "", worst)
    if math.isfinite(worst):
        data["final_val"] = data["final_val"].fillna(worst)
    data["is_failed"] = data["failure"] != ""
    per_scale = (data.groupby(keys + ["k_scale"])
                 .agg(n_runs=("run_id", "size"), n_failed=("is_failed", "sum"), share_reached=("reached", "mean"),
                      all_reached=("reached", "all"), final_val_mean=("final_val", "mean"))
                 .reset_index())
    sensitivity = (per_scale.groupby(keys)
                   .agg(n_scales=("k_scale", "size"), share_scales_reaching=("all_reached", "mean"),
                        final_val_min=("final_val_mean", "min"), final_val_max=("final_val_mean", "max"),
                        scales=("k_scale", lambda s: sorted(float(v) for v in s)))
                   .reset_index())
    sensitivity["final_val_spread"] = sensitivity["final_val_max"] - sensitivity["final_val_min"]
    return per_scale.drop(columns="all_reached"), sensitivity


def evaluations_per_run(runs: pd.DataFrame) -> int | None:
    """The most ``val/*`` points any of ``runs`` logged (steps run / evaluation interval, plus the final one);
    None when the runs do not record their interval. A hint for reading short series in one query."""
    every = pd.to_numeric(_column(runs, "param.trainer.eval_every_steps"), errors="coerce")
    count = (_column(runs, "summary/steps") / every.where(every > 0)).max()
    return None if math.isnan(count) else int(count) + 2
