"""The benchmark suite behind ``make bench`` (not part of ``make test``): every figure with its target.

Each ratio is taken side by side in one run of this script, alternating the two sides, and reported as the median
of the per-pair ratios. The machine is shared and noisy: read medians and ratios, not single times. Results go to
``bench/results/suite.json`` and, as a Markdown table with the machine, versions and commands, to BENCHMARKS.md.

    python benchmarks/suite.py [--quick] [--only tracking,sweep,sweep_tiny,report,study,memory,data]

``benchmarks/packed.py`` and ``benchmarks/lca_overhead.py`` write their own results files, which the table includes.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
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


def paired_ratio(numerators, denominators) -> float:
    """Median of the per-repeat ratios: each repeat ran both sides back to back, so a slow spell of the shared
    machine hits a pair, not one side of the median."""
    return median([a / b for a, b in zip(numerators, denominators)])


def cli(args: list[str], cwd: Path, env: dict | None = None, module: str = "pipeline") -> tuple[float, int, str]:
    """Run ``python -m <module> args``; return (wall seconds, exit code, tail of the output)."""
    start = time.perf_counter()
    proc = subprocess.run([PY, "-m", module, *args], cwd=cwd, capture_output=True, text=True,
                          env={**os.environ, **(env or {})})
    return time.perf_counter() - start, proc.returncode, (proc.stdout + proc.stderr)[-2000:]


# -- 1. tracking overhead: a pipeline run against a plain PyTorch loop ------------------------------------------------
def plain_loop(steps: int, seed: int = 0, channels_last: bool = True) -> float:
    """Seconds for ``steps`` SGD-momentum steps of LeNet-5 on Fashion-MNIST batches, the policy applied by hand.

    ``channels_last`` as the pipeline lays out conv nets (``trainer.memory_format=auto``): the comparison is against
    the fastest plain loop, not a slower one.
    """
    import torch
    import torch.nn.functional as F

    from pipeline.policies import Triangle2
    from pipeline.training.data.idx import FashionMNIST
    from pipeline.training.models import LeNet5

    torch.manual_seed(seed)
    data = FashionMNIST(batch_size=128, seed=seed)
    data.setup("fit")
    net = LeNet5(in_channels=1, num_classes=10, image_size=28)
    layout = torch.channels_last if channels_last else torch.contiguous_format
    net = net.to(memory_format=layout)
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
            loss = F.cross_entropy(net(x.contiguous(memory_format=layout)), y)
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
    from pipeline.tracking.runs import summaries

    return summaries(run.data.metrics, run.data.params)["summary/train_s"], whole


def bench_tracking(pairs: int, steps: int) -> dict:
    """Pipeline runs each sandwiched between two plain-loop runs: P X P X P ... P.

    Each pipeline run is compared with the mean of its two neighbours, which cancels a slow spell that spans the
    triple and a drift across it; consecutive plain runs (the same work twice) give the noise floor of the figure.
    """
    import torch

    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        plain_loop(20)  # warm-up: lazy imports, first calls, the store's schema; not measured
        pipeline_run(20, Path(tmp) / "warm.db")
        plain, contiguous, fit, whole = [plain_loop(steps)], [], [], []
        for i in range(pairs):
            if i < 3:  # the layout's speed-up, next to the plain run it is compared with
                contiguous.append(plain_loop(steps, channels_last=False))
            f, w = pipeline_run(steps, Path(tmp) / f"m{i}.db")
            fit.append(f)
            whole.append(w)
            plain.append(plain_loop(steps))
    neighbours = [(a + b) / 2 for a, b in zip(plain, plain[1:])]
    ratio = paired_ratio(fit, neighbours)
    return {
        "steps": steps, "pairs": pairs,
        "plain_s": plain, "plain_contiguous_s": contiguous, "pipeline_train_s": fit, "pipeline_job_s": whole,
        "plain_ms_per_step": 1000 * median(plain) / steps,
        "plain_contiguous_ms_per_step": 1000 * median(contiguous) / steps,
        "channels_last_speedup": paired_ratio(contiguous, plain),
        "pair_ratios": [f / n for f, n in zip(fit, neighbours)],
        "ratio_train": ratio,
        "ratio_job": paired_ratio(whole, neighbours),
        # The same plain loop run twice in a row: how far apart two identical runs land on this machine.
        "noise_plain_vs_plain": median([abs(b / a - 1) for a, b in zip(plain, plain[1:])]),
        "target": "pipeline training time <= 1.10 x plain loop",
        "met": ratio <= 1.10,
        "command": f"python benchmarks/suite.py --only tracking (LeNet-5, Fashion-MNIST, batch 128, {steps} steps, "
                   "1 thread, per-step lr and train/loss to SQLite)",
    }


# -- 2. sweep throughput: the pool launcher against Hydra's sequential launcher ---------------------------------------
SWEEPS = {
    # The jobs a study runs: LeNet-5 on Fashion-MNIST at batch 128. The target applies here.
    "study jobs": ["+policy=fix,exp,inv,triangle2,sin2,poly", "trainer.max_steps=300", "trainer.eval_every_steps=100",
                   "trainer.progress=false", "trainer.checkpoint_every_steps=0"],
    # Tiny jobs (synthetic data, batch 64): per-job fixed costs weigh most here. Step and cos start at 0.05, where
    # LeNet diverges on the synthetic data, so the six are policies that converge.
    "tiny jobs": ["+policy=fix,exp,inv,triangle2,sin2,poly", "dataset=synthetic", "trainer.max_steps=300",
                  "trainer.eval_every_steps=100", "trainer.progress=false", "trainer.checkpoint_every_steps=0"],
}


def bench_sweep(repeats: int, workload: str) -> dict:
    jobs = SWEEPS[workload]
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
    ratio = paired_ratio(sequential, parallel)
    study = workload == "study jobs"
    return {
        "workload": workload, "sequential_s": sequential, "pool_s": parallel, "speedup": ratio,
        "ratio_of_medians": median(sequential) / median(parallel),
        "target": "pool launcher >= 1.6 x sequential on 2 cores" if study else "",
        "met": ratio >= 1.6 if study else None,
        "command": "python -m pipeline " + " ".join(jobs) + " [hydra/launcher=pool hydra.launcher.n_jobs=2] "
                   "--multirun (6 jobs, 300 steps each; wall clock incl. imports; sequential with 1 torch thread, "
                   "the faster setting on 2 cores)",
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
    """Peak RSS of one LeNet run in a process of its own: a fresh parent process whose only child is the run, so
    RUSAGE_CHILDREN is that run's peak and nothing else's."""
    args = ["+policy=triangle2", "trainer.max_steps=200", "trainer.progress=false"]
    probe = ("import resource, subprocess, sys; subprocess.run(sys.argv[1:], check=True, capture_output=True); "
             "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)")
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp}/mem.db"}
        out = subprocess.run([PY, "-c", probe, PY, "-m", "pipeline", *args], cwd=tmp, env=env, check=True,
                             capture_output=True, text=True).stdout
    return {"lenet_run_peak_rss_mib": int(out.split()[-1]) / 1024,
            "command": "python -m pipeline " + " ".join(args) + " (Fashion-MNIST in memory; peak RSS of that process)"}


# -- 6. data: making the synthetic set, fetching a training batch -----------------------------------------------------
def bench_data(repeats: int) -> dict:
    """The speed of the in-memory data; tests/test_data.py checks only the shape of the work (the same torch calls
    for any number of samples and any batch size), which a shared machine cannot make flaky."""
    import torch

    from pipeline.training.data.idx import FashionMNIST
    from pipeline.training.data.synthetic import Synthetic

    torch.set_num_threads(1)
    make = []
    for _ in range(repeats + 1):  # the first is a warm-up: lazy initialisation, first calls
        start = time.perf_counter()
        Synthetic(n_train=600, n_test=100, val_size=100, image_size=32, channels=3, num_classes=4).setup()
        make.append(time.perf_counter() - start)
    data = FashionMNIST(batch_size=128)
    data.setup("fit")
    loader, fetch = data.train_dataloader(), []
    for epoch in range(repeats):
        loader.sampler.set_epoch(epoch)
        start = time.perf_counter()
        batches = sum(1 for _ in loader)
        fetch.append((time.perf_counter() - start) / batches)
    make_s = median(make[1:])
    return {
        "synthetic_make_s": make[1:], "synthetic_make_median_s": make_s,
        "batch_fetch_ms": [1000 * f for f in fetch], "batch_fetch_median_ms": 1000 * median(fetch),
        "target": "synthetic data (600 + 100 images, 3x32x32) made in < 1 s", "met": make_s < 1.0,
        "command": f"python benchmarks/suite.py --only data (median of {repeats}; batch: Fashion-MNIST, 128 samples, "
                   "a whole training epoch, 1 thread)",
    }


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
    rows = ["| benchmark | figure | target | met | measured | command |", "|---|---|---|---|---|---|"]

    def row(name, figure, item, measured=None):
        met = {True: "yes", False: "**no**"}.get(item.get("met"), "n/a")
        when = measured or item.get("measured", "")
        rows.append(f"| {name} | {figure} | {item.get('target', '')} | {met} | {when} | `{item.get('command', '')}` |")

    if "tracking" in results:
        t = results["tracking"]
        layout = (f"; channels-last {t['channels_last_speedup']:.2f}x faster than contiguous "
                  f"({t['plain_contiguous_ms_per_step']:.1f} ms/step)" if "channels_last_speedup" in t else "")
        noise = (f"; {t['pairs']} runs, each against the mean of the plain runs before and after it (pair ratios "
                 f"{', '.join(f'{r:.2f}' for r in t['pair_ratios'])}); two plain runs in a row differ by a median "
                 f"{100 * t['noise_plain_vs_plain']:.0f}%" if "pair_ratios" in t else "")
        row("tracking overhead", f"{t['ratio_train']:.2f}x training time ({t['ratio_job']:.2f}x whole job incl. "
            f"MLflow run set-up){noise}; plain loop {t['plain_ms_per_step']:.1f} ms/step{layout}", t)
    for key in ("sweep", "sweep_tiny"):
        if key in results:
            s = results[key]
            row(f"sweep throughput, {s.get('workload', 'tiny jobs')}", f"{s['speedup']:.2f}x, median of "
                f"{len(s['pool_s'])} pairs (sequential {median(s['sequential_s']):.0f} s, pool "
                f"{median(s['pool_s']):.0f} s)", s)
    if "report" in results:
        r = results["report"]
        figure = ", ".join(f"{k}: {v}" for k, v in r.items() if k.endswith(("_s", "_mib", "runs", "steps"))
                           and not isinstance(v, (list, dict)))
        row("report scale", figure, {"target": "< 10 s for 1,000 runs x 2,000 steps", "met": r.get("met"),
                                     "command": r.get("command", "python benchmarks/report_scale.py")},
            r.get("measured"))
    if "study" in results:
        s = results["study"]
        row("end-to-end study", f"{s['total_s']:.0f} s (sweep {s['sweep_s']:.0f} s, report {s['report_s']:.0f} s)", s)
    if "memory" in results:
        report_rss = results.get("report", {}).get("peak_rss_mib")
        extra = f"; 1,000-run report peak RSS {report_rss:.0f} MiB (report scale row)" if report_rss else ""
        row("memory", f"LeNet run peak RSS {results['memory']['lenet_run_peak_rss_mib']:.0f} MiB{extra}",
            results["memory"])
    if "data" in results:
        d = results["data"]
        row("data", f"synthetic set made in {d['synthetic_make_median_s']:.2f} s; a training batch fetched in "
            f"{d['batch_fetch_median_ms']:.2f} ms", d)
    if "lca" in results:
        lca = results["lca"].get("lca", {})
        figure = "; ".join(f"subset {k}: {v['overhead_ratio']:.1f}x with LCA on every step (est. "
                           f"{v['estimated_ratio_every_k']['10']:.1f}x every 10th)" for k, v in lca.items())
        row("LCA overhead", figure, {"target": "report the ratio", "command": "python benchmarks/lca_overhead.py"},
            results["lca"].get("measured"))
    if "packed" in results:
        packed = results["packed"]["results"]
        parts = []
        for device in ("cpu", "cuda"):
            if "skipped" in packed.get(device, {}):
                parts.append(f"{device}: not run ({packed[device]['skipped']})")
            for k, item in packed.get(device, {}).items():
                if isinstance(item, dict) and "speedup_packed_over_sequential" in item:
                    parts.append(f"{device} K={k}: {item['speedup_packed_over_sequential']:.2f}x "
                                 f"({item['samples_per_s']['packed']:.0f} vs {item['samples_per_s']['sequential']:.0f}"
                                 " samples/s)")
        cuda16 = packed.get("cuda", {}).get("16", {}).get("speedup_packed_over_sequential")
        row("packed policies (K LeNets, packed vs one after another)", "; ".join(parts),
            {"target": ">= 5x samples/s for K=16 on a GPU", "met": None if cuda16 is None else cuda16 >= 5,
             "command": "python benchmarks/packed.py"}, results["packed"].get("measured"))
    return (
        "# Benchmarks\n\nWritten by `make bench` (`python benchmarks/suite.py`). Machine: "
        f"{m['cpu_count']} cores, {m['platform']}, Python {m['python']}, torch {m['torch']}, lightning "
        f"{m['lightning']}, mlflow {m['mlflow']}; load average at start {m['load_avg_start']}; {m['date']}.\n"
        "Times are medians of the repeats; each ratio is the median of per-pair ratios, both sides run back to back. "
        "The machine is shared: other work inflates wall clocks, ratios are steadier.\n\n" + "\n".join(rows) + "\n"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default="tracking,sweep,sweep_tiny,report,study,memory,data",
                        help="comma-separated benchmarks; the others keep their last results")
    parser.add_argument("--quick", action="store_true", help="smaller sizes (a smoke run, not for the record)")
    parser.add_argument("--tracking-pairs", type=int, default=9, help="pipeline runs, each between two plain runs")
    parser.add_argument("--sweep-repeats", type=int, default=5, help="sweep pairs (the noisiest figure)")
    args = parser.parse_args()
    only = set(args.only.split(","))
    RESULTS.mkdir(parents=True, exist_ok=True)
    # Benchmarks not run this time keep their last results (each row says when it was measured).
    previous = RESULTS / "suite.json"
    results: dict = json.loads(previous.read_text()) if previous.exists() and not args.quick else {}
    results["machine"] = machine()
    steps = 100 if args.quick else 300
    plan = [("tracking", lambda: bench_tracking(args.tracking_pairs, steps)),
            ("sweep", lambda: bench_sweep(args.sweep_repeats, "study jobs")),
            ("sweep_tiny", lambda: bench_sweep(args.sweep_repeats, "tiny jobs")),
            ("report", lambda: bench_report(args.quick)), ("study", lambda: bench_study(args.quick)),
            ("memory", bench_memory), ("data", lambda: bench_data(3 if args.quick else 5))]
    for name, run in plan:
        if name in only:
            print(f"== {name}", flush=True)
            started = time.strftime("%Y-%m-%d %H:%M")
            results[name] = {**run(), "measured": started, "load_avg_at_start": os.getloadavg()[0]}
            print(json.dumps(results[name], indent=1, default=str)[:1500], flush=True)
    for name, path in (("packed", RESULTS / "packed.json"), ("lca", RESULTS / "lca_overhead.json")):
        if path.exists():  # written by benchmarks/packed.py and benchmarks/lca_overhead.py (make bench runs them)
            results[name] = {**json.loads(path.read_text()),
                             "measured": time.strftime("%Y-%m-%d %H:%M", time.localtime(path.stat().st_mtime))}
    # A quick run is a smoke test: its figures go to their own file and never replace the record.
    out = RESULTS / ("suite.quick.json" if args.quick else "suite.json")
    out.write_text(json.dumps(results, indent=1, default=str))
    if not args.quick:
        (ROOT / "BENCHMARKS.md").write_text(markdown(results))
    print(markdown(results))


if __name__ == "__main__":
    main()
