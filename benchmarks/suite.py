"""The benchmark suite behind ``make bench`` (not part of ``make test``): every figure with its target.

Each ratio is taken side by side in one run of this script, alternating the two sides, and reported as the median
of the repeats. The machine is shared and noisy: read medians and ratios, not single times. Results go to
``bench/results/suite.json`` and, as a Markdown table with the machine, versions and commands, to BENCHMARKS.md.

    python benchmarks/suite.py [--quick] [--only tracking,sweep,report,study,packed,lca]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
PY = sys.executable
RESULTS = ROOT / "bench" / "results"


def median(values):
    return statistics.median(values) if values else float("nan")


def cli(args: list[str], cwd: Path, env: dict | None = None, module: str = "pipeline") -> tuple[float, int, str]:
    """Run ``python -m <module> args``; return (wall seconds, exit code, tail of the output)."""
    start = time.perf_counter()
    proc = subprocess.run([PY, "-m", module, *args], cwd=cwd, capture_output=True, text=True,
                          env={**os.environ, **(env or {})})
    return time.perf_counter() - start, proc.returncode, (proc.stdout + proc.stderr)[-2000:]


# -- 1. tracking overhead: a pipeline run against a plain PyTorch loop ------------------------------------------------
def plain_loop(steps: int, seed: int = 0) -> float:
    """Seconds for ``steps`` SGD-momentum steps of LeNet-5 on Fashion-MNIST batches, the policy applied by hand."""
    import torch
    import torch.nn.functional as F

    from pipeline.policies import Triangle2
    from pipeline.training.data import FashionMNIST
    from pipeline.training.models import LeNet5

    torch.manual_seed(seed)
    data = FashionMNIST(batch_size=128, seed=seed)
    data.setup("fit")
    net = LeNet5(in_channels=1, num_classes=10, image_size=28)
    opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    policy = Triangle2(k0=0.01, k1=0.06, l=2000)
    loader = data.train_dataloader()
    start = time.perf_counter()
    t = 0
    while t < steps:
        loader.sampler.set_epoch(t // len(loader))
        for x, y in loader:
            for group in opt.param_groups:
                group["lr"] = policy(t)
            loss = F.cross_entropy(net(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            float(loss.detach())  # the pipeline reads every step's loss too
            t += 1
            if t == steps:
                break
    return time.perf_counter() - start


def pipeline_run(steps: int, store: Path) -> tuple[float, float]:
    """(training seconds as the run recorded them, whole-job seconds) of one in-process pipeline run."""
    from hydra import compose, initialize_config_dir
    from mlflow.tracking import MlflowClient

    from pipeline.training.job import run_job

    overrides = ["+policy=triangle2", f"trainer.max_steps={steps}", "trainer.eval_every_steps=1000000",
                 "trainer.progress=false", "trainer.checkpoint_every_steps=0", f"tracking.uri=sqlite:///{store}"]
    with initialize_config_dir(str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("config", overrides, return_hydra_config=True)
    start = time.perf_counter()
    result = run_job(cfg)
    whole = time.perf_counter() - start
    run = MlflowClient(f"sqlite:///{store}").get_run(result.run_id)
    assert len(MlflowClient(f"sqlite:///{store}").get_metric_history(result.run_id, "lr")) == steps
    return run.data.metrics["summary/train_s"], whole


def bench_tracking(repeats: int, steps: int) -> dict:
    import torch

    torch.set_num_threads(1)
    plain, fit, whole = [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(repeats):
            plain.append(plain_loop(steps))
            f, w = pipeline_run(steps, Path(tmp) / f"m{i}.db")
            fit.append(f)
            whole.append(w)
    return {
        "steps": steps,
        "plain_s": plain, "pipeline_train_s": fit, "pipeline_job_s": whole,
        "plain_ms_per_step": 1000 * median(plain) / steps,
        "ratio_train": median(fit) / median(plain),
        "ratio_job": median(whole) / median(plain),
        "target": "pipeline training time <= 1.10 x plain loop",
        "met": median(fit) / median(plain) <= 1.10,
        "command": f"python benchmarks/suite.py --only tracking (LeNet-5, Fashion-MNIST, batch 128, {steps} steps, "
                   "1 thread, per-step lr and train/loss to SQLite)",
    }


# -- 2. sweep throughput: the pool launcher against Hydra's sequential launcher ---------------------------------------
def bench_sweep(repeats: int) -> dict:
    # Policies that converge on the synthetic data at this LR range (step and cos start at 0.05 and diverge there).
    jobs = ["+policy=fix,exp,inv,triangle2,sin2,poly", "dataset=synthetic", "trainer.max_steps=300",
            "trainer.eval_every_steps=100", "trainer.progress=false", "trainer.checkpoint_every_steps=0"]
    sequential, parallel = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(repeats):
            env = {"MLFLOW_TRACKING_URI": f"sqlite:///{tmp}/s{i}.db"}
            wall, code, out = cli([*jobs, "trainer.num_threads=1", "--multirun"], Path(tmp), env)
            assert code == 0, out
            sequential.append(wall)
            env = {"MLFLOW_TRACKING_URI": f"sqlite:///{tmp}/p{i}.db"}
            wall, code, out = cli([*jobs, "hydra/launcher=pool", "hydra.launcher.n_jobs=2", "--multirun"],
                                  Path(tmp), env)
            assert code == 0, out
            parallel.append(wall)
    ratio = median(sequential) / median(parallel)
    return {
        "sequential_s": sequential, "pool_s": parallel, "speedup": ratio,
        "target": "pool launcher >= 1.6 x sequential on 2 cores", "met": ratio >= 1.6,
        "command": "python -m pipeline " + " ".join(jobs) + " [hydra/launcher=pool hydra.launcher.n_jobs=2] "
                   "--multirun (6 jobs, LeNet-5 on synthetic data, 300 steps each; wall clock incl. imports)",
    }


# -- 3. report scale and memory (benchmarks/report_scale.py) ----------------------------------------------------------
def bench_report(quick: bool) -> dict:
    out = RESULTS / "report_scale.json"
    args = [PY, str(ROOT / "benchmarks" / "report_scale.py"), "--out", str(out)]
    if quick:
        args += ["--runs", "200", "--steps", "500", "--repeats", "1"]
    subprocess.run(args, check=True, cwd=ROOT)
    return json.loads(out.read_text())


# -- 4. end-to-end study: the 13-policy LeNet Fashion-MNIST preset (1 seed, 2 epochs) plus its report -----------------
def bench_study(quick: bool) -> dict:
    args = ["+experiment=lrbench_fashion_lenet", "seed=0", "trainer.checkpoint_every_steps=0", "multirun"]
    if quick:
        args += ["trainer.max_epochs=1", "dataset.train_subset=10000"]
    with tempfile.TemporaryDirectory() as tmp:
        env = {"MLFLOW_TRACKING_URI": f"sqlite:///{tmp}/study.db"}
        train_s, code, out = cli(args, Path(tmp), env)
        report_s, rcode, rout = cli([f"tracking.uri=sqlite:///{tmp}/study.db", f"out_dir={tmp}/report"],
                                    Path(tmp), module="pipeline.report")
    total = train_s + report_s
    return {
        "sweep_s": train_s, "sweep_exit": code, "report_s": report_s, "report_exit": rcode, "total_s": total,
        "target": "13 policies x 2 epochs + report < 300 s", "met": total < 300 and rcode == 0,
        "command": "python -m pipeline " + " ".join(args) + " && python -m pipeline.report",
        "tail": (out + rout)[-600:],
    }


# -- 5. peak memory of one LeNet run ---------------------------------------------------------------------------------
def bench_memory() -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        env = {"MLFLOW_TRACKING_URI": f"sqlite:///{tmp}/mem.db"}
        before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
        wall, code, out = cli(["+policy=triangle2", "trainer.max_steps=200", "trainer.progress=false"], Path(tmp), env)
        peak_mib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return {"lenet_run_peak_rss_mib": peak_mib, "note": "max RSS of any child so far" if before else "",
            "command": "python -m pipeline +policy=triangle2 trainer.max_steps=200 (Fashion-MNIST in memory)"}


def machine() -> dict:
    import lightning
    import mlflow
    import torch

    return {
        "cpu_count": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
        "torch": torch.__version__, "lightning": lightning.__version__, "mlflow": mlflow.__version__,
        "load_avg_start": os.getloadavg(), "date": time.strftime("%Y-%m-%d %H:%M:%S"),
    }


def markdown(results: dict) -> str:
    m = results["machine"]
    rows = ["| benchmark | figure | target | met | command |", "|---|---|---|---|---|"]

    def row(name, figure, item):
        met = {True: "yes", False: "**no**"}.get(item.get("met"), "n/a")
        rows.append(f"| {name} | {figure} | {item.get('target', '')} | {met} | `{item.get('command', '')}` |")

    if "tracking" in results:
        t = results["tracking"]
        row("tracking overhead", f"{t['ratio_train']:.2f}x training time ({t['ratio_job']:.2f}x whole job incl. "
            f"MLflow run set-up); plain loop {t['plain_ms_per_step']:.1f} ms/step", t)
    if "sweep" in results:
        s = results["sweep"]
        row("sweep throughput", f"{s['speedup']:.2f}x (sequential {median(s['sequential_s']):.0f} s, pool "
            f"{median(s['pool_s']):.0f} s)", s)
    if "report" in results:
        r = results["report"]
        figure = ", ".join(f"{k}: {v}" for k, v in r.items() if k.endswith(("_s", "_mib", "runs", "steps"))
                           and not isinstance(v, (list, dict)))
        row("report scale", figure, {"target": "< 10 s for 1,000 runs x 2,000 steps", "met": r.get("met"),
                                     "command": r.get("command", "python benchmarks/report_scale.py")})
    if "study" in results:
        s = results["study"]
        row("end-to-end study", f"{s['total_s']:.0f} s (sweep {s['sweep_s']:.0f} s, report {s['report_s']:.0f} s)", s)
    if "memory" in results:
        row("memory", f"LeNet run peak RSS {results['memory']['lenet_run_peak_rss_mib']:.0f} MiB", results["memory"])
    if "lca" in results:
        lca = results["lca"].get("lca", {})
        figure = "; ".join(f"subset {k}: {v['overhead_ratio']:.1f}x with LCA on every step (est. "
                           f"{v['estimated_ratio_every_k']['10']:.1f}x every 10th)" for k, v in lca.items())
        row("LCA overhead", figure, {"target": "report the ratio", "command": "python benchmarks/lca_overhead.py"})
    if "packed" in results:
        packed = results["packed"]
        row("packed policies", json.dumps(packed.get("summary", {k: v for k, v in packed.items() if k != "machine"}),
                                          default=str)[:300], {"target": packed.get("target", ""),
                                                               "met": packed.get("met"),
                                                               "command": "python benchmarks/packed.py"})
    return (
        "# Benchmarks\n\nWritten by `make bench` (`python benchmarks/suite.py`). Machine: "
        f"{m['cpu_count']} cores, {m['platform']}, Python {m['python']}, torch {m['torch']}, lightning "
        f"{m['lightning']}, mlflow {m['mlflow']}; load average at start {m['load_avg_start']}; {m['date']}.\n"
        "Medians of the repeats; each ratio measured side by side in the same run. The machine is shared: other "
        "work inflates wall clocks, ratios are steadier.\n\n" + "\n".join(rows) + "\n"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default="tracking,sweep,report,study,memory", help="comma-separated benchmarks")
    parser.add_argument("--quick", action="store_true", help="smaller sizes (a smoke run, not for the record)")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    only = set(args.only.split(","))
    RESULTS.mkdir(parents=True, exist_ok=True)
    results: dict = {"machine": machine()}
    steps = 100 if args.quick else 400
    plan = [("tracking", lambda: bench_tracking(args.repeats, steps)), ("sweep", lambda: bench_sweep(args.repeats)),
            ("report", lambda: bench_report(args.quick)), ("study", lambda: bench_study(args.quick)),
            ("memory", bench_memory)]
    for name, run in plan:
        if name in only:
            print(f"== {name}", flush=True)
            results[name] = run()
            print(json.dumps(results[name], indent=1, default=str)[:1500], flush=True)
    for name, path in (("packed", RESULTS / "packed.json"), ("lca", RESULTS / "lca_overhead.json")):
        if path.exists():  # written by benchmarks/packed.py and benchmarks/lca_overhead.py (make bench runs them)
            results[name] = json.loads(path.read_text())
    (RESULTS / "suite.json").write_text(json.dumps(results, indent=1, default=str))
    if not args.quick:
        (ROOT / "BENCHMARKS.md").write_text(markdown(results))
    print(markdown(results))


if __name__ == "__main__":
    main()
