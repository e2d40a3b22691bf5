"""The HTML report and the MLflow UI in a real browser: headless Chromium (Debian's package) loads the report offline,
logs no console error, and shows the scope, the headlines and the glossary; a run's MLflow page shows its lr and
objective charts and no summary charts, the objective's in the first screen. Screenshots are saved as test artifacts
(test-artifacts/*.png)."""

import base64
import json
import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest
from conftest import ROOT, run_cli, train_runs
from mlflow.tracking import MlflowClient
from servers import mlflow_server

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
ARTIFACTS = ROOT / "test-artifacts"
# A laptop's browser window, in CSS px: what "the first screen" of a page means below.
WINDOW = (1400, 900)
# --no-sandbox: CI runs as root, where Chromium's sandbox refuses to start. No network is needed or allowed.
FLAGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-extensions",
         f"--window-size={WINDOW[0]},{WINDOW[1]}"]


def chromium(*args: str, timeout: int = 120) -> subprocess.CompletedProcess:
    cmd = [CHROMIUM, *FLAGS, "--enable-logging=stderr", "--v=0", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)


def layout(url: str, script: str, screenshot: Path | None = None, window: tuple[int, int] = WINDOW,
           timeout_s: float = 180):
    """What ``script`` (a JS expression; a promise is awaited) returns on ``url`` once loaded, in a window of
    ``window`` CSS px; then a PNG of the window to ``screenshot``, if given. The same headless Chromium, driven over
    its DevTools pipe (fd 3 in, fd 4 out, NUL-terminated JSON), since ``--dump-dom`` has no layout to measure
    positions on, and ``--screenshot`` shoots before MLflow's charts are drawn."""
    to_chrome, from_chrome = os.pipe(), os.pipe()
    proc = subprocess.Popen(["bash", "-c", f'exec "$0" "$@" 3<&{to_chrome[0]} 4>&{from_chrome[1]}', CHROMIUM, *FLAGS,
                             "--remote-debugging-pipe", "about:blank"], pass_fds=(to_chrome[0], from_chrome[1]),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    os.close(to_chrome[0])
    os.close(from_chrome[1])
    sent, pending = 0, b""

    def call(method: str, session: str | None = None, **params):
        nonlocal sent, pending
        sent += 1
        os.write(to_chrome[1], json.dumps({"id": sent, "method": method, "params": params,
                                           **({"sessionId": session} if session else {})}).encode() + b"\0")
        while True:
            while b"\0" not in pending:
                chunk = os.read(from_chrome[0], 1 << 16)
                assert chunk, f"chromium closed its DevTools pipe during {method}"
                pending += chunk
            message, pending = pending.split(b"\0", 1)
            reply = json.loads(message)
            if reply.get("id") == sent:
                assert "error" not in reply, (method, reply["error"])
                return reply["result"]

    def evaluate(session: str, expression: str):
        reply = call("Runtime.evaluate", session, expression=expression, returnByValue=True, awaitPromise=True)
        return reply["result"].get("value")

    try:
        target = call("Target.createTarget", url="about:blank")["targetId"]
        session = call("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
        call("Emulation.setDeviceMetricsOverride", session, width=window[0], height=window[1], deviceScaleFactor=1,
             mobile=False)
        call("Page.navigate", session, url=url)
        deadline = time.monotonic() + timeout_s  # a bound on waiting for the page, not a measured duration
        while not _loaded(evaluate(session, "[location.href, document.readyState]"), url):
            assert time.monotonic() < deadline, f"{url} did not load"
            time.sleep(0.2)
        value = evaluate(session, script)
        if screenshot is not None:
            screenshot.write_bytes(base64.b64decode(call("Page.captureScreenshot", session, format="png")["data"]))
        return value
    finally:
        try:
            call("Browser.close")
        except AssertionError:
            pass  # already gone
        os.close(to_chrome[1])
        os.close(from_chrome[0])
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _loaded(state, url: str) -> bool:
    """The page (not about:blank) has loaded; a single-page app may rewrite the fragment, so only the rest counts."""
    return bool(state) and state[0].split("#")[0] == url.split("#")[0] and state[1] == "complete"


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


# The run page's chart sections once drawn: each section's header ("val (6)"), its top and its charts' titles with
# their tops, in CSS px from the top of the window; and the window's height. Waits (at most 2 min) for the last
# section and for a plot in every chart MLflow has drawn (it draws only those near the window).
CHART_LAYOUT = r"""
new Promise(resolve => {
  const started = Date.now();
  const top = element => Math.round(element.getBoundingClientRect().top);
  const read = () => [...document.querySelectorAll('[class*="collapse-item"]')].map(item => ({
    name: item.querySelector('[class*="collapse-header"]').innerText.replace(/\s+/g, ' ').replace(/ Add chart$/, ''),
    top: top(item),
    charts: [...item.querySelectorAll('h4')].map(title => [title.textContent.trim(), top(title)]),
  }));
  const poll = () => {
    const sections = read();
    const titles = sections.reduce((n, s) => n + s.charts.length, 0);
    const plots = document.querySelectorAll('.js-plotly-plot').length;  // a chart's plot, once its data is in
    const drawn = sections.some(s => s.name.startsWith('Model metrics')) && titles > 0 && plots >= titles;
    if (drawn || Date.now() - started > 120000) resolve({height: window.innerHeight, sections});
    else setTimeout(poll, 250);
  };
  poll();
})
"""


def _visible_text(dom: str) -> str:
    text = re.sub(r"<(style|script)[^>]*>.*?</\1>", " ", dom, flags=re.S)
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", text)).replace("&amp;", "&").replace("&#x27;", "'")


@pytest.mark.slow
@pytest.mark.skipif(CHROMIUM is None, reason="chromium not installed (apt-get install chromium)")
def test_a_runs_mlflow_page_shows_val_acc_in_the_first_screen_and_lr_before_any_summary(tmp_path, store_uri):
    run = run_cli("+policy=triangle2", "dataset=synthetic", "trainer.max_steps=30", "trainer.eval_every_steps=10",
                  "trainer.progress=false", cwd=tmp_path)
    assert run.returncode == 0, run.stderr[-3000:]
    report = run_cli(f"tracking.uri={store_uri}", f"out_dir={tmp_path}/report", "target=0.3", "max_fluctuation=1",
                     module="pipeline.report", cwd=tmp_path)  # logs the report run; gives the experiment its note
    assert report.returncode == 0, report.stderr[-3000:]
    (trained,) = train_runs(store_uri)
    experiment_id, run_id = trained.info.experiment_id, trained.info.run_id
    assert not any(key.startswith(("summary/", "test/")) for key in trained.data.metrics)
    experiment = MlflowClient(store_uri).get_experiment(experiment_id)
    assert "tags.kind = 'train'" in experiment.tags["mlflow.note.content"]
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"

    with mlflow_server(store_uri, tmp_path / "artifacts", tmp_path / "server.log") as (url, _):
        page = f"{url}/#/experiments/{experiment_id}/runs/{run_id}/model-metrics"
        ARTIFACTS.mkdir(exist_ok=True)
        shot = ARTIFACTS / "mlflow_run.png"
        shot.unlink(missing_ok=True)
        charts = layout(page, CHART_LAYOUT, screenshot=shot)
        assert shot.stat().st_size > 10_000
        height, sections = charts["height"], charts["sections"]
        # One section of charts per metric prefix, in MLflow's order (prefixes sorted, the unprefixed "Model metrics"
        # last): only curves now, no summary/* or test/* section of single-point charts above lr and val/*.
        assert [s["name"] for s in sections] == ["train (1)", "val (6)", "Model metrics (2)"], sections
        objective = dict(sections[1]["charts"])["acc"]
        assert objective < height, f"val/acc's chart is {objective} px down a {height} px window"
        # lr (with momentum, "Model metrics") follows the val/* curves: within the second screen, where it was
        # about 4,000 px down (29 summary/* and 6 test/* charts first) before issue 21.
        assert sections[2]["top"] < 2 * height, sections
        overview = chromium("--virtual-time-budget=20000", "--dump-dom", f"{url}/#/experiments/{experiment_id}/runs/"
                            f"{run_id}", timeout=180)
        text = _visible_text(overview.stdout)
        assert "summary.best_val_acc" in text and "summary.steps_to_acc_0.85" in text  # the summary as params
