"""What every part of the config stage shares: the error it raises, value checks applied to config keys, Hydra's
group choices, the resolved job config, and the refusal of keys that are neither settings nor groups."""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from pipeline.arguments import check_choice, check_int, check_number

GROUPS = ("model", "dataset", "task", "optimizer", "policy", "warmup", "momentum", "analysis", "sampler", "trainer",
          "tracking")


class ConfigError(ValueError):
    """A config value that cannot work; the message names the key and the accepted values."""


def _select(cfg: DictConfig, key: str) -> Any:
    return OmegaConf.select(cfg, key)


def _checked(rule, key: str, *args, **kwargs):
    """Apply one of the shared value checks (:mod:`pipeline.arguments`) to a config key."""
    try:
        return rule(key, *args, **kwargs)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None


def _int(cfg: DictConfig, key: str, low: int, allowed: tuple[int, ...] = ()) -> int:
    return _checked(check_int, key, _select(cfg, key), low, allowed=allowed)


def _float(cfg: DictConfig, key: str, low: float, high: float = float("inf"), low_open: bool = False) -> float:
    return _checked(check_number, key, _select(cfg, key), low, high, low_open=low_open)


def _choice(cfg: DictConfig, key: str, choices: tuple[str, ...]) -> str:
    return _checked(check_choice, key, _select(cfg, key), choices)


def _instantiate(node: DictConfig, key: str) -> Any:
    """``hydra.utils.instantiate`` with the builder's own error (not Hydra's wrapper) prefixed by the key."""
    from hydra.errors import InstantiationException
    from hydra.utils import instantiate

    try:
        return instantiate(node)
    except InstantiationException as exc:
        cause = exc.__cause__ or exc
        raise ConfigError(f"{key}.{cause}" if isinstance(cause, ValueError) else f"{key}: {cause}") from exc
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"{key}: {exc}") from exc


def group_choices(cfg: DictConfig) -> dict[str, str]:
    """The option chosen in each of the project's config groups, from Hydra's runtime (or a Compose-API config)."""
    return {g: option for g, option in group_choices_all(cfg).items() if g in GROUPS}


# The task node of conf/task/classification.yaml: a job with exactly this task records no task node (its params,
# config artifact and run key are those of a run from before tasks existed; the tags still say task=classification).
IMPLIED_TASK = {"_target_": "pipeline.tasks.classification.Classification",
                "objective": {"metric": "acc", "mode": "max"}}


# Where a policy's k values come from (``policy.k_from``): its own config, or the LR range test (pipeline.range_test).
K_FROM = ("config", "range_test")
K_FROM_DEFAULT = "config"


def job_config(cfg: DictConfig) -> dict:
    """The resolved job config without Hydra's own node: what the run's params and config artifact hold, and what
    its key hashes. The tracking URI's password is masked (``user:****@``): the store is reached through the checked
    Job, not this. The default classification task is implied, not recorded (:data:`IMPLIED_TASK`)."""
    from pipeline.tracking.store import public_uri

    job_only = OmegaConf.masked_copy(cfg, [key for key in cfg if key != "hydra"])
    config = OmegaConf.to_container(job_only, resolve=True)
    tracking = config.get("tracking")
    if isinstance(tracking, dict) and isinstance(tracking.get("uri"), str):
        tracking["uri"] = public_uri(tracking["uri"])
    if config.get("task") == IMPLIED_TASK:
        del config["task"]
    # policy.k_from=config (the default) is implied too, and the range test's settings matter only to a job that
    # takes its k values from it: a run's params and key stay those of a run from before the range test existed.
    policy = config.get("policy")
    if isinstance(policy, dict) and policy.get("k_from", K_FROM_DEFAULT) == K_FROM_DEFAULT:
        policy.pop("k_from", None)
        if not policy:
            del config["policy"]
        config.pop("range_test", None)
    elif policy is None:
        config.pop("range_test", None)
    return config


# -- keys ---------------------------------------------------------------------------------------------------------

# Keys of conf/config.yaml's own (not groups); a top-level key must be one of these or a config group.
TOP_LEVEL_KEYS = ("seed", "schedule", "study", "run_name", "range_test", "hydra")
RANGE_TEST_KEYS = ("min_lr", "max_lr", "steps", "seeds", "early_stop", "k1_div", "k0_div")
SUB_KEYS = {"schedule": ("k_scale", "horizon_steps"), "tracking": ("uri", "experiment", "flush_every"),
            "range_test": RANGE_TEST_KEYS}


def _nearest(key: str, valid) -> str:
    found = difflib.get_close_matches(key, sorted(valid), n=1, cutoff=0.6)
    return f"; did you mean {found[0]}?" if found else ""


def check_keys(cfg: DictConfig) -> None:
    """Refuse keys that are neither settings nor config groups: ``+polcy=triangle2`` (a typo after ``+``) would
    otherwise add a key nothing reads, and the job would silently run without a policy. Groups from a user's own
    config folder (``--config-dir``, ``hydra.searchpath``) are Hydra choices, so they pass."""
    groups = set(GROUPS) | set(group_choices_all(cfg))
    conf = Path(__file__).resolve().parents[2] / "conf"
    groups |= {d.name for d in conf.iterdir() if d.is_dir()} if conf.is_dir() else set()
    valid = set(TOP_LEVEL_KEYS) | groups
    for key in cfg:
        if key not in valid:
            raise ConfigError(f"{key} is not a setting or config group{_nearest(str(key), valid)} "
                              f"(settings: {', '.join(k for k in TOP_LEVEL_KEYS if k != 'hydra')}; "
                              f"groups: {', '.join(sorted(g for g in groups if g != 'hydra'))})")
    for group, keys in SUB_KEYS.items():
        node = cfg.get(group)
        for key in (node or {}):
            if key not in keys:
                raise ConfigError(f"{group}.{key} is not a setting{_nearest(str(key), keys)} "
                                  f"({group} has {', '.join(keys)})")


def group_choices_all(cfg: DictConfig) -> dict[str, str]:
    """Every group Hydra chose an option of, the user's own groups included (``group_choices`` keeps the project's)."""
    from hydra.core.hydra_config import HydraConfig

    try:
        choices = dict(HydraConfig.get().runtime.choices)
    except ValueError:
        choices = dict(OmegaConf.select(cfg, "hydra.runtime.choices", default={}) or {})
    return {str(g).split("/")[0].split("@")[0]: str(v) for g, v in choices.items() if v is not None}


