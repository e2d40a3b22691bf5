"""A report users can trust (issue 21), end to end on real SQLite MLflow stores: which runs it reads (the latest
sweep by default, said at the top of every output), repeated seeds, runs that could not run, ranking modes, the
glossary, the composite's verification, and objectives other than accuracy (issue 19 item 1). Stores are written with
MlflowClient as the training stage records runs (``test_report.write_run``); the slow tests train real runs."""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys
from pathlib import Path

import pytest
from hydra.utils import instantiate
from mlflow.tracking import MlflowClient
from test_report import FAST, LATER, MISS, POLICIES, ROOT, SLOWER, SLOWEST, run_report, write_run

from pipeline.analysis.scoring import Objective
from pipeline.tracking import runs as tracked
from pipeline.tracking import store

CIFAR_MISSING = ("dataset: CIFAR-10 not found: data/cifar-10-batches-py lacks data_batch_1, test_batch, and "
                 "downloading it with torchvision into data failed (URLError: Name or service not known)")


def _sweep(client, experiment_id, name, **tags):
    return client.create_run(experiment_id, run_name=name, tags={"kind": "sweep", **tags}).info.run_id


def _report(uri, out, *overrides):
    done = run_report(f"tracking.uri={uri}", f"out_dir={out}", "cache_dir=null", *overrides)
    assert done.returncode == 0, done.stderr
    return done, json.loads((out / "report.json").read_text())


@pytest.fixture(scope="module")
def history(tmp_path_factory):
    """An experiment used over time: a 1-epoch run of triangle2 seed 0 outside any sweep, an older sweep, the latest
    sweep (two seeds of triangle2, sin2, inv), and a later sweep of a proposed composite (never "the latest")."""
    root = tmp_path_factory.mktemp("history")
    uri = f"sqlite:///{root}/mlflow.db"
    experiment_id = store.prepare(uri, "lrbench")
    client = MlflowClient(uri)
    early = write_run(client, experiment_id, "triangle2", 0, [0.4, 0.6, 0.675, 0.7], steps=20, run_name="early")
    older = _sweep(client, experiment_id, "sweep-old")
    write_run(client, experiment_id, "fix", 0, SLOWER, parent=older)
    latest = _sweep(client, experiment_id, "sweep-latest")
    for seed in (0, 1):
        write_run(client, experiment_id, "triangle2", seed, FAST, parent=latest, summary_as="params")
        write_run(client, experiment_id, "sin2", seed, LATER if seed else SLOWER, parent=latest, summary_as="params")
        write_run(client, experiment_id, "inv", seed, MISS if seed else SLOWEST, parent=latest, summary_as="params")
    _sweep(client, experiment_id, "sweep-policy-seed", **{"sweep.overrides": "+policy=proposed_composite seed=0,1"})
    return {"uri": uri, "root": root, "older": older, "latest": latest, "early": early, "client": client}


def test_the_default_scope_is_the_latest_sweep_and_every_output_says_so_first(history, tmp_path):
    out = tmp_path / "r"
    done, report = _report(history["uri"], out)
    scope = report["scope"]
    assert scope["how"] == "latest_sweep" and scope["parent_run_id"] == history["latest"]
    assert scope["sweep_name"] == "sweep-latest" and scope["sweeps"] == 2  # the composite's sweep is never latest
    assert report["n_runs"] == 6 and history["early"] not in json.dumps(report["groups"])
    assert list(report)[:4] == ["title", "generated", "scope", "objective"]
    first = done.stdout.splitlines()[0]
    assert first == scope["text"] and first.startswith("Scope: 6 training runs of sweep 'sweep-latest'")
    assert "scope=all reads every run" in first
    html = (out / "report.html").read_text()
    assert html.index("Scope: 6 training runs") < html.index("<h2")
    assert (out / "report.md").read_text().splitlines()[2].startswith("**Scope: 6 training runs")


def test_an_earlier_run_of_the_same_seed_is_flagged_never_a_second_seed_and_intervals_stay_in_range(history, tmp_path):
    _, report = _report(history["uri"], tmp_path / "r", "scope=all")
    assert report["scope"]["how"] == "all" and report["n_runs"] == 8
    (group,) = report["groups"]
    tri = next(r for r in group["ranking"] if r["name"] == "triangle2")
    assert tri["seeds"] == [0, 1] and tri["n_runs"] == 2  # the early 1-epoch run is not a third "seed"
    (duplicate,) = report["not_counted"]
    assert duplicate["run_id"] == history["early"] and duplicate["class"] == "duplicate"
    assert "same policy and seed 0 as run triangle2-lenet5-synthetic-s0 but other settings" in duplicate["why"]
    assert "trainer.max_steps 20 vs 40" in duplicate["why"]
    for row in group["ranking"]:
        for prefix in ("best_val", "final_val"):
            low, high = row[f"{prefix}_ci_low"], row[f"{prefix}_ci_high"]
            assert low is None or 0 <= low <= high <= 1, (row["name"], prefix, low, high)
        for prefix in ("steps", "seconds"):
            assert row[f"{prefix}_ci_low"] is None or row[f"{prefix}_ci_low"] >= 0
    inv = next(r for r in group["ranking"] if r["name"] == "inv")
    assert inv["best_val_ci_high"] == 1.0 and inv["best_val_ci_clipped"] is True


def test_parent_run_id_picks_another_sweep(history, tmp_path):
    _, report = _report(history["uri"], tmp_path / "r", f"parent_run_id={history['older']}")
    assert report["scope"]["how"] == "parent_run_id" and report["n_runs"] == 1
    assert report["scope"]["text"].startswith("Scope: 1 training run of sweep 'sweep-old'")


def test_summaries_recorded_as_params_read_the_same_as_older_summary_metrics(history):
    runs = tracked.load_runs(history["uri"], ["lrbench"]).set_index("run_name")
    as_params = runs[runs["parent_run_id"] == history["latest"]]
    as_metrics = runs[runs["parent_run_id"] == history["older"]]
    assert as_params["summary/best_val_acc"].notna().all() and as_metrics["summary/best_val_acc"].notna().all()
    client = history["client"]
    run = client.get_run(as_params.loc["triangle2-lenet5-synthetic-s0", "run_id"])
    assert not any(k.startswith("summary/") for k in run.data.metrics)
    assert tracked.summaries(run.data.metrics, run.data.params)["summary/steps_to_acc_0.85"] == 15


@pytest.fixture(scope="module")
def missing_data(tmp_path_factory):
    """A sweep of 3 policies x 2 seeds on CIFAR-10 that is not on disk: every job recorded as the sweep records a job
    refused before training (base tags, failure=config, the error)."""
    root = tmp_path_factory.mktemp("missing")
    uri = f"sqlite:///{root}/mlflow.db"
    experiment_id = store.prepare(uri, "lrbench")
    client = MlflowClient(uri)
    parent = _sweep(client, experiment_id, "sweep-cifar")
    for policy in ("cos", "step", "inv"):
        for seed in (0, 1):
            tags = {"kind": "train", "policy": policy, "model": "cnn3", "dataset": "cifar10", "optimizer": "momentum",
                    "seed": str(seed), "mlflow.parentRunId": parent}
            run_id = client.create_run(experiment_id, run_name=f"{policy}-cnn3-cifar10-s{seed}", tags=tags).info.run_id
            client.set_tag(run_id, "failure", "config")
            client.set_tag(run_id, "error", CIFAR_MISSING)
            client.set_terminated(run_id, "FAILED")
    return uri


def test_a_sweep_whose_data_is_missing_says_its_runs_could_not_run_and_names_no_bad_policy(missing_data, tmp_path):
    out = tmp_path / "r"
    done, report = _report(missing_data, out)
    (group,) = report["groups"]
    assert group["ranking"] == [] and group["recommendation"]["policy"] is None
    text = group["recommendation"]["text"]
    assert text.startswith("no policy could be evaluated: of its runs 6 could not run (6× config: dataset: CIFAR-10 "
                           "not found")
    assert len(report["not_counted"]) == 6 and {r["class"] for r in report["not_counted"]} == {"could not run"}
    html = re.sub(r"<style>.*?</style>", "", (out / "report.html").read_text(), flags=re.S)
    for page in (done.stdout, html, (out / "report.md").read_text()):
        assert "could not run" in page and "closest" not in page
        assert not re.search(r"\bbad\b", page.split("Glossary")[0]), "a policy was called bad"


def test_glossary_explains_every_column_in_every_format(history, tmp_path):
    out = tmp_path / "r"
    _, report = _report(history["uri"], out)
    terms = set(report["glossary"])
    assert {"AC / CV / CVAC", "late std", "loss gap", "steps to target", "seconds to target", "reached",
            "best val acc", "final val acc", "Pareto set", "margin", "speed-up", "could not run", "duplicate",
            "interval clipped (*)", "scope", "objective", "verification"} <= terms
    assert "standard deviation" in report["glossary"]["AC / CV / CVAC"]
    assert "nats" in report["glossary"]["loss gap"] and "last 5" in report["glossary"]["late std"]
    html, md = (out / "report.html").read_text(), (out / "report.md").read_text()
    assert "<h2 id='glossary'>Glossary</h2>" in html and "<dt>AC / CV / CVAC</dt>" in html
    assert "## Glossary" in md and "- **late std**:" in md


def test_rank_by_final_recommends_the_best_final_objective_beside_the_fastest_and_the_pareto_set(tmp_path):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    experiment_id = store.prepare(uri, "lrbench")
    client = MlflowClient(uri)
    parent = _sweep(client, experiment_id, "sweep")
    for seed in (0, 1):  # step reaches 0.85 first; sin2 later but ends higher
        write_run(client, experiment_id, "triangle2", seed, [0.5, 0.86, 0.86, 0.87, 0.87, 0.87, 0.87, 0.87],
                  parent=parent)
        write_run(client, experiment_id, "sin2", seed, [0.5, 0.7, 0.8, 0.86, 0.9, 0.93, 0.95, 0.96 - seed / 100],
                  parent=parent)
    done, fastest = _report(uri, tmp_path / "a", "max_fluctuation=1")
    _, final = _report(uri, tmp_path / "b", "max_fluctuation=1", "rank_by=final")
    assert fastest["groups"][0]["recommendation"]["policy"] == "triangle2"
    assert final["groups"][0]["recommendation"]["policy"] == "sin2"
    kinds = {h["kind"]: h["policies"] for h in final["groups"][0]["recommendation"]["headlines"]}
    assert kinds == {"fastest": ["triangle2"], "best_final": ["sin2"], "pareto": ["triangle2", "sin2"]}
    assert "Best final objective within budget: sin2: final val acc 0.955" in done.stdout
    assert [r["pareto"] for r in final["groups"][0]["ranking"]] == [True, True]


def test_a_min_mode_objective_ranks_lower_is_better_with_the_target_in_its_units(tmp_path):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    experiment_id = store.prepare(uri, "lrbench")
    client = MlflowClient(uri)
    parent = _sweep(client, experiment_id, "sweep")
    loss = Objective("loss", "min")
    curves = {"triangle2": [1.2, 0.8, 0.45, 0.3, 0.28, 0.27, 0.27, 0.26],   # <= 0.5 at step 15
              "sin2": [1.2, 0.9, 0.6, 0.48, 0.35, 0.3, 0.29, 0.29],         # <= 0.5 at step 20
              "inv": [1.3, 1.1, 0.9, 0.8, 0.7, 0.65, 0.6, 0.6]}             # never
    for policy, values in curves.items():
        for seed in (0, 1):
            write_run(client, experiment_id, policy, seed, values, parent=parent, objective=loss, targets=[0.5],
                      summary_as="params")
    out = tmp_path / "r"
    done, report = _report(uri, out, "target=0.5", "max_fluctuation=1")
    assert report["objective"] == {"metric": "loss", "mode": "min", "key": "val/loss", "direction": "lower is better"}
    (group,) = report["groups"]
    assert [r["name"] for r in group["ranking"]] == ["triangle2", "sin2", "inv"]
    assert group["recommendation"]["policy"] == "triangle2" and group["recommendation"]["steps_mean"] == 15
    assert group["ranking"][2]["reasons"][0].startswith("missed val loss ≤ 0.5 within 40 steps in 2 of 2 seeds")
    assert "reaches val loss ≤ 0.5 in 15 ± 0 steps" in done.stdout
    html = (out / "report.html").read_text()
    assert "best val loss" in html and "Target val/loss ≤ 0.5 (lower is better)" in html
    _, final = _report(uri, tmp_path / "f", "target=0.5", "max_fluctuation=1", "rank_by=final")
    assert [r["name"] for r in final["groups"][0]["ranking"]] == ["triangle2", "sin2", "inv"]  # 0.26 < 0.29


def test_runs_of_the_proposed_composite_are_found_and_compared_however_they_were_started(tmp_path):
    """The composite's runs (as the printed command would make them: a sweep of +policy=proposed_composite) are
    recognised by their recorded policy and reported beside the recommended one with a verdict."""
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    experiment_id = store.prepare(uri, "lrbench")
    client = MlflowClient(uri)
    parent = _sweep(client, experiment_id, "sweep")
    for seed in (0, 1):
        write_run(client, experiment_id, "triangle2", seed, FAST, parent=parent)
        write_run(client, experiment_id, "sin2", seed, SLOWER, parent=parent)
    first, report = _report(uri, tmp_path / "a", "log_to_mlflow=false")
    group = report["groups"][0]
    assert group["verification"] is None and "verify=true" in group["verify_command"]
    assert f"parent_run_id={parent}" in group["verify_command"]
    node = yaml_node(tmp_path / "a" / "policy" / "proposed_composite.yaml")
    POLICIES["proposed_composite"] = node
    try:
        verify = _sweep(client, experiment_id, "sweep-policy-seed",
                        **{"sweep.overrides": "+policy=proposed_composite seed=0,1"})
        # The same head as triangle2 (0.85 at step 15), then settled higher by the small tail LR.
        for seed, last in ((0, 0.96), (1, 0.962)):
            accs = [0.5, 0.7, 0.86, 0.94, 0.95, 0.955, 0.96, last]
            write_run(client, experiment_id, "proposed_composite", seed, accs, parent=verify, summary_as="params")
    finally:
        POLICIES.pop("proposed_composite")
    done, again = _report(uri, tmp_path / "b", "log_to_mlflow=false")
    assert again["scope"]["parent_run_id"] == parent  # the verification sweep is not the latest sweep
    verification = again["groups"][0]["verification"]
    assert verification["against"] == "triangle2" and verification["seeds"] == [0, 1]
    assert verification["verdict"] == "better", verification["text"]
    assert "verified composite: better than triangle2 over 2 seeds" in done.stdout
    assert "Verified composite: better" in (tmp_path / "b" / "report.html").read_text()


def yaml_node(path):
    import yaml

    node = yaml.safe_load(path.read_text())
    assert instantiate(node)  # a valid policy
    return node


@pytest.mark.slow
def test_a_real_sweep_on_missing_data_reports_could_not_run(tmp_path):
    """The real path: CIFAR-10 is not in data_dir (and cannot be downloaded here), so the sweep records each job as
    refused before training; the report lists them and calls no policy bad."""
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    sweep = subprocess.run(
        [sys.executable, "-m", "pipeline", "+policy=fix,cos", "seed=0", "dataset=cifar10",
         f"dataset.data_dir={tmp_path}/nodata", "trainer.progress=false", f"tracking.uri={uri}",
         f"hydra.sweep.dir={tmp_path}/multirun", "--multirun"],
        cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert sweep.returncode == 2, sweep.stdout + sweep.stderr  # two failed jobs
    done, report = _report(uri, tmp_path / "r", "log_to_mlflow=false")
    assert [r["class"] for r in report["not_counted"]] == ["could not run"] * 2
    assert all(r["why"].startswith("config: dataset: CIFAR-10 not found") for r in report["not_counted"])
    assert report["groups"][0]["ranking"] == [] and "could not run" in done.stdout


@pytest.mark.slow
def test_verify_true_trains_the_composite_with_the_same_seeds_and_reports_it_beside_the_best_policy(tmp_path):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    sweep = subprocess.run(
        [sys.executable, "-m", "pipeline", "+policy=triangle2,fix", "seed=0,1", "dataset=synthetic",
         "trainer.max_steps=40", "trainer.eval_every_steps=10", "trainer.checkpoint_every_steps=0",
         "trainer.progress=false", f"tracking.uri={uri}", f"hydra.sweep.dir={tmp_path}/multirun", "--multirun"],
        cwd=ROOT, capture_output=True, text=True, timeout=900)
    parent = re.search(r"sweep parent run (\w+)", sweep.stdout)
    assert parent, sweep.stdout + sweep.stderr
    client = MlflowClient(uri)
    runs = tracked.load_runs(uri, parent_run_id=parent.group(1))
    # A target every run reaches at its first evaluation (step 10): every candidate is good, 30 steps of tail.
    target = min(min(m.value for m in client.get_metric_history(r, "val/acc") if m.step == 10) for r in runs["run_id"])
    out = tmp_path / "report"
    done = run_report(f"tracking.uri={uri}", f"out_dir={out}", f"target={target!r}", "max_fluctuation=1",
                      "cache_dir=null", "verify=true")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    report = json.loads((out / "report.json").read_text())
    (group,) = report["groups"]
    verification = group["verification"]
    best = group["recommendation"]["policy"]
    assert verification is not None, done.stdout[-3000:]
    assert verification["against"] == best and verification["seeds"] == [0, 1] and verification["n_runs"] == 2
    assert verification["verdict"] in ("better", "not better")
    assert [c["criterion"] for c in verification["comparisons"]] == ["steps to the target", "final val acc"]
    # The composite trained in the same store and experiment, as its own sweep, tagged as verifying the best policy.
    composite = tracked.load_runs(uri, ["lrbench"])
    composite = composite[composite["policy"] == "proposed_composite"]
    assert len(composite) == 2 and set(composite["seed"]) == {0, 1}
    assert set(composite["verifies"]) == {best} and set(composite["param.trainer.max_steps"]) == {"40"}
    assert set(composite["param.trainer.eval_every_steps"]) == {"10"}
    assert report["scope"]["parent_run_id"] == parent.group(1)
    assert f"Verified composite: {verification['verdict']}" in (out / "report.html").read_text()
    # A later default report still reads the original sweep, not the composite's, and shows the verification.
    again = run_report(f"tracking.uri={uri}", f"out_dir={tmp_path}/again", f"target={target!r}", "max_fluctuation=1",
                       "cache_dir=null", "log_to_mlflow=false")
    assert again.returncode == 0, again.stderr
    later = json.loads((tmp_path / "again" / "report.json").read_text())
    assert later["scope"]["parent_run_id"] == parent.group(1)
    assert later["groups"][0]["verification"]["run_ids"] == verification["run_ids"]


def test_a_runs_summary_is_params_and_a_table_and_stays_metrics_when_the_store_refuses_params(store_uri, tmp_path):
    from servers import free_port

    from pipeline.tracking.recorder import RunRecorder
    from pipeline.training.artifacts import record_summary

    summary = {"summary/steps": 60.0, "summary/best_val_acc": 0.9, "summary/steps_to_acc_0.85": math.nan}
    client = store.client(store_uri)
    run_id = client.create_run(client.create_experiment("summaries")).info.run_id
    client.log_param(run_id, "summary.steps", "60.0")  # a resumed run: a param is never changed
    recorder = RunRecorder(client, run_id)
    record_summary(recorder, summary, 60)
    recorder.finish("FINISHED")
    run = client.get_run(run_id)
    assert run.data.params == {"summary.steps": "60.0", "summary.best_val_acc": "0.9"} and not run.data.metrics
    table = Path(client.download_artifacts(run_id, "summary.csv", str(tmp_path)))
    assert table.read_text().splitlines() == ["name,value", "steps,60.0", "best_val_acc,0.9"]
    assert json.loads(Path(client.download_artifacts(run_id, "summary.json", str(tmp_path))).read_text()) == {
        "steps": 60.0, "best_val_acc": 0.9}

    # A store that refuses the params (a server that is gone): the summary stays in the recorder as metrics at the
    # run's last step, where it is buffered, spooled and sent when the store is back, like every metric.
    down = RunRecorder(store.client(f"http://127.0.0.1:{free_port()}"), "r" * 32)
    down.retries = 0
    record_summary(down, summary, 60)
    assert sorted((key, value, step) for key, value, _, step in down.unsent() if not math.isnan(value)) == [
        ("summary/best_val_acc", 0.9, 60), ("summary/steps", 60.0, 60)]


def test_a_policy_that_did_not_show_its_shape_in_the_budget_is_marked_in_the_ranking_and_the_json(tmp_path):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    experiment_id = store.prepare(uri, "lrbench")
    client = MlflowClient(uri)
    parent = _sweep(client, experiment_id, "sweep")
    for seed in (0, 1):  # the runs' policy_fit tag, as the training stage writes it (pipeline.policies.fit)
        write_run(client, experiment_id, "triangle2", seed, FAST, parent=parent, extra_tags={"policy_fit": "ok"})
        write_run(client, experiment_id, "sin2", seed, SLOWER, parent=parent,
                  extra_tags={"policy_fit": "partial_cycle" if seed else "ok"})
    done, report = _report(uri, tmp_path / "r", "max_fluctuation=1")
    fits = {r["policy"]: r["policy_fit"] for r in report["groups"][0]["ranking"]}
    assert fits == {"triangle2": "ok", "sin2": "partial_cycle"}  # one seed that did not fit marks the candidate
    markdown = (tmp_path / "r" / "report.md").read_text()
    assert r"| sin2 (policy\_fit: partial\_cycle) |" in markdown and "| triangle2 |" in markdown
    assert "Policy fit: 1 candidate(s) did not show their schedule within the budget: sin2 (under half a cycle)" \
        in markdown
    assert "policy fit" in report["glossary"]


def test_a_pruned_candidate_is_listed_with_its_rung_and_score_never_as_missing(tmp_path):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    experiment_id = store.prepare(uri, "lrbench")
    client = MlflowClient(uri)
    parent = _sweep(client, experiment_id, "halving")
    reason = ("rung 0: score 0.4100 (cooldown val acc, mean of 2 seeds) below the cut 0.6000; the rung kept the top 1 "
              "of 2 candidates (eta 2, ties kept)")
    for seed in (0, 1):  # as the halving sweeper leaves them: the survivor FINISHED, the pruned one KILLED, tagged
        write_run(client, experiment_id, "triangle2", seed, FAST, parent=parent)
        pruned = write_run(client, experiment_id, "sin2", seed, [0.4, 0.41], parent=parent, extra_tags={
            "failure": "pruned", "pruned.rung": "0", "pruned.score": "0.41", "pruned.reason": reason})
        client.set_terminated(pruned, status="KILLED")
    done, report = _report(uri, tmp_path / "r", "max_fluctuation=1")
    (sin2,) = [r for r in report["groups"][0]["ranking"] if r["policy"] == "sin2"]
    assert not sin2["good"] and sin2["n_runs"] == 2 and {f["failure"] for f in sin2["failures"]} == {"pruned"}
    assert [f["error"] for f in sin2["failures"]] == [reason, reason]
    assert report["groups"][0]["recommendation"]["policy"] == "triangle2"
    # its seeds share the decision: named once, long enough to show the cut
    assert sin2["reasons"] == [f"failed in 2 of 2 seeds (seeds 0, 1: pruned ({reason[:160]}))"]
    assert "below the cut 0.6000" in sin2["reasons"][0]
    assert "rung 0: score 0.4100" in (tmp_path / "r" / "report.md").read_text()
