"""Verdicts, ranking and the recommendation per (model, dataset, optimizer) group: pure data in, data out.

LRBench's rule (notes lrbench.md section 3.2-3.3): a policy is *good* when it reaches the target within the budget
in every seed and never fails (diverged, pruned) or fluctuates late; among good ones the fastest to the target wins
(``rank_by=steps`` or ``seconds``). ``rank_by=final`` ranks good ones by their final validation objective instead,
and the Pareto set of both is reported either way (:func:`headlines`). Bad ones are listed with their reasons. The
margin over the runner-up is checked against seed noise (Welch's t-test), the speed-up is measured against a baseline
policy, and a composite policy is proposed (:mod:`.composite`).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass, field

import pandas as pd

from pipeline.analysis.composite import CompositeProposal, NotProposed, propose_composite
from pipeline.analysis.scoring import CLASSIFICATION, Objective, target_label

RANK_BY = ("steps", "seconds", "final")
# The candidate column each ranking orders good candidates by.
RANK_COLUMNS = {"steps": "steps_mean", "seconds": "seconds_mean", "final": "final_val_mean"}


def plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def reached_text(objective: Objective, target: float) -> str:
    """``val acc ≥ 0.85``: what reaching the target means for the objective."""
    return f"{objective.label} {objective.comparator} {target_label(target)}"


def row_objective(row: Mapping) -> Objective:
    """A candidate row's objective (classification where the row does not say)."""
    metric = row.get("objective_metric")
    mode = row.get("objective_mode")
    return Objective(metric, mode) if isinstance(metric, str) and mode in ("max", "min") else CLASSIFICATION


# -- verdicts and ranking ------------------------------------------------------------------------------------------


def reasons(row: Mapping, target: float, max_fluctuation: float) -> list[tuple[str, str]]:
    """Why a candidate is bad, as (kind, sentence) with kind failed, missed or unstable; empty: it is good."""
    objective = row_objective(row)
    out = []
    n = row["n_runs"]
    if row["n_failed"]:
        # Seeds that failed alike (a pruned candidate's seeds share the study's decision) are named together.
        alike: dict[tuple, list] = {}
        for f in row["failures"]:
            alike.setdefault((f["failure"], f["error"] or ""), []).append(f["seed"])
        detail = "; ".join(f"seed{'s' if len(seeds) > 1 else ''} {', '.join(map(str, seeds))}: {failure}"
                           + (f" ({error[:160]})" if error else "") for (failure, error), seeds in alike.items())
        out.append(("failed", f"failed in {row['n_failed']} of {plural(n, 'seed')} ({detail})"))
    if row["missed"]:
        digits = ".3f" if objective.bounds == (0.0, 1.0) else ".4g"
        best = ", ".join(f"seed {m['seed']}: best {m['best']:{digits}}" if not math.isnan(m["best"])
                         else f"seed {m['seed']}: no evaluation" for m in row["missed"])
        out.append(("missed", f"missed {reached_text(objective, target)} within {row['budget_steps']:.0f} steps in "
                              f"{len(row['missed'])} of {plural(n, 'seed')} ({best})"))
    if not math.isnan(row["fluct_mean"]) and row["fluct_mean"] > max_fluctuation:
        out.append(("unstable", f"unstable: late {objective.label} std {row['fluct_mean']:.4f} > {max_fluctuation:g}"))
    return out


def classify(scores: pd.DataFrame, target: float, max_fluctuation: float) -> pd.DataFrame:
    """``scores`` plus ``good`` (bool), ``reasons`` (sentences; empty for good candidates) and ``reason_kinds``."""
    out = scores.copy()
    found = [reasons(row, target, max_fluctuation) for row in out.to_dict("records")]
    out["reasons"] = [[text for _, text in r] for r in found]
    out["reason_kinds"] = [[kind for kind, _ in r] for r in found]
    out["good"] = out["reasons"].map(len) == 0
    return out


def _signed(c: pd.DataFrame, column: str) -> pd.Series:
    """``column`` turned so that smaller is better whatever each row's objective mode: -x for max, x for min."""
    mode = c["objective_mode"] if "objective_mode" in c else pd.Series("max", index=c.index)
    return c[column].where(mode == "min", -c[column])


def rank(classified: pd.DataFrame, rank_by: str = "steps") -> pd.DataFrame:
    """Order each group: good candidates first, by mean steps (or seconds) to the target, fastest first, ties broken
    by the better final then best validation objective; with ``rank_by=final`` by the better mean final validation
    objective, ties broken by fewer steps. Then bad ones (fewest failures, most seeds reaching, objective). Adds
    ``rank`` (1-based within the group)."""
    if rank_by not in RANK_BY:
        raise ValueError(f"rank_by must be one of {', '.join(RANK_BY)}; got {rank_by!r}")
    if classified.empty:
        return classified.assign(rank=pd.Series(dtype=int))
    c = classified
    final, best = _signed(c, "final_val_mean").fillna(math.inf), _signed(c, "best_val_mean").fillna(math.inf)
    speed = c["steps_mean" if rank_by == "final" else RANK_COLUMNS[rank_by]]
    first = final.where(c["good"]) if rank_by == "final" else speed.where(c["good"])
    data = c.assign(_bad=~c["good"], _first=first, _speed=speed, _failed=c["n_failed"], _reached=-c["n_reached"],
                    _final=final, _best=best)
    data = data.sort_values(["group", "_bad", "_first", "_speed", "_failed", "_reached", "_final", "_best", "name"],
                            na_position="last", kind="stable")
    data["rank"] = data.groupby("group").cumcount() + 1
    return data.drop(columns=[c for c in data if c.startswith("_")]).reset_index(drop=True)


def pareto(ranked: pd.DataFrame, speed: str = "steps") -> pd.Series:
    """Per candidate: is it in its group's Pareto set of good candidates on (mean ``speed`` to the target, mean
    final validation objective)? In the set when no other good candidate of the group is at least as fast and at
    least as good at the end, and strictly better in one."""
    out = pd.Series(False, index=ranked.index)
    if ranked.empty:
        return out
    fast = ranked[RANK_COLUMNS[speed]]
    final = _signed(ranked, "final_val_mean")
    usable = ranked["good"] & fast.notna() & final.notna()
    for _, index in ranked[usable].groupby("group").groups.items():
        for i in index:
            out[i] = not any(fast[j] <= fast[i] and final[j] <= final[i] and (fast[j] < fast[i] or final[j] < final[i])
                             for j in index if j != i)
    return out


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
    difference: float | None   # how far the first is ahead of the other, in the unit (positive: ahead)
    p_value: float | None
    exceeds_noise: bool | None  # None: not testable
    text: str
    behind_beyond_noise: bool = False  # the first is behind the other by more than seed noise


def _amount(x: float, unit: str) -> str:
    if unit == "steps":
        return f"{x:,.1f}".removesuffix(".0") + " steps"
    if unit == "s":
        return f"{x:,.2f} s"
    return f"{x:.4g} ({unit})"


def margin_test(best: list[float], runner_up: list[float], alpha: float, unit: str, runner_up_name: str | None,
                lower_is_better: bool = True) -> Margin:
    """Is the first's lead over the other larger than seed noise? Welch's t-test (unequal variances) on the per-seed
    values; needs >= 2 seeds each. ``unit``: steps, s, or the objective's label (then ``lower_is_better`` follows
    its mode)."""
    if runner_up_name is None:
        return Margin(None, None, None, None, "no runner-up: the only good policy")
    diff = sum(runner_up) / len(runner_up) - sum(best) / len(best)
    diff = diff if lower_is_better else -diff
    ahead = f"{_amount(diff, unit)} ahead of" if diff >= 0 else f"{_amount(-diff, unit)} behind"
    if len(best) < 2 or len(runner_up) < 2:
        n = min(len(best), len(runner_up))
        return Margin(runner_up_name, diff, None, None,
                      f"{ahead} {runner_up_name}; not testable with {plural(n, 'seed')}")
    if pd.Series(best).std() == 0 and pd.Series(runner_up).std() == 0:
        exceeds = diff > 0
        verdict = "identical in every seed" if diff == 0 else \
            "no seed variance: the lead holds in every seed" if exceeds else "no seed variance: behind in every seed"
        return Margin(runner_up_name, diff, None, exceeds, f"{ahead} {runner_up_name}; {verdict}", diff < 0)
    p = welch_p_value(best, runner_up)
    exceeds = p < alpha and diff > 0
    verdict = f"exceeds seed noise (Welch p = {p:.3g} < {alpha:g})" if exceeds else \
        f"within seed noise (Welch p = {p:.3g} >= {alpha:g})" if p >= alpha else \
        f"behind beyond seed noise (Welch p = {p:.3g} < {alpha:g})"
    return Margin(runner_up_name, diff, p, exceeds, f"{ahead} {runner_up_name}; {verdict}", p < alpha and diff < 0)


def ratio_phrase(ratio: float | None, fewer: str, more: str, same: str, bound: bool = False) -> str | None:
    """A ratio (baseline / recommended) that reads right both ways: ``2.10× fewer steps``, ``3.90× more steps``,
    ``as many steps`` (1.00× at two decimals). ``bound``: the baseline's value is a lower bound, so the ratio is
    one too (``≥ 2.10× fewer``, ``≤ 3.90× more``)."""
    if ratio is None or math.isnan(ratio) or ratio <= 0:
        return None
    if round(ratio, 2) == 1.0:
        return same
    if ratio > 1:
        return f"{'≥ ' if bound else ''}{ratio:.2f}× {fewer}"
    return f"{'≤ ' if bound else ''}{1 / ratio:.2f}× {more}"


@dataclass(frozen=True)
class Speedup:
    baseline: str
    found: bool
    steps: float | None = None      # baseline mean steps to target / recommended mean steps (> 1: fewer steps)
    seconds: float | None = None    # the same for training seconds (> 1: faster)
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
    """How many times fewer steps (and how much faster in training seconds) the recommended policy reaches the
    target than the baseline, worded both ways (``3.90× slower`` when it is slower). Baseline seeds that never
    reached it count at their budget (steps), or at ``budget_s`` / the budget at the baseline's seconds per step
    (seconds), so the ratio is then a bound, and says so."""
    if base is None:
        return Speedup(baseline, False, text=f"baseline {baseline!r} was not run in this group")
    if base["candidate"] == best["candidate"]:
        return Speedup(baseline, True, 1.0, 1.0, text=f"the recommended policy is the baseline ({base['name']})")
    unreached = base["n_runs"] - base["n_reached"]
    steps = list(base["steps_values"]) + [base["budget_steps"]] * unreached
    per_step = base["seconds_per_step"]
    missing_s = budget_s if budget_s is not None else base["budget_steps"] * per_step
    seconds = list(base["seconds_values"]) + [missing_s] * unreached
    ratio_steps = (sum(steps) / len(steps)) / best["steps_mean"] if best["steps_mean"] > 0 else None
    mean_s = sum(seconds) / len(seconds) if seconds else math.nan
    ratio_s = mean_s / best["seconds_mean"] if best["seconds_mean"] and not math.isnan(mean_s) else None
    ratio_s = None if ratio_s is None or math.isnan(ratio_s) else ratio_s
    bound = unreached > 0
    parts = [p for p in (ratio_phrase(ratio_steps, "fewer steps", "more steps", "as many steps", bound),
                         ratio_phrase(ratio_s, "faster in training time", "slower in training time",
                                      "as fast in training time", bound)) if p]
    text = f"{' and '.join(parts) or 'no speed-up measurable'}, against {base['name']}"
    if bound:
        how = "never reached the target" if base["n_reached"] == 0 else \
            f"missed the target in {unreached} of {plural(base['n_runs'], 'seed')}"
        budget = "" if math.isnan(base["budget_steps"]) else f" of {base['budget_steps']:.0f} steps"
        text += (f" (a bound: {base['name']} {how} within its budget{budget}; those seeds count as the full budget)")
    return Speedup(baseline, True, ratio_steps, ratio_s, bound, text)


# -- headlines and the recommendation ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Headline:
    kind: str                 # fastest | best_final | pareto | none
    policies: list[str]
    text: str


def _stat(row: Mapping, prefix: str, digits: str) -> str:
    std = row[f"{prefix}_std"]
    text = format(row[f"{prefix}_mean"], digits)
    return text + (f" ± {format(std, digits)}" if std == std else "")


def _fastest_text(row: Mapping, objective: Objective, target: float) -> str:
    return (f"{row['name']}: reaches {reached_text(objective, target)} in {_stat(row, 'steps', ',.0f')} steps "
            f"({row['seconds_mean']:,.1f} s) over {plural(row['n_runs'], 'seed')}")


def _final_text(row: Mapping, objective: Objective) -> str:
    digits = ".3f" if objective.bounds == (0.0, 1.0) else ".4g"  # accuracies as in the ranking table
    return (f"{row['name']}: final {objective.label} {_stat(row, 'final_val', digits)} over "
            f"{plural(row['n_runs'], 'seed')} ({objective.direction})")


def no_good_text(ranked: pd.DataFrame, target: float, unscored: str = "") -> str:
    """Why no candidate is good, in the words of the verdicts: how many were rejected for each reason, and the
    closest one with its own reasons; with no candidate at all, why no run counts (``unscored``)."""
    if ranked.empty:
        return (f"no policy could be evaluated: of its runs {unscored or 'none finished training'}; none of them "
                "says anything about its policy (see the runs not counted)")
    objective = row_objective(ranked.iloc[0].to_dict())
    kinds = [k for row in ranked["reason_kinds"] for k in dict.fromkeys(row)]
    words = {"missed": f"missed {reached_text(objective, target)} within budget in some seed",
             "failed": "failed (diverged or pruned) in some seed", "unstable": "fluctuated late (unstable)"}
    counts = ", ".join(f"{kinds.count(k)} {words[k]}" for k in ("missed", "failed", "unstable") if k in kinds)
    closest = ranked.iloc[0]
    return (f"no policy is good: of {plural(len(ranked), 'candidate')}, {counts}; closest: {closest['name']} "
            f"(reached it in {closest['n_reached']} of {plural(closest['n_runs'], 'seed')}; "
            f"{'; '.join(closest['reasons'])})")


def headlines(ranked: pd.DataFrame, target: float, rank_by: str = "steps", unscored: str = "") -> list[Headline]:
    """The three answers shown together: the fastest to the target (LRBench's rule), the best final objective
    within budget, and the Pareto set of both; one ``none`` headline that says why when no candidate is good."""
    good = ranked[ranked["good"]] if not ranked.empty else ranked
    if good.empty:
        return [Headline("none", [], no_good_text(ranked, target, unscored))]
    objective = row_objective(good.iloc[0].to_dict())
    speed = "seconds" if rank_by == "seconds" else "steps"
    fastest = rank(good, speed).iloc[0].to_dict()
    best_final = rank(good, "final").iloc[0].to_dict()
    front = good[pareto(good, speed)]
    front = front.sort_values(RANK_COLUMNS[speed], kind="stable")
    unit = "training seconds" if speed == "seconds" else "optimizer steps"
    return [
        Headline("fastest", [fastest["name"]], f"Fastest to the target (LRBench's rule, in {unit}): "
                                               + _fastest_text(fastest, objective, target)),
        Headline("best_final", [best_final["name"]], "Best final objective within budget: "
                                                     + _final_text(best_final, objective)),
        Headline("pareto", front["name"].tolist(),
                 f"Pareto set of speed and final {objective.label} (none of these is beaten on both): "
                 + ", ".join(front["name"])),
    ]


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
    final_mean: float | None = None
    headlines: list[Headline] = field(default_factory=list)
    objective: dict = field(default_factory=dict)


def recommend_group(ranked: pd.DataFrame, target: float, rank_by: str, baseline: str, alpha: float,
                    budget_s: float | None = None, group: str | None = None, unscored: str = "") -> Recommendation:
    """The recommendation for one group's ranked candidates (:func:`rank`): the first good one under ``rank_by``;
    the composite is added by :func:`recommendation_for` (it needs a run's recorded policy), see
    :func:`propose_composite`. ``group`` names a group whose ranking is empty (no run counts), ``unscored`` says
    why (:func:`pipeline.analysis.scoring.not_counted_text`)."""
    news = headlines(ranked, target, rank_by, unscored)
    if ranked.empty:
        return Recommendation(group or "?", target, rank_by, None, None, None, text=news[0].text, headlines=news)
    group = ranked["group"].iloc[0]
    good = ranked[ranked["good"]]
    objective = row_objective(ranked.iloc[0].to_dict())
    if good.empty:
        return Recommendation(group, target, rank_by, None, None, None, n_candidates=len(ranked), text=news[0].text,
                              headlines=news, objective=objective.as_dict())
    best = good.iloc[0].to_dict()
    second = good.iloc[1].to_dict() if len(good) > 1 else None
    if rank_by == "final":
        margin = margin_test(best["final_values"], second["final_values"] if second else [], alpha, objective.label,
                             second["name"] if second else None, lower_is_better=not objective.maximise)
        text = _final_text(best, objective) + f"; reaches {target_label(target)} in {best['steps_mean']:,.0f} steps"
    else:
        unit = "steps" if rank_by == "steps" else "s"
        margin = margin_test(best[f"{rank_by}_values"], second[f"{rank_by}_values"] if second else [], alpha, unit,
                             second["name"] if second else None)
        text = _fastest_text(best, objective, target)
    gain = speedup(best, baseline_row(ranked, baseline), baseline, budget_s)
    return Recommendation(group, target, rank_by, best["name"], best["candidate"], best["policy_spec"],
                          best["steps_mean"], best["seconds_mean"], best["n_runs"], margin, gain,
                          n_good=len(good), n_candidates=len(ranked), text=text, final_mean=best["final_val_mean"],
                          headlines=news, objective=objective.as_dict())


FIT_WORDS = {"flat": "its LR hardly moved", "partial_cycle": "under half a cycle",
             "partial_decay": "its decay unfinished"}


def fit_note(ranked: pd.DataFrame) -> str:
    """A sentence naming the candidates whose policy did not show its shape within the runs' budget (run tag
    ``policy_fit``): their ranking compares a schedule they never ran. Empty when every candidate fits."""
    if "policy_fit" not in ranked:
        return ""
    misfits = [f"{r['name']} ({FIT_WORDS.get(r['policy_fit'], r['policy_fit'])})" for r in ranked.to_dict("records")
               if isinstance(r["policy_fit"], str) and r["policy_fit"] != "ok"]
    if not misfits:
        return ""
    return (f"Policy fit: {len(misfits)} candidate(s) did not show their schedule within the budget: "
            f"{', '.join(misfits)}; they are ranked on the part they ran. Give their clocks as fractions of the "
            "budget (README 'LR policies') to compare the schedules themselves.")


def recommendation_for(ranked: pd.DataFrame, outcomes: pd.DataFrame, lr_runs: Mapping[str, str], target: float,
                       rank_by: str, baseline: str, alpha: float, budget_s: float | None, tail_factor: float,
                       defaults: Mapping[str, str] | None = None, group: str | None = None, unscored: str = ""
                       ) -> Recommendation:
    """:func:`recommend_group` plus the composite proposal, built from the policy that the recommended candidate's
    run recorded (its plotted run in ``lr_runs``, run id -> candidate name, else its first run) and evaluated at
    the switch step; ``defaults`` (:func:`pipeline.analysis.composite.group_defaults`) let its command repeat the
    run's other settings."""
    rec = recommend_group(ranked, target, rank_by, baseline, alpha, budget_s, group, unscored)
    misfits = fit_note(ranked)
    if misfits:
        rec = dataclasses.replace(rec, notes=[*rec.notes, misfits])
    if rec.policy is None:
        return rec
    best = ranked[ranked["good"]].iloc[0].to_dict()
    run = next((run for run, name in lr_runs.items() if name == best["name"]), best["run_ids"][0])
    params = outcomes.loc[outcomes["run_id"] == run].iloc[0].to_dict()
    try:
        return dataclasses.replace(rec, composite=propose_composite(best, params, tail_factor, defaults))
    except NotProposed as reason:
        return dataclasses.replace(rec, notes=[*rec.notes, f"No composite proposed: {reason}."])
