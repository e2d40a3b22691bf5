"""LCA overhead benchmark: LeNet-5 on Fashion-MNIST, a plain run vs the same run with ``+analysis=lca`` (not a test).

Each configuration is a real job (``run_job``: Hydra config, Lightning Trainer, a throwaway SQLite MLflow store) of the
same number of optimizer steps; LCA measures every step (``every_k_steps=1``: 2 gradient evaluations of the
evaluation subset per step, the end gradient reused) for each subset size. Reported per configuration, as the median
over repeats (runs interleaved, so slow spells of a shared CPU hit every configuration alike):

- ``train_s``: the job's ``summary/train_s`` (fit time without validation; LCA time is inside it);
- ``lca_s_per_step``: ``summary/lca_s / summary/lca_steps``, the seconds LCA adds per measured step;
- ``overhead_ratio``: ``train_s / (train_s − lca_s)`` within each LCA run: training and LCA steps alternate, so a
  slow spell of the shared CPU slows both alike (paired; the headline figure);
- ``overhead_ratio_vs_plain``: median ``train_s`` with LCA / median ``train_s`` of the plain runs (unpaired: on a
  shared CPU the plain runs alone varied 2x between repeats).

``estimated_ratio_every_k`` extrapolates the paired ratio to measuring every k-th step only (the shipped default is
k = 10): a lone measured step costs 3 evaluations instead of 2, so ``1 + 1.5 · (ratio − 1) / k``.

    python benchmarks/lca_overhead.py [--steps 30] [--subsets 500 2000] [--repeats 3] [--out FILE.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run as a script from any directory

EXPERIMENT = "lca-bench"


def job_overrides(steps: int, subset: int | None) -> list[str]:
    base = ["model=lenet5", "dataset=fashion_mnist", "+policy=triangle2", f"trainer.max_steps={steps}",
            f"trainer.eval_every_steps={steps}", "trainer.progress=false", "dataset.test_subset=1000",
            f"tracking.experiment={EXPERIMENT}"]
    if subset is None:
        return base
    return [*base, "+analysis=lca", "analysis.every_k_steps=1", f"analysis.subset_size={subset}"]


def run_once(steps: int, subset: int | None) -> dict[str, float]:
    from hydra import compose, initialize_config_dir
    from mlflow.tracking import MlflowClient

    from pipeline.training.job import run_job

    with initialize_config_dir(str(ROOT / "conf"), version_base="1.3"):
        cfg = compose(config_name="config", overrides=job_overrides(steps, subset), return_hydra_config=True)
    result = run_job(cfg)
    if result.status != "FINISHED":
        raise RuntimeError(f"benchmark run {result.run_id} ended {result.status}: {result.failure}")
    from pipeline.tracking.runs import summaries

    run = MlflowClient(os.environ["MLFLOW_TRACKING_URI"]).get_run(result.run_id)
    metrics = summaries(run.data.metrics, run.data.params)  # summary.* params, and the LCA callback's metrics
    out = {"train_s": metrics["summary/train_s"]}
    if subset is not None:
        out.update(lca_s=metrics["summary/lca_s"], lca_steps=metrics["summary/lca_steps"],
                   lca_s_per_step=metrics["summary/lca_s"] / metrics["summary/lca_steps"],
                   paired_ratio=metrics["summary/train_s"] / (metrics["summary/train_s"] - metrics["summary/lca_s"]),
                   helping_frac=metrics["summary/lca_helping_frac"],
                   conservation_error_max=metrics["summary/lca_conservation_error_max"])
    return out


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=30, help="optimizer steps per run")
    parser.add_argument("--subsets", type=int, nargs="+", default=[500, 2000], help="LCA evaluation subset sizes")
    parser.add_argument("--repeats", type=int, default=3, help="runs per configuration; the median is reported")
    parser.add_argument("--out", default="bench/results/lca_overhead.json", help="JSON results file")
    args = parser.parse_args(argv)

    import torch

    configs: list[int | None] = [None, *args.subsets]
    raw: dict[str, list[dict[str, float]]] = {("plain" if s is None else f"lca_{s}"): [] for s in configs}
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{tmp}/mlflow.db"
        for repeat in range(args.repeats):
            for subset in configs:
                name = "plain" if subset is None else f"lca_{subset}"
                raw[name].append(run_once(args.steps, subset))
                print(f"repeat {repeat + 1}/{args.repeats} {name}: {raw[name][-1]}", flush=True)

    plain_s = statistics.median(r["train_s"] for r in raw["plain"])
    results: dict = {
        "benchmark": "lca_overhead",
        "model": "lenet5", "dataset": "fashion_mnist", "policy": "triangle2",
        "steps": args.steps, "repeats": args.repeats, "every_k_steps": 1,
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                    "torch": torch.__version__, "note": "shared, noisy CPU: figures are medians over interleaved runs"},
        "plain": {"train_s": plain_s, "train_s_per_step": plain_s / args.steps,
                  "train_s_runs": [r["train_s"] for r in raw["plain"]]},
        "lca": {},
    }
    for subset in args.subsets:
        runs = raw[f"lca_{subset}"]
        train_s = statistics.median(r["train_s"] for r in runs)
        per_step = statistics.median(r["lca_s_per_step"] for r in runs)
        ratio = statistics.median(r["paired_ratio"] for r in runs)
        results["lca"][str(subset)] = {
            "subset_size": subset,
            "train_s": train_s,
            "lca_s_per_step": per_step,
            "lca_step_in_train_steps": ratio - 1,
            "overhead_ratio": ratio,
            "overhead_ratio_runs": [r["paired_ratio"] for r in runs],
            "overhead_ratio_vs_plain": train_s / plain_s,
            "estimated_ratio_every_k": {str(k): 1 + 1.5 * (ratio - 1) / k for k in (10, 100)},
            "helping_frac": statistics.median(r["helping_frac"] for r in runs),
            "conservation_error_max": max(r["conservation_error_max"] for r in runs),
            "train_s_runs": [r["train_s"] for r in runs],
        }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"plain: {plain_s:.2f} s for {args.steps} steps ({plain_s / args.steps * 1000:.0f} ms/step)")
    for subset, row in results["lca"].items():
        print(f"LCA subset {subset}: {row['lca_s_per_step']:.3f} s per measured step"
              f" ({row['lca_step_in_train_steps']:.1f} training steps), overhead x{row['overhead_ratio']:.1f}"
              f" every step (x{row['overhead_ratio_vs_plain']:.1f} vs the plain runs),"
              f" ~x{row['estimated_ratio_every_k']['10']:.2f} every 10th")
    print(f"wrote {out}")
    return results


if __name__ == "__main__":
    main()
