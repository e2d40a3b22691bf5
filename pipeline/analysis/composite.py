"""The composite policy a report proposes (LRBench TIST section 3.2: heterogeneous multi-policy LRs), as a
ready-to-run ``conf/policy`` node built from the policy the recommended run recorded (``policy_config``, re-created
with :func:`pipeline.policies.from_spec` and evaluated, never parsed back from flattened params).

Rule: run the recommended policy until the optimizer step by which its slowest seed reached the target, then FIX at
``tail_factor`` (default 1/10) x the LR it had there, for the rest of the budget: the fast start is kept and the
late fluctuation of a large LR is settled, as LRBench's own examples end a cyclic policy with a small FIX.

LRBench composes *and verifies*: :func:`training_arguments` is the sweep that trains the proposal with the recommended
policy's seeds, budget and settings (``verify=true`` runs it), and :func:`verifies` recognises its runs afterwards by
the policy they recorded, however they were started.
"""

from __future__ import annotations

import json
import math
import re
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from pipeline.policies import Scaled, Stretched, Warmup, from_spec, to_spec

COMPOSITE_TARGET = "pipeline.policies.Composite"
FIX_TARGET = "pipeline.policies.Fix"
POLICY_CONFIG = "policy_config"  # the run's param (and runs-table column) holding its policy's JSON spec
# Settings a verification run takes from the recorded run, as param.<group>.<key>: the groups of a job's config.
SETTING_GROUPS = ("trainer", "dataset", "model", "optimizer", "momentum", "warmup", "task")
# The task of a run without a task tag (recorded before tasks existed), and the default one: not repeated.
DEFAULT_TASK = "classification"
# Never repeated: the budget (the proposal sets it), display-only and per-machine settings.
SKIPPED_SETTINGS = {"trainer.max_steps", "trainer.max_epochs", "trainer.progress", "trainer.checkpoint_dir"}


@dataclass(frozen=True)
class CompositeProposal:
    node: dict                # the policy config node (conf/policy/<name>.yaml)
    switch_step: int          # absolute optimizer step of the switch
    lr_at_switch: float       # the recommended policy's LR there
    tail_lr: float
    overrides: list[str]      # the other groups and settings of the command line
    rule: str
    total_steps: int = 0      # the run's optimizer steps (its budget)
    seeds: tuple = field(default=())  # the recommended policy's seeds, which a verification repeats
    config_dirs: tuple = field(default=())  # the user's own config folders the run was composed with (its options)


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


def propose_composite(best: Mapping, params: Mapping[str, object], tail_factor: float = 0.1,
                      defaults: Mapping[str, str] | None = None) -> CompositeProposal:
    """LRBench TIST-style heterogeneous composite: the recommended policy until the step by which it reached the
    target in every seed (the slowest seed), then FIX at ``tail_factor`` x its LR at that step, to settle and
    stop the late fluctuation of a large LR.

    ``params`` are one run's ``param.*`` values, its ``policy_config`` and ``summary/steps``. The policy the run
    trained under is re-created from ``policy_config`` and evaluated at the switch step for the switch LR. The
    head is the policy inside the job's wrappers; the command repeats the run's k scale (``schedule.k_scale``: the
    tail's k0 is divided by it, so the tail LR is as stated), its clock stretch (``schedule.horizon_steps``: the
    switch moves into policy time), its warm-up (the switch moves into the composite's own clock) and momentum
    schedule, its groups and budget. Raises :class:`NotProposed` when the run recorded no valid policy, its LR at
    the switch is not positive, or the switch falls inside the warm-up or at the end of the budget. ``defaults``
    (:func:`group_defaults`) add the run's settings that differ from its groups' defaults (:func:`setting_overrides`).
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
    task = _group_overrides(params, "task", params.get("task"))
    overrides = [] if task == [f"task={DEFAULT_TASK}"] else task  # the default task: commands as before tasks
    for g in ("model", "dataset", "optimizer"):
        overrides += _group_overrides(params, g, best.get(g))
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
    overrides += setting_overrides(params, defaults or {})
    rule = (f"{best['name']} until optimizer step {switch} (where its slowest seed reached the target), then FIX "
            f"at {tail_factor:g} × its LR there ({lr_at_switch:.4g} → {tail:.4g}) for the rest of the budget")
    seeds = tuple(sorted(s for s in best.get("seeds", []) if s is not None))
    return CompositeProposal(node, switch, float(lr_at_switch), tail, overrides, rule, total, seeds,
                             _config_dirs(params.get("config_dirs")))


def _group_overrides(params: Mapping[str, object], group: str, name) -> list[str]:
    """The overrides that choose what the run's ``group`` was: its option (``model=lenet5``); for a run tagged with
    a class name or a given name, the option it started from (its ``<group>_option`` tag), the class that ran and
    the name (``model=lenet5 model._target_=own.TinyNet``)."""
    option = params.get(f"{group}_option")
    if not isinstance(option, str) or not option:
        return [f"{group}={name}"] if isinstance(name, str) and name else []
    out = [f"{group}={option}"]
    for key, prefix in (("_target_", ""), ("name", "++")):
        value = params.get(f"param.{group}.{key}")
        if isinstance(value, str) and value:
            out.append(f"{prefix}{group}.{key}={_hydra_value(value)}")
    return out


def _config_dirs(tag) -> tuple[str, ...]:
    """The run's ``config_dirs`` tag (a JSON list of folders); () where absent or not such a list."""
    try:
        dirs = json.loads(tag) if isinstance(tag, str) else []
    except ValueError:
        return ()
    return tuple(d for d in dirs if isinstance(d, str) and d) if isinstance(dirs, list) else ()


# -- the sweep that verifies a proposal ----------------------------------------------------------------------------


def group_defaults(conf_dir: str | Path, choices: Mapping[str, str]) -> dict[str, str]:
    """The values each chosen option's file sets (``conf/<group>/<option>.yaml``; the trainer's ``default``), flat
    and as strings the way a run records its params (``trainer.eval_every_steps`` -> ``100``). Values that are
    interpolations (``${seed}``) are left out: the run's value is derived, not chosen."""
    from omegaconf import OmegaConf

    from pipeline.tracking.recorder import flatten

    out = {}
    for group, option in {"trainer": "default", **choices}.items():
        path = Path(conf_dir) / group / f"{option}.yaml"
        if group not in SETTING_GROUPS or not isinstance(option, str) or not path.is_file():
            continue
        node = OmegaConf.load(path)
        raw = OmegaConf.to_container(node, resolve=False)
        raw.pop("defaults", None)
        if group == "task":  # a task option is a _global_ package: its own settings are its task node
            raw = raw.get("task") or {}
        out.update({k: v for k, v in flatten(raw, f"{group}.").items() if "${" not in v})
    return out


def _hydra_value(text: str) -> str:
    """A recorded param as a Hydra override value: None -> null, True -> true; quoted when it holds characters
    Hydra's grammar gives a meaning to."""
    if text in ("None", "True", "False"):
        return {"None": "null", "True": "true", "False": "false"}[text]
    if re.fullmatch(r"[\w.:/+@-]*|\[[\w.:/+@, -]*\]", text):
        return text
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def setting_overrides(params: Mapping[str, object], defaults: Mapping[str, str]) -> list[str]:
    """``key=value`` for each of the run's recorded settings (``param.<group>.<key>``) that differs from its
    groups' ``defaults``, so the proposal trains on the same data, model, optimizer and schedule of evaluations
    (e.g. ``trainer.eval_every_steps=10``). Keys the defaults do not know are left out (a setting that no longer
    exists would be refused), as are the budget and the display-only ones."""
    out = []
    for key, default in defaults.items():
        value = params.get(f"param.{key}")
        if not isinstance(value, str) or value == default or key in SKIPPED_SETTINGS:
            continue
        if key.rsplit(".", 1)[-1] in ("_target_", "_partial_"):
            continue
        out.append(f"{key}={_hydra_value(value)}")
    return out


def training_arguments(proposal: CompositeProposal, config_dir: str, name: str, experiment: str | None = None,
                       uri: str | None = None, sweep_dir: str | None = None, extra: Sequence[str] = ()) -> list[str]:
    """The arguments of ``python -m pipeline`` that train the proposal as a sweep over the recommended policy's
    seeds: ``policy/<name>.yaml`` under ``config_dir`` becomes a policy option through Hydra's ``--config-dir``, the
    run's own config folders (its ``model``, ``dataset``... options of the user's own) stay on the search path
    through ``hydra.searchpath``; ``experiment`` and ``uri`` put the runs beside the ones they are compared with;
    ``extra`` overrides go last (before the ``--multirun`` flag, after which Hydra takes no override)."""
    args = ["--config-dir", config_dir]
    if proposal.config_dirs:
        args.append("hydra.searchpath=[" + ",".join(_hydra_value(f"file://{d}") for d in proposal.config_dirs) + "]")
    args += [f"+policy={name}", *proposal.overrides]
    if proposal.seeds:
        args.append("seed=" + ",".join(str(s) for s in proposal.seeds))
    if experiment:
        args.append(f"tracking.experiment={_hydra_value(experiment)}")
    if uri:
        args.append(f"tracking.uri={uri}")
    if sweep_dir:
        args.append(f"hydra.sweep.dir={sweep_dir}")
    return [*args, *extra, "--multirun"]


def composite_command(proposal: CompositeProposal, config_dir: str, name: str, experiment: str | None = None,
                      uri: str | None = None) -> str:
    """The command that trains the proposal (:func:`training_arguments`), as a user types it."""
    return "python -m pipeline " + shlex.join(training_arguments(proposal, config_dir, name, experiment, uri))


def verifies(params: Mapping[str, object], proposal: CompositeProposal, recorded) -> bool:
    """Did a run (its ``policy_config`` in ``params``) train under ``proposal``? Its policy must give the recorded
    policy's LR before the switch step and the tail LR from there to the end of the budget (checked at a few steps
    of each part), which holds however the run was started (``verify=true`` or the printed command)."""
    try:
        policy = recorded_policy(params)
    except NotProposed:
        return False
    switch, total = proposal.switch_step, max(proposal.total_steps, proposal.switch_step + 1)
    head = sorted({0, switch // 2, switch - 1})
    tail = sorted({switch, (switch + total - 1) // 2, total - 1})
    return (all(math.isclose(policy(t), recorded(t), rel_tol=1e-6, abs_tol=1e-12) for t in head)
            and all(math.isclose(policy(t), proposal.tail_lr, rel_tol=1e-2) for t in tail))
