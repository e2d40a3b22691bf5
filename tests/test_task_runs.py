"""End to end, real Trainer and real MLflow store: regression and language-model runs are judged on their objective,
a model and data of the user's own (and a LightningModule of its own) train and are recorded under their own names,
the two task presets sweep four policies to the end, and the worked example in examples/ runs with its report."""

import os
import shutil
from pathlib import Path

import pytest
from conftest import ROOT, compose_job, run_cli, train_runs
from mlflow.tracking import MlflowClient

from pipeline.tracking.runs import summaries
from pipeline.training.job import run_job

FORTUNES = Path("/usr/share/games/fortunes/fortunes")
needs_fortunes = pytest.mark.skipif(not FORTUNES.is_file(), reason="Debian's fortunes not installed (make data)")
QUICK = ["trainer.progress=false", "trainer.checkpoint_every_steps=0", "trainer.num_threads=1"]
OWN = str(Path(__file__).parent)  # tests/own.py: the user's own classes


def _figures(run) -> dict:
    """A run's metrics and its end-of-run summary (``summary.*`` params, read as ``summary/*``)."""
    return {**run.data.metrics, **summaries(run.data.metrics, run.data.params)}


def _tags(run) -> dict:
    return {k: v for k, v in run.data.tags.items() if not k.startswith("mlflow.")}


def _one_run(store_uri, *overrides: str):
    """Train one job in this process; the run it recorded."""
    assert run_job(compose_job(*overrides, *QUICK)).status == "FINISHED"
    (run,) = train_runs(store_uri)
    return run


@pytest.mark.slow
def test_a_regression_run_is_judged_on_rmse_and_tagged_with_its_objective(store_uri):
    run = _one_run(store_uri, "task=regression", "+policy=cos", "trainer.max_steps=40",
                   "trainer.eval_every_steps=10", "trainer.targets=[1.5,0.9]")
    tags, metrics = _tags(run), _figures(run)
    assert (tags["task"], tags["objective_metric"], tags["objective_mode"]) == ("regression", "rmse", "min")
    assert (tags["model"], tags["dataset"]) == ("feedforward", "diabetes")
    assert metrics["summary/reached_rmse_1.5"] == 1.0 and metrics["summary/steps_to_rmse_1.5"] == 10
    assert metrics["summary/best_val_rmse"] <= metrics["summary/final_val_rmse"]
    for key in ("val/rmse", "val/mae", "val/r2", "summary/test_rmse", "summary/test_r2", "summary/val_rmse_last_std"):
        assert key in metrics
    assert not any("acc" in key for key in metrics)
    assert run.data.params["task.objective.metric"] == "rmse"


@pytest.mark.slow
@needs_fortunes
def test_a_language_model_run_on_integer_tokens_is_judged_on_perplexity(store_uri):
    run = _one_run(store_uri, "task=language_model", "dataset.files=[fortunes]", "dataset.train_subset=256",
                   "dataset.val_size=32", "dataset.test_subset=32", "model.hidden_size=32",
                   "trainer.max_steps=20", "trainer.eval_every_steps=10", "trainer.targets=[300,200]")
    metrics = _figures(run)
    assert _tags(run)["objective_metric"] == "perplexity" and _tags(run)["model"] == "char_gru"
    assert metrics["summary/reached_perplexity_300"] == 1.0
    assert metrics["summary/best_val_perplexity"] < 256  # better than guessing among 256 byte values
    assert {"val/loss", "val/acc", "summary/test_perplexity"} <= set(metrics)


@pytest.mark.slow
def test_a_users_own_model_and_dataset_train_under_their_own_names(store_uri, monkeypatch):
    monkeypatch.syspath_prepend(OWN)
    run = _one_run(store_uri, "model._target_=own.TinyNet", "dataset=custom", "dataset._target_=own.Blobs",
                   "+policy=triangle2", "trainer.max_steps=30", "trainer.eval_every_steps=10",
                   "trainer.targets=[0.5]")
    assert (_tags(run)["model"], _tags(run)["dataset"]) == ("TinyNet", "Blobs")
    assert run.info.run_name == "triangle2-TinyNet-Blobs-s0"
    assert _figures(run)["summary/best_val_acc"] > 0.5


@pytest.mark.slow
def test_the_command_line_tags_a_users_own_model_and_dataset_with_their_class_names(tmp_path, store_uri):
    # Through Hydra's app, whose task function gets the config without its hydra node (compose_job keeps it).
    env = {"PYTHONPATH": os.pathsep.join(p for p in (OWN, os.environ.get("PYTHONPATH")) if p)}
    proc = run_cli("model._target_=own.TinyNet", "dataset=custom", "dataset._target_=own.Blobs", "trainer.max_steps=4",
                   "trainer.eval_every_steps=4", "trainer.targets=[0.5]", *QUICK, cwd=tmp_path, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    (run,) = train_runs(store_uri)
    assert (_tags(run)["model"], _tags(run)["dataset"]) == ("TinyNet", "Blobs")  # never the options' lenet5/custom
    assert (_tags(run)["model_option"], _tags(run)["dataset_option"]) == ("lenet5", "custom")  # for "Run it"


@pytest.mark.slow
def test_an_embedding_model_trains_on_integer_tokens_of_a_users_dataset(store_uri, monkeypatch):
    monkeypatch.syspath_prepend(OWN)
    # Only model._target_ is overridden: char_gru's own settings are removed, since Embedder takes none of them.
    run = _one_run(store_uri, "task=language_model", "model._target_=own.Embedder", "~model.embed_dim",
                   "~model.hidden_size", "~model.num_layers", "dataset=custom",
                   "dataset._target_=own.Tokens", "trainer.max_steps=20", "trainer.eval_every_steps=10",
                   "trainer.targets=[5]", "optimizer.lr=0.5")
    assert _figures(run)["summary/best_val_perplexity"] < 11  # below a uniform guess over the 11 tokens


@pytest.mark.slow
def test_a_users_lightning_module_gets_the_policy_the_metrics_and_the_run(store_uri, monkeypatch):
    from pipeline.config.checks import check

    monkeypatch.syspath_prepend(OWN)
    command = ["model._target_=own.OwnModule", "dataset=custom", "dataset._target_=own.Blobs", "+policy=triangle2",
               "trainer.max_steps=24", "trainer.eval_every_steps=8", "trainer.targets=[0.5]"]
    run = _one_run(store_uri, *command)
    client = MlflowClient(store_uri)
    lrs = [m.value for m in sorted(client.get_metric_history(run.info.run_id, "lr"), key=lambda m: m.step)]
    policy = check(compose_job(*command)).policy.for_budget(24)  # the shipped triangle2, its cycle a budget fraction
    assert lrs == pytest.approx([policy(t) for t in range(24)])
    steps = sorted(m.step for m in client.get_metric_history(run.info.run_id, "val/acc"))
    assert steps == [8, 16, 24] and "summary/best_val_acc" in _figures(run) and "summary/test_acc" in _figures(run)
    assert _tags(run)["model"] == "OwnModule"


@pytest.mark.slow
def test_a_users_lightning_module_that_never_logs_the_objective_exits_2_before_any_run(tmp_path, store_uri):
    env = {"PYTHONPATH": os.pathsep.join(p for p in (OWN, os.environ.get("PYTHONPATH")) if p)}
    proc = run_cli("model._target_=own.UnprefixedModule", "dataset=custom", "dataset._target_=own.Blobs",
                   "trainer.max_steps=8", *QUICK, cwd=tmp_path, env=env)
    assert proc.returncode == 2, proc.stderr[-2000:]
    error = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert error == ["error: task.objective.metric: UnprefixedModule never logs val/acc in validation (it logs "
                     "val_acc, val_loss); log it with self.log('val/acc', ...), or set task.objective.metric to a "
                     "metric it logs as val/<metric>"]
    assert train_runs(store_uri) == []


@pytest.mark.slow
def test_a_model_that_does_not_fit_the_task_exits_2_with_one_line_and_creates_no_run(tmp_path, store_uri):
    proc = run_cli("task=regression", "dataset=synthetic", cwd=tmp_path)
    assert proc.returncode == 2
    error = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert error and error[0].startswith("error: dataset: task=regression needs float targets")
    assert train_runs(store_uri) == []


def _sweep(tmp_path, store_uri, experiment: str, *overrides: str):
    proc = run_cli(f"+experiment={experiment}", "+policy=fix,step,triangle2,cos", "hydra.launcher.n_jobs=2",
                   *overrides, "multirun", cwd=tmp_path, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


@pytest.mark.slow
def test_the_regression_preset_sweeps_four_policies_to_the_end(tmp_path, store_uri):
    _sweep(tmp_path, store_uri, "regression_diabetes", "seed=0", "trainer.max_steps=60")
    runs = train_runs(store_uri, "lrbench-regression")
    assert sorted(r.data.tags["policy"] for r in runs) == ["cos", "fix", "step", "triangle2"]
    for run in runs:
        assert run.info.status == "FINISHED" and run.data.tags["objective_metric"] == "rmse"
        assert {"summary/best_val_rmse", "summary/final_val_rmse", "summary/reached_rmse_0.7"} <= set(_figures(run))


@pytest.mark.slow
@needs_fortunes
def test_the_language_model_preset_sweeps_four_policies_to_the_end(tmp_path, store_uri):
    _sweep(tmp_path, store_uri, "lm_fortunes", "trainer.max_steps=10", "trainer.eval_every_steps=5",
           "dataset.val_size=32", "dataset.test_subset=32", "model.hidden_size=32")
    runs = train_runs(store_uri, "lrbench-lm")
    assert sorted(r.data.tags["policy"] for r in runs) == ["cos", "fix", "step", "triangle2"]
    for run in runs:
        assert run.info.status == "FINISHED" and run.data.tags["objective_mode"] == "min"
        assert {"summary/best_val_perplexity", "summary/reached_perplexity_9"} <= set(_figures(run))


@pytest.mark.slow
def test_the_worked_example_sweeps_its_own_model_and_data_and_writes_the_report(tmp_path, store_uri):
    import subprocess
    import sys

    examples = tmp_path / "examples"
    shutil.copytree(ROOT / "examples", examples)
    env = {**os.environ, "PY": sys.executable, "OUT": str(tmp_path / "report"), "PYTHONUNBUFFERED": "1"}
    proc = subprocess.run(["bash", str(examples / "run.sh"), "hydra.launcher.n_jobs=2"],  # as README shows it
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    runs = train_runs(store_uri, "own-digits")
    assert len(runs) == 8 and all(r.info.status == "FINISHED" for r in runs)
    assert {(r.data.tags["model"], r.data.tags["dataset"]) for r in runs} == {("tiny_cnn", "digits")}
    assert (tmp_path / "report" / "report.html").is_file()
    # The report's "Run it" command finds the example's own options (model/tiny_cnn, dataset/digits) again.
    import json
    import shlex

    (group,) = json.loads((tmp_path / "report" / "report.json").read_text())["groups"]
    command = shlex.split(group["composite_command"])
    assert command[:3] == ["python", "-m", "pipeline"] and command[-1] == "--multirun"
    args = [a for a in command[3:-1] if not a.startswith("seed=")]  # one job's config, printed (--cfg), not trained
    shown = subprocess.run([sys.executable, "-m", "pipeline", *args, "--cfg", "job"], cwd=examples, env=env,
                           capture_output=True, text=True, timeout=300)
    assert shown.returncode == 0 and "_target_: own_model.TinyCNN" in shown.stdout, shown.stderr[-2000:]
