"""A tracking server that dies mid-run (issue 18 item 11): training goes on, the job says so in one line, and once
the server is back on the same port and database every step is stored exactly once and the run ends FINISHED,
whether the values were sent by the run itself or re-sent from the spool. A real job against a real server."""

import os
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import pytest
import servers
from conftest import run_cli, train_runs
from mlflow.tracking import MlflowClient

STEPS = 600
JOB = ["dataset=synthetic", "+policy=triangle2", f"trainer.max_steps={STEPS}", "trainer.eval_every_steps=100",
       "trainer.checkpoint_every_steps=100", "trainer.num_threads=1", "trainer.progress=false"]


@contextmanager
def _server(tmp_path: Path, port: int | None = None):
    """``mlflow server`` on the test's own database and artifacts; on ``port`` to restart it after an outage."""
    with pytest.MonkeyPatch.context() as patch:
        if port is not None:
            patch.setattr(servers, "free_port", lambda: port)
        log = tmp_path / f"server-{port or 'first'}.log"
        with servers.mlflow_server(f"sqlite:///{tmp_path}/server.db", tmp_path / "artifacts", log) as (url, proc):
            yield url, proc


def _restarted(tmp_path: Path, url: str):
    """The server back on the same port and database (the job and the spool know it by its URL)."""
    return _server(tmp_path, port=int(url.rsplit(":", 1)[1]))


@contextmanager
def _job_losing_its_server(tmp_path: Path):
    """Start the job against a fresh server, kill the server (SIGKILL) once the run is training; yield
    (url, job, run_id) with the server dead. The job is killed on the way out if it is still running."""
    with _server(tmp_path) as (url, server):
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "LRBENCH_SPOOL_DIR": str(tmp_path / "spool")}
        with open(tmp_path / "job.out", "w") as out, open(tmp_path / "job.err", "w") as err:
            job = subprocess.Popen([sys.executable, "-m", "pipeline", *JOB, f"tracking.uri={url}"], cwd=tmp_path,
                                   env=env, stdout=out, stderr=err)
        try:
            run_id = _wait_until(lambda: _first_values(url), job)
            os.killpg(server.pid, signal.SIGKILL)  # reaped by servers.stop on the way out: its pid stays taken
            yield url, job, run_id
        finally:
            if job.poll() is None:
                job.send_signal(signal.SIGCONT)
                job.kill()
                job.wait()


def _wait_until(condition, job: subprocess.Popen, timeout_s: float = 600):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert job.poll() is None, "the job ended too early"
        found = condition()
        if found:
            return found
        time.sleep(0.2)
    raise AssertionError("the job did not get far enough in time")


def _first_values(url: str):
    """The run's id once the store holds some of its ``lr`` values (it is training), else None."""
    runs = train_runs(url)
    if runs and MlflowClient(url).get_metric_history(runs[0].info.run_id, "lr"):
        return runs[0].info.run_id
    return None


def _checkpoint_mtime(tmp_path: Path) -> int | None:
    found = list((tmp_path / "checkpoints").glob("*/last.ckpt"))
    return found[0].stat().st_mtime_ns if found else None


def _warnings(tmp_path: Path) -> tuple[list[str], str]:
    err = (tmp_path / "job.err").read_text()
    assert "Retrying" not in err and "Traceback" not in err, err[-3000:]
    return [line for line in err.splitlines() if line.startswith("warning:")], err


def _assert_every_step_once(url: str, run_id: str) -> None:
    client = MlflowClient(url)
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    for key in ("lr", "train/loss"):
        assert sorted(m.step for m in client.get_metric_history(run_id, key)) == list(range(STEPS)), key
    from pipeline.tracking.runs import summaries

    # the run trained to its end and was tested (its summary is params, or metrics when the store was down then)
    assert "summary/test_acc" in summaries(run.data.metrics, run.data.params)


@pytest.mark.slow
def test_a_server_dead_until_the_run_ends_costs_one_warning_and_the_spool_brings_back_every_step(tmp_path):
    with _job_losing_its_server(tmp_path) as (url, job, run_id):
        assert job.wait(timeout=900) == 2
    warnings, err = _warnings(tmp_path)
    assert len(warnings) <= 2, warnings
    assert "final status (FINISHED)" in err and "python -m pipeline.tracking.spool" in err, err[-3000:]
    assert [f.stem for f in (tmp_path / "spool").glob("*.json")] == [run_id]

    with _restarted(tmp_path, url):
        resend = run_cli("--dir", str(tmp_path / "spool"), module="pipeline.tracking.spool", cwd=tmp_path)
        assert resend.returncode == 0, resend.stderr[-3000:]
        _assert_every_step_once(url, run_id)


@pytest.mark.slow
def test_a_server_back_mid_run_gets_every_step_from_the_run_itself(tmp_path):
    with _job_losing_its_server(tmp_path) as (url, job, run_id):
        before = _checkpoint_mtime(tmp_path)
        _wait_until(lambda: _checkpoint_mtime(tmp_path) not in (None, before), job)  # it trains on meanwhile
        job.send_signal(signal.SIGSTOP)  # held while the server restarts, so that the server is back mid-run
        with _restarted(tmp_path, url):
            job.send_signal(signal.SIGCONT)
            assert job.wait(timeout=900) == 0, (tmp_path / "job.err").read_text()[-3000:]
            _assert_every_step_once(url, run_id)
    warnings, err = _warnings(tmp_path)
    assert len(warnings) <= 2, warnings
    assert "tracking store is back" in err
    assert not list((tmp_path / "spool").glob("*.json"))
