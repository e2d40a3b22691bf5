"""Crash and resume: kill -9 mid-run, run the same command again, and the same MLflow run continues exactly."""

import signal
import subprocess
import sys
import time

import pytest
from conftest import train_runs
from mlflow.tracking import MlflowClient

from pipeline.tracking.runs import summaries

JOB = ["+policy=triangle2", "policy.l=40", "dataset=synthetic", "trainer.max_steps=160", "trainer.eval_every_steps=20",
       "trainer.checkpoint_every_steps=20", "trainer.num_threads=1", "trainer.progress=false"]


def _start(args, cwd):
    return subprocess.Popen([sys.executable, "-m", "pipeline", *args], cwd=cwd, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def _wait_for_steps(uri, experiment, at_least, proc, timeout=300):
    """Poll the store until the run has logged `at_least` lr points (the run flushes at every evaluation)."""
    client = MlflowClient(uri)
    deadline = time.time() + timeout
    while time.time() < deadline:
        assert proc.poll() is None, proc.stdout.read()
        runs = train_runs(uri, experiment)
        if runs and len(client.get_metric_history(runs[0].info.run_id, "lr")) >= at_least:
            return runs[0].info.run_id
        time.sleep(0.2)
    raise AssertionError("the run did not get far enough in time")


def _series(client, run_id, key):
    return sorted((m.step, m.value) for m in client.get_metric_history(run_id, key))


@pytest.mark.slow
def test_kill_9_then_same_command_resumes_the_same_run_with_nothing_lost_or_doubled(tmp_path, store_uri):
    client = MlflowClient(store_uri)
    whole = subprocess.run([sys.executable, "-m", "pipeline", *JOB, "tracking.experiment=whole"], cwd=tmp_path,
                           capture_output=True, text=True, timeout=600)
    assert whole.returncode == 0, whole.stderr[-2000:]

    args = [*JOB, "tracking.experiment=killed"]
    proc = _start(args, tmp_path)
    run_id = _wait_for_steps(store_uri, "killed", 70, proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert client.get_run(run_id).info.status == "RUNNING"  # what kill -9 leaves behind

    again = subprocess.run([sys.executable, "-m", "pipeline", *args], cwd=tmp_path, capture_output=True, text=True,
                           timeout=600)
    assert again.returncode == 0, again.stderr[-2000:]
    assert f"resuming run {run_id}" in again.stdout
    runs = train_runs(store_uri, "killed")
    assert len(runs) == 1 and runs[0].info.run_id == run_id and runs[0].info.status == "FINISHED"

    reference = train_runs(store_uri, "whole")[0].info.run_id
    for key in ("lr", "train/loss", "val/acc", "val/loss"):
        resumed, uninterrupted = _series(client, run_id, key), _series(client, reference, key)
        assert [s for s, _ in resumed] == [s for s, _ in uninterrupted], key  # every step once, none missing
        assert [v for _, v in resumed] == pytest.approx([v for _, v in uninterrupted], rel=1e-6), key
    final, ref = (summaries(r.data.metrics, r.data.params) for r in (client.get_run(run_id), client.get_run(reference)))
    for key in ("summary/test_acc", "summary/test_loss", "summary/final_val_acc", "summary/best_val_acc"):
        assert final[key] == pytest.approx(ref[key], rel=1e-6), key
    assert not (tmp_path / "checkpoints").exists() or not any((tmp_path / "checkpoints").iterdir())


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_interrupted_run_is_marked_killed_never_left_running(tmp_path, store_uri, sig):
    args = [*JOB, "trainer.max_steps=100000", f"tracking.experiment=sig{int(sig)}"]
    proc = _start(args, tmp_path)
    run_id = _wait_for_steps(store_uri, f"sig{int(sig)}", 30, proc)
    proc.send_signal(sig)
    try:
        proc.wait(timeout=120)
    except subprocess.TimeoutExpired:
        proc.kill()
        pytest.fail(f"the job did not stop within 120 s of signal {int(sig)}:\n{proc.stdout.read()[-3000:]}")
    assert proc.returncode != 0
    run = MlflowClient(store_uri).get_run(run_id)
    assert run.info.status == "KILLED"
    assert run.data.tags["failure"] == "killed"


def test_a_checkpoint_at_an_evaluation_step_is_written_after_the_evaluation(tmp_path):
    # Written before it, a checkpoint at step 10 would not hold step 10's evaluation: a run killed before those values
    # reached the store resumed at step 11 and never evaluated step 10 again (its val/* point was lost for good).
    import torch
    from lightning.pytorch import Trainer
    from lightning.pytorch.demos.boring_classes import BoringModel

    from pipeline.training.trainer import checkpoint_callback

    class Counting(BoringModel):
        def __init__(self):
            super().__init__()
            self.validations, self.saved = 0, []

        def on_validation_epoch_end(self):
            self.validations += 1

        def on_save_checkpoint(self, checkpoint):
            checkpoint["validations"] = self.validations
            self.saved.append((self.trainer.global_step, self.validations))

    model = Counting()
    trainer = Trainer(max_steps=25, val_check_interval=10, check_val_every_n_epoch=None, num_sanity_val_steps=0,
                      limit_val_batches=2, logger=False, enable_progress_bar=False, enable_model_summary=False,
                      callbacks=[checkpoint_callback(tmp_path, every=5, eval_every=10)], accelerator="cpu")
    trainer.fit(model)
    # Steps 5 and 15 have no evaluation; at 10 and 20 the checkpoint holds the evaluation of its own step.
    assert model.saved == [(5, 0), (10, 1), (15, 1), (20, 2), (25, 2)]  # stock ModelCheckpoint: (10, 0), (20, 1)
    assert torch.load(tmp_path / "last.ckpt", weights_only=True)["validations"] == 2
