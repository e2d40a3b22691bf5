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


def unreadable(path: Path) -> str | None:
    """Why a checkpoint cannot be resumed from (truncated, not a checkpoint, or a pickle that torch's safe loader
    refuses), or None when it loads. The same safe loader Lightning uses, so what passes here resumes."""
    import pickle
    import zipfile

    import torch

    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, zipfile.BadZipFile, RuntimeError, EOFError, OSError, ValueError) as exc:
        return f"{type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else 'unreadable'}"
    if not isinstance(state, dict) or "state_dict" not in state or "global_step" not in state:
        return "not a Lightning checkpoint (no state_dict or global_step)"
    return None


def set_aside(path: Path) -> Path:
    """Move an unusable checkpoint out of the job's folder (which is removed when the run ends) to a file beside it,
    kept for inspection, and return where it went."""
    import time

    target = path.parent.with_name(f"{path.parent.name}.{path.name}.corrupt-{time.strftime('%Y%m%d-%H%M%S')}")
    path.rename(target)
    return target
