"""The composite policy a report proposes (LRBench TIST section 3.2: heterogeneous multi-policy LRs), as a
ready-to-run ``conf/policy`` node built from the policy the recommended run recorded (``policy_config``, re-created
with :func:`pipeline.policies.from_spec` and evaluated, never parsed back from flattened params).

Rule: run the recommended policy until the optimizer step by which its slowest seed reached the target, then FIX at
``tail_factor`` (default 1/10) x the LR it had there, for the rest of the budget: the fast start is kept and the
late fluctuation of a large LR is settled, as LRBench's own examples end a cyclic policy with a small FIX.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass

from pipeline.policies import Scaled, Stretched, Warmup, from_spec, to_spec

COMPOSITE_TARGET = "pipeline.policies.Composite"
FIX_TARGET = "pipeline.policies.Fix"
POLICY_CONFIG = "policy_config"  # the run's param (and runs-table column) holding its policy's JSON spec


@dataclass(frozen=True)
class CompositeProposal:
    node: dict                # the policy config node (conf/policy/<name>.yaml)
    switch_step: int          # absolute optimizer step of the switch
    lr_at_switch: float       # the recommended policy's LR there
    tail_lr: float
    overrides: list[str]      # the other groups of the command line
    rule: str


class NotProposed(ValueError):
    """No composite can be proposed; the message says why (it goes into the report)."""


def recorded_policy(params: Mapping[str, object]):
    """The exact policy a run trained under (warm-up, k scale and stretch included), re-created from its
    ``policy_config``. Raises :class:`NotProposed` for a run without one (recorded before the param existed) or
    whose spec is not a valid policy."""
    text = params.get(POLICY_CONFIG)
    if not isinstance(text, str) or not text:
        raise NotProposed(f"the run did not record its policy ({POLICY_CONFIG})")
    try:
        return from_spec(json.loads(text))
    except ValueError as error:  # json.JSONDecodeError is one too
        raise NotProposed(f"the run's {POLICY_CONFIG} is not a valid policy: {error}") from error
    except RecursionError as error:  # JSON nested thousands deep: json.loads gives up before from_spec sees it
        raise NotProposed(f"the run's {POLICY_CONFIG} is not a valid policy: nested too deep") from error


@dataclass(frozen=True)
class _Layers:
    """A run's policy taken apart into the job's layers: the ``conf/policy`` node's policy, its warm-up (optimizer
    steps), its k scale and its clock stretch (policy steps over the run's optimizer steps)."""

    base: object
    warmup_steps: int = 0
    k_scale: float = 1.0
    horizon_steps: int | None = None
    total_steps: int | None = None


def _layers(policy, warmup: bool) -> _Layers:
    """Undo the job's wrapping ``Scaled(Warmup(Stretched(base)))`` (``pipeline/policies/build.py``), outermost
    first, each layer where present; the warm-up only where the run chose one (``warmup``), since a base policy may
    be a Warmup of its own."""
    k_scale = 1.0
    if isinstance(policy, Scaled):
        k_scale, policy = policy.k_scale, policy.policy
    warmup_steps = 0
    if warmup and isinstance(policy, Warmup):
        warmup_steps, policy = policy.warmup_steps, policy.policy
    horizon = total = None
    if isinstance(policy, Stretched):
        horizon, total, policy = policy.horizon_steps, policy.total_steps, policy.policy
    return _Layers(policy, warmup_steps, k_scale, horizon, total)


def _significant(x: float, digits: int = 3) -> float:
    return float(f"{x:.{digits}g}")


def _int_param(params: Mapping[str, object], key: str) -> int | None:
    """An integer param as MLflow stores it (a string); None where absent or not an integer."""
    value = params.get(key)
    if isinstance(value, str):
        try:
            return int(value)
        except ValueError:
            return None
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def propose_composite(best: Mapping, params: Mapping[str, object], tail_factor: float = 0.1) -> CompositeProposal:
    """LRBench TIST-style heterogeneous composite: the recommended policy until the step by which it reached the
    target in every seed (the slowest seed), then FIX at ``tail_factor`` x its LR at that step, to settle and
    stop the late fluctuation of a large LR.

    ``params`` are one run's ``param.*`` values, its ``policy_config`` and ``summary/steps``. The policy the run
    trained under is re-created from ``policy_config`` and evaluated at the switch step for the switch LR. The
    head is the policy inside the job's wrappers; the command repeats the run's k scale (``schedule.k_scale``: the
    tail's k0 is divided by it, so the tail LR is as stated), its clock stretch (``schedule.horizon_steps``: the
    switch moves into policy time), its warm-up (the switch moves into the composite's own clock) and momentum
    schedule, its groups and budget. Raises :class:`NotProposed` when the run recorded no valid policy, its LR at
    the switch is not positive, or the switch falls inside the warm-up or at the end of the budget.
    """
    policy = recorded_policy(params)
    if not best["steps_values"]:
        raise NotProposed("no seed reached the target")
    switch = int(math.ceil(max(best["steps_values"])))
    lr_at_switch = policy(switch)
    if not lr_at_switch > 0:
        raise NotProposed(f"the policy's lr at the switch step {switch} is not positive ({lr_at_switch:g})")
    max_steps = _int_param(params, "param.trainer.max_steps")
    total = max_steps if max_steps and max_steps > 0 else int(params.get("summary/steps") or best["budget_steps"])
    if switch >= min(total, best["budget_steps"]):
        raise NotProposed(f"the target was reached at the end of the budget (step {switch}): no room for a tail")
    layers = _layers(policy, best["warmup"] != "none")
    horizon = layers.horizon_steps
    local = switch - layers.warmup_steps  # the policy's clock starts when the warm-up ends
    if local < 1:
        raise NotProposed(f"the target was reached during the warm-up (step {switch}): no room for a head")
    # Stretched: policy t = floor(t * horizon_steps / total_steps), total_steps being the span after the warm-up
    until = local * horizon // layers.total_steps if horizon else local
    k_scale = layers.k_scale
    tail = _significant(lr_at_switch * tail_factor)
    node = {"_target_": COMPOSITE_TARGET, "_convert_": "all", "clock": "local",
            "segments": [{"until_steps": until, "policy": to_spec(layers.base)},
                         {"policy": {"_target_": FIX_TARGET, "k0": _significant(tail / k_scale)}}]}
    overrides = [f"{g}={best[g]}" for g in ("model", "dataset", "optimizer") if isinstance(best.get(g), str)]
    if best["momentum"] != "none":
        overrides.append(f"momentum={best['momentum']}")
    if best["warmup"] != "none":
        overrides += [f"+warmup={best['warmup']}", f"warmup.warmup_steps={layers.warmup_steps}"]
    if k_scale != 1.0:
        overrides.append(f"schedule.k_scale={k_scale:g}")
    if horizon:
        overrides.append(f"schedule.horizon_steps={horizon}")
    if max_steps and max_steps > 0:
        overrides.append(f"trainer.max_steps={max_steps}")
    else:
        epochs = _int_param(params, "param.trainer.max_epochs")
        overrides += [f"trainer.max_epochs={epochs}"] if epochs else []
    rule = (f"{best['name']} until optimizer step {switch} (where its slowest seed reached the target), then FIX "
            f"at {tail_factor:g} × its LR there ({lr_at_switch:.4g} → {tail:.4g}) for the rest of the budget")
    return CompositeProposal(node, switch, float(lr_at_switch), tail, overrides, rule)


def composite_command(proposal: CompositeProposal, config_dir: str, name: str) -> str:
    """The command that trains the proposal: ``policy/<name>.yaml`` under ``config_dir`` becomes a policy option
    through Hydra's ``--config-dir``."""
    return " ".join(["python -m pipeline --config-dir", config_dir, f"+policy={name}", *proposal.overrides])
