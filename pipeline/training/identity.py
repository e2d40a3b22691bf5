"""Who a run is: its key (the same command resumes the same run), its name and its tags. One place for each, used
by separate runs, packed runs and the sweep's record of a job that could not start."""

from __future__ import annotations

import functools
import hashlib
import json
import subprocess
from collections.abc import Mapping
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[2]
# Groups whose choice is not a tag: their settings are params, and every run has them.
UNTAGGED_GROUPS = ("trainer", "tracking")
# Display-only settings: changing them does not make a different job (a re-run with them changed still resumes).
# A pruned study's rung settings (how far this rung trains, how it is scored) are volatile too: every rung of a job
# continues the same run.
VOLATILE_KEYS = {("trainer", "progress"), ("search", "rung_frac"), ("search", "score"), ("search", "cooldown_frac")}


@functools.lru_cache(maxsize=1)
def git_commit() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=5, check=True
        )
        return out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def run_key(config: Mapping) -> str:
    """The identity of a job: the same command (same resolved config) gives the same key, so a re-run resumes."""
    stable = {group: ({k: v for k, v in value.items() if (group, k) not in VOLATILE_KEYS}
                      if isinstance(value, dict) else value) for group, value in config.items()}
    return hashlib.sha1(json.dumps(stable, sort_keys=True, default=str).encode()).hexdigest()[:16]


def ran_as(option: str | None, target: str | None, declared: str | None, given: str | None = None) -> str:
    """The name a run gives the model (data set, task) that actually ran, for its name, its tags and the report's
    groups: ``given`` (the node's ``name``) if set; else the group's option when the option's own config declares the
    target that ran, or when what ran is not known; else the target's class (function) name, so that
    ``model._target_=mymodels.TinyCNN`` is tagged ``TinyCNN``, never the default option's ``lenet5``."""
    if given:
        return str(given)
    if target is None or (option is not None and declared in (None, target)):
        return str(option)
    return target.rsplit(".", 1)[-1]


def run_name(choices: Mapping[str, str], seed: object, name: str | None = None) -> str:
    """``name`` if given (``run_name=``), else ``<policy>-<model>-<dataset>-s<seed>``."""
    return name or f"{choices.get('policy', 'fix')}-{choices.get('model')}-{choices.get('dataset')}-s{seed}"


def base_tags(choices: Mapping[str, str], seed: object) -> dict[str, str]:
    """The tags every training run has, even one that could not start: its group choices, seed and kind."""
    tags = {group: option for group, option in choices.items() if group not in UNTAGGED_GROUPS}
    tags.setdefault("policy", "fix")
    tags.update(seed=str(seed), kind="train")
    return tags


def objective_tags(objective) -> dict[str, str]:
    """What a run is judged on, for the report: ``objective_metric`` and ``objective_mode`` (a run without them is
    classification judged on accuracy, ``acc``/``max``)."""
    return {"objective_metric": objective.metric, "objective_mode": objective.mode}


def run_tags(job, policy, momentum, key: str, fit: str | None = None) -> dict[str, str]:
    """The tags of a job's run: :func:`base_tags`, its objective, the exact policies it runs under, the git commit
    and its key, the user's own config folders (``config_dirs``, a JSON list) where it has any, ``<group>_option``
    (Hydra's option of a group tagged with a class name), and ``policy_fit``, the verdict of
    :func:`pipeline.policies.fit.policy_fit` on its budget, where given."""
    tags = base_tags(job.choices, job.seed)
    if job.objective is not None:
        tags.update(objective_tags(job.objective))
    if fit is not None:
        tags["policy_fit"] = fit
    tags.update(
        git_commit=git_commit(),
        policy_spec=policy.lrbench_string(),
        k_scale=f"{job.policy.k_scale:g}",
        run_key=key,
    )
    if momentum is not None:
        tags["momentum_spec"] = momentum.describe()
    tags["k_from"] = job.k_from
    if job.k_origin is not None:  # policy.k_from=range_test: the run the k values came from, and the values
        tags.update(range_test_run=job.k_origin.run_id, range_test_k0=f"{job.k_origin.k0:.6g}",
                    range_test_k1=f"{job.k_origin.k1:.6g}")
    if job.study:
        tags["study"] = str(job.study)
    if job.config_dirs:
        tags["config_dirs"] = json.dumps(list(job.config_dirs))
    tags.update({f"{group}_option": option for group, option in job.options.items()})
    return tags
