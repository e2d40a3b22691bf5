"""The report's content as data: per group the ranked candidates, the recommendation and the evidence, and the
machine-readable version of it all (``report.json``). :mod:`.render` turns it into HTML and Markdown."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from pipeline.analysis.recommend import Recommendation


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


RANKING_FIELDS = ["rank", "name", "good", "reasons", "policy", "policy_spec", "momentum", "warmup", "k_scale",
                  "n_runs", "n_failed", "n_reached", "seeds", "steps_mean", "steps_std", "steps_ci_low",
                  "steps_ci_high", "seconds_mean", "seconds_std", "seconds_ci_low", "seconds_ci_high", "best_acc_mean",
                  "best_acc_std", "best_acc_ci_low", "best_acc_ci_high", "final_acc_mean", "final_acc_std",
                  "final_acc_ci_low", "final_acc_ci_high", "test_acc_mean", "test_acc_std", "test_top5_mean",
                  "ac_mean", "cv_mean", "cvac_mean", "fluct_mean", "fluct_max", "loss_gap_mean", "loss_gap_std",
                  "budget_steps", "steps_values", "seconds_values", "failures", "missed", "run_ids", "target_source"]


def report_json(report: Report) -> dict:
    """The machine version: settings, and per group the recommendation, ranking with scores, robustness."""
    groups = []
    for g in report.groups:
        ranked = g.ranked[[c for c in RANKING_FIELDS if c in g.ranked]]
        groups.append({"group": g.group, "recommendation": plain(g.recommendation), "ranking": plain(ranked),
                       "robustness": plain(g.robustness), "k_scale_sensitivity": plain(g.sensitivity),
                       "composite_config": g.composite_name, "composite_command": g.composite_command})
    return {"title": report.title, "generated": report.generated, "source": plain(report.source),
            "settings": plain(report.settings), "n_runs": report.n_runs, "notes": report.notes, "groups": groups,
            "sections": [{"title": x.title, "note": x.note, "table": plain(x.data)} for x in report.sections]}
