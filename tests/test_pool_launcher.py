"""The pool launcher's planning and bookkeeping, without starting processes (tests/test_sweep.py runs real sweeps)."""

import io
import os

import pytest

from hydra_plugins.lrbench_launcher.pool_launcher import SweepProgress, _adopt_environment, plan_workers


@pytest.mark.parametrize(
    ("n_jobs", "threads", "jobs", "cores", "expected"),
    [
        (0, 0, 6, 2, (2, 1)),   # automatic: a worker per core, one thread each
        (2, 0, 1, 2, (1, 2)),   # never more workers than jobs; the lone worker gets both cores
        (0, 0, 3, 16, (3, 5)),  # 16 cores, 3 jobs: 3 workers x 5 threads <= 16
        (4, 1, 10, 2, (4, 1)),  # explicit settings are kept
    ],
)
def test_plan_workers_fills_the_cores_without_oversubscribing_them(n_jobs, threads, jobs, cores, expected):
    workers, per_job = plan_workers(n_jobs, threads, jobs, cores)
    assert (workers, per_job) == expected
    if not n_jobs or not threads:
        assert workers * per_job <= max(cores, workers)


def test_plan_workers_rejects_negative_settings_naming_them():
    with pytest.raises(ValueError, match="n_jobs and threads_per_job must be >= 0"):
        plan_workers(-1, 0, 4, 2)


def test_a_worker_takes_the_launchers_environment_and_keeps_its_thread_setting(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.setenv("LRBENCH_STALE", "from an earlier sweep")
    launcher_env = {key: value for key, value in os.environ.items() if key not in ("OMP_NUM_THREADS", "LRBENCH_STALE")}
    launcher_env["LRBENCH_PARENT_RUN_ID"] = "abc123"
    _adopt_environment(launcher_env)
    assert os.environ["LRBENCH_PARENT_RUN_ID"] == "abc123"
    assert "LRBENCH_STALE" not in os.environ
    assert os.environ["OMP_NUM_THREADS"] == "1"  # LRBENCH_PARENT_RUN_ID is removed after the test (conftest)


def test_sweep_progress_prints_one_line_per_finished_job_with_counts():
    out = io.StringIO()
    progress = SweepProgress(3, out=out)
    progress.job_done("+policy=fix", "FINISHED")
    progress.job_done("+policy=exp", "FAILED")
    progress.job_done("+policy=inv", "FINISHED")
    lines = out.getvalue().splitlines()
    assert len(lines) == 3
    assert lines[0].startswith("[sweep] 1/3 done, 0 failed, 2 to go") and "left" in lines[0]
    assert lines[1].startswith("[sweep] 2/3 done, 1 failed, 1 to go") and "FAILED: +policy=exp" in lines[1]
    assert lines[2].startswith("[sweep] 3/3 done, 1 failed, 0 to go") and "left" not in lines[2]
