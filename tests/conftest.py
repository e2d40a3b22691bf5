"""Shared fixtures: compose the real config (shrunk to tiny synthetic runs) and a throwaway MLflow store."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from mlflow.tracking import MlflowClient

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"
# Tiny, fast runs: synthetic data, a few dozen steps, no progress bar.
TINY = ["dataset=synthetic", "trainer.max_steps=30", "trainer.eval_every_steps=10", "trainer.progress=false"]


def compose_job(*overrides: str):
    """The job config exactly as `python -m pipeline <overrides>` composes it (Hydra's runtime choices included)."""
    with initialize_config_dir(str(CONF), version_base="1.3"):
        return compose(config_name="config", overrides=list(overrides), return_hydra_config=True)


# What a sweep's launcher exports for its jobs (pipeline.tracking.sweeps.start_parent); a test that starts a sweep in
# this process must not leave them to the next test's subprocesses.
SWEEP_ENV = ("LRBENCH_PARENT_RUN_ID", "MLFLOW_TRACKING_URI")


@pytest.fixture(autouse=True)
def _no_sweep_env_leaks():
    before = {name: os.environ.get(name) for name in SWEEP_ENV}
    yield
    for name, value in before.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


@pytest.fixture
def store_uri(tmp_path, monkeypatch):
    """An empty SQLite MLflow store in a temp dir, also exported so subprocesses and defaults use it.

    The test also runs in that temp dir, so relative outputs (checkpoints/, outputs/) stay private to it.
    """
    uri = f"sqlite:///{tmp_path}/mlruns/mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.chdir(tmp_path)
    return uri


def run_cli(*args: str, cwd: Path, env: dict | None = None, timeout: int = 600, module: str = "pipeline"):
    """Run `python -m pipeline ...` as a user would; returns the CompletedProcess."""
    full_env = {**os.environ, **(env or {}), "PYTHONUNBUFFERED": "1"}
    return subprocess.run(
        [sys.executable, "-m", module, *args], cwd=cwd, env=full_env, capture_output=True, text=True, timeout=timeout
    )


def train_runs(uri: str, experiment: str = "lrbench"):
    """Training runs (not sweep parents or reports) in an experiment, read back with MLflow's own client."""
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        return []
    return [r for r in client.search_runs([exp.experiment_id]) if r.data.tags.get("kind") == "train"]
