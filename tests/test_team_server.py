"""The team server end to end: PostgreSQL (scripts/postgres.sh) behind a real MLflow server, a sweep recorded
through it, and the report built from it."""

import glob
import os
import pwd
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest
from conftest import ROOT, run_cli, train_runs
from mlflow.tracking import MlflowClient
from servers import free_port, mlflow_server

SCRIPT = ROOT / "scripts" / "postgres.sh"


def _postgres_missing() -> str | None:
    """Why PostgreSQL cannot run here, or None."""
    if not (shutil.which("initdb") or glob.glob("/usr/lib/postgresql/*/bin/initdb")):
        return "PostgreSQL binaries not found (apt-get install postgresql; .ci/run installs it as root)"
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            return "no postgres system user to run PostgreSQL as (apt-get install postgresql creates it)"
    return None


@pytest.fixture
def postgres():
    """A throwaway PostgreSQL cluster on 127.0.0.1 made by scripts/postgres.sh; yields its state folder.

    The folder is outside pytest's tmp tree, whose 0700 folders the postgres system user could not enter.
    """
    reason = _postgres_missing()
    if reason:
        pytest.skip(reason)
    state = Path(tempfile.mkdtemp(prefix="lrbench-pg-"))
    env = {**os.environ, "POSTGRES_DIR": str(state), "POSTGRES_PORT": str(free_port())}
    try:
        started = subprocess.run(["bash", str(SCRIPT), "init", "start"], env=env, capture_output=True, text=True,
                                 timeout=120)
        assert started.returncode == 0, started.stdout + started.stderr
        yield state, started.stdout + started.stderr
    finally:
        subprocess.run(["bash", str(SCRIPT), "stop"], env=env, capture_output=True, timeout=120)
        shutil.rmtree(state, ignore_errors=True)


def test_postgres_script_keeps_the_password_in_private_files_only(postgres):
    state, output = postgres
    password = (state / "mlflow.pass").read_text().strip()
    backend_uri = (state / "backend_uri").read_text().strip()
    assert len(password) >= 32
    assert backend_uri.startswith("postgresql+psycopg2://mlflow:" + password + "@127.0.0.1:")
    for name in ("mlflow.pass", "backend_uri"):
        assert (state / name).stat().st_mode & 0o777 == 0o600, name
    assert password not in output and "mlflow:****@127.0.0.1" in output


@pytest.mark.slow
def test_sweep_on_a_postgres_backed_server_is_stored_in_postgres_and_reported(postgres, tmp_path):
    import psycopg2

    state, _ = postgres
    backend_uri = (state / "backend_uri").read_text().strip()
    password = (state / "mlflow.pass").read_text().strip()
    log = tmp_path / "server.log"
    with mlflow_server(backend_uri, tmp_path / "artifacts", log) as (url, _):
        sweep = run_cli("+policy=triangle2,sin2", "dataset=synthetic", "trainer.max_steps=30",
                        "trainer.eval_every_steps=10", "trainer.progress=false", "multirun", cwd=tmp_path,
                        env={"MLFLOW_TRACKING_URI": url})
        assert sweep.returncode == 0, sweep.stderr[-3000:]

        client = MlflowClient(url)
        experiment = client.get_experiment_by_name("lrbench")
        parents = [r for r in client.search_runs([experiment.experiment_id]) if r.data.tags.get("kind") == "sweep"]
        assert [p.info.status for p in parents] == ["FINISHED"]
        children = train_runs(url)
        assert sorted(r.data.tags["policy"] for r in children) == ["sin2", "triangle2"]
        for run in children:
            assert run.info.status == "FINISHED"
            assert run.data.tags["mlflow.parentRunId"] == parents[0].info.run_id
            assert len(client.get_metric_history(run.info.run_id, "lr")) == 30

        # The rows are in PostgreSQL itself (libpq takes the URI without SQLAlchemy's driver suffix).
        with psycopg2.connect(backend_uri.replace("postgresql+psycopg2://", "postgresql://", 1)) as conn:
            with conn.cursor() as cur:
                cur.execute("SELECT run_uuid, status FROM runs WHERE experiment_id = %s",
                            (int(experiment.experiment_id),))
                rows = dict(cur.fetchall())
        for run in [*parents, *children]:
            assert rows.get(run.info.run_id) == "FINISHED", run.info.run_id

        report = run_cli("tracking.uri=" + url, "out_dir=" + str(tmp_path / "report"), module="pipeline.report",
                         cwd=tmp_path)
        assert report.returncode == 0, report.stderr[-3000:]
        for name in ("report.html", "report.md", "report.json"):
            assert (tmp_path / "report" / name).is_file(), name
    # The database password never reaches a log or a job's output.
    assert password not in log.read_text() + sweep.stdout + sweep.stderr + report.stdout + report.stderr
