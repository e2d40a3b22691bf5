"""DDP on CPU (gloo, 2 processes): one MLflow run per job from rank 0, and sweeps that do not re-run in child ranks."""


import pytest
from conftest import run_cli, train_runs
from mlflow.tracking import MlflowClient

DDP = ["trainer.devices=2", "trainer.strategy=ddp", "trainer.accelerator=cpu", "trainer.num_threads=1"]
SMALL = ["dataset=synthetic", "trainer.max_steps=20", "trainer.eval_every_steps=10", "trainer.progress=false"]


def _series(client, run, key):
    return sorted((m.step, m.value) for m in client.get_metric_history(run.info.run_id, key))


@pytest.mark.slow
def test_ddp_run_records_once_and_matches_the_single_process_run_with_the_same_global_batch(tmp_path, store_uri):
    # 2 ranks x 32 samples see exactly the 64 samples a single process sees per step (each rank takes every other
    # index of the same epoch order), and DDP averages their gradients: the same optimisation up to float rounding.
    single = run_cli("+policy=triangle2", *SMALL, "dataset.batch_size=64", "trainer.num_threads=1",
                     "tracking.experiment=single", cwd=tmp_path)
    assert single.returncode == 0, single.stderr[-3000:]
    ddp = run_cli("+policy=triangle2", *SMALL, *DDP, "dataset.batch_size=32", "tracking.experiment=ddp", cwd=tmp_path)
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    runs = train_runs(store_uri, "ddp")
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"  # rank 1 recorded nothing
    client = MlflowClient(store_uri)
    reference = train_runs(store_uri, "single")[0]
    assert _series(client, runs[0], "lr") == _series(client, reference, "lr")  # t counts global optimizer steps
    for key in ("val/loss", "val/acc"):
        got, want = _series(client, runs[0], key), _series(client, reference, key)
        assert [s for s, _ in got] == [s for s, _ in want] == [10, 20]
        assert [v for _, v in got] == pytest.approx([v for _, v in want], rel=2e-3, abs=2e-3), key
    # Validation sums are reduced over both ranks: accuracy is a count over the whole 256-sample validation set.
    acc = runs[0].data.metrics["val/acc"] * 256
    assert acc == pytest.approx(round(acc), abs=1e-6)


@pytest.mark.slow
def test_ddp_inside_a_multirun_runs_each_job_once_in_one_sweep_folder(tmp_path, store_uri):
    proc = run_cli("+policy=triangle2,sin2", *SMALL, *DDP, "multirun", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    runs = train_runs(store_uri)
    assert sorted(r.data.tags["policy"] for r in runs) == ["sin2", "triangle2"]
    assert all(r.info.status == "FINISHED" for r in runs)
    assert len({r.data.tags["mlflow.parentRunId"] for r in runs}) == 1
    sweep_dirs = [p for p in (tmp_path / "multirun").glob("*/*") if p.is_dir()]
    assert len(sweep_dirs) == 1, sweep_dirs  # child ranks did not start a second sweep
    assert sorted(p.name for p in sweep_dirs[0].iterdir() if p.is_dir()) == ["0", "1"]


@pytest.mark.slow
def test_ddp_job_with_range_test_k_values_runs_the_test_once_in_rank_0_and_rank_1_reads_it(tmp_path, store_uri):
    proc = run_cli("+policy=triangle2", "policy.k_from=range_test", "range_test.seeds=1", "range_test.steps=10",
                   *SMALL, *DDP, "dataset.batch_size=32", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    client = MlflowClient(store_uri)
    experiment = client.get_experiment_by_name("lrbench").experiment_id
    tests = [r for r in client.search_runs([experiment]) if r.data.tags.get("kind") == "range_test"]
    assert len(tests) == 1 and tests[0].info.status == "FINISHED"
    test_id = tests[0].info.run_id
    assert f"range test {test_id} (run now)" in proc.stdout  # rank 0, before the ranks start
    assert f"range test {test_id} (reused)" in proc.stdout   # rank 1 read it from the store
    (run,) = train_runs(store_uri)
    assert run.info.status == "FINISHED" and run.data.tags["range_test_run"] == test_id
    lr = [v for _, v in _series(client, run, "lr")]
    assert lr[0] == pytest.approx(float(tests[0].data.params["result.k0"]))
