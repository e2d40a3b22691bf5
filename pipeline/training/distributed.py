"""Several processes, one run: what differs on the ranks of a DDP job.

Lightning's DDP strategy starts ranks 1..N-1 by re-running the command that started rank 0. Two things follow:

- Only rank 0 records. The other ranks train and evaluate (their evaluation sums are reduced into rank 0's), but
  write nothing to MLflow: they get a :class:`NullRecorder`.
- Under a Hydra multirun, re-running ``sys.argv`` would run the *whole sweep* again in every child rank
  (hydra#2070, Lightning#11300). :func:`relaunch_only_this_job` makes Lightning start each child with this job's own
  overrides instead, as a single run in the job's output folder.

Under torchrun or SLURM every rank is started by the cluster tool, Lightning spawns nothing, and only the rank
logic applies.
"""

from __future__ import annotations

import os
import sys
from contextlib import contextmanager

# Environment variables that carry a process's global rank, in the order the launchers set them.
RANK_ENV = ("RANK", "SLURM_PROCID", "JSM_NAMESPACE_RANK")


def process_rank(devices_per_node: int = 1) -> int:
    """This process's global rank before any process group exists (0 for a plain single-process run)."""
    for name in RANK_ENV:
        if name in os.environ:
            return int(os.environ[name])
    local = int(os.environ.get("LOCAL_RANK", 0))
    return int(os.environ.get("NODE_RANK", 0)) * devices_per_node + local


class NullRecorder:
    """What a non-zero rank records to: nothing. Same interface as :class:`~pipeline.tracking.recorder.RunRecorder`."""

    run_id = ""
    failure: str | None = None
    error: str | None = None
    pending = 0

    def metric(self, key, value, step, timestamp_ms=None) -> None: ...

    def metrics(self, values, step) -> None: ...

    def flush(self, final: bool = False) -> None: ...

    def params(self, values) -> None: ...

    def tags(self, values) -> None: ...

    def artifact(self, path, artifact_path=None) -> None: ...

    def resume_from_store(self, keys) -> None: ...

    def recorded_params(self) -> dict:
        return {}

    def unsent(self) -> list:
        return []

    def requeue(self, values) -> None: ...

    def fail(self, failure: str, error: str) -> None:
        self.failure, self.error = failure, error


def job_command(local_rank: int) -> tuple[list[str], str]:
    """The command that starts rank ``local_rank`` of the current Hydra job, and its working directory."""
    from hydra.core.hydra_config import HydraConfig

    hydra_cfg = HydraConfig.get()
    # The user's own config folders (--config-dir, hydra.searchpath) go along, or their options would not be found.
    config_dirs = [f"--config-dir={source.path}" for source in hydra_cfg.runtime.config_sources
                   if source.provider == "command-line" and source.schema == "file"]
    searchpath = [o for o in hydra_cfg.overrides.hydra if o.startswith("hydra.searchpath=")]
    command = [sys.executable, "-m", "pipeline", *config_dirs, *hydra_cfg.overrides.task, *searchpath]
    command += [
        f"hydra.run.dir={hydra_cfg.runtime.output_dir}",
        f"hydra.job.name=ddp_rank_{local_rank}",
        "hydra.output_subdir=null",
    ]
    return command, hydra_cfg.runtime.cwd


def relaunch_only_this_job() -> None:
    """Make Lightning's DDP launcher start child ranks with this job's overrides, not the whole sweep."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return
    from lightning.pytorch.strategies.launchers import subprocess_script

    # Lightning builds the child command with this module-level function when Hydra is in use; replacing it is the
    # documented work-around of hydra#2070 (also in Lightning PR #18175).
    subprocess_script._hydra_subprocess_cmd = job_command


# Set by Lightning's DDP launcher in the rank-0 process; a later job in the same process must not inherit them
# (with LOCAL_RANK set, Lightning assumes another tool started the ranks and waits for them forever).
LAUNCHER_ENV = ("MASTER_ADDR", "MASTER_PORT", "NODE_RANK", "LOCAL_RANK", "WORLD_SIZE", "RANK")


@contextmanager
def process_group_scope():
    """Run one job's DDP in a scope: afterwards the process group is gone and the launcher's variables are as they
    were before the job (those a cluster tool such as torchrun set are kept), so the next job of a sweep in the same
    process starts afresh."""
    saved = {name: os.environ.get(name) for name in LAUNCHER_ENV}
    try:
        yield
    finally:
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
