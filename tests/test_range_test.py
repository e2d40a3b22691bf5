"""The LR range test: the rule on hand-written curves, Lightning's sweep on a model whose answer is known, each policy
family's use of k0/k1, policy.k_from=range_test end to end (real Trainer, real SQLite store), and bad values."""

from __future__ import annotations

import dataclasses
import math

import pytest
from conftest import TINY, compose_job, run_cli, train_runs
from mlflow.tracking import MlflowClient

from pipeline.config.checks import ConfigError, check, job_config
from pipeline.policies import from_spec
from pipeline.policies.k_values import with_k
from pipeline.range_test.rule import (
    Curve,
    RangeTestError,
    centred,
    from_lightning,
    k_from_curves,
    lightning_raw,
)
from pipeline.training.identity import run_key

LRS = tuple(10.0 ** (-4 + i * 0.5) for i in range(9))  # 1e-4 ... 1
# Tiny range tests: two seeds, a short sweep.
QUICK = ["range_test.seeds=2", "range_test.steps=20", "range_test.min_lr=1e-4", "range_test.max_lr=10"]


# -- the rule on hand-written curves -----------------------------------------------------------------------------


def test_rule_takes_k1_a_fraction_of_the_lr_of_the_lowest_averaged_loss_and_k0_a_fraction_of_k1():
    a = Curve(0, LRS, (2.3, 2.3, 2.2, 2.0, 1.5, 1.0, 0.8, 1.5, 9.0))
    b = Curve(1, LRS, (2.3, 2.3, 2.2, 2.0, 1.5, 0.9, 0.9, 2.0, 9.0))
    result = k_from_curves([a, b], k1_div=10, k0_div=6)
    assert result.lr_at_min == LRS[6] and result.min_loss == pytest.approx(0.85)
    assert result.k1 == pytest.approx(LRS[6] / 10) and result.k0 == pytest.approx(LRS[6] / 60)
    assert result.k1_per_seed == pytest.approx((LRS[6] / 10, LRS[5] / 10))  # the spread: each seed alone
    assert result.warning is None


def test_rule_averages_up_to_the_shortest_curve_and_counts_a_non_finite_loss_as_worst():
    stopped = Curve(0, LRS[:6], (2.0, 1.8, 1.0, 0.7, 5.0, 9.0))                    # blew up and stopped early
    nan_at_4 = Curve(1, LRS, (2.0, 1.8, 1.1, 0.9, math.nan, 0.1, 0.1, 0.1, 0.1))  # NaN there: never the minimum
    result = k_from_curves([stopped, nan_at_4], k1_div=10, k0_div=6)
    assert len(result.lr) == 6 and result.lr_at_min == LRS[3]
    assert math.isinf(result.mean_loss[4])


def test_rule_says_which_setting_to_change_when_the_sweep_misses_the_minimum():
    still_falling = Curve(0, LRS, tuple(2.0 - 0.1 * i for i in range(9)))
    assert "raise range_test.max_lr" in k_from_curves([still_falling], 10, 6, steps=9).warning
    rising = Curve(0, LRS, tuple(1.0 + 0.1 * i for i in range(9)))
    assert "lower range_test.min_lr" in k_from_curves([rising], 10, 6, steps=9).warning


def test_rule_refuses_curves_without_a_finite_loss_naming_min_lr():
    with pytest.raises(RangeTestError, match=r"^range_test.min_lr"):
        k_from_curves([Curve(0, LRS[:3], (math.nan, math.inf, math.nan))], 10, 6)


def test_lightning_record_is_turned_back_into_each_steps_loss_and_smoothed_by_a_centred_window():
    raw = [2.3, 2.2, 2.0, 1.7, 1.5, 1.6, 3.0]
    beta, avg, record = 0.98, 0.0, []
    for step, value in enumerate(raw, start=1):  # Lightning 2.x: the global step already counts this step
        avg = beta * avg + (1 - beta) * value
        record.append(avg / (1 - beta ** (step + 1)))
    assert lightning_raw(record) == pytest.approx(raw)
    curve = from_lightning(0, LRS, record)
    assert curve.raw == pytest.approx(raw) and curve.loss == pytest.approx(centred(raw))
    assert curve.loss[3] == pytest.approx(sum(raw[1:6]) / 5) and curve.loss[0] == pytest.approx(sum(raw[:3]) / 3)
    assert record[0] == pytest.approx(raw[0] * 0.02 / (1 - beta**2))  # Lightning's first value: about half the loss
    assert math.isinf(centred([1.0, math.nan, 1.0, 1.0, 1.0, 1.0])[3])  # a NaN spoils every window it is in


# -- each family's use of k0/k1 ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("option", "expected"),
    [
        ("fix", {"k0": 0.01}),
        ("triangle2", {"k0": 0.01, "k1": 0.06}),
        ("sin", {"k0": 0.01, "k1": 0.06}),
        ("triangle_exp", {"k0": 0.01, "k1": 0.06}),
        ("exp", {"k0": 0.06}),
        ("inv", {"k0": 0.06}),
        ("step", {"k0": 0.06}),
        ("nstep", {"k0": 0.06}),
        ("cos", {"k1": 0.06, "k0": 0.06 * 0.001 / 0.05}),  # the preset's end fraction, 1/50, is kept
        ("poly", {"k1": 0.06, "k0": 0.0}),
        ("wsd", {"peak_lr": 0.06, "end_lr": 0.0}),
        ("linear_decay", {"peak_lr": 0.06, "end_lr": 0.0}),
        ("cosine_warmup", {"peak_lr": 0.06, "end_lr": 0.0}),
        ("one_cycle", {"max_lr": 0.06}),
    ],
)
def test_each_family_takes_the_range_tests_k_values_where_its_shape_needs_them(option, expected):
    job = check(compose_job(*TINY, f"+policy={option}", "policy.k_from=range_test"))
    preset = {k: v for k, v in job.config["policy"].items() if k != "k_from"}
    node = with_k(preset, 0.01, 0.06)
    for key, value in expected.items():
        assert node[key] == pytest.approx(value), key
    assert {k: v for k, v in node.items() if k not in expected} == {k: v for k, v in preset.items()
                                                                     if k not in expected}
    chain = dataclasses.replace(job.policy, base=with_k(job.policy.base, 0.01, 0.06))
    lrs = [chain.for_budget(100)(t) for t in range(100)]
    assert max(lrs) <= 0.06 * (1 + 1e-12) and max(lrs) >= 0.01 * (1 - 1e-12)  # never above k1


def test_a_composite_sets_each_segment_by_its_family_and_a_built_policy_stays_a_policy():
    job = check(compose_job(*TINY, "+policy=composite_sin2_fix"))
    node = with_k(job.config["policy"], 0.002, 0.02)
    assert node["segments"][0]["policy"]["k0"] == 0.002 and node["segments"][0]["policy"]["k1"] == 0.02
    assert node["segments"][1]["policy"]["k0"] == 0.002
    fixed = check(compose_job(*TINY, "optimizer.lr=0.5", "policy.k_from=range_test")).policy.base  # no +policy: FIX
    assert with_k(fixed, 0.002, 0.02) == from_spec({"_target_": "pipeline.policies.Fix", "k0": 0.002})


# -- config ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "key"),
    [
        (["+policy=cos", "policy.k_from=guess"], "policy.k_from must be one of config, range_test"),
        (["range_test.seeds=0"], "range_test.seeds must be an integer in [1, 1000]"),
        (["range_test.min_lr=0.1", "range_test.max_lr=0.01"], "range_test.max_lr must be a learning rate > "),
        (["range_test.min_lr=0"], "range_test.min_lr must be a number in (0, inf]"),
        (["range_test.steps=2"], "range_test.steps must be an integer >= 5"),
        (["range_test.k0_div=1"], "range_test.k0_div must be a number in (1, inf]"),
        (["range_test.early_stop=1"], "range_test.early_stop must be a number in (1, inf]"),
        (["+range_test.stepz=9"], "range_test.stepz is not a setting; did you mean steps?"),
    ],
)
def test_bad_range_test_values_are_one_line_errors_naming_the_key(overrides, key):
    with pytest.raises(ConfigError) as err:
        check(compose_job(*TINY, *overrides))
    assert str(err.value).startswith(key) and "\n" not in str(err.value)


def test_a_job_that_takes_its_k_values_from_config_keeps_the_run_key_it_had_before_the_range_test():
    config = job_config(compose_job(*TINY, "+policy=cos"))
    assert "range_test" not in config and "k_from" not in config["policy"]
    assert "policy" not in job_config(compose_job(*TINY))  # no +policy: no policy node, as before
    with_test = job_config(compose_job(*TINY, "+policy=cos", "policy.k_from=range_test"))
    assert with_test["policy"]["k_from"] == "range_test" and with_test["range_test"]["seeds"] == 3
    assert run_key(with_test) != run_key(config)


# -- Lightning's sweep on a model with a known answer ------------------------------------------------------------


def test_lr_find_on_least_squares_puts_the_lowest_loss_at_the_edge_of_gradient_descents_stability(tmp_path):
    from pipeline.range_test.finder import sweep
    from pipeline.training.assemble import load_data

    job = check(compose_job(
        "task=regression", "model._target_=own.Linear", "~model.hidden", "dataset=custom",
        "dataset._target_=own.LinearData", "optimizer=sgd", "optimizer.weight_decay=0", "trainer.progress=false",
        "range_test.seeds=2", "range_test.steps=60", "range_test.min_lr=1e-3", "range_test.max_lr=10",
        f"trainer.checkpoint_dir={tmp_path}",
    ))
    settings = job.range_test
    curves = sweep(job, load_data(job), settings, say=lambda line: None)
    result = k_from_curves(curves, settings.k1_div, settings.k0_div, settings.steps)
    # MSE of a linear model on x ~ N(0, I): Hessian 2·I, so gradient descent is stable below lr 1 (a batch of 64 has
    # a larger sample Hessian: it turns a little below). The smoothed loss is lowest at that edge, not past it.
    assert 0.3 <= result.lr_at_min <= 1.0, result.lr_at_min
    assert result.k1 == pytest.approx(result.lr_at_min / 2) and result.k0 == pytest.approx(result.k1 / 4)  # defaults
    assert all(len(c.loss) < settings.steps for c in curves)  # every seed blew up past the edge and stopped
    assert result.warning is None


# -- policy.k_from=range_test end to end ---------------------------------------------------------------------------


def _range_tests(uri: str, experiment: str = "lrbench"):
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(experiment)
    return [r for r in client.search_runs([exp.experiment_id]) if r.data.tags.get("kind") == "range_test"]


def _lr(uri: str, run_id: str) -> list[float]:
    return [m.value for m in sorted(MlflowClient(uri).get_metric_history(run_id, "lr"), key=lambda m: m.step)]


@pytest.mark.slow
def test_k_from_range_test_sets_the_jobs_k_values_and_a_second_job_reuses_the_range_test(store_uri):
    from pipeline.training.job import run_job

    first = run_job(compose_job(*TINY, *QUICK, "+policy=triangle2", "policy.k_from=range_test",
                                "trainer.max_steps=10"))
    assert first.status == "FINISHED"
    (test,) = _range_tests(store_uri)
    assert test.info.status == "FINISHED" and test.data.tags["model"] == "lenet5"
    k0, k1 = float(test.data.params["result.k0"]), float(test.data.params["result.k1"])
    assert test.data.params["range_test.seeds"] == "2" and test.data.params["range_test.steps"] == "20"
    assert {a.path for a in MlflowClient(store_uri).list_artifacts(test.info.run_id)} >= {"range_test.png",
                                                                                           "curves.csv"}
    run = MlflowClient(store_uri).get_run(first.run_id)
    assert run.data.tags["k_from"] == "range_test" and run.data.tags["range_test_run"] == test.info.run_id
    assert float(run.data.params["policy.k0"]) == pytest.approx(k0)
    assert float(run.data.params["policy.k1"]) == pytest.approx(k1)
    lr = _lr(store_uri, first.run_id)
    assert lr[0] == pytest.approx(k0) and max(lr) == pytest.approx(k1)  # TRI2 from k0 up to k1 at t = l

    # Another seed and another policy: the same model, data, task and optimizer read the same range test.
    second = run_job(compose_job(*TINY, *QUICK, "+policy=cos", "policy.k_from=range_test", "seed=1",
                                 "trainer.max_steps=10"))
    assert len(_range_tests(store_uri)) == 1
    tags = MlflowClient(store_uri).get_run(second.run_id).data.tags
    assert tags["range_test_run"] == test.info.run_id
    assert _lr(store_uri, second.run_id)[0] == pytest.approx(k1)  # COS starts at k1


@pytest.mark.slow
def test_k_from_range_test_works_with_adam_on_a_users_own_model_and_data(store_uri):
    from pipeline.training.job import run_job

    result = run_job(compose_job(*TINY, *QUICK, "model._target_=own.TinyNet", "dataset=custom",
                                 "dataset._target_=own.Blobs", "optimizer=adam", "+policy=exp",
                                 "policy.k_from=range_test", "trainer.max_steps=10"))
    assert result.status == "FINISHED"
    (test,) = _range_tests(store_uri)
    assert test.data.tags["optimizer"] == "adam" and test.data.tags["model"] == "TinyNet"
    assert _lr(store_uri, result.run_id)[0] == pytest.approx(float(test.data.params["result.k1"]))


@pytest.mark.slow
def test_k_from_range_test_works_with_a_users_own_lightning_module(store_uri):
    from pipeline.training.job import run_job

    result = run_job(compose_job(*TINY, *QUICK, "model._target_=own.OwnModule", "dataset=custom",
                                 "dataset._target_=own.Blobs", "+policy=triangle2", "policy.k_from=range_test",
                                 "trainer.max_steps=10"))
    assert result.status == "FINISHED"
    (test,) = _range_tests(store_uri)
    assert test.data.tags["model"] == "OwnModule"
    k1 = float(test.data.params["result.k1"])
    assert max(_lr(store_uri, result.run_id)) == pytest.approx(k1)


@pytest.mark.slow
def test_the_standalone_range_test_prints_k_values_and_where_it_is_logged_then_reuses_it(tmp_path, store_uri):
    args = ["dataset=synthetic", "trainer.progress=false", "range_test.seeds=1", "range_test.steps=10"]
    proc = run_cli(*args, cwd=tmp_path, module="pipeline.range_test")
    assert proc.returncode == 0, proc.stderr[-3000:]
    (test,) = _range_tests(store_uri)
    assert f"range test run {test.info.run_id} recorded" in proc.stdout
    assert "k0 = " in proc.stdout and "k1 = " in proc.stdout and "range_test.png" in proc.stdout
    again = run_cli(*args, cwd=tmp_path, module="pipeline.range_test")
    assert f"range test run {test.info.run_id} reused" in again.stdout and len(_range_tests(store_uri)) == 1


@pytest.mark.slow
def test_a_bad_k_from_exits_2_naming_the_key_before_any_run_exists(tmp_path, store_uri):
    proc = run_cli("dataset=synthetic", "+policy=cos", "policy.k_from=guess", cwd=tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1].startswith("error: policy.k_from must be one of config, range_test")
    assert train_runs(store_uri) == []


@pytest.mark.slow
def test_parallel_jobs_of_a_sweep_run_one_range_test_and_all_read_it(tmp_path, store_uri):
    proc = run_cli("+policy=triangle2,cos", "policy.k_from=range_test", "seed=0,1", *TINY, *QUICK,
                   "trainer.max_steps=10", "hydra/launcher=pool", "hydra.launcher.n_jobs=2", "multirun", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (test,) = _range_tests(store_uri)  # four jobs, two at a time: the file lock lets one run it, the rest read it
    runs = train_runs(store_uri)
    assert len(runs) == 4 and all(r.info.status == "FINISHED" for r in runs)
    assert {r.data.tags["range_test_run"] for r in runs} == {test.info.run_id}


@pytest.mark.slow
def test_a_range_test_killed_mid_sweep_is_ended_killed_by_the_next_one_never_left_running(tmp_path, store_uri):
    import os
    import signal
    import subprocess
    import sys

    args = ["dataset=synthetic", "trainer.progress=false", "range_test.seeds=3", "range_test.steps=60"]
    first = subprocess.Popen([sys.executable, "-m", "pipeline.range_test", *args], cwd=tmp_path, text=True,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True,
                             env={**os.environ, "PYTHONUNBUFFERED": "1"})
    for line in first.stdout:  # its run exists and seed 0 is done: kill -9 while seed 1 sweeps
        if line.startswith("range test seed 0"):
            break
    os.killpg(first.pid, signal.SIGKILL)
    first.wait()
    (killed,) = _range_tests(store_uri)
    assert killed.info.status == "RUNNING"
    again = run_cli(*args, cwd=tmp_path, module="pipeline.range_test")
    assert again.returncode == 0, again.stderr[-3000:]
    assert f"range test run {killed.info.run_id} was left RUNNING by a process that died: ended KILLED" in again.stdout
    runs = {r.info.run_id: r for r in _range_tests(store_uri)}
    assert len(runs) == 2 and runs[killed.info.run_id].info.status == "KILLED"
    assert runs[killed.info.run_id].data.tags["failure"] == "killed"
    assert [r.info.status for i, r in runs.items() if i != killed.info.run_id] == ["FINISHED"]
