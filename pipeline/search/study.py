"""A pruned study's bookkeeping on Optuna's storage: one trial per candidate (its params are its overrides), each
rung's score reported as the trial's intermediate value at step = the rung's index, promote/prune decisions by
:class:`RungPruner`, pruned trials told PRUNED and survivors COMPLETE with their final score.

Everything a decision needs is in the storage (SQLite locally, PostgreSQL for a team), so the same command after a
crash finds each candidate's trial, the rungs it was scored at and whether it was pruned, and goes on from there.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import optuna
from optuna.pruners import BasePruner
from optuna.trial import FrozenTrial, TrialState

from pipeline.search.halving import Candidate, cut, keep_count, promotable

DIRECTION = "maximize"  # rungs are scored by validation accuracy
CANDIDATE_ATTR = "candidate"
SETTINGS_ATTR = "settings"


class StudyError(ValueError):
    """The study in the storage cannot be continued with these settings; the message says what to do."""


class RungPruner(BasePruner):
    """Synchronous successive halving: a trial is pruned at a rung (its last reported step) unless its value is in
    the top ``n // eta`` (ties at the cut kept) of the ``n`` trials that reported at that rung.

    Optuna's ``SuccessiveHalvingPruner`` applies the same promotion rule asynchronously (ASHA): a trial competes only
    with those that reached the rung before it, and the first to arrive is always promoted, so its decisions depend
    on which job finished first. A sweep's rung ends when the launcher has returned every job of it, so here every
    candidate of a rung competes with all the others: the decision is a function of the stored values alone, the
    same in any process that asks, in any order.
    """

    def __init__(self, eta: int) -> None:
        if isinstance(eta, bool) or not isinstance(eta, int) or eta < 2:
            raise ValueError(f"eta must be an integer >= 2 (the reduction factor per rung), got {eta!r}")
        self.eta = eta

    def prune(self, study: optuna.Study, trial: FrozenTrial) -> bool:
        step = trial.last_step
        if step is None:
            return False
        competing = rung_values(study, step)
        return not promotable(trial.intermediate_values[step], competing, self.eta, _maximize(study))


def _maximize(study: optuna.Study) -> bool:
    return study.direction == optuna.study.StudyDirection.MAXIMIZE


def rung_values(study: optuna.Study, rung: int) -> list[float]:
    """Every trial's value at ``rung``, whatever its state now (a trial pruned at this rung still competed in it)."""
    return [t.intermediate_values[rung] for t in study.get_trials(deepcopy=False) if rung in t.intermediate_values]


def storage_url(storage: str | None, tracking_uri: str, root: Path) -> str:
    """The Optuna storage: ``storage`` if given (relative SQLite paths made absolute against ``root``), else an
    SQLite database beside a local MLflow SQLite store (``optuna.db``), else ``<root>/mlruns/optuna.db``."""
    if storage:
        if storage.startswith("sqlite:///") and not Path(storage[len("sqlite:///"):]).is_absolute():
            return f"sqlite:///{root / storage[len('sqlite:///'):]}"
        return storage
    folder = Path(tracking_uri[len("sqlite:///"):]).parent if tracking_uri.startswith("sqlite:///") else root / "mlruns"
    return f"sqlite:///{folder / 'optuna.db'}"


def open_study(storage: str, name: str, eta: int, settings: dict) -> optuna.Study:
    """Create the study, or load it to continue; refuse one that was started with other settings."""
    if storage.startswith("sqlite:///"):
        Path(storage[len("sqlite:///"):]).parent.mkdir(parents=True, exist_ok=True)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(storage=storage, study_name=name, direction=DIRECTION, load_if_exists=True,
                                sampler=optuna.samplers.RandomSampler(seed=0), pruner=RungPruner(eta))
    if study.direction != optuna.study.StudyDirection.MAXIMIZE:
        raise StudyError(f"study {name!r} in {storage} minimises; a pruned study maximises validation accuracy: "
                         "choose another study_name")
    stored = study.user_attrs.get(SETTINGS_ATTR)
    if stored is None:
        study.set_user_attr(SETTINGS_ATTR, settings)
    elif stored != json.loads(json.dumps(settings)):
        changed = sorted(k for k in set(stored) | set(settings) if stored.get(k) != settings.get(k))
        raise StudyError(f"study {name!r} in {storage} was started with other settings ({', '.join(changed)} "
                         "differ); run it with its own settings, or give this one another hydra.sweeper.study_name")
    return study


def trials_for(study: optuna.Study, candidates: list[Candidate]) -> dict[str, int]:
    """Each candidate's trial id: the one already in the study, or a new trial whose params are the overrides that set
    it apart from the others (its full override list is the trial's ``candidate`` attribute)."""
    choices: dict[str, list[str]] = {}  # every value of each override key: one categorical distribution per key
    for candidate in candidates:
        for name, value in map(_param, candidate.varying or candidate.overrides):
            choices.setdefault(name, [])
            if value not in choices[name]:
                choices[name].append(value)
    found = {t.user_attrs.get(CANDIDATE_ATTR): t._trial_id for t in study.get_trials(deepcopy=False)}
    for candidate in candidates:
        if candidate.key not in found:
            params = dict(map(_param, candidate.varying or candidate.overrides))
            study.enqueue_trial(params, user_attrs={CANDIDATE_ATTR: candidate.key})
            trial = study.ask()  # the enqueued trial: each suggestion below returns its fixed value
            for name in params:
                trial.suggest_categorical(name, choices[name])
            found[candidate.key] = trial._trial_id
    return {c.key: found[c.key] for c in candidates}


def _param(override: str) -> tuple[str, str]:
    name, _, value = override.partition("=")
    return name, value


def frozen(study: optuna.Study, trial_id: int) -> FrozenTrial:
    return study._storage.get_trial(trial_id)


def record_rung(study: optuna.Study, trial_id: int, rung: int, score: float, attrs: dict) -> None:
    """Store a candidate's rung: its seeds' details as user attributes, then its score as the intermediate value."""
    trial = optuna.trial.Trial(study, trial_id)
    for key, value in attrs.items():
        trial.set_user_attr(key, value)
    trial.report(score, step=rung)


def decide(study: optuna.Study, trial_id: int) -> bool:
    """Whether the candidate is pruned at the rung it last reported (the study's pruner, from the stored values)."""
    return optuna.trial.Trial(study, trial_id).should_prune()


def prune_reason(study: optuna.Study, trial: FrozenTrial, rung: int, eta: int, detail: str) -> dict[str, object]:
    """Why a candidate was pruned at ``rung``: the attributes (and MLflow tags) ``pruned.rung``, ``.score``,
    ``.reason``."""
    values = rung_values(study, rung)
    score = trial.intermediate_values[rung]
    reason = (f"rung {rung}: score {score:.4f} ({detail}) below the cut {cut(values, eta):.4f}; the rung kept the "
              f"top {keep_count(len(values), eta)} of {len(values)} candidates (eta {eta}, ties kept)")
    return {"pruned.rung": rung, "pruned.score": score, "pruned.reason": reason}


def tell_pruned(study: optuna.Study, trial_id: int, why: dict[str, object]) -> None:
    trial = optuna.trial.Trial(study, trial_id)
    for key, value in why.items():
        trial.set_user_attr(key, value)
    study.tell(trial, state=TrialState.PRUNED, skip_if_finished=True)


def tell_complete(study: optuna.Study, trial_id: int, score: float) -> None:
    value = score if math.isfinite(score) else 0.0
    study.tell(optuna.trial.Trial(study, trial_id), value, skip_if_finished=True)
