"""Every error a user can cause is one line naming the key or path, exit code 2, no run and no output folder; a
password in a tracking URI is never printed or recorded; store values cannot inject Markdown; the Makefile listens
on loopback unless told on its command line.

The commands run as a user would (a subprocess in a temp dir). As root, file permissions bind only without the
capabilities that override them, so the read-only cases drop those (CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH).
"""

from __future__ import annotations

import ctypes
import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from conftest import ROOT, TINY, run_cli
from mlflow.tracking import MlflowClient
from servers import mlflow_server
from test_team_server import postgres  # noqa: F401 - the fixture: a throwaway PostgreSQL cluster

from pipeline.tracking import store

UNREACHABLE_PG = "postgresql+psycopg2://mlflow:secret@127.0.0.1:9/mlflow"  # port 9: nothing listens on loopback
PR_CAPBSET_DROP, CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH = 24, 1, 2


def _without_permission_overrides() -> None:
    """preexec_fn: drop root's power to ignore file modes from the bounding set, so the command's exec lacks it."""
    libc = ctypes.CDLL(None, use_errno=True)
    for cap in (CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH):
        if libc.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP)")


def run_as_user(*args: str, cwd: Path, module: str, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", module, *args], cwd=cwd, capture_output=True, text=True,
                          timeout=600, env={**os.environ, **env, "PYTHONUNBUFFERED": "1"},
                          preexec_fn=_without_permission_overrides if os.geteuid() == 0 else None)


def _store(tmp_path: Path) -> tuple[str, Path]:
    """An MLflow store with the schema and the lrbench experiment, no runs."""
    db = tmp_path / "mlruns" / "mlflow.db"
    uri = f"sqlite:///{db}"
    store.prepare(uri, "lrbench")
    return uri, db


def _read_only_file(tmp_path):
    uri, db = _store(tmp_path)
    db.chmod(0o444)
    return uri, [str(db), "read-only"]


def _read_only_folder(tmp_path):
    uri, db = _store(tmp_path)
    db.parent.chmod(0o555)
    return uri, [str(db.parent), "read-only"]


def _corrupt(tmp_path):
    db = tmp_path / "mlruns" / "mlflow.db"
    db.parent.mkdir()
    db.write_bytes(os.urandom(65536))
    return f"sqlite:///{db}", [str(db), "not a readable SQLite database"]


def _mysql_words() -> list[str]:
    installed = importlib.util.find_spec("MySQLdb") is not None
    return ["mysql", "127.0.0.1"] if installed else ["mysql", "not installed", "sqlite:///", "http"]


# name -> (tracking.uri of the command, or a function of tmp_path giving (uri, words); words the error line holds)
STORES = {
    "sqlite in /proc": ("sqlite:////proc/x.db", ["/proc/x.db"]),
    "mysql without its driver": ("mysql://u:p@127.0.0.1/db", _mysql_words()),
    "unreachable postgresql": (UNREACHABLE_PG, ["127.0.0.1:9"]),
    "unreachable server": ("http://127.0.0.1:9", ["127.0.0.1:9", "unreachable"]),
    "read-only store file": (_read_only_file, None),
    "read-only store folder": (_read_only_folder, None),
    "corrupt store": (_corrupt, None),
}


def _runs_in(uri: str) -> int:
    """Runs of every experiment in the store (0 when it is not a readable store)."""
    db = store.sqlite_path(uri)
    if db is None or not db.exists():
        return 0
    try:
        client = MlflowClient(uri)
        ids = [e.experiment_id for e in client.search_experiments()]
    except Exception:  # noqa: BLE001 - a corrupt store holds no runs
        return 0
    return len(client.search_runs(ids)) if ids else 0


def assert_rejected(proc, tmp_path: Path, uri: str | None, words: list[str]) -> None:
    assert proc.returncode == 2, proc.stderr[-3000:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr[-3000:]
    for word in words:
        assert word in lines[0], (word, lines[0])
    assert "Traceback" not in proc.stdout + proc.stderr
    assert "secret" not in proc.stdout + proc.stderr and "u:p@" not in proc.stderr
    for folder in ("outputs", "multirun", "reports"):
        assert not (tmp_path / folder).exists(), folder
    if uri:
        assert _runs_in(uri) == 0


def _case(tmp_path, name):
    uri, words = STORES[name]
    if callable(uri):
        uri, words = uri(tmp_path)
    return uri, ["tracking.uri", *words]


@pytest.mark.slow
@pytest.mark.parametrize("name", list(STORES))
def test_training_on_an_unusable_store_is_one_error_line_and_leaves_nothing(tmp_path, name):
    uri, words = _case(tmp_path, name)
    proc = run_as_user(*TINY, f"tracking.uri={uri}", cwd=tmp_path, module="pipeline", env={})
    assert_rejected(proc, tmp_path, uri, words)


@pytest.mark.parametrize("name", list(STORES))
def test_a_report_on_an_unusable_store_is_one_error_line_and_leaves_nothing(tmp_path, name):
    uri, words = _case(tmp_path, name)
    if name == "sqlite in /proc":
        words = ["tracking.uri", "no MLflow store", "/proc/x.db"]  # the report never creates a store
    proc = run_as_user(f"tracking.uri={uri}", cwd=tmp_path, module="pipeline.report", env={})
    assert_rejected(proc, tmp_path, uri, words)


@pytest.mark.parametrize("key", ["out_dir", "cache_dir"])
def test_a_report_folder_that_cannot_be_created_is_one_error_line(tmp_path, key):
    uri, _ = _store(tmp_path)
    proc = run_cli(f"tracking.uri={uri}", f"{key}=/proc/x", cwd=tmp_path, module="pipeline.report")
    assert_rejected(proc, tmp_path, uri, [key, "/proc/x"])


@pytest.mark.slow
def test_an_output_folder_hydra_cannot_create_is_one_error_line(tmp_path):
    uri = f"sqlite:///{tmp_path}/mlruns/mlflow.db"
    proc = run_cli(*TINY, "hydra.run.dir=/proc/x", cwd=tmp_path, env={"MLFLOW_TRACKING_URI": uri})
    assert_rejected(proc, tmp_path, uri, ["hydra.run.dir", "/proc/x"])
    proc = run_cli(*TINY, "+policy=fix,inv", "hydra.sweep.dir=/proc/x/${now:%H}", "multirun", cwd=tmp_path,
                   env={"MLFLOW_TRACKING_URI": uri})
    assert_rejected(proc, tmp_path, uri, ["hydra.sweep.dir", "/proc/x"])


@pytest.mark.slow
def test_a_rejected_command_removes_only_its_own_output_folder(tmp_path):
    kept = tmp_path / "outputs" / "2000-01-01" / "00-00-00" / "notes.txt"
    kept.parent.mkdir(parents=True)
    kept.write_text("a user's file")
    proc = run_cli(*TINY, "trainer.max_steps=-5", cwd=tmp_path,
                   env={"MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path}/mlruns/mlflow.db"})
    assert proc.returncode == 2 and "trainer.max_steps" in proc.stderr
    assert sorted(p.relative_to(tmp_path).as_posix() for p in (tmp_path / "outputs").rglob("*")) == [
        "outputs/2000-01-01", "outputs/2000-01-01/00-00-00", "outputs/2000-01-01/00-00-00/notes.txt"]


def test_an_unreachable_database_is_reported_by_a_probe_before_mlflow_sees_it():
    # The probe (a TCP connect with store.CONNECT_TIMEOUT_S) answers, not MLflow's minutes of retries; the timing is a
    # benchmark's business, the property here is that the probe raises the one-line error itself.
    with pytest.raises(store.TrackingError, match=r"^tracking.uri=postgresql\+psycopg2://mlflow:\*\*\*\*@127.0.0.1:9/"):
        store.check_reachable(UNREACHABLE_PG)


@pytest.mark.parametrize(("text", "public"), [
    ("postgresql+psycopg2://bob:s3cret@db:5432/mlflow", "postgresql+psycopg2://bob:****@db:5432/mlflow"),
    ("http://u:p@ss@host:5000", "http://u:****@host:5000"),                     # an unencoded @ in the password
    ("tracking.uri=postgresql\\://bob\\:s3cret@db/x", "tracking.uri=postgresql\\://bob:****@db/x"),  # Hydra's escapes
    ("['a=mysql://u:pw@h/db', 'b=2']", "['a=mysql://u:****@h/db', 'b=2']"),
    ("postgresql://db/x?user=bob&password=s3cret", "postgresql://db/x?user=bob&password=****"),
    ("sqlite:////tmp/a:b@c.db http://host:5000/x", "sqlite:////tmp/a:b@c.db http://host:5000/x"),
])
def test_public_uri_masks_every_password_and_nothing_else(text, public):
    assert store.public_uri(text) == public


def test_hydra_lines_and_log_records_of_a_masked_process_hold_no_password(tmp_path):
    code = f"""
import logging
from hydra.core.utils import JobReturn, JobStatus
from pipeline import redaction
redaction.install()
logging.basicConfig(filename={str(tmp_path / 'job.log')!r}, level=logging.INFO)
logging.getLogger("hydra").info("#0 : tracking.uri=postgresql\\\\://bob\\\\:s3cret@db/x")
try:
    raise RuntimeError("cannot reach http://bob:s3cret@db:5000")
except RuntimeError:
    logging.getLogger("x").exception("failed")
print("tracking.uri=postgresql://bob:s3cret@db/x")
JobReturn(overrides=["tracking.uri=postgresql://bob:s3cret@db/x"], status=JobStatus.FAILED,
          _return_value=RuntimeError("x")).return_value
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    log = (tmp_path / "job.log").read_text()
    assert "Error executing job with overrides" in proc.stderr and "bob:****@db" in proc.stdout
    assert "bob:****@db" in log and "http://bob:****@db:5000" in log
    assert "s3cret" not in proc.stdout + proc.stderr + log


# -- a sweep with a password in tracking.uri -------------------------------------------------------------------------


def _sweep_with_password(cwd: Path, uri: str) -> subprocess.CompletedProcess:
    # Two jobs that run and one rejected at the config stage (recorded as a FAILED child with its error).
    return run_cli("+policy=fix", "dataset=synthetic", "trainer.max_steps=10,20,-5", "trainer.eval_every_steps=5",
                   "trainer.progress=false", f"tracking.uri={uri}", "multirun", cwd=cwd,
                   env={"MLFLOW_TRACKING_URI": ""})


def assert_password_nowhere(proc, cwd: Path, uri: str, password: str) -> None:
    """Not in stdout, stderr, any file under the launch folder (Hydra's logs and saved configs, local artifacts),
    nor any run's params, tags or artifacts (the parent's sweep.overrides tag included)."""
    assert proc.returncode == 1, proc.stderr[-3000:]  # one failed job
    assert ":****@" in proc.stdout  # the sweep's parent line, masked
    assert password not in proc.stdout and password not in proc.stderr
    files = [p for p in cwd.rglob("*") if p.is_file()]
    assert any(p.suffix == ".log" for p in files)
    leaks = [str(p.relative_to(cwd)) for p in files if password.encode() in p.read_bytes()]
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("lrbench")
    runs = client.search_runs([experiment.experiment_id])
    assert len(runs) == 4  # the parent and three children
    for run in runs:
        for name, values in (("param", run.data.params), ("tag", run.data.tags)):
            for key, value in values.items():
                if password in value:
                    leaks.append(f"{name} {key} of run {run.info.run_id}")
        download = cwd.parent / f"artifacts-{run.info.run_id}"
        download.mkdir()
        client.download_artifacts(run.info.run_id, "", str(download))
        leaks += [f"artifact {f.relative_to(download)} of run {run.info.run_id}" for f in download.rglob("*")
                  if f.is_file() and password.encode() in f.read_bytes()]
    assert leaks == []


@pytest.mark.slow
def test_a_sweep_on_postgresql_never_prints_or_records_its_password(postgres, tmp_path):  # noqa: F811
    state, _ = postgres
    uri = (state / "backend_uri").read_text().strip()
    password = (state / "mlflow.pass").read_text().strip()
    (tmp_path / "launch").mkdir()
    proc = _sweep_with_password(tmp_path / "launch", uri)
    assert_password_nowhere(proc, tmp_path / "launch", uri, password)


@pytest.mark.slow
def test_a_sweep_on_a_server_url_with_a_password_never_prints_or_records_it(tmp_path):
    password = "pw-" + os.urandom(8).hex()
    with mlflow_server(f"sqlite:///{tmp_path}/server.db", tmp_path / "server-artifacts",
                       tmp_path / "server.log") as (url, _):
        uri = url.replace("http://", f"http://alice:{password}@")
        (tmp_path / "launch").mkdir()
        proc = _sweep_with_password(tmp_path / "launch", uri)
        assert_password_nowhere(proc, tmp_path / "launch", url, password)


# -- Markdown --------------------------------------------------------------------------------------------------------

INJECTION = "[click](javascript:alert(1)) ![p](http://127.0.0.1:9/pixel.png)"


def _report_with_hostile_values():
    from pipeline.analysis.document import GroupReport, Report, Section
    from pipeline.analysis.recommend import Recommendation

    failure = {"seed": 0, "failure": "diverged", "run_name": INJECTION, "run_id": "r1", "error": f"*{INJECTION}*"}
    ranked = pd.DataFrame([{"rank": 1, "name": INJECTION, "good": False, "n_reached": 0, "n_runs": 1,
                            "test_val_mean": None, "test_top5_mean": None, "ac_mean": None, "cv_mean": None,
                            "cvac_mean": None, "fluct_mean": None, "loss_gap_mean": None, "reasons": [INJECTION],
                            "policy_spec": f"FIX {INJECTION}", "failures": [failure]}])
    rec = Recommendation(INJECTION, 0.85, "steps", None, None, None, text=f"none of {INJECTION} reached it")
    return Report("LR policy recommendation", "2026-01-01T00:00:00", {"uri": "sqlite:///x.db"},
                  {"target": 0.85, "rank_by": "steps"}, 1, [GroupReport(f"lenet5/{INJECTION}", ranked, rec)],
                  notes=[INJECTION], sections=[Section(INJECTION, INJECTION, ["run"], [[f"# {INJECTION}"]])])


def test_store_values_in_report_md_are_text_not_links_or_images():
    import re

    from pipeline.analysis.render import report_html, report_markdown

    md = report_markdown(_report_with_hostile_values())
    # Outside code spans (shown literally), every [ ] ! * from the store is backslash-escaped: nothing can open a
    # link, an image or emphasis.
    outside_code = re.sub(r"`[^`\n]*`", "", md)
    assert INJECTION not in outside_code
    assert not re.search(r"(?<!\\)[\[\]!*]", outside_code), md
    assert r"\[click\](javascript:alert(1)) \!\[p\](http://127.0.0.1:9/pixel.png)" in md
    assert "`FIX [click](javascript:alert(1))" in md  # a policy spec is a code span: literal, never a link
    html = report_html(_report_with_hostile_values())
    assert "<a " not in html and "<img" not in html.replace("<img alt=", "")


@pytest.mark.parametrize(("text", "markdown"), [
    ("<b>x</b> & y", "&lt;b&gt;x&lt;/b&gt; &amp; y"),
    ("a|b_c*d~e$f`g\\h", "a\\|b\\_c\\*d\\~e\\$f\\`g\\\\h"),
    ("# not a heading", "\\# not a heading"),
    ("12. not a list", "12\\. not a list"),
    ("- not a list\nnor a new line", "\\- not a list nor a new line"),
])
def test_markdown_escape_renders_the_text_itself(text, markdown):
    from pipeline.analysis.render import _m

    assert _m(text) == markdown


# -- the LR curve plot -----------------------------------------------------------------------------------------------


def test_the_lr_curve_of_ten_million_steps_is_plotted_at_a_bounded_number_of_steps(tmp_path):
    from pipeline.policies import Triangle2
    from pipeline.policies.fit import sample_steps
    from pipeline.training.artifacts import MAX_CURVE_POINTS, lr_curve_png

    steps = sample_steps(10_000_000, MAX_CURVE_POINTS)
    assert len(steps) <= MAX_CURVE_POINTS and steps[0] == 0 and steps[-1] == 9_999_999 and steps == sorted(steps)
    assert sample_steps(5, MAX_CURVE_POINTS) == [0, 1, 2, 3, 4]
    calls = []

    class Counted(Triangle2):
        def __call__(self, t):
            calls.append(t)
            return super().__call__(t)

    lr_curve_png(Counted(0.01, 0.1, 2000), 10_000_000, tmp_path / "lr.png", "t")
    assert len(calls) <= MAX_CURVE_POINTS and (tmp_path / "lr.png").stat().st_size > 0


# -- Makefile --------------------------------------------------------------------------------------------------------


@pytest.fixture
def fake_venv(tmp_path):
    """A VENV for make whose mlflow prints what it was started with; make never reinstalls it (-o)."""
    if shutil.which("make") is None:
        pytest.skip("make not installed")
    bin_dir = tmp_path / "venv" / "bin"
    bin_dir.mkdir(parents=True)
    (bin_dir / "python").symlink_to(sys.executable)
    (bin_dir / "mlflow").write_text('#!/bin/sh\necho "mlflow $* store=$MLFLOW_BACKEND_STORE_URI"\n')
    (bin_dir / "mlflow").chmod(0o755)
    (bin_dir / ".installed").touch()
    return tmp_path / "venv"


def make(target: str, venv: Path, *args: str, env: dict) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if k not in ("HOST", "MLFLOW_TRACKING_URI", "BACKEND")}
    return subprocess.run(["make", "-s", "-C", str(ROOT), target, f"VENV={venv}", "-o", f"{venv}/bin/.installed",
                           "STORE=/tmp/no-such-store", *args], capture_output=True, text=True, timeout=120,
                          env={**base, "PYTHONPATH": str(ROOT), **env})


@pytest.mark.parametrize("target", ["ui", "server"])
def test_make_listens_on_loopback_unless_host_is_given_on_its_command_line(fake_venv, target):
    exported = make(target, fake_venv, env={"HOST": "0.0.0.0"})
    assert exported.returncode == 0, exported.stderr
    assert "--host 127.0.0.1" in exported.stdout and "0.0.0.0" not in exported.stdout
    given = make(target, fake_venv, "HOST=0.0.0.0", env={})
    assert "--host 0.0.0.0" in given.stdout


@pytest.mark.parametrize("target", ["ui", "server"])
def test_make_uses_mlflow_tracking_uri_and_prints_it_masked(fake_venv, target):
    uri = "postgresql+psycopg2://mlflow:s3cret@127.0.0.1:5432/mlflow"
    done = make(target, fake_venv, env={"MLFLOW_TRACKING_URI": uri})
    assert done.returncode == 0, done.stderr
    shown, started = done.stdout.splitlines()[0], done.stdout.splitlines()[-1]
    assert "mlflow:****@127.0.0.1" in shown and "s3cret" not in shown
    assert started.endswith(f"store={uri}") and "s3cret" not in started.split(" store=")[0]
    server = make(target, fake_venv, env={"MLFLOW_TRACKING_URI": "http://u:s3cret@127.0.0.1:5000"})
    assert server.returncode != 0 and "tracking server" in server.stderr and "s3cret" not in server.stderr


def test_a_report_setting_typed_after_plus_is_refused_naming_the_nearest(tmp_path):
    proc = run_cli("+targt=0.5", cwd=tmp_path, module="pipeline.report",
                   env={"MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path}/mlruns/mlflow.db"})
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [proc.stderr.strip().splitlines()[0]]  # one line
    assert proc.stderr.startswith("error: targt is not a report setting; did you mean target?")
    assert not (tmp_path / "reports").exists()
