"""The report stage end to end: runs in a real SQLite MLflow store -> ``python -m pipeline.report`` -> files and a
``kind=report`` run. The store is written with MlflowClient following the training stage's data contract (tags,
flattened params, per-step and per-eval metrics, summaries); the slow test at the end trains real runs instead."""

from __future__ import annotations

import json
import math
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from hydra.utils import instantiate
from mlflow.entities import Metric, Param, RunTag
from mlflow.tracking import MlflowClient
from omegaconf import OmegaConf

from pipeline.analysis.scoring import CLASSIFICATION
from pipeline.policies import from_spec, to_spec
from pipeline.tracking import histories as history_store
from pipeline.tracking import runs as tracked
from pipeline.tracking import store
from pipeline.tracking.recorder import flatten

ROOT = Path(__file__).resolve().parents[1]
HOSTILE = "<script>alert(1)</script>"
STEPS = 40
EVAL_EVERY = 5
TARGETS = [0.8, 0.85, 0.88]
POLICIES = {
    "triangle2": {"_target_": "pipeline.policies.Triangle2", "k0": 0.01, "k1": 0.06, "l": 20},
    "sin2": {"_target_": "pipeline.policies.Sin2", "k0": 0.01, "k1": 0.06, "l": 20},
    "inv": {"_target_": "pipeline.policies.Inv", "k0": 0.01, "gamma": 1.0e-4, "p": 0.75},
    "fix": {"_target_": "pipeline.policies.Fix", "k0": 0.01},
}


def write_run(client, experiment_id, policy, seed, accs, *, diverged_at=None, run_name=None, extra_tags=None,
              parent=None, targets=TARGETS, k_scale=None, objective=CLASSIFICATION, steps=STEPS, summary_as="metrics"):
    """One training run exactly as the training stage records it; ``accs`` are the values of the objective (val
    accuracies unless ``objective`` says otherwise) at steps 5, 10, ... (fewer when the run diverged). Summaries
    as ``metrics`` (runs recorded before summary params) or ``params`` (``summary.<name>``, as runs record now)."""
    m = objective.metric
    node = dict(POLICIES[policy])
    if k_scale is not None:
        node.update({k: v * k_scale for k, v in node.items() if k in ("k0", "k1")})
    lr_policy = instantiate(node)
    config = {"seed": seed, "study": None, "run_name": None, "policy": node,
              "model": {"_target_": "pipeline.training.models.LeNet5", "_partial_": True},
              "dataset": {"_target_": "pipeline.training.data.synthetic.Synthetic", "batch_size": 64},
              "optimizer": {"_target_": "torch.optim.SGD", "_partial_": True, "lr": 0.01, "momentum": 0.9},
              "trainer": {"max_steps": steps, "max_epochs": 1, "eval_every_steps": EVAL_EVERY, "targets": targets},
              "tracking": {"uri": None, "experiment": "lrbench", "flush_every": 500}}
    tags = {"kind": "train", "policy": policy, "policy_spec": lr_policy.lrbench_string(), "model": "lenet5",
            "dataset": "synthetic", "optimizer": "momentum", "seed": str(seed), "git_commit": "abc"}
    if parent:
        tags["mlflow.parentRunId"] = parent
    if k_scale is not None:
        tags["k_scale"] = str(k_scale)
    if objective != CLASSIFICATION:
        tags.update(objective_metric=m, objective_mode=objective.mode)
    tags.update(extra_tags or {})
    run = client.create_run(experiment_id, run_name=run_name or f"{policy}-lenet5-synthetic-s{seed}", tags=tags)
    run_id = run.info.run_id
    recorded = {**flatten(config), "policy_config": json.dumps(to_spec(lr_policy), sort_keys=True)}
    params = [Param(k, v) for k, v in recorded.items()]
    last_step = diverged_at if diverged_at is not None else steps
    metrics = []
    for t in range(last_step):
        metrics += [Metric("lr", lr_policy(t), 0, t), Metric("momentum", 0.9, 0, t),
                    Metric("train/loss", 2.0 / (1 + t), 0, t)]
    eval_steps = [EVAL_EVERY * (i + 1) for i in range(len(accs))]
    for step, acc in zip(eval_steps, accs):
        metrics += [Metric("val/acc", acc, 0, step), Metric("val/loss", 1 - acc, 0, step)] if m == "acc" else \
            [Metric(objective.key, acc, 0, step)]
    summary = {"summary/steps": last_step, "summary/train_s": 0.05 * last_step,
               "summary/diverged": 1.0 if diverged_at is not None else 0.0, "summary/final_train_loss": 0.1}
    if diverged_at is not None:
        summary["summary/diverged_step"] = diverged_at
    if accs:
        last = accs[-5:]
        mean = sum(last) / len(last)
        best = max(accs) if objective.maximise else min(accs)
        summary.update({f"summary/best_val_{m}": best, f"summary/best_val_{m}_step": eval_steps[accs.index(best)],
                        f"summary/final_val_{m}": accs[-1],
                        f"summary/val_{m}_last_std": math.sqrt(sum((a - mean) ** 2 for a in last) / len(last))})
    for target in targets:
        hit = next((s for s, a in zip(eval_steps, accs) if objective.reaches(a, target)), None)
        summary[objective.summary("reached", target)] = 1.0 if hit is not None else 0.0
        if hit is not None:
            summary[objective.summary("steps_to", target)] = hit
            summary[objective.summary("seconds_to", target)] = 0.05 * hit
    if diverged_at is None:
        summary.update({"summary/test_acc": accs[-1] - 0.01, "summary/test_acc_top5": 0.99,
                        "summary/test_loss": 0.3, "summary/test_conf_mean": 0.9, "summary/test_conf_std": 0.1,
                        "summary/test_conf_class_std": 0.05, "summary/loss_gap": -0.2})
    if summary_as == "metrics":
        metrics += [Metric(k, float(v), 0, last_step) for k, v in summary.items()]
    else:
        params += [Param("summary." + k.split("/", 1)[1], repr(float(v))) for k, v in summary.items()]
    for i in range(0, len(params), 100):
        client.log_batch(run_id, params=params[i:i + 100])
    client.log_batch(run_id, tags=[RunTag("mlflow.note.content", "")])
    for i in range(0, len(metrics), 1000):
        client.log_batch(run_id, metrics=metrics[i:i + 1000])
    if diverged_at is not None:
        client.set_tag(run_id, "failure", "diverged")
        client.set_tag(run_id, "error", f"training loss nan at step {diverged_at} is non-finite")
    client.set_terminated(run_id, "FAILED" if diverged_at is not None else "FINISHED")
    return run_id


# Validation accuracies at steps 5, 10, ..., 40.
FAST = [0.5, 0.7, 0.86, 0.9, 0.905, 0.91, 0.905, 0.91]        # reaches 0.85 at step 15, 0.9 at 20
SLOWER = [0.4, 0.6, 0.75, 0.86, 0.87, 0.87, 0.875, 0.87]      # 0.85 at step 20
LATER = [0.4, 0.6, 0.75, 0.8, 0.86, 0.87, 0.875, 0.87]        # 0.85 at step 25
SLOWEST = [0.3, 0.5, 0.6, 0.7, 0.8, 0.84, 0.85, 0.855]        # 0.85 at step 35, still climbing (unstable)
MISS = [0.3, 0.5, 0.6, 0.7, 0.75, 0.78, 0.8, 0.8]             # never


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """A store with a sweep: triangle2 fastest, sin2 second, inv (the baseline) slowest and missing in seed 1,
    fix diverged in seed 1; one run with a hostile name and error; plus report and sweep runs to be skipped."""
    root = tmp_path_factory.mktemp("lab")
    uri = f"sqlite:///{root}/mlflow.db"
    experiment_id = store.prepare(uri, "lrbench")
    client = MlflowClient(uri)
    parent = client.create_run(experiment_id, run_name="sweep", tags={"kind": "sweep"}).info.run_id
    ids = {}
    for seed in (0, 1):
        ids[("triangle2", seed)] = write_run(client, experiment_id, "triangle2", seed, FAST, parent=parent)
        ids[("sin2", seed)] = write_run(client, experiment_id, "sin2", seed, LATER if seed else SLOWER,
                                        parent=parent)
        ids[("inv", seed)] = write_run(client, experiment_id, "inv", seed, MISS if seed else SLOWEST, parent=parent)
    ids[("fix", 0)] = write_run(client, experiment_id, "fix", 0, SLOWER, parent=parent, run_name=HOSTILE)
    ids[("fix", 1)] = write_run(client, experiment_id, "fix", 1, [0.5, 0.6, 0.7], diverged_at=17, parent=parent,
                                extra_tags={"study": HOSTILE})
    client.set_tag(ids[("fix", 1)], "error", f"loss {HOSTILE}")
    client.create_run(experiment_id, run_name="old-report", tags={"kind": "report"})
    return {"root": root, "uri": uri, "ids": ids, "parent": parent, "client": client}


def run_report(*overrides, cwd=ROOT):
    return subprocess.run([sys.executable, "-m", "pipeline.report", *overrides], cwd=cwd, capture_output=True,
                          text=True, timeout=240)


def test_load_runs_keeps_only_training_runs_with_flat_columns(lab):
    runs = tracked.load_runs(lab["uri"], ["lrbench"])
    assert len(runs) == 8 and set(runs["policy"]) == {"triangle2", "sin2", "inv", "fix"}
    assert runs["momentum"].eq("none").all() and runs["k_scale"].eq(1.0).all()
    assert str(runs["seed"].dtype) == "Int64" and runs["summary/best_val_acc"].dtype == float
    assert "param.policy.k0" in runs and "param.trainer.targets" in runs
    recorded = [from_spec(json.loads(spec)) for spec in runs["policy_config"]]
    assert recorded == [instantiate(POLICIES[name]) for name in runs["policy"]]
    assert runs["parent_run_id"].eq(lab["parent"]).all()
    failed = runs[runs["status"] == "FAILED"]
    assert failed["failure"].tolist() == ["diverged"] and math.isnan(failed["summary/test_acc"].iloc[0])


def test_load_runs_of_a_sweep_parent_reads_only_its_children(lab):
    client = lab["client"]
    other = client.create_run(client.get_experiment_by_name("lrbench").experiment_id, tags={"kind": "train"})
    try:
        runs = tracked.load_runs(lab["uri"], parent_run_id=lab["parent"])
        assert len(runs) == 8 and other.info.run_id not in set(runs["run_id"])
    finally:
        client.delete_run(other.info.run_id)


def test_unknown_experiment_error_lists_the_existing_ones(lab):
    with pytest.raises(tracked.RunsError, match=r"experiments: no experiment named 'nope'.*lrbench"):
        tracked.load_runs(lab["uri"], ["nope"])


def test_histories_come_back_whole_and_cached_for_finished_runs(lab, tmp_path):
    ids = [lab["ids"][("triangle2", 0)], lab["ids"][("fix", 1)]]
    cache = history_store.HistoryCache(tmp_path)
    first = history_store.load_histories(lab["uri"], ids, ["lr", "val/acc"], 1000, cache, terminal=ids)
    lr = first[(first["key"] == "lr") & (first["run_id"] == ids[0])]
    assert lr["step"].tolist() == list(range(STEPS))
    assert len(first[(first["key"] == "lr") & (first["run_id"] == ids[1])]) == 17  # diverged at step 17
    again = history_store.load_histories("sqlite:////nonexistent/never.db", ids, ["lr", "val/acc"], 1000,
                                   history_store.HistoryCache(tmp_path), terminal=ids)  # served from the disk cache
    assert again.equals(first)


@pytest.fixture(scope="module")
def report(lab, tmp_path_factory):
    """One report over the lab store, logged to MLflow, with a history cache: (its folder, the finished process)."""
    out = tmp_path_factory.mktemp("report") / "rep"
    done = run_report(f"tracking.uri={lab['uri']}", f"out_dir={out}", f"cache_dir={out.parent / 'cache'}")
    assert done.returncode == 0, done.stderr
    return out, done


def test_report_recommends_the_fastest_policy_and_writes_html_md_json(report):
    out, done = report
    assert "recommend triangle2" in done.stdout
    (group,) = json.loads((out / "report.json").read_text())["groups"]
    rec = group["recommendation"]
    assert rec["policy"] == "triangle2" and rec["steps_mean"] == 15
    assert [r["name"] for r in group["ranking"]][:2] == ["triangle2", "sin2"]
    verdicts = {r["name"]: (r["good"], r["reasons"]) for r in group["ranking"]}
    assert verdicts["fix"][0] is False and "diverged" in verdicts["fix"][1][0]
    assert verdicts["inv"][0] is False and "missed" in verdicts["inv"][1][0]
    assert rec["speedup"]["lower_bound"] is True  # inv missed in seed 1: its budget stands in
    assert rec["speedup"]["steps"] == pytest.approx(((35 + 40) / 2) / 15)
    assert (out / "report.md").read_text().count("| ") > 10 and (out / "g1_evidence.png").stat().st_size > 10_000
    assert not (ROOT / "report.log").exists() and not (ROOT / ".hydra").exists()


def test_report_proposes_a_composite_that_the_training_entry_point_accepts(lab, report):
    out, done = report
    composite = (out / "policy" / "proposed_composite.yaml").read_text()
    assert "pipeline.policies.Composite" in composite and "until_steps: 15" in composite
    command = next(line for line in done.stdout.splitlines() if "composite:" in line).split("composite: ")[1]
    assert command.startswith(f"python -m pipeline --config-dir {out} +policy=proposed_composite")
    args = shlex.split(command)[1:]
    # The same seeds, budget, settings and store as the recommended policy's runs, as one sweep.
    assert {"seed=0,1", "trainer.max_steps=40", "trainer.eval_every_steps=5", "dataset=synthetic",
            "tracking.experiment=lrbench", f"tracking.uri={lab['uri']}"} <= set(args) and args[-1] == "--multirun"
    # The printed command composes (Hydra's --cfg job prints the job config instead of training; one seed of it).
    one_job = [a for a in args if a != "--multirun" and not a.startswith("seed=")]
    shown = subprocess.run([sys.executable, *one_job, "--cfg", "job"], cwd=ROOT, capture_output=True,
                           text=True, timeout=120)
    assert shown.returncode == 0, shown.stderr
    assert "_target_: pipeline.policies.Composite" in shown.stdout and "until_steps: 15" in shown.stdout
    policy = instantiate(OmegaConf.load(out / "policy" / "proposed_composite.yaml"))
    assert [policy(t) for t in (0, 7, 14)] == [instantiate(POLICIES["triangle2"])(t) for t in (0, 7, 14)]
    assert policy(15) == policy(39) == pytest.approx(0.1 * instantiate(POLICIES["triangle2"])(15), rel=1e-2)


def test_report_run_is_logged_with_its_files_and_skipped_by_readers(lab, report):
    client = lab["client"]
    experiment_id = client.get_experiment_by_name("lrbench").experiment_id
    reports = client.search_runs([experiment_id], "tags.kind = 'report'", order_by=["attributes.start_time DESC"])
    artifacts = {a.path for a in client.list_artifacts(reports[0].info.run_id)}
    assert {"report.html", "report.md", "report.json", "policy", "g1_evidence.png"} <= artifacts
    assert reports[0].data.tags["recommendation.lenet5_synthetic_momentum"] == "triangle2"
    assert len(tracked.load_runs(lab["uri"], ["lrbench"])) == 8


def test_hostile_run_names_and_tags_are_escaped_in_the_html(report):
    out, _ = report
    page = (out / "report.html").read_text()
    assert HOSTILE not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "<script" not in page.lower() and "http" not in page.split("<body>")[0]  # no external CSS/JS
    assert HOSTILE not in (out / "report.md").read_text()


def test_a_target_the_runs_did_not_record_is_read_from_their_curves(lab, report, tmp_path):
    out, _ = report
    assert (out.parent / "cache" / history_store.HistoryCache.FILE).exists()  # the first report cached its curves
    done = run_report(f"tracking.uri={lab['uri']}", f"out_dir={tmp_path / 't'}", "target=0.9",
                      f"cache_dir={out.parent / 'cache'}", "log_to_mlflow=false")
    assert done.returncode == 0, done.stderr
    ranking = json.loads((tmp_path / "t" / "report.json").read_text())["groups"][0]["ranking"]
    tri = next(r for r in ranking if r["name"] == "triangle2")
    assert tri["steps_mean"] == 20 and tri["target_source"] == "history"


def test_the_report_config_composes_and_its_defaults_pass_the_checks():
    from hydra import compose, initialize_config_dir

    from pipeline.analysis.options import check_options

    with initialize_config_dir(str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("report", return_hydra_config=False)
    options = check_options(OmegaConf.to_container(cfg, resolve=True))
    assert options.target == 0.85 and options.baseline == "inv" and options.rank_by == "steps"
    assert options.experiments == ("lrbench",) and options.out_dir.startswith("reports/")
    # max_fluctuation is in the objective's units: a regression's RMSE or a perplexity may fluctuate by more than 1
    assert check_options({**OmegaConf.to_container(cfg, resolve=True), "max_fluctuation": 2.5}).max_fluctuation == 2.5


@pytest.mark.parametrize("key, value", [("target", "high"), ("target", math.nan), ("budget_s", -1),
                                        ("scope", "newest"), ("verify", "yes"), ("top_n", 0), ("max_points", 1.5),
                                        ("tail_factor", 2), ("confidence", 1.0), ("baseline", ""),
                                        ("experiments", []), ("parent_run_id", "x'; drop"), ("log_to_mlflow", "yes"),
                                        ("max_fluctuation", -0.1), ("max_fluctuation", math.inf)])
def test_each_bad_report_setting_is_named_in_its_error(key, value):
    from hydra import compose, initialize_config_dir

    from pipeline.analysis.options import ReportConfigError, check_options

    with initialize_config_dir(str(ROOT / "conf"), version_base="1.3"):
        cfg = OmegaConf.to_container(compose("report"), resolve=True)
    with pytest.raises(ReportConfigError, match=rf"^{key} "):
        check_options({**cfg, key: value})


@pytest.mark.parametrize("override, key", [("target=inf", "target"), ("rank_by=fastest", "rank_by"),
                                           ("budget_steps=-3", "budget_steps"), ("alpha=1", "alpha")])
def test_bad_config_value_exits_2_naming_the_key(tmp_path, override, key):
    done = run_report(f"tracking.uri=sqlite:///{tmp_path}/none.db", override, f"out_dir={tmp_path}/x")
    assert done.returncode == 2
    assert done.stderr.strip().startswith(f"error: {key} ") and len(done.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "none.db").exists() and not (tmp_path / "x").exists()


def test_a_target_outside_the_runs_objective_exits_2_naming_it(lab, tmp_path):
    done = run_report(f"tracking.uri={lab['uri']}", "target=1.5", f"out_dir={tmp_path}/x", "log_to_mlflow=false")
    assert done.returncode == 2 and not (tmp_path / "x").exists()
    assert done.stderr.strip() == ("error: target must be a value of val/acc in (0, 1] (the runs' objective, higher is "
                                   "better), got 1.5")


def test_unknown_experiment_exits_2_listing_the_existing_ones(lab, tmp_path):
    done = run_report(f"tracking.uri={lab['uri']}", "experiments=[nope]", f"out_dir={tmp_path}/x")
    assert done.returncode == 2 and "existing experiments: Default, lrbench" in done.stderr


@pytest.mark.slow
def test_report_on_a_sweep_trained_by_the_real_pipeline_recommends_and_proposes_the_recorded_policy(tmp_path):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    sweep = subprocess.run(
        [sys.executable, "-m", "pipeline", "+policy=triangle2,inv,fix", "seed=0,1", "dataset=synthetic",
         "trainer.max_steps=40", "trainer.eval_every_steps=10", "trainer.progress=false", f"tracking.uri={uri}",
         f"hydra.sweep.dir={tmp_path}/multirun", "--multirun"],
        cwd=ROOT, capture_output=True, text=True, timeout=900)
    parent = re.search(r"sweep parent run (\w+)", sweep.stdout)
    assert parent, sweep.stdout + sweep.stderr
    # The target is the lowest accuracy of any run's first evaluation (step 10): every run reaches it there, so
    # every candidate is good and a recommendation is certain, with 30 steps left for the composite's tail.
    client = MlflowClient(uri)
    runs = [r for r in client.search_runs([client.get_experiment_by_name("lrbench").experiment_id])
            if r.data.tags.get("kind") == "train"]
    firsts = [min(client.get_metric_history(r.info.run_id, "val/acc"), key=lambda m: m.step) for r in runs]
    assert {m.step for m in firsts} == {10}
    target = min(m.value for m in firsts)
    out = tmp_path / "report"
    # 40 steps are all rising curve: the late-fluctuation check is off.
    done = run_report(f"tracking.uri={uri}", f"parent_run_id={parent.group(1)}", f"out_dir={out}",
                      f"target={target!r}", "max_fluctuation=1", "cache_dir=null")
    assert done.returncode == 0, done.stderr
    report = json.loads((out / "report.json").read_text())
    (group,) = report["groups"]
    assert {r["policy"] for r in group["ranking"]} == {"triangle2", "inv", "fix"}
    assert sum(r["n_runs"] for r in group["ranking"]) == 6 and report["n_runs"] == 6
    assert all(r["good"] and r["steps_values"] == [10, 10] for r in group["ranking"])
    recommended = group["recommendation"]
    best = next(r for r in group["ranking"] if r["name"] == recommended["policy"])
    trained = from_spec(json.loads(client.get_run(best["run_ids"][0]).data.params["policy_config"]))
    assert recommended["composite"]["switch_step"] == 10
    assert recommended["composite"]["lr_at_switch"] == trained(10)
    proposed = OmegaConf.load(out / "policy" / "proposed_composite.yaml")
    assert OmegaConf.to_container(proposed.segments[0].policy) == to_spec(trained)  # no warm-up, scale or stretch


def test_store_passwords_never_reach_the_report_pages():
    from pipeline.tracking.store import public_uri

    assert public_uri("postgresql://bob:s3cret@db:5432/mlflow") == "postgresql://bob:****@db:5432/mlflow"
    assert public_uri("sqlite:////tmp/x.db") == "sqlite:////tmp/x.db"
