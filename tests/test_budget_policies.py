"""Budget-relative clocks (issue 20): a shipped policy spans the run's budget whatever its length, LRBench's absolute
form stays exact, the warm-up keeps its own unit, and a policy that cannot show its shape is flagged."""

import sys

import pytest
from conftest import CONF, compose_job, run_cli, train_runs
from mlflow.tracking import MlflowClient

from pipeline.config.checks import ConfigError, check
from pipeline.policies import (
    Cos,
    Exp,
    Fix,
    Inv,
    NStep,
    Poly,
    Sin,
    Sin2,
    SinExp,
    Step,
    Stretched,
    Triangle,
    Triangle2,
    TriangleExp,
    Warmup,
)
from pipeline.policies.build import fraction_steps
from pipeline.policies.fit import FLAT_RATIO, lr_range, policy_fit

POLICIES = sorted(p.stem for p in (CONF / "policy").glob("*.yaml"))
# The LRBench defaults as shipped before issue 20: absolute steps written for a 10,000-step run, which every study
# preset stretched onto its budget with schedule.horizon_steps=10000.
LRBENCH_10K = {
    "step": Step(0.05, 0.1, 3000),
    "nstep": NStep(0.05, 0.1, [5000, 7500]),
    "exp": Exp(0.01, 0.99994),
    "inv": Inv(0.01, 1e-4, 0.75),
    "poly": Poly(0.0, 0.01, 1.2, 10000),
    "triangle": Triangle(0.01, 0.06, 2000),
    "triangle2": Triangle2(0.01, 0.06, 2000),
    "triangle_exp": TriangleExp(0.01, 0.06, 0.99994, 2000),
    "sin": Sin(0.01, 0.06, 2000),
    "sin2": Sin2(0.01, 0.06, 2000),
    "sin_exp": SinExp(0.01, 0.06, 0.99994, 2000),
    "cos": Cos(0.001, 0.05, 10000),
}


def _policy(*overrides, budget):
    return check(compose_job("dataset=synthetic", *overrides)).policy.for_budget(budget)


@pytest.mark.parametrize("budget", [30, 300, 430, 5000])
def test_cos_anneals_from_k1_to_k0_over_any_budget(budget):
    policy = _policy("+policy=cos", budget=budget)
    assert policy == Cos(k0=0.001, k1=0.05, l=budget)
    assert policy(0) == 0.05 and policy(budget) == pytest.approx(0.001, rel=1e-12)


def test_an_absolute_l_replaces_the_fraction_and_is_exact():
    assert _policy("+policy=cos", "policy.l=10000", budget=430) == Cos(k0=0.001, k1=0.05, l=10000)
    assert _policy("+policy=nstep", "policy.l=[5000,7500]", budget=430) == NStep(0.05, 0.1, [5000, 7500])
    assert _policy("+policy=exp", "policy.gamma=0.99994", budget=430) == Exp(0.01, 0.99994)


@pytest.mark.parametrize("name", sorted(LRBENCH_10K))
@pytest.mark.parametrize("budget", [400, 430, 860])
def test_shipped_fractions_keep_the_shape_the_presets_stretched_from_10k_steps(name, budget):
    """The study presets dropped schedule.horizon_steps=10000: their policies must still mean what they did."""
    now = _policy(f"+policy={name}", budget=budget)
    before = Stretched(LRBENCH_10K[name], 10000, budget)
    lo, hi = lr_range(before, budget)
    for t in range(budget):  # equal up to the stretch's rounding: within 1% of the range, or one step away
        near = [before(u) for u in (t - 1, t, t + 1) if 0 <= u < budget]
        assert min(abs(now(t) - v) for v in near) <= 0.01 * (hi - lo), (t, now(t), before(t))


@pytest.mark.parametrize("name", sorted(LRBENCH_10K))
def test_horizon_steps_still_gives_lrbench_values_stretched_onto_the_budget(name):
    now = _policy(f"+policy={name}", "schedule.horizon_steps=10000", budget=860)
    before = Stretched(LRBENCH_10K[name], 10000, 860)
    # rel 1e-5: gamma_per_budget 0.5488 is 0.99994**10000 = 0.548802 to four digits
    assert [now(t) for t in range(860)] == pytest.approx([before(t) for t in range(860)], rel=1e-5)


def test_nstep_boundaries_and_exp_decay_are_fractions_of_the_budget():
    assert _policy("+policy=nstep", budget=400).l == (200, 300)
    for budget in (100, 1000):
        assert _policy("+policy=exp", budget=budget)(budget) == pytest.approx(0.01 * 0.5488, rel=1e-12)
        assert _policy("+policy=inv", budget=budget)(budget) == pytest.approx(0.01 * 2**-0.75, rel=1e-12)


def test_policy_fractions_are_of_the_steps_after_the_warmup():
    policy = _policy("+policy=cos", "+warmup=linear", budget=1000)  # warmup_frac 0.05: 50 steps
    assert policy == Warmup(Cos(k0=0.001, k1=0.05, l=950), 50)
    assert policy(25) == pytest.approx(0.025) and policy(50) == 0.05 and policy(1000) == pytest.approx(0.001)


def test_warmup_is_not_stretched_by_horizon_steps():
    policy = _policy("+policy=cos", "+warmup=linear", "warmup.warmup_steps=50", "schedule.horizon_steps=10000",
                     budget=1000)
    assert policy == Warmup(Stretched(Cos(k0=0.001, k1=0.05, l=10000), 10000, 950), 50)
    assert policy(25) == pytest.approx(0.025) and policy(50) == 0.05 and policy(999) == pytest.approx(0.001, rel=0.01)


def test_a_positive_fraction_of_a_tiny_budget_is_at_least_one_step():
    assert fraction_steps("l_frac", 0.2, 2) == 1 and fraction_steps("l_frac", 0.0, 2) == 0
    assert fraction_steps("l_frac", 0.25, 430) == 108  # rounded half up


@pytest.mark.parametrize(
    "overrides, key",
    [
        (["+policy=cos", "policy.l_frac=-0.1"], "policy.l_frac must be a number >= 0"),
        (["+policy=nstep", "policy.l_frac=[0.75,0.5]"], "policy.l must be strictly increasing"),
        (["+policy=exp", "policy.gamma_per_budget=1.5"], "policy.gamma_per_budget must be in (0, 1]"),
        (["+policy=step", "+policy.gamma_per_budget=0.5"], "policy.gamma_per_budget is only for a gamma per"),
        (["+policy=cos", "+warmup=linear", "warmup.warmup_steps=300", "trainer.max_steps=300"], "warmup: the warm-up"),
        (["+policy=cos", "+warmup=linear", "warmup.warmup_frac=1.0"], "warmup: the warm-up"),
        (["+policy=composite_sin2_fix", "policy.segments.0.policy.l=0"], "policy.segments[0].policy.l must be > 0"),
    ],
)
def test_a_bad_budget_relative_value_is_rejected_naming_the_key(overrides, key):
    with pytest.raises(ConfigError) as err:
        check(compose_job("dataset=synthetic", *overrides))
    assert str(err.value).startswith(key)


# -- fit -------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", POLICIES)
@pytest.mark.parametrize("budget", [30, 430, 100_000])
def test_every_shipped_policy_shows_its_shape_in_any_budget(name, budget):
    assert policy_fit(_policy(f"+policy={name}", budget=budget), budget).verdict == "ok"


def test_cos_written_for_10k_steps_is_flat_in_the_default_job():
    fit = policy_fit(Cos(k0=0.001, k1=0.05, l=10000), 430)
    assert fit.verdict == "flat" and fit.lr_max / fit.lr_min < FLAT_RATIO
    assert "430 optimizer steps" in fit.reason and "\n" not in fit.reason


def test_fix_is_never_flat_and_a_zero_lr_is():
    assert policy_fit(Fix(0.01), 430).verdict == "ok"
    assert policy_fit(Poly(0.0, 0.01, 1.0, 1), 430).verdict == "ok"  # 0.01 at t = 0, then 0


def test_a_cyclic_policy_with_less_than_half_a_cycle_in_the_run_is_partial_cycle():
    fit = policy_fit(Triangle2(0.01, 0.06, 2000), 430)  # only climbs, 0.01 -> 0.021: not flat
    assert fit.verdict == "partial_cycle" and "2000" in fit.reason
    assert policy_fit(Triangle2(0.01, 0.06, 430), 430).verdict == "ok"


def test_a_decay_longer_than_the_run_is_partial_decay():
    assert policy_fit(Poly(0.0, 0.01, 1.2, 1000), 430).verdict == "partial_decay"


def test_fit_counts_in_run_steps_through_stretch_and_warmup():
    stretched = Warmup(Stretched(Triangle2(0.01, 0.06, 2000), 10000, 400), 30)  # half cycle: 80 run steps
    assert policy_fit(stretched, 430).verdict == "ok"
    assert policy_fit(Warmup(Cos(0.001, 0.05, 430), 30), 430).verdict == "partial_cycle"  # 400 steps follow it


def test_lr_range_samples_long_runs_but_keeps_the_last_step():
    assert lr_range(NStep(0.1, 0.1, [999_999]), 1_000_000) == (pytest.approx(0.01), 0.1)


# -- the LR curve artifact -------------------------------------------------------------------------------------------


def test_lr_curve_has_a_plain_axis_from_zero_and_the_lr_range_in_its_title(tmp_path, monkeypatch):
    import matplotlib.figure

    from pipeline.training.artifacts import lr_curve_png

    saved = []
    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", lambda fig, path, **kw: saved.append(fig))
    lr_curve_png(Cos(k0=0.001, k1=0.05, l=10000), 430, tmp_path / "lr.png", "cos: run")
    (ax,) = saved[0].axes
    assert "0.04978" in ax.get_title() and "0.05" in ax.get_title()
    assert ax.get_ylim()[0] == 0
    formatter = ax.yaxis.get_major_formatter()
    assert formatter.get_useOffset() is False and formatter.get_offset() == ""


# -- end to end ------------------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_a_cos_run_anneals_over_its_budget_and_a_flat_one_is_tagged_and_warned(tmp_path, store_uri):
    proc = run_cli("+policy=cos", "trainer.max_steps=300", "dataset=synthetic", "trainer.progress=false",
                   cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "policy_fit" not in proc.stderr and "looks constant" not in proc.stderr
    flat = run_cli("+policy=cos", "policy.l=10000", "trainer.max_steps=30", "dataset=synthetic",
                   "trainer.progress=false", cwd=tmp_path)
    assert flat.returncode == 0, flat.stderr[-3000:]
    warnings = [line for line in flat.stderr.splitlines() if "looks constant" in line]
    assert len(warnings) == 1 and warnings[0].startswith("warning: policy COS")
    runs = {r.data.tags["policy_spec"]: r for r in train_runs(store_uri)}
    client = MlflowClient(store_uri)
    run = runs["lrPolicy_COS+k0_0.001+k1_0.05+l_300"]
    lr = sorted((m.step, m.value) for m in client.get_metric_history(run.info.run_id, "lr"))
    assert [s for s, _ in lr] == list(range(300))
    assert lr[0][1] == pytest.approx(0.05) and lr[-1][1] == pytest.approx(Cos(0.001, 0.05, 300)(299))
    assert lr[-1][1] < 0.0011
    assert run.data.tags["policy_fit"] == "ok"
    assert runs["lrPolicy_COS+k0_0.001+k1_0.05+l_10000"].data.tags["policy_fit"] == "flat"
    print(f"cos over 300 steps: lr {lr[0][1]:.4g} -> {lr[-1][1]:.4g}", file=sys.stderr)
