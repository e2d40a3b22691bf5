"""``python -m pipeline``: compose a job (or a sweep) with Hydra and run it.

Users also type the sweep flag as a bare word (``python -m pipeline +policy=triangle2 multirun``); it is read as
``--multirun``. A job's failure is recorded in MLflow; a single run then exits non-zero, while a sweep goes on with
its other jobs and exits with the number of failed jobs (see :mod:`pipeline.sweep`). A sweep run again does not train
the jobs that are already done.
"""

from __future__ import annotations

import sys
import traceback
from pathlib import Path

import hydra
from omegaconf import DictConfig

from pipeline.config.checks import ConfigError
from pipeline.tracking.store import TrackingError

# Absolute, so the command works from any directory (the project is installed in editable mode).
CONF_DIR = Path(__file__).resolve().parents[1] / "conf"
# Shell exit code for a config error (like argparse), as opposed to 1 for a run that failed while training.
EXIT_CONFIG = 2


def normalise_argv(argv: list[str]) -> list[str]:
    """Read the bare word ``multirun`` (and ``-m``'s long form) as Hydra's ``--multirun`` flag."""
    return [argv[0]] + ["--multirun" if arg == "multirun" else arg for arg in argv[1:]]


def _is_multirun() -> bool:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    return HydraConfig.get().mode == RunMode.MULTIRUN


@hydra.main(config_path=str(CONF_DIR), config_name="config", version_base="1.3")
def train(cfg: DictConfig):
    from pipeline.training.job import run_job

    multirun = _is_multirun()
    try:
        if multirun:  # a sweep run again after a crash trains only the jobs that are not done yet
            from pipeline.sweep import done_job

            done = done_job(cfg)
            if done is not None:
                print(f"run {done.run_id} {done.status} (done before: not trained again)")
                return done
        result = run_job(cfg)
    except (ConfigError, TrackingError) as exc:
        if not multirun:
            print(f"error: {exc}", file=sys.stderr)
            sys.exit(EXIT_CONFIG)
        # In a sweep a bad job is recorded as a FAILED child with its reason, and the other jobs go on.
        from pipeline.sweep import record_job_failure

        print(f"error: {exc}", file=sys.stderr)
        result = record_job_failure(cfg, exc, "config")
    except Exception:
        if not multirun:
            raise
        traceback.print_exc()  # the run is already recorded FAILED with the error; the sweep goes on
        return None
    if result.status != "FINISHED" and not _is_multirun():
        print(f"run {result.run_id} failed: {result.failure}", file=sys.stderr)
        sys.exit(1)
    if result.run_id:  # DDP ranks other than 0 record nothing
        print(f"run {result.run_id} {result.status}")
    return result


def main() -> None:
    sys.argv = normalise_argv(sys.argv)
    train()
