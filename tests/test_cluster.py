"""Cluster launch: the SLURM launcher config (conf/hydra/launcher/slurm.yaml) and Hydra's submitit launcher.

No SLURM here: the SLURM config is checked by composing it and handing its settings to submitit's own SLURM
executor (which writes the sbatch script); submitit's local executor runs a real sweep job end to end.
"""

import os
import stat

import pytest
from conftest import compose_job, run_cli, train_runs
from omegaconf import OmegaConf


def _slurm_launcher(*overrides: str) -> dict:
    cfg = compose_job("hydra/launcher=slurm", "+policy=triangle2", *overrides)
    assert cfg.hydra.runtime.choices["hydra/launcher"] == "slurm"
    return OmegaConf.to_container(cfg.hydra.launcher, resolve=True)


def test_slurm_launcher_takes_nodes_and_tasks_from_the_trainer():
    launcher = _slurm_launcher("trainer.devices=4", "trainer.num_nodes=2", "hydra.sweep.dir=sweep")
    assert launcher["_target_"] == "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher"
    assert (launcher["nodes"], launcher["tasks_per_node"], launcher["gpus_per_node"]) == (2, 4, 4)
    assert launcher["submitit_folder"] == "sweep/.submitit/%j"
    for key in ("timeout_min", "cpus_per_task", "mem_gb"):
        assert isinstance(launcher[key], int) and launcher[key] > 0, key
    single = _slurm_launcher()  # the defaults: one machine, one device
    assert (single["nodes"], single["tasks_per_node"]) == (1, 1)


def test_slurm_job_script_asks_for_one_task_per_device_on_every_node(tmp_path, monkeypatch):
    import submitit
    from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf

    # submitit's SLURM executor only checks that `srun` exists before it writes job scripts.
    srun = tmp_path / "bin" / "srun"
    srun.parent.mkdir()
    srun.write_text("#!/bin/sh\nexit 0\n")
    srun.chmod(srun.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{srun.parent}{os.pathsep}{os.environ['PATH']}")

    launcher = _slurm_launcher("trainer.devices=4", "trainer.num_nodes=2", "hydra.launcher.partition=gpu",
                               f"hydra.sweep.dir={tmp_path / 'sweep'}")
    # What hydra-submitit-launcher's launch() does with these settings before it submits the job array.
    del launcher["_target_"]
    executor = submitit.AutoExecutor(cluster="slurm", folder=launcher.pop("submitit_folder"),
                                     slurm_max_num_timeout=launcher.pop("max_num_timeout"))
    base = set(OmegaConf.structured(BaseQueueConf).keys())
    # raises on an unknown parameter
    executor.update_parameters(**{k if k in base else f"slurm_{k}": v for k, v in launcher.items()})
    script = executor._executor._make_submission_file_text("python -m pipeline", "uid")
    for line in ("#SBATCH --nodes=2", "#SBATCH --ntasks-per-node=4", "#SBATCH --gpus-per-node=4",
                 "#SBATCH --partition=gpu", "#SBATCH --time=240", "#SBATCH --job-name=pipeline"):
        assert line in script, line


@pytest.mark.slow
def test_submitit_local_executor_runs_a_sweep_job_recorded_under_its_parent(tmp_path, store_uri):
    sweep_dir = tmp_path / "sweep"
    proc = run_cli("+policy=triangle2", "dataset=synthetic", "trainer.max_steps=20", "trainer.progress=false",
                   "hydra/launcher=submitit_local", "hydra.launcher.timeout_min=10", f"hydra.sweep.dir={sweep_dir}",
                   "--multirun", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    # The job ran in a process submitit started, and its result came back through submitit's folder.
    assert list(sweep_dir.glob(".submitit/*/*_0_result.pkl")), sorted(map(str, sweep_dir.rglob("*")))
    runs = train_runs(store_uri)
    assert [(r.data.tags["policy"], r.info.status) for r in runs] == [("triangle2", "FINISHED")]
    from mlflow.tracking import MlflowClient

    parent = MlflowClient(store_uri).get_run(runs[0].data.tags["mlflow.parentRunId"])
    assert parent.data.tags["kind"] == "sweep" and parent.info.status == "FINISHED"
