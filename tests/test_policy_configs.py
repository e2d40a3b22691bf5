"""Every option of the `policy` config group instantiates to a working policy and rejects bad values by name."""

import math
from pathlib import Path

import pytest
from hydra.utils import instantiate
from omegaconf import OmegaConf

from pipeline.policies import Fix, Warmup

CONF = Path(__file__).resolve().parents[1] / "conf"
POLICY_FILES = sorted((CONF / "policy").glob("*.yaml"))
STEPS = [*range(0, 20001, 250), 1, 4999, 5000, 9999, 19999]
LR_FUNCTIONS = {"Fix", "Step", "NStep", "Exp", "Inv", "Poly", "Triangle", "Triangle2", "TriangleExp"}
LR_FUNCTIONS |= {"Sin", "Sin2", "SinExp", "Cos"}


def _ids(path):
    return path.stem


def test_policy_group_has_a_config_for_each_lrbench_function():
    targets = {OmegaConf.load(path)._target_.rsplit(".", 1)[-1] for path in POLICY_FILES}
    assert LR_FUNCTIONS <= targets


@pytest.mark.parametrize("path", POLICY_FILES, ids=_ids)
def test_policy_config_instantiates_to_a_finite_positive_policy(path):
    policy = instantiate(OmegaConf.load(path))
    lowest_allowed = 0.0 if path.stem == "poly" else math.ulp(0.0)  # POLY ends at k0 = 0
    for t in STEPS:
        lr = policy(t)
        assert type(lr) is float and math.isfinite(lr) and lr >= lowest_allowed, (t, lr)
    assert policy.lrbench_string().startswith("lrPolicy_")
    assert hash(policy) == hash(instantiate(OmegaConf.load(path)))


@pytest.mark.parametrize("path", [p for p in POLICY_FILES if "l" in OmegaConf.load(p)], ids=_ids)
def test_policy_config_with_l_zero_fails_naming_l(path):
    cfg = OmegaConf.merge(OmegaConf.load(path), {"l": 0})
    with pytest.raises(Exception, match=r"\bl must be"):
        instantiate(cfg)


@pytest.mark.parametrize("path", [p for p in POLICY_FILES if "k0" in OmegaConf.load(p)], ids=_ids)
def test_policy_config_with_a_string_k0_fails_naming_k0(path):
    cfg = OmegaConf.merge(OmegaConf.load(path), {"k0": "fast"})
    with pytest.raises(Exception, match=r"k0 must be a number"):
        instantiate(cfg)


def test_composite_config_names_the_bad_segment():
    path = CONF / "policy" / "composite_sin2_fix.yaml"
    cfg = OmegaConf.load(path)
    cfg.segments[0].policy.l = 0
    # The inner policy is built first, so the message is the inner one and Hydra adds the node's path.
    with pytest.raises(Exception, match=r"l must be > 0[\s\S]*segments\[0\]\.policy"):
        instantiate(cfg)
    cfg = OmegaConf.load(path)
    cfg.segments[0].until_steps = -1
    with pytest.raises(Exception, match=r"segments\[0\]\.until_steps must be > 0"):
        instantiate(cfg)


def test_composite_config_switches_policy_at_until_steps_with_a_local_clock():
    policy = instantiate(OmegaConf.load(CONF / "policy" / "composite_sin2_fix.yaml"))
    assert policy(0) == pytest.approx(0.01) and policy(1000) == pytest.approx(0.06)
    assert policy(5000) == policy(20000) == pytest.approx(0.005)


def test_linear_warmup_config_wraps_a_policy():
    cfg = OmegaConf.load(CONF / "warmup" / "linear.yaml")
    assert "_target_" not in cfg  # the job builds Warmup(policy, **cfg.warmup)
    warm = Warmup(Fix(0.01), **cfg)
    assert warm(0) == 0.0 and warm(cfg.warmup_steps) == 0.01
