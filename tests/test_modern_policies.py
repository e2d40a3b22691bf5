"""Today's schedule families (issue 20) against their published formulas: one-cycle against torch's OneCycleLR
stepped in order, WSD, linear decay and cosine with warm-up against HF's formulas and hand-computed points."""

import dataclasses
import math

import pytest
import torch
from conftest import compose_job

from pipeline.config.checks import ConfigError, check
from pipeline.policies import CosineWarmup, LinearDecay, OneCycle, WarmupStableDecay

# -- references: the published formulas, written out (notes/schedules_today.md) -------------------------------------


def _hf_warmup(t, warmup):
    """HF's warm-up multiplier: t / max(1, W)."""
    return t / max(1, warmup)


def _hf_wsd(t, peak, warmup, stable, decay, shape, min_lr_ratio):
    """HF get_wsd_schedule (linear warm-up), as peak x its multiplier."""
    if t < warmup:
        return peak * max(0.0, _hf_warmup(t, warmup) * (1 - min_lr_ratio) + min_lr_ratio)
    if t < warmup + stable:
        return peak
    if t < warmup + stable + decay:
        s = (t - warmup - stable) / max(1, decay)
        factor = {"linear": 1 - s, "cosine": 0.5 * (1 + math.cos(math.pi * s)), "1-sqrt": 1 - math.sqrt(s)}[shape]
        return peak * max(0.0, factor * (1 - min_lr_ratio) + min_lr_ratio)
    return peak * min_lr_ratio


def _hf_linear(t, peak, warmup, total):
    """HF get_linear_schedule_with_warmup."""
    if t < warmup:
        return peak * _hf_warmup(t, warmup)
    return peak * max(0.0, (total - t) / max(1, total - warmup))


def _hf_cosine(t, peak, warmup, total, min_lr_ratio=0.0):
    """HF get_cosine_schedule_with_warmup (min_lr_ratio 0) / get_cosine_with_min_lr_schedule_with_warmup."""
    if t < warmup:
        return peak * _hf_warmup(t, warmup)
    progress = (t - warmup) / max(1, total - warmup)
    factor = 0.5 * (1 + math.cos(math.pi * 0.5 * 2.0 * progress))
    return peak * max(0.0, factor * (1 - min_lr_ratio) + min_lr_ratio)


def _torch_one_cycle(total, **kwargs):
    """torch's OneCycleLR stepped in order: the LR the optimizer uses at steps 0 .. total - 1."""
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.123, momentum=0.9)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, total_steps=total, **kwargs)
    seen = []
    for _ in range(total):
        seen.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return seen


# -- one-cycle -------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "total, max_lr, pct_start, anneal_strategy, div_factor, final_div_factor, three_phase",
    [
        (100, 0.1, 0.3, "cos", 25.0, 1e4, False),
        (430, 0.06, 0.3, "linear", 25.0, 1e4, False),
        (1000, 1.0, 0.25, "cos", 10.0, 100.0, True),
        (97, 0.5, 0.4, "linear", 25.0, 1e4, True),
        (7, 0.02, 0.5, "cos", 3.0, 5.0, False),
    ],
)
def test_one_cycle_equals_torch_one_cycle_lr_stepped_in_order(total, max_lr, pct_start, anneal_strategy, div_factor,
                                                              final_div_factor, three_phase):
    expected = _torch_one_cycle(total, max_lr=max_lr, pct_start=pct_start, anneal_strategy=anneal_strategy,
                                div_factor=div_factor, final_div_factor=final_div_factor, three_phase=three_phase)
    ours = OneCycle(max_lr, total, pct_start, anneal_strategy, div_factor, final_div_factor, 3 if three_phase else 2)
    assert max(abs(ours(t) - lr) for t, lr in enumerate(expected)) <= 1e-9
    assert ours(2 * total) == ours(total - 1)  # torch refuses to go on; the value stays at the final LR


def test_one_cycle_starts_peaks_and_ends_where_smith_says():
    policy = OneCycle(max_lr=0.1, total_steps=1000)  # rise until step 299, then anneal to step 999
    assert policy(0) == pytest.approx(0.1 / 25) and policy(299) == pytest.approx(0.1)
    assert policy(999) == pytest.approx(0.1 / 25 / 1e4) and max(policy(t) for t in range(1000)) == policy(299)


# -- warmup-stable-decay ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", ["linear", "cosine", "1-sqrt"])
@pytest.mark.parametrize("end_ratio", [0.0, 0.1])
def test_wsd_equals_hf_get_wsd_schedule(shape, end_ratio):
    peak, total, warmup, decay = 0.05, 430, 22, 86
    policy = WarmupStableDecay(peak, total, decay, warmup, peak * end_ratio, shape)
    # HF warms up from min_lr_ratio * peak, this policy from 0: the same when end_ratio is 0.
    first = 0 if end_ratio == 0 else warmup
    for t in range(first, total + 50):
        assert policy(t) == pytest.approx(_hf_wsd(t, peak, warmup, total - warmup - decay, decay, shape, end_ratio),
                                          rel=1e-12, abs=1e-15), t


@pytest.mark.parametrize("shape, at_85", [("linear", 0.75), ("cosine", 0.5 * (1 + math.cos(math.pi / 4))),
                                          ("1-sqrt", 0.5)])
def test_wsd_warms_up_holds_and_cools_down_at_hand_computed_points(shape, at_85):
    policy = WarmupStableDecay(peak_lr=1.0, total_steps=100, decay_steps=20, warmup_steps=10, decay_shape=shape)
    assert [policy(t) for t in (0, 5, 10, 50, 80)] == pytest.approx([0.0, 0.5, 1.0, 1.0, 1.0])
    assert policy(85) == pytest.approx(at_85) and policy(100) == policy(500) == 0.0


# -- linear decay (to zero) ------------------------------------------------------------------------------------------


def test_linear_decay_equals_hf_linear_schedule_with_warmup():
    policy = LinearDecay(peak_lr=0.05, total_steps=430, warmup_steps=22)
    for t in range(500):
        assert policy(t) == pytest.approx(_hf_linear(t, 0.05, 22, 430), rel=1e-12, abs=1e-15), t


def test_linear_decay_to_zero_or_to_an_end_lr_at_hand_computed_points():
    assert [LinearDecay(0.1, 100)(t) for t in (0, 25, 50, 100, 200)] == pytest.approx([0.1, 0.075, 0.05, 0, 0])
    warm = LinearDecay(0.1, 110, warmup_steps=10, end_lr=0.01)
    assert [warm(t) for t in (0, 5, 10, 60, 110)] == pytest.approx([0, 0.05, 0.1, 0.055, 0.01])


# -- cosine with warm-up ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("end_ratio", [0.0, 0.02])
def test_cosine_warmup_equals_hf_cosine_schedule_with_warmup(end_ratio):
    policy = CosineWarmup(peak_lr=0.05, total_steps=430, warmup_steps=22, end_lr=0.05 * end_ratio)
    for t in range(431):
        expected = _hf_cosine(t, 0.05, 22, 430, end_ratio)
        assert policy(t) == pytest.approx(expected, rel=1e-12, abs=1e-15), t


def test_cosine_warmup_at_hand_computed_points_and_flat_after_its_end():
    policy = CosineWarmup(peak_lr=1.0, total_steps=110, warmup_steps=10)
    assert [policy(t) for t in (0, 5, 10, 60, 110)] == pytest.approx([0, 0.5, 1, 0.5, 0], abs=1e-15)
    assert policy(200) == 0.0  # HF's cosine would rise again after total_steps


# -- validation, names and configs -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "build, field",
    [
        (lambda: WarmupStableDecay(0.05, 100, 20, decay_shape="sqrt"), "decay_shape"),
        (lambda: WarmupStableDecay(0.05, 100, 90, warmup_steps=20), r"warmup_steps \+ decay_steps"),
        (lambda: WarmupStableDecay(0.05, 100, 0), "decay_steps"),
        (lambda: LinearDecay(0.05, 100, end_lr=0.1), "end_lr"),
        (lambda: LinearDecay(0.05, 100, warmup_steps=100), "warmup_steps"),
        (lambda: CosineWarmup(0.05, 100, warmup_steps=-1), "warmup_steps"),
        (lambda: CosineWarmup(-0.05, 100), "peak_lr"),
        (lambda: OneCycle(0.1, 100, anneal_strategy="exp"), "anneal_strategy"),
        (lambda: OneCycle(0.1, 100, phases=True), "phases"),
        (lambda: OneCycle(0.1, 100, pct_start=1.0), "pct_start"),
        (lambda: OneCycle(0.1, 3), r"pct_start \* total_steps"),
    ],
)
def test_bad_values_raise_value_error_naming_the_field(build, field):
    with pytest.raises(ValueError, match=rf"^{field} must be"):
        build()


def test_lrbench_strings_name_every_field():
    policy = WarmupStableDecay(0.05, 430, 86, 22)
    assert policy.lrbench_string() == (
        "lrPolicy_WSD+peak_lr_0.05+total_steps_430+decay_steps_86+warmup_steps_22+end_lr_0.0+decay_shape_1-sqrt")
    assert OneCycle(0.06, 430).lrbench_string().startswith("lrPolicy_ONECYCLE+max_lr_0.06+total_steps_430")


@pytest.mark.parametrize("policy", [WarmupStableDecay(0.05, 430, 86, 22), LinearDecay(0.05, 430, 22),
                                    OneCycle(0.06, 430), CosineWarmup(0.05, 430, 22)], ids=lambda p: p.lrbench_name)
def test_fields_are_plain_numbers_and_strings_so_a_run_can_record_them(policy):
    assert all(type(getattr(policy, f.name)) in (int, float, str) for f in dataclasses.fields(policy))


@pytest.mark.parametrize(
    "option, expected",
    [
        ("wsd", WarmupStableDecay(0.05, 430, 86, 22, 0.0, "1-sqrt")),
        ("linear_decay", LinearDecay(0.05, 430, 22, 0.0)),
        ("one_cycle", OneCycle(0.06, 430)),
        ("cosine_warmup", CosineWarmup(0.05, 430, 22, 0.0)),
    ],
)
def test_configs_span_the_budget_of_the_default_job(option, expected):
    assert check(compose_job("dataset=synthetic", f"+policy={option}")).policy.for_budget(430) == expected


def test_config_fields_can_be_overridden_on_the_command_line():
    job = check(compose_job("dataset=synthetic", "+policy=wsd", "policy.decay_shape=cosine", "policy.decay_steps=50"))
    assert job.policy.for_budget(430) == WarmupStableDecay(0.05, 430, 50, 22, 0.0, "cosine")
    with pytest.raises(ConfigError, match=r"^policy\.decay_shape must be one of"):
        check(compose_job("dataset=synthetic", "+policy=wsd", "policy.decay_shape=sqrt"))


@pytest.mark.parametrize("phases,strategy,pct", [(2, "cos", 0.3), (2, "linear", 0.25), (3, "cos", 0.3),
                                                 (3, "linear", 0.4)])
def test_one_cycle_momentum_is_torchs_cycled_momentum(phases, strategy, pct):
    import torch

    from pipeline.policies import OneCycleMomentum
    from pipeline.policies.momentum import for_run

    total = 97
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1, momentum=0.9)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=0.1, total_steps=total, pct_start=pct,
                                                    anneal_strategy=strategy, three_phase=phases == 3,
                                                    base_momentum=0.85, max_momentum=0.95)
    expected = []
    for _ in range(total):
        expected.append(optimizer.param_groups[0]["momentum"])
        optimizer.step()
        scheduler.step()
    policy = for_run(OneCycleMomentum(0.85, 0.95, pct, strategy, phases), total)
    assert policy.total_steps == total
    assert max(abs(policy(t) - m) for t, m in enumerate(expected)) <= 1e-9


def test_one_cycle_momentum_refuses_settings_naming_them():
    from pipeline.policies import OneCycleMomentum

    with pytest.raises(ValueError, match="max_momentum must be >= base_momentum"):
        OneCycleMomentum(0.95, 0.85)
    with pytest.raises(ValueError, match="anneal_strategy must be one of"):
        OneCycleMomentum(anneal_strategy="step")
    with pytest.raises(ValueError, match="pct_start must be in"):
        OneCycleMomentum(pct_start=1.5)


@pytest.mark.slow
def test_one_cycle_momentum_takes_the_one_cycle_policys_phases_and_a_job_records_torchs_momentum(tmp_path, store_uri):
    from conftest import run_cli, train_runs
    from mlflow.tracking import MlflowClient

    from pipeline.policies import OneCycleMomentum

    job = check(compose_job("dataset=synthetic", "+policy=one_cycle", "policy.pct_start=0.4",
                            "policy.anneal_strategy=linear", "momentum=one_cycle"))
    assert job.momentum == OneCycleMomentum(0.85, 0.95, 0.4, "linear", 2)
    assert check(compose_job("dataset=synthetic", "+policy=cos", "momentum=one_cycle")).momentum.pct_start == 0.3

    done = run_cli("dataset=synthetic", "+policy=one_cycle", "momentum=one_cycle", "trainer.max_steps=40",
                   "trainer.eval_every_steps=20", "trainer.progress=false", cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    (run,) = train_runs(store_uri)
    recorded = {m.step: m.value for m in MlflowClient(store_uri).get_metric_history(run.info.run_id, "momentum")}
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1, momentum=0.9)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=0.06, total_steps=40)
    for step in range(40):
        assert recorded[step] == pytest.approx(optimizer.param_groups[0]["momentum"], abs=1e-6), step
        optimizer.step()
        scheduler.step()
