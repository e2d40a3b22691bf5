"""Check a composed job config and build its parts, before any data is loaded or any run is created.

:func:`check` returns a complete, typed :class:`~pipeline.config.schema.Job`; nothing downstream reads the raw config.
Every error is a :class:`ConfigError` whose message names the key (``policy.l``, ``trainer.max_steps``), the bad
value and what is accepted. Hydra already rejects unknown keys and unknown group options (listing the choices);
this module checks types, ranges and the arguments of the objects the groups build.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from pipeline.arguments import check_choice, check_int, writable_folder
from pipeline.config.base import (  # noqa: F401 - ConfigError, GROUPS, group_choices and job_config are used from here
    GROUPS,
    K_FROM,
    K_FROM_DEFAULT,
    ConfigError,
    _checked,
    _choice,
    _float,
    _instantiate,
    _int,
    _nearest,
    _select,
    check_keys,
    group_choices,
    job_config,
)
from pipeline.config.schema import (
    LIGHTNING_TRAINER,
    Job,
    RangeTestSettings,
    RunSettings,
    TrackingSettings,
    TrainerSettings,
)
from pipeline.config.task_checks import check_data, check_model, check_task, ran_as, user_config_dirs

ACCELERATORS = ("cpu", "gpu", "cuda", "mps", "auto")
STRATEGIES = ("auto", "ddp", "ddp_spawn", "ddp_find_unused_parameters_true", "fsdp")
MEMORY_FORMATS = ("auto", "channels_last", "contiguous")
PRECISIONS = ("32-true", "32", "64-true", "16-mixed", "bf16-mixed", "bf16-true", "16-true")
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
    _checked(writable_folder, "trainer.checkpoint_dir", Path(folder).resolve())
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
    """The job's policy chain (:class:`~pipeline.policies.build.PolicyChain`), its name for tags and where its k
    values come from (``policy.k_from``)."""
    from pipeline.policies import Fix
    from pipeline.policies.build import PolicyChain

    k_from = _checked(check_choice, "policy.k_from", OmegaConf.select(cfg, "policy.k_from", default=K_FROM_DEFAULT),
                      K_FROM)
    node = OmegaConf.to_container(cfg.policy, resolve=True) if cfg.get("policy") is not None else {}
    node.pop("k_from", None)  # the setting conf/config.yaml gives every policy node; not an argument of the policy
    if not node:  # no +policy: FIX at the optimizer's lr
        base, name = Fix(k0=optimizer_lr), "fix"
    else:  # the node: its fractions of the budget (l_frac, ...) become steps once the budget is known
        base, name = node, group_choices(cfg).get("policy", "custom")
    k_scale = _float(cfg, "schedule.k_scale", 0.0, low_open=True)
    horizon = _select(cfg, "schedule.horizon_steps")
    if horizon is not None:
        _int(cfg, "schedule.horizon_steps", 1)
    warmup = OmegaConf.to_container(cfg.warmup, resolve=True) if cfg.get("warmup") is not None else {}
    if cfg.get("warmup") is not None:
        unknown = sorted(set(warmup) - {"warmup_steps", "warmup_frac", "start_lr"})
        if unknown or warmup.get("warmup_steps") is None and warmup.get("warmup_frac") is None:
            raise ConfigError(f"warmup: a warm-up has warmup_steps (optimizer steps) or warmup_frac (fraction of the "
                              f"run's optimizer steps), and start_lr (learning rate); got {warmup}")
    try:
        chain = PolicyChain(base, warmup_steps=warmup.get("warmup_steps"), warmup_frac=warmup.get("warmup_frac"),
                            warmup_start_lr=warmup.get("start_lr", 0.0), k_scale=k_scale, horizon_steps=horizon)
        if cfg.trainer.max_steps > 0:  # the run's budget is known before its data: check the policy at it
            chain.for_budget(cfg.trainer.max_steps)
    except ValueError as exc:
        raise ConfigError(str(exc)) from exc
    if k_from == "range_test":
        from pipeline.policies.k_values import with_k

        try:  # every family the range test can set; a policy of the user's own with unknown fields is refused now
            with_k(chain.base, 0.01, 0.06)
        except ValueError as exc:
            raise ConfigError(f"policy.k_from=range_test: {exc}") from exc
    return chain, name, k_from


def check_range_test(cfg: DictConfig) -> RangeTestSettings:
    """The ``range_test`` node: Lightning's sweep from min_lr to max_lr and the rule's factors."""
    if cfg.get("range_test") is None:  # a primary config of the user's own without it: the shipped defaults
        shipped = OmegaConf.load(Path(__file__).resolve().parents[2] / "conf" / "config.yaml")
        cfg = OmegaConf.create({"range_test": shipped.range_test})
    min_lr = _float(cfg, "range_test.min_lr", 0.0, low_open=True)
    max_lr = _float(cfg, "range_test.max_lr", 0.0, low_open=True)
    if max_lr <= min_lr:
        raise ConfigError(f"range_test.max_lr must be a learning rate > range_test.min_lr ({min_lr:g}), got {max_lr!r}")
    return RangeTestSettings(
        min_lr=min_lr, max_lr=max_lr,
        steps=_checked(check_int, "range_test.steps", _select(cfg, "range_test.steps"), 5,
                       context=" (optimizer steps of the sweep, one LR each)"),
        seeds=_checked(check_int, "range_test.seeds", _select(cfg, "range_test.seeds"), 1, 1000),
        early_stop=_float(cfg, "range_test.early_stop", 1.0, low_open=True),
        k1_div=_float(cfg, "range_test.k1_div", 1.0),
        k0_div=_float(cfg, "range_test.k0_div", 1.0, low_open=True),
    )


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


def check_search(cfg: DictConfig, trainer: TrainerSettings, run: RunSettings):
    """``search`` (set by ``hydra/sweeper=halving``): where a pruned study stops this job and how it scores it."""
    if cfg.get("search") is None:
        return None
    from pipeline.search.rung import RungSettings

    if trainer.world_size > 1 or run.pack != 1:
        raise ConfigError("search: a pruned study trains each job alone on one device; set trainer.devices=1, "
                          f"trainer.num_nodes=1 and trainer.pack=1 (got {trainer.devices}, {trainer.num_nodes}, "
                          f"{run.pack})")
    try:
        return RungSettings.from_mapping(OmegaConf.to_container(cfg.search, resolve=True))
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"search.{exc}") from None


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
    search = check_search(cfg, trainer, run)

    optimizer = _instantiate(cfg.optimizer, "optimizer")
    try:  # torch checks lr, betas, momentum... when the optimizer is built: build one on a dummy parameter
        probe = optimizer([torch.nn.Parameter(torch.zeros(1))])
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"optimizer: {exc}") from exc
    lr = OmegaConf.select(cfg, "optimizer.lr", default=None)
    lr = 0.0 if lr is None else _float(cfg, "optimizer.lr", 0.0)  # torch lets a NaN learning rate through
    policy, policy_name, k_from = check_policy(cfg, lr)
    range_test = check_range_test(cfg)
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
    options = {}
    choices["policy"] = policy_name
    for group in ("model", "dataset", "task"):  # what actually ran, not the group's default option
        if (name := ran_as(cfg, group)) is not None:
            if choices.get(group) not in (None, name):
                options[group] = choices[group]
            choices[group] = name
    choices.setdefault("task", task.name)
    return Job(config=job_config(cfg), choices=choices, seed=seed, run_name=run_name, study=study, policy=policy,
               optimizer=optimizer, model=model, dataset=dataset, trainer=trainer, run=run, tracking=tracking,
               momentum=momentum, callbacks=callbacks, sampler=sampler, search=search, task=task,
               objective=objective, config_dirs=user_config_dirs(cfg), options=options, k_from=k_from,
               range_test=range_test)
