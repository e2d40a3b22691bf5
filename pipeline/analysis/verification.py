"""Is the proposed composite better than the best single policy? Its verification runs (the same seeds and budget,
:func:`pipeline.analysis.composite.training_arguments`) are scored like any candidate and compared on both criteria
of the ranking: speed to the target and the final validation objective, each margin tested against seed noise with
Welch's t-test (:func:`pipeline.analysis.recommend.margin_test`). Pure data in, data out.

Verdict: *better* when the composite is good (reached the target in every seed, no failure, stable) and beats the
best single policy beyond seed noise on at least one criterion without falling behind beyond it on the other; else
*not better*, with the reason.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from pipeline.analysis.recommend import Margin, margin_test, plural, row_objective


@dataclass(frozen=True)
class Comparison:
    criterion: str            # e.g. "steps to val acc ≥ 0.85", "final val acc"
    composite: float | None   # mean over the composite's seeds
    single: float | None      # mean over the best single policy's seeds
    margin: Margin            # the composite's lead (positive: ahead)


@dataclass(frozen=True)
class Verification:
    composite: str                 # the composite candidate's display name
    against: str                   # the best single policy's display name
    verdict: str                   # better | not better
    text: str
    good: bool
    n_runs: int
    seeds: list = field(default_factory=list)
    run_ids: list = field(default_factory=list)
    reasons: list = field(default_factory=list)
    comparisons: list[Comparison] = field(default_factory=list)


def _mean(values) -> float | None:
    return sum(values) / len(values) if values else None


def compare(single: Mapping, composite: Mapping, rank_by: str, alpha: float) -> Verification:
    """The verdict on ``composite`` (its candidate row: :func:`pipeline.analysis.recommend.classify`) against
    ``single`` (the recommended candidate's row), see the module docstring."""
    objective = row_objective(single)
    speed = "seconds" if rank_by == "seconds" else "steps"
    unit = "s" if speed == "seconds" else "steps"
    comparisons = []
    for criterion, values, unit_name, lower in (
            (f"{speed} to the target", f"{speed}_values", unit, True),
            (f"final {objective.label}", "final_values", objective.label, not objective.maximise)):
        mine, theirs = list(composite[values]), list(single[values])
        margin = margin_test(mine, theirs, alpha, unit_name, single["name"], lower_is_better=lower) if mine and theirs \
            else Margin(single["name"], None, None, None, "not measurable: no seed reached the target")
        comparisons.append(Comparison(criterion, _mean(mine), _mean(theirs), margin))
    detail = "; ".join(f"{c.criterion}: {c.margin.text}" for c in comparisons)
    seeds = f"{plural(composite['n_runs'], 'seed')}"
    if not composite["good"]:
        verdict = "not better"
        text = f"not better: the composite is bad over {seeds} ({'; '.join(composite['reasons'])})"
    elif any(c.margin.behind_beyond_noise for c in comparisons):
        verdict = "not better"
        text = f"not better: behind {single['name']} beyond seed noise ({detail})"
    elif any(c.margin.exceeds_noise for c in comparisons):
        verdict = "better"
        text = f"better than {single['name']} over {seeds} ({detail})"
    else:
        verdict = "not better"
        text = f"not better: no lead over {single['name']} beyond seed noise over {seeds} ({detail})"
    return Verification(composite["name"], single["name"], verdict, text, bool(composite["good"]),
                        int(composite["n_runs"]), list(composite["seeds"]), list(composite["run_ids"]),
                        list(composite["reasons"]), comparisons)
