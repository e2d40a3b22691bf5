"""Check a composed job config and build its parts, before any data is loaded or any run is created.

:func:`check` returns a complete, typed :class:`~pipeline.config.schema.Job`; nothing downstream reads the raw config.
Every error is a :class:`ConfigError` whose message names the key (``policy.l``, ``trainer.max_steps``), the bad
value and what is accepted. Hydra already rejects unknown keys and unknown group options (listing the choices);
this module checks types, ranges and the arguments of the objects the groups build.
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from pipeline.config.schema import LIGHTNING_TRAINER, Job, RunSettings, TrackingSettings, TrainerSettings
from pipeline.training.arguments import check_choice, check_int, check_number

ACCELERATORS = ("cpu", "gpu", "cuda", "mps", "auto")
STRATEGIES = ("auto", "ddp", "ddp_spawn", "ddp_find_unused_parameters_true", "fsdp")
MEMORY_FORMATS = ("auto", "channels_last", "contiguous")
PRECISIONS = ("32-true", "32", "64-true", "16-mixed", "bf16-mixed", "bf16-true", "16-true")
GROUPS = ("model", "dataset", "task", "optimizer", "policy", "warmup", "momentum", "analysis", "sampler", "trainer",
          "tracking")
# Keys of the ``trainer`` group that are the project's own run settings; every other key is an argument of
# Lightning's Trainer (users may add any with ``+trainer.<argument>=``).
RUN_KEYS = ("targets", "eval_every_steps", "divergence_factor", "checkpoint_every_steps", "checkpoint_dir",
            "memory_format", "num_threads", "pack", "progress")
# Lightning arguments the pipeline sets itself (from the run settings, or fixed by how a run is recorded).
MANAGED_TRAINER_ARGS = ("callbacks", "logger", "enable_checkpointing", "enable_progress_bar", "val_check_interval",
                        "check_val_every_n_epoch", "num_sanity_val_steps", "use_distributed_sampler",
                        "enable_model_summary")
# The largest seed Lightning's seed_everything accepts (numpy's limit).
MAX_SEED = 2**32 - 1


class ConfigError(ValueError):
    """A config value that cannot work; the message names the key and the accepted values."""


def _select(cfg: DictConfig, key: str) -> Any:
    return OmegaConf.select(cfg, key)


def _checked(rule, key: str, *args, **kwargs):
    """Apply one of the shared value checks (:mod:`pipeline.training.arguments`) to a config key."""
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


def job_config(cfg: DictConfig) -> dict:
    """The resolved job config without Hydra's own node: what the run's params and config artifact hold, and what
    its key hashes. The default classification task is implied, not recorded (:data:`IMPLIED_TASK`)."""
    job_only = OmegaConf.masked_copy(cfg, [key for key in cfg if key != "hydra"])
    config = OmegaConf.to_container(job_only, resolve=True)
    if config.get("task") == IMPLIED_TASK:
        del config["task"]
    return config


# -- keys ---------------------------------------------------------------------------------------------------------

# Keys of conf/config.yaml's own (not groups); a top-level key must be one of these or a config group.
TOP_LEVEL_KEYS = ("seed", "schedule", "study", "run_name", "hydra")
SUB_KEYS = {"schedule": ("k_scale", "horizon_steps"), "tracking": ("uri", "experiment", "flush_every")}


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


# -- trainer ------------------------------------------------------------------------------------------------------


def _lightning_arguments() -> set[str]:
    import inspect

    from lightning.pytorch import Trainer

    return {name for name in inspect.signature(Trainer.__init__).parameters if name != "self"}


def check_run_settings(cfg: DictConfig) -> RunSettings:
    """The project's own settings in the ``trainer`` group."""
    _int(cfg, "trainer.eval_every_steps", 1)
    _int(cfg, "trainer.num_threads", 0)
    _int(cfg, "trainer.checkpoint_every_steps", 0)
    pack = _select(cfg, "trainer.pack")
    if pack != "auto" and (isinstance(pack, bool) or not isinstance(pack, int) or pack < 1):
        raise ConfigError(f"trainer.pack must be an integer >= 1 (jobs per pack, 1 = off) or auto, got {pack!r}")
    folder = _select(cfg, "trainer.checkpoint_dir")
    if not isinstance(folder, str) or not folder:
        raise ConfigError(f"trainer.checkpoint_dir must be a folder path, got {folder!r}")
    _writable_folder("trainer.checkpoint_dir", Path(folder).resolve())
    targets = _select(cfg, "trainer.targets")
    if not OmegaConf.is_list(targets) and not isinstance(targets, (list, tuple)):
        raise ConfigError(f"trainer.targets must be a list of values of the task's objective metric (classification: "
                          f"accuracies in (0, 1]), got {targets!r}")
    for i, target in enumerate(targets):
        if isinstance(target, bool) or not isinstance(target, (int, float)):
            raise ConfigError(f"trainer.targets[{i}] must be a number (a value of the task's objective metric), "
                              f"got {target!r}")
    progress = _select(cfg, "trainer.progress")
    if not isinstance(progress, bool):
        raise ConfigError(f"trainer.progress must be true or false, got {progress!r}")
    return RunSettings(
        targets=tuple(float(t) for t in targets),
        eval_every_steps=cfg.trainer.eval_every_steps,
        divergence_factor=_float(cfg, "trainer.divergence_factor", 1.0, low_open=True),
        checkpoint_every_steps=cfg.trainer.checkpoint_every_steps,
        checkpoint_dir=Path(folder).resolve(),
        memory_format=_choice(cfg, "trainer.memory_format", MEMORY_FORMATS),
        num_threads=cfg.trainer.num_threads,
        pack=pack,
        progress=progress,
    )


def _writable_folder(key: str, folder: Path) -> None:
    """The folder, or the nearest folder above it that exists, takes a new entry (probed with a temporary folder that
    is removed at once: a rejected command leaves nothing behind); else a ConfigError naming the key."""
    import tempfile

    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    try:
        Path(tempfile.mkdtemp(dir=existing, prefix=".probe-")).rmdir()
    except OSError as exc:
        raise ConfigError(f"{key}: cannot create or write the folder {folder} ({exc.strerror} in {existing}); "
                          "choose a writable folder") from None


def check_trainer(cfg: DictConfig) -> TrainerSettings:
    """Lightning's arguments in the ``trainer`` group, as the node its Trainer is instantiated from."""
    max_steps = _int(cfg, "trainer.max_steps", 1, allowed=(-1,))
    max_epochs = _int(cfg, "trainer.max_epochs", 1) if max_steps == -1 else -1
    _int(cfg, "trainer.accumulate_grad_batches", 1)
    _choice(cfg, "trainer.accelerator", ACCELERATORS)
    _choice(cfg, "trainer.strategy", STRATEGIES)
    _choice(cfg, "trainer.precision", PRECISIONS)
    _int(cfg, "trainer.num_nodes", 1)
    if _select(cfg, "trainer.devices") != "auto":
        _int(cfg, "trainer.devices", 1)
    node = {k: v for k, v in OmegaConf.to_container(cfg.trainer, resolve=True).items() if k not in RUN_KEYS}
    node.update(max_steps=max_steps, max_epochs=max_epochs)
    known = _lightning_arguments()
    for key in node:
        if key in MANAGED_TRAINER_ARGS:
            raise ConfigError(f"trainer.{key} is set by the pipeline (from its run settings); remove it")
        if key not in known:
            hint = _nearest(key, known | set(RUN_KEYS)).replace("mean ", "mean trainer.")
            raise ConfigError(f"trainer.{key} is neither a run setting nor an argument of Lightning's Trainer{hint}")
    t = cfg.trainer
    return TrainerSettings(
        node={"_target_": LIGHTNING_TRAINER, **node}, max_steps=max_steps, max_epochs=max_epochs,
        accumulate_grad_batches=t.accumulate_grad_batches, accelerator=str(t.accelerator), devices=t.devices,
        num_nodes=t.num_nodes, strategy=str(t.strategy), precision=str(t.precision),
    )


def check_tracking(cfg: DictConfig) -> TrackingSettings:
    from pipeline.tracking.store import TrackingError, resolve_uri

    experiment = _select(cfg, "tracking.experiment")
    if not isinstance(experiment, str) or not experiment.strip():
        raise ConfigError(f"tracking.experiment must be a non-empty name, got {experiment!r}")
    uri = _select(cfg, "tracking.uri")
    if uri is not None and not isinstance(uri, str):
        raise ConfigError(f"tracking.uri must be a URI string or null, got {uri!r}")
    try:
        resolved = resolve_uri(uri)
    except TrackingError as exc:
        raise ConfigError(str(exc)) from None
    return TrackingSettings(resolved, experiment, _int(cfg, "tracking.flush_every", 1))


# -- policies -----------------------------------------------------------------------------------------------------


def check_policy(cfg: DictConfig, optimizer_lr: float):
    """The job's policy chain (:class:`~pipeline.policies.build.PolicyChain`) and its name for tags."""
    from pipeline.policies import Fix
    from pipeline.policies.build import PolicyChain

    if cfg.get("policy") is None:
        base, name = Fix(k0=optimizer_lr), "fix"
    else:
        base, name = _instantiate(cfg.policy, "policy"), group_choices(cfg).get("policy", "custom")
    k_scale = _float(cfg, "schedule.k_scale", 0.0, low_open=True)
    horizon = _select(cfg, "schedule.horizon_steps")
    if horizon is not None:
        _int(cfg, "schedule.horizon_steps", 1)
    warmup = OmegaConf.to_container(cfg.warmup, resolve=True) if cfg.get("warmup") is not None else None
    if warmup is not None:
        unknown = sorted(set(warmup) - {"warmup_steps", "start_lr"})
        if unknown or "warmup_steps" not in warmup:
            raise ConfigError(f"warmup: a warm-up has warmup_steps (optimizer steps) and start_lr (learning rate); "
                              f"got keys {sorted(warmup)}")
    try:
        chain = PolicyChain(base, warmup and warmup["warmup_steps"], (warmup or {}).get("start_lr", 0.0), k_scale,
                            horizon)
    except ValueError as exc:
        raise ConfigError(f"warmup.{exc}") from exc
    return chain, name


def check_momentum(cfg: DictConfig, optimizer: Any) -> Any:
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


# -- task, data and model ----------------------------------------------------------------------------------------

OBJECTIVE_KEYS = ("metric", "mode")


def check_task(cfg: DictConfig, targets: tuple[float, ...]):
    """The job's task (:class:`~pipeline.tasks.base.Task`) and its objective: a metric the task logs, the mode that
    metric is better in, and ``trainer.targets`` within the metric's range."""
    from pipeline.tasks import Classification, Objective, Task

    node = cfg.get("task")
    if node is None:  # a primary config of the user's own without a task group: classification, as before tasks
        return Classification(), Objective("acc", "max", check_targets(Classification(), "acc", targets))
    spec = OmegaConf.to_container(node, resolve=True)
    objective = spec.pop("objective", None)
    spec.pop("name", None)
    task = _instantiate(OmegaConf.create(spec), "task")
    if not isinstance(task, Task):
        raise ConfigError(f"task._target_ must build a pipeline.tasks.Task (classification, regression, "
                          f"language_model, or a subclass of your own), got {type(task).__name__}")
    if not isinstance(objective, dict) or sorted(objective) != sorted(OBJECTIVE_KEYS):
        raise ConfigError(f"task.objective must have metric (one of {', '.join(task.eval_keys)}) and mode (max or "
                          f"min), got {objective!r}")
    metric, mode = objective["metric"], objective["mode"]
    if metric not in task.eval_keys:
        raise ConfigError(f"task.objective.metric must be a metric the task logs ({', '.join(task.eval_keys)}), "
                          f"got {metric!r}")
    if mode not in ("max", "min"):
        raise ConfigError(f"task.objective.mode must be max or min, got {mode!r}")
    better = task.metric(metric).better
    if better is not None and mode != better:
        direction = "higher" if better == "max" else "lower"
        raise ConfigError(f"task.objective.mode must be {better} for {metric} ({direction} is better), got {mode!r}")
    return task, Objective(metric, mode, check_targets(task, metric, targets))


def check_targets(task, metric: str, targets: tuple[float, ...]) -> tuple[float, ...]:
    spec = task.metric(metric)
    for i, target in enumerate(targets):
        if not spec.accepts(target):
            raise ConfigError(f"trainer.targets[{i}] must be {spec.accepted()} (the objective, {metric}), "
                              f"got {target!r}")
    return tuple(targets)


def option_target(cfg: DictConfig, group: str, option: str | None) -> str | None:
    """The ``_target_`` that the option's own config file declares, found where Hydra finds it (the config search
    path: the project's conf/, ``--config-dir``, ``hydra.searchpath``); None if the file or its target is not found."""
    if option is None:
        return None
    sources = OmegaConf.select(cfg, "hydra.runtime.config_sources", default=None) or []
    for source in sources:
        if source.get("schema") != "file":
            continue
        path = Path(source["path"]) / group / f"{option}.yaml"
        if path.is_file():
            try:
                text = path.read_text()
                loaded = OmegaConf.load(path)
            except (OSError, ValueError):
                return None
            package_global = any("@package _global_" in line for line in text.splitlines()[:5] if "#" in line)
            node = OmegaConf.to_container(loaded)  # unresolved: a mandatory "???" target is a target too
            found = (node.get(group) or {}) if package_global else node
            found = found.get("_target_") if isinstance(found, dict) else None
            return found if isinstance(found, str) else None
    return None


def ran_as(cfg: DictConfig, group: str) -> str | None:
    """The name a run gives what its group ``group`` built (identity.ran_as)."""
    from pipeline.training.identity import ran_as as name_of

    option = group_choices(cfg).get(group)
    node = cfg.get(group)
    if node is None:
        return option
    given = node.get("name") if OmegaConf.is_dict(node) else None
    if given is not None and (not isinstance(given, str) or not given.strip()):
        raise ConfigError(f"{group}.name must be a non-empty name (the run's tag for it), got {given!r}")
    target = node.get("_target_") if OmegaConf.is_dict(node) else None
    return name_of(option, target, option_target(cfg, group, option), given)


def check_data(cfg: DictConfig):
    """The data module the ``dataset`` node builds (a LightningDataModule, or a map-style Dataset wrapped)."""
    from hydra.errors import InstantiationException

    from pipeline.training.data.wrapped import build_data

    try:
        dataset = build_data(cfg.dataset)
    except InstantiationException as exc:
        cause = exc.__cause__ or exc
        raise ConfigError(f"dataset.{cause}" if isinstance(cause, ValueError) else f"dataset: {cause}") from exc
    except (ValueError, TypeError) as exc:
        raise ConfigError(str(exc) if str(exc).startswith("dataset") else f"dataset: {exc}") from exc
    if not callable(getattr(dataset, "test_dataloader", None)) or _not_overridden(dataset, "test_dataloader"):
        raise ConfigError(f"dataset: {type(dataset).__name__} has no test_dataloader(); every run is tested at the end "
                          "(return your validation loader if you have no test split)")
    return dataset


def _not_overridden(dataset, method: str) -> bool:
    from lightning.pytorch import LightningDataModule
    from lightning.pytorch.utilities.model_helpers import is_overridden

    return not is_overridden(method, dataset, LightningDataModule)


def _check_model_settings(spec: dict) -> None:
    """Every setting of the model node is an argument its target takes: overriding only ``model._target_`` keeps the
    option's other settings (char_gru's ``hidden_size``), which a model of the user's own may not take."""
    import inspect

    from hydra.utils import get_object

    try:
        target = get_object(spec["_target_"])
        params = inspect.signature(target).parameters
    except Exception:  # noqa: BLE001 - an unimportable target or one without a signature: instantiate says why
        return
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return
    for key in spec:
        if not key.startswith("_") and key not in params:
            takes = ", ".join(name for name in params if name != "self") or "nothing"
            raise ConfigError(f"model.{key}: {spec['_target_']} does not take {key} (it takes {takes}); remove it with "
                              f"~model.{key}, or start from a model option without settings (e.g. model=lenet5)")


def check_model(cfg: DictConfig, dataset, task):
    """The model factory (the ``model`` node, partial), built once when the data module states its shapes before
    loading, and a forward pass of a batch of zeros checked against the task; else the same check runs on the first
    real batch once the data are loaded (:func:`pipeline.training.assemble.build_training`), still before any run.
    Returns the factory and the model built (None when it could not be built yet)."""
    import lightning as L
    import torch

    from pipeline.training.shapes import build_model, check_fit, declared_batch, model_arguments

    spec = OmegaConf.to_container(cfg.model, resolve=True)
    spec.pop("name", None)
    spec["_partial_"] = True  # always a factory: the job builds the model after seeding, with the data's shapes
    _check_model_settings(spec)
    factory = _instantiate(OmegaConf.create(spec), "model")
    if "input_shape" not in model_arguments(dataset):
        return factory, None  # shapes known only once the data are loaded
    try:
        net = build_model(factory, dataset)
    except (ValueError, TypeError, RuntimeError) as exc:
        raise ConfigError(f"model: {exc}") from exc
    if not isinstance(net, torch.nn.Module):
        raise ConfigError(f"model: {spec.get('_target_')} must build a torch.nn.Module (or a LightningModule), "
                          f"got {type(net).__name__}")
    batch = declared_batch(dataset)
    if batch is not None and not isinstance(net, L.LightningModule):
        try:
            check_fit(net, task, dataset, batch)
        except ValueError as exc:
            raise ConfigError(str(exc)) from exc
    return factory, net


def check_opt_ins_fit(cfg: DictConfig, task, net) -> None:
    """LCA and AutoAssist measure cross-entropy through the pipeline's own module: classification only, and not on
    a LightningModule of the user's own."""
    import lightning as L

    from pipeline.tasks import Classification

    for group in ("analysis", "sampler"):
        if cfg.get(group) is None:
            continue
        option = group_choices(cfg).get(group, "custom")
        if not isinstance(task, Classification):
            raise ConfigError(f"{group}: +{group}={option} works on classification (cross-entropy on class labels); "
                              f"this job's task is {type(task).__name__}")
        if isinstance(net, L.LightningModule):
            raise ConfigError(f"{group}: +{group}={option} hooks into the pipeline's own module; the model "
                              f"{type(net).__name__} is a LightningModule of its own")


# -- the job ------------------------------------------------------------------------------------------------------


def check(cfg: DictConfig) -> Job:
    """Check every group of a composed job and build what can be built without data; raise ConfigError."""
    import torch

    check_keys(cfg)
    seed = _checked(check_int, "seed", _select(cfg, "seed"), 0, MAX_SEED)
    run_name = _select(cfg, "run_name")
    if run_name is not None and (not isinstance(run_name, str) or not run_name.strip()):
        raise ConfigError(f"run_name must be a non-empty name or null, got {run_name!r}")
    study = _select(cfg, "study")
    if study is not None and not isinstance(study, str):
        raise ConfigError(f"study must be a name or null, got {study!r}")
    trainer = check_trainer(cfg)
    run = check_run_settings(cfg)
    tracking = check_tracking(cfg)

    optimizer = _instantiate(cfg.optimizer, "optimizer")
    try:  # torch checks lr, betas, momentum... when the optimizer is built: build one on a dummy parameter
        probe = optimizer([torch.nn.Parameter(torch.zeros(1))])
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"optimizer: {exc}") from exc
    lr = OmegaConf.select(cfg, "optimizer.lr", default=None)
    lr = 0.0 if lr is None else _float(cfg, "optimizer.lr", 0.0)  # torch lets a NaN learning rate through
    policy, policy_name = check_policy(cfg, lr)
    momentum = check_momentum(cfg, probe)

    task, objective = check_task(cfg, run.targets)
    dataset = check_data(cfg)
    model, net = check_model(cfg, dataset, task)  # built once with the data's shapes: bad options fail here
    check_opt_ins_fit(cfg, task, net)

    callbacks = tuple(_instantiate(cfg[group], group) for group in ("analysis",) if cfg.get(group) is not None)
    for factory, group in zip(callbacks, ("analysis",)):
        try:  # the factories are partial: build each once now, so bad options fail before any run exists
            factory(recorder=None)
        except (ValueError, TypeError) as exc:
            raise ConfigError(f"{group}.{exc}" if isinstance(exc, ValueError) else f"{group}: {exc}") from exc
    sampler = _instantiate(cfg.sampler, "sampler") if cfg.get("sampler") is not None else None

    choices = group_choices(cfg)
    choices["policy"] = policy_name
    for group in ("model", "dataset", "task"):  # what actually ran, not the group's default option
        if (name := ran_as(cfg, group)) is not None:
            choices[group] = name
    choices.setdefault("task", task.name)
    return Job(config=job_config(cfg), choices=choices, seed=seed, run_name=run_name, study=study, policy=policy,
               optimizer=optimizer, model=model, dataset=dataset, trainer=trainer, run=run, tracking=tracking,
               momentum=momentum, callbacks=callbacks, sampler=sampler, task=task, objective=objective)
