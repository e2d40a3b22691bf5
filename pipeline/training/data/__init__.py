"""Data sets for the training stage, held in memory as normalised float32 tensors and batched by tensor indexing.

One module a thing: ``base`` (:class:`TensorDataModule`, the split and the loaders), ``batching`` (batches, their
order, resuming mid-epoch), and one module per data set: ``idx`` (:class:`FashionMNIST`, :class:`MNIST`),
``cifar10`` (:class:`CIFAR10`), ``synthetic`` (:class:`Synthetic`). The configs name the defining module
(``conf/dataset/*.yaml``); the names are re-exported here for code that imports them.

Why tensors and not torchvision datasets: a LeNet step on Fashion-MNIST costs about 17 ms on this machine; a batch of
128 from torchvision's dataset (PIL image + transforms per sample, then default collate) costs about 9 ms more, and
even a ``TensorDataset`` with default collate about 0.5 ms. Here a batch is one fancy-indexing op
(``x[index[batch]]``) through ``Dataset.__getitems__`` and a pass-through ``collate_fn``: about 0.17 ms
(``python benchmarks/suite.py --only data`` measures it).
"""

from pipeline.training.data.base import DatasetNotFoundError, RawData, TensorDataModule
from pipeline.training.data.batching import (
    EpochShuffleSampler,
    TensorBatchDataset,
    derive_seed,
    keep_batch,
)
from pipeline.training.data.cifar10 import CIFAR10
from pipeline.training.data.idx import MNIST, FashionMNIST, read_idx
from pipeline.training.data.synthetic import Synthetic

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
