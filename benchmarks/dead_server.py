"""Dead tracking server benchmark: wall time of one short job against a live ``mlflow server`` and against one that
dies mid-run (issue 18 item 11: a dead server made training about 2.3x slower, 459 s against 197 s, with 215 retry
lines). Target: the dead-server run within about 1.2x of the live one, with at most a couple of warning lines.

Each repeat runs both sides back to back, each against a fresh SQLite-backed server in a temp dir: ``live``, the
server up throughout; ``dead``, the server killed (SIGKILL) once the store holds the run's first ``lr`` values, so
params, tags and artifacts are stored and every later write meets a closed port. Both sides poll the store the same
way. The dead run ends by spooling its unsent values (exit 2 with one ``error:`` line saying how to send them).
Figures, each as medians and the median of per-pair ratios: ``wall_s``, the whole ``python -m pipeline`` command
(the target's figure); ``train_s``, the run's own ``summary/train_s`` (fit without evaluation; read from the spool
for the dead run); ``after_first_values_s``, the part of the command after the kill (start-up excluded).

    python benchmarks/dead_server.py [--steps 600] [--repeats 3] [--out bench/results/dead_server.json]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))  # servers.py: a real mlflow server on loopback

from servers import mlflow_server  # noqa: E402

EXPERIMENT = "dead-server-bench"


def job_args(steps: int, url: str) -> list[str]:
    return ["dataset=synthetic", "+policy=triangle2", f"trainer.max_steps={steps}", "trainer.eval_every_steps=100",
            "trainer.checkpoint_every_steps=100", "trainer.num_threads=1", "trainer.progress=false",
            f"tracking.uri={url}", f"tracking.experiment={EXPERIMENT}"]


def first_values_stored(url: str) -> bool:
    """Whether the store holds some ``lr`` values of the job's run (the run is well under way)."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(url)
    experiment = client.get_experiment_by_name(EXPERIMENT)
    if experiment is None:
        return False
    runs = client.search_runs([experiment.experiment_id], filter_string="tags.kind = 'train'")
    return bool(runs) and bool(client.get_metric_history(runs[0].info.run_id, "lr"))


def stored_train_s(url: str) -> float:
    """The run's own training time (``summary/train_s``: fit without evaluation) as the live server stored it."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(url)
    experiment = client.get_experiment_by_name(EXPERIMENT)
    run = client.search_runs([experiment.experiment_id], filter_string="tags.kind = 'train'")[0]
    return run.data.metrics["summary/train_s"]


def spooled_train_s(spool_dir: Path) -> float:
    """``summary/train_s`` of the one run spooled when the dead server could not take it."""
    (path,) = spool_dir.glob("*.json")
    return next(value for key, value, _, _ in json.loads(path.read_text())["metrics"] if key == "summary/train_s")


def one_run(steps: int, kill: bool, tmp: Path) -> dict:
    """Run the job against a fresh server; with ``kill``, kill the server once the first values are stored."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "LRBENCH_SPOOL_DIR": str(tmp / "spool")}
    with mlflow_server(f"sqlite:///{tmp}/server.db", tmp / "artifacts", tmp / "server.log") as (url, server):
        start = time.perf_counter()
        proc = subprocess.Popen([sys.executable, "-m", "pipeline", *job_args(steps, url)], cwd=tmp,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        first_values_s = None
        while proc.poll() is None and first_values_s is None:
            try:
                if first_values_stored(url):
                    first_values_s = time.perf_counter() - start
                    if kill:
                        os.killpg(server.pid, signal.SIGKILL)
            except Exception:  # noqa: BLE001 - the server is busy or still starting; ask again
                pass
            time.sleep(0.2)
        stdout, stderr = proc.communicate()
        wall = time.perf_counter() - start
        expected = 2 if kill else 0  # a dead store at the end: the run is spooled and the job says how to send it
        if proc.returncode != expected:
            raise RuntimeError(f"{'dead' if kill else 'live'} run exited {proc.returncode}:\n{stderr[-3000:]}")
        train_s = spooled_train_s(tmp / "spool") if kill else stored_train_s(url)
    lines = stderr.splitlines()
    return {"wall_s": wall, "train_s": train_s, "first_values_s": first_values_s,
            "after_first_values_s": wall - first_values_s, "exit": proc.returncode,
            "warning_lines": sum(line.startswith("warning:") for line in lines),
            "error_lines": sum(line.startswith("error:") for line in lines),
            "retry_lines": sum("retry" in line.lower() or "retrying" in line.lower() for line in lines)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=600, help="optimizer steps per job")
    parser.add_argument("--repeats", type=int, default=3, help="live/dead pairs")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "dead_server.json")
    args = parser.parse_args()
    live, dead = [], []
    for i in range(args.repeats):
        for side, kill in (("live", False), ("dead", True)) if i % 2 == 0 else (("dead", True), ("live", False)):
            with tempfile.TemporaryDirectory(prefix=f"dead-server-{side}-") as tmp:
                result = one_run(args.steps, kill, Path(tmp))
            (dead if kill else live).append(result)
            print(f"{side}: {json.dumps(result)}", flush=True)
    summary = {
        "command": f"python benchmarks/dead_server.py --steps {args.steps} --repeats {args.repeats}",
        "target": "dead-server run within ~1.2x of the live one",
    }
    for figure in ("wall_s", "train_s", "after_first_values_s"):
        ratios = [d[figure] / v[figure] for d, v in zip(dead, live, strict=True)]
        summary[figure] = {"live_median": statistics.median(r[figure] for r in live),
                           "dead_median": statistics.median(r[figure] for r in dead),
                           "ratio_median": statistics.median(ratios), "pair_ratios": ratios}
    summary.update({
        "dead_warning_lines_max": max(r["warning_lines"] for r in dead),
        "dead_retry_lines_max": max(r["retry_lines"] for r in dead),
        "live": live, "dead": dead, "measured": time.strftime("%Y-%m-%d %H:%M"), "load_avg": os.getloadavg(),
    })
    summary["met"] = summary["wall_s"]["ratio_median"] <= 1.2
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(summary, indent=1))
    print(json.dumps({k: v for k, v in summary.items() if k not in ("live", "dead")}, indent=1))


if __name__ == "__main__":
    main()
