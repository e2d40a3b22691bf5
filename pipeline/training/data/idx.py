"""MNIST-format data sets (Fashion-MNIST, MNIST): the IDX file reader and where the four files are found."""

from __future__ import annotations

import gzip
import math
import zlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from pipeline.training.data.base import DatasetNotFoundError, RawData, TensorDataModule, try_download

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


def _find_files(directory: Path, stems: Sequence[str]) -> list[Path] | None:
    """Paths of all `stems` in `directory`, each plain or `.gz` (plain first: no decompression), or None."""
    found = []
    for stem in stems:
        path = next((p for p in (directory / stem, directory / f"{stem}.gz") if p.is_file()), None)
        if path is None:
            return None
        found.append(path)
    return found


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
        error = try_download(self._download)
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
