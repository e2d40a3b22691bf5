"""Scoring on hand-built run tables (pure functions, no tracking store)."""

from __future__ import annotations

import math

import pandas as pd
import pytest
from scipy import stats

from pipeline.analysis import scoring
from pipeline.tracking.histories import fetch_histories
from pipeline.tracking.runs import runs_frame

GROUP = ("lenet5", "synthetic", "momentum")
SPECS = {"triangle2": "lrPolicy_TRI2+k0_0.01+k1_0.06+l_2000", "inv": "lrPolicy_INV+k0_0.01+gamma_0.0001+p_0.75",
         "fix": "lrPolicy_FIX+k0_0.01", "sin2": "lrPolicy_SIN2+k0_0.01+k1_0.06+l_2000"}


def make_run(policy: str, seed: int, steps_to: float | None = None, *, target: float = 0.85, spec: str | None = None,
             failure: str | None = None, status: str = "FINISHED", final: float = 0.9, best: float | None = None,
             fluct: float = 0.004, seconds_per_step: float = 0.01, max_steps: int = 100, k_scale: float = 1.0,
             group=GROUP, momentum: str = "none", warmup: str = "none", targets: str = "[0.8, 0.85, 0.88]",
             params: dict | None = None, metric: str = "acc", mode: str | None = None, run_id: str | None = None,
             run_key: str | None = None, start: int = 0, error: str | None = None) -> dict:
    """One run as :func:`pipeline.tracking.runs.load_runs` returns it (a row of the runs table); ``metric`` and
    ``mode`` make it a run of another objective (tags objective_metric / objective_mode), ``start`` its start time
    (seconds)."""
    label = scoring.target_label(target)
    m = metric
    row = {"run_id": run_id or f"{policy}-{seed}-{k_scale:g}-{spec or ''}-{group[2]}", "run_name": f"{policy}-s{seed}",
           "experiment": "lrbench", "experiment_id": "1", "status": status, "policy": policy,
           "policy_spec": spec or SPECS.get(policy, f"lrPolicy_{policy}"), "model": group[0], "dataset": group[1],
           "optimizer": group[2], "momentum": momentum, "warmup": warmup, "seed": seed, "k_scale": k_scale,
           "failure": failure, "error": error or (f"{failure} at step 7" if failure else None), "run_key": run_key,
           "start_time": 1_700_000_000_000 + 1000 * start,
           "param.trainer.max_steps": str(max_steps), "param.trainer.targets": targets,
           "summary/steps": float(max_steps), "summary/train_s": max_steps * seconds_per_step,
           "summary/diverged": 1.0 if failure == "diverged" else 0.0, f"summary/best_val_{m}": best or final,
           f"summary/final_val_{m}": final, f"summary/val_{m}_last_std": fluct, f"summary/test_{m}": final - 0.01,
           "summary/test_acc_top5": 0.99, "summary/loss_gap": -0.1, "summary/test_conf_mean": 0.9,
           "summary/test_conf_std": 0.1, "summary/test_conf_class_std": 0.05,
           f"summary/reached_{m}_{label}": 0.0 if steps_to is None else 1.0, **(params or {})}
    if metric != "acc" or mode:
        row.update(objective_metric=metric, objective_mode=mode)
    if steps_to is not None:
        row[f"summary/steps_to_{m}_{label}"] = float(steps_to)
        row[f"summary/seconds_to_{m}_{label}"] = steps_to * seconds_per_step
    return row


def table(*rows: dict) -> pd.DataFrame:
    return runs_frame(list(rows))


def scores_of(*rows: dict, target: float = 0.85, **criteria) -> pd.DataFrame:
    c = scoring.Criteria(target, **criteria)
    return scoring.score_candidates(scoring.run_outcomes(table(*rows), c), c).set_index("name")


def test_seed_stats_are_mean_sample_std_and_a_t_interval():
    s = scoring.seed_stats([1.0, 2.0, 3.0], 0.95)
    low, high = stats.t.interval(0.95, 2, loc=2.0, scale=1.0 / math.sqrt(3))
    assert (s["n"], s["mean"], s["std"]) == (3, 2.0, 1.0)
    assert s["ci_low"] == pytest.approx(low) and s["ci_high"] == pytest.approx(high)
    assert s["ci_high"] - s["mean"] == pytest.approx(4.302652729911275 / math.sqrt(3))


def test_one_seed_has_a_mean_but_no_spread_and_nan_values_are_ignored():
    s = scoring.seed_stats([5.0, math.nan], 0.95)
    assert s["n"] == 1 and s["mean"] == 5.0
    assert math.isnan(s["std"]) and math.isnan(s["ci_low"]) and math.isnan(s["ci_high"])
    assert math.isnan(scoring.seed_stats([], 0.95)["mean"])


def test_steps_and_seconds_to_target_come_from_the_summary_of_that_target():
    scores = scores_of(make_run("triangle2", 0, 30), make_run("triangle2", 1, 50, seconds_per_step=0.02))
    row = scores.loc["triangle2"]
    assert row["steps_values"] == [30.0, 50.0] and row["steps_mean"] == 40.0
    assert row["seconds_values"] == pytest.approx([0.3, 1.0])
    assert row["n_reached"] == 2 and row["target_source"] == "summary"


def test_reaching_the_target_after_the_step_or_time_budget_does_not_count():
    within, late = make_run("sin2", 0, 40), make_run("sin2", 1, 90)
    assert scores_of(within, late, budget_steps=50).loc["sin2", "n_reached"] == 1
    assert scores_of(within, late).loc["sin2", "n_reached"] == 2  # default: each run's own 100-step budget
    assert scores_of(within, late, budget_s=0.5).loc["sin2", "n_reached"] == 1  # 90 steps take 0.9 s


def test_diverged_and_pruned_runs_count_against_their_policy_while_killed_and_running_ones_are_not_seeds():
    rows = [make_run("fix", 0, 20), make_run("fix", 1, failure="diverged", status="FAILED"),
            make_run("fix", 2, 20, status="KILLED"), make_run("fix", 3, 20, status="RUNNING"),
            make_run("fix", 4, failure="pruned", status="FAILED")]
    outcomes = scoring.run_outcomes(table(*rows), scoring.Criteria(0.85))
    assert outcomes["failure"].tolist() == ["", "diverged", "killed", "running", "pruned"]
    assert outcomes["run_class"].tolist() == ["scored", "scored", "did_not_finish", "did_not_finish", "scored"]
    row = scores_of(*rows).loc["fix"]
    assert row["n_runs"] == 3 and row["n_failed"] == 2 and row["seeds"] == [0, 1, 4]
    assert [f["failure"] for f in row["failures"]] == ["diverged", "pruned"]
    assert row["failures"][0]["error"] == "diverged at step 7"
    listed = scoring.not_counted(outcomes)
    assert listed["seed"].tolist() == [2, 3] and set(listed["class"]) == {"did not finish"}


@pytest.mark.parametrize("failure, error, expected", [
    ("config", "dataset: CIFAR-10 not found: data/cifar-10-batches-py lacks data_batch_1", "could_not_run"),
    ("data", "", "could_not_run"), ("environment", "", "could_not_run"), ("setup", None, "could_not_run"),
    ("error", "DatasetNotFoundError: CIFAR-10 not found", "could_not_run"),
    ("error", "FileNotFoundError: [Errno 2] No such file or directory: 'x'", "could_not_run"),
    ("error", "ModuleNotFoundError: No module named 'torchvision'", "could_not_run"),
    ("error", "torch.OutOfMemoryError: CUDA out of memory", "could_not_run"),
    ("error", "RuntimeError: shape mismatch", "did_not_finish"), ("killed", "interrupted", "did_not_finish"),
    ("running", None, "did_not_finish"), ("diverged", "loss nan", "scored"), ("pruned", "", "scored"),
    ("", None, "scored")])
def test_the_failure_tag_and_error_text_decide_whether_a_run_could_run(failure, error, expected):
    assert scoring.run_class(failure, error) == expected


def test_runs_that_could_not_run_are_listed_with_their_error_and_name_no_bad_policy():
    error = "dataset: CIFAR-10 not found: data/cifar-10-batches-py lacks data_batch_1"
    rows = [{**make_run(p, s, failure="config", status="FAILED", error=error, run_id=f"{p}{s}"),
             "policy_spec": None, "summary/steps": math.nan, "summary/best_val_acc": math.nan}
            for p in ("cos", "step") for s in (0, 1, 2)]
    outcomes = scoring.run_outcomes(table(*rows), scoring.Criteria(0.85))
    assert set(outcomes["run_class"]) == {"could_not_run"}
    assert scoring.score_candidates(outcomes, scoring.Criteria(0.85)).empty
    listed = scoring.not_counted(outcomes)
    assert len(listed) == 6 and listed["why"].str.startswith("config: dataset: CIFAR-10 not found").all()
    assert scoring.not_counted_text(outcomes) == f"6 could not run (6× config: {error})"


def test_a_run_repeating_a_run_key_or_a_seed_is_flagged_and_never_an_extra_seed():
    old = make_run("cos", 0, 30, run_id="old", run_key="k1", start=0, final=0.675)
    new = make_run("cos", 0, 20, run_id="new", run_key="k1", start=10, final=0.9)
    longer = make_run("cos", 1, 25, run_id="long", run_key="k2", start=20, max_steps=200)
    short = make_run("cos", 1, 40, run_id="short", run_key="k3", start=30, max_steps=50, status="FAILED",
                     failure="diverged")
    outcomes = scoring.run_outcomes(table(old, new, longer, short), scoring.Criteria(0.85)).set_index("run_id")
    assert outcomes.loc["old", "duplicate_of"] == "new" and "same run key k1" in outcomes.loc["old", "duplicate_reason"]
    # The newest *finished* run of a seed is kept; a repeat with another budget says which setting differs.
    assert outcomes.loc["short", "duplicate_of"] == "long"
    assert "trainer.max_steps 50 vs 200" in outcomes.loc["short", "duplicate_reason"]
    assert outcomes["run_class"].tolist() == ["duplicate", "scored", "scored", "duplicate"]
    row = scores_of(old, new, longer, short).loc["cos"]
    assert row["seeds"] == [0, 1] and row["n_runs"] == 2 and row["final_val_mean"] == 0.9


def test_a_repeat_of_the_same_configuration_without_a_run_key_is_a_duplicate_too():
    a, b = make_run("sin2", 0, 30, run_id="a", start=0), make_run("sin2", 0, 30, run_id="b", start=5)
    outcomes = scoring.run_outcomes(table(a, b), scoring.Criteria(0.85)).set_index("run_id")
    assert outcomes.loc["a", "duplicate_of"] == "b"
    assert outcomes.loc["a", "duplicate_reason"].startswith("repeats run sin2-s0: same policy, model, data, optimizer")


def test_intervals_never_leave_the_metrics_possible_range_and_say_when_clipped():
    s = scoring.seed_stats([0.675, 0.99], 0.95, bounds=(0.0, 1.0))
    assert s["ci_high"] == 1.0 and s["ci_low"] == 0.0 and s["clipped"]
    rows = [make_run("fix", 0, 5, seconds_per_step=0.001, final=0.6), make_run("fix", 1, 95, final=0.99)]
    row = scores_of(*rows).loc["fix"]
    assert row["steps_ci_low"] == 0 and row["steps_ci_clipped"] and row["seconds_ci_low"] == 0
    assert row["final_val_ci_high"] == 1.0 and row["final_val_ci_clipped"]
    assert scores_of(make_run("fix", 0, 50), make_run("fix", 1, 52)).loc["fix", "steps_ci_clipped"] == False  # noqa: E712


def test_evaluations_after_divergence_never_feed_a_failed_runs_scores():
    run = make_run("fix", 0, failure="diverged", status="FAILED", final=0.1, best=0.7,
                   params={"summary/diverged_step": 25.0})
    c = scoring.Criteria(0.85)
    cutoffs = scoring.score_cutoffs(table(run), c)
    assert cutoffs == {run["run_id"]: 24}
    history = pd.DataFrame({"run_id": run["run_id"], "key": "val/acc", "step": [10, 20, 25, 30],
                            "value": [0.5, 0.7, 0.1, 0.1]})  # the evaluations at and after step 25 saw a broken model
    cut = scoring.cut_scores(history, cutoffs)
    assert cut[run["run_id"]] == {"best": 0.7, "final": 0.7, "late_std": pytest.approx(0.1)}
    outcomes = scoring.run_outcomes(table(run), c, cut=cut)
    assert outcomes["val_final"].tolist() == [0.7] and outcomes["val_best"].tolist() == [0.7]


def test_a_step_budget_shorter_than_the_runs_cuts_their_final_scores_there():
    run = make_run("fix", 0, 20, max_steps=100)
    c = scoring.Criteria(0.85, budget_steps=40)
    assert scoring.score_cutoffs(table(run), c) == {run["run_id"]: 40}


def test_a_min_mode_objective_reaches_its_target_from_above():
    loss = scoring.Objective("loss", "min")
    rows = [make_run("fix", 0, 30, target=0.3, metric="loss", mode="min", final=0.25),
            make_run("fix", 1, None, target=0.3, metric="loss", mode="min", final=0.4, targets="[0.5]")]
    runs = table(*rows)
    assert scoring.scope_objective(runs) == loss and loss.key == "val/loss" and loss.comparator == "≤"
    history = pd.DataFrame({"run_id": rows[1]["run_id"], "key": "val/loss", "step": [10, 20, 30],
                            "value": [0.9, 0.29, 0.2]})
    assert scoring.first_reach_steps(history, 0.3, loss) == {rows[1]["run_id"]: 20.0}
    outcomes = scoring.run_outcomes(runs, scoring.Criteria(0.3, objective=loss))
    assert outcomes["reached"].tolist() == [True, False] and outcomes["val_final"].tolist() == [0.25, 0.4]


def test_one_target_cannot_serve_two_objectives_and_must_lie_in_the_objectives_range():
    runs = table(make_run("fix", 0, 30), make_run("fix", 1, 30, metric="loss", mode="min"))
    with pytest.raises(ValueError, match=r"^target: the runs in scope optimise different objectives"):
        scoring.scope_objective(runs)
    with pytest.raises(ValueError, match=r"^target must be a value of val/acc in \(0, 1\]"):
        scoring.check_target(1.5, scoring.CLASSIFICATION)
    scoring.check_target(2.5, scoring.Objective("loss", "min"))
    with pytest.raises(ValueError, match=r"^target must be a value of val/perplexity in \[1, inf\]"):
        scoring.check_target(0.5, scoring.Objective("perplexity", "min"))


def test_a_target_the_runs_did_not_record_is_read_from_their_val_acc_history():
    runs = table(make_run("inv", 0, 40, targets="[0.8]"), make_run("inv", 1, 40, targets="[0.8]"))
    assert scoring.needs_history(runs, 0.9) == runs["run_id"].tolist()
    history = pd.DataFrame({"run_id": [runs["run_id"][0]] * 3 + [runs["run_id"][1]] * 3, "key": "val/acc",
                            "step": [10, 20, 30] * 2, "value": [0.5, 0.91, 0.95, 0.5, 0.6, 0.7]})
    reached = scoring.first_reach_steps(history, 0.9)
    assert reached[runs["run_id"][0]] == 20 and math.isnan(reached[runs["run_id"][1]])
    outcomes = scoring.run_outcomes(runs, scoring.Criteria(0.9), reached)
    assert outcomes["reached"].tolist() == [True, False]
    assert outcomes["seconds_to"][0] == pytest.approx(20 * 0.01)  # the run's mean seconds per step
    assert outcomes["target_source"].tolist() == ["history", "history"]


def test_a_candidate_is_the_exact_policy_and_same_named_ones_get_a_distinguishing_suffix():
    a = "lrPolicy_TRI2+k0_0.01+k1_0.06+l_2000"
    b = "lrPolicy_TRI2+k0_0.01+k1_0.1+l_2000"
    scores = scores_of(make_run("triangle2", 0, 20, spec=a), make_run("triangle2", 1, 30, spec=a),
                       make_run("triangle2", 0, 40, spec=b), make_run("triangle2", 0, 40, spec=a, warmup="linear"))
    assert set(scores.index) == {"triangle2 [k1_0.06]", "triangle2 [k1_0.1]", "triangle2+linear"}
    assert scores.loc["triangle2 [k1_0.06]", "n_runs"] == 2


def test_groups_never_mix_even_for_the_same_policy():
    other = ("lenet5", "synthetic", "adam")
    c = scoring.Criteria(0.85)
    scores = scoring.score_candidates(scoring.run_outcomes(table(make_run("fix", 0, 20), make_run("fix", 0, 80,
                                                                                                  group=other)), c), c)
    assert sorted(scores["group"]) == ["lenet5 / synthetic / adam", "lenet5 / synthetic / momentum"]
    assert sorted(scores["steps_mean"]) == [20.0, 80.0]


def test_k_scaled_runs_are_their_own_candidates_and_feed_the_robustness_tables():
    rows = [make_run("triangle2", s, 30, k_scale=1.0, final=0.9) for s in (0, 1)]
    rows += [make_run("triangle2", s, 60 if s == 0 else None, k_scale=5.0, final=0.8,
                      spec="lrPolicy_TRI2+k0_0.01+k1_0.06+l_2000-SCALE-5") for s in (0, 1)]
    rows += [make_run("triangle2", 0, failure="diverged", status="FAILED", k_scale=10.0, final=0.1,
                      spec="lrPolicy_TRI2+k0_0.01+k1_0.06+l_2000-SCALE-10")]
    rows += [make_run("fix", 0, 20)]  # one scale only: not in the robustness tables
    c = scoring.Criteria(0.85)
    outcomes = scoring.run_outcomes(table(*rows), c)
    assert set(scoring.score_candidates(outcomes, c)["name"]) == {"triangle2", "triangle2 ×5", "triangle2 ×10", "fix"}
    per_scale, sensitivity = scoring.k_scale_robustness(outcomes)
    assert per_scale["k_scale"].tolist() == [1.0, 5.0, 10.0]
    assert per_scale["share_reached"].tolist() == [1.0, 0.5, 0.0] and per_scale["n_failed"].tolist() == [0, 0, 1]
    (row,) = sensitivity.to_dict("records")
    assert row["policy"] == "triangle2" and row["n_scales"] == 3
    assert row["share_scales_reaching"] == pytest.approx(1 / 3)
    assert row["final_val_spread"] == pytest.approx(0.9 - 0.0)  # the diverged run counts as accuracy 0


class _FakeStore:
    """A tracking store that records its calls: bulk reads only, 100 run ids at most per call."""

    def __init__(self):
        self.calls = []

    def get_metric_history_bulk_interval(self, run_ids, metric_key, max_results, start_step, end_step):
        from types import SimpleNamespace

        self.calls.append(("bulk", len(run_ids), metric_key))
        assert len(run_ids) <= 100
        return [SimpleNamespace(run_id=r, key=metric_key, step=s, value=float(s)) for r in run_ids for s in (0, 1)]

    def get_metric_history(self, run_id, metric_key):
        raise AssertionError("one call per run per metric")


def test_histories_are_read_in_bulk_per_key_in_chunks_of_100_and_finished_runs_are_cached():
    fake = _FakeStore()
    ids = [f"r{i}" for i in range(250)]
    from pipeline.tracking.histories import HistoryCache

    cache = HistoryCache()
    out = fetch_histories(lambda: fake, ids, ["lr", "val/acc"], 1000, cache, terminal=ids[:200])
    assert fake.calls == [("bulk", 100, "lr"), ("bulk", 100, "lr"), ("bulk", 50, "lr"),
                          ("bulk", 100, "val/acc"), ("bulk", 100, "val/acc"), ("bulk", 50, "val/acc")]
    assert len(out) == 250 * 2 * 2
    fake.calls.clear()
    again = fetch_histories(lambda: fake, ids, ["lr"], 1000, cache, terminal=ids[:200])
    assert fake.calls == [("bulk", 50, "lr")]  # only the 50 unfinished runs are read again
    assert len(again) == 250 * 2


class _FakeSqlStore(_FakeStore):
    """Also has the SQL store's one-query read of whole histories (a global row limit, no sampling)."""

    def get_metric_history_bulk(self, run_ids, metric_key, max_results):
        from types import SimpleNamespace

        self.calls.append(("whole", len(run_ids), metric_key))
        points = 3 if metric_key == "val/acc" else 5000  # lr: one point per step, far more than expected
        rows = [SimpleNamespace(run_id=r, key=metric_key, step=s, value=0.5, timestamp=s)
                for r in run_ids for s in range(points)]
        return rows[:max_results]


def test_short_series_are_read_with_one_query_per_100_runs_and_long_ones_fall_back_to_sampling():
    fake = _FakeSqlStore()
    ids = [f"r{i}" for i in range(150)]
    out = fetch_histories(lambda: fake, ids, ["val/acc", "lr"], 1000, points_per_run=3)
    assert fake.calls == [("whole", 100, "val/acc"), ("whole", 50, "val/acc"),
                          ("whole", 100, "lr"), ("bulk", 100, "lr"), ("whole", 50, "lr"), ("bulk", 50, "lr")]
    assert (out[out["key"] == "val/acc"].groupby("run_id").size() == 3).all()


class _FakeWholeStore(_FakeSqlStore):
    """Also answers one run's whole history, in pages of 2,000 points as a tracking server may send it."""

    def get_metric_history(self, run_id, metric_key, page_token=None):
        from types import SimpleNamespace

        self.calls.append(("run", run_id, metric_key))
        start = int(page_token or 0)
        page = [SimpleNamespace(run_id=run_id, key=metric_key, step=s, value=0.5, timestamp=s)
                for s in range(start, min(start + 2000, 5000))]
        return _Page(page, str(start + 2000) if start + 2000 < 5000 else None)


class _Page(list):
    """A list with the next page's token, like MLflow's PagedList."""

    def __init__(self, items, token):
        super().__init__(items)
        self.token = token


def test_all_points_are_never_sampled_short_series_in_one_query_long_ones_run_by_run_and_cached_apart():
    from pipeline.tracking.histories import ALL_POINTS, HistoryCache

    fake, cache, ids = _FakeWholeStore(), HistoryCache(), ["a", "b"]
    out = fetch_histories(lambda: fake, ids, ["val/acc", "lr"], ALL_POINTS, cache, terminal=ids, points_per_run=3)
    # lr has 5,000 points, more than the one query's row limit: every point of it, run by run, page by page.
    assert fake.calls == [("whole", 2, "val/acc"), ("whole", 2, "lr"), ("run", "a", "lr"), ("run", "a", "lr"),
                          ("run", "a", "lr"), ("run", "b", "lr"), ("run", "b", "lr"), ("run", "b", "lr")]
    assert out[out["key"] == "lr"].groupby("run_id")["step"].apply(list).tolist() == [list(range(5000))] * 2
    assert (out[out["key"] == "val/acc"].groupby("run_id").size() == 3).all()
    fake.calls.clear()
    again = fetch_histories(lambda: fake, ids, ["lr"], ALL_POINTS, cache, terminal=ids)
    assert fake.calls == [] and again.equals(out[out["key"] == "lr"].reset_index(drop=True))  # from the cache
    fetch_histories(lambda: fake, ids, ["lr"], 1000, cache, terminal=ids)
    assert fake.calls == [("bulk", 2, "lr")]  # a sampled read is cached apart from the whole one


def test_a_runs_budget_is_its_max_steps_else_its_recorded_total_steps_else_the_steps_it_ran():
    # A budget in epochs records trainer.max_steps -1; a pruned run records no summary/steps. budget.total_steps is
    # what the run was to train, recorded when it started.
    by_steps = make_run("fix", 0, max_steps=300)
    by_epochs = {**make_run("fix", 1, max_steps=-1), "param.budget.total_steps": "860"}
    pruned = {**make_run("inv", 0, max_steps=-1, failure="pruned", status="KILLED"), "summary/steps": math.nan,
              "param.budget.total_steps": "860"}
    older = {**make_run("inv", 1, max_steps=-1), "summary/steps": 430.0}  # recorded before budget.total_steps
    outcomes = scoring.run_outcomes(table(by_steps, by_epochs, pruned, older), scoring.Criteria(0.85))
    assert list(outcomes["budget_steps"]) == [300.0, 860.0, 860.0, 430.0]
