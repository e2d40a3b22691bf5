"""Sweeps as users type them: one MLflow parent per sweep, one child per job, failures recorded, honest exit code."""

import pytest
from conftest import run_cli, train_runs
from mlflow.tracking import MlflowClient

SMALL = ["dataset=synthetic", "trainer.max_steps=20", "trainer.eval_every_steps=10", "trainer.progress=false"]


def _parents(uri, experiment="lrbench"):
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(experiment)
    return [r for r in client.search_runs([exp.experiment_id]) if r.data.tags.get("kind") == "sweep"]


@pytest.mark.slow
def test_bare_multirun_word_runs_a_sweep_with_one_parent_and_a_child_per_policy(tmp_path, store_uri):
    proc = run_cli("+policy=triangle2,sin2", *SMALL, "multirun", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    parents = _parents(store_uri)
    assert len(parents) == 1
    parent = parents[0]
    assert parent.info.status == "FINISHED" and parent.data.tags["sweep.jobs"] == "2"
    assert "+policy=triangle2,sin2" in parent.data.tags["sweep.overrides"]
    children = train_runs(store_uri)
    assert sorted(r.data.tags["policy"] for r in children) == ["sin2", "triangle2"]
    assert all(r.info.status == "FINISHED" for r in children)
    assert all(r.data.tags["mlflow.parentRunId"] == parent.info.run_id for r in children)
    # Lightning's start-up and stop notes stay quiet in every job, the first one included.
    output = proc.stdout + proc.stderr
    assert "GPU available" not in output and "Trainer.fit` stopped" not in output, output[-3000:]


@pytest.mark.slow
def test_parallel_pool_sweep_files_every_run_in_the_chosen_experiment(tmp_path, store_uri):
    proc = run_cli("+policy=triangle2,sin2,cos", *SMALL, "tracking.experiment=pool-test", "hydra/launcher=pool",
                   "hydra.launcher.n_jobs=2", "--multirun", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    children = train_runs(store_uri, "pool-test")
    assert sorted(r.data.tags["policy"] for r in children) == ["cos", "sin2", "triangle2"]
    assert all(r.info.status == "FINISHED" for r in children)
    parent_id = _parents(store_uri, "pool-test")[0].info.run_id
    assert {r.data.tags["mlflow.parentRunId"] for r in children} == {parent_id}
    default = MlflowClient(store_uri).get_experiment_by_name("Default")
    assert default is None or not MlflowClient(store_uri).search_runs([default.experiment_id])


@pytest.mark.slow
def test_failing_jobs_are_recorded_and_the_sweep_finishes_the_others(tmp_path, store_uri):
    # k0=500 diverges; l=0 is a bad value. The other two jobs must still run and finish.
    proc = run_cli("+policy=sin2", "policy.k1=0.06,500", "policy.l=0,5", *SMALL, "multirun", cwd=tmp_path)
    assert proc.returncode == 3, proc.stderr[-3000:]  # exit code = number of failed jobs
    runs = train_runs(store_uri)
    assert len(runs) == 4
    by_reason = sorted((r.info.status, r.data.tags.get("failure", "")) for r in runs)
    assert by_reason == [("FAILED", "config"), ("FAILED", "config"), ("FAILED", "diverged"), ("FINISHED", "")]
    config_failures = [r for r in runs if r.data.tags.get("failure") == "config"]
    assert all("policy.l must be > 0" in r.data.tags["error"] for r in config_failures)
    parent = _parents(store_uri)[0]
    assert parent.info.status == "FAILED" and parent.data.tags["sweep.failed"] == "3"


def test_a_sweep_job_refused_before_its_run_is_tagged_with_the_objective_of_its_siblings(store_uri):
    from conftest import compose_job

    from pipeline.analysis.objective import Objective
    from pipeline.analysis.scoring import scope_objective
    from pipeline.config.checks import ConfigError, check
    from pipeline.sweep import record_job_failure
    from pipeline.tracking.runs import load_scope
    from pipeline.training.identity import base_tags, objective_tags

    bad = compose_job("task=regression", "trainer.targets=[-1]")  # an RMSE target of -1: refused by check()
    with pytest.raises(ConfigError, match=r"^trainer\.targets\[0\]") as refused:
        check(bad)
    result = record_job_failure(bad, refused.value, "config")
    (run,) = train_runs(store_uri)
    assert run.info.run_id == result.run_id and run.data.tags["failure"] == "config"
    sibling = check(compose_job("task=regression"))  # the same job with a good target: what its run is tagged
    expected = {**base_tags(sibling.choices, sibling.seed), **objective_tags(sibling.objective)}
    assert {k: run.data.tags.get(k) for k in expected} == expected
    assert (expected["task"], expected["objective_metric"], expected["objective_mode"]) == ("regression", "rmse", "min")
    runs, _ = load_scope(store_uri, ["lrbench"], scope="all")  # the report scopes it with its siblings' objective
    assert scope_objective(runs) == Objective("rmse", "min")
