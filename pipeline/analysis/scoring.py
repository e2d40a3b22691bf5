"""Scores of LR policies from a runs table (:func:`pipeline.tracking.runs.load_runs`): pure pandas in, pandas out.

Runs are grouped by (model, dataset, optimizer). Within a group a *candidate* is one exact policy: its LRBench
string (``policy_spec``) plus its momentum schedule and warm-up; its runs are the seeds. Per candidate, over seeds
(LRBench's metric families, notes lrbench.md section 3):

- utility: best and final validation top-1, test top-1/top-5 (mean, std, t-interval), confidence AC/CV/CVAC (test);
- cost: optimizer steps and training seconds to the target accuracy, and whether it was reached within budget;
- variance: std across seeds, and late fluctuation (std of the last evaluations, ``summary/val_acc_last_std``);
- robustness: the train-test loss gap, and sensitivity to scaling k (:func:`k_scale_robustness`);
- failures: diverged, failed and killed runs stay in the table and are counted against their candidate.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

GROUP_COLUMNS = ("model", "dataset", "optimizer")
CANDIDATE_COLUMNS = ("policy_spec", "momentum", "warmup")
VAL_ACC = "val/acc"


@dataclass(frozen=True)
class Criteria:
    """What "good" means: reach ``target`` (validation top-1, fraction) within the budget."""

    target: float
    budget_steps: int | None = None  # optimizer steps; None: each run's own trainer.max_steps (or steps run)
    budget_s: float | None = None    # training seconds; None: no time limit
    confidence: float = 0.95         # level of the seed t-intervals


def target_label(target: float) -> str:
    """The suffix of the ``summary/*_acc_{T}`` keys: ``{T:g}`` as the training stage writes it."""
    return f"{target:g}"


def seed_stats(values: Sequence[float], confidence: float = 0.95) -> dict[str, float]:
    """n, mean, sample std (ddof 1) and the two-sided t-interval of the mean over seeds; NaN where undefined.

    The t quantile is ``scipy.special.stdtrit``, the function behind ``scipy.stats.t.ppf`` (importing
    ``scipy.stats`` alone costs about a second).
    """
    from scipy.special import stdtrit

    x = np.asarray([v for v in values if v is not None and not math.isnan(v)], dtype=float)
    n = len(x)
    out = {"n": n, "mean": math.nan, "std": math.nan, "ci_low": math.nan, "ci_high": math.nan}
    if n == 0:
        return out
    out["mean"] = float(x.mean())
    if n >= 2:
        std = float(x.std(ddof=1))
        half = float(stdtrit(n - 1, (1 + confidence) / 2)) * std / math.sqrt(n)
        out.update(std=std, ci_low=out["mean"] - half, ci_high=out["mean"] + half)
    return out


def _column(runs: pd.DataFrame, name: str) -> pd.Series:
    return runs[name] if name in runs else pd.Series(math.nan, index=runs.index, dtype=float)


def needs_history(runs: pd.DataFrame, target: float) -> list[str]:
    """Runs whose summaries do not say whether they reached ``target`` (it was not among their targets):
    their first step at ``target`` has to come from the ``val/acc`` history."""
    reached = _column(runs, f"summary/reached_acc_{target_label(target)}")
    has_evals = _column(runs, "summary/best_val_acc").notna()
    return runs.loc[reached.isna() & has_evals, "run_id"].tolist()


def first_reach_steps(histories: pd.DataFrame, target: float) -> dict[str, float]:
    """Run id -> first step whose ``val/acc`` is >= ``target`` (NaN if never), for every run in ``histories``."""
    acc = histories[histories["key"] == VAL_ACC]
    out = {run_id: math.nan for run_id in acc["run_id"].unique()}
    hits = acc[acc["value"] >= target].sort_values("step")
    for run_id, step in hits.groupby("run_id")["step"].first().items():
        out[run_id] = float(step)
    return out


def _failure(row) -> str:
    if isinstance(row["failure"], str) and row["failure"]:
        return row["failure"]
    if row["summary/diverged"] == 1:
        return "diverged"
    if row["status"] != "FINISHED":
        return str(row["status"]).lower()
    return ""


def _run_budget(runs: pd.DataFrame, criteria: Criteria) -> pd.Series:
    if criteria.budget_steps is not None:
        return pd.Series(float(criteria.budget_steps), index=runs.index)
    own = pd.to_numeric(_column(runs, "param.trainer.max_steps"), errors="coerce")
    return own.where(own > 0, _column(runs, "summary/steps")).astype(float)


def run_outcomes(runs: pd.DataFrame, criteria: Criteria, reached_steps: Mapping[str, float] | None = None
                 ) -> pd.DataFrame:
    """The runs table plus, per run: ``group``, ``candidate``, ``failure`` ('' if none), ``budget_steps``,
    ``steps_to`` and ``seconds_to`` the target (NaN if never), ``reached`` (within budget), ``target_source``.

    ``reached_steps`` (from :func:`first_reach_steps`) answers for runs whose summaries did not record the
    target; their seconds are estimated from the run's mean training seconds per step.
    """
    reached_steps = reached_steps or {}
    out = runs.copy()
    for column in ("summary/diverged", "summary/steps", "summary/train_s"):
        out[column] = _column(out, column)
    label = target_label(criteria.target)
    out["group"] = out[list(GROUP_COLUMNS)].fillna("?").astype(str).agg(" / ".join, axis=1)
    spec = out["policy_spec"].where(out["policy_spec"].notna(), "policy=" + out["policy"].fillna("?").astype(str))
    out["policy_spec"] = spec
    out["candidate"] = out[list(CANDIDATE_COLUMNS)].astype(str).agg(" | ".join, axis=1)
    out["failure"] = out.apply(_failure, axis=1) if len(out) else pd.Series(dtype=str)
    out["budget_steps"] = _run_budget(out, criteria)
    seconds_per_step = out["summary/train_s"] / out["summary/steps"].where(out["summary/steps"] > 0)
    reached_flag = _column(out, f"summary/reached_acc_{label}")
    steps = _column(out, f"summary/steps_to_acc_{label}").where(reached_flag == 1)
    seconds = _column(out, f"summary/seconds_to_acc_{label}").where(reached_flag == 1)
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
    return out


def _stats_columns(prefix: str, values, confidence: float) -> dict:
    s = seed_stats(values, confidence)
    return {f"{prefix}_mean": s["mean"], f"{prefix}_std": s["std"], f"{prefix}_ci_low": s["ci_low"],
            f"{prefix}_ci_high": s["ci_high"]}


# Seed statistics over these summaries (prefix -> summary metric), and means of the confidence metrics.
SEED_STATS = {"best_acc": "summary/best_val_acc", "final_acc": "summary/final_val_acc", "test_acc": "summary/test_acc",
              "test_top5": "summary/test_acc_top5", "loss_gap": "summary/loss_gap"}
MEANS = {"ac": "summary/test_conf_mean", "cv": "summary/test_conf_std", "cvac": "summary/test_conf_class_std"}
_RUN_FIELDS = ["group", *GROUP_COLUMNS, "candidate", "policy", *CANDIDATE_COLUMNS, "k_scale", "run_id", "run_name",
               "seed", "failure", "error", "reached", "steps_to", "seconds_to", "budget_steps", "seconds_per_step",
               "target_source", *SEED_STATS.values(), *MEANS.values(), "summary/val_acc_last_std"]


def _seed(value) -> int | None:
    return None if value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value)) else int(value)


def _mean(values: list[float]) -> float:
    kept = [v for v in values if not math.isnan(v)]
    return sum(kept) / len(kept) if kept else math.nan


def _score(runs: list[dict], confidence: float) -> dict:
    first = runs[0]
    failed = [r for r in runs if r["failure"]]
    reached = [r for r in runs if r["reached"]]
    k_scales = {r["k_scale"] for r in runs}
    row = {c: first[c] for c in ("group", *GROUP_COLUMNS, "candidate", "policy", *CANDIDATE_COLUMNS)}
    row.update(
        k_scale=k_scales.pop() if len(k_scales) == 1 else math.nan,
        n_runs=len(runs),
        n_failed=len(failed),
        n_reached=len(reached),
        seeds=[_seed(r["seed"]) for r in runs],
        run_ids=[r["run_id"] for r in runs],
        reached_seeds=[_seed(r["seed"]) for r in reached],
        failures=[{"run_id": r["run_id"], "run_name": r["run_name"], "seed": _seed(r["seed"]), "failure": r["failure"],
                   "error": r["error"] if isinstance(r["error"], str) else ""} for r in failed],
        missed=[{"run_id": r["run_id"], "seed": _seed(r["seed"]), "best_val_acc": r["summary/best_val_acc"]}
                for r in runs if not r["failure"] and not r["reached"]],
        steps_values=[r["steps_to"] for r in reached],
        seconds_values=[r["seconds_to"] for r in reached],
        budget_steps=max(r["budget_steps"] for r in runs),
        seconds_per_step=_mean([r["seconds_per_step"] for r in runs]),
        target_source=",".join(sorted({r["target_source"] for r in runs})),
    )
    row.update(_stats_columns("steps", row["steps_values"], confidence))
    row.update(_stats_columns("seconds", row["seconds_values"], confidence))
    for prefix, column in SEED_STATS.items():
        row.update(_stats_columns(prefix, [r[column] for r in runs], confidence))
    for name, column in MEANS.items():
        row[f"{name}_mean"] = _mean([r[column] for r in runs])
    fluct = [r["summary/val_acc_last_std"] for r in runs if not math.isnan(r["summary/val_acc_last_std"])]
    row["fluct_mean"] = _mean(fluct)
    row["fluct_max"] = max(fluct) if fluct else math.nan
    return row


def score_candidates(outcomes: pd.DataFrame, criteria: Criteria) -> pd.DataFrame:
    """One row per (group, candidate) with seed statistics; see the module docstring for the families.

    ``<metric>_mean/_std/_ci_low/_ci_high`` for steps, seconds (over the seeds that reached the target within
    budget), best_acc, final_acc, test_acc, test_top5, loss_gap; ``ac/cv/cvac_mean``; ``fluct_mean/_max``;
    counts ``n_runs``, ``n_failed``, ``n_reached``; lists ``seeds``, ``run_ids``, ``failures``, ``missed``,
    ``steps_values``, ``seconds_values``; and ``name``, the display name (:func:`display_names`).
    """
    if outcomes.empty:
        return pd.DataFrame(columns=["group", "candidate", "name", "n_runs"])
    slim = pd.DataFrame({c: _column(outcomes, c) for c in _RUN_FIELDS}).sort_values(["group", "candidate", "seed"])
    by_candidate: dict[tuple, list[dict]] = {}
    for record in slim.to_dict("records"):
        by_candidate.setdefault((record["group"], record["candidate"]), []).append(record)
    scores = pd.DataFrame([_score(runs, criteria.confidence) for runs in by_candidate.values()])
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


def k_scale_robustness(outcomes: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """LRBench's base-LR-scale robustness, for policies run at several ``k_scale`` values (robustness preset).

    Returns (per_scale, sensitivity). per_scale: one row per (group, policy, momentum, warmup, k_scale) with
    n_runs, n_failed, share_reached (of runs), final_acc_mean. sensitivity: one row per policy with n_scales,
    share_scales_reaching (scales where every run reached the target within budget) and final_acc_spread (max -
    min of the per-scale mean final accuracy; a failed run counts as accuracy 0). Empty tables when no policy
    was run at more than one scale.
    """
    keys = ["group", "policy", "momentum", "warmup"]
    if outcomes.empty:
        return pd.DataFrame(), pd.DataFrame()
    scaled = outcomes.groupby(keys)["k_scale"].transform("nunique") > 1
    data = outcomes[scaled].copy()
    if data.empty:
        return pd.DataFrame(), pd.DataFrame()
    data["final_acc"] = _column(data, "summary/final_val_acc").where(data["failure"] == "", 0.0).fillna(0.0)
    data["is_failed"] = data["failure"] != ""
    per_scale = (data.groupby(keys + ["k_scale"])
                 .agg(n_runs=("run_id", "size"), n_failed=("is_failed", "sum"), share_reached=("reached", "mean"),
                      all_reached=("reached", "all"), final_acc_mean=("final_acc", "mean"))
                 .reset_index())
    sensitivity = (per_scale.groupby(keys)
                   .agg(n_scales=("k_scale", "size"), share_scales_reaching=("all_reached", "mean"),
                        final_acc_min=("final_acc_mean", "min"), final_acc_max=("final_acc_mean", "max"),
                        scales=("k_scale", lambda s: sorted(float(v) for v in s)))
                   .reset_index())
    sensitivity["final_acc_spread"] = sensitivity["final_acc_max"] - sensitivity["final_acc_min"]
    return per_scale.drop(columns="all_reached"), sensitivity


def evaluations_per_run(runs: pd.DataFrame) -> int | None:
    """The most ``val/*`` points any of ``runs`` logged (steps run / evaluation interval, plus the final one);
    None when the runs do not record their interval. A hint for reading short series in one query."""
    every = pd.to_numeric(_column(runs, "param.trainer.eval_every_steps"), errors="coerce")
    count = (_column(runs, "summary/steps") / every.where(every > 0)).max()
    return None if math.isnan(count) else int(count) + 2
