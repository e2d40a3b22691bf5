"""Check a composed job config and build its parts, before any data is loaded or any run is created.

Every error is a :class:`ConfigError` whose message names the key (``policy.l``, ``trainer.max_steps``), the bad
value and what is accepted. Hydra already rejects unknown keys and unknown group options (listing the choices);
this module checks types, ranges and the arguments of the objects the groups build.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable

from omegaconf import DictConfig, OmegaConf

ACCELERATORS = ("cpu", "gpu", "cuda", "mps", "auto")
STRATEGIES = ("auto", "ddp", "ddp_spawn", "ddp_find_unused_parameters_true", "fsdp")
MEMORY_FORMATS = ("auto", "channels_last", "contiguous")
PRECISIONS = ("32-true", "32", "64-true", "16-mixed", "bf16-mixed", "bf16-true", "16-true")
GROUPS = ("model", "dataset", "optimizer", "policy", "warmup", "momentum", "analysis", "sampler", "trainer", "tracking")


class ConfigError(ValueError):
    """A config value that cannot work; the message names the key and the accepted values."""


@dataclass(frozen=True)
class Job:
    """A checked job: the built policy and factories for the rest, plus the tags that describe it."""

    policy: Any
    policy_name: str
    optimizer: Callable
    model: Callable
    dataset: Any
    choices: dict[str, str]
    max_steps: int
    max_epochs: int
    # Opt-in Lightning callbacks (e.g. +analysis=lca), each a factory called with the run's recorder.
    callbacks: tuple = ()
    # Momentum policy t -> momentum (momentum=demon), None for the optimizer's constant momentum (momentum=none).
    # A Demon is unbound here: its T is the run's number of optimizer steps, bound by the job.
    momentum: Any = None
    # Opt-in data policy (+sampler=autoassist): a factory called with the loaded data module and the run's recorder;
    # it returns a Lightning callback whose ``datamodule`` the job trains with.
    sampler: Any = None


def _int(cfg: DictConfig, key: str, low: int, allowed: tuple[int, ...] = ()) -> int:
    value = OmegaConf.select(cfg, key)
    if isinstance(value, bool) or not isinstance(value, int) or (value < low and value not in allowed):
        extra = f" (or {', '.join(map(str, allowed))})" if allowed else ""
        raise ConfigError(f"{key} must be an integer >= {low}{extra}, got {value!r}")
    return value


def _float(cfg: DictConfig, key: str, low: float, high: float = math.inf, low_open: bool = False) -> float:
    value = OmegaConf.select(cfg, key)
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    ok = ok and (value > low if low_open else value >= low) and value <= high
    if not ok:
        bounds = f"{'(' if low_open else '['}{low:g}, {high:g}]"
        raise ConfigError(f"{key} must be a number in {bounds}, got {value!r}")
    return float(value)


def _choice(cfg: DictConfig, key: str, choices: tuple[str, ...]) -> str:
    value = OmegaConf.select(cfg, key)
    if str(value) not in choices:
        raise ConfigError(f"{key} must be one of {', '.join(choices)}; got {value!r}")
    return str(value)


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
    """The option chosen in each config group, from Hydra's runtime (or from a Compose-API config)."""
    from hydra.core.hydra_config import HydraConfig

    try:
        choices = dict(HydraConfig.get().runtime.choices)
    except ValueError:  # not under @hydra.main: a config from compose(..., return_hydra_config=True), or none
        choices = dict(OmegaConf.select(cfg, "hydra.runtime.choices", default={}) or {})
    return {g: str(choices[g]) for g in GROUPS if choices.get(g) is not None}


def check_trainer(cfg: DictConfig) -> tuple[int, int]:
    """Check the ``trainer`` group; return the budget as (max_steps, max_epochs)."""
    max_steps = _int(cfg, "trainer.max_steps", 1, allowed=(-1,))
    max_epochs = _int(cfg, "trainer.max_epochs", 1) if max_steps == -1 else -1
    _int(cfg, "trainer.eval_every_steps", 1)
    _int(cfg, "trainer.accumulate_grad_batches", 1)
    _int(cfg, "trainer.num_threads", 0)
    _int(cfg, "trainer.checkpoint_every_steps", 0)
    pack = OmegaConf.select(cfg, "trainer.pack", default=1)
    if pack != "auto" and (isinstance(pack, bool) or not isinstance(pack, int) or pack < 1):
        raise ConfigError(f"trainer.pack must be an integer >= 1 (jobs per pack, 1 = off) or auto, got {pack!r}")
    folder = OmegaConf.select(cfg, "trainer.checkpoint_dir")
    if not isinstance(folder, str) or not folder:
        raise ConfigError(f"trainer.checkpoint_dir must be a folder path, got {folder!r}")
    _float(cfg, "trainer.divergence_factor", 1.0, low_open=True)
    targets = OmegaConf.select(cfg, "trainer.targets")
    if not OmegaConf.is_list(targets) and not isinstance(targets, (list, tuple)):
        raise ConfigError(f"trainer.targets must be a list of accuracies in (0, 1], got {targets!r}")
    for i, target in enumerate(targets):
        ok = isinstance(target, (int, float)) and not isinstance(target, bool) and 0 < target <= 1
        if not ok:
            raise ConfigError(f"trainer.targets[{i}] must be an accuracy in (0, 1], got {target!r}")
    _choice(cfg, "trainer.accelerator", ACCELERATORS)
    _choice(cfg, "trainer.strategy", STRATEGIES)
    _choice(cfg, "trainer.precision", PRECISIONS)
    _choice(cfg, "trainer.memory_format", MEMORY_FORMATS)
    _int(cfg, "trainer.num_nodes", 1)
    devices = OmegaConf.select(cfg, "trainer.devices")
    if devices != "auto":
        _int(cfg, "trainer.devices", 1)
    return max_steps, max_epochs


def check_tracking(cfg: DictConfig) -> None:
    experiment = OmegaConf.select(cfg, "tracking.experiment")
    if not isinstance(experiment, str) or not experiment.strip():
        raise ConfigError(f"tracking.experiment must be a non-empty name, got {experiment!r}")
    uri = OmegaConf.select(cfg, "tracking.uri")
    if uri is not None and not isinstance(uri, str):
        raise ConfigError(f"tracking.uri must be a URI string or null, got {uri!r}")
    _int(cfg, "tracking.flush_every", 1)


def build_policy(cfg: DictConfig, optimizer_lr: float) -> tuple[Any, str]:
    """The job's LR policy (with warm-up and k scaling if chosen) and its name for tags.

    Stretching the clock to the budget (``schedule.horizon_steps``) needs the number of steps, known only once the
    data is loaded; the job applies it.
    """
    from pipeline.policies import Fix, Scaled, Warmup

    choices = group_choices(cfg)
    if cfg.get("policy") is None:
        policy, name = Fix(k0=optimizer_lr), "fix"
    else:
        policy, name = _instantiate(cfg.policy, "policy"), choices.get("policy", "custom")
    if cfg.get("warmup") is not None:
        try:
            policy = Warmup(policy, **OmegaConf.to_container(cfg.warmup))
        except (ValueError, TypeError) as exc:
            raise ConfigError(f"warmup.{exc}") from exc
    k_scale = _float(cfg, "schedule.k_scale", 0.0, low_open=True)
    if k_scale != 1.0:
        policy = Scaled(policy, k_scale)
    return policy, name


def build_momentum(cfg: DictConfig, optimizer: Any) -> Any:
    """The job's momentum policy; None for ``momentum=none`` (an empty node) or no node: the optimizer's constant
    momentum. ``optimizer`` is one built on a dummy parameter: a policy needs its ``momentum`` or ``betas``."""
    node = cfg.get("momentum")
    if node is None or len(node) == 0:
        return None
    name = group_choices(cfg).get("momentum", "custom")
    policy = _instantiate(node, "momentum")
    if not callable(policy):
        raise ConfigError(f"momentum must build a momentum policy t -> momentum (a node with _target_), got {node!r}")
    group = optimizer.param_groups[0]
    if "betas" not in group and "momentum" not in group:
        option = group_choices(cfg).get("optimizer", "custom")
        raise ConfigError(
            f"momentum: momentum={name} schedules SGD's momentum or Adam's beta1, but optimizer={option} "
            f"({type(optimizer).__name__}) has neither; use momentum=none or an optimizer with momentum "
            "(e.g. optimizer=momentum, sgd, nesterov, adam, adamw, rmsprop)"
        )
    return policy


def check(cfg: DictConfig) -> Job:
    """Check every group of a composed job and build what can be built without data; raise ConfigError."""
    import torch

    seed = OmegaConf.select(cfg, "seed")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ConfigError(f"seed must be an integer >= 0, got {seed!r}")
    max_steps, max_epochs = check_trainer(cfg)
    check_tracking(cfg)
    if OmegaConf.select(cfg, "schedule.horizon_steps") is not None:
        _int(cfg, "schedule.horizon_steps", 1)

    optimizer = _instantiate(cfg.optimizer, "optimizer")
    try:  # torch checks lr, betas, momentum... when the optimizer is built: build one on a dummy parameter
        probe = optimizer([torch.nn.Parameter(torch.zeros(1))])
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"optimizer: {exc}") from exc
    lr = float(OmegaConf.select(cfg, "optimizer.lr", default=0.0) or 0.0)
    policy, policy_name = build_policy(cfg, lr)
    momentum = build_momentum(cfg, probe)

    model = _instantiate(cfg.model, "model")
    dataset = _instantiate(cfg.dataset, "dataset")
    try:  # build the model once with the dataset's shapes, so bad model options fail here, not mid-run
        model(in_channels=dataset.in_channels, num_classes=dataset.num_classes, image_size=dataset.image_size)
    except (ValueError, TypeError, RuntimeError) as exc:
        raise ConfigError(f"model: {exc}") from exc

    callbacks = tuple(_instantiate(cfg[group], group) for group in ("analysis",) if cfg.get(group) is not None)
    for factory, group in zip(callbacks, ("analysis",)):
        try:  # the factories are partial: build each once now, so bad options fail before any run exists
            factory(recorder=None)
        except (ValueError, TypeError) as exc:
            raise ConfigError(f"{group}.{exc}" if isinstance(exc, ValueError) else f"{group}: {exc}") from exc
    sampler = _instantiate(cfg.sampler, "sampler") if cfg.get("sampler") is not None else None

    choices = group_choices(cfg)
    choices["policy"] = policy_name
    return Job(policy, policy_name, optimizer, model, dataset, choices, max_steps, max_epochs, callbacks,
               momentum=momentum, sampler=sampler)
