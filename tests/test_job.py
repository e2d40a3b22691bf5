"""One tracked training run, end to end: real Hydra config, real Lightning Trainer, real SQLite MLflow store."""

from pathlib import Path

import pytest
from conftest import TINY, compose_job, run_cli, train_runs
from mlflow.tracking import MlflowClient

from pipeline.config.checks import ConfigError
from pipeline.policies import Triangle2
from pipeline.tracking.runs import summaries
from pipeline.training.job import run_job

FASHION = Path("/usr/share/datasets/fashion-mnist")


@pytest.mark.slow
def test_cli_run_records_every_step_of_the_policy_in_mlflow(tmp_path, store_uri):
    proc = run_cli("+policy=triangle2", "dataset=synthetic", "trainer.max_steps=60", "trainer.progress=false",
                   cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    runs = train_runs(store_uri)
    assert len(runs) == 1
    run = runs[0]
    assert run.info.status == "FINISHED"
    assert run.data.tags["policy"] == "triangle2" and run.data.tags["dataset"] == "synthetic"
    for tag in ("model", "optimizer", "seed", "git_commit", "policy_spec"):
        assert run.data.tags.get(tag), tag
    client = MlflowClient(store_uri)
    lr = sorted((m.step, m.value) for m in client.get_metric_history(run.info.run_id, "lr"))
    policy = Triangle2(k0=0.01, k1=0.06, l=12)  # the shipped l_frac 0.2 of the 60-step budget
    assert [s for s, _ in lr] == list(range(60))
    for step, value in lr:
        assert abs(value - policy(step)) / policy(step) < 1e-6
    loss_steps = sorted(m.step for m in client.get_metric_history(run.info.run_id, "train/loss"))
    assert loss_steps == list(range(60))
    metrics = {**run.data.metrics, **summaries(run.data.metrics, run.data.params)}
    for key in ("val/acc", "val/loss", "val/acc_top5", "val/conf_mean", "val/conf_std", "val/conf_class_std",
                "summary/test_acc", "summary/best_val_acc", "summary/final_val_acc", "summary/train_s",
                "summary/loss_gap", "summary/diverged", "summary/steps"):
        assert key in metrics, key
    assert metrics["summary/steps"] == 60 and metrics["summary/diverged"] == 0
    # End-of-run figures are params and a table, not single-point metric charts that push lr off the run page.
    assert not any(key.startswith(("summary/", "test/")) for key in run.data.metrics)
    assert run.data.params["summary.steps"] == "60.0" and 0 <= float(run.data.params["summary.test_acc"]) <= 1
    assert run.data.params["policy.k1"] == "0.06"
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"config.yaml", "lr_curve.png", "summary.csv", "summary.json", "lr_objective.png"} <= artifacts
    assert f"run {run.info.run_id} FINISHED" in proc.stdout


@pytest.mark.slow
def test_bad_value_exits_2_naming_the_key_and_creates_no_run(tmp_path, store_uri):
    proc = run_cli("+policy=triangle2", "policy.l=0", "dataset=synthetic", cwd=tmp_path)
    assert proc.returncode == 2
    assert "policy.l must be > 0" in proc.stderr
    assert train_runs(store_uri) == []


@pytest.mark.parametrize(("max_steps", "expected"), [(30, [10, 20, 30]), (25, [10, 20, 25])])
def test_validation_runs_on_schedule_and_once_at_the_end_of_the_budget(store_uri, max_steps, expected):
    cfg = compose_job(*TINY, "+policy=fix", f"trainer.max_steps={max_steps}", "trainer.eval_every_steps=10")
    result = run_job(cfg)
    history = MlflowClient(store_uri).get_metric_history(result.run_id, "val/acc")
    assert sorted(m.step for m in history) == expected


def test_gradient_accumulation_keeps_one_point_per_optimizer_step(store_uri):
    cfg = compose_job(*TINY, "+policy=sin2", "policy.l=5", "trainer.accumulate_grad_batches=2",
                      "trainer.max_steps=12", "trainer.eval_every_steps=6")
    result = run_job(cfg)
    client = MlflowClient(store_uri)
    lr = sorted((m.step, m.value) for m in client.get_metric_history(result.run_id, "lr"))
    assert [s for s, _ in lr] == list(range(12))
    from pipeline.policies import Sin2

    assert [v for _, v in lr] == pytest.approx([Sin2(k0=0.01, k1=0.06, l=5)(t) for t in range(12)])
    losses = client.get_metric_history(result.run_id, "train/loss")
    assert sorted(m.step for m in losses) == list(range(12))
    assert sorted(m.step for m in client.get_metric_history(result.run_id, "val/acc")) == [6, 12]


def test_diverging_run_stops_at_once_and_is_recorded_failed(store_uri):
    cfg = compose_job(*TINY, "+policy=fix", "policy.k0=500.0", "trainer.max_steps=50")
    result = run_job(cfg)
    run = MlflowClient(store_uri).get_run(result.run_id)
    assert result.status == "FAILED" and run.info.status == "FAILED"
    assert run.data.tags["failure"] == "diverged"
    summary = summaries(run.data.metrics, run.data.params)
    assert summary["summary/diverged"] == 1
    assert summary["summary/diverged_step"] < 49


def test_no_run_is_created_when_the_config_is_bad(store_uri):
    with pytest.raises(ConfigError, match="trainer.max_steps"):
        run_job(compose_job(*TINY, "trainer.max_steps=0"))
    assert train_runs(store_uri) == []


@pytest.mark.slow
@pytest.mark.skipif(not FASHION.exists(),
                    reason="Fashion-MNIST package not installed (apt-get install dataset-fashion-mnist)")
def test_lenet_on_a_real_slice_of_fashion_mnist_reaches_a_sensible_accuracy(store_uri):
    cfg = compose_job("+policy=fix", "policy.k0=0.05", "dataset.train_subset=8000", "dataset.val_size=2000",
                      "trainer.max_steps=250", "trainer.eval_every_steps=50", "trainer.progress=false")
    result = run_job(cfg)
    run = MlflowClient(store_uri).get_run(result.run_id)
    assert run.info.status == "FINISHED"
    # LeNet-5 after ~4 epochs of an 8k-image slice: well above chance (0.1); full-data runs reach ~0.88.
    summary = summaries(run.data.metrics, run.data.params)
    assert summary["summary/best_val_acc"] > 0.75
    assert summary["summary/test_acc"] > 0.72
