"""Verdicts, ranking and the recommendation per (model, dataset, optimizer) group: pure data in, data out.

LRBench's rule (notes lrbench.md section 3.2-3.3): a policy is *good* when it reaches the target accuracy within
the budget in every seed and never fails; among good ones the fastest to the target wins. Bad ones are listed
with their reasons (failed, missed the target, unstable). The margin over the runner-up is checked against seed
noise (Welch's t-test), the speed-up is measured against a baseline policy, and a composite policy is proposed
(:mod:`.composite`).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass, field

import pandas as pd

from pipeline.analysis.composite import CompositeProposal, NotProposed, propose_composite
from pipeline.analysis.scoring import target_label


# -- verdicts and ranking ------------------------------------------------------------------------------------------


def reasons(row: Mapping, target: float, max_fluctuation: float) -> list[str]:
    """Why a candidate is bad (empty: it is good)."""
    out = []
    n = row["n_runs"]
    if row["n_failed"]:
        detail = "; ".join(f"seed {f['seed']}: {f['failure']}" + (f" ({f['error'][:80]})" if f["error"] else "")
                           for f in row["failures"])
        out.append(f"failed in {row['n_failed']} of {n} seeds ({detail})")
    if row["missed"]:
        best = ", ".join(f"seed {m['seed']}: best {m['best_val_acc']:.3f}" if not math.isnan(m["best_val_acc"])
                         else f"seed {m['seed']}: no evaluation" for m in row["missed"])
        out.append(f"missed {target_label(target)} within {row['budget_steps']:.0f} steps in "
                   f"{len(row['missed'])} of {n} seeds ({best})")
    if not math.isnan(row["fluct_mean"]) and row["fluct_mean"] > max_fluctuation:
        out.append(f"unstable: late val-acc std {row['fluct_mean']:.4f} > {max_fluctuation:g}")
    return out


def classify(scores: pd.DataFrame, target: float, max_fluctuation: float) -> pd.DataFrame:
    """``scores`` plus ``good`` (bool) and ``reasons`` (list of strings; empty for good candidates)."""
    out = scores.copy()
    out["reasons"] = [reasons(row, target, max_fluctuation) for row in out.to_dict("records")]
    out["good"] = out["reasons"].map(len) == 0
    return out


def rank(classified: pd.DataFrame, rank_by: str = "steps") -> pd.DataFrame:
    """Order each group: good candidates by mean steps (or seconds) to the target, fastest first, ties broken by
    higher final then best validation accuracy; then bad ones (fewest failures, most seeds reaching, accuracy).
    Adds ``rank`` (1-based within the group)."""
    if rank_by not in ("steps", "seconds"):
        raise ValueError(f"rank_by must be one of steps, seconds; got {rank_by!r}")
    if classified.empty:
        return classified.assign(rank=pd.Series(dtype=int))
    c = classified
    data = c.assign(_bad=~c["good"], _speed=c[f"{rank_by}_mean"].where(c["good"]), _failed=c["n_failed"],
                    _reached=-c["n_reached"], _final=-c["final_acc_mean"].fillna(-1),
                    _best=-c["best_acc_mean"].fillna(-1))
    data = data.sort_values(["group", "_bad", "_speed", "_failed", "_reached", "_final", "_best", "name"],
                            na_position="last", kind="stable")
    data["rank"] = data.groupby("group").cumcount() + 1
    return data.drop(columns=[c for c in data if c.startswith("_")]).reset_index(drop=True)


# -- margin, baseline ----------------------------------------------------------------------------------------------


def welch_p_value(a: list[float], b: list[float]) -> float:
    """Two-sided p-value of Welch's t-test (``scipy.stats.ttest_ind(a, b, equal_var=False)``), from the t
    distribution's CDF in ``scipy.special`` (a second faster to import than ``scipy.stats``)."""
    from scipy.special import stdtr

    na, nb = len(a), len(b)
    ma, mb = sum(a) / na, sum(b) / nb
    va = sum((x - ma) ** 2 for x in a) / (na - 1) / na
    vb = sum((x - mb) ** 2 for x in b) / (nb - 1) / nb
    if va + vb == 0:
        return math.nan
    t = (ma - mb) / math.sqrt(va + vb)
    df = (va + vb) ** 2 / (va**2 / (na - 1) + vb**2 / (nb - 1))
    return float(2 * stdtr(df, -abs(t)))


@dataclass(frozen=True)
class Margin:
    runner_up: str | None
    difference: float | None   # runner-up mean - recommended mean, in the rank_by unit
    p_value: float | None
    exceeds_noise: bool | None  # None: not testable
    text: str


def _amount(x: float, unit: str) -> str:
    return f"{x:,.1f}".removesuffix(".0") + " steps" if unit == "steps" else f"{x:,.2f} s"


def margin_test(best: list[float], runner_up: list[float], alpha: float, unit: str, runner_up_name: str | None
                ) -> Margin:
    """Is the recommended policy's lead over the runner-up larger than seed noise? Welch's t-test (unequal
    variances) on the per-seed values; needs >= 2 seeds each. ``unit``: steps or s."""
    if runner_up_name is None:
        return Margin(None, None, None, None, "no runner-up: the only good policy")
    diff = sum(runner_up) / len(runner_up) - sum(best) / len(best)
    if len(best) < 2 or len(runner_up) < 2:
        return Margin(runner_up_name, diff, None, None,
                      f"{_amount(diff, unit)} ahead of {runner_up_name}; not testable with 1 seed")
    if pd.Series(best).std() == 0 and pd.Series(runner_up).std() == 0:
        exceeds = diff != 0
        verdict = "identical in every seed" if not exceeds else "no seed variance: the lead holds in every seed"
        return Margin(runner_up_name, diff, None, exceeds,
                      f"{_amount(diff, unit)} ahead of {runner_up_name}; {verdict}")
    p = welch_p_value(best, runner_up)
    exceeds = p < alpha and diff > 0
    verdict = f"exceeds seed noise (Welch p = {p:.3g} < {alpha:g})" if exceeds else \
        f"within seed noise (Welch p = {p:.3g} >= {alpha:g})" if p >= alpha else f"Welch p = {p:.3g}"
    return Margin(runner_up_name, diff, p, exceeds, f"{_amount(diff, unit)} ahead of {runner_up_name}; {verdict}")


@dataclass(frozen=True)
class Speedup:
    baseline: str
    found: bool
    steps: float | None = None      # baseline mean steps to target / recommended mean steps
    seconds: float | None = None
    lower_bound: bool = False       # the baseline missed the target in some seeds: its budget stands in
    text: str = ""


def baseline_row(group_scores: pd.DataFrame, baseline: str) -> Mapping | None:
    """The baseline candidate of a group: the named policy, preferring k scale 1, no warm-up or momentum schedule,
    then the most seeds."""
    rows = group_scores[group_scores["policy"] == baseline]
    if rows.empty:
        return None
    plain = (rows["k_scale"] == 1.0) & (rows["warmup"] == "none") & (rows["momentum"] == "none")
    rows = rows.assign(_plain=~plain).sort_values(["_plain", "n_runs"], ascending=[True, False], kind="stable")
    return rows.iloc[0].to_dict()


def speedup(best: Mapping, base: Mapping | None, baseline: str, budget_s: float | None) -> Speedup:
    """How many times fewer steps (and seconds) the recommended policy needs to reach the target than the
    baseline. Baseline seeds that never reached it count at their budget (steps), or at ``budget_s`` / the budget
    at the baseline's seconds per step (seconds), so the speed-up is then a lower bound, and says so."""
    if base is None:
        return Speedup(baseline, False, text=f"baseline {baseline!r} was not run in this group")
    unreached = base["n_runs"] - base["n_reached"]
    steps = list(base["steps_values"]) + [base["budget_steps"]] * unreached
    per_step = base["seconds_per_step"]
    missing_s = budget_s if budget_s is not None else base["budget_steps"] * per_step
    seconds = list(base["seconds_values"]) + [missing_s] * unreached
    ratio_steps = (sum(steps) / len(steps)) / best["steps_mean"] if best["steps_mean"] > 0 else None
    mean_s = sum(seconds) / len(seconds) if seconds else math.nan
    ratio_s = mean_s / best["seconds_mean"] if best["seconds_mean"] and not math.isnan(mean_s) else None
    bound = unreached > 0
    sign = "≥ " if bound else ""
    parts = []
    if ratio_steps is not None:
        parts.append(f"{sign}{ratio_steps:.2f}× fewer steps")
    if ratio_s is not None and not math.isnan(ratio_s):
        parts.append(f"{sign}{ratio_s:.2f}× less training time")
    text = f"{' and '.join(parts) or 'no speed-up measurable'} than {base['name']}"
    if bound:
        how = "never reached the target" if base["n_reached"] == 0 else \
            f"missed the target in {unreached} of {base['n_runs']} seeds"
        text += (f" (lower bound: {base['name']} {how} within its budget of {base['budget_steps']:.0f} steps; "
                 "those seeds count as the full budget)")
    return Speedup(baseline, True, ratio_steps, ratio_s if ratio_s is None or not math.isnan(ratio_s) else None,
                   bound, text)


# -- the recommendation --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Recommendation:
    group: str
    target: float
    rank_by: str
    policy: str | None                   # display name; None when no candidate is good
    candidate: str | None
    policy_spec: str | None
    steps_mean: float | None = None
    seconds_mean: float | None = None
    n_seeds: int = 0
    margin: Margin | None = None
    speedup: Speedup | None = None
    composite: CompositeProposal | None = None
    n_good: int = 0
    n_candidates: int = 0
    text: str = ""
    notes: list[str] = field(default_factory=list)


def recommend_group(ranked: pd.DataFrame, target: float, rank_by: str, baseline: str, alpha: float,
                    budget_s: float | None = None) -> Recommendation:
    """The recommendation for one group's ranked candidates (:func:`rank`); the composite is added by
    :func:`recommendation_for` (it needs a run's recorded policy), see :func:`propose_composite`."""
    group = ranked["group"].iloc[0]
    good = ranked[ranked["good"]]
    label = target_label(target)
    if good.empty:
        closest = ranked.iloc[0]
        text = (f"no policy reached {label} within budget in every seed without failing; closest: {closest['name']} "
                f"({closest['n_reached']} of {closest['n_runs']} seeds)")
        return Recommendation(group, target, rank_by, None, None, None, n_candidates=len(ranked), text=text)
    best = good.iloc[0].to_dict()
    second = good.iloc[1].to_dict() if len(good) > 1 else None
    unit = "steps" if rank_by == "steps" else "s"
    margin = margin_test(best[f"{rank_by}_values"], second[f"{rank_by}_values"] if second else [], alpha, unit,
                         second["name"] if second else None)
    gain = speedup(best, baseline_row(ranked, baseline), baseline, budget_s)
    text = (f"{best['name']}: reaches {label} in {best['steps_mean']:,.0f} ± {_nan0(best['steps_std']):,.0f} steps "
            f"({best['seconds_mean']:,.1f} s) over {best['n_runs']} seeds")
    return Recommendation(group, target, rank_by, best["name"], best["candidate"], best["policy_spec"],
                          best["steps_mean"], best["seconds_mean"], best["n_runs"], margin, gain,
                          n_good=len(good), n_candidates=len(ranked), text=text)


def _nan0(x: float) -> float:
    return 0.0 if x is None or math.isnan(x) else x


def recommendation_for(ranked: pd.DataFrame, outcomes: pd.DataFrame, lr_runs: Mapping[str, str], target: float,
                       rank_by: str, baseline: str, alpha: float, budget_s: float | None, tail_factor: float
                       ) -> Recommendation:
    """:func:`recommend_group` plus the composite proposal, built from the policy that the recommended candidate's
    run recorded (its plotted run in ``lr_runs``, run id -> candidate name, else its first run) and evaluated at
    the switch step."""
    rec = recommend_group(ranked, target, rank_by, baseline, alpha, budget_s)
    if rec.policy is None:
        return rec
    best = ranked.iloc[0].to_dict()
    run = next((run for run, name in lr_runs.items() if name == best["name"]), best["run_ids"][0])
    params = outcomes.loc[outcomes["run_id"] == run].iloc[0].to_dict()
    try:
        return dataclasses.replace(rec, composite=propose_composite(best, params, tail_factor))
    except NotProposed as reason:
        return dataclasses.replace(rec, notes=[*rec.notes, f"No composite proposed: {reason}."])
