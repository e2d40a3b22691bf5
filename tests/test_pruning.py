"""Pruned studies (hydra/sweeper=halving): the halving rules, their Optuna bookkeeping, the cooldown rung score, and a
tiny study from one command that is killed mid-way and resumed."""

from __future__ import annotations

import itertools
import os
import random
import signal
import subprocess
import sys

import pytest
import torch
from conftest import compose_job, train_runs

from pipeline.search import halving
from pipeline.search.cooldown import cooldown, cooldown_steps, linear_to_zero
from pipeline.search.rung import RungSettings, upcoming_batches

# -- the halving rules ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("eta", "min_rung_frac", "expected"), [
    (3, 1 / 9, (1 / 9, 1 / 3, 1.0)),
    (3, 0.1, (1 / 9, 1 / 3, 1.0)),      # rounded to the nearest power of 1/eta
    (3, 1 / 3, (1 / 3, 1.0)),
    (2, 0.25, (0.25, 0.5, 1.0)),
])
def test_ladder_runs_from_min_rung_frac_to_the_budget_in_factors_of_eta(eta, min_rung_frac, expected):
    assert halving.ladder(eta, min_rung_frac) == pytest.approx(expected)


@pytest.mark.parametrize(("eta", "min_rung_frac", "message"), [
    (3, 0.8, "leaves no rung before the budget"), (1, 0.1, "eta must be"), (3, 0.0, "min_rung_frac must be")])
def test_ladder_refuses_settings_without_a_rung_naming_them(eta, min_rung_frac, message):
    with pytest.raises(ValueError, match=message):
        halving.ladder(eta, min_rung_frac)


def test_a_rung_keeps_the_top_n_over_eta_of_its_candidates():
    scores = {"a": 0.60, "b": 0.90, "c": 0.70, "d": 0.95, "e": 0.50, "f": 0.80}
    assert halving.survivors(scores, eta=3) == ["b", "d"]
    assert halving.survivors(scores, eta=2) == ["b", "d", "f"]


def test_thirteen_policies_go_to_four_then_one_with_eta_3():
    first = halving.survivors({f"p{i}": i / 100 for i in range(13)}, eta=3)
    assert first == ["p9", "p10", "p11", "p12"]
    assert halving.survivors({k: 1 - int(k[1:]) / 100 for k in first}, eta=3) == ["p9"]


def test_candidates_tied_at_the_cut_all_survive():
    assert halving.survivors({"a": 0.9, "b": 0.8, "c": 0.8, "d": 0.1, "e": 0.1, "f": 0.8}, eta=3) == ["a", "b", "c",
                                                                                                       "f"]
    assert halving.survivors({"a": 0.5, "b": 0.5, "c": 0.5}, eta=3) == ["a", "b", "c"]


def test_at_least_one_candidate_survives_even_when_fewer_than_eta_remain():
    assert halving.survivors({"a": 0.2, "b": 0.7}, eta=3) == ["b"]
    assert halving.survivors({"a": 0.2}, eta=3) == ["a"]


def test_minimising_keeps_the_lowest_scores():
    assert halving.survivors({"a": 0.2, "b": 0.7, "c": 0.1, "d": 0.9}, eta=2, maximize=False) == ["a", "c"]


def test_survivors_follow_optunas_promotion_rule_applied_to_a_whole_rung():
    from optuna.pruners._successive_halving import _is_trial_promotable_to_next_rung
    from optuna.study import StudyDirection

    rng = random.Random(0)
    for _ in range(200):
        n, eta = rng.randint(1, 14), rng.randint(2, 4)
        scores = {str(i): rng.choice([0.1, 0.5, 0.7, rng.random()]) for i in range(n)}
        for maximize, direction in ((True, StudyDirection.MAXIMIZE), (False, StudyDirection.MINIMIZE)):
            expected = [k for k, v in scores.items()
                        if _is_trial_promotable_to_next_rung(v, list(scores.values()), eta, direction)]
            assert halving.survivors(scores, eta, maximize) == expected


def test_a_candidate_is_every_combination_but_the_seed_and_its_seeds_are_replicas():
    jobs = [[f"+policy={p}", f"seed={s}", "trainer.max_steps=60"] for p, s in itertools.product(["cos", "sin"],
                                                                                                   [0, 1])]
    found = halving.candidates(jobs)
    assert [c.key for c in found] == ["+policy=cos trainer.max_steps=60", "+policy=sin trainer.max_steps=60"]
    assert [c.label for c in found] == ["+policy=cos", "+policy=sin"]
    assert found[0].seeds == ("0", "1") and found[0].jobs == (tuple(jobs[0]), tuple(jobs[1]))


def test_a_candidates_score_is_its_seeds_mean_and_a_failed_seed_counts_as_zero():
    assert halving.candidate_score([0.8, 0.6]) == pytest.approx(0.7)
    assert halving.candidate_score([0.8, None]) == pytest.approx(0.4)
    assert halving.candidate_score([0.8, float("nan")]) == pytest.approx(0.4)


# -- the Optuna bookkeeping ----------------------------------------------------------------------------------------


def _study(tmp_path, name="s", **changes):
    from pipeline.search import study as book

    settings = {"eta": 3, "score": "cooldown", **changes}
    return book.open_study(f"sqlite:///{tmp_path}/optuna.db", name, 3, settings)


def _rung0(tmp_path, scores: dict[str, float], order):
    from pipeline.search import study as book

    study = _study(tmp_path)
    cands = halving.candidates([[f"+policy={p}", f"seed={s}"] for p in scores for s in (0, 1)])
    ids = book.trials_for(study, cands)
    for c in cands:
        book.record_rung(study, ids[c.key], 0, scores[c.label.split("=")[1]], {"runs": {}})
    pruned = {c.label.split("=")[1] for c in (cands[i] for i in order) if book.decide(study, ids[c.key])}
    return study, ids, cands, pruned


def test_optuna_decisions_are_the_rules_whatever_order_the_candidates_are_asked_in(tmp_path):
    scores = {"fix": 0.2, "cos": 0.9, "sin": 0.7, "exp": 0.4, "inv": 0.3, "poly": 0.8}
    _, _, _, forward = _rung0(tmp_path / "a", scores, range(6))
    _, _, _, backward = _rung0(tmp_path / "b", scores, reversed(range(6)))
    assert forward == backward == set(scores) - set(halving.survivors(scores, 3))


def test_a_study_reopened_with_its_settings_finds_its_trials_and_their_rungs(tmp_path):
    from optuna.trial import TrialState

    from pipeline.search import study as book

    study, ids, cands, _ = _rung0(tmp_path, {"fix": 0.2, "cos": 0.9, "sin": 0.7}, range(3))
    book.tell_pruned(study, ids[cands[0].key], {"pruned.rung": 0, "pruned.score": 0.2, "pruned.reason": "low"})
    again = _study(tmp_path)
    assert book.trials_for(again, cands) == ids
    trials = {t.user_attrs["candidate"]: t for t in again.get_trials()}
    assert trials[cands[0].key].state == TrialState.PRUNED and trials[cands[0].key].user_attrs["pruned.rung"] == 0
    assert trials[cands[1].key].intermediate_values == {0: 0.9} and trials[cands[1].key].params == {"+policy": "cos"}


def test_a_study_started_with_other_settings_is_refused_naming_them(tmp_path):
    from pipeline.search import study as book

    _study(tmp_path)
    with pytest.raises(book.StudyError, match="eta"):
        _study(tmp_path, eta=2)


def test_rung_settings_are_not_part_of_the_run_key_so_every_rung_continues_the_same_run():
    from pipeline.config.checks import check
    from pipeline.training.identity import run_key

    keys = {run_key(check(compose_job("dataset=synthetic", "+search=rung", f"search.rung_frac={frac}",
                                      f"search.score={score}", f"search.cooldown_frac={cool}")).config)
            for frac, score, cool in ((0.1, "cooldown", 0.1), (1.0, "raw", 0.2))}
    assert len(keys) == 1


def test_a_rung_job_on_several_devices_is_refused_before_any_run():
    from pipeline.config.checks import ConfigError, check

    with pytest.raises(ConfigError, match="search: a pruned study trains each job alone on one device"):
        check(compose_job("dataset=synthetic", "+search=rung", "trainer.devices=2", "trainer.strategy=ddp"))


def test_rung_settings_refuse_bad_values_naming_the_key():
    with pytest.raises(ValueError, match="score must be one of cooldown, raw"):
        RungSettings(score="loss")
    with pytest.raises(ValueError, match="rung_frac must be a number in"):
        RungSettings(rung_frac=0)
    with pytest.raises(ValueError, match="cooldown_fracc is not a rung setting"):
        RungSettings.from_mapping({"cooldown_fracc": 0.1})
    assert RungSettings(rung_frac=1 / 3).stop_step(60) == 20 and RungSettings(rung_frac=1.0).stop_step(60) is None


def test_a_settled_finished_run_is_scored_by_its_summary_param_and_an_older_run_by_its_metric(store_uri):
    from mlflow.tracking import MlflowClient

    from pipeline.tracking.pruning import settled

    client = MlflowClient(store_uri)
    experiment_id = client.create_experiment("study")
    now, older = client.create_run(experiment_id), client.create_run(experiment_id)
    client.log_param(now.info.run_id, "summary.final_val_acc", "0.91")
    client.log_metric(older.info.run_id, "summary/final_val_acc", 0.87)  # recorded before summaries were params
    for run in (now, older):
        client.set_terminated(run.info.run_id, "FINISHED")
    assert settled(store_uri, [now.info.run_id, older.info.run_id]) == {now.info.run_id: 0.91,
                                                                         older.info.run_id: 0.87}


# -- the cooldown score --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def fitted():
    """A small classifier the pipeline's way (its module, SGD momentum, a policy) after a few Lightning steps."""
    import functools

    import lightning as L
    from torch.utils.data import DataLoader, TensorDataset

    from pipeline.policies import Fix
    from pipeline.training.module import PolicyClassifier

    torch.manual_seed(0)
    x, y = torch.randn(256, 8), torch.randint(0, 3, (256,))
    x[torch.arange(256), y] += 2.0  # learnable
    net = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Dropout(0.2), torch.nn.Linear(16, 3))
    module = PolicyClassifier(net, functools.partial(torch.optim.SGD, lr=0.1, momentum=0.9), Fix(k0=0.1), 3)
    train = DataLoader(TensorDataset(x[:192], y[:192]), batch_size=16, shuffle=False)
    trainer = L.Trainer(max_steps=4, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, num_sanity_val_steps=0, accelerator="cpu")
    trainer.fit(module, train)
    val = [(x[192:], y[192:])]
    return module, trainer, list(train), val


def test_the_cooldown_takes_the_lr_linearly_to_zero_from_the_policys_lr_at_the_rung(fitted):
    module, trainer, train, val = fitted
    steps = cooldown_steps(40, 0.2)
    result = cooldown(module, trainer.optimizers[0], iter(train), lambda: val, 0.08, steps)
    assert steps == 8 and result.steps == 8
    assert result.lrs == pytest.approx([0.08 * (1 - t / 8) for t in range(8)])
    assert linear_to_zero(0.08, 8)(8) == 0.0 and linear_to_zero(0.08, 8)(50) == 0.0


def test_the_cooldown_branch_is_discarded_the_module_and_optimizer_are_unchanged(fitted):
    module, trainer, train, val = fitted
    optimizer = trainer.optimizers[0]
    params = {k: v.clone() for k, v in module.state_dict().items()}
    momentum = {i: s["momentum_buffer"].clone() for i, s in enumerate(optimizer.state.values())}
    lr, mode, rng = optimizer.param_groups[0]["lr"], module.training, torch.get_rng_state()
    result = cooldown(module, optimizer, iter(train), lambda: val, 0.1, 6)
    assert all(torch.equal(v, params[k]) for k, v in module.state_dict().items())
    assert all(torch.equal(s["momentum_buffer"], momentum[i]) for i, s in enumerate(optimizer.state.values()))
    assert optimizer.param_groups[0]["lr"] == lr and module.training == mode
    assert torch.equal(torch.get_rng_state(), rng)
    # The branch did train: its evaluation differs from the weights as they are, which the raw score measures.
    assert result.cooled != result.raw
    assert result.raw["acc"] == pytest.approx(cooldown(module, optimizer, iter(train), lambda: val, 0.1, 1).raw["acc"])


def test_the_cooldown_trains_on_the_batches_the_run_would_take_next():
    from pipeline.config.checks import check

    data = check(compose_job("dataset=synthetic", "trainer.progress=false")).dataset
    data.setup("fit")
    per_epoch = len(data.train_dataloader())

    def epoch(e):
        loader = data.train_dataloader()
        loader.sampler.set_epoch(e)
        return [b[1] for b in loader]

    nxt = [b[1] for b in itertools.islice(upcoming_batches(data, per_epoch - 1), 3)]
    expected = [epoch(0)[-1], *epoch(1)[:2]]
    assert all(torch.equal(a, b) for a, b in zip(nxt, expected, strict=True))


# -- one command, killed mid-way, resumed ----------------------------------------------------------------------------

# fix's LR: four candidates that learn at clearly different speeds, and one that diverges at once.
RATES = ["0.001", "0.004", "0.016", "0.064", "50.0"]
BUDGET, RUNGS = 36, (9, 18)  # optimizer steps; eta 2 and min_rung_frac 1/4 put rungs at 9 and 18, then the budget
STUDY = [
    "hydra/sweeper=halving", "+policy=fix", f"policy.k0={','.join(RATES)}", "seed=0,1", "dataset=synthetic",
    f"trainer.max_steps={BUDGET}", "trainer.eval_every_steps=9", "trainer.progress=false",
    "hydra.sweeper.eta=2", "hydra.sweeper.min_rung_frac=0.25", "hydra/launcher=pool", "hydra.launcher.n_jobs=2",
    "multirun",
]


@pytest.mark.slow
def test_a_pruned_study_from_one_command_continues_survivors_and_resumes_after_kill_9(tmp_path, store_uri):
    import optuna
    from mlflow.tracking import MlflowClient

    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    # 1. The study runs until rung 0 is decided and rung 1 is training, then the machine "crashes": kill -9 of the
    #    launcher and its workers.
    first = subprocess.Popen([sys.executable, "-m", "pipeline", *STUDY], cwd=tmp_path, env=env, text=True,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    seen, rung_1 = [], False
    for line in first.stdout:
        seen.append(line)
        rung_1 = rung_1 or line.startswith("[halving] rung 1: training")
        if rung_1 and line.startswith("[sweep] 1/"):  # one of rung 1's jobs is done, the others are not
            break
    os.killpg(first.pid, signal.SIGKILL)
    first.wait()
    assert any(line.startswith("[halving] rung 0: kept") for line in seen), "".join(seen)[-3000:]

    # 2. The same command picks up at the rung it reached: rung 0 is decided and not trained again.
    second = subprocess.run([sys.executable, "-m", "pipeline", *STUDY], cwd=tmp_path, env=env, capture_output=True,
                            text=True, timeout=900)
    out = second.stdout + second.stderr
    # One parent for the whole study (the sweep is resumable): its tally holds the diverged candidate's 2 seeds,
    # FAILED runs, and the exit code is the number of failed jobs, as for any sweep.
    assert second.returncode == 2 and "8 of 10 jobs finished, 2 failed" in out, out[-3000:]
    assert "candidates already scored (resumed study)" in out and "rung 0: training" not in out, out[-3000:]

    # 3. Optuna's storage (beside the MLflow store) holds a trial per candidate, decided by the halving rule.
    study = optuna.load_study(study_name=None, storage=f"sqlite:///{tmp_path}/mlruns/optuna.db")
    trials = {t.params["policy.k0"]: t for t in study.get_trials()}
    assert sorted(trials) == sorted(RATES)
    for rung in (0, 1):
        scores = {k0: t.intermediate_values[rung] for k0, t in trials.items() if rung in t.intermediate_values}
        pruned_here = {k0 for k0, t in trials.items() if t.user_attrs.get("pruned.rung") == rung}
        assert pruned_here == set(scores) - set(halving.survivors(scores, eta=2))
    assert {t.state.name for t in trials.values()} == {"PRUNED", "COMPLETE"}

    # 4. MLflow: one run per job, never a second one; the pruned KILLED with their decision, the survivors FINISHED.
    client = MlflowClient(store_uri)
    runs = {r.info.run_id: r for r in train_runs(store_uri)}
    assert len(runs) == len(RATES) * 2
    lr_steps = {run_id: sorted(m.step for m in client.get_metric_history(run_id, "lr")) for run_id in runs}
    for k0, trial in trials.items():
        assert sorted(trial.user_attrs["runs"]) == ["0", "1"]
        for run_id in trial.user_attrs["runs"].values():
            run = runs[run_id]
            assert run.data.params["policy.k0"] == k0
            if trial.state.name == "COMPLETE":  # continued from its checkpoints, never retrained
                assert run.info.status == "FINISHED" and lr_steps[run_id] == list(range(BUDGET))
                rung_steps = [m.step for m in client.get_metric_history(run_id, "rung/cooldown_acc")]
                assert sorted(rung_steps) == list(RUNGS)
                continue
            tags = run.data.tags
            if k0 == "50.0":  # a failed run is data: it keeps its own status and reason, its candidate scores 0
                assert run.info.status == "FAILED" and tags["failure"] == "diverged", tags
                assert trial.intermediate_values[0] == 0.0 and trial.user_attrs["pruned.rung"] == 0
                continue
            assert run.info.status == "KILLED" and tags["failure"] == "pruned", tags
            assert tags["pruned.rung"] == str(trial.user_attrs["pruned.rung"])
            assert float(tags["pruned.score"]) == pytest.approx(trial.intermediate_values[int(tags["pruned.rung"])])
            assert "below the cut" in tags["pruned.reason"]
            # Trained to its rung, each step once, the rung's raw and cooldown scores logged side by side.
            assert lr_steps[run_id] == list(range(RUNGS[int(tags["pruned.rung"])]))
            assert {"rung/raw_acc", "rung/cooldown_acc", "rung/cooldown_steps"} <= set(run.data.metrics)
    # The winner's score is its seeds' final val accuracy (the value the report reads), not a rung's.
    (winner,) = [t for t in trials.values() if t.state.name == "COMPLETE"]
    finals = [max(client.get_metric_history(run_id, "val/acc"), key=lambda m: m.step).value
              for run_id in winner.user_attrs["runs"].values()]
    assert winner.value == pytest.approx(sum(finals) / len(finals)) and winner.value > 0
    assert sum(map(len, lr_steps.values())) < len(RATES) * 2 * BUDGET
    assert not list((tmp_path / "checkpoints").glob("*/last.ckpt"))  # pruned and finished runs leave none behind
