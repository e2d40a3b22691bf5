"""The composite policy a report proposes (LRBench TIST section 3.2: heterogeneous multi-policy LRs), as a
ready-to-run ``conf/policy`` node rebuilt from the recommended run's recorded params.

Rule: run the recommended policy until the optimizer step by which its slowest seed reached the target, then FIX at
``tail_factor`` (default 1/10) x the LR it had there, for the rest of the budget: the fast start is kept and the
late fluctuation of a large LR is settled, as LRBench's own examples end a cyclic policy with a small FIX.
"""

from __future__ import annotations

import ast
import math
from collections.abc import Mapping
from dataclasses import dataclass

COMPOSITE_TARGET = "pipeline.policies.Composite"
FIX_TARGET = "pipeline.policies.Fix"


def parse_param(text: object):
    """A param value as MLflow stores it (a string) back to a YAML value: int, float, bool, None, list, dict."""
    if not isinstance(text, str):
        return text
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    if text in ("True", "False", "None", "true", "false", "null"):
        return {"True": True, "true": True, "False": False, "false": False}.get(text)
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def policy_node(params: Mapping[str, object], policy: str | None = None) -> dict | None:
    """Rebuild a run's ``policy`` config node from its ``param.policy.*`` values; a run without a policy node ran
    at the optimizer's constant lr (``fix``). None when neither is recorded."""
    node: dict = {}
    for key, value in params.items():
        if not key.startswith("param.policy.") or value is None or (isinstance(value, float) and math.isnan(value)):
            continue
        *parents, leaf = key[len("param.policy."):].split(".")
        here = node
        for part in parents:
            here = here.setdefault(part, {})
        here[leaf] = parse_param(value)
    if "_target_" in node:
        return node
    lr = parse_param(params.get("param.optimizer.lr"))
    if (policy in (None, "fix")) and isinstance(lr, (int, float)) and lr > 0:
        return {"_target_": FIX_TARGET, "k0": float(lr)}
    return None


@dataclass(frozen=True)
class CompositeProposal:
    node: dict                # the policy config node (conf/policy/<name>.yaml)
    switch_step: int          # absolute optimizer step of the switch
    lr_at_switch: float       # the recommended policy's LR there
    tail_lr: float
    overrides: list[str]      # the other groups of the command line
    rule: str


def _significant(x: float, digits: int = 3) -> float:
    return float(f"{x:.{digits}g}")


def _int_param(params: Mapping[str, object], key: str) -> int | None:
    value = parse_param(params.get(key))
    return value if isinstance(value, int) and not isinstance(value, bool) else None


class NotProposed(ValueError):
    """No composite can be proposed; the message says why (it goes into the report)."""


def propose_composite(best: Mapping, params: Mapping[str, object], lr_at_switch: float | None,
                      tail_factor: float = 0.1) -> CompositeProposal:
    """LRBench TIST-style heterogeneous composite: the recommended policy until the step by which it reached the
    target in every seed (the slowest seed), then FIX at ``tail_factor`` x its LR at that step, to settle and
    stop the late fluctuation of a large LR.

    The command repeats the run's k scale (``schedule.k_scale``: the tail's k0 is divided by it, so the tail LR is
    as stated), its clock stretch (``schedule.horizon_steps``: the switch moves into policy time), its warm-up (the
    switch moves into the composite's own clock) and momentum schedule, its groups and budget. ``params`` are one
    run's ``param.*`` values (and ``summary/steps``). Raises :class:`NotProposed` when the policy cannot be rebuilt
    from the params, its LR at the switch is unknown, or the switch falls inside the warm-up or at the end of the
    budget.
    """
    head = policy_node(params, best.get("policy"))
    if head is None:
        raise NotProposed("the policy cannot be rebuilt from the run's params (no policy._target_)")
    if not best["steps_values"]:
        raise NotProposed("no seed reached the target")
    if lr_at_switch is None or not lr_at_switch > 0:
        raise NotProposed("no positive lr was logged at the switch step")
    switch = int(math.ceil(max(best["steps_values"])))
    max_steps = _int_param(params, "param.trainer.max_steps")
    total = max_steps if max_steps and max_steps > 0 else int(params.get("summary/steps") or best["budget_steps"])
    if switch >= min(total, best["budget_steps"]):
        raise NotProposed(f"the target was reached at the end of the budget (step {switch}): no room for a tail")
    horizon = _int_param(params, "param.schedule.horizon_steps")
    policy_switch = switch * horizon // total if horizon else switch  # Stretched: policy t = floor(t * h / total)
    warmup_steps = (_int_param(params, "param.warmup.warmup_steps") or 0) if best["warmup"] != "none" else 0
    until = policy_switch - warmup_steps
    if until < 1:
        raise NotProposed(f"the target was reached during the warm-up (step {switch}): no room for a head")
    k_scale = best["k_scale"] if isinstance(best["k_scale"], float) and best["k_scale"] > 0 else 1.0
    tail = _significant(lr_at_switch * tail_factor)
    node = {"_target_": COMPOSITE_TARGET, "_convert_": "all", "clock": "local",
            "segments": [{"until_steps": until, "policy": head},
                         {"policy": {"_target_": FIX_TARGET, "k0": _significant(tail / k_scale)}}]}
    overrides = [f"{g}={best[g]}" for g in ("model", "dataset", "optimizer") if isinstance(best.get(g), str)]
    if best["momentum"] != "none":
        overrides.append(f"momentum={best['momentum']}")
    if best["warmup"] != "none":
        overrides.append(f"+warmup={best['warmup']}")
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
