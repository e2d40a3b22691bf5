"""Pruned study vs full grid on the ``lrbench_fashion_lenet`` preset (not a test): cost, recommendation, fairness.

Three sides run one after another in one invocation, each a sweep of the preset (LeNet-5, Fashion-MNIST, SGD
momentum, the pool launcher) in its own fresh store:

- ``grid``: every policy x seed trained to the full budget (``python -m pipeline +experiment=lrbench_fashion_lenet
  multirun``);
- ``cooldown``: the same sweep as a pruned study, ``hydra/sweeper=halving`` scored by the cooldown (the default);
- ``raw``: the same pruned study scored by the raw mid-run value (what Optuna's, Ray's and W&B's pruning use).

Reported: optimizer steps (training steps; the cooldown branches' steps counted on top) and wall time of each side;
each side's recommendation by LRBench's rule (a candidate is good when every seed finishes and reaches the target;
the good one with the fewest mean steps to the target wins) and whether a pruned study's recommendation is the
grid's winner or within its seed noise (mean steps to the target differing by at most the larger seed standard
deviation of the two, both measured in the grid); and how many of the grid's top-3 policies each pruned study
pruned, and how many of those were pruned while a policy outside the top 3 was kept at the same rung ("wrongly").
With 13 candidates and eta 3 only one candidate reaches the full budget, so two of the top 3 are always pruned at
the last rung; the wrong prunes are the fairness figure. Targets (issue 22): at most 1/3 of the grid's optimizer
steps, the same recommendation within seed noise, no top-3 policy wrongly pruned by the cooldown score.

    python benchmarks/pruning.py                                   # the real preset: 13 policies x 3 seeds, 2 epochs
    python benchmarks/pruning.py --policies step,inv,poly,triangle2,sin2,cos --seeds 2 --steps 300   # reduced

Results go to ``bench/results/pruning.json`` and to a section of BENCHMARKS.md (between its markers).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PRESET = "lrbench_fashion_lenet"
POLICIES = ("fix", "step", "nstep", "exp", "inv", "poly", "triangle", "triangle2", "triangle_exp", "sin", "sin2",
            "sin_exp", "cos")
BEGIN, END = "<!-- pruning: written by benchmarks/pruning.py -->", "<!-- /pruning -->"


def sweep_args(args) -> list[str]:
    out = [f"+experiment={PRESET}", f"+policy={','.join(args.policies)}",
           f"seed={','.join(str(s) for s in range(args.seeds))}", f"trainer.targets=[{args.target}]"]
    if args.steps:
        out.append(f"trainer.max_steps={args.steps}")
    return out


def side_args(side: str, args) -> list[str]:
    if side == "grid":
        return []
    return ["hydra/sweeper=halving", f"hydra.sweeper.score={side}", f"hydra.sweeper.eta={args.eta}",
            f"hydra.sweeper.min_rung_frac={args.min_rung_frac}", f"hydra.sweeper.cooldown_frac={args.cooldown_frac}"]


def run_side(side: str, args, workdir: Path) -> dict:
    """Run one side as a user would, in its own store; returns its wall time, exit code and command."""
    folder = workdir / side
    folder.mkdir(parents=True)
    uri = f"sqlite:///{folder}/mlruns/mlflow.db"
    command = ["-m", "pipeline", *sweep_args(args), *side_args(side, args), f"tracking.experiment=bench-{side}",
               "multirun"]
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri, "PYTHONUNBUFFERED": "1"}
    print(f"== {side}: python {' '.join(command)}", flush=True)
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, *command], cwd=folder, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    (folder / "output.txt").write_text(proc.stdout + proc.stderr)
    print("\n".join(line for line in proc.stdout.splitlines() if line.startswith("[halving]")), flush=True)
    print(f"   {side}: {wall:.0f} s, exit code {proc.returncode}", flush=True)
    return {"wall_s": wall, "returncode": proc.returncode, "uri": uri, "command": "python " + " ".join(command)}


def collect(uri: str, experiment: str, target: float) -> dict[str, list[dict]]:
    """Per policy, its runs: status, pruned rung, optimizer steps trained, cooldown steps, steps to the target."""
    from mlflow.tracking import MlflowClient

    from pipeline.tracking.runs import summaries

    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(experiment)
    out: dict[str, list[dict]] = {}
    for run in client.search_runs([exp.experiment_id], max_results=5000):
        tags = run.data.tags
        metrics = summaries(run.data.metrics, run.data.params)  # summary.* params (summary/* metrics before)
        if tags.get("kind") != "train":
            continue
        run_id = run.info.run_id
        out.setdefault(tags["policy"], []).append({
            "seed": tags.get("seed"), "status": run.info.status, "failure": tags.get("failure"),
            "pruned_rung": int(tags["pruned.rung"]) if "pruned.rung" in tags else None,
            "steps": len(client.get_metric_history(run_id, "lr")),
            "cooldown_steps": int(sum(m.value for m in client.get_metric_history(run_id, "rung/cooldown_steps"))),
            "steps_to_target": metrics.get(f"summary/steps_to_acc_{target:g}"),
            "final_acc": metrics.get("summary/final_val_acc"),
        })
    return out


def ranking(policies: dict[str, list[dict]], seeds: int) -> list[dict]:
    """LRBench's rule: good candidates (every seed finished and reached the target) by mean steps to the target,
    then final accuracy; then the others by seeds finished, seeds reaching, final accuracy."""
    rows = []
    for name, runs in policies.items():
        finished = [r for r in runs if r["status"] == "FINISHED"]
        reached = [r["steps_to_target"] for r in finished if r["steps_to_target"] is not None]
        finals = [r["final_acc"] for r in finished if r["final_acc"] is not None]
        rows.append({"policy": name, "good": len(reached) == seeds == len(runs),
                     "steps_mean": statistics.fmean(reached) if reached else None,
                     "steps_std": statistics.stdev(reached) if len(reached) > 1 else 0.0,
                     "n_finished": len(finished), "n_reached": len(reached),
                     "final_acc_mean": statistics.fmean(finals) if finals else None})
    return sorted(rows, key=lambda r: (not r["good"], r["steps_mean"] if r["good"] else 0, -r["n_finished"],
                                       -r["n_reached"], -(r["final_acc_mean"] or 0), r["policy"]))


def pruning_figures(study: dict[str, list[dict]], top3: list[str]) -> dict:
    """Which of the grid's top 3 a study pruned, at which rung, and which of those while a non-top-3 was kept."""
    rung_of = {name: min((r["pruned_rung"] for r in runs if r["pruned_rung"] is not None), default=None)
               for name, runs in study.items()}
    pruned = {name: rung for name, rung in rung_of.items() if rung is not None}
    wrong = [name for name in top3 if name in pruned and any(
        other not in top3 and (rung_of[other] is None or rung_of[other] > pruned[name]) for other in study)]
    return {"pruned_top3": {name: pruned[name] for name in top3 if name in pruned}, "wrongly_pruned_top3": wrong,
            "pruned": pruned}


def figures(args, sides: dict) -> dict:
    grid = collect(sides["grid"]["uri"], "bench-grid", args.target)
    grid_rank = ranking(grid, args.seeds)
    by_name = {r["policy"]: r for r in grid_rank}
    winner = grid_rank[0] if grid_rank and grid_rank[0]["good"] else None
    top3 = [r["policy"] for r in grid_rank[:3]]
    grid_steps = sum(r["steps"] for runs in grid.values() for r in runs)
    result = {"grid": {**sides["grid"], "steps": grid_steps, "ranking": grid_rank, "winner": winner and
                       winner["policy"], "top3": top3}}
    for side in ("cooldown", "raw"):
        study = collect(sides[side]["uri"], f"bench-{side}", args.target)
        study_rank = ranking(study, args.seeds)
        rec = study_rank[0]["policy"] if study_rank and study_rank[0]["good"] else None
        train = sum(r["steps"] for runs in study.values() for r in runs)
        cool = sum(r["cooldown_steps"] for runs in study.values() for r in runs)
        same = None
        if winner and rec:
            theirs = by_name[rec]
            noise = max(winner["steps_std"], theirs["steps_std"])
            same = rec == winner["policy"] or (theirs["good"] and abs(theirs["steps_mean"] - winner["steps_mean"])
                                               <= noise)
        result[side] = {**sides[side], "train_steps": train, "cooldown_steps": cool,
                        "steps_frac_of_grid": (train + cool) / grid_steps, "recommendation": rec,
                        "recommendation_within_seed_noise": same, **pruning_figures(study, top3)}
    cooldown = result["cooldown"]
    result["met"] = {"steps": cooldown["steps_frac_of_grid"] <= 1 / 3,
                     "recommendation": cooldown["recommendation_within_seed_noise"],
                     "top3": not cooldown["wrongly_pruned_top3"]}
    return result


def markdown(result: dict, args) -> str:
    g, c, r = result["grid"], result["cooldown"], result["raw"]
    reduced = args.policies != list(POLICIES) or args.seeds != 3 or args.steps
    size = (f"{len(args.policies)} policies ({', '.join(args.policies)}) x {args.seeds} seeds, "
            + (f"{args.steps} steps" if args.steps else "the preset's 2 epochs (about 860 steps)"))

    def yes(flag):
        return {True: "yes", False: "**no**"}.get(flag, "n/a")

    def study_row(name, s):
        top = ", ".join(f"{p} (rung {k})" for p, k in s["pruned_top3"].items()) or "none"
        return (f"| {name} | {s['train_steps'] + s['cooldown_steps']:,} ({s['train_steps']:,} training + "
                f"{s['cooldown_steps']:,} cooldown) = {100 * s['steps_frac_of_grid']:.1f}% of the grid | "
                f"{s['wall_s']:.0f} s ({s['wall_s'] / g['wall_s']:.2f}x) | {s['recommendation'] or 'none'} "
                f"({'same or within seed noise' if s['recommendation_within_seed_noise'] else 'not within noise'}) | "
                f"{len(s['pruned_top3'])}: {top}; wrongly: {len(s['wrongly_pruned_top3'])} |")

    m = result["met"]
    lines = [
        BEGIN, "", "## Pruned studies (`benchmarks/pruning.py`)", "",
        (f"**{'Reduced run' if reduced else 'Full preset'}** on `{PRESET}`: {size}, target val acc {args.target:g}, "
         f"eta {args.eta}, min_rung_frac {args.min_rung_frac:g}, cooldown_frac {args.cooldown_frac:g}; measured "
         f"{result['measured']} on {result['machine']}. Command: `{result['command']}`."),
        "", "| side | optimizer steps | wall time | recommendation | grid top-3 pruned (rung) |",
        "|---|---|---|---|---|",
        f"| full grid | {g['steps']:,} | {g['wall_s']:.0f} s | {g['winner'] or 'none reached the target'} "
        f"(top 3: {', '.join(g['top3'])}) | - |",
        study_row("pruned, cooldown score", c), study_row("pruned, raw score", r), "",
        (f"Targets: steps <= 1/3 of the grid: {yes(m['steps'])}; same recommendation within seed noise: "
         f"{yes(m['recommendation'])}; no top-3 policy wrongly pruned by the cooldown score: {yes(m['top3'])}."
         + (" A reduced run: the real preset's figures are still to be measured with `python benchmarks/pruning.py`."
            if reduced else "")
         + " Steps to the target are read at the preset's evaluations (every 50 steps), so candidates that reach it "
           "in the same interval tie and are ranked by final accuracy; grid runs that diverged count only the steps "
           "they trained."),
        "", END,
    ]
    return "\n".join(lines)


def write_section(text: str) -> None:
    path = ROOT / "BENCHMARKS.md"
    current = path.read_text() if path.exists() else "# Benchmarks\n"
    pattern = re.compile(re.escape(BEGIN) + ".*?" + re.escape(END), re.S)
    current = pattern.sub(lambda _: text, current) if pattern.search(current) else current.rstrip() + "\n\n" + text
    path.write_text(current.rstrip() + "\n")


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--policies", default=",".join(POLICIES), help="comma-separated policies of the preset")
    parser.add_argument("--seeds", type=int, default=3, help="seeds 0 .. N-1 per policy")
    parser.add_argument("--steps", type=int, default=0, help="budget in optimizer steps; 0 = the preset's 2 epochs")
    parser.add_argument("--target", type=float, default=0.85, help="validation accuracy the recommendation reaches")
    parser.add_argument("--eta", type=int, default=3)
    parser.add_argument("--min-rung-frac", type=float, default=1 / 9)
    parser.add_argument("--cooldown-frac", type=float, default=0.1)
    parser.add_argument("--workdir", default=None, help="folder for the three stores (default: a temporary one)")
    parser.add_argument("--out", default="bench/results/pruning.json", help="JSON results file")
    parser.add_argument("--no-markdown", action="store_true", help="do not write the BENCHMARKS.md section")
    parser.add_argument("--render", metavar="JSON", help="only rewrite the BENCHMARKS.md section from saved results")
    parser.add_argument("--recollect", metavar="JSON", help="read the figures again from the stores a saved run left "
                        "(its sides' stores and wall times), without training; for a fix in the analysis")
    args = parser.parse_args(argv)
    if args.recollect:
        saved = json.loads(Path(args.recollect).read_text())
        args = argparse.Namespace(**{**saved["args"], "out": args.out, "no_markdown": args.no_markdown})
        sides = {side: {k: saved[side][k] for k in ("wall_s", "returncode", "uri", "command")}
                 for side in ("grid", "cooldown", "raw")}
        result = figures(args, sides)
        result.update({k: saved[k] for k in ("measured", "machine", "command", "load_avg_start")}, args=vars(args))
        return _save(result, args)
    if args.render:
        result = json.loads(Path(args.render).read_text())
        text = markdown(result, argparse.Namespace(**result["args"]))
        write_section(text)
        print(text)
        return result
    args.policies = [p for p in args.policies.split(",") if p]
    unknown = sorted(set(args.policies) - set(POLICIES))
    if unknown:
        parser.error(f"--policies: {', '.join(unknown)} not in the preset ({', '.join(POLICIES)})")
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="pruning-bench-"))
    sides = {side: run_side(side, args, workdir) for side in ("grid", "cooldown", "raw")}
    result = figures(args, sides)
    result.update(measured=time.strftime("%Y-%m-%d %H:%M"), machine=f"{os.cpu_count()} cores, {platform.platform()}",
                  command="python benchmarks/pruning.py " + " ".join(argv if argv is not None else sys.argv[1:]),
                  load_avg_start=os.getloadavg()[0], args=vars(args))
    _save(result, args)
    if not args.workdir:
        shutil.rmtree(workdir, ignore_errors=True)
    return result


def _save(result: dict, args) -> dict:
    out = ROOT / args.out
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1, default=str))
    text = markdown(result, args)
    if not args.no_markdown:
        write_section(text)
    print(text)
    return result


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    main()
