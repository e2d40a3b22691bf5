"""What a run records is the same before and after the training stage was reshaped (issue 17): the same params,
tags and metric keys, the same artifacts and the same per-step LR and momentum, for the same command.
``data/run_keys_before_reshape.json`` was recorded by the code before the reshape (commit 48eb501)."""

import json
from pathlib import Path

import pytest
from conftest import compose_job, train_runs
from mlflow.tracking import MlflowClient

from pipeline.training.job import run_job

BEFORE = json.loads((Path(__file__).parent / "data" / "run_keys_before_reshape.json").read_text())
# policy.l=2000: the absolute form the shipped triangle2 had before issue 20 made its clock a fraction of the budget.
COMMAND = ["+policy=triangle2", "policy.l=2000", "+warmup=linear", "warmup.warmup_steps=5", "momentum=demon",
           "dataset=synthetic", "trainer.max_steps=30", "trainer.eval_every_steps=10", "trainer.progress=false",
           "schedule.k_scale=2"]
# Added on purpose by issue 17: the run's exact policy as a loadable spec (the report re-creates it from there).
# Added by issue 20: the budget-relative forms beside the absolute ones, and whether the policy fits the budget;
# by issue 19: what the run is judged on (the report reads these; absent means exactly this). The new config keys
# and the modules the reshape moved (dataset._target_) change the run key, a hash of the config.
# And the run's budget in optimizer steps (budget.total_steps): a pruned run, which records no summary, still says what
# it was to train, for the report's budget bounds.
ADDED_PARAMS = {"policy_config", "policy.l_frac", "warmup.warmup_frac", "budget.total_steps"}
# Issue 20 also tags where the policy's k values came from (k_from: config, or range_test with the test's run).
ADDED_TAGS = {"policy_fit": "partial_cycle", "task": "classification", "objective_metric": "acc",
              "objective_mode": "max", "k_from": "config"}
CHANGED_TAGS = {"run_key"}
# Issue 21: end-of-run figures are params summary.<name> and a table artifact, not single-point summary/* metric charts
# that push lr and val/* off the run's page; plus one figure of the LR and the objective over the steps.
SUMMARY_METRICS = [m for m in BEFORE["metrics"] if m.startswith("summary/")]
# Issue 21 too: the test-set values were six more single-point charts (test/*) above lr; they are the summary's
# summary.test_* params (and rows of its table) now, which is all the report ever read of them.
TEST_METRICS = [m for m in BEFORE["metrics"] if m.startswith("test/")]
ADDED_ARTIFACTS = {"summary.csv", "summary.json", "lr_objective.png"}


@pytest.mark.slow
def test_a_run_records_the_same_keys_tags_and_curves_as_before_the_reshape(store_uri):
    result = run_job(compose_job(*COMMAND))
    assert result.status == "FINISHED"
    (run,) = train_runs(store_uri)
    client = MlflowClient(store_uri)
    summary_params = {k for k in run.data.params if k.startswith("summary.")}
    assert summary_params == {"summary." + m.split("/", 1)[1] for m in SUMMARY_METRICS}
    assert {"summary.test_" + m.split("/", 1)[1] for m in TEST_METRICS} <= summary_params
    assert sorted(set(run.data.params) - ADDED_PARAMS - summary_params) == BEFORE["params"]
    tags = {k: v for k, v in run.data.tags.items() if not k.startswith("mlflow.") and k != "git_commit"}
    assert set(tags) - set(ADDED_TAGS) == set(BEFORE["tags"])
    assert {k: v for k, v in tags.items() if k not in CHANGED_TAGS} == {
        **{k: v for k, v in BEFORE["tags"].items() if k not in CHANGED_TAGS}, **ADDED_TAGS}
    assert len(tags["run_key"]) == 16
    assert sorted(run.data.metrics) == [m for m in BEFORE["metrics"] if m not in SUMMARY_METRICS + TEST_METRICS]
    assert {a.path for a in client.list_artifacts(run.info.run_id)} == {*BEFORE["artifacts"], *ADDED_ARTIFACTS}
    for key in ("lr", "momentum"):
        history = sorted(client.get_metric_history(run.info.run_id, key), key=lambda m: m.step)
        assert [m.step for m in history] == list(range(30))
        assert [m.value for m in history] == pytest.approx(BEFORE[key], rel=1e-12, abs=0)
