"""Scale benchmark of ``python -m pipeline.report`` (run by ``make bench``; not a test).

Generates a real MLflow SQLite store of 1,000 training runs x 2,000 logged steps (``lr`` and ``train/loss`` every
step, ``val/acc`` every 100 steps, every summary of the data contract; 13 policies x seeds x 3 groups, with some
diverged runs), then times the report on it: wall clock of the whole subprocess (imports included), median of 3,
with no history cache (cold) and with a warm on-disk history cache, with each report's CPU seconds, peak RSS and
its own stage timings. The machine's load average is recorded with them: on a shared 2-core machine other work
inflates the wall clock.

MLflow's own ``log_batch`` writes about 3,600 points/s on SQLite (notes ecosystem.md section 1), i.e. ~20 minutes
for 4M points, so runs, tags and params are created with MlflowClient and the metric rows are bulk-inserted into
the store's ``metrics`` and ``latest_metrics`` tables with sqlite3 ``executemany``: the result is an ordinary
MLflow store that MLflow reads back.

    python benchmarks/report_scale.py [--runs 1000] [--steps 2000] [--repeats 3] [--out bench/results/report_scale.json]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import random
import re
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run as a script from any directory

GROUPS = [("lenet5", "fashion_mnist", "momentum"), ("lenet5", "fashion_mnist", "adam"),
          ("cnn3", "cifar10", "momentum")]
TARGETS = [0.8, 0.85, 0.88]
EXPERIMENT = "lrbench-bench"
GOAL_S = 10.0


def job_configs(policies: list[str], steps: int, eval_every: int) -> dict[tuple[int, str], dict]:
    """The resolved job config (what a training run logs as params) of every (group, policy), composed from conf/
    exactly as ``python -m pipeline +policy=NAME model=... dataset=... optimizer=...`` would."""
    from hydra import compose, initialize_config_dir

    from pipeline.config.base import job_config

    configs = {}
    with initialize_config_dir(str(ROOT / "conf"), version_base="1.3"):
        for g, (model, dataset, optimizer) in enumerate(GROUPS):
            for name in policies:
                cfg = compose("config", [f"+policy={name}", f"model={model}", f"dataset={dataset}",
                                         f"optimizer={optimizer}", f"trainer.max_steps={steps}",
                                         f"trainer.eval_every_steps={eval_every}", f"study={EXPERIMENT}"])
                configs[(g, name)] = job_config(cfg)
    return configs


def simulate(rng: random.Random, steps: int, eval_every: int, speed: float, plateau: float, diverge_at: int | None):
    """Validation accuracies (every eval_every steps) and train losses (every step) of a plausible run."""
    last = diverge_at if diverge_at is not None else steps
    tau = steps * speed
    evals = [(s, min(0.99, plateau * (1 - math.exp(-s / tau)) + rng.gauss(0, 0.004)))
             for s in range(eval_every, last + 1, eval_every)]
    losses = [2.3 * math.exp(-t / tau) + 0.2 + rng.gauss(0, 0.02) for t in range(last)]
    if diverge_at is not None:
        losses[-1] = float("nan")
    return evals, losses


def summaries(evals, losses, steps_done: int, seconds_per_step: float, diverged: bool) -> dict[str, float]:
    out = {"summary/steps": steps_done, "summary/train_s": steps_done * seconds_per_step,
           "summary/diverged": float(diverged), "summary/final_train_loss": losses[-1] if not diverged else 1e9}
    if diverged:
        out["summary/diverged_step"] = steps_done
    if evals:
        accs = [a for _, a in evals]
        best = max(range(len(accs)), key=accs.__getitem__)
        last = accs[-5:]
        mean = sum(last) / len(last)
        out.update({"summary/best_val_acc": accs[best], "summary/best_val_acc_step": evals[best][0],
                    "summary/final_val_acc": accs[-1],
                    "summary/val_acc_last_std": math.sqrt(sum((a - mean) ** 2 for a in last) / len(last)),
                    "summary/val_acc_auc": sum(accs) / len(accs), "summary/samples": steps_done * 64.0})
    for target in TARGETS:
        hit = next(((s, s * seconds_per_step) for s, a in evals if a >= target), None)
        out[f"summary/reached_acc_{target:g}"] = float(hit is not None)
        if hit:
            out[f"summary/steps_to_acc_{target:g}"], out[f"summary/seconds_to_acc_{target:g}"] = hit
    if not diverged:
        acc = evals[-1][1] - 0.005
        out.update({"summary/test_loss": 0.35, "summary/test_acc": acc, "summary/test_acc_top5": 0.995,
                    "summary/test_conf_mean": 0.9, "summary/test_conf_std": 0.12, "summary/test_conf_class_std": 0.04,
                    "summary/loss_gap": losses[-1] - 0.35})
    return out


def generate(uri: str, db: Path, n_runs: int, steps: int, eval_every: int) -> dict:
    from mlflow.entities import Param, RunTag

    from pipeline.policies.build import build
    from pipeline.tracking import store
    from pipeline.tracking.recorder import flatten

    started = time.perf_counter()
    experiment_id = store.prepare(uri, EXPERIMENT)
    client = store.client(uri)
    names = sorted(p.stem for p in (ROOT / "conf" / "policy").glob("*.yaml") if not p.stem.startswith("composite"))
    configs = job_configs(names, steps, eval_every)
    policies = {name: build(configs[(0, name)]["policy"], steps) for name in names}  # fractions of the budget
    curves = {name: [policies[name](t) for t in range(steps)] for name in names}
    rng = random.Random(0)
    quality = {(g, p): (rng.uniform(0.08, 0.6), rng.uniform(0.86, 0.93)) for g in range(len(GROUPS)) for p in names}
    metric_rows, latest_rows = [], []
    per_combo = len(GROUPS) * len(names)
    for i in range(n_runs):
        g, name, seed = i % len(GROUPS), names[(i // len(GROUPS)) % len(names)], i // per_combo
        model, dataset, optimizer = GROUPS[g]
        speed, plateau = quality[(g, name)]
        diverge_at = steps // 3 if (name == "exp" and g == 2 and seed % 5 == 1) else None
        run_rng = random.Random(i)
        evals, losses = simulate(run_rng, steps, eval_every, speed, plateau, diverge_at)
        steps_done = diverge_at or steps
        seconds_per_step = 0.004 * (1 + 0.05 * run_rng.random())
        summary = summaries(evals, losses, steps_done, seconds_per_step, diverge_at is not None)
        config = {**configs[(g, name)], "seed": seed}
        tags = {"kind": "train", "policy": name, "policy_spec": policies[name].lrbench_string(), "model": model,
                "dataset": dataset, "optimizer": optimizer, "momentum": "none", "seed": str(seed),
                "git_commit": "bench", "k_scale": "1", "study": EXPERIMENT, "run_key": f"{i:016x}"}
        run = client.create_run(experiment_id, run_name=f"{name}-{model}-{dataset}-s{seed}", tags=tags)
        run_id = run.info.run_id
        client.log_batch(run_id, params=[Param(k, v) for k, v in flatten(config).items()])
        if diverge_at is not None:
            error = f"training loss nan at step {diverge_at - 1} is non-finite"
            client.log_batch(run_id, tags=[RunTag("failure", "diverged"), RunTag("error", error)])
        client.set_terminated(run_id, "FAILED" if diverge_at is not None else "FINISHED")
        ts = 1_700_000_000_000 + i * 10_000
        # Every key a training run logs, with realistic counts: lr and train/loss per step; the val/* family per
        # evaluation (val/acc as simulated, the others derived from it); test/* and summary/* once at the end.
        series = {"lr": list(enumerate(curves[name][:steps_done])), "train/loss": list(enumerate(losses)),
                  "val/acc": evals, **{k: [(steps_done, v)] for k, v in summary.items()}}
        for key, of in (("loss", lambda a: 2 * (1 - a)), ("acc_top5", lambda a: min(1.0, a + 0.08)),
                        ("conf_mean", lambda a: a), ("conf_std", lambda a: 0.2 * (1 - a)),
                        ("conf_class_std", lambda a: 0.1 * (1 - a))):
            series[f"val/{key}"] = [(s, of(a)) for s, a in evals]
            if diverge_at is None:
                series[f"test/{key}"] = [(steps_done, of(evals[-1][1]))]
        if diverge_at is None:
            series["test/acc"] = [(steps_done, evals[-1][1] - 0.005)]
        for key, points in series.items():
            if not points:
                continue
            for step, value in points:
                nan = value != value
                metric_rows.append((key, 0.0 if nan else value, ts + step, run_id, step, int(nan)))
            step, value = points[-1]
            nan = value != value
            latest_rows.append((key, 0.0 if nan else value, ts + step, step, int(nan), run_id))
    runs_s = time.perf_counter() - started
    con = sqlite3.connect(db)
    with con:
        con.execute("PRAGMA synchronous = OFF")
        con.execute("PRAGMA cache_size = -262144")  # 256 MiB of page cache: the indexes take random inserts
        con.executemany("INSERT INTO metrics (key, value, timestamp, run_uuid, step, is_nan) VALUES (?,?,?,?,?,?)",
                        metric_rows)
        con.executemany("INSERT INTO latest_metrics (key, value, timestamp, step, is_nan, run_uuid) "
                        "VALUES (?,?,?,?,?,?)", latest_rows)
    con.close()
    return {"runs": n_runs, "steps": steps, "metric_rows": len(metric_rows), "runs_and_params_s": round(runs_s, 1),
            "generate_s": round(time.perf_counter() - started, 1)}


def time_report(uri: str, out_dir: Path, cache_dir: str) -> dict:
    """One report in a subprocess: wall seconds (imports included), CPU seconds and peak RSS of that process
    (``os.wait4``), and the report's own stage timings."""
    out_dir.mkdir(parents=True, exist_ok=True)
    with open(out_dir / "stdout.txt", "w+") as stdout, open(out_dir / "stderr.txt", "w+") as stderr:
        started = time.perf_counter()
        proc = subprocess.Popen([sys.executable, "-m", "pipeline.report", f"tracking.uri={uri}",
                                 f"experiments=[{EXPERIMENT}]", f"out_dir={out_dir}", f"cache_dir={cache_dir}",
                                 "timings=true"], cwd=ROOT, stdout=stdout, stderr=stderr)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - started
        proc.returncode = os.waitstatus_to_exitcode(status)
        stderr.seek(0)
        errors = stderr.read()
    if proc.returncode != 0:
        raise SystemExit(f"report failed ({proc.returncode}):\n{errors}")
    stages = {m.group(1): float(m.group(2)) for m in re.finditer(r"timing: (.+?) ([0-9.]+) s wall", errors)}
    return {"wall_s": wall, "cpu_s": usage.ru_utime + usage.ru_stime, "maxrss_mib": usage.ru_maxrss / 1024,
            "stages_wall_s": stages}


def measure(uri: str, work: Path, label: str, repeats: int, cache_dir: str) -> dict:
    """Median wall of ``repeats`` reports, with their CPU seconds, peak RSS and the median run's stages."""
    runs = [time_report(uri, work / f"{label}{i}", cache_dir) for i in range(repeats)]
    walls = [r["wall_s"] for r in runs]
    median = sorted(runs, key=lambda r: r["wall_s"])[len(runs) // 2]
    return {"wall_s": [round(w, 3) for w in walls], "median_wall_s": round(statistics.median(walls), 3),
            "cpu_s": [round(r["cpu_s"], 3) for r in runs], "peak_rss_mib": round(max(r["maxrss_mib"] for r in runs), 1),
            "stages_of_median_wall_s": median["stages_wall_s"], "load_average_1min": round(os.getloadavg()[0], 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=1000, help="training runs to generate")
    parser.add_argument("--steps", type=int, default=2000, help="logged optimizer steps per run")
    parser.add_argument("--eval-every", type=int, default=100, help="steps between val/acc points")
    parser.add_argument("--repeats", type=int, default=3, help="timed report runs per cache state (median)")
    parser.add_argument("--store", type=Path, default=None, help="folder for the generated store (default: temp)")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "report_scale.json")
    parser.add_argument("--generate-only", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.generate_only:  # in its own process, so the timed reports are not forked from a 1 GB generator
        db = args.store / "mlflow.db"
        print(json.dumps(generate(f"sqlite:///{db}", db, args.runs, args.steps, args.eval_every)))
        return

    work = Path(tempfile.mkdtemp(prefix="report_scale_"))
    store_dir = (args.store or work / "store").resolve()
    store_dir.mkdir(parents=True, exist_ok=True)
    db = store_dir / "mlflow.db"
    uri = f"sqlite:///{db}"
    load_at_start = round(os.getloadavg()[0], 2)
    try:
        if db.exists():  # a store generated before with --store: time the report on it again
            print(f"reusing {db}", flush=True)
            generated = {"runs": args.runs, "steps": args.steps, "reused_store": True}
        else:
            print(f"generating {args.runs} runs x {args.steps} steps in {db} ...", flush=True)
            done = subprocess.run([sys.executable, __file__, "--generate-only", "--store", str(store_dir),
                                   "--runs", str(args.runs), "--steps", str(args.steps),
                                   "--eval-every", str(args.eval_every)], capture_output=True, text=True)
            if done.returncode != 0:
                raise SystemExit(f"generation failed:\n{done.stderr}")
            generated = json.loads(done.stdout.strip().splitlines()[-1])
            print(f"  {generated['metric_rows']:,} metric rows in {generated['generate_s']} s", flush=True)
        cold = measure(uri, work, "cold", args.repeats, "null")
        print(f"  report, no history cache: {cold['wall_s']} s wall, {cold['cpu_s']} s cpu", flush=True)
        cache = work / "cache"
        time_report(uri, work / "fill", str(cache))  # fills the history cache
        warm = measure(uri, work, "warm", args.repeats, str(cache))
        print(f"  report, warm history cache: {warm['wall_s']} s wall, {warm['cpu_s']} s cpu", flush=True)
        result = {
            **generated, "eval_every": args.eval_every, "repeats": args.repeats,
            "report_cold": cold, "report_warm": warm,
            "report_cold_median_s": cold["median_wall_s"], "report_warm_median_s": warm["median_wall_s"],
            "report_cold_median_cpu_s": round(statistics.median(cold["cpu_s"]), 3),
            "peak_rss_mib": max(cold["peak_rss_mib"], warm["peak_rss_mib"]), "goal_s": GOAL_S,
            "met": cold["median_wall_s"] < GOAL_S,
            "command": f"python benchmarks/report_scale.py --runs {args.runs} --steps {args.steps} "
                       f"--repeats {args.repeats}",
            "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
                        "load_average_1min_at_start": load_at_start},
            "measured": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=1) + "\n")
        print(f"report over {args.runs} runs x {args.steps} steps: median {result['report_cold_median_s']} s "
              f"(no history cache), {result['report_warm_median_s']} s (warm cache); goal < {GOAL_S:g} s; "
              f"peak RSS {result['peak_rss_mib']} MiB -> {args.out}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
