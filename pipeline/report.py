"""``python -m pipeline.report``: score the recorded runs, recommend an LR policy per (model, dataset, optimizer)
with evidence, write report.html / report.md / report.json and log them as a ``kind=report`` MLflow run.

Top to bottom: check the config -> load the runs (one query) -> score -> read the curves of the plotted runs only
(bulk, cached) -> recommend -> render -> write files -> log the report run -> print. A bad config value is a one-line
``error: ...`` naming the key, exit code 2, before any run is read. Settings: ``conf/report.yaml``.
"""

from __future__ import annotations

import re
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf

# Shell exit code for an unusable config or store (like argparse and python -m pipeline).
EXIT_CONFIG = 2


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


def public_uri(uri: str) -> str:
    """The store URI without its password (``postgresql://user:****@host/db``), for the report's pages."""
    return re.sub(r"//([^:/@]+):[^@]*@", r"//\1:****@", uri)


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
    from pipeline.analysis import plots, recommend, scoring
    from pipeline.analysis.composite import composite_command
    from pipeline.analysis.document import GroupReport, Report
    from pipeline.analysis.render import write_report
    from pipeline.tracking import runs as tracked

    laps("config and imports")
    # 2. Runs: one summary query.
    runs = tracked.load_runs(uri, options.experiments, options.parent_run_id)
    if runs.empty:
        where = f"sweep {options.parent_run_id}" if options.parent_run_id else f"experiments {options.experiments}"
        fail(f"no training runs (tag kind=train) in {where} of {uri}")
    laps("load runs (search_runs)")
    terminal = runs.loc[runs["status"].isin(tracked.TERMINAL_STATUSES), "run_id"].tolist()
    cache = tracked.HistoryCache(options.cache_dir)

    # 3. Score. Runs that did not record the report's target get it from their val/acc curve (one bulk read), every
    #    point of it: a thinned curve would put the first step at the target late.
    criteria = scoring.Criteria(options.target, options.budget_steps, options.budget_s, options.confidence)
    unrecorded = scoring.needs_history(runs, options.target)
    evals = scoring.evaluations_per_run(runs)
    reached = {}
    if unrecorded:
        histories = tracked.load_histories(uri, unrecorded, ["val/acc"], tracked.ALL_POINTS, cache, terminal, evals)
        reached = scoring.first_reach_steps(histories, options.target)
    outcomes = scoring.run_outcomes(runs, criteria, reached)
    scores = scoring.score_candidates(outcomes, criteria)
    ranked = recommend.rank(recommend.classify(scores, options.target, options.max_fluctuation), options.rank_by)
    per_scale, sensitivity = scoring.k_scale_robustness(outcomes)
    laps("score and rank")

    # 4. Curves of the plotted runs only: the top candidates and the baseline of each group.
    groups = list(dict.fromkeys(ranked["group"]))
    chosen = {g: plots.runs_to_plot(ranked[ranked["group"] == g], outcomes[outcomes["group"] == g],
                                    options.top_n, options.plot_seeds, options.baseline) for g in groups}
    lr_runs = {run: name for g in groups for run, name in chosen[g][0].items()}
    acc_runs = {run: name for g in groups for run, name in chosen[g][1].items()}
    curves = tracked.load_histories(uri, list(lr_runs), ["lr"], options.max_points, cache, terminal)
    accuracy = tracked.load_histories(uri, list(acc_runs), ["val/acc"], options.max_points, cache, terminal, evals)
    laps("load histories")

    # 5. Recommend and draw, group by group.
    out_dir = Path(options.out_dir).resolve()
    seconds_per_step = dict(zip(outcomes["run_id"], outcomes["seconds_per_step"]))
    reports = []
    for g in groups:
        group_ranked = ranked[ranked["group"] == g].reset_index(drop=True)
        group_lr, group_acc = chosen[g]
        rec = recommend.recommendation_for(group_ranked, outcomes, group_lr, options.target, options.rank_by,
                                           options.baseline, options.alpha, options.budget_s, options.tail_factor)
        name = command = None
        if rec.composite is not None:
            name = "proposed_composite" + ("" if len(groups) == 1 else f"_{slug(g)}")
            command = composite_command(rec.composite, str(out_dir), name)
        figure = plots.group_figure(group_ranked, curves, group_lr, accuracy, group_acc, seconds_per_step,
                                    options.target)
        mine = (lambda t: t[t["group"] == g] if not t.empty else t)
        reports.append(GroupReport(g, group_ranked, rec, mine(per_scale), mine(sensitivity), {"evidence": figure},
                                   name, command))
    laps("recommend and plot")

    # 6. Files, then the report run in MLflow.
    settings = {k: v for k, v in vars(options).items() if k != "uri"}
    document = Report("LR policy recommendation", datetime.now(timezone.utc).isoformat(timespec="seconds"),
                      {"uri": public_uri(uri), "experiments": list(options.experiments or []) or None,
                       "parent_run_id": options.parent_run_id}, settings, len(runs), reports,
                      sections=cross_group_sections(runs, ranked, options))
    written = write_report(document, out_dir)
    laps("write files")
    run_id = None
    if options.log_to_mlflow:
        experiment = options.experiments[0] if options.experiments and not options.parent_run_id \
            else runs["experiment"].mode().iloc[0]
        tags = {"report.parent_run_id": options.parent_run_id,
                **{f"recommendation.{slug(r.group)}": r.recommendation.policy or "none" for r in reports}}
        run_id = tracked.log_report(uri, experiment, f"report-{out_dir.name}", tags, settings,
                                    {name: str(path) for name, path in written.items()})
        laps("log the report run")

    # 7. What to do next.
    for r in reports:
        rec = r.recommendation
        print(f"{r.group}: " + (f"recommend {rec.text}" if rec.policy else rec.text))
        if rec.margin is not None:
            print(f"  margin: {rec.margin.text}")
        if rec.speedup is not None:
            print(f"  speed-up: {rec.speedup.text}")
        if r.composite_command:
            print(f"  composite: {r.composite_command}")
    print(f"report: {written['report.html']} (and report.md, report.json)"
          + (f"; MLflow run {run_id}" if run_id else ""))


if __name__ == "__main__":
    main()
