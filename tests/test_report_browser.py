"""The HTML report and the MLflow UI in a real browser: headless Chromium (Debian's package) loads the report offline,
logs no console error, and shows the scope, the headlines and the glossary; a run's MLflow page shows its lr and
objective charts and no summary charts. Screenshots are saved as test artifacts (test-artifacts/*.png)."""

import re
import shutil
import subprocess

import pytest
from conftest import ROOT, run_cli, train_runs
from mlflow.tracking import MlflowClient
from servers import mlflow_server

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
ARTIFACTS = ROOT / "test-artifacts"


def chromium(*args: str, timeout: int = 120) -> subprocess.CompletedProcess:
    # --no-sandbox: CI runs as root, where Chromium's sandbox refuses to start. No network is needed or allowed.
    cmd = [CHROMIUM, "--headless=new", "--no-sandbox", "--disable-gpu", "--enable-logging=stderr", "--v=0",
           "--no-first-run", "--disable-extensions", "--window-size=1366,900", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)


@pytest.mark.slow
@pytest.mark.skipif(CHROMIUM is None, reason="chromium not installed (apt-get install chromium)")
def test_report_opens_offline_in_headless_chromium_without_console_errors(tmp_path, store_uri):
    sweep = run_cli("+policy=triangle2,sin2,inv", "seed=0,1", "dataset=synthetic", "trainer.max_steps=40",
                    "trainer.eval_every_steps=10", "trainer.progress=false", "multirun", cwd=tmp_path)
    assert sweep.returncode == 0, sweep.stderr[-3000:]
    out = tmp_path / "report"
    report = run_cli(f"tracking.uri={store_uri}", f"out_dir={out}", "target=0.5", "max_fluctuation=1",
                     "log_to_mlflow=false",
                     module="pipeline.report", cwd=tmp_path)
    assert report.returncode == 0, report.stderr[-3000:]
    page = out / "report.html"
    html = page.read_text()
    assert "http://" not in html.replace("http://www.w3.org", "") and "https://" not in html  # nothing to fetch

    dom = chromium("--dump-dom", page.as_uri())
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert "triangle2" in dom.stdout and "<img" in dom.stdout
    console = [line for line in dom.stderr.splitlines() if "CONSOLE" in line]
    errors = [line for line in console if "error" in line.lower() or "uncaught" in line.lower()]
    assert not errors, errors
    text = _visible_text(dom.stdout)
    # The scope comes first, the three headlines in the box, every column explained in the glossary at the end.
    assert text.index("Scope: 6 training runs of sweep") < text.index("Fastest to the target")
    for headline in ("Fastest to the target (LRBench's rule, in optimizer steps):",
                     "Best final objective within budget:", "Pareto set of speed and final val acc"):
        assert headline in text, headline
    glossary = text[text.index("Glossary"):]
    for term in ("AC / CV / CVAC", "late std", "loss gap", "steps to target", "Pareto set", "could not run"):
        assert term in glossary, term

    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / "report.png"
    shot.unlink(missing_ok=True)
    result = chromium(f"--screenshot={shot}", page.as_uri())
    assert result.returncode == 0 and shot.exists() and shot.stat().st_size > 10_000, result.stderr[-2000:]


def _visible_text(dom: str) -> str:
    text = re.sub(r"<(style|script)[^>]*>.*?</\1>", " ", dom, flags=re.S)
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", text)).replace("&amp;", "&").replace("&#x27;", "'")


@pytest.mark.slow
@pytest.mark.skipif(CHROMIUM is None, reason="chromium not installed (apt-get install chromium)")
def test_a_runs_mlflow_page_shows_its_lr_and_objective_charts_and_no_summary_charts(tmp_path, store_uri):
    run = run_cli("+policy=triangle2", "dataset=synthetic", "trainer.max_steps=30", "trainer.eval_every_steps=10",
                  "trainer.progress=false", cwd=tmp_path)
    assert run.returncode == 0, run.stderr[-3000:]
    report = run_cli(f"tracking.uri={store_uri}", f"out_dir={tmp_path}/report", "target=0.3", "max_fluctuation=1",
                     module="pipeline.report", cwd=tmp_path)  # logs the report run; gives the experiment its note
    assert report.returncode == 0, report.stderr[-3000:]
    (trained,) = train_runs(store_uri)
    experiment_id, run_id = trained.info.experiment_id, trained.info.run_id
    assert not any(key.startswith("summary/") for key in trained.data.metrics)
    experiment = MlflowClient(store_uri).get_experiment(experiment_id)
    assert "tags.kind = 'train'" in experiment.tags["mlflow.note.content"]
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"

    with mlflow_server(store_uri, tmp_path / "artifacts", tmp_path / "server.log") as (url, _):
        page = f"{url}/#/experiments/{experiment_id}/runs/{run_id}/model-metrics"
        dom = chromium("--virtual-time-budget=20000", "--dump-dom", page, timeout=180)
        assert dom.returncode == 0, dom.stderr[-2000:]
        # Section headers read "<prefix> (<charts>) Add chart".
        sections = {name.split(" ")[-1] if name != "Model metrics" else name: int(n) for name, n in
                    re.findall(r"([A-Za-z][A-Za-z ]*?) \((\d+)\) Add chart", _visible_text(dom.stdout))}
        # Sections of charts, one per metric prefix: no summary/* section pushes lr and val/* down any more.
        assert "summary" not in sections, sections
        assert sections.get("val") == 6 and sections.get("Model metrics") == 2, sections  # val/*; lr, momentum
        ARTIFACTS.mkdir(exist_ok=True)
        shot = ARTIFACTS / "mlflow_run.png"
        shot.unlink(missing_ok=True)
        result = chromium("--virtual-time-budget=20000", f"--screenshot={shot}", page, timeout=180)
        assert result.returncode == 0 and shot.exists() and shot.stat().st_size > 10_000, result.stderr[-2000:]
        overview = chromium("--virtual-time-budget=20000", "--dump-dom", f"{url}/#/experiments/{experiment_id}/runs/"
                            f"{run_id}", timeout=180)
        text = _visible_text(overview.stdout)
        assert "summary.best_val_acc" in text and "summary.steps_to_acc_0.85" in text  # the summary as params
