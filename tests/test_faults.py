"""Faults a run survives (issue 18), each reproduced with a real kill -9 of a real process, then counted in the
store: every step exactly once, one run, nothing left RUNNING."""

import signal
import subprocess
import sys
import time

import pytest
from conftest import train_runs
from mlflow.tracking import MlflowClient

BASE = ["dataset=synthetic", "+policy=triangle2", "policy.l=50", "trainer.num_threads=1", "trainer.progress=false"]


def _start(args, cwd):
    return subprocess.Popen([sys.executable, "-m", "pipeline", *args], cwd=cwd, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def _rerun(args, cwd):
    return subprocess.run([sys.executable, "-m", "pipeline", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=900)


def _lr_points(uri, experiment):
    runs = train_runs(uri, experiment)
    return (runs[0].info.run_id, len(MlflowClient(uri).get_metric_history(runs[0].info.run_id, "lr"))) if runs \
        else (None, 0)


def _wait(condition, proc, timeout=600):
    deadline = time.time() + timeout
    while time.time() < deadline:
        assert proc.poll() is None, proc.stdout.read()[-3000:]
        if condition():
            return
        time.sleep(0.1)
    proc.kill()
    raise AssertionError("the run did not get far enough in time")


def _kill(proc):
    proc.send_signal(signal.SIGKILL)
    proc.wait()


def _assert_every_step_once(uri, experiment, steps, keys=("lr", "train/loss", "momentum")):
    runs = train_runs(uri, experiment)
    assert len(runs) == 1, [r.info.status for r in runs]  # one run: no duplicate beside the killed one
    assert runs[0].info.status == "FINISHED"
    assert "failure" not in runs[0].data.tags  # the killed attempt's ending is not the finished run's
    client = MlflowClient(uri)
    for key in keys:
        history = client.get_metric_history(runs[0].info.run_id, key)
        assert sorted(m.step for m in history) == list(range(steps)), key
    return runs[0]


def _checkpoint(tmp_path):
    found = list((tmp_path / "checkpoints").glob("*/last.ckpt"))
    return found[0] if found else None


@pytest.mark.slow
def test_kill_9_after_a_checkpoint_between_evaluations_loses_no_step(tmp_path, store_uri):
    """The issue's reproduction: checkpoints every 30 steps, evaluations every 100; killed once the store holds lr
    up to step 99 and the checkpoint of step 120 is written. Before the fix steps 100-119 were lost for good."""
    args = [*BASE, "trainer.max_steps=300", "trainer.checkpoint_every_steps=30", "tracking.experiment=between"]
    proc = _start(args, tmp_path)
    _wait(lambda: _lr_points(store_uri, "between")[1] >= 100 and _checkpoint(tmp_path) is not None, proc)
    first = _checkpoint(tmp_path).stat().st_mtime_ns
    _wait(lambda: _checkpoint(tmp_path).stat().st_mtime_ns != first, proc)  # the checkpoint after step 100
    _kill(proc)
    again = _rerun(args, tmp_path)
    assert again.returncode == 0, again.stderr[-2000:]
    _assert_every_step_once(store_uri, "between", 300)


@pytest.mark.slow
def test_kill_9_before_the_first_checkpoint_continues_the_same_run(tmp_path, store_uri):
    args = [*BASE, "trainer.max_steps=120", "trainer.eval_every_steps=20", "trainer.checkpoint_every_steps=1000",
            "tracking.experiment=early"]
    proc = _start(args, tmp_path)
    _wait(lambda: _lr_points(store_uri, "early")[1] >= 40, proc)
    run_id = _lr_points(store_uri, "early")[0]
    _kill(proc)
    again = _rerun(args, tmp_path)
    assert again.returncode == 0, again.stderr[-2000:]
    assert f"resuming run {run_id}" in again.stdout
    run = _assert_every_step_once(store_uri, "early", 120)
    assert run.info.run_id == run_id


@pytest.mark.slow
@pytest.mark.parametrize("damage", ["truncated", "pickle"])
def test_an_unreadable_checkpoint_is_set_aside_and_the_job_restarts_in_its_own_run(tmp_path, store_uri, damage):
    args = [*BASE, "trainer.max_steps=100", "trainer.eval_every_steps=20", "trainer.checkpoint_every_steps=20",
            f"tracking.experiment=corrupt{damage}"]
    proc = _start(args, tmp_path)
    _wait(lambda: _lr_points(store_uri, f"corrupt{damage}")[1] >= 40 and _checkpoint(tmp_path) is not None, proc)
    _kill(proc)
    checkpoint = _checkpoint(tmp_path)
    if damage == "truncated":
        checkpoint.write_bytes(checkpoint.read_bytes()[:1000])
    else:  # a pickle that would run code if loaded unsafely
        import pickle

        class Payload:
            def __reduce__(self):
                return (print, ("pwned",))

        checkpoint.write_bytes(pickle.dumps({"state_dict": Payload(), "global_step": 1}))
    again = _rerun(args, tmp_path)
    assert again.returncode == 0, again.stderr[-2000:]
    assert "pwned" not in again.stdout + again.stderr
    warnings = [line for line in again.stderr.splitlines() if "cannot be resumed from" in line]
    assert len(warnings) == 1 and "set aside" in warnings[0] and "Traceback" not in again.stderr
    _assert_every_step_once(store_uri, f"corrupt{damage}", 100)
    assert len(list((tmp_path / "checkpoints").glob("*.last.ckpt.corrupt-*"))) == 1  # kept for inspection
