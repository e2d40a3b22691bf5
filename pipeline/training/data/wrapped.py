"""Data of the user's own (``dataset._target_``): a LightningDataModule as it is, or a map-style torch ``Dataset``
split and batched by :class:`DatasetModule`, read lazily by a DataLoader (nothing is held in memory as tensors).

The ``dataset`` node's keys are arguments: of the user's class or function where its signature takes them, and of
:class:`DatasetModule` (for a Dataset: ``batch_size``, ``val_frac``, ``seed``, ...); a key that neither takes is an
error naming it. A LightningDataModule batches its own data: the loader settings of ``dataset=custom`` that it does
not take are left unused. A Dataset class whose signature has ``train`` (torchvision's convention) or ``split`` is
built twice, for training (``train=True`` / ``split="train"``) and test (``train=False`` / ``split="test"``); any
other is one pool that is split into train, validation and test parts.
"""

from __future__ import annotations

import inspect
from typing import Any

import torch
from lightning.pytorch import LightningDataModule
from torch.utils.data import Dataset, Subset

from pipeline.arguments import check_int, check_number
from pipeline.training.data.base import SplitDataModule
from pipeline.training.data.batching import SPLIT_STREAM, derive_seed


class DatasetModule(SplitDataModule):
    """A map-style Dataset (items ``(x, y)``) as train / val / test loaders (torch's default collate, read by
    ``num_workers`` processes; order, sharding and resuming as for every data set: :class:`SplitDataModule`).

    Args:
        train: the training pool (validation is carved out of it), or the whole data when ``test`` is None.
        test: a test split of its own, or None to hold out ``test_frac`` of ``train``.
        batch_size: training batch size, in samples.
        eval_batch_size: validation and test batch size, in samples.
        val_frac, test_frac: fractions of the pool (of ``train``) held out, by a permutation seeded by ``split_seed``.
        seed: seeds the per-epoch training order (the job's seed).
        num_workers: DataLoader worker processes reading samples (0: in the training process).
        output_size: what the model outputs per sample; None takes the Dataset's ``output_size``, ``num_classes`` or
            ``len(classes)``.
    """

    name = "custom"

    def __init__(self, train: Dataset, test: Dataset | None = None, *, batch_size: int = 64,
                 eval_batch_size: int = 256, val_frac: float = 0.1, test_frac: float = 0.1, seed: int = 0,
                 split_seed: int = 0, num_workers: int = 0, output_size: int | None = None) -> None:
        super().__init__()
        for name, data in (("train", train), ("test", test)):
            if data is not None and not (hasattr(data, "__getitem__") and hasattr(data, "__len__")):
                raise ValueError(f"{name} must be a map-style Dataset (__getitem__ and __len__), got "
                                 f"{type(data).__name__}")
        check_int("batch_size", batch_size, 1)
        check_int("eval_batch_size", eval_batch_size, 1)
        check_number("val_frac", val_frac, 0, 1, low_open=True, high_open=True)
        check_number("test_frac", test_frac, 0, 1, low_open=True, high_open=True)
        check_int("seed", seed, 0)
        check_int("split_seed", split_seed, 0)
        check_int("num_workers", num_workers, 0)
        check_int("output_size", output_size, 1, optional=True)
        self.pool, self.test_pool = train, test
        self.batch_size, self.eval_batch_size, self.num_workers = batch_size, eval_batch_size, num_workers
        self.val_frac, self.test_frac, self.seed, self.split_seed = val_frac, test_frac, seed, split_seed
        self._output_size = output_size
        self._splits: tuple[Subset, Subset, Subset] | None = None
        self._sample: tuple | None = None

    # -- what the model and the task are told (pipeline.training.shapes) --------------------------------------------
    def _first(self) -> tuple:
        if self._sample is None:
            self._sample = self.pool[0]
        return self._sample

    @property
    def output_size(self) -> int | None:
        if self._output_size is not None:
            return self._output_size
        for name in ("output_size", "num_classes"):
            if isinstance(getattr(self.pool, name, None), int):
                return getattr(self.pool, name)
        classes = getattr(self.pool, "classes", None)
        return len(classes) if classes is not None else None

    @property
    def num_classes(self) -> int | None:
        return self.output_size if isinstance(self._first()[1], int) or getattr(self._first()[1], "ndim", 1) == 0 \
            else None

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(torch.as_tensor(self._first()[0]).shape)

    @property
    def in_channels(self) -> int | None:
        shape = self.input_shape
        return shape[0] if len(shape) == 3 and shape[1] == shape[2] else None

    @property
    def image_size(self) -> int | None:
        shape = self.input_shape
        return shape[1] if len(shape) == 3 and shape[1] == shape[2] else None

    @property
    def vocab_size(self) -> int | None:
        return getattr(self.pool, "vocab_size", None)

    # -- splits and loaders -------------------------------------------------------------------------------------------
    def setup(self, stage: str | None = None) -> None:
        if self._splits is not None:
            return
        n = len(self.pool)
        held = round(n * self.val_frac) + (round(n * self.test_frac) if self.test_pool is None else 0)
        if n - held < 1 or round(n * self.val_frac) < 1:
            raise ValueError(f"val_frac={self.val_frac} and test_frac={self.test_frac} leave no training or no "
                             f"validation samples of the dataset's {n}")
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(derive_seed(self.split_seed, SPLIT_STREAM)))
        n_val = round(n * self.val_frac)
        if self.test_pool is None:
            n_test = round(n * self.test_frac)
            test = Subset(self.pool, perm[:n_test].tolist())
            perm = perm[n_test:]
        else:
            test = Subset(self.test_pool, list(range(len(self.test_pool))))
        if len(test) < 1:
            raise ValueError(f"test_frac={self.test_frac} leaves no test samples of the dataset's {n}")
        self._splits = (Subset(self.pool, perm[n_val:].tolist()), Subset(self.pool, perm[:n_val].tolist()), test)


# -- building the dataset node --------------------------------------------------------------------------------------

SPLIT_ARGUMENTS = {"train": (True, False), "split": ("train", "test")}


def _parameters(target) -> tuple[set[str], bool]:
    """The keyword arguments ``target`` takes, and whether it takes any (``**kwargs``)."""
    try:
        params = inspect.signature(target).parameters
    except (TypeError, ValueError):
        return set(), True
    return ({name for name, p in params.items() if p.kind is not inspect.Parameter.VAR_POSITIONAL},
            any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()))


def build_data(node: Any, key: str = "dataset") -> LightningDataModule:
    """The data module the ``dataset`` node describes (module docstring): ValueError naming a key nothing takes, or
    a target that builds neither a LightningDataModule nor a map-style Dataset."""
    from hydra.utils import get_object, instantiate
    from omegaconf import OmegaConf

    spec = OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) else dict(node)
    path = spec.pop("_target_", None)
    if path == "???":
        raise ValueError(f"{key}._target_ is not set: name your map-style Dataset or LightningDataModule (class or "
                         f"function), e.g. {key}._target_=mymodule.MyData")
    if not isinstance(path, str) or not path:
        raise ValueError(f"{key}._target_ must name a LightningDataModule or a map-style Dataset (class or function), "
                         f"got {path!r}")
    spec.pop("_partial_", None)
    spec.pop("name", None)  # the run's name for the data (identity), not an argument
    try:
        target = get_object(path)
    except Exception as exc:  # noqa: BLE001 - Hydra wraps import errors in several types
        raise ValueError(f"{key}._target_: cannot import {path} ({' '.join(str(exc).split())})") from None
    params, any_kwargs = _parameters(target)
    own = {k: v for k, v in spec.items() if any_kwargs or k in params}
    rest = {k: v for k, v in spec.items() if k not in own}
    wrapper, _ = _parameters(DatasetModule)
    wrapper -= {"self", "train", "test"}
    is_module_class = inspect.isclass(target) and issubclass(target, LightningDataModule)
    if is_module_class and (unknown := {k: v for k, v in rest.items() if k not in wrapper}):
        _refuse(key, path, unknown, sorted(params - {"self"}), ())

    def build(extra: dict):
        return instantiate({"_target_": path, **own, **extra}, _convert_="all")

    split = next((name for name in SPLIT_ARGUMENTS if name in params and name not in own), None)
    data = build({split: SPLIT_ARGUMENTS[split][0]} if split else {})
    if isinstance(data, LightningDataModule):
        if unknown := {k: v for k, v in rest.items() if k not in wrapper}:
            _refuse(key, path, unknown, sorted(params - {"self"}), ())
        return data
    if not (hasattr(data, "__getitem__") and hasattr(data, "__len__")):
        raise ValueError(f"{key}._target_: {path} builds a {type(data).__name__}, neither a LightningDataModule nor a "
                         "map-style Dataset (__getitem__ and __len__)")
    if unknown := {k: v for k, v in rest.items() if k not in wrapper}:
        _refuse(key, path, unknown, sorted(params - {"self"}), sorted(wrapper))
    shared = {k: v for k, v in spec.items() if k in wrapper}  # e.g. seed: the Dataset and the loaders both take it
    test = build({split: SPLIT_ARGUMENTS[split][1]}) if split else None
    return DatasetModule(data, test, **shared)


def _refuse(key: str, path: str, keys: dict, takes: list[str], wrapper) -> None:
    first = sorted(keys)[0]
    also = f" and the pipeline's loaders take {', '.join(wrapper)}" if wrapper else ""
    raise ValueError(f"{key}.{first}: {path} does not take {first} (it takes {', '.join(takes) or 'nothing'}){also}; "
                     f"remove it with ~{key}.{first}, or start from dataset=custom")


__all__ = ["DatasetModule", "build_data"]
