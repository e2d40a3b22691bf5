"""The base of every data set held in memory: a :class:`TensorDataModule` keeps it as tensors (images normalised to
float32; integer inputs such as token ids stay integer).

It does everything but loading: argument checks, normalisation, the seeded train/val split, the subsets and the data
loaders (batches and their order: :mod:`pipeline.training.data.batching`). Each data set (``idx``, ``cifar10``,
``synthetic``, ``diabetes``, ``fortunes``) only knows where its data are and how to read them into tensors
(:class:`RawData`).

What a data module tells the model and the task (the contract of :mod:`pipeline.training.shapes`): ``input_shape``
and ``input_dtype`` (one sample's input), ``target_shape`` and ``target_dtype`` (one sample's target),
``output_size`` (classes, values per sample or vocabulary), and for images ``in_channels``, ``image_size`` and
``num_classes``, for tokens ``vocab_size``. Image data sets set the image attributes; the rest follows from them.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import torch
from lightning.pytorch import LightningDataModule
from torch import Tensor
from torch.utils.data import DataLoader

from pipeline.arguments import check_int
from pipeline.training.data.batching import (
    SPLIT_STREAM,
    EpochShuffleSampler,
    ResumableLoader,
    TensorBatchDataset,
    batches_done,
    derive_seed,
    keep_batch,
)


class DatasetNotFoundError(FileNotFoundError):
    """No local copy of a data set was found and downloading it failed."""


class RawData(NamedTuple):
    """What a subclass loads: inputs [N, ...] (images as uint8 0..255, or floats already normalised; integer ids
    kept as they are) and targets [N, ...] (int64 labels, floats, token ids)."""

    x_train: Tensor
    y_train: Tensor
    x_test: Tensor
    y_test: Tensor


def try_download(download: Callable[[], None]) -> str:
    """Run a download; return why the data may still be missing, on one line, for the not-found message."""
    try:
        download()
    except Exception as err:  # noqa: BLE001 - any failure means the same thing to the user: no data
        return f"{type(err).__name__}: {' '.join(str(err).split())}"
    return "torchvision reported success but the files are not there"


class SplitDataModule(LightningDataModule):
    """Train / val / test splits made by ``setup`` (``self._splits``) and their loaders: the training order of epoch
    ``e`` a pure function of ``(seed, e)``, sharded under DDP and resumed mid-epoch (:mod:`.batching`); validation
    and test in order, each rank every world-th sample. Subclasses set ``batch_size``, ``eval_batch_size``, ``seed``,
    ``num_workers`` and ``collate_fn`` (None: torch's default collate) and fill ``_splits`` in ``setup``."""

    batch_size: int
    eval_batch_size: int
    seed: int
    num_workers: int = 0
    collate_fn = None
    _splits: tuple | None = None

    def _rank_and_world(self) -> tuple[int, int]:
        """This process's place under DDP (the data module shards its own loaders; see EpochShuffleSampler)."""
        trainer = getattr(self, "trainer", None)
        return (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)

    def train_dataloader(self) -> DataLoader:
        dataset = self.train_set
        return ResumableLoader(
            dataset,
            batch_size=self.batch_size,
            sampler=EpochShuffleSampler(len(dataset), self.seed, *self._rank_and_world()),
            collate_fn=self.collate_fn,
            num_workers=self.num_workers,
            position=self._batches_done_this_epoch,
        )

    def _batches_done_this_epoch(self) -> int:
        """Batches of the current epoch already trained on: non-zero only when Lightning resumed mid-epoch."""
        trainer = getattr(self, "trainer", None)
        if trainer is None:
            return 0
        return batches_done(trainer.global_step, trainer.current_epoch, len(self.train_set), self.batch_size,
                            trainer.world_size, trainer.accumulate_grad_batches)

    def val_dataloader(self) -> DataLoader:
        return self._eval_loader(self.val_set)

    def test_dataloader(self) -> DataLoader:
        return self._eval_loader(self.test_set)

    @property
    def train_set(self):
        return self._require_setup()[0]

    @property
    def val_set(self):
        return self._require_setup()[1]

    @property
    def test_set(self):
        return self._require_setup()[2]

    def _require_setup(self) -> tuple:
        if self._splits is None:
            raise RuntimeError(f"{type(self).__name__}.setup() must run before its data is used")
        return self._splits

    def _eval_loader(self, dataset) -> DataLoader:
        # Under DDP each rank evaluates every world-th sample, none twice: the module sums its statistics over the
        # ranks, so validation and test metrics are exact over the whole split.
        rank, world = self._rank_and_world()
        return DataLoader(dataset, batch_size=self.eval_batch_size, sampler=range(rank, len(dataset), world),
                          collate_fn=self.collate_fn, num_workers=self.num_workers)


class TensorDataModule(SplitDataModule):
    """A data set held in memory as normalised float32 tensors, split into train / val / test loaders.

    Args:
        data_dir: where the data set's files are, or are downloaded to.
        batch_size: training batch size, in samples.
        val_size: samples carved out of the *training* set for validation, by a permutation seeded by
            `split_seed`. The test set is only for final test metrics.
        seed: seeds the per-epoch training order (see :class:`EpochShuffleSampler`).
        split_seed: seeds the train/val split.
        train_subset: if set, train on only the first `train_subset` samples left after the split (a small real
            slice for tests); None uses them all.
        test_subset: if set, test on only the first `test_subset` test samples.
        eval_batch_size: batch size of the validation and test loaders, in samples.

    Subclasses set ``name`` (the config group option) and implement ``_load``. Image data sets set ``in_channels``,
    ``num_classes``, ``image_size`` (pixels per side) and the per-channel ``mean`` / ``std`` of the [0, 1]-scaled
    training images; other data sets override ``input_shape``, ``output_size`` and the dtypes (module docstring).
    """

    name: str
    collate_fn = staticmethod(keep_batch)  # __getitems__ already returns the stacked batch
    num_workers = 0  # in memory: worker processes would only add pickling and start-up
    in_channels: int | None = None
    num_classes: int | None = None
    image_size: int | None = None
    vocab_size: int | None = None
    mean: tuple[float, ...] = (0.0,)
    std: tuple[float, ...] = (1.0,)
    input_dtype = torch.float32
    target_shape: tuple[int, ...] = ()  # one int64 class label per sample
    target_dtype = torch.int64

    @property
    def input_shape(self) -> tuple[int, ...]:
        """One sample's input: ``(in_channels, image_size, image_size)`` for images."""
        return (self.in_channels, self.image_size, self.image_size)

    @property
    def output_size(self) -> int:
        """What the model outputs per sample (per position for sequences): ``num_classes`` for images."""
        return self.num_classes

    def __init__(
        self,
        *,
        data_dir: str = "data",
        batch_size: int = 128,
        val_size: int = 5000,
        seed: int = 0,
        split_seed: int = 0,
        train_subset: int | None = None,
        test_subset: int | None = None,
        eval_batch_size: int = 256,
    ) -> None:
        super().__init__()
        # No save_hyperparameters(): Lightning would merge these into the LightningModule's hparams and raise on
        # keys such as `seed` present in both with different values; the job logs the composed config instead.
        if not isinstance(data_dir, (str, Path)) or not str(data_dir):
            raise ValueError(f"data_dir must be a non-empty path, got {data_dir!r}")
        check_int("batch_size", batch_size, 1)
        check_int("val_size", val_size, 1)
        check_int("seed", seed, 0)
        check_int("split_seed", split_seed, 0)
        check_int("train_subset", train_subset, 1, optional=True)
        check_int("test_subset", test_subset, 1, optional=True)
        check_int("eval_batch_size", eval_batch_size, 1)
        self.data_dir = Path(data_dir)
        self.batch_size = batch_size
        self.val_size = val_size
        self.seed = seed
        self.split_seed = split_seed
        self.train_subset = train_subset
        self.test_subset = test_subset
        self.eval_batch_size = eval_batch_size
        self._splits: tuple[TensorBatchDataset, TensorBatchDataset, TensorBatchDataset] | None = None  # by setup

    # Subclass hook ---------------------------------------------------------------------------------------------------

    def _load(self) -> RawData:
        """Read the whole data set from disk (downloading it first if that is the only way)."""
        raise NotImplementedError

    # Lightning hooks -------------------------------------------------------------------------------------------------

    def setup(self, stage: str | None = None) -> None:
        """Load, normalise and split the data set, once; later calls (fit, then test) reuse it."""
        if self._splits is not None:
            return
        raw = self._load()
        x_train, x_test = self._normalise(raw.x_train), self._normalise(raw.x_test)
        n_train, n_test = len(x_train), len(x_test)
        context = f" for {self.name}'s {n_train} training and {n_test} test samples"
        check_int("val_size", self.val_size, 1, n_train - 1, context=context)
        check_int("train_subset", self.train_subset, 1, n_train - self.val_size, optional=True, context=context)
        check_int("test_subset", self.test_subset, 1, n_test, optional=True, context=context)
        split_generator = torch.Generator().manual_seed(derive_seed(self.split_seed, SPLIT_STREAM))
        perm = torch.randperm(n_train, generator=split_generator)
        val_index = perm[: self.val_size]
        train_index = perm[self.val_size :][: self.train_subset]  # `[:None]` keeps everything
        test_index = torch.arange(n_test)[: self.test_subset]
        self._splits = (
            TensorBatchDataset(x_train, raw.y_train, train_index),
            TensorBatchDataset(x_train, raw.y_train, val_index),
            TensorBatchDataset(x_test, raw.y_test, test_index),
        )

    def _normalise(self, x: Tensor) -> Tensor:
        """uint8 images -> float32 in [0, 1] -> (x - mean) / std per channel; float input is taken as normalised
        (float32); other integer input (token ids, category codes) stays as it is, for embedding layers."""
        if x.is_floating_point():
            return x.to(torch.float32)
        if x.dtype != torch.uint8 or x.ndim != 4:
            return x
        out = x.to(torch.float32).div_(255.0)
        mean = torch.tensor(self.mean, dtype=torch.float32).view(1, -1, 1, 1)
        std = torch.tensor(self.std, dtype=torch.float32).view(1, -1, 1, 1)
        return out.sub_(mean).div_(std)

    def _check_loaded(self, x: Tensor, y: Tensor, source: str) -> None:
        """Loaded images and labels must match the class's declared shape and label range."""
        expected = (self.in_channels, self.image_size, self.image_size)
        if x.ndim != 4 or tuple(x.shape[1:]) != expected or len(x) != len(y):
            raise ValueError(
                f"{source}: expected {expected} images with one label each, got images {tuple(x.shape)} and"
                f" labels {tuple(y.shape)}"
            )
        if len(y) and (int(y.min()) < 0 or int(y.max()) >= self.num_classes):
            raise ValueError(f"{source}: labels must lie in [0, {self.num_classes - 1}]")
