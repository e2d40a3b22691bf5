"""Faults a policy sweep meets: a tracking server that hangs or dies, many writers at once, credentials."""

import os
import secrets
import signal
import time

import pytest
from conftest import run_cli, train_runs
from mlflow.tracking import MlflowClient
from servers import mlflow_server

from pipeline.tracking import spool, store
from pipeline.tracking.recorder import open_run


def _hang(proc, monkeypatch):
    """Stop the server's processes (it hangs, like an overloaded or partitioned server) and give up on each request
    after 2 s, so the test spends seconds, not minutes, on the outage."""
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "2")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    os.killpg(proc.pid, signal.SIGSTOP)


def _recover(proc, monkeypatch):
    os.killpg(proc.pid, signal.SIGCONT)
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "60")


def _sent(rec, timeout_s: float = 120) -> None:
    """Wait until the recorder's sender thread has written every value (it retries on its own)."""
    deadline = time.monotonic() + timeout_s
    while rec.unsent():
        assert time.monotonic() < deadline, "the sender did not write its backlog"
        time.sleep(0.05)


@pytest.mark.slow
def test_server_outage_loses_no_metric_and_a_lasting_one_is_spooled_then_resent(tmp_path, monkeypatch):
    monkeypatch.setenv(spool.SPOOL_ENV, str(tmp_path / "spool"))
    with mlflow_server(f"sqlite:///{tmp_path}/server.db", tmp_path / "art", tmp_path / "server.log") as (url, proc):
        client = store.client(url)
        with pytest.raises(store.TrackingError, match="pipeline.tracking.spool"):
            with open_run(client, store.prepare(url, "outage"), "r", {}, flush_every=50) as rec:
                rec.retries = 1
                run_id = rec.run_id
                for step in range(100):
                    rec.metric("lr", 0.1, step)  # sent in two batches
                _sent(rec)
                _hang(proc, monkeypatch)  # a transient fault
                for step in range(100, 160):
                    rec.metric("lr", 0.1, step)  # the flush at 150 returns at once; its batch fails in the sender
                assert len(rec.unsent()) == 60
                _recover(proc, monkeypatch)  # back again
                for step in range(160, 210):
                    rec.metric("lr", 0.1, step)
                rec.flush()
                _sent(rec)  # the sender sends the backlog on its own
                assert len(client.get_metric_history(run_id, "lr")) == 210
                for step in range(210, 230):
                    rec.metric("lr", 0.1, step)
                _hang(proc, monkeypatch)  # down for good: the end of the run is spooled
        files = list((tmp_path / "spool").glob("*.json"))
        assert [f.stem for f in files] == [run_id]
        _recover(proc, monkeypatch)
        assert spool.resend(tmp_path / "spool") == 1
        assert sorted(m.step for m in client.get_metric_history(run_id, "lr")) == list(range(230))
        assert client.get_run(run_id).info.status == "FINISHED"
        assert not list((tmp_path / "spool").glob("*.json"))


@pytest.mark.slow
def test_unreachable_server_is_reported_in_one_line_before_any_training(tmp_path):
    proc = run_cli("dataset=synthetic", "tracking.uri=http://127.0.0.1:9", cwd=tmp_path)
    assert proc.returncode == 2
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "unreachable" in errors[0], proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr and "Epoch" not in proc.stderr + proc.stdout
    assert not (tmp_path / "checkpoints").exists() and not (tmp_path / "mlruns").exists()  # nothing was started


@pytest.mark.slow
def test_eight_parallel_writers_into_a_fresh_store_lose_no_run_and_no_metric(tmp_path, store_uri):
    steps = 40
    proc = run_cli("+policy=triangle2", "seed=0,1,2,3,4,5,6,7", "dataset=synthetic", f"trainer.max_steps={steps}",
                   "trainer.eval_every_steps=10", "trainer.progress=false", "tracking.flush_every=7",
                   "hydra/launcher=pool", "hydra.launcher.n_jobs=8", "hydra.launcher.threads_per_job=1",
                   "--multirun", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    runs = train_runs(store_uri)
    assert sorted(int(r.data.tags["seed"]) for r in runs) == list(range(8))
    client = MlflowClient(store_uri)
    for run in runs:
        assert run.info.status == "FINISHED"
        for key, count in (("lr", steps), ("train/loss", steps), ("val/acc", 4)):
            assert len(client.get_metric_history(run.info.run_id, key)) == count, key


@pytest.mark.slow
def test_basic_auth_server_refuses_anonymous_writes_and_accepts_credentials(tmp_path, monkeypatch):
    # The server's CSRF secret comes from the environment, never from a file in the repository.
    auth_env = {"MLFLOW_AUTH_CONFIG_PATH": str(tmp_path / "auth.ini"),
                "MLFLOW_FLASK_SERVER_SECRET_KEY": secrets.token_hex(16)}
    password = secrets.token_urlsafe(16)
    (tmp_path / "auth.ini").write_text(
        "[mlflow]\ndefault_permission = READ\ndatabase_uri = sqlite:///" + str(tmp_path / "auth.db")
        + "\nadmin_username = admin\nadmin_password = " + password + "\nauthorization_function = "
        "mlflow.server.auth:authenticate_request_basic_auth\n"
    )
    with mlflow_server(f"sqlite:///{tmp_path}/server.db", tmp_path / "art", tmp_path / "server.log", auth=True,
                       env=auth_env) as (url, _):
        monkeypatch.delenv("MLFLOW_TRACKING_USERNAME", raising=False)
        monkeypatch.delenv("MLFLOW_TRACKING_PASSWORD", raising=False)
        store.check_reachable(url)  # /health answers without credentials
        with pytest.raises(Exception, match="401|Unauthorized|unauthorized|credentials"):
            MlflowClient(url).create_experiment("anonymous")
        monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "admin")
        monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", password)
        experiment_id = store.prepare(url, "team")
        with open_run(store.client(url), experiment_id, "r", {"policy": "fix"}) as rec:
            rec.params({"optimizer.lr": 0.1})
        run = MlflowClient(url).get_run(rec.run_id)
        assert run.info.status == "FINISHED"
        # Credentials come from the environment only: nothing secret is recorded with the run.
        recorded = " ".join([*run.data.params.values(), *run.data.tags.values()])
        assert password not in recorded
