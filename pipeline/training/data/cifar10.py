"""CIFAR-10, read from torchvision's pickled Python batches."""

from __future__ import annotations

import pickle
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from pipeline.training.data.base import DatasetNotFoundError, RawData, TensorDataModule, try_download


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
        error = try_download(self._download)
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
