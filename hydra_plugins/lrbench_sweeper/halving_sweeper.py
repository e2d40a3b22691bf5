"""A Hydra sweeper that runs a sweep as a pruned study: successive halving over its candidates, on Optuna's storage.

``hydra/sweeper=halving`` expands the overrides into jobs as the basic sweeper does, groups them into candidates
(every combination except ``seed``; the seeds are its replicas) and trains them rung by rung: every candidate's jobs
to the first rung, a score per candidate (the mean over its seeds), the top ``1/eta`` continue from their
checkpoints to the next rung, and so on to the full budget. Each rung's jobs go through Hydra's configured launcher
(basic, pool, SLURM); the rules are :mod:`pipeline.search.halving`, the bookkeeping and decisions Optuna's
(:mod:`pipeline.search.study`), what a job does at a rung :mod:`pipeline.search.rung`. README, "Pruned studies".

    python -m pipeline +experiment=lrbench_fashion_lenet hydra/sweeper=halving multirun
"""
# No ``from __future__ import annotations`` here: Hydra imports plugins outside sys.modules, where dataclasses
# cannot resolve string annotations.

import hashlib
import json
import shutil
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.config_store import ConfigStore
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.utils import JobReturn, JobStatus
from hydra.plugins.sweeper import Sweeper
from omegaconf import DictConfig, OmegaConf


@dataclass
class HalvingSweeperConf:
    _target_: str = "hydra_plugins.lrbench_sweeper.halving_sweeper.HalvingSweeper"
    eta: int = 3  # each rung keeps the top 1/eta of its candidates (at least one; ties at the cut kept)
    min_rung_frac: float = 1 / 9  # the first rung, as a fraction of the budget (rounded to a power of 1/eta)
    score: str = "cooldown"  # cooldown: val accuracy after a short LR-to-zero branch at the rung; raw: as it is
    cooldown_frac: float = 0.1  # the cooldown branch's length, as a fraction of the optimizer steps so far
    storage: str | None = None  # Optuna storage URL; null: sqlite optuna.db beside the MLflow SQLite store
    study_name: str | None = None  # null: <study>-<hash of the sweep and these settings>: the same command resumes
    params: dict[str, str] | None = None  # sweep overrides from configs (the basic sweeper's hydra.sweeper.params)


ConfigStore.instance().store(group="hydra/sweeper", name="halving", node=HalvingSweeperConf, provider="lrbench")


def say(message: str) -> None:
    print(f"[halving] {message}", flush=True)


def rung_overrides(frac: float, score: str, cooldown_frac: float) -> list[str]:
    """What every job of a rung adds to its own overrides (``conf/search/rung.yaml``; not part of its run key)."""
    return ["+search=rung", f"search.rung_frac={frac!r}", f"search.score={score}",
            f"search.cooldown_frac={cooldown_frac!r}"]


@dataclass(frozen=True)
class Settled:
    """A job whose run was over for good when the study came to it: its run and final val accuracy (None: failed)."""

    run_id: str
    score: float | None
    paused_at: int | None = None


def job_outcome(ret: JobReturn) -> Any:
    """A job's ``JobResult`` (run id, status, score), or None when the job raised before returning one."""
    if ret.status != JobStatus.COMPLETED:
        return None
    return ret.return_value


class HalvingSweeper(Sweeper):
    def __init__(self, eta: int = 3, min_rung_frac: float = 1 / 9, score: str = "cooldown",
                 cooldown_frac: float = 0.1, storage: str | None = None, study_name: str | None = None,
                 params: dict[str, str] | None = None) -> None:
        from pipeline.search.halving import ladder
        from pipeline.search.rung import RungSettings

        try:  # every setting checked once, here, before any job exists
            self.fracs = ladder(eta, min_rung_frac)
            RungSettings(score=score, cooldown_frac=cooldown_frac)
        except ValueError as exc:
            raise ValueError(f"hydra.sweeper.{exc}") from None
        self.eta, self.min_rung_frac, self.score, self.cooldown_frac = eta, min_rung_frac, score, cooldown_frac
        self.storage, self.study_name, self.params = storage, study_name, dict(params or {})
        self.config: DictConfig | None = None
        self.hydra_context: Any = None
        self.launcher: Any = None
        self.job_idx = 0

    def setup(self, *, hydra_context, task_function, config: DictConfig) -> None:
        from hydra.core.plugins import Plugins

        self.config, self.hydra_context = config, hydra_context
        self.launcher = Plugins.instance().instantiate_launcher(hydra_context=hydra_context,
                                                                task_function=task_function, config=config)

    # -- the study ---------------------------------------------------------------------------------------------
    def sweep(self, arguments: list[str]) -> Any:
        from optuna.trial import TrialState

        from pipeline.search import halving
        from pipeline.search import study as book
        from pipeline.tracking.store import resolve_uri

        assert self.config is not None and self.hydra_context is not None
        if OmegaConf.select(self.config, "trainer.pack", default=1) != 1:
            sys.exit("error: hydra/sweeper=halving trains each job alone to its rung; set trainer.pack=1")
        overrides = [f"{k}={v}" for k, v in self.params.items()] + list(arguments)
        parsed = OverridesParser.create(config_loader=self.hydra_context.config_loader).parse_overrides(overrides)
        job_overrides = BasicSweeper.split_arguments(parsed, None)[0]
        try:
            candidates = halving.candidates(job_overrides)
        except ValueError as exc:
            sys.exit(f"error: hydra/sweeper=halving: {exc}")
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        sweep_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(self.config, sweep_dir / "multirun.yaml")

        self.uri = resolve_uri(OmegaConf.select(self.config, "tracking.uri"))
        settings = {"eta": self.eta, "min_rung_frac": self.min_rung_frac, "score": self.score,
                    "cooldown_frac": self.cooldown_frac, "candidates": [c.key for c in candidates],
                    "experiment": str(OmegaConf.select(self.config, "tracking.experiment")),
                    "jobs": [list(job) for job in job_overrides]}
        name = self.study_name or self._default_name(settings)
        storage = book.storage_url(self.storage, self.uri, Path.cwd())
        try:
            study = book.open_study(storage, name, self.eta, settings)
        except book.StudyError as exc:
            sys.exit(f"error: {exc}")
        self.study, self.book = study, book
        self.trials = book.trials_for(study, candidates)
        seeds = len(candidates[0].jobs) if candidates else 0
        say(f"study {name!r} in {storage}: {len(candidates)} candidates x {seeds} seeds, rungs at "
            f"{', '.join(f'{f:.3g}' for f in self.fracs)} of the budget, eta {self.eta}, score {self.score}")
        for candidate in candidates:  # decisions a crash kept out of MLflow are written first
            if self._state(candidate).state == TrialState.PRUNED:
                self._end_runs(self._state(candidate))
        returns = []
        for rung, frac in enumerate(self.fracs):
            returns.extend(self._rung(candidates, rung, frac))
        self._finish(candidates)
        return returns

    def _default_name(self, settings: dict) -> str:
        digest = hashlib.sha1(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:10]
        return f"{OmegaConf.select(self.config, 'study', default=None) or 'halving'}-{digest}"

    def _state(self, candidate) -> Any:
        return self.book.frozen(self.study, self.trials[candidate.key])

    def _rung(self, candidates, rung: int, frac: float) -> list[Sequence[JobReturn]]:
        from optuna.trial import TrialState

        final = rung == len(self.fracs) - 1
        alive = [c for c in candidates if self._state(c).state == TrialState.RUNNING]
        if not alive:
            return []
        todo = [c for c in alive if rung not in self._state(c).intermediate_values]
        if len(todo) < len(alive):
            say(f"rung {rung}: {len(alive) - len(todo)} of {len(alive)} candidates already scored (resumed study)")
        if not final and len(alive) == 1:
            return []  # nothing to compare: the last candidate goes straight to the budget
        where = "the full budget" if final else f"{frac:.3g} of the budget"
        returns = [self._launch(todo, rung, frac, final, where)] if todo else []
        if final:
            for candidate in alive:
                self.book.tell_complete(self.study, self.trials[candidate.key],
                                        self._state(candidate).intermediate_values[rung])
            return returns
        for candidate in alive:
            if self.book.decide(self.study, self.trials[candidate.key]):
                self._prune(candidate, rung)
        states = {c.key: self._state(c) for c in alive}
        ranked = sorted(alive, key=lambda c: -states[c.key].intermediate_values[rung])

        def listed(keep: bool) -> str:
            return ", ".join(f"{c.label} {states[c.key].intermediate_values[rung]:.4f}" for c in ranked
                             if (states[c.key].state == TrialState.RUNNING) == keep) or "none"

        say(f"rung {rung}: kept {listed(True)}; pruned {listed(False)}")
        return returns

    def _launch(self, todo, rung: int, frac: float, final: bool, where: str) -> Sequence[JobReturn]:
        from pipeline.search.halving import candidate_score
        from pipeline.tracking.pruning import settled

        batch, owners, outcomes = [], [], {}
        for candidate in todo:
            runs = self._state(candidate).user_attrs.get("runs", {})
            # A seed whose run is over for good is not trained again: one that diverged (its score stays 0) or one
            # that finished its budget before the study could record it.
            done = settled(self.uri, runs.values())
            for job, seed in zip(candidate.jobs, candidate.seeds, strict=True):
                if runs.get(seed) in done:
                    outcomes.setdefault(candidate.key, {})[seed] = Settled(runs[seed], done[runs[seed]])
                    continue
                batch.append([*job, *rung_overrides(frac, self.score, self.cooldown_frac)])
                owners.append((candidate, seed))
        say(f"rung {rung}: training {len(todo)} candidates ({len(batch)} jobs) to {where}")
        self.validate_batch_is_legal(batch)
        rets = self.launcher.launch(batch, initial_job_idx=self.job_idx) if batch else []
        self.job_idx += len(batch)
        for (candidate, seed), ret in zip(owners, rets, strict=True):
            outcomes.setdefault(candidate.key, {})[seed] = job_outcome(ret)
        for candidate in todo:
            results = outcomes.get(candidate.key, {})
            runs = dict(self._state(candidate).user_attrs.get("runs", {}))
            runs.update({seed: r.run_id for seed, r in results.items() if r is not None and r.run_id})
            seed_scores = {seed: (r.score if r is not None else None) for seed, r in results.items()}
            steps = sorted({r.paused_at for r in results.values() if r is not None and r.paused_at is not None})
            score = candidate_score(list(seed_scores.values()))
            attrs = {"runs": runs, f"rung{rung}.seed_scores": seed_scores, f"rung{rung}.steps": steps}
            self.book.record_rung(self.study, self.trials[candidate.key], rung, score, attrs)
        return rets

    def _prune(self, candidate, rung: int) -> None:
        trial = self._state(candidate)
        steps = trial.user_attrs.get(f"rung{rung}.steps") or []
        detail = (f"{self.score} val acc, mean of {len(candidate.jobs)} seeds"
                  + (f", at step {steps[0]}" if len(steps) == 1 else ""))
        why = self.book.prune_reason(self.study, trial, rung, self.eta, detail)
        self.book.tell_pruned(self.study, self.trials[candidate.key], why)
        self._end_runs(self._state(candidate))

    def _end_runs(self, trial) -> None:
        """The pruned candidate's runs end KILLED with the pruned tags; their checkpoints are removed."""
        from pipeline.tracking.pruning import end_pruned

        why = {k: trial.user_attrs[k] for k in ("pruned.rung", "pruned.score", "pruned.reason")}
        ended = end_pruned(self.uri, trial.user_attrs.get("runs", {}).values(), why)
        folder = Path(str(OmegaConf.select(self.config, "trainer.checkpoint_dir"))).resolve()
        for key in filter(None, ended):
            shutil.rmtree(folder / key, ignore_errors=True)

    def _finish(self, candidates) -> None:
        from optuna.trial import TrialState

        done = [(c, self._state(c)) for c in candidates if self._state(c).state == TrialState.COMPLETE]
        pruned = sum(self._state(c).state == TrialState.PRUNED for c in candidates)
        best = max(done, key=lambda item: item[1].value, default=None)
        say(f"{len(done)} of {len(candidates)} candidates trained to the full budget, {pruned} pruned"
            + (f"; best final val acc: {best[0].label} {best[1].value:.4f}" if best else "")
            + ". Recommend with: python -m pipeline.report")
