"""Unit tests for the LR policy values: LRBench's golden values, shape properties, validation and composition."""

import dataclasses
import math
import random

import numpy as np
import pytest
from omegaconf import ListConfig

from pipeline.policies import (
    Composite,
    Cos,
    Exp,
    Fix,
    Inv,
    NStep,
    Poly,
    Scaled,
    Segment,
    Sin,
    Sin2,
    SinExp,
    Step,
    Stretched,
    Triangle,
    Triangle2,
    TriangleExp,
    Warmup,
    curve,
)

K0, K1, L = 0.01, 0.06, 2000  # the settings of the golden tables in notes §1.5
GOLDEN_T = (0, 1000, 2000, 3000, 4000, 6000, 8000)

# notes §1.5, computed by running LRBench's code. Values are rounded to 4-5 significant digits, hence rel=1e-3.
GOLDEN = {
    "TRI": (Triangle(K0, K1, L), (0.01, 0.035, 0.06, 0.035, 0.01, 0.06, 0.01)),
    "TRI2": (Triangle2(K0, K1, L), (0.01, 0.035, 0.06, 0.035, 0.01, 0.035, 0.01)),
    "TRIEXP": (TriangleExp(K0, K1, 0.9999, L), (0.01, 0.03262, 0.05094, 0.02852, 0.01, 0.03744, 0.01)),
    "SIN": (Sin(K0, K1, L), (0.01, 0.04536, 0.06, 0.04536, 0.01, 0.06, 0.01)),
    "SIN2": (Sin2(K0, K1, L), (0.01, 0.04536, 0.06, 0.04536, 0.01, 0.035, 0.01)),
    "SINEXP": (SinExp(K0, K1, 0.9999, L), (0.01, 0.04199, 0.05094, 0.03619, 0.01, 0.03744, 0.01)),
    "COS": (Cos(K0, K1, L), (0.06, 0.035, 0.01, 0.035, 0.06, 0.01, 0.06)),
    "STEP": (Step(0.1, 0.1, 3000), (0.1, 0.1, 0.1, 0.01, 0.01, 0.001, 0.001)),
    "EXP": (Exp(0.01, 0.99994), (0.01, 0.009418, 0.008869, 0.008353, 0.007866, 0.006977, 0.006188)),
    "INV": (Inv(0.01, 1e-4, 0.75), (0.01, 0.009310, 0.008722, 0.008214, 0.007770, 0.007029, 0.006435)),
    "POLY": (Poly(0.0, 0.01, 1.2, 10000), (0.01, 0.008812, 0.007651, 0.006518, 0.005417, 0.003330, 0.001450)),
}


def _lrbench(name, k0, k1=None, gamma=None, p=None, l=None):
    """LRBench's code expressions, copied literally from notes §1.2, as the reference for our rewritten arithmetic."""
    tri = lambda t: (k1 - k0) * (2 / math.pi) * math.fabs(math.asin(math.sin(math.pi * t / (2 * l))))  # noqa: E731
    sin = lambda t: (k1 - k0) * math.fabs(math.sin(math.pi * t / (2 * l)))  # noqa: E731
    return {
        "STEP": lambda t: k0 * (gamma ** (math.floor(t / l))),
        "EXP": lambda t: k0 * (gamma**t),
        "INV": lambda t: k0 * ((1 + gamma * t) ** (-p)),
        "POLY": lambda t: (k1 - k0) * ((1.0 - 1.0 * t / l) ** p) + k0,
        "TRI": lambda t: tri(t) + k0,
        "TRI2": lambda t: tri(t) / (2 ** math.floor(t / (2 * l))) + k0,
        "TRIEXP": lambda t: tri(t) * (gamma**t) + k0,
        "SIN": lambda t: sin(t) + k0,
        "SIN2": lambda t: sin(t) / (2 ** math.floor(t / (2 * l))) + k0,
        "SINEXP": lambda t: sin(t) * (gamma**t) + k0,
        "COS": lambda t: (k1 - k0) * 0.5 * (1 + math.cos(math.pi * t / l)) + k0,
    }[name]


CYCLIC = [
    Triangle(K0, K1, L),
    Triangle2(K0, K1, L),
    TriangleExp(K0, K1, 0.99994, L),
    Sin(K0, K1, L),
    Sin2(K0, K1, L),
    SinExp(K0, K1, 0.99994, L),
    Cos(K0, K1, L),
]
DECAYING = [Step(0.05, 0.1, 3000), NStep(0.05, 0.1, [5000, 7500]), Exp(0.01, 0.99994), Inv(0.01, 1e-4, 0.75)]
DECAYING += [Poly(0.0, 0.01, 1.2, 10000), Poly(0.001, 0.01, 0.5, 7000)]
ALL = [Fix(0.01), *DECAYING, *CYCLIC]
SAMPLE_T = [*range(0, 20001, 97), 2 * L, 4 * L - 1, 10**6]


def _name(policy):
    return policy.lrbench_string()


# --- golden values --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", GOLDEN)
def test_policy_matches_lrbench_golden_values(name):
    policy, expected = GOLDEN[name]
    assert policy.lrbench_name == name
    assert [policy(t) for t in GOLDEN_T] == pytest.approx(expected, rel=1e-3)


def test_triangle2_acceptance_values():
    policy = Triangle2(k0=0.01, k1=0.06, l=2000)
    assert [policy(t) for t in (0, 1000, 2000, 6000)] == pytest.approx([0.01, 0.035, 0.06, 0.035], rel=1e-12)


@pytest.mark.parametrize(
    "policy",
    [p for p in ALL if p.lrbench_name not in ("FIX", "NSTEP")],
    ids=_name,
)
def test_policy_equals_lrbench_code_expression_at_many_steps(policy):
    params = {f.name: getattr(policy, f.name) for f in dataclasses.fields(policy)}
    reference = _lrbench(policy.lrbench_name, **params)
    # LRBench's POLY is only real up to t = l; past l ours clamps (tested separately).
    steps = [t for t in SAMPLE_T if policy.lrbench_name != "POLY" or t <= policy.l]
    assert [policy(t) for t in steps] == pytest.approx([reference(t) for t in steps], rel=1e-9, abs=1e-15)


def test_fix_is_k0_at_every_step():
    assert [Fix(0.01)(t) for t in (0, 1, 10**9)] == [0.01, 0.01, 0.01]


def test_step_multiplies_by_gamma_every_l_steps():
    policy = Step(k0=0.1, gamma=0.5, l=3000)
    assert [policy(t) for t in (0, 2999, 3000, 5999, 6000)] == pytest.approx([0.1, 0.1, 0.05, 0.05, 0.025])


def test_nstep_multiplies_by_gamma_at_each_boundary():
    policy = NStep(k0=0.05, gamma=0.1, l=[5000, 7500])
    values = [policy(t) for t in (0, 4999, 5000, 7499, 7500, 10**6)]
    assert values == pytest.approx([0.05, 0.05, 0.005, 0.005, 0.0005, 0.0005])


def test_exp_is_k0_times_gamma_to_the_step():
    assert Exp(k0=0.01, gamma=0.5)(3) == pytest.approx(0.00125)


def test_inv_matches_hand_computed_values():
    assert Inv(k0=1.0, gamma=1.0, p=1.0)(3) == pytest.approx(0.25)
    assert Inv(k0=0.01, gamma=1e-4, p=0.75)(10000) == pytest.approx(0.01 * 2**-0.75)


def test_poly_falls_from_k1_to_k0():
    policy = Poly(k0=0.0, k1=1.0, p=2.0, l=10)
    assert [policy(t) for t in (0, 5, 10)] == pytest.approx([1.0, 0.25, 0.0])


def test_cos_starts_at_k1_and_reaches_k0_after_l_steps():
    policy = Cos(k0=0.0, k1=1.0, l=100)
    assert [policy(t) for t in (0, 50, 100, 150, 200)] == pytest.approx([1.0, 0.5, 0.0, 0.5, 1.0], abs=1e-12)


# --- properties -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("policy", [Triangle(K0, K1, L), Sin(K0, K1, L), Cos(K0, K1, L)], ids=_name)
def test_wave_repeats_every_two_l_steps(policy):
    for t in SAMPLE_T:
        assert policy(t + 2 * policy.l) == pytest.approx(policy(t), rel=1e-12)


@pytest.mark.parametrize("policy", [Triangle2(K0, K1, L), Sin2(K0, K1, L)], ids=_name)
def test_triangle2_and_sin2_halve_amplitude_each_cycle(policy):
    for t in range(0, 6 * L, 131):
        amplitude, next_cycle = policy(t) - policy.k0, policy(t + 2 * policy.l) - policy.k0
        assert next_cycle == pytest.approx(amplitude / 2, rel=1e-9, abs=1e-15)


@pytest.mark.parametrize("policy", CYCLIC, ids=_name)
def test_cyclic_policy_stays_between_k0_and_k1(policy):
    eps = 1e-12  # (k1 - k0) * 1 + k0 may differ from k1 in the last bit
    assert all(policy.k0 - eps <= lr <= policy.k1 + eps for lr in curve(policy, 3 * 2 * L + 1))


@pytest.mark.parametrize("policy", DECAYING, ids=_name)
def test_decaying_policy_never_increases(policy):
    values = curve(policy, 12001)
    assert all(b <= a for a, b in zip(values, values[1:]))


def test_nstep_is_random_access():
    policy = NStep(k0=0.05, gamma=0.1, l=[1000, 2000])
    steps = list(range(0, 3000, 7))
    shuffled = random.Random(0).sample(steps, len(steps))
    by_step = dict(zip(shuffled, [policy(t) for t in shuffled]))
    assert [by_step[t] for t in steps] == [policy(t) for t in steps]
    assert policy(2500) == pytest.approx(0.0005)  # LRBench gives gamma**1 here when 2500 is its first call


def test_two_nstep_instances_do_not_interfere():
    first = NStep(k0=1.0, gamma=0.5, l=[10, 20])
    before = [first(t) for t in range(30)]
    second = NStep(k0=2.0, gamma=0.1, l=[5])
    second(100)
    assert [first(t) for t in range(30)] == before


def test_nstep_accepts_listconfig_and_stores_a_tuple_of_ints():
    policy = NStep(k0=0.05, gamma=0.1, l=ListConfig([5000, 7.5e3]))
    assert policy.l == (5000, 7500) and all(type(b) is int for b in policy.l)


def test_poly_past_l_returns_float_k0_not_complex():
    policy = Poly(k0=0.001, k1=0.01, p=1.2, l=100)
    for t in (100, 101, 150, 10**6):
        lr = policy(t)
        assert type(lr) is float and lr == pytest.approx(0.001)


def test_policy_is_hashable_and_frozen():
    policy = Triangle2(K0, K1, L)
    assert hash(policy) == hash(Triangle2(0.01, 0.06, 2000)) and policy == Triangle2(0.01, 0.06, 2000)
    assert len({*ALL, *ALL}) == len(ALL)
    with pytest.raises(dataclasses.FrozenInstanceError):
        policy.k0 = 0.02  # type: ignore[misc]


@pytest.mark.parametrize("t", [np.int64(3000), np.int32(3000)])
def test_policy_accepts_numpy_int_steps(t):
    assert Step(0.1, 0.1, 3000)(t) == pytest.approx(0.01)


@pytest.mark.parametrize("policy", ALL, ids=_name)
@pytest.mark.parametrize("t", [-1, 1.5, 3.0, True, "3", None])
def test_policy_rejects_step_that_is_not_a_non_negative_int(policy, t):
    with pytest.raises(ValueError, match=r"^t must be an int >= 0"):
        policy(t)


def test_curve_lists_the_lr_of_each_step():
    assert curve(Step(1.0, 0.5, 2), 5) == [1.0, 1.0, 0.5, 0.5, 0.25]
    with pytest.raises(ValueError, match="^steps"):
        curve(Fix(0.1), -1)


# --- validation -----------------------------------------------------------------------------------------------------

BAD_PARAMS = [
    (Fix, dict(k0=0), "k0", "got 0"),
    (Exp, dict(k0=-0.1, gamma=0.9), "k0", "got -0.1"),
    (Triangle, dict(k0=-0.01, k1=0.06, l=2000), "k0", "got -0.01"),
    (Triangle, dict(k0=0.06, k1=0.01, l=2000), "k1", "(k0=0.06, k1=0.01)"),
    (Sin, dict(k0=0.01, k1=0.01, l=2000), "k1", "(k0=0.01, k1=0.01)"),
    (Poly, dict(k0=0.01, k1=0.001, p=1.0, l=100), "k1", "k1 is the START LR"),
    (Step, dict(k0=0.1, gamma=0, l=100), "gamma", "got 0"),
    (Step, dict(k0=0.1, gamma=1.5, l=100), "gamma", "got 1.5"),
    (Exp, dict(k0=0.1, gamma=0.0), "gamma", "got 0.0"),
    (TriangleExp, dict(k0=0.01, k1=0.06, gamma=1.5, l=2000), "gamma", "got 1.5"),
    (SinExp, dict(k0=0.01, k1=0.06, gamma=-0.5, l=2000), "gamma", "got -0.5"),
    (Inv, dict(k0=0.01, gamma=0, p=0.75), "gamma", "got 0"),
    (Triangle, dict(k0=0.01, k1=0.06, l=0), "l", "got 0"),
    (Triangle2, dict(k0=0.01, k1=0.06, l=-2000), "l", "got -2000"),
    (Cos, dict(k0=0.01, k1=0.06, l=2000.5), "l", "got 2000.5"),
    (Step, dict(k0=0.1, gamma=0.1, l=0), "l", "got 0"),
    (Poly, dict(k0=0.0, k1=0.01, p=1.0, l=-1), "l", "got -1"),
    (NStep, dict(k0=0.1, gamma=0.1, l=[2000, 1000]), "l", "got [2000, 1000]"),
    (NStep, dict(k0=0.1, gamma=0.1, l=[1000, 1000]), "l", "got [1000, 1000]"),
    (NStep, dict(k0=0.1, gamma=0.1, l=[]), "l", "got []"),
    (NStep, dict(k0=0.1, gamma=0.1, l=1000), "l", "got 1000"),
    (NStep, dict(k0=0.1, gamma=0.1, l=[0, 1000]), "l[0]", "got 0"),
    (Inv, dict(k0=0.01, gamma=1e-4, p=0), "p", "got 0"),
    (Poly, dict(k0=0.0, k1=0.01, p=-1.2, l=100), "p", "got -1.2"),
    (Fix, dict(k0="0.01"), "k0", "got str '0.01'"),
    (Sin2, dict(k0=0.01, k1=0.06, l="2000"), "l", "got str '2000'"),
    (Fix, dict(k0=True), "k0", "got bool True"),
    (Step, dict(k0=0.1, gamma=0.1, l=True), "l", "got bool True"),
    (Fix, dict(k0=None), "k0", "got NoneType None"),
    (Fix, dict(k0=float("nan")), "k0", "got nan"),
    (NStep, dict(k0=0.1, gamma=0.1, l=[1000, "x"]), "l[1]", "got str 'x'"),
]


@pytest.mark.parametrize(("cls", "kwargs", "field", "shows"), BAD_PARAMS, ids=lambda v: getattr(v, "__name__", None))
def test_bad_parameter_raises_value_error_naming_the_field_and_the_bad_value(cls, kwargs, field, shows):
    with pytest.raises(ValueError) as error:
        cls(**kwargs)
    message = str(error.value)
    assert message.startswith(f"{field} must be"), message
    assert shows in message, message


def test_validation_messages_state_the_accepted_range():
    with pytest.raises(ValueError, match=r"^l must be > 0 \(optimizer steps; half a cycle\), got 0$"):
        Triangle2(k0=0.01, k1=0.06, l=0)
    with pytest.raises(ValueError, match=r"^k1 must be > k0 for a cyclic policy \(k0=0.06, k1=0.01\)$"):
        Triangle(k0=0.06, k1=0.01, l=2000)
    with pytest.raises(ValueError, match=r"^gamma must be in \(0, 1\] .*got 1.5$"):
        Exp(k0=0.01, gamma=1.5)
    with pytest.raises(ValueError, match=r"^l must be strictly increasing step boundaries, got \[2000, 1000\]$"):
        NStep(k0=0.01, gamma=0.1, l=[2000, 1000])


def test_cyclic_policy_allows_k0_zero_and_gamma_one():
    assert Triangle(0, 0.06, 10)(10) == pytest.approx(0.06)
    assert TriangleExp(0.0, 0.06, 1, 10)(30) == pytest.approx(0.06)


# --- Composite ------------------------------------------------------------------------------------------------------


def _sin_then_exp(clock):
    return Composite([Segment(Sin2(0.01, 0.06, 1000), until_steps=5000), Segment(Exp(0.005, 0.999))], clock=clock)


def test_composite_local_clock_restarts_each_segment_at_its_boundary():
    composite, first, second = _sin_then_exp("local"), Sin2(0.01, 0.06, 1000), Exp(0.005, 0.999)
    assert composite(4999) == first(4999)
    assert composite(5000) == second(0) == 0.005
    assert composite(5100) == second(100)


def test_composite_global_clock_gives_segments_the_global_step():
    composite, second = _sin_then_exp("global"), Exp(0.005, 0.999)
    assert composite(4999) == Sin2(0.01, 0.06, 1000)(4999)
    assert composite(5000) == second(5000)
    assert composite(5100) == second(5100)


def test_composite_of_three_segments_from_dicts_as_hydra_delivers_them():
    composite = Composite(
        [
            {"policy": Fix(0.1), "until_steps": 100},
            {"policy": Triangle(0.01, 0.02, 50), "until_steps": 300},
            {"policy": Fix(0.001), "until_steps": None},
        ]
    )
    assert [composite(t) for t in (0, 99, 100, 150, 299, 300, 10**6)] == pytest.approx(
        [0.1, 0.1, 0.01, 0.02, 0.01 + 0.01 / 50, 0.001, 0.001]
    )
    assert composite.segments[1] == Segment(Triangle(0.01, 0.02, 50), 300)


def test_composite_is_random_access_and_hashable():
    composite = _sin_then_exp("local")
    steps = list(range(0, 10000, 13))
    shuffled = random.Random(1).sample(steps, len(steps))
    by_step = dict(zip(shuffled, [composite(t) for t in shuffled]))
    assert [by_step[t] for t in steps] == curve(composite, 10000)[::13]
    assert hash(composite) == hash(_sin_then_exp("local"))


def test_composite_with_one_segment_is_that_policy():
    assert Composite([Segment(Cos(0.0, 1.0, 10))])(5) == Cos(0.0, 1.0, 10)(5)


BAD_COMPOSITES = [
    (dict(segments=[]), "segments must be a non-empty list"),
    (dict(segments=Fix(0.1)), "segments must be a non-empty list"),
    (dict(segments=[Segment(Fix(0.1)), Segment(Fix(0.01))]), "segments[0].until_steps is required"),
    (dict(segments=[Segment(Fix(0.1), 100), Segment(Fix(0.01), 200)]), "segments[1].until_steps must be omitted"),
    (
        dict(segments=[Segment(Fix(0.1), 100), Segment(Fix(0.2), 100), Segment(Fix(0.01))]),
        "segments[1].until_steps must be > segments[0].until_steps=100",
    ),
    (
        dict(segments=[{"policy": Fix(0.1), "until_steps": 0}, {"policy": Fix(0.01)}]),
        "segments[0].until_steps must be > 0",
    ),
    (
        dict(segments=[{"policy": Fix(0.1), "until_steps": "5000"}, {"policy": Fix(0.01)}]),
        "segments[0].until_steps must be a number",
    ),
    (
        dict(segments=[{"policy": Fix(0.1), "until_steps": 5}, {"policy": {"k0": 0.1}}]),
        "segments[1].policy must be a policy",
    ),
    (dict(segments=[{"policy": Fix(0.1), "until_steps": 5}, {"policy": 0.1}]), "segments[1].policy must be a policy"),
    (dict(segments=[{"until_steps": 5}, {"policy": Fix(0.1)}]), "segments[0].policy is required"),
    (dict(segments=[{"policy": Fix(0.1), "until": 5}, {"policy": Fix(0.1)}]), "segments[0] has unknown keys ['until']"),
    (dict(segments=[Fix(0.1)]), "segments[0] must be a segment"),
    (dict(segments=[Segment(Fix(0.1))], clock="wall"), "clock must be one of ['local', 'global'], got 'wall'"),
]


@pytest.mark.parametrize(("kwargs", "message"), BAD_COMPOSITES, ids=lambda v: v if isinstance(v, str) else None)
def test_bad_composite_raises_value_error_naming_the_segment(kwargs, message):
    with pytest.raises(ValueError) as error:
        Composite(**kwargs)
    assert str(error.value).startswith(message), str(error.value)


def test_segment_rejects_bad_until_steps_by_field_name():
    with pytest.raises(ValueError, match=r"^until_steps must be > 0"):
        Segment(Fix(0.1), until_steps=-5)


# --- Warmup ---------------------------------------------------------------------------------------------------------


def test_warmup_ramps_linearly_from_start_lr_to_the_policys_first_value():
    warm = Warmup(Fix(0.01), warmup_steps=100)
    assert [warm(t) for t in (0, 25, 50, 99, 100)] == pytest.approx([0.0, 0.0025, 0.005, 0.0099, 0.01])
    assert Warmup(Fix(0.01), warmup_steps=100, start_lr=0.002)(50) == pytest.approx(0.006)


def test_warmup_then_follows_the_policy_shifted_by_warmup_steps():
    inner = Triangle2(K0, K1, L)
    warm = Warmup(inner, warmup_steps=500)
    assert warm(499) == pytest.approx(K0 * 499 / 500)
    assert all(warm(500 + t) == inner(t) for t in SAMPLE_T)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        (dict(policy=Fix(0.1), warmup_steps=0), "warmup_steps"),
        (dict(policy=Fix(0.1), warmup_steps=2.5), "warmup_steps"),
        (dict(policy=Fix(0.1), warmup_steps="500"), "warmup_steps"),
        (dict(policy=Fix(0.1), warmup_steps=500, start_lr=-0.1), "start_lr"),
        (dict(policy=Fix(0.1), warmup_steps=500, start_lr="0"), "start_lr"),
        (dict(policy={"k0": 0.1}, warmup_steps=500), "policy"),
    ],
)
def test_bad_warmup_raises_value_error_naming_the_field(kwargs, field):
    with pytest.raises(ValueError, match=rf"^{field} must be"):
        Warmup(**kwargs)


# --- LRBench string form --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("policy", "expected"),
    [
        (Fix(0.01), "lrPolicy_FIX+k0_0.01"),
        (Triangle2(0.01, 0.06, 2000), "lrPolicy_TRI2+k0_0.01+k1_0.06+l_2000"),
        (TriangleExp(0.01, 0.06, 0.99994, 2000), "lrPolicy_TRIEXP+k0_0.01+k1_0.06+gamma_0.99994+l_2000"),
        (NStep(0.05, 0.1, [5000, 7500]), "lrPolicy_NSTEP+k0_0.05+gamma_0.1+l_5000+7500"),
        (Inv(0.01, 1e-4, 0.75), "lrPolicy_INV+k0_0.01+gamma_0.0001+p_0.75"),
        (Poly(0, 0.01, 1.2, 10000), "lrPolicy_POLY+k0_0.0+k1_0.01+p_1.2+l_10000"),
        (
            Composite([Segment(Sin2(0.01, 0.06, 1000), 5000), Segment(Fix(0.005))]),
            "lrPolicy_SIN2+k0_0.01+k1_0.06+l_1000-lrPolicy_FIX+k0_0.005-AT-5000",
        ),
        (
            Composite([Segment(Fix(0.1), 10), Segment(Fix(0.01), 20), Segment(Fix(0.001))], clock="global"),
            "lrPolicy_FIX+k0_0.1-lrPolicy_FIX+k0_0.01-lrPolicy_FIX+k0_0.001-AT-10+20-CLOCK-global",
        ),
        (Warmup(Fix(0.01), 500), "warmup_500-lrPolicy_FIX+k0_0.01"),
        (Warmup(Fix(0.01), 500, 0.001), "warmup_500+start_0.001-lrPolicy_FIX+k0_0.01"),
    ],
    ids=lambda v: v if isinstance(v, str) else None,
)
def test_lrbench_string_matches_lrbench_format(policy, expected):
    assert policy.lrbench_string() == expected


def test_every_lrbench_function_of_the_papers_has_a_class():
    names = {type(p).lrbench_name for p in ALL}
    decaying = {"FIX", "STEP", "NSTEP", "EXP", "INV", "POLY"}
    assert names == decaying | {"TRI", "TRI2", "TRIEXP", "SIN", "SIN2", "SINEXP", "COS"}


# -- schedule modifiers used by the study presets ---------------------------------------------------------------


def test_scaled_policy_equals_the_policy_with_scaled_k_values():
    base, scaled = Triangle2(k0=0.01, k1=0.06, l=100), Triangle2(k0=0.05, k1=0.3, l=100)
    wrapped = Scaled(base, k_scale=5)
    for t in range(0, 1000, 37):
        assert wrapped(t) == pytest.approx(scaled(t), rel=1e-12)


def test_stretched_policy_fits_its_horizon_into_the_run_budget():
    base = NStep(k0=0.1, gamma=0.1, l=[5000, 7500])
    run = Stretched(base, horizon_steps=10000, total_steps=1000)
    assert run(499) == base(4990) and run(500) == base(5000) and run(749) == base(7490) and run(750) == base(7500)
    assert "STRETCH-10000/1000" in run.lrbench_string()


@pytest.mark.parametrize(
    "build, key",
    [
        (lambda: Scaled(Fix(k0=0.1), k_scale=0), "k_scale"),
        (lambda: Stretched(Fix(k0=0.1), 0, 10), "horizon_steps"),
        (lambda: Stretched(Fix(k0=0.1), 10, 0), "total_steps"),
    ],
)
def test_schedule_modifiers_name_the_bad_field(build, key):
    with pytest.raises(ValueError, match=f"^{key}"):
        build()
