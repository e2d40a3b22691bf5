"""A policy's spec (what a run records as ``policy_config``) re-creates the same policy, and a spec that names
anything but the project's own policy classes is refused before anything runs."""

from __future__ import annotations

import json
import re

import pytest
from conftest import CONF, compose_job
from hydra.utils import instantiate

from pipeline.config.checks import check
from pipeline.policies import (
    Composite,
    CyclicMomentum,
    Demon,
    Fix,
    NStep,
    Scaled,
    Sin2,
    Stretched,
    Warmup,
    from_spec,
    to_spec,
)

POLICY_OPTIONS = sorted(p.stem for p in (CONF / "policy").glob("*.yaml"))
STEPS = [*range(0, 20001, 97), 1, 299, 300, 301, 4999, 5000, 5001, 9999, 10000, 19999]


def _composed(option: str):
    """The policy of ``+policy=<option>`` exactly as the training entry point composes and builds it (for a run of
    2,000 optimizer steps: the configs give their clocks as fractions of the budget)."""
    return check(compose_job(f"+policy={option}", "dataset=synthetic")).policy.for_budget(2000)


def _wrapped(policy):
    """The policy inside each wrapper, and all of them at once as the job stacks them (stretch outermost)."""
    composite = Composite([{"policy": policy, "until_steps": 700}, {"policy": Fix(0.001)}], clock="global")
    return {"plain": policy,
            "warmup": Warmup(policy, warmup_steps=50, start_lr=0.001),
            "scaled": Scaled(policy, 2.5),
            "stretched": Stretched(policy, horizon_steps=10000, total_steps=900),
            "composite": composite,
            "stacked": Stretched(Scaled(Warmup(composite, 50), 0.3), horizon_steps=20000, total_steps=1100)}


def _round_trip(policy):
    return from_spec(json.loads(json.dumps(to_spec(policy), sort_keys=True)))


@pytest.mark.parametrize("option", POLICY_OPTIONS)
def test_every_policy_option_and_its_wrappers_survive_a_json_round_trip_value_for_value(option):
    for name, policy in _wrapped(_composed(option)).items():
        again = _round_trip(policy)
        assert again == policy, name
        assert [again(t) for t in STEPS] == [policy(t) for t in STEPS], name


def test_the_spec_has_the_shape_of_a_conf_policy_node():
    spec = to_spec(Warmup(NStep(0.05, 0.1, [5000, 7500]), 50))
    assert spec == {"_target_": "pipeline.policies.Warmup", "warmup_steps": 50, "start_lr": 0.0,
                    "policy": {"_target_": "pipeline.policies.NStep", "k0": 0.05, "gamma": 0.1, "l": [5000, 7500]}}
    composite = to_spec(_composed("composite_sin2_fix"))
    assert composite["segments"][1] == {"policy": {"_target_": "pipeline.policies.Fix", "k0": 0.005}}
    # until_frac 0.5 of a 2,000-step run
    assert composite["segments"][0]["until_steps"] == 1000 and composite["clock"] == "local"
    # the node the job's config builds and the spec build the same policy through Hydra too
    assert instantiate({**to_spec(Sin2(0.01, 0.06, 300))}) == Sin2(0.01, 0.06, 300)


def test_the_job_policy_with_warmup_and_k_scale_round_trips():
    job = check(compose_job("+policy=triangle2", "+warmup=linear", "schedule.k_scale=3", "schedule.horizon_steps=900",
                            "dataset=synthetic"))
    policy = job.policy.for_budget(300)  # Scaled(Warmup(Stretched(triangle2))): pipeline/policies/build.py
    assert isinstance(policy, Scaled) and isinstance(policy.policy, Warmup)
    assert isinstance(policy.policy.policy, Stretched)
    assert _round_trip(policy) == policy


def test_momentum_policies_round_trip_with_an_unbound_demon_left_unbound():
    for policy in (Demon(), Demon(0.95, total_steps=800, start_frac=0.25), CyclicMomentum(0.8, 0.9, 50)):
        assert _round_trip(policy) == policy
    assert "total_steps" not in to_spec(Demon())


def _poisoned(path):
    return {"_target_": "builtins.open", "_args_": [str(path), "w"]}


@pytest.mark.parametrize("where, spec", [
    ("_target_", lambda p: _poisoned(p)),
    ("segments[1].policy._target_", lambda p: {
        "_target_": "pipeline.policies.Composite", "clock": "local",
        "segments": [{"policy": {"_target_": "pipeline.policies.Fix", "k0": 0.1}, "until_steps": 5},
                     {"policy": _poisoned(p)}]}),
    ("policy._target_", lambda p: {"_target_": "pipeline.policies.Warmup", "warmup_steps": 5,
                                   "policy": _poisoned(p)}),
    ("k0", lambda p: {"_target_": "pipeline.policies.Fix", "k0": _poisoned(p)}),
    ("_args_", lambda p: {"_target_": "pipeline.policies.Fix", "k0": 0.1, "_args_": [str(p), "w"]}),
])
def test_a_poisoned_spec_is_refused_naming_the_key_and_opens_no_file(tmp_path, where, spec):
    target = tmp_path / "x"
    with pytest.raises(ValueError, match=rf"^{re.escape(where)} "):
        from_spec(spec(target))
    assert not target.exists()


@pytest.mark.parametrize("spec, message", [
    ({"_target_": "pipeline.policies.Fix", "k0": "0.1"}, r"^k0 must be a number, got str"),
    ({"_target_": "pipeline.policies.Fix", "k0": True}, r"^k0 must be a number, got bool"),
    ({"_target_": "pipeline.policies.Fix", "k0": 0.1, "_convert_": "all"}, r"^_convert_ is not a field of"),
    ({"_target_": "pipeline.policies.Sin2", "k0": 0.01, "l": 3}, r"^k1 is required"),
    ({"_target_": "pipeline.policies.NStep", "k0": 0.1, "gamma": 0.1, "l": [5, "x"]}, r"^l\[1\] must be a number"),
    ({"_target_": "pipeline.policies.Scaled", "k_scale": 2, "policy": {"_target_": "pipeline.policies.Fix",
                                                                      "k0": -1}}, r"^policy\.k0 must be > 0"),
    ({"_target_": "pipeline.policies.Composite", "clock": 1, "segments": [{"policy": {
        "_target_": "pipeline.policies.Fix", "k0": 1}}]}, r"^clock must be a string"),
    ({"_target_": "pipeline.policies.Composite", "segments": [{"policy": {"_target_": "pipeline.policies.Fix",
                                                                          "k0": 1}, "at": 3}]},
     r"^segments\[0\]\.at is not a key of a segment"),
    ({"_target_": "pipeline.policies.Segment", "policy": {}}, r"^_target_ must be one of"),
    ("pipeline.policies.Fix", r"^spec must be a policy spec"),
    ({"_target_": "pipeline.policies.Warmup", "warmup_steps": 5, "policy": [0.1]},
     r"^policy must be a policy spec \(a mapping with _target_\), got list"),
])
def test_a_bad_spec_is_a_value_error_naming_the_key(spec, message):
    with pytest.raises(ValueError, match=message):
        from_spec(spec)


def test_a_spec_nested_deeper_than_max_depth_is_refused_before_it_exhausts_the_stack():
    from pipeline.policies.spec import MAX_DEPTH

    spec = {"_target_": "pipeline.policies.Fix", "k0": 0.1}
    for _ in range(MAX_DEPTH):
        spec = {"_target_": "pipeline.policies.Scaled", "k_scale": 1.0, "policy": spec}
    assert from_spec(spec)(0) == 0.1
    deeper = {"_target_": "pipeline.policies.Scaled", "k_scale": 1.0, "policy": spec}
    with pytest.raises(ValueError, match=rf"^policy(\.policy){{{MAX_DEPTH}}} nests policies deeper than {MAX_DEPTH}$"):
        from_spec(deeper)


def test_only_the_project_policy_classes_have_specs():
    with pytest.raises(ValueError, match="policy must be one of"):
        to_spec(lambda t: 0.1)
