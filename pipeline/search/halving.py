"""Successive halving's rules, pure: the candidates of a sweep, the rung ladder, a candidate's score and who survives.

A candidate is one combination of a sweep's overrides other than ``seed``; its jobs (one per seed) are replicas and
its score is the mean of theirs. Every rung keeps the top ``n // eta`` candidates (at least one) and every candidate
tied with the last kept one: Optuna's promotion rule (``SuccessiveHalvingPruner``'s
``_is_trial_promotable_to_next_rung``), applied to all candidates of a rung at once.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from pipeline.arguments import check_int, check_number

SEED_KEY = "seed"
# The score of a job that failed (diverged, crashed, bad config): the worst accuracy, counted in its candidate's mean.
FAILED_SCORE = 0.0


@dataclass(frozen=True)
class Candidate:
    """One combination of a sweep's overrides other than ``seed``, and its jobs: one override list per seed."""

    key: str                            # its overrides (without the seed), space-separated: its name in the study
    overrides: tuple[str, ...]
    jobs: tuple[tuple[str, ...], ...]   # each job's full override list, in sweep order
    seeds: tuple[str, ...]              # each job's seed value ("" when the sweep sets none)
    varying: tuple[str, ...] = ()       # the overrides in which it differs from the other candidates

    @property
    def label(self) -> str:
        """Its name in messages: the overrides that set it apart (all of them when it is alone)."""
        return " ".join(self.varying or self.overrides) or "(no overrides)"


def _split(override: str) -> tuple[str, str]:
    key, _, value = override.partition("=")
    return key.lstrip("+~"), value


def candidates(job_overrides: Sequence[Sequence[str]]) -> list[Candidate]:
    """Group a sweep's jobs (their override lists) into candidates, in the order of their first job."""
    groups: dict[tuple[str, ...], list[tuple[str, ...]]] = {}
    for overrides in job_overrides:
        rest = tuple(o for o in overrides if _split(o)[0] != SEED_KEY)
        groups.setdefault(rest, []).append(tuple(overrides))
    shared = set.intersection(*map(set, groups)) if len(groups) > 1 else set()
    found = []
    for rest, jobs in groups.items():
        seeds = tuple(next((_split(o)[1] for o in job if _split(o)[0] == SEED_KEY), "") for job in jobs)
        if len(set(seeds)) < len(seeds):
            raise ValueError(f"candidate {' '.join(rest) or '(no overrides)'} has the same seed twice: {seeds}")
        varying = tuple(o for o in rest if o not in shared)
        found.append(Candidate(" ".join(rest), rest, tuple(jobs), seeds, varying))
    return found


def ladder(eta: int, min_rung_frac: float) -> tuple[float, ...]:
    """The rungs as fractions of the budget: ``eta**-k, ..., eta**-1, 1``, with ``k`` the whole number of halvings
    that ``min_rung_frac`` is nearest to on a log scale (1/9 with eta 3: 1/9, 1/3, 1)."""
    check_int("eta", eta, 2)
    check_number("min_rung_frac", min_rung_frac, 0.0, 1.0, low_open=True, high_open=True)
    k = round(math.log(1 / min_rung_frac, eta))
    if k < 1:
        raise ValueError(f"min_rung_frac={min_rung_frac:g} leaves no rung before the budget with eta={eta}; "
                         f"use at most {1 / eta:.3g} (one rung at 1/eta of the budget)")
    return tuple(eta ** -(k - i) for i in range(k)) + (1.0,)


def candidate_score(seed_scores: Sequence[float | None]) -> float:
    """A candidate's score: the mean of its seeds', a failed seed (None or NaN) counting as :data:`FAILED_SCORE`."""
    if not seed_scores:
        raise ValueError("a candidate's score needs at least one seed's score")
    values = [FAILED_SCORE if s is None or math.isnan(s) else float(s) for s in seed_scores]
    return sum(values) / len(values)


def keep_count(n: int, eta: int) -> int:
    """How many of ``n`` candidates a rung promotes before ties: ``n // eta``, at least one."""
    return max(n // eta, 1)


def cut(values: Sequence[float], eta: int, maximize: bool = True) -> float:
    """The score a candidate must reach (at least, or at most when minimising) to be promoted."""
    ranked = sorted(values, reverse=maximize)
    return ranked[keep_count(len(ranked), eta) - 1]


def promotable(value: float, competing: Sequence[float], eta: int, maximize: bool = True) -> bool:
    """Whether a candidate scoring ``value`` survives a rung whose scores (its own included) are ``competing``."""
    threshold = cut(competing, eta, maximize)
    return value >= threshold if maximize else value <= threshold


def survivors(scores: Mapping[str, float], eta: int, maximize: bool = True) -> list[str]:
    """The candidates a rung promotes, in the order given: the top ``n // eta`` (at least one) and any tied with the
    last of them."""
    values = list(scores.values())
    return [name for name, value in scores.items() if promotable(value, values, eta, maximize)]
