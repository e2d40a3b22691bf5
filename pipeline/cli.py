"""``python -m pipeline``: compose a job (or a sweep) with Hydra and run it.

Users also type the sweep flag as a bare word (``python -m pipeline +policy=triangle2 multirun``); it is read as
``--multirun``. A job's failure is recorded in MLflow; a single run then exits non-zero, while a sweep goes on with
its other jobs and exits with the number of failed jobs (see :mod:`pipeline.sweep`); a sweep run again does not
train the jobs that are already done. A command rejected before its run exists (a bad value, an unusable store or
output folder) prints one ``error:`` line, exits 2 and leaves no output folder. Passwords in URIs are masked in all
the process prints and logs (:mod:`pipeline.redaction`).
"""

from __future__ import annotations

import shutil
import sys
import traceback
from pathlib import Path

import hydra
from omegaconf import DictConfig

from pipeline import redaction
from pipeline.config.checks import ConfigError
from pipeline.tracking.store import TrackingError

# Absolute, so the command works from any directory (the project is installed in editable mode).
CONF_DIR = Path(__file__).resolve().parents[1] / "conf"
# Shell exit code for a config error (like argparse), as opposed to 1 for a run that failed while training.
EXIT_CONFIG = 2
# Output folders a command line may name; Hydra creates them before the job starts (a failure is a traceback).
OUTPUT_DIR_KEYS = ("hydra.run.dir", "hydra.sweep.dir")
# What Hydra itself writes into a job's output folder (besides ``<job name>.log``).
HYDRA_FILES = ("config.yaml", "hydra.yaml", "overrides.yaml")


def normalise_argv(argv: list[str]) -> list[str]:
    """Read the bare word ``multirun`` (and ``-m``'s long form) as Hydra's ``--multirun`` flag."""
    return [argv[0]] + ["--multirun" if arg == "multirun" else arg for arg in argv[1:]]


def check_output_dirs(args: list[str]) -> None:
    """Raise ConfigError naming the key if a folder given as ``hydra.run.dir=`` / ``hydra.sweep.dir=`` cannot be
    created (for a value with ``${...}``, the folder above its first interpolation)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    from pipeline.arguments import writable_folder

    parser = OverridesParser.create()
    for arg in args:
        if not arg.lstrip("+~").startswith(OUTPUT_DIR_KEYS):
            continue
        try:
            override = parser.parse_override(arg)
        except Exception:  # noqa: BLE001 - Hydra reports a malformed override itself
            continue
        value = override.value()
        if override.key_or_group not in OUTPUT_DIR_KEYS or not isinstance(value, str) or not value:
            continue
        literal = value.split("${")[0]
        folder = Path(literal if literal == value else Path(literal + "x").parent)
        try:
            writable_folder(override.key_or_group, folder.resolve())
        except ValueError as exc:
            raise ConfigError(str(exc)) from None


def _is_multirun() -> bool:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    return HydraConfig.get().mode == RunMode.MULTIRUN


def _hydra_files() -> list[Path]:
    """Hydra's saved configs of this job (and the sweep's ``multirun.yaml``), which hold the overrides as typed."""
    from hydra.core.hydra_config import HydraConfig

    hydra_cfg = HydraConfig.get()
    files = list((Path(hydra_cfg.runtime.output_dir) / str(hydra_cfg.output_subdir or ".hydra")).glob("*.yaml"))
    if hydra_cfg.mode.name == "MULTIRUN":
        files.append(Path(hydra_cfg.sweep.dir) / "multirun.yaml")
    return files


def remove_output_dir() -> None:
    """Remove this job's output folder if it holds only what Hydra wrote there, then its parents that are left empty,
    up to the launch folder (``outputs/<date>/<time>`` -> ``outputs/``): a rejected command leaves nothing behind.
    A folder with anything else in it (another job's, a user's file) is kept."""
    from hydra.core.hydra_config import HydraConfig

    hydra_cfg = HydraConfig.get()
    folder, launch = Path(hydra_cfg.runtime.output_dir).resolve(), Path(hydra_cfg.runtime.cwd).resolve()
    if launch not in folder.parents or not folder.is_dir():
        return
    saved = folder / str(hydra_cfg.output_subdir or ".hydra")
    for entry in folder.iterdir():
        if entry == saved and entry.is_dir() and all(f.name in HYDRA_FILES for f in entry.iterdir()):
            continue
        if entry.name != f"{hydra_cfg.job.name}.log":
            return
    shutil.rmtree(folder, ignore_errors=True)
    for parent in folder.parents:
        if parent == launch:
            break
        try:
            parent.rmdir()  # only an empty folder
        except OSError:
            break


@hydra.main(config_path=str(CONF_DIR), config_name="config", version_base="1.3")
def train(cfg: DictConfig):
    from pipeline.training.job import run_job

    redaction.install()  # again here: the pool launcher's workers run this function without main()
    redaction.mask_files(_hydra_files())
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
        print(f"error: {exc}", file=sys.stderr)
        if not multirun:
            remove_output_dir()
            sys.exit(EXIT_CONFIG)
        # In a sweep a bad job is recorded as a FAILED child with its reason (its folder stays, beside the other
        # jobs'), and the other jobs go on.
        from pipeline.sweep import record_job_failure

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
    redaction.install()
    sys.argv = normalise_argv(sys.argv)
    try:
        check_output_dirs(sys.argv[1:])
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(EXIT_CONFIG)
    train()
