"""Data sets for the training stage, held in memory as normalised float32 tensors and batched by tensor indexing.

:class:`TensorDataModule` does everything but loading: argument checks, normalisation, the seeded train/val split,
the subsets, the reproducible shuffle and the data loaders. Its subclasses (:class:`FashionMNIST`, :class:`MNIST`,
:class:`CIFAR10`, :class:`Synthetic`) only know where their files are and how to read them into tensors.

Why tensors and not torchvision datasets: a LeNet step on Fashion-MNIST costs about 17 ms on this machine; a batch of
128 from torchvision's dataset (PIL image + transforms per sample, then default collate) costs about 9 ms more, and
even a ``TensorDataset`` with default collate about 0.5 ms. Here a batch is one fancy-indexing op
(``x[index[batch]]``) through ``Dataset.__getitems__`` and a pass-through ``collate_fn``: about 0.17 ms.

Data order: the validation split is a permutation seeded by ``split_seed`` (fixed in the configs, so every job seed
and every policy is validated on the same samples); the training order of epoch ``e`` is a permutation seeded by
``(seed, e)`` (:class:`EpochShuffleSampler`), and the configs set ``seed`` to the job's seed. Lightning calls
``sampler.set_epoch(e)`` at the start of every epoch, including the first epoch after resuming from a checkpoint, so
a resumed run sees the same order for the same epoch as an uninterrupted one. Resuming *mid*-epoch restarts that
epoch's order from its first batch (Lightning warns that the loader is not resumable); checkpoint at epoch ends for
exact resumption.
"""

from __future__ import annotations

import gzip
import math
import pickle
import zlib
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from lightning.pytorch import LightningDataModule
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Sampler

from pipeline.training.arguments import check_int

# Independent random streams: each derived seed is keyed by (user seed, stream, ...).
_SPLIT_STREAM = 0
_ORDER_STREAM = 1
_SYNTHETIC_STREAM = 2  # keyed by `gen_seed`, not `seed`


class DatasetNotFoundError(FileNotFoundError):
    """No local copy of a data set was found and downloading it failed."""


class RawData(NamedTuple):
    """What a subclass loads: images [N, C, H, W] (uint8 0..255, or float32 already normalised) and int64 labels."""

    x_train: Tensor
    y_train: Tensor
    x_test: Tensor
    y_test: Tensor


# ---------------------------------------------------------------------------------------------------------------------
# Files

# IDX type codes (http://yann.lecun.com/exdb/mnist/, "THE IDX FILE FORMAT"); multi-byte values are big-endian.
_IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path: str | Path) -> np.ndarray:
    """Read an IDX file (gzip-compressed or not, detected from its content) into a native-endian array.

    Raises ``ValueError`` naming the file if it is not valid gzip, has a bad magic number, or is shorter or longer
    than its header says (a truncated download).
    """
    path = Path(path)
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":  # the gzip magic number
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as err:
            raise ValueError(f"{path}: corrupt or truncated gzip file ({err}); delete it and fetch it again") from err
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES or raw[3] == 0:
        raise ValueError(f"{path}: not an IDX file (bad magic number {raw[:4].hex() or 'none'})")
    dtype, ndim = np.dtype(_IDX_DTYPES[raw[2]]), raw[3]
    header_bytes = 4 + 4 * ndim
    if len(raw) < header_bytes:
        raise ValueError(f"{path}: truncated IDX header ({len(raw)} bytes, header needs {header_bytes})")
    shape = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    expected = header_bytes + math.prod(shape) * dtype.itemsize
    if len(raw) != expected:
        raise ValueError(
            f"{path}: IDX header says shape {shape} ({expected} bytes) but the file has {len(raw)} bytes"
            f" ({'truncated' if len(raw) < expected else 'trailing data'}); delete it and fetch it again"
        )
    data = np.frombuffer(raw, dtype=dtype, offset=header_bytes).reshape(shape)
    return data.astype(dtype.newbyteorder("="))  # a writable, native-endian copy


def _attempt(download: Callable[[], None]) -> str:
    """Run a download; return why the data may still be missing, on one line, for the not-found message."""
    try:
        download()
    except Exception as err:  # noqa: BLE001 - any failure means the same thing to the user: no data
        return f"{type(err).__name__}: {' '.join(str(err).split())}"
    return "torchvision reported success but the files are not there"


def _find_files(directory: Path, stems: Sequence[str]) -> list[Path] | None:
    """Paths of all `stems` in `directory`, each plain or `.gz` (plain first: no decompression), or None."""
    found = []
    for stem in stems:
        path = next((p for p in (directory / stem, directory / f"{stem}.gz") if p.is_file()), None)
        if path is None:
            return None
        found.append(path)
    return found


# ---------------------------------------------------------------------------------------------------------------------
# Batching


class TensorBatchDataset(Dataset):
    """Rows ``index`` of in-memory tensors ``x`` and ``y``; a whole batch is fetched with one indexing op."""

    def __init__(self, x: Tensor, y: Tensor, index: Tensor) -> None:
        self.x, self.y, self.index = x, y, index

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, i: int) -> tuple[Tensor, Tensor]:
        row = self.index[i]
        return self.x[row], self.y[row]

    def __getitems__(self, indices: Sequence[int]) -> tuple[Tensor, Tensor]:
        # DataLoader calls this with a whole batch of positions when it exists (torch >= 2.1).
        rows = self.index[torch.as_tensor(indices, dtype=torch.long)]
        return self.x[rows], self.y[rows]


class ResumableLoader(DataLoader):
    """A train loader that continues a resumed epoch where it stopped instead of restarting it.

    ``position()`` says how many batches of the current epoch were already trained on (derived from the trainer's
    global step and epoch); that many batches of the epoch's fixed order are skipped. With the sampler's order a pure
    function of (seed, epoch), a run killed mid-epoch and resumed from a checkpoint sees exactly the batches an
    uninterrupted run would.
    """

    def __init__(self, *args, position: Callable[[], int] | None = None, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.position = position

    def __iter__(self):
        return self._batches()

    # Lightning treats loaders with these methods as resumable (and stops warning that results will differ). The
    # position needs no saved state: it follows from the restored global step.
    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass

    def _batches(self):
        # A generator: nothing runs until the first batch is asked for, which is after Lightning has set the
        # sampler's epoch and restored the trainer's step, so the skip reads the right epoch and position.
        iterator = super().__iter__()
        for _ in range(self.position() if self.position else 0):
            next(iterator)
        yield from iterator


def keep_batch(batch: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor]:
    """Pass-through ``collate_fn``: ``__getitems__`` already returns the stacked batch."""
    return batch


def derive_seed(*keys: int) -> int:
    """A well-mixed 64-bit seed from non-negative integer keys (numpy's SeedSequence), for independent streams."""
    return int(np.random.SeedSequence(list(keys)).generate_state(1, dtype=np.uint64)[0])


class EpochShuffleSampler(Sampler[int]):
    """Random order of ``range(n)`` that is a pure function of ``(seed, epoch)``, optionally one rank's shard of it.

    ``set_epoch`` (called by Lightning at every epoch start, like ``DistributedSampler``'s) selects the epoch; a
    plain PyTorch loop must call it too, or every epoch repeats epoch 0's order.

    Under DDP (``world`` processes) rank ``r`` takes positions ``r, r + world, ...`` of the same order, cut to
    ``n // world`` so every rank runs the same number of steps. With a per-rank batch of ``B``, global step ``b``
    then trains on exactly the samples ``order[b*B*world : (b+1)*B*world]``: the batch a single process with batch
    ``B*world`` would see, so a DDP run is the same optimisation as that single-process run.
    """

    def __init__(self, n: int, seed: int, rank: int = 0, world: int = 1) -> None:
        check_int("n", n, 1)
        check_int("seed", seed, 0)
        check_int("world", world, 1)
        if not 0 <= rank < world:
            raise ValueError(f"rank must be in [0, {world - 1}], got {rank!r}")
        self.n, self.seed, self.epoch, self.rank, self.world = n, seed, 0, rank, world

    def set_epoch(self, epoch: int) -> None:
        check_int("epoch", epoch, 0)
        self.epoch = epoch

    def order(self, epoch: int) -> Tensor:
        """The permutation used in `epoch` (all ranks)."""
        generator = torch.Generator().manual_seed(derive_seed(self.seed, _ORDER_STREAM, epoch))
        return torch.randperm(self.n, generator=generator)

    def __iter__(self) -> Iterator[int]:
        return iter(self.order(self.epoch)[self.rank :: self.world][: len(self)].tolist())

    def __len__(self) -> int:
        return self.n // self.world


# ---------------------------------------------------------------------------------------------------------------------
# The base module


class TensorDataModule(LightningDataModule):
    """A data set held in memory as normalised float32 tensors, split into train / val / test loaders.

    Args:
        data_dir: where the data set's files are, or are downloaded to.
        batch_size: training batch size, in samples.
        val_size: samples carved out of the *training* set for validation, by a permutation seeded by
            `split_seed`. The test set is only for final test metrics.
        seed: seeds the per-epoch training order (see the module docstring).
        split_seed: seeds the train/val split.
        train_subset: if set, train on only the first `train_subset` samples left after the split (a small real
            slice for tests); None uses them all.
        test_subset: if set, test on only the first `test_subset` test samples.
        eval_batch_size: batch size of the validation and test loaders, in samples.

    Subclasses set ``name`` (the config group option), ``in_channels``, ``num_classes``, ``image_size`` (pixels per
    side) and the per-channel ``mean`` / ``std`` of the [0, 1]-scaled training images, and implement ``_load``.
    """

    name: str
    in_channels: int
    num_classes: int
    image_size: int
    mean: tuple[float, ...] = (0.0,)
    std: tuple[float, ...] = (1.0,)

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
        self._splits: tuple[TensorBatchDataset, TensorBatchDataset, TensorBatchDataset] | None = None

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
        split_generator = torch.Generator().manual_seed(derive_seed(self.split_seed, _SPLIT_STREAM))
        perm = torch.randperm(n_train, generator=split_generator)
        val_index = perm[: self.val_size]
        train_index = perm[self.val_size :][: self.train_subset]  # `[:None]` keeps everything
        test_index = torch.arange(n_test)[: self.test_subset]
        self._splits = (
            TensorBatchDataset(x_train, raw.y_train, train_index),
            TensorBatchDataset(x_train, raw.y_train, val_index),
            TensorBatchDataset(x_test, raw.y_test, test_index),
        )

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
            collate_fn=keep_batch,
            num_workers=0,  # in memory: worker processes would only add pickling and start-up
            position=self._batches_done_this_epoch,
        )

    def _batches_done_this_epoch(self) -> int:
        """Batches of the current epoch already trained on: non-zero only when Lightning resumed mid-epoch."""
        trainer = getattr(self, "trainer", None)
        if trainer is None:
            return 0
        per_process = len(self.train_set) // trainer.world_size  # DDP shards every epoch's order
        batches = math.ceil(per_process / self.batch_size)
        accumulate = trainer.accumulate_grad_batches
        steps_per_epoch = math.ceil(batches / accumulate)
        done = (trainer.global_step - trainer.current_epoch * steps_per_epoch) * accumulate
        return min(max(done, 0), batches)

    def val_dataloader(self) -> DataLoader:
        return self._eval_loader(self.val_set)

    def test_dataloader(self) -> DataLoader:
        return self._eval_loader(self.test_set)

    # Results of setup ------------------------------------------------------------------------------------------------

    @property
    def train_set(self) -> TensorBatchDataset:
        return self._require_setup()[0]

    @property
    def val_set(self) -> TensorBatchDataset:
        return self._require_setup()[1]

    @property
    def test_set(self) -> TensorBatchDataset:
        return self._require_setup()[2]

    @property
    def steps_per_epoch(self) -> int:
        """Optimizer steps in one training epoch (the last batch may be smaller)."""
        return math.ceil(len(self.train_set) / self.batch_size)

    # Helpers ---------------------------------------------------------------------------------------------------------

    def _require_setup(self) -> tuple[TensorBatchDataset, TensorBatchDataset, TensorBatchDataset]:
        if self._splits is None:
            raise RuntimeError(f"{type(self).__name__}.setup() must run before its data is used")
        return self._splits

    def _eval_loader(self, dataset: TensorBatchDataset) -> DataLoader:
        # Under DDP each rank evaluates every world-th sample, none twice: the module sums its statistics over the
        # ranks, so validation and test metrics are exact over the whole split.
        rank, world = self._rank_and_world()
        return DataLoader(dataset, batch_size=self.eval_batch_size, sampler=range(rank, len(dataset), world),
                          collate_fn=keep_batch)

    def _normalise(self, x: Tensor) -> Tensor:
        """uint8 images -> float32 in [0, 1] -> (x - mean) / std per channel; float input is taken as normalised."""
        if x.dtype != torch.uint8:
            return x.to(torch.float32)
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


# ---------------------------------------------------------------------------------------------------------------------
# Real data sets


class _IdxDataModule(TensorDataModule):
    """MNIST-format data: four IDX files in torchvision's ``<data_dir>/<folder>/raw/``, a system directory, or
    downloaded by torchvision."""

    title: str  # for messages
    torchvision_class: str  # name in torchvision.datasets, which is also its folder under data_dir
    system_dir: Path | None = None  # where a distribution package installs the files
    system_hint: str = ""  # how to get that package
    _stems = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")

    def search_dirs(self) -> list[Path]:
        """Where the IDX files are looked for, in order, before torchvision downloads them into the first."""
        local = self.data_dir / self.torchvision_class / "raw"
        return [local] + ([self.system_dir] if self.system_dir is not None else [])

    def _download(self) -> None:
        from torchvision import datasets  # imported only when needed: ~3 s

        getattr(datasets, self.torchvision_class)(root=str(self.data_dir), train=True, download=True)

    def _locate(self) -> list[Path]:
        """The four files, offline first; downloads only when no copy is found. One clear error if all fail."""
        for directory in self.search_dirs():
            if (files := _find_files(directory, self._stems)) is not None:
                return files
        error = _attempt(self._download)
        if (files := _find_files(self.search_dirs()[0], self._stems)) is not None:
            return files
        tried = ", ".join(str(d) for d in self.search_dirs())
        raise DatasetNotFoundError(
            f"{self.title} not found. Looked for {', '.join(s + '[.gz]' for s in self._stems)} in: {tried}; then"
            f" downloading it with torchvision into {self.data_dir} failed ({error}). To get it: "
            + (f"{self.system_hint}, or " if self.system_hint else "")
            + f"run once with network access so torchvision downloads it to data_dir ({self.data_dir}),"
            f" or copy the four files into {self.search_dirs()[0]}."
        )

    def prepare_data(self) -> None:
        self._locate()  # downloads once, before setup, as Lightning intends

    def _load(self) -> RawData:
        paths = self._locate()
        arrays = [read_idx(p) for p in paths]
        for path, images in ((paths[0], arrays[0]), (paths[2], arrays[2])):
            if images.ndim != 3:
                raise ValueError(f"{path}: expected images of shape [N, H, W], got shape {images.shape}")
        x_train, y_train, x_test, y_test = (torch.from_numpy(a) for a in arrays)
        x_train, x_test = x_train.unsqueeze(1), x_test.unsqueeze(1)  # [N, H, W] -> [N, 1, H, W]
        y_train, y_test = y_train.long(), y_test.long()
        self._check_loaded(x_train, y_train, f"{paths[0]} + {paths[1]}")
        self._check_loaded(x_test, y_test, f"{paths[2]} + {paths[3]}")
        return RawData(x_train, y_train, x_test, y_test)


class FashionMNIST(_IdxDataModule):
    """Zalando's Fashion-MNIST: 60,000 train + 10,000 test 28x28 grey images of 10 clothing classes."""

    name = "fashion_mnist"
    title = "Fashion-MNIST"
    in_channels, num_classes, image_size = 1, 10, 28
    mean, std = (0.2860,), (0.3530,)  # of the 60,000 training images scaled to [0, 1]
    torchvision_class = "FashionMNIST"
    system_dir = Path("/usr/share/datasets/fashion-mnist")  # Debian's dataset-fashion-mnist
    system_hint = "on Debian/Ubuntu `apt-get install dataset-fashion-mnist`"


class MNIST(_IdxDataModule):
    """LeCun's MNIST digits: 60,000 train + 10,000 test 28x28 grey images. Debian packages no MNIST, so the only
    offline source is ``<data_dir>/MNIST/raw/``."""

    name = "mnist"
    title = "MNIST"
    in_channels, num_classes, image_size = 1, 10, 28
    mean, std = (0.1307,), (0.3081,)  # of the 60,000 training images scaled to [0, 1]
    torchvision_class = "MNIST"


class CIFAR10(TensorDataModule):
    """CIFAR-10: 50,000 train + 10,000 test 32x32 colour images of 10 classes, from torchvision's
    ``<data_dir>/cifar-10-batches-py`` (downloaded there by torchvision only when missing)."""

    name = "cifar10"
    in_channels, num_classes, image_size = 3, 10, 32
    mean = (0.4914, 0.4822, 0.4465)  # per channel, of the 50,000 training images scaled to [0, 1]
    std = (0.2470, 0.2435, 0.2616)
    _train_files = tuple(f"data_batch_{i}" for i in range(1, 6))
    _test_files = ("test_batch",)

    @property
    def _folder(self) -> Path:
        return self.data_dir / "cifar-10-batches-py"

    def _missing(self) -> list[Path]:
        return [p for p in (self._folder / f for f in self._train_files + self._test_files) if not p.is_file()]

    def _download(self) -> None:
        from torchvision import datasets  # imported only when needed: ~3 s

        datasets.CIFAR10(root=str(self.data_dir), train=True, download=True)

    def prepare_data(self) -> None:
        if not self._missing():
            return
        error = _attempt(self._download)
        if missing := self._missing():
            raise DatasetNotFoundError(
                f"CIFAR-10 not found: {self._folder} lacks {', '.join(p.name for p in missing)}, and downloading it"
                f" with torchvision into {self.data_dir} failed ({error}). To get it: run once with network access so"
                f" torchvision downloads it to data_dir ({self.data_dir}), or unpack cifar-10-python.tar.gz there."
            )

    def _read_batches(self, names: Sequence[str]) -> tuple[Tensor, Tensor]:
        xs, ys = [], []
        for name in names:
            path = self._folder / name
            try:
                with path.open("rb") as f:
                    batch = pickle.load(f, encoding="bytes")  # torchvision's own format: trusted local files
                x = np.asarray(batch[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32)
                y = np.asarray(batch[b"labels"], dtype=np.int64)
            except (pickle.UnpicklingError, EOFError, KeyError, ValueError, TypeError) as err:
                message = f"{path}: not a readable CIFAR-10 batch ({err}); delete it and fetch it again"
                raise ValueError(message) from err
            xs.append(torch.from_numpy(x))
            ys.append(torch.from_numpy(y))
        return torch.cat(xs), torch.cat(ys)

    def _load(self) -> RawData:
        self.prepare_data()
        x_train, y_train = self._read_batches(self._train_files)
        x_test, y_test = self._read_batches(self._test_files)
        self._check_loaded(x_train, y_train, str(self._folder))
        self._check_loaded(x_test, y_test, str(self._folder))
        return RawData(x_train, y_train, x_test, y_test)


# ---------------------------------------------------------------------------------------------------------------------
# Synthetic data


class Synthetic(TensorDataModule):
    """Tiny, deterministic, learnable images for tests and smoke runs: nothing is read from disk.

    Each class has a prototype, a random smooth image (Gaussian noise on a quarter-size grid, upsampled bilinearly,
    standardised); a sample is its class's prototype plus i.i.d. Gaussian pixel noise of standard deviation `noise`
    (in prototype standard deviations), scaled so that pixels have unit variance. Classes are balanced. The data
    depend only on `gen_seed`, `noise` and the sizes, never on `seed` or `split_seed`. `data_dir` is accepted for a
    uniform interface and ignored.

    Args (beyond the base class's):
        n_train: training samples generated (the validation set is carved from them).
        n_test: test samples generated.
        image_size: pixels per side.
        channels: image channels.
        num_classes: number of classes.
        noise: pixel-noise standard deviation relative to the prototypes'.
        gen_seed: seed of the generator that makes the data.
    """

    name = "synthetic"

    def __init__(
        self,
        *,
        data_dir: str = "data",
        batch_size: int = 128,
        val_size: int = 256,
        seed: int = 0,
        split_seed: int = 0,
        train_subset: int | None = None,
        test_subset: int | None = None,
        eval_batch_size: int = 256,
        n_train: int = 2048,
        n_test: int = 512,
        image_size: int = 28,
        channels: int = 1,
        num_classes: int = 10,
        noise: float = 3.0,
        gen_seed: int = 0,
    ) -> None:
        super().__init__(
            data_dir=data_dir,
            batch_size=batch_size,
            val_size=val_size,
            seed=seed,
            split_seed=split_seed,
            train_subset=train_subset,
            test_subset=test_subset,
            eval_batch_size=eval_batch_size,
        )
        check_int("n_train", n_train, 2)
        check_int("n_test", n_test, 1)
        check_int("image_size", image_size, 4)
        check_int("channels", channels, 1)
        check_int("num_classes", num_classes, 2)
        if isinstance(noise, bool) or not isinstance(noise, (int, float)) or not 0 <= noise < math.inf:
            raise ValueError(f"noise must be a finite number >= 0, got {noise!r}")
        check_int("gen_seed", gen_seed, 0)
        self.n_train, self.n_test, self.noise, self.gen_seed = n_train, n_test, float(noise), gen_seed
        self.in_channels, self.num_classes, self.image_size = channels, num_classes, image_size

    def _load(self) -> RawData:
        generator = torch.Generator().manual_seed(derive_seed(self.gen_seed, _SYNTHETIC_STREAM))
        size, n, coarse_size = self.image_size, self.n_train + self.n_test, max(2, self.image_size // 4)
        coarse = torch.randn(self.num_classes, self.in_channels, coarse_size, coarse_size, generator=generator)
        protos = F.interpolate(coarse, size=(size, size), mode="bilinear", align_corners=False)
        flat = protos.flatten(1)
        protos = ((flat - flat.mean(1, keepdim=True)) / flat.std(1, keepdim=True)).view_as(protos)
        labels = torch.randperm(n, generator=generator) % self.num_classes  # balanced, in random order
        pixels_noise = torch.randn(n, self.in_channels, size, size, generator=generator)
        x = (protos[labels] + self.noise * pixels_noise) / math.sqrt(1.0 + self.noise**2)
        return RawData(x[: self.n_train], labels[: self.n_train], x[self.n_train :], labels[self.n_train :])


__all__ = [
    "CIFAR10",
    "MNIST",
    "DatasetNotFoundError",
    "EpochShuffleSampler",
    "FashionMNIST",
    "RawData",
    "Synthetic",
    "TensorBatchDataset",
    "TensorDataModule",
    "derive_seed",
    "keep_batch",
    "read_idx",
]
