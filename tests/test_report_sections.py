"""The report's cross-group tables appear when their data exists: finish rates (Demon study), LCA, AutoAssist."""

import json

import pytest
from conftest import run_cli

TINY = ["dataset=synthetic", "trainer.max_steps=40", "trainer.eval_every_steps=10", "trainer.progress=false",
        "schedule.horizon_steps=null"]


@pytest.mark.slow
def test_report_adds_finish_rate_lca_and_autoassist_tables(tmp_path, store_uri):
    for args in (["+method=demon_sgdm,step"], ["+policy=triangle2", "+analysis=lca", "analysis.every_k_steps=10"],
                 ["+policy=sin2", "+assist=none,autoassist"]):
        proc = run_cli(*args, *TINY, "multirun", cwd=tmp_path)
        assert proc.returncode == 0, proc.stderr[-3000:]
    out = tmp_path / "report"
    proc = run_cli(f"tracking.uri={store_uri}", f"out_dir={out}", "target=0.5", "max_fluctuation=1", "scope=all",
                   module="pipeline.report", cwd=tmp_path)  # three sweeps: every run, not the latest sweep
    assert proc.returncode == 0, proc.stderr[-3000:]
    html = (out / "report.html").read_text()
    for title in ("Finish rate", "Loss change allocation", "AutoAssist"):
        assert title in html, title
    sections = {s["title"].split(" ")[0]: s for s in json.loads((out / "report.json").read_text())["sections"]}
    assert {"Finish", "Loss", "AutoAssist:"} <= set(sections)
    lca = sections["Loss"]["table"][0]
    assert 0 < lca["helping_frac"] < 1
    methods = [row["method"] for row in sections["Finish"]["table"]]
    assert any("demon" in m for m in methods)
