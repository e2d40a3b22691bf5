"""A job's checkpoint folder and its lock: one folder per job key, removed when the run is over; the lock stops the
same job from running twice at once and is released by the kernel when its process dies (even by ``kill -9``)."""

from __future__ import annotations

import fcntl
from contextlib import contextmanager
from pathlib import Path

from pipeline.config.checks import ConfigError

CHECKPOINT_NAME = "last"  # Lightning's ModelCheckpoint writes <folder>/last.ckpt


def checkpoint_folder(root: Path, key: str) -> Path:
    """The job's checkpoint folder; its lock file sits beside it (``<folder>.lock``)."""
    return Path(root) / key


def last_checkpoint(folder: Path) -> Path:
    return folder / f"{CHECKPOINT_NAME}.ckpt"


@contextmanager
def job_lock(path: Path):
    """Hold an exclusive lock on a job's lock file: the same job cannot run twice at once. A killed process releases
    it (the kernel drops the lock), so a re-run after ``kill -9`` can take over."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ConfigError(f"this job is already running (its lock {path} is held)") from None
        try:
            yield
        finally:
            path.unlink(missing_ok=True)
