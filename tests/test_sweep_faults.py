"""A sweep survives its processes dying (issue 18): a killed worker costs its job a retry, a killed launcher leaves
no process behind, and the same command run again finishes the sweep under the same parent run, every job in one
run with every step once. Real processes, real kill -9, a real SQLite store in a temp dir."""

import multiprocessing
import os
import signal
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from hydra_plugins.lrbench_launcher.pool_launcher import LOST, run_on_workers
from pipeline.sweep import sweep_key
from pipeline.tracking import store, sweeps

# -- the sweep's identity ------------------------------------------------------------------------------------------


def test_sweep_key_is_the_same_for_the_same_command_in_any_order_and_ignores_display_settings():
    config = {"seed": 0, "trainer": {"max_steps": 300, "progress": True}}
    key = sweep_key("lrbench", ["+policy=triangle2,sin2", "seed=0,1"], {}, config)
    assert key == sweep_key("lrbench", ["seed=0,1", "+policy=triangle2,sin2"], {}, config)
    assert key == sweep_key("lrbench", ["seed=0,1", "+policy=triangle2,sin2", "trainer.progress=false"], {},
                            {"seed": 0, "trainer": {"max_steps": 300, "progress": False}})
    assert key != sweep_key("lrbench", ["+policy=triangle2,sin2,cos", "seed=0,1"], {}, config)
    assert key != sweep_key("other", ["+policy=triangle2,sin2", "seed=0,1"], {}, config)
    assert key != sweep_key("lrbench", ["+policy=triangle2,sin2", "seed=0,1"], {"+policy": "fix,exp"}, config)
    assert key != sweep_key("lrbench", ["+policy=triangle2,sin2", "seed=0,1"], {},
                            {"seed": 0, "trainer": {"max_steps": 301, "progress": True}})


def test_the_tally_counts_each_job_once_however_many_runs_it_left(tmp_path, monkeypatch):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    for name in (sweeps.PARENT_RUN_ENV, "MLFLOW_TRACKING_URI"):  # start_parent exports both; restored afterwards
        monkeypatch.setenv(name, "")
    experiment_id = store.prepare(uri, "tally")
    parent, continued = sweeps.start_parent(uri, experiment_id, "sweep-x", {"kind": "sweep"}, "k1")
    assert not continued
    client = MlflowClient(uri)

    def child(key, status, **tags):
        run = client.create_run(experiment_id, tags={"kind": "train", "run_key": key, "mlflow.parentRunId": parent,
                                                     **tags})
        client.set_terminated(run.info.run_id, status)

    child("a", "KILLED")
    child("a", "FINISHED")  # resumed into a second run by an older version: still one job, finished
    child("b", "FAILED", failure="config")
    child("b", "FAILED", failure="config")  # the same bad job recorded twice: one failed job
    elsewhere = client.create_run(experiment_id, tags={"kind": "train", "run_key": "c"}).info.run_id
    client.set_terminated(elsewhere, "FINISHED")
    sweeps.count_reused(uri, parent, elsewhere, "c-run")
    assert sweeps.end_parent(uri, parent) == (3, 1)
    assert client.get_run(parent).info.status == "FAILED"
    again, continued = sweeps.start_parent(uri, experiment_id, "sweep-x", {"kind": "sweep"}, "k1")
    assert (again, continued) == (parent, True) and client.get_run(parent).info.status == "RUNNING"
    assert sweeps.start_parent(uri, experiment_id, "sweep-y", {"kind": "sweep"}, "k2")[0] != parent


# -- workers that die ----------------------------------------------------------------------------------------------


def _square(x):
    return x * x


def _die_once(marker):
    """Kill this worker the first time (as kill -9 would), succeed the second."""
    if not Path(marker).exists():
        Path(marker).touch()
        os.kill(os.getpid(), signal.SIGKILL)
    return "came back"


def _die_always(_):
    os.kill(os.getpid(), signal.SIGKILL)


def _new_worker():
    return ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("fork"))


def test_a_task_whose_worker_dies_runs_again_on_a_fresh_worker_and_the_others_are_untouched(tmp_path):
    tasks = [(_square, 2), (_die_once, str(tmp_path / "died")), (_square, 3), (_square, 4)]
    said = []
    results = dict(run_on_workers(tasks, 2, _new_worker, retries=2, say=said.append))
    assert results == {0: 4, 1: "came back", 2: 9, 3: 16}
    assert len(said) == 1 and "retry 1 of 2" in said[0] and "task 2" in said[0]


def test_a_task_that_kills_its_worker_every_time_fails_alone_after_its_retries(tmp_path):
    tasks = [(_die_always, None), (_square, 5), (_square, 6)]
    said = []
    results = dict(run_on_workers(tasks, 2, _new_worker, retries=2, say=said.append))
    assert results == {0: LOST, 1: 25, 2: 36}
    assert len(said) == 3 and "on each of its 3 tries" in said[-1]


# -- whole sweeps, killed for real ---------------------------------------------------------------------------------

STEPS = 200
SWEEP = ["dataset=synthetic", "+policy=triangle2,inv", "seed=0,1", f"trainer.max_steps={STEPS}",
         "trainer.eval_every_steps=50", "trainer.checkpoint_every_steps=20", "trainer.num_threads=1",
         "trainer.progress=false"]
POOL = ["hydra/launcher=pool", "hydra.launcher.n_jobs=2", "hydra.launcher.threads_per_job=1"]
# Set in the launcher's environment, so every process of the sweep (forkserver, workers, resource tracker) carries it.
MARK = "LRBENCH_TEST_SWEEP"


def _start(args, cwd, mark, uri, experiment):
    # The store's schema first, so this test's polling client and the sweep never race on creating it.
    store.prepare(uri, experiment)
    env = {**os.environ, MARK: mark, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, "-m", "pipeline", *args, "multirun"], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _rerun(args, cwd):
    return subprocess.run([sys.executable, "-m", "pipeline", *args, "multirun"], cwd=cwd, capture_output=True,
                          text=True, timeout=900)


def _stat(pid):
    """(state, parent pid) of a process from /proc, or None if it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return fields[0], int(fields[1])


def _alive_with_mark(mark):
    """Pids of live processes (zombies do not count) whose environment carries the sweep's mark."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            environ = (entry / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        stat = _stat(entry.name)
        if f"{MARK}={mark}".encode() in environ and stat is not None and stat[0] != "Z":
            found.append(int(entry.name))
    return found


def _children(pid):
    return [int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit() and (_stat(p.name) or ("", 0))[1] == pid]


def _workers(launcher_pid):
    """The pool's worker processes: children of the forkserver, the launcher's child that serves forks."""
    servers = [pid for pid in _children(launcher_pid)
               if b"forkserver" in Path(f"/proc/{pid}/cmdline").read_bytes()]
    return [pid for server in servers for pid in _children(server)]


def _runs(uri, experiment):
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(experiment)
    return client.search_runs([exp.experiment_id]) if exp else []


def _wait(condition, proc, what, timeout=600):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"the sweep ended before {what}:\n{proc.stdout.read()[-3000:]}")
        if condition():
            return
        time.sleep(0.2)
    proc.kill()
    raise AssertionError(f"timed out waiting for {what}")


def _job_of(pid):
    """The run key of the job a worker is training: the job holds its lock file, ``checkpoints/<run key>.lock``."""
    try:
        targets = [os.readlink(fd) for fd in Path(f"/proc/{pid}/fd").iterdir()]
    except OSError:
        return None
    keys = [Path(t).stem for t in targets if t.endswith(".lock") and Path(t).parent.name == "checkpoints"]
    return keys[0] if keys else None


def _training_worker(uri, experiment, launcher_pid):
    """A worker in the middle of a job, once another job has finished: its run has a checkpoint's worth of steps in
    the store and most of its steps still to go, so it is still training when the test's kill lands."""
    runs = [r for r in _runs(uri, experiment) if r.data.tags.get("kind") == "train"]
    if not any(r.info.status == "FINISHED" for r in runs):
        return None
    running = {r.data.tags["run_key"]: r.info.run_id for r in runs if r.info.status == "RUNNING"}
    for pid in _workers(launcher_pid):
        run_id = running.get(_job_of(pid))
        if run_id and 20 <= len(MlflowClient(uri).get_metric_history(run_id, "lr")) <= STEPS // 2:
            return pid
    return None


def _assert_one_finished_run_per_job_and_one_parent(uri, experiment, jobs):
    runs = _runs(uri, experiment)
    children = [r for r in runs if r.data.tags.get("kind") == "train"]
    parents = [r for r in runs if r.data.tags.get("kind") == "sweep"]
    assert len(parents) == 1, [p.info.status for p in parents]
    parent = parents[0]
    assert (parent.info.status, parent.data.tags["sweep.jobs"], parent.data.tags["sweep.failed"]) == \
        ("FINISHED", str(jobs), "0")
    assert len(children) == jobs and len({r.data.tags["run_key"] for r in children}) == jobs
    assert all(r.info.status == "FINISHED" for r in children), [r.info.status for r in children]
    assert {r.data.tags["mlflow.parentRunId"] for r in children} == {parent.info.run_id}
    client = MlflowClient(uri)
    for run in children:
        for key in ("lr", "train/loss"):
            steps = sorted(m.step for m in client.get_metric_history(run.info.run_id, key))
            assert steps == list(range(STEPS)), (run.info.run_name, key)
    return parent


@pytest.mark.slow
def test_kill_9_of_the_pool_launcher_leaves_no_process_and_the_same_command_finishes_the_sweep(tmp_path, store_uri):
    args = [*SWEEP, *POOL, "tracking.experiment=launcher"]
    mark = str(tmp_path)
    proc = _start(args, tmp_path, mark, store_uri, "launcher")
    _wait(lambda: _training_worker(store_uri, "launcher", proc.pid), proc, "the middle of the sweep")
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    deadline = time.time() + 60  # generous on a loaded machine; a worker notices within WATCH_INTERVAL_S
    while _alive_with_mark(mark) and time.time() < deadline:
        time.sleep(0.2)
    assert not _alive_with_mark(mark), "processes of the killed sweep are still alive"
    assert any(r.info.status == "RUNNING" for r in _runs(store_uri, "launcher")
               if r.data.tags.get("kind") == "train"), "the kill did not fall mid-job"

    again = _rerun(args, tmp_path)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert "continued" in again.stdout and "not trained again" in again.stdout and "resuming run" in again.stdout
    _assert_one_finished_run_per_job_and_one_parent(store_uri, "launcher", 4)


@pytest.mark.slow
def test_kill_9_of_a_pool_worker_costs_its_job_a_retry_and_the_sweep_still_finishes(tmp_path, store_uri):
    args = [*SWEEP, *POOL, "tracking.experiment=worker"]
    proc = _start(args, tmp_path, str(tmp_path), store_uri, "worker")
    found = []
    _wait(lambda: found.append(_training_worker(store_uri, "worker", proc.pid)) or found[-1], proc,
          "a worker in the middle of a job")
    os.kill(found[-1], signal.SIGKILL)
    output, _ = proc.communicate(timeout=900)
    assert proc.returncode == 0, output[-3000:]
    said = [line for line in output.splitlines() if "a worker process died" in line or "resuming run" in line]
    assert len(said) == 2 and "retry 1 of 2" in said[0], output[-3000:]
    _assert_one_finished_run_per_job_and_one_parent(store_uri, "worker", 4)


SMALL = ["dataset=synthetic", "trainer.max_steps=20", "trainer.eval_every_steps=10", "trainer.progress=false"]


@pytest.mark.slow
def test_running_a_finished_sweep_again_trains_nothing_and_creates_no_run(tmp_path, store_uri):
    args = ["+policy=triangle2,sin2", *SMALL]
    first = _rerun(args, tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    before = {r.info.run_id: (r.info.status, r.info.end_time) for r in _runs(store_uri, "lrbench")
              if r.data.tags.get("kind") == "train"}
    again = _rerun(args, tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    assert again.stdout.count("(done before: not trained again)") == 2 and "resuming" not in again.stdout
    after = {r.info.run_id: (r.info.status, r.info.end_time) for r in _runs(store_uri, "lrbench")
             if r.data.tags.get("kind") == "train"}
    assert after == before  # no new run, and the old ones untouched
    assert len([r for r in _runs(store_uri, "lrbench") if r.data.tags.get("kind") == "sweep"]) == 1


@pytest.mark.slow
def test_running_a_sweep_with_failures_again_keeps_one_parent_and_the_same_tally(tmp_path, store_uri):
    # k1=500 diverges; l=0 is a bad value (two jobs). Run twice: the same four records, the same exit code.
    args = ["+policy=sin2", "policy.k1=0.06,500", "policy.l=0,5", *SMALL]
    for attempt in (1, 2):
        proc = _rerun(args, tmp_path)
        assert proc.returncode == 3, (attempt, proc.stderr[-3000:])
        runs = _runs(store_uri, "lrbench")
        children = [r for r in runs if r.data.tags.get("kind") == "train"]
        parents = [r for r in runs if r.data.tags.get("kind") == "sweep"]
        assert len(children) == 4 and len(parents) == 1, attempt
        assert (parents[0].info.status, parents[0].data.tags["sweep.jobs"], parents[0].data.tags["sweep.failed"]) \
            == ("FAILED", "4", "3")


@pytest.mark.slow
def test_a_sweep_counts_a_job_done_outside_it_without_training_it_again(tmp_path, store_uri):
    single = subprocess.run([sys.executable, "-m", "pipeline", "+policy=triangle2", *SMALL], cwd=tmp_path,
                            capture_output=True, text=True, timeout=900)
    assert single.returncode == 0, single.stderr[-3000:]
    (done,) = [r for r in _runs(store_uri, "lrbench") if r.data.tags.get("kind") == "train"]
    sweep = _rerun(["+policy=triangle2,sin2", *SMALL], tmp_path)
    assert sweep.returncode == 0, sweep.stderr[-3000:]
    assert f"run {done.info.run_id} FINISHED (done before: not trained again)" in sweep.stdout
    runs = _runs(store_uri, "lrbench")
    children = [r for r in runs if r.data.tags.get("kind") == "train"]
    (parent,) = [r for r in runs if r.data.tags.get("kind") == "sweep"]
    assert sorted(r.data.tags["policy"] for r in children) == ["sin2", "triangle2"]  # no second triangle2 run
    assert (parent.data.tags["sweep.jobs"], parent.data.tags["sweep.failed"]) == ("2", "0")
    assert f"sweep.reused.{done.info.run_id}" in parent.data.tags
    assert "mlflow.parentRunId" not in MlflowClient(store_uri).get_run(done.info.run_id).data.tags  # left as it was
