"""What a run records is the same before and after the training stage was reshaped (issue 17): the same params,
tags and metric keys, the same artifacts and the same per-step LR and momentum, for the same command.
``data/run_keys_before_reshape.json`` was recorded by the code before the reshape (commit 48eb501)."""

import json
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from conftest import compose_job, train_runs
from pipeline.training.job import run_job

BEFORE = json.loads((Path(__file__).parent / "data" / "run_keys_before_reshape.json").read_text())
COMMAND = ["+policy=triangle2", "+warmup=linear", "warmup.warmup_steps=5", "momentum=demon", "dataset=synthetic",
           "trainer.max_steps=30", "trainer.eval_every_steps=10", "trainer.progress=false", "schedule.k_scale=2"]
# Added on purpose by issue 17: the run's exact policy as a loadable spec (the report re-creates it from there).
ADDED_PARAMS = {"policy_config"}
# Moved on purpose by issue 21: the end-of-run figures are params summary.<name> and a table, no longer single-point
# metrics summary/<name>; a figure of the LR and the objective over steps is added.
ADDED_ARTIFACTS = {"summary.csv", "summary.json", "lr_objective.png"}


@pytest.mark.slow
def test_a_run_records_the_same_keys_tags_and_curves_as_before_the_reshape(store_uri):
    result = run_job(compose_job(*COMMAND))
    assert result.status == "FINISHED"
    (run,) = train_runs(store_uri)
    client = MlflowClient(store_uri)
    summaries = {k for k in run.data.params if k.startswith("summary.")}
    assert sorted(set(run.data.params) - ADDED_PARAMS - summaries) == BEFORE["params"]
    assert ADDED_PARAMS <= set(run.data.params)
    assert sorted(summaries) == sorted("summary." + k[len("summary/"):] for k in BEFORE["metrics"]
                                       if k.startswith("summary/"))
    tags = {k: v for k, v in run.data.tags.items() if not k.startswith("mlflow.") and k != "git_commit"}
    # run_key hashes the resolved config, whose _target_ values follow the modules the reshape moved
    # (dataset: pipeline.training.data.synthetic.Synthetic); every other tag keeps its value.
    assert {**tags, "run_key": None} == {**BEFORE["tags"], "run_key": None} and len(tags["run_key"]) == 16
    assert sorted(run.data.metrics) == [k for k in BEFORE["metrics"] if not k.startswith("summary/")]
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert sorted(artifacts - ADDED_ARTIFACTS) == BEFORE["artifacts"] and ADDED_ARTIFACTS <= artifacts
    for key in ("lr", "momentum"):
        history = sorted(client.get_metric_history(run.info.run_id, key), key=lambda m: m.step)
        assert [m.step for m in history] == list(range(30))
        assert [m.value for m in history] == pytest.approx(BEFORE[key], rel=1e-12, abs=0)
