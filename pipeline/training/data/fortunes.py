"""Debian's fortune cookies as text for a character-level language model: bytes, in fixed-length windows."""

from __future__ import annotations

from pathlib import Path

import torch

from pipeline.arguments import check_int
from pipeline.training.data.base import DatasetNotFoundError, RawData, TensorDataModule

# Where Debian's fortunes (and fortunes-min) packages install the plain-text fortune files.
SYSTEM_DIR = "/usr/share/games/fortunes"
# Every TEST_EVERY-th fortune (in file order) is test text; the rest is training (and validation) text.
TEST_EVERY = 10
SEPARATOR = b"\n%\n"  # between fortunes in a fortune file


class Fortunes(TensorDataModule):
    """Fortune-cookie text as UTF-8 bytes (vocabulary 256, so nothing needs a tokenizer or a vocabulary file).

    The fortune files in ``data_dir`` (``files``, or every one: the plain files beside their ``.dat`` indexes) are
    split into fortunes; every tenth fortune is test text, the others training text. Each text is cut into
    non-overlapping windows of ``seq_len + 1`` bytes; a sample is ``x`` = the first ``seq_len`` bytes and ``y`` = the
    last ``seq_len`` (the next byte at every position), both int64. ``val_size`` windows are carved out of the
    training windows for validation. Debian's ``fortunes`` package has 43 files (2.5 MB), ``fortunes-min`` three
    (98 KB).
    """

    name = "fortunes"
    vocab_size = 256
    input_dtype = torch.int64
    target_dtype = torch.int64

    def __init__(self, *, data_dir: str = SYSTEM_DIR, files: list[str] | None = None, seq_len: int = 64,
                 batch_size: int = 32, val_size: int = 256, seed: int = 0, split_seed: int = 0,
                 train_subset: int | None = None, test_subset: int | None = None, eval_batch_size: int = 256) -> None:
        super().__init__(data_dir=data_dir, batch_size=batch_size, val_size=val_size, seed=seed,
                         split_seed=split_seed, train_subset=train_subset, test_subset=test_subset,
                         eval_batch_size=eval_batch_size)
        check_int("seq_len", seq_len, 1)
        if files is not None and (isinstance(files, str) or not all(isinstance(f, str) and f for f in files)):
            raise ValueError(f"files must be a list of fortune file names in data_dir (or null: all), got {files!r}")
        self.seq_len, self.files = seq_len, None if files is None else list(files)

    @property
    def input_shape(self) -> tuple[int, ...]:
        return (self.seq_len,)

    @property
    def target_shape(self) -> tuple[int, ...]:
        return (self.seq_len,)

    @property
    def output_size(self) -> int:
        return self.vocab_size

    def fortune_files(self) -> list[Path]:
        """The files read, in order: ``files``, or every file with a ``.dat`` index beside it (sorted)."""
        folder = self.data_dir
        hint = ("Debian's fortune files are installed by `apt-get install fortunes` (or fortunes-min; "
                "`make data` does it as root)")
        if not folder.is_dir():
            raise DatasetNotFoundError(f"fortunes not found: {folder} is not a folder. {hint}")
        if self.files is None:
            found = sorted(p.with_suffix("") for p in folder.glob("*.dat") if p.with_suffix("").is_file())
            if not found:
                raise DatasetNotFoundError(f"fortunes not found: {folder} has no fortune files (name + name.dat). "
                                           f"{hint}")
            return found
        missing = [name for name in self.files if not (folder / name).is_file()]
        if missing:
            raise DatasetNotFoundError(f"fortunes not found: {folder} lacks {', '.join(missing)}. {hint}")
        return [folder / name for name in self.files]

    def _windows(self, text: bytes) -> torch.Tensor:
        data = torch.frombuffer(bytearray(text), dtype=torch.uint8).long()
        n = (len(data) - 1) // self.seq_len
        if n < 1:
            raise ValueError(f"seq_len={self.seq_len} is longer than the text ({len(data)} bytes)")
        # Window i covers bytes [i * seq_len, (i + 1) * seq_len]: seq_len inputs and their seq_len next bytes.
        return data[: n * self.seq_len + 1].unfold(0, self.seq_len + 1, self.seq_len)

    def _load(self) -> RawData:
        fortunes = [f for path in self.fortune_files() for f in path.read_bytes().split(SEPARATOR) if f.strip()]
        train = SEPARATOR.join(f for i, f in enumerate(fortunes) if i % TEST_EVERY != TEST_EVERY - 1)
        test = SEPARATOR.join(f for i, f in enumerate(fortunes) if i % TEST_EVERY == TEST_EVERY - 1)
        train_windows, test_windows = self._windows(train), self._windows(test)
        return RawData(train_windows[:, :-1].contiguous(), train_windows[:, 1:].contiguous(),
                       test_windows[:, :-1].contiguous(), test_windows[:, 1:].contiguous())
