"""The config stage's checks of the task, the data and the model: the objective a run is judged on, the data set
it loads and the model built once for the data's shapes, so a bad one fails before any run exists."""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from pipeline.config.base import ConfigError, _instantiate, group_choices

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


def config_sources(cfg: DictConfig) -> list:
    """Hydra's config search path of the job (``path``, ``schema``, ``provider`` each): from the config's ``hydra``
    node where it has one (composed with it, as the tests do), else from the running Hydra app, whose task function
    gets the config without that node."""
    from hydra.core.hydra_config import HydraConfig

    sources = OmegaConf.select(cfg, "hydra.runtime.config_sources", default=None)
    if sources is None:
        try:
            sources = HydraConfig.get().runtime.config_sources
        except ValueError:  # not inside a Hydra app
            sources = []
    return list(sources or [])


def option_target(cfg: DictConfig, group: str, option: str | None) -> str | None:
    """The ``_target_`` that the option's own config file declares, found where Hydra finds it (the config search
    path: the project's conf/, ``--config-dir``, ``hydra.searchpath``); None if the file or its target is not found."""
    if option is None:
        return None
    for source in config_sources(cfg):
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


def user_config_dirs(cfg: DictConfig) -> tuple[str, ...]:
    """The config folders of the user's own that composed the job (``--config-dir``, ``hydra.searchpath``), absolute:
    the file sources of Hydra's search path other than the project's ``conf/``."""
    project = (Path(__file__).resolve().parents[2] / "conf").resolve()
    found = (Path(str(source["path"])).resolve() for source in config_sources(cfg) if source.get("schema") == "file")
    return tuple(dict.fromkeys(str(path) for path in found if path != project))


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


