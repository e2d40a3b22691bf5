"""The report's numbers are exact on runs that evaluated more often than it samples a curve for its plots: steps
to a target the runs did not record come from every point of val/acc, and the composite's switch LR is the
recorded policy evaluated at the switch step (a thinned curve put both a step off)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import train_runs
from mlflow.tracking import MlflowClient

from pipeline.policies import Sin2, from_spec, to_spec
from pipeline.tracking.histories import _sample

ROOT = Path(__file__).resolve().parents[1]
STEPS = 100        # optimizer steps per run, one evaluation after each
MAX_POINTS = 50    # points per curve the report reads for its plots: about every second evaluation
TARGETS = (0.8, 0.85, 0.88)  # trainer.targets: the runs' summaries answer these without a curve


def _first_reach(curve: list[tuple[int, float]], target: float) -> int | None:
    return next((step for step, acc in curve if acc >= target), None)


def _target_where_thinning_bites(curves: dict[str, list[tuple[int, float]]]) -> float | None:
    """The lowest val/acc value that every run reaches with room left for a tail, at a step that a curve thinned
    to MAX_POINTS would miss in some run: there, a thinned read would report a later step."""
    for target in sorted({acc for curve in curves.values() for _, acc in curve}):
        if target in TARGETS:
            continue
        exact = [_first_reach(c, target) for c in curves.values()]
        if None in exact or max(exact) >= STEPS - 1:
            continue
        thinned = [_first_reach(_sample(c, MAX_POINTS), target) for c in curves.values()]
        if thinned != exact:
            return target
    return None


@pytest.mark.slow
def test_first_reach_steps_and_the_switch_lr_are_exact_on_curves_longer_than_max_points(tmp_path):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    sweep = subprocess.run(
        [sys.executable, "-m", "pipeline", "dataset=synthetic", "model=mlp", "+policy=sin2", "policy.l=15",
         "seed=0,1", f"trainer.max_steps={STEPS}", "trainer.eval_every_steps=1", "trainer.checkpoint_every_steps=0",
         f"trainer.targets=[{','.join(map(str, TARGETS))}]", "dataset.noise=6.0", "trainer.progress=false",
         f"tracking.uri={uri}", f"hydra.sweep.dir={tmp_path}/multirun", "--multirun"],
        cwd=ROOT, capture_output=True, text=True, timeout=900)
    parent = re.search(r"sweep parent run (\w+)", sweep.stdout)
    assert parent, sweep.stdout + sweep.stderr
    client = MlflowClient(uri)
    runs = {r.info.run_id: r for r in train_runs(uri)}
    curves = {run_id: sorted((m.step, m.value) for m in client.get_metric_history(run_id, "val/acc"))
              for run_id in runs}
    assert all(len(c) > 2 * MAX_POINTS - 5 for c in curves.values())
    target = _target_where_thinning_bites(curves)
    assert target is not None, "no val/acc value every run reaches at a step a thinned curve misses"

    out = tmp_path / "report"
    done = subprocess.run(
        [sys.executable, "-m", "pipeline.report", f"tracking.uri={uri}", f"parent_run_id={parent.group(1)}",
         f"out_dir={out}", f"target={target!r}", f"max_points={MAX_POINTS}", "max_fluctuation=1",
         "baseline=sin2", "cache_dir=null", "log_to_mlflow=false"],
        cwd=ROOT, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr
    (group,) = json.loads((out / "report.json").read_text())["groups"]
    (row,) = group["ranking"]
    exact = [_first_reach(curves[run_id], target) for run_id in row["run_ids"]]
    assert row["target_source"] == "history" and row["steps_values"] == exact

    composite = group["recommendation"]["composite"]
    switch = max(exact)
    run_id = row["run_ids"][0]
    policy = from_spec(json.loads(runs[run_id].data.params["policy_config"]))
    logged_lr = {m.step: m.value for m in client.get_metric_history(run_id, "lr")}
    assert composite["switch_step"] == switch
    assert composite["lr_at_switch"] == policy(switch) == logged_lr[switch]
    node = yaml.safe_load((out / "policy" / "proposed_composite.yaml").read_text())
    assert node["segments"][0] == {"until_steps": switch, "policy": to_spec(Sin2(k0=0.01, k1=0.06, l=15))}
