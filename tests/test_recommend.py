"""Verdicts, ranking, margin, speed-up and the composite proposal on hand-built run tables (pure functions)."""

from __future__ import annotations

import json

import pytest
from conftest import ROOT
from hydra.utils import instantiate
from scipy import stats
from test_scoring import make_run, table

from pipeline.analysis import composite, recommend, scoring, verification
from pipeline.policies import Scaled, Stretched, Triangle2, Warmup, from_spec, to_spec

TARGET = 0.85


def ranked_of(*rows, max_fluctuation=0.02, rank_by="steps", **criteria):
    c = scoring.Criteria(TARGET, **criteria)
    scores = scoring.score_candidates(scoring.run_outcomes(table(*rows), c), c)
    return recommend.rank(recommend.classify(scores, TARGET, max_fluctuation), rank_by)


def recommendation(*rows, baseline="inv", alpha=0.05, **kwargs):
    ranked = ranked_of(*rows, **kwargs)
    return ranked, recommend.recommend_group(ranked, TARGET, kwargs.get("rank_by", "steps"), baseline, alpha)


def test_the_fastest_policy_to_the_target_ranks_first():
    ranked = ranked_of(make_run("sin2", 0, 50), make_run("triangle2", 0, 30), make_run("fix", 0, 70))
    assert ranked["name"].tolist() == ["triangle2", "sin2", "fix"] and ranked["rank"].tolist() == [1, 2, 3]
    assert ranked["good"].all()


def test_ranking_by_seconds_can_reverse_the_order():
    rows = [make_run("sin2", 0, 50, seconds_per_step=0.01), make_run("triangle2", 0, 30, seconds_per_step=0.03)]
    assert ranked_of(*rows, rank_by="seconds")["name"].tolist() == ["sin2", "triangle2"]


def test_equally_fast_policies_are_ordered_by_accuracy():
    ranked = ranked_of(make_run("sin2", 0, 30, final=0.88), make_run("triangle2", 0, 30, final=0.91))
    assert ranked["name"].tolist() == ["triangle2", "sin2"]


def test_a_diverged_seed_makes_its_policy_bad_and_it_is_listed_with_the_reason():
    ranked = ranked_of(make_run("triangle2", 0, 10), make_run("triangle2", 1, failure="diverged", status="FAILED"),
                       make_run("sin2", 0, 50))
    assert ranked["name"].tolist() == ["sin2", "triangle2"]  # the faster one failed in a seed: bad, after good ones
    bad = ranked.set_index("name").loc["triangle2"]
    assert not bad["good"] and bad["reasons"][0].startswith("failed in 1 of 2 seeds (seed 1: diverged")


def test_missing_the_target_in_one_seed_makes_a_policy_bad():
    ranked = ranked_of(make_run("sin2", 0, 20), make_run("sin2", 1, None, final=0.8), make_run("fix", 0, 60))
    bad = ranked.set_index("name").loc["sin2"]
    assert not bad["good"] and bad["reasons"] == [
        "missed val acc ≥ 0.85 within 100 steps in 1 of 2 seeds (seed 1: best 0.800)"]


def test_late_fluctuation_above_the_threshold_makes_a_policy_unstable():
    ranked = ranked_of(make_run("sin2", 0, 20, fluct=0.05), make_run("fix", 0, 60), max_fluctuation=0.02)
    assert ranked.set_index("name").loc["sin2", "reasons"] == ["unstable: late val acc std 0.0500 > 0.02"]
    assert ranked_of(make_run("sin2", 0, 20, fluct=0.05), max_fluctuation=0.1)["good"].all()


def test_speedup_is_the_ratio_of_the_baselines_mean_steps_and_seconds():
    rows = [make_run("triangle2", s, 20) for s in (0, 1)] + [make_run("inv", s, 60 + 20 * s) for s in (0, 1)]
    _, rec = recommendation(*rows)
    assert rec.policy == "triangle2"
    assert rec.speedup.steps == pytest.approx(70 / 20) and rec.speedup.seconds == pytest.approx(70 / 20)
    assert not rec.speedup.lower_bound and rec.speedup.text.startswith("3.50× fewer steps")


def test_speedup_is_a_lower_bound_when_the_baseline_never_reached_the_target():
    rows = [make_run("triangle2", s, 25) for s in (0, 1)] + [make_run("inv", s, None) for s in (0, 1)]
    _, rec = recommendation(*rows)
    assert rec.speedup.lower_bound and rec.speedup.steps == pytest.approx(100 / 25)  # budget / recommended steps
    assert rec.speedup.text.startswith("≥ 4.00× fewer steps") and "never reached the target" in rec.speedup.text


def test_speedup_without_a_baseline_run_says_so():
    _, rec = recommendation(make_run("triangle2", 0, 25), baseline="inv")
    assert not rec.speedup.found and rec.speedup.text == "baseline 'inv' was not run in this group"


def test_a_margin_larger_than_seed_noise_is_significant():
    rows = [make_run("triangle2", s, v) for s, v in enumerate((20, 22, 21))]
    rows += [make_run("sin2", s, v) for s, v in enumerate((40, 43, 41))]
    _, rec = recommendation(*rows)
    expected = stats.ttest_ind([20, 22, 21], [40, 43, 41], equal_var=False).pvalue
    assert rec.margin.p_value == pytest.approx(expected) and rec.margin.exceeds_noise
    assert rec.margin.runner_up == "sin2" and rec.margin.difference == pytest.approx(124 / 3 - 21)
    assert "exceeds seed noise" in rec.margin.text


def test_a_margin_within_seed_noise_is_not_significant():
    rows = [make_run("triangle2", s, v) for s, v in enumerate((20, 40))]
    rows += [make_run("sin2", s, v) for s, v in enumerate((25, 45))]
    _, rec = recommendation(*rows)
    assert rec.margin.exceeds_noise is False and "within seed noise" in rec.margin.text


def test_a_margin_with_one_seed_is_not_testable():
    _, rec = recommendation(make_run("triangle2", 0, 20), make_run("sin2", 0, 40))
    assert rec.margin.exceeds_noise is None and rec.margin.text.endswith("not testable with 1 seed")
    assert rec.margin.difference == 20


def test_welch_p_value_matches_scipy():
    a, b = [1.0, 2.5, 3.1, 4.0], [2.0, 6.0, 7.5]
    assert recommend.welch_p_value(a, b) == pytest.approx(stats.ttest_ind(a, b, equal_var=False).pvalue)


def test_no_good_policy_gives_no_recommendation_and_names_the_closest():
    _, rec = recommendation(make_run("sin2", 0, 20), make_run("sin2", 1, None), make_run("fix", 0, None))
    assert rec.policy is None and rec.composite is None
    assert rec.text.startswith("no policy is good: of 2 candidates, 2 missed val acc ≥ 0.85 within budget")
    assert "closest: sin2 (reached it in 1 of 2 seeds; missed val acc ≥ 0.85" in rec.text


def test_the_headline_of_a_policy_rejected_as_unstable_says_unstable_not_missed():
    # The issue's case: every seed reached 0.3, but the late fluctuation made the policy bad.
    _, rec = recommendation(*(make_run("cos", s, 20, fluct=0.05) for s in (0, 1, 2)))
    assert rec.policy is None and "no policy reached" not in rec.text
    assert rec.text == ("no policy is good: of 1 candidate, 1 fluctuated late (unstable); closest: cos (reached it "
                        "in 3 of 3 seeds; unstable: late val acc std 0.0500 > 0.02)")
    assert [h.kind for h in rec.headlines] == ["none"] and rec.headlines[0].text == rec.text


def test_a_group_whose_runs_could_not_run_names_no_bad_policy():
    rec = recommend.recommend_group(ranked_of(), TARGET, "steps", "inv", 0.05, group="resnet20 / cifar10 / momentum",
                                    unscored="39 could not run (39× config: dataset: CIFAR-10 not found)")
    assert rec.policy is None and rec.group == "resnet20 / cifar10 / momentum"
    assert rec.text.startswith("no policy could be evaluated: of its runs 39 could not run (39× config: dataset:")
    assert "bad" not in rec.text and "closest" not in rec.text


def test_one_seed_is_singular_in_every_sentence():
    _, rec = recommendation(make_run("triangle2", 0, 20), make_run("sin2", 0, 40))
    assert rec.text.endswith("over 1 seed") and "1 seeds" not in rec.text
    assert rec.margin.text.endswith("not testable with 1 seed")
    assert all("1 seeds" not in h.text for h in rec.headlines)


@pytest.mark.parametrize("ratio, text", [(2.1, "2.10× fewer steps"), (1 / 3.9, "3.90× more steps"),
                                         (1.001, "as many steps"), (None, None)])
def test_ratios_read_right_both_ways(ratio, text):
    assert recommend.ratio_phrase(ratio, "fewer steps", "more steps", "as many steps") == text


def test_a_recommended_policy_that_is_slower_in_seconds_says_slower_not_a_fraction_less():
    # The issue's case: the same steps as the baseline, 3.9x the training seconds.
    rows = [make_run("step", s, 20, seconds_per_step=0.039, final=0.95) for s in (0, 1)]
    rows += [make_run("inv", s, 20, seconds_per_step=0.01) for s in (0, 1)]
    _, rec = recommendation(*rows)
    assert rec.policy == "step"
    assert rec.speedup.text == "as many steps and 3.90× slower in training time, against inv"
    assert "0.26" not in rec.speedup.text and "fewer" not in rec.speedup.text


def test_the_baseline_recommended_is_named_as_such():
    _, rec = recommendation(make_run("inv", 0, 20), make_run("fix", 0, 40))
    assert rec.policy == "inv" and rec.speedup.text == "the recommended policy is the baseline (inv)"


def test_rank_by_final_puts_the_best_final_objective_first_and_the_default_stays_fastest():
    # The issue's case: step reaches the target first, cos ends far better.
    rows = [make_run("step", s, 20, final=0.923) for s in (0, 1)] + [make_run("cos", s, 40, final=0.96) for s in (0, 1)]
    assert ranked_of(*rows)["name"].tolist() == ["step", "cos"]
    assert ranked_of(*rows, rank_by="final")["name"].tolist() == ["cos", "step"]
    _, rec = recommendation(*rows, rank_by="final")
    assert rec.policy == "cos" and rec.text.startswith("cos: final val acc 0.960 ± 0.000 over 2 seeds")
    assert rec.margin.runner_up == "step" and rec.margin.difference == pytest.approx(0.037)


def test_the_three_headlines_name_the_fastest_the_best_final_and_the_pareto_set():
    rows = [make_run("step", s, 20, final=0.923) for s in (0, 1)] + [make_run("cos", s, 40, final=0.96) for s in (0, 1)]
    rows += [make_run("fix", s, 60, final=0.93) for s in (0, 1)]  # slower than step, worse than cos: dominated
    ranked = ranked_of(*rows)
    assert dict(zip(ranked["name"], recommend.pareto(ranked))) == {"step": True, "cos": True, "fix": False}
    fastest, final, front = recommend.headlines(ranked, TARGET)
    assert (fastest.kind, fastest.policies) == ("fastest", ["step"])
    assert fastest.text.startswith("Fastest to the target (LRBench's rule, in optimizer steps): step: reaches val acc")
    assert (final.kind, final.policies) == ("best_final", ["cos"]) and "final val acc 0.96" in final.text
    assert (front.kind, front.policies) == ("pareto", ["step", "cos"])


def test_a_min_mode_objective_ranks_lower_is_better():
    loss = dict(target=0.3, metric="loss", mode="min")
    rows = [make_run("sin2", s, 30, final=0.2, **loss) for s in (0, 1)]
    rows += [make_run("fix", s, 30, final=0.1, **loss) for s in (0, 1)]
    rows += [make_run("inv", s, None, final=0.5, **loss) for s in (0, 1)]
    c = scoring.Criteria(0.3, objective=scoring.Objective("loss", "min"))
    scores = scoring.score_candidates(scoring.run_outcomes(table(*rows), c), c)
    classified = recommend.classify(scores, 0.3, 0.02)
    assert recommend.rank(classified, "final")["name"].tolist() == ["fix", "sin2", "inv"]
    assert recommend.rank(classified, "steps")["name"].tolist() == ["fix", "sin2", "inv"]  # tie broken by lower loss
    inv = classified.set_index("name").loc["inv"]
    assert inv["reasons"] == ["missed val loss ≤ 0.3 within 100 steps in 2 of 2 seeds (seed 0: best 0.5, "
                              "seed 1: best 0.5)"]
    rec = recommend.recommend_group(recommend.rank(classified, "final"), 0.3, "final", "inv", 0.05)
    assert rec.policy == "fix" and rec.objective == {"metric": "loss", "mode": "min", "key": "val/loss",
                                                     "direction": "lower is better"}
    assert rec.margin.difference == pytest.approx(0.1)  # fix's loss is 0.1 lower: ahead


POLICY = Triangle2(k0=0.01, k1=0.06, l=20)
POLICY_PARAMS = {"policy_config": json.dumps(to_spec(POLICY), sort_keys=True), "param.optimizer.lr": "0.01",
                 "param.trainer.max_steps": "100"}


def test_the_recorded_policy_is_re_created_from_policy_config():
    assert composite.recorded_policy(POLICY_PARAMS) == POLICY
    with pytest.raises(composite.NotProposed, match=r"^the run did not record its policy \(policy_config\)$"):
        composite.recorded_policy({"param.policy._target_": "pipeline.policies.Triangle2", "param.policy.k0": "0.01"})


def _best(*rows):
    ranked = ranked_of(*rows)
    return ranked.iloc[0].to_dict()


def test_composite_runs_the_recommended_policy_until_its_slowest_seed_reached_the_target_then_a_low_fix():
    best = _best(make_run("triangle2", 0, 30, params=POLICY_PARAMS), make_run("triangle2", 1, 40, params=POLICY_PARAMS))
    proposal = composite.propose_composite(best, {**POLICY_PARAMS, "summary/steps": 100}, 0.1)
    assert proposal.switch_step == 40 and proposal.lr_at_switch == POLICY(40)  # evaluated, not read off a curve
    assert proposal.tail_lr == pytest.approx(0.1 * POLICY(40), rel=1e-2)
    assert proposal.overrides == ["model=lenet5", "dataset=synthetic", "optimizer=momentum", "trainer.max_steps=100"]
    assert proposal.node["segments"][0]["policy"] == {"_target_": "pipeline.policies.Triangle2", "k0": 0.01,
                                                      "k1": 0.06, "l": 20}
    policy = instantiate(proposal.node)  # a valid pipeline.policies.Composite
    assert [policy(t) for t in (0, 10, 39)] == [POLICY(0), POLICY(10), POLICY(39)]
    assert policy(40) == policy(99) == proposal.tail_lr


def test_composite_keeps_the_runs_k_scale_stretch_and_warmup():
    # The job's chain (pipeline/policies/build.py): Scaled(Warmup(Stretched(base))) for 100 steps, 50 of warm-up.
    trained = Scaled(Warmup(Stretched(POLICY, horizon_steps=1000, total_steps=50), warmup_steps=50), 5.0)
    params = {**POLICY_PARAMS, "policy_config": json.dumps(to_spec(trained)), "param.schedule.horizon_steps": "1000",
              "summary/steps": 100}
    best = _best(make_run("triangle2", 0, 60, k_scale=5.0, warmup="linear", params=params,
                          spec="lrPolicy_TRI2+k0_0.01+k1_0.06+l_20-SCALE-5"))
    proposal = composite.propose_composite(best, params, tail_factor=0.1)
    assert proposal.lr_at_switch == trained(60)
    # step 60 of 100 is step 10 of the policy's 50 (after 50 of warm-up), stretched to policy step 200 of 1000
    assert proposal.node["segments"][0]["until_steps"] == 200
    assert proposal.node["segments"][0]["policy"] == to_spec(POLICY)  # the head is the policy inside the wrappers
    assert proposal.node["segments"][1]["policy"]["k0"] == pytest.approx(proposal.tail_lr / 5)  # scaled up by 5
    assert {"+warmup=linear", "warmup.warmup_steps=50", "schedule.k_scale=5",
            "schedule.horizon_steps=1000"} <= set(proposal.overrides)
    # Wrapped as the command wraps it, the composite is the trained policy up to the switch, then the tail.
    node = {k: v for k, v in proposal.node.items() if k != "_convert_"}  # a Hydra-only key
    proposed = Scaled(Warmup(Stretched(from_spec(node), 1000, 50), 50), 5.0)
    assert [proposed(t) for t in range(60)] == [trained(t) for t in range(60)]
    assert proposed(60) == pytest.approx(proposal.tail_lr) and proposed(99) == pytest.approx(proposal.tail_lr)


def test_no_composite_when_there_is_no_room_for_a_tail_or_no_recorded_policy_says_why(tmp_path):
    best = _best(make_run("triangle2", 0, 100, params=POLICY_PARAMS))
    with pytest.raises(composite.NotProposed, match="end of the budget"):
        composite.propose_composite(best, {**POLICY_PARAMS, "summary/steps": 100})
    with pytest.raises(composite.NotProposed, match=r"did not record its policy \(policy_config\)"):
        composite.propose_composite(best, {"summary/steps": 100})
    poisoned = json.dumps({"_target_": "builtins.open", "_args_": [str(tmp_path / "x"), "w"]})
    with pytest.raises(composite.NotProposed, match=r"policy_config is not a valid policy: _target_ must be one of"):
        composite.propose_composite(best, {**POLICY_PARAMS, "policy_config": poisoned})
    assert not (tmp_path / "x").exists()
    with pytest.raises(composite.NotProposed, match=r"policy_config is not a valid policy: nested too deep"):
        composite.propose_composite(best, {**POLICY_PARAMS, "policy_config": "[" * 100_000 + "]" * 100_000})


def test_a_recommendation_for_runs_recorded_without_policy_config_says_no_composite_rather_than_guessing():
    old = {k: v for k, v in POLICY_PARAMS.items() if k != "policy_config"}
    old |= {"param.policy._target_": "pipeline.policies.Triangle2", "param.policy.k0": "0.01",
            "param.policy.k1": "0.06", "param.policy.l": "20"}
    rows = [make_run("triangle2", s, 30 + s, params=old) for s in (0, 1)]
    ranked = ranked_of(*rows)
    outcomes = scoring.run_outcomes(table(*rows), scoring.Criteria(TARGET))
    rec = recommend.recommendation_for(ranked, outcomes, {}, TARGET, "steps", "inv", 0.05, None, 0.1)
    assert rec.policy == "triangle2" and rec.composite is None
    assert rec.notes == ["No composite proposed: the run did not record its policy (policy_config)."]
    recorded = [make_run("triangle2", s, 30 + s, params=POLICY_PARAMS) for s in (0, 1)]
    outcomes = scoring.run_outcomes(table(*recorded), scoring.Criteria(TARGET))
    rec = recommend.recommendation_for(ranked_of(*recorded), outcomes, {}, TARGET, "steps", "inv", 0.05, None, 0.1)
    assert rec.composite.switch_step == 31 and rec.composite.lr_at_switch == POLICY(31)


def _verification(composite_rows, single_rows, rank_by="steps"):
    single = ranked_of(*single_rows).iloc[0].to_dict()
    comp = ranked_of(*composite_rows).iloc[0].to_dict()
    return verification.compare(single, comp, rank_by, 0.05)


def test_a_composite_that_ends_better_beyond_seed_noise_is_verified_better():
    single = [make_run("triangle2", s, 20, final=f) for s, f in enumerate((0.90, 0.91, 0.905))]
    comp = [make_run("proposed_composite", s, 20, final=f) for s, f in enumerate((0.95, 0.951, 0.953))]
    v = _verification(comp, single)
    assert v.verdict == "better" and v.against == "triangle2" and v.seeds == [0, 1, 2]
    speed, final = v.comparisons
    assert speed.margin.text.endswith("identical in every seed") and speed.margin.exceeds_noise is False
    assert final.composite == pytest.approx(0.9513, abs=1e-4) and final.margin.exceeds_noise
    assert v.text.startswith("better than triangle2 over 3 seeds")


def test_a_composite_within_seed_noise_or_bad_is_not_better():
    single = [make_run("triangle2", s, 20, final=f) for s, f in enumerate((0.90, 0.95))]
    close = [make_run("proposed_composite", s, 20, final=f) for s, f in enumerate((0.91, 0.95))]
    v = _verification(close, single)
    assert v.verdict == "not better" and "no lead over triangle2 beyond seed noise" in v.text
    bad = [make_run("proposed_composite", s, None, final=0.5) for s in (0, 1)]
    v = _verification(bad, single)
    assert v.verdict == "not better" and v.text.startswith("not better: the composite is bad over 2 seeds (missed")


def test_runs_of_a_proposal_are_recognised_by_the_policy_they_recorded():
    best = _best(make_run("triangle2", 0, 30, params=POLICY_PARAMS), make_run("triangle2", 1, 40, params=POLICY_PARAMS))
    proposal = composite.propose_composite(best, {**POLICY_PARAMS, "summary/steps": 100}, 0.1)
    trained = instantiate(proposal.node)
    assert composite.verifies({"policy_config": json.dumps(to_spec(trained))}, proposal, POLICY)
    other = instantiate({**proposal.node, "segments": [proposal.node["segments"][0],
                                                       {"policy": {"_target_": composite.FIX_TARGET, "k0": 0.5}}]})
    assert not composite.verifies({"policy_config": json.dumps(to_spec(other))}, proposal, POLICY)
    assert not composite.verifies({"policy_config": json.dumps(to_spec(POLICY))}, proposal, POLICY)
    assert not composite.verifies({}, proposal, POLICY)


def test_the_composites_command_repeats_the_seeds_budget_and_every_changed_setting():
    params = {**POLICY_PARAMS, "summary/steps": 100, "param.trainer.eval_every_steps": "10",
              "param.trainer.targets": "[0.5, 0.9]", "param.trainer.eval_every_epochs": "3",
              "param.dataset.noise": "6.0", "param.dataset.seed": "1", "param.trainer.progress": "False",
              "param.optimizer.weight_decay": "0.0005", "param.dataset.train_subset": "None"}
    best = _best(make_run("triangle2", 1, 30, params=params), make_run("triangle2", 0, 40, params=params))
    defaults = composite.group_defaults(ROOT / "conf", {"model": "lenet5", "dataset": "synthetic",
                                                        "optimizer": "momentum"})
    assert defaults["trainer.eval_every_steps"] == "100" and "dataset.seed" not in defaults  # ${seed}: derived
    proposal = composite.propose_composite(best, params, 0.1, defaults)
    assert proposal.seeds == (0, 1) and proposal.total_steps == 100
    assert proposal.overrides == ["model=lenet5", "dataset=synthetic", "optimizer=momentum", "trainer.max_steps=100",
                                  "trainer.eval_every_steps=10", "trainer.targets=[0.5, 0.9]", "dataset.noise=6.0"]
    args = composite.training_arguments(proposal, "/out", "proposed_composite", "my exp", "sqlite:////s/m.db")
    assert args[:3] == ["--config-dir", "/out", "+policy=proposed_composite"]
    assert args[3:] == [*proposal.overrides, "seed=0,1", "tracking.experiment='my exp'",
                        "tracking.uri=sqlite:////s/m.db", "--multirun"]


def test_the_composites_command_names_the_runs_task_and_repeats_its_changed_objective():
    params = {**POLICY_PARAMS, "summary/steps": 100, "task": "language_model",
              "param.task._target_": "pipeline.tasks.language_model.LanguageModel",
              "param.task.objective.metric": "loss", "param.task.objective.mode": "min"}
    best = _best(make_run("triangle2", 0, 30, params=params), make_run("triangle2", 1, 40, params=params))
    defaults = composite.group_defaults(ROOT / "conf", {"model": "char_gru", "dataset": "fortunes",
                                                        "optimizer": "momentum", "task": "language_model"})
    assert defaults["task.objective.metric"] == "perplexity"  # the option's task node, not its global settings
    proposal = composite.propose_composite(best, params, 0.1, defaults)
    assert proposal.overrides[0] == "task=language_model"  # without it the command trains a classifier
    assert "task.objective.metric=loss" in proposal.overrides and not any("_target_" in o for o in proposal.overrides)
    classification = composite.propose_composite(best, {**POLICY_PARAMS, "summary/steps": 100, "task":
                                                        "classification"}, 0.1)
    assert not any(o.startswith("task") for o in classification.overrides)  # the default: commands as before


def test_the_composites_command_keeps_the_users_own_config_folders_on_the_search_path():
    params = {**POLICY_PARAMS, "summary/steps": 100, "config_dirs": json.dumps(["/home/me/conf", "/home/me/more"])}
    best = _best(make_run("triangle2", 0, 30, params=params), make_run("triangle2", 1, 40, params=params))
    proposal = composite.propose_composite(best, params, 0.1)
    args = composite.training_arguments(proposal, "/out", "proposed_composite")
    assert args[:4] == ["--config-dir", "/out", "hydra.searchpath=[file:///home/me/conf,file:///home/me/more]",
                        "+policy=proposed_composite"]
    plain = composite.propose_composite(best, {**POLICY_PARAMS, "summary/steps": 100}, 0.1)
    assert not any(a.startswith("hydra.searchpath") for a in composite.training_arguments(plain, "/out", "p"))


def test_the_composites_command_for_a_class_named_run_starts_from_its_option_and_sets_the_class():
    params = {**POLICY_PARAMS, "summary/steps": 100, "model_option": "lenet5", "dataset_option": "custom",
              "param.model._target_": "own.TinyNet", "param.dataset._target_": "own.Blobs"}
    group = ("TinyNet", "Blobs", "momentum")
    best = _best(make_run("triangle2", 0, 30, params=params, group=group),
                 make_run("triangle2", 1, 40, params=params, group=group))
    proposal = composite.propose_composite(best, params, 0.1)
    # model=TinyNet names no option (Hydra: Could not find 'model/TinyNet'); the option it started from does
    assert proposal.overrides[:5] == ["model=lenet5", "model._target_=own.TinyNet", "dataset=custom",
                                      "dataset._target_=own.Blobs", "optimizer=momentum"]
