"""Every option of the `policy` config group builds a working policy and rejects bad values by name."""

import math
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from pipeline.policies import Fix
from pipeline.policies.build import PolicyChain, build

CONF = Path(__file__).resolve().parents[1] / "conf"
POLICY_FILES = sorted((CONF / "policy").glob("*.yaml"))
STEPS = [*range(0, 20001, 250), 1, 4999, 5000, 9999, 19999]
LR_FUNCTIONS = {"Fix", "Step", "NStep", "Exp", "Inv", "Poly", "Triangle", "Triangle2", "TriangleExp"}
LR_FUNCTIONS |= {"Sin", "Sin2", "SinExp", "Cos"}
# At a span of 10,000 steps the shipped fractions of the budget give LRBench's classic 10k-step settings.
SPAN = 10_000


def _ids(path):
    return path.stem


def _node(path, **changes):
    return OmegaConf.to_container(OmegaConf.merge(OmegaConf.load(path), changes))


def _policy(path, **changes):
    return build(_node(path, **changes), SPAN)


def test_policy_group_has_a_config_for_each_lrbench_function():
    targets = {OmegaConf.load(path)._target_.rsplit(".", 1)[-1] for path in POLICY_FILES}
    assert LR_FUNCTIONS <= targets


@pytest.mark.parametrize("path", POLICY_FILES, ids=_ids)
def test_policy_config_builds_a_finite_non_negative_policy(path):
    policy = _policy(path)
    for t in STEPS:
        lr = policy(t)
        assert type(lr) is float and math.isfinite(lr) and lr >= 0.0, (t, lr)
    # POLY ends at k0 = 0 and the new families warm up from (or decay to) 0; the LRBench ones never reach 0.
    assert min(policy(t) for t in STEPS) > 0 or path.stem in {"poly", "wsd", "linear_decay", "cosine_warmup"}
    assert policy.lrbench_string().startswith("lrPolicy_")
    assert hash(policy) == hash(_policy(path))


@pytest.mark.parametrize("path", [p for p in POLICY_FILES if "l" in OmegaConf.load(p)], ids=_ids)
def test_policy_config_with_l_zero_fails_naming_l(path):
    with pytest.raises(ValueError, match=r"^l must be"):
        _policy(path, l=0)


@pytest.mark.parametrize("path", [p for p in POLICY_FILES if "k0" in OmegaConf.load(p)], ids=_ids)
def test_policy_config_with_a_string_k0_fails_naming_k0(path):
    with pytest.raises(ValueError, match=r"^k0 must be a number"):
        _policy(path, k0="fast")


def test_composite_config_names_the_bad_segment():
    path = CONF / "policy" / "composite_sin2_fix.yaml"
    node = _node(path)
    node["segments"][0]["policy"]["l"] = 0
    with pytest.raises(ValueError, match=r"^segments\[0\]\.policy\.l must be > 0"):
        build(node, SPAN)
    node = _node(path)
    node["segments"][0]["until_steps"] = -1
    with pytest.raises(ValueError, match=r"^segments\[0\]\.until_steps must be > 0"):
        build(node, SPAN)


def test_composite_config_switches_policy_at_until_steps_with_a_local_clock():
    policy = _policy(CONF / "policy" / "composite_sin2_fix.yaml")
    assert policy(0) == pytest.approx(0.01) and policy(1000) == pytest.approx(0.06)
    assert policy(5000) == policy(20000) == pytest.approx(0.005)


def test_linear_warmup_config_ramps_over_its_fraction_of_the_run():
    cfg = OmegaConf.load(CONF / "warmup" / "linear.yaml")
    assert "_target_" not in cfg  # the job builds the warm-up into its PolicyChain
    chain = PolicyChain(Fix(0.01), warmup_steps=cfg.warmup_steps, warmup_frac=cfg.warmup_frac,
                        warmup_start_lr=cfg.start_lr)
    warm = chain.for_budget(1000)
    steps = round(cfg.warmup_frac * 1000)
    assert warm(0) == cfg.start_lr and warm(steps // 2) == pytest.approx(0.005) and warm(steps) == 0.01
