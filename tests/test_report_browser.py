"""The HTML report in a real browser: headless Chromium (Debian's package) loads it offline, logs no console error,
and a screenshot is saved as a test artifact (test-artifacts/report.png)."""

import shutil
import subprocess
from pathlib import Path

import pytest

from conftest import ROOT, run_cli

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
    report = run_cli(f"tracking.uri={store_uri}", f"out_dir={out}", "target=0.5", "max_fluctuation=1", "log_to_mlflow=false",
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

    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / "report.png"
    shot.unlink(missing_ok=True)
    result = chromium(f"--screenshot={shot}", page.as_uri())
    assert result.returncode == 0 and shot.exists() and shot.stat().st_size > 10_000, result.stderr[-2000:]
