"""The report's content as data: per group the ranked candidates, the recommendation and the evidence, and the
machine-readable version of it all (``report.json``). :mod:`.render` turns it into HTML and Markdown."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from pipeline.analysis.recommend import Recommendation
from pipeline.analysis.verification import Verification


@dataclass
class GroupReport:
    """One (model, dataset, optimizer) group: its ranked candidates, the recommendation and the evidence."""

    group: str
    ranked: pd.DataFrame
    recommendation: Recommendation
    robustness: pd.DataFrame = field(default_factory=pd.DataFrame)   # per k scale (scoring.k_scale_robustness)
    sensitivity: pd.DataFrame = field(default_factory=pd.DataFrame)  # per policy
    figures: dict[str, bytes] = field(default_factory=dict)          # FIGURES key -> PNG
    composite_name: str | None = None                                # config option name, e.g. proposed_composite
    composite_command: str | None = None
    verification: Verification | None = None                         # the composite's runs against the recommended
    verify_command: str | None = None                                # the report again, with verify=true


@dataclass
class Section:
    """A table that spans the groups (finish rates, LCA, AutoAssist): shown after the groups when its data exists."""

    title: str
    note: str
    header: list[str]
    rows: list[list[str]]
    data: pd.DataFrame = field(default_factory=pd.DataFrame)  # the numbers behind the rows, for report.json


def frame_rows(table: pd.DataFrame, digits: int = 3) -> tuple[list[str], list[list[str]]]:
    """A frame as a header and rows of plain strings: floats rounded, sequences joined, missing values as a dash."""

    def text(value) -> str:
        if isinstance(value, (list, tuple)):
            return ", ".join(map(str, value)) or "-"
        if isinstance(value, (float, np.floating)):
            return "-" if not math.isfinite(value) else f"{value:.{digits}g}"
        return "-" if value is None or value is pd.NA else str(value)

    return list(map(str, table.columns)), [[text(v) for v in row] for row in table.itertuples(index=False)]


@dataclass
class Report:
    title: str
    generated: str                 # ISO time
    source: dict                   # uri, experiments or parent_run_id
    settings: dict                 # the checked report options
    n_runs: int
    groups: list[GroupReport]
    notes: list[str] = field(default_factory=list)
    sections: list[Section] = field(default_factory=list)
    scope: dict = field(default_factory=dict)              # which runs were read, and why (tracking.runs.load_scope)
    objective: dict = field(default_factory=dict)          # scoring.Objective.as_dict()
    glossary: dict[str, str] = field(default_factory=dict)
    not_counted: pd.DataFrame = field(default_factory=pd.DataFrame)  # scoring.not_counted


def plain(value):
    """JSON-safe: NaN/inf -> None, numpy scalars -> Python, dataclasses and frames -> dicts and lists."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, pd.DataFrame):
        return [plain(r) for r in value.to_dict("records")]
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, np.ndarray)):
        return [plain(v) for v in value]
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return None if not math.isfinite(value) else float(value)
    if value is pd.NA or value is None:
        return None
    if isinstance(value, pd.Timestamp):
        return value.isoformat()
    return value


STAT_FIELDS = [f"{p}_{s}" for p in ("steps", "seconds", "best_val", "final_val")
               for s in ("mean", "std", "ci_low", "ci_high", "ci_clipped")]
RANKING_FIELDS = ["rank", "name", "good", "reasons", "pareto", "policy", "policy_spec", "momentum", "warmup", "k_scale",
                  "objective_metric", "objective_mode", "n_runs", "n_failed", "n_reached", "seeds", *STAT_FIELDS,
                  "test_val_mean", "test_val_std", "test_top5_mean", "ac_mean", "cv_mean", "cvac_mean", "fluct_mean",
                  "fluct_max", "loss_gap_mean", "loss_gap_std", "budget_steps", "steps_values", "seconds_values",
                  "final_values", "failures", "missed", "run_ids", "target_source", "policy_fit"]


def report_json(report: Report) -> dict:
    """The machine version: scope, objective, settings, and per group the recommendation (with its headlines),
    ranking with scores, robustness and the composite's verification; the runs not counted; the glossary."""
    groups = []
    for g in report.groups:
        ranked = g.ranked[[c for c in RANKING_FIELDS if c in g.ranked]]
        groups.append({"group": g.group, "recommendation": plain(g.recommendation), "ranking": plain(ranked),
                       "robustness": plain(g.robustness), "k_scale_sensitivity": plain(g.sensitivity),
                       "composite_config": g.composite_name, "composite_command": g.composite_command,
                       "verification": plain(g.verification), "verify_command": g.verify_command})
    return {"title": report.title, "generated": report.generated, "scope": plain(report.scope),
            "objective": plain(report.objective), "source": plain(report.source), "settings": plain(report.settings),
            "n_runs": report.n_runs, "notes": report.notes, "groups": groups,
            "not_counted": plain(report.not_counted),
            "sections": [{"title": x.title, "note": x.note, "table": plain(x.data)} for x in report.sections],
            "glossary": report.glossary}
