"""``python -m pipeline.report``: score the recorded runs, recommend an LR policy per (model, dataset, optimizer)
with evidence, write report.html / report.md / report.json and log them as a ``kind=report`` MLflow run.

Top to bottom: check the config -> choose the runs (by default the latest sweep) and load them (one query) -> score
-> read the curves of the plotted runs only (bulk, cached) -> recommend -> verify the proposed composite (with
``verify=true``) -> render -> write files -> log the report run -> print. A bad config value is a one-line
``error: ...`` naming the key, exit code 2, before any run is read. Settings: ``conf/report.yaml``.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf

# Shell exit code for an unusable config or store (like argparse and python -m pipeline).
EXIT_CONFIG = 2
CONF_DIR = Path(__file__).resolve().parents[1] / "conf"
# Report settings a printed verify command does not repeat: it sets its own.
_NOT_REPEATED = ("verify", "parent_run_id", "scope", "out_dir")


def fail(message: str) -> None:
    print(f"error: {message}", file=sys.stderr)
    sys.exit(EXIT_CONFIG)


class Laps:
    """Wall and CPU seconds of each stage, printed with ``timings=true`` (the scale benchmark reads them)."""

    def __init__(self) -> None:
        self.laps: list[tuple[str, float, float]] = []
        self._wall, self._cpu = time.perf_counter(), time.process_time()

    def __call__(self, stage: str) -> None:
        wall, cpu = time.perf_counter(), time.process_time()
        self.laps.append((stage, wall - self._wall, cpu - self._cpu))
        self._wall, self._cpu = wall, cpu

    def print(self) -> None:
        for stage, wall, cpu in self.laps:
            print(f"timing: {stage} {wall:.3f} s wall, {cpu:.3f} s cpu", file=sys.stderr)


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "_", text).strip("_").lower()


@hydra.main(config_path="../conf", config_name="report", version_base="1.3")
def main(cfg: DictConfig) -> None:
    laps = Laps()
    from pipeline import redaction

    redaction.install()  # passwords in URIs masked in all this process prints and logs
    from pipeline.analysis.options import ReportConfigError, check_options, check_places
    from pipeline.tracking import store

    # 1. Config: every check that needs no store.
    try:
        options = check_options(OmegaConf.to_container(cfg, resolve=True))
        uri = store.resolve_uri(options.uri)
        check_places(options, uri)
    except (ReportConfigError, store.TrackingError) as exc:
        fail(str(exc))
    from pipeline.tracking.runs import RunsError, no_cyclic_gc

    try:
        # A short-lived process whose tables hold no reference cycles: Python's cyclic collector only costs time
        # here (seconds at 1,000 runs, mostly inside MLflow's ORM); memory is freed by reference counting.
        with no_cyclic_gc():
            report(options, uri, laps)
    except (RunsError, store.TrackingError) as exc:
        fail(str(exc))
    if options.timings:
        laps.print()


def verify_command(scope: dict) -> str:
    """This report's command again with ``verify=true``, pinned to its sweep (a later sweep would be the latest)."""
    kept = [a for a in sys.argv[1:] if a.split("=", 1)[0].lstrip("+~") not in _NOT_REPEATED]
    if scope.get("parent_run_id"):
        kept.append(f"parent_run_id={scope['parent_run_id']}")
    elif scope["how"] == "all":
        kept.append("scope=all")
    return "python -m pipeline.report " + shlex.join([*kept, "verify=true"])


def run_verification(proposal, name: str, out_dir: Path, experiment: str, uri: str, tags: dict) -> str:
    """Train the proposed composite as a sweep (``python -m pipeline ... --multirun`` in a subprocess, its output
    relayed) into the same store and experiment, and tag its parent and runs with ``tags``; returns a note."""
    from pipeline.analysis.composite import training_arguments
    from pipeline.tracking import runs as tracked

    args = training_arguments(proposal, str(out_dir), name, experiment, sweep_dir=str(out_dir / "verify" / name),
                              extra=["trainer.progress=false"])
    print(f"verify: python -m pipeline {shlex.join(args)}", flush=True)
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri}  # not on the command line: it may hold a password
    proc = subprocess.Popen([sys.executable, "-m", "pipeline", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env=env)
    lines = []
    for line in proc.stdout:
        lines.append(line)
        print(f"  | {line}", end="", flush=True)
    proc.wait()
    parent = next((m.group(1) for m in map(re.compile(r"sweep parent run (\w+)").search, lines) if m), None)
    if parent is None:
        return f"The verification sweep did not start (exit code {proc.returncode}): {''.join(lines[-3:]).strip()}"
    tracked.tag_sweep(uri, parent, tags)
    return ""


def verification_for(rec, best, outcomes, vruns, criteria, options, uri, cache):
    """The proposal's verification runs among ``vruns`` (matched by the policy they recorded), scored like the
    group's candidates and compared with the recommended one; None when there are none."""
    import pandas as pd

    from pipeline.analysis import composite, recommend, scoring, verification
    from pipeline.tracking import histories as history_store

    if rec.composite is None or vruns.empty:
        return None
    try:
        recorded = composite.recorded_policy(outcomes.loc[outcomes["run_id"] == best["run_ids"][0]].iloc[0].to_dict())
    except composite.NotProposed:
        return None
    same = (vruns["model"] == best["model"]) & (vruns["dataset"] == best["dataset"]) & \
        (vruns["optimizer"] == best["optimizer"]) & (vruns["momentum"] == best["momentum"]) & \
        (vruns["warmup"] == best["warmup"])
    matches = pd.Series([composite.verifies(r, rec.composite, recorded) for r in vruns.to_dict("records")],
                        index=vruns.index, dtype=bool)
    mine = vruns[same & matches]
    if mine.empty:
        return None
    unrecorded = scoring.needs_history(mine, criteria.target, criteria.objective)
    cutoffs = scoring.score_cutoffs(mine, criteria)
    reached, cut = {}, {}
    if unrecorded or cutoffs:
        histories = history_store.load_histories(uri, sorted({*unrecorded, *cutoffs}), [criteria.objective.key],
                                                 history_store.ALL_POINTS, cache, mine["run_id"].tolist())
        reached = scoring.first_reach_steps(histories, criteria.target, criteria.objective)
        cut = scoring.cut_scores(histories, cutoffs, criteria.objective)
    scores = scoring.score_candidates(scoring.run_outcomes(mine, criteria, reached, cut), criteria)
    if scores.empty:
        return None
    rows = recommend.classify(scores, options.target, options.max_fluctuation).sort_values("n_runs", ascending=False)
    return verification.compare(best, rows.iloc[0].to_dict(), options.rank_by, options.alpha)


def cross_group_sections(runs, ranked, options) -> list:
    """Tables that exist only when their data does: Demon-style finish rates (several settings or momentum
    policies), LCA per policy (+analysis=lca runs), AutoAssist against the plain runs (+sampler=autoassist)."""
    from pipeline.analysis.document import Section, frame_rows
    from pipeline.analysis.finish_rate import finish_rate, finish_rate_rows
    from pipeline.methods.autoassist.summary import autoassist_comparison
    from pipeline.methods.lca.summary import lca_by_policy

    sections = []
    settings = ranked[["model", "dataset"]].drop_duplicates() if {"model", "dataset"} <= set(ranked) else []
    momenta = set(ranked["momentum"].dropna().astype(str)) - {"none"} if "momentum" in ranked else set()
    if len(settings) > 1 or momenta:
        table = finish_rate(ranked, rank_by=options.rank_by)
        sections.append(Section("Finish rate (share of settings where a method is Top-1 / Top-3)",
                                "A setting is a (model, dataset); a method is an LR policy with its momentum policy "
                                "and optimizer, placed by its best candidate (the form of Demon's Table 1).",
                                *finish_rate_rows(table), data=table))
    if any(str(c).startswith("summary/lca_cum/") for c in runs.columns):
        table = lca_by_policy(runs)
        sections.append(Section("Loss change allocation (LCA): which layers helped or hurt",
                                "Mean over runs of the share of parameters whose LCA is negative (they lowered the "
                                "loss) on the measured steps, and the layers whose cumulative LCA helped or hurt.",
                                *frame_rows(table), data=table))
    if "sampler" in runs and runs["sampler"].notna().any():
        table = autoassist_comparison(runs, options.target)
        sections.append(Section(f"AutoAssist: samples, steps and seconds to {options.target:g}",
                                "Means over the runs that reached the target; *_vs_none below 1 means fewer than "
                                "the same policy without AutoAssist.", *frame_rows(table), data=table))
    return sections


def report(options, uri: str, laps: Laps) -> None:
    """Steps 2-7 of the module docstring."""
    from pipeline.analysis import composite, plots, recommend, scoring
    from pipeline.analysis.document import GroupReport, Report
    from pipeline.analysis.glossary import glossary
    from pipeline.analysis.render import write_composite, write_report
    from pipeline.tracking import histories as history_store
    from pipeline.tracking import runs as tracked

    laps("config and imports")
    # 2. Scope (the latest sweep unless told otherwise), then its runs: one summary query.
    runs, scope = tracked.load_scope(uri, options.experiments, options.parent_run_id, options.scope)
    if runs.empty:
        fail(f"no training runs (tag kind=train) to report on in {uri}. {scope['text']}")
    try:
        objective = scoring.scope_objective(runs)
        scoring.check_target(options.target, objective)
    except ValueError as exc:
        fail(str(exc))
    laps("load runs (search_runs)")
    terminal = runs.loc[runs["status"].isin(tracked.TERMINAL_STATUSES), "run_id"].tolist()
    cache = history_store.HistoryCache(options.cache_dir)

    # 3. Score. Runs that did not record the report's target get it from their objective's curve, and diverged or
    #    over-budget runs their scores up to where they count (one bulk read of every point: a thinned curve would
    #    put the first step at the target late).
    criteria = scoring.Criteria(options.target, options.budget_steps, options.budget_s, options.confidence, objective)
    unrecorded = scoring.needs_history(runs, options.target, objective)
    cutoffs = scoring.score_cutoffs(runs, criteria)
    evals = scoring.evaluations_per_run(runs)
    reached, cut = {}, {}
    if unrecorded or cutoffs:
        histories = history_store.load_histories(uri, sorted({*unrecorded, *cutoffs}), [objective.key],
                                                 history_store.ALL_POINTS, cache, terminal, evals)
        reached = scoring.first_reach_steps(histories, options.target, objective)
        cut = scoring.cut_scores(histories, cutoffs, objective)
    outcomes = scoring.run_outcomes(runs, criteria, reached, cut)
    scored = outcomes[outcomes["run_class"] == "scored"]
    scores = scoring.score_candidates(outcomes, criteria)
    ranked = recommend.rank(recommend.classify(scores, options.target, options.max_fluctuation), options.rank_by)
    ranked["pareto"] = recommend.pareto(ranked, "seconds" if options.rank_by == "seconds" else "steps")
    per_scale, sensitivity = scoring.k_scale_robustness(outcomes, objective)
    laps("score and rank")

    # 4. Curves of the plotted runs only: the top candidates and the baseline of each group.
    groups = list(dict.fromkeys([*ranked["group"], *outcomes.loc[outcomes["run_class"] != "duplicate", "group"]]))
    chosen = {g: plots.runs_to_plot(ranked[ranked["group"] == g], scored[scored["group"] == g], options.top_n,
                                    options.plot_seeds, options.baseline) if (ranked["group"] == g).any() else ({}, {})
              for g in groups}
    lr_runs = {run: name for g in groups for run, name in chosen[g][0].items()}
    acc_runs = {run: name for g in groups for run, name in chosen[g][1].items()}
    curves = history_store.load_histories(uri, list(lr_runs), ["lr"], options.max_points, cache, terminal)
    accuracy = history_store.load_histories(uri, list(acc_runs), [objective.key], options.max_points, cache,
                                            terminal, evals)
    laps("load histories")

    # 5. Recommend and draw, group by group; write each proposed composite's config (its command needs it).
    out_dir = Path(options.out_dir).resolve()
    from pipeline.tracking.store import public_uri

    printable_uri = public_uri(uri)
    seconds_per_step = dict(zip(scored["run_id"], scored["seconds_per_step"]))
    reports = []
    for g in groups:
        group_ranked = ranked[ranked["group"] == g].reset_index(drop=True)
        group_runs = outcomes[outcomes["group"] == g]
        group_lr, group_acc = chosen[g]
        unscored = scoring.not_counted_text(group_runs)
        best = group_ranked[group_ranked["good"]].iloc[0].to_dict() if group_ranked["good"].any() else None
        choices = {k: best[k] for k in ("model", "dataset", "optimizer", "momentum", "warmup")} if best else {}
        for k in ("task", "model", "dataset") if best else ():  # the option's file holds the defaults, not a class
            column = f"{k}_option" if f"{k}_option" in group_runs and group_runs[f"{k}_option"].notna().any() else k
            values = group_runs[column].dropna() if column in group_runs else ()
            if len(values):
                choices[k] = values.iloc[0]
        rec = recommend.recommendation_for(group_ranked, outcomes, group_lr, options.target, options.rank_by,
                                           options.baseline, options.alpha, options.budget_s, options.tail_factor,
                                           composite.group_defaults(CONF_DIR, choices), g, unscored)
        if unscored and not group_ranked.empty and len(groups) > 1:
            rec.notes.append(f"Not counted as seeds: {unscored}.")
        name = command = verify = None
        experiment = group_runs["experiment"].mode().iloc[0]
        if rec.composite is not None:
            name = "proposed_composite" + ("" if len(groups) == 1 else f"_{slug(g)}")
            shown_uri = printable_uri if "****" not in printable_uri else None
            command = composite.composite_command(rec.composite, str(out_dir), name, experiment, shown_uri)
            verify = verify_command(scope)
        figure = plots.group_figure(group_ranked, curves, group_lr, accuracy, group_acc, seconds_per_step,
                                    options.target, objective) if not group_ranked.empty else None
        mine = (lambda t: t[t["group"] == g] if not t.empty else t)
        group_report = GroupReport(g, group_ranked, rec, mine(per_scale), mine(sensitivity),
                                   {"evidence": figure} if figure else {}, name, command, None, verify)
        write_composite(group_report, out_dir)
        reports.append((group_report, best, experiment))
    laps("recommend and plot")

    # 6. Verify: train each proposed composite with the recommended policy's seeds and budget (verify=true), then
    #    compare every run that verifies it (these, or earlier ones however started) with the recommended policy.
    for group_report, _, experiment in reports:
        rec = group_report.recommendation
        if options.verify and rec.composite is not None:
            note = run_verification(rec.composite, group_report.composite_name, out_dir, experiment, uri,
                                    {tracked.VERIFY_TAG: rec.policy, "verifies_scope": scope["id"],
                                     "verifies_group": group_report.group})
            if note:
                rec.notes.append(note)
    if any(r.recommendation.composite is not None for r, _, _ in reports):
        vruns = tracked.load_verification_runs(uri, scope.get("experiment_ids") or [])
        for group_report, best, _ in reports:
            group_report.verification = verification_for(group_report.recommendation, best, outcomes, vruns,
                                                         criteria, options, uri, cache)
    laps("verify")

    # 7. Files, then the report run in MLflow.
    settings = {k: v for k, v in vars(options).items() if k != "uri"}
    notes = []
    not_counted = scoring.not_counted(outcomes)
    if not not_counted.empty:
        notes.append(f"Not counted as seeds (and never held against their policy): {scoring.not_counted_text(outcomes)}"
                     f"; {len(not_counted)} of {len(outcomes)} runs, listed under 'Runs not counted'.")
    document = Report("LR policy recommendation", datetime.now(timezone.utc).isoformat(timespec="seconds"),
                      {"uri": printable_uri, "experiments": scope.get("experiments"),
                       "parent_run_id": scope.get("parent_run_id")}, settings, len(runs), [r for r, _, _ in reports],
                      notes=notes, sections=cross_group_sections(scored, ranked, options), scope=scope,
                      objective=objective.as_dict(), glossary=glossary(settings, objective), not_counted=not_counted)
    written = write_report(document, out_dir)
    laps("write files")
    run_id = None
    if options.log_to_mlflow:
        experiment = scope["experiments"][0] if scope.get("experiments") and len(scope["experiments"]) == 1 \
            else runs["experiment"].mode().iloc[0]
        tags = {"report.parent_run_id": scope.get("parent_run_id"), "report.scope": scope["how"],
                **{f"recommendation.{slug(r.group)}": r.recommendation.policy or "none" for r, _, _ in reports}}
        run_id = tracked.log_report(uri, experiment, f"report-{out_dir.name}", tags, settings,
                                    {name: str(path) for name, path in written.items()})
        laps("log the report run")

    # 8. What to do next.
    print(scope["text"])
    for note in notes:
        print(note)
    for r, _, _ in reports:
        rec = r.recommendation
        print(f"{r.group}: " + (f"recommend {rec.text}" if rec.policy else rec.text))
        for headline in rec.headlines if rec.policy else []:
            print(f"  {headline.text}")
        if rec.margin is not None:
            print(f"  margin: {rec.margin.text}")
        if rec.speedup is not None:
            print(f"  speed-up: {rec.speedup.text}")
        for note in rec.notes:
            print(f"  {note}")
        if r.verification is not None:
            print(f"  verified composite: {r.verification.text}")
        if r.composite_command:
            print(f"  composite: {r.composite_command}")
        if r.verify_command and r.verification is None:
            print(f"  verify it: {r.verify_command}")
    print(f"report: {written['report.html']} (and report.md, report.json)"
          + (f"; MLflow run {run_id}" if run_id else ""))


if __name__ == "__main__":
    main()
