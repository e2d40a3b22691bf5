"""The report as files: ``report.html`` (self-contained: inline CSS, figures as base64 PNGs), ``report.md`` (the
same content, figures as PNG files beside it), ``report.json`` (the machine version) and the proposed composite
policy as a ready-to-run config (``policy/<name>.yaml``).

Every string that comes from MLflow (run names, tags, params, errors) is escaped before it reaches HTML or
Markdown: a run named ``<script>...`` or ``[click](javascript:...) ![p](http://host/pixel.png)`` shows as text, never
as markup, a link or an image that loads.
"""

from __future__ import annotations

import base64
import html
import json
import math
import re
from pathlib import Path

import pandas as pd

from pipeline.analysis.document import GroupReport, Report, plain, report_json

RUN_IT = "Run it: "
VERIFY_IT = "Verify it (runs it, then reports it beside the recommended policy): "
NOT_COUNTED = ("Runs not counted (could not run, did not finish, duplicates): no seed of their policy, never held "
               "against it")
# Figures of a group: key in GroupReport.figures -> heading.
FIGURES = (("evidence", "Time to target, LR curves, validation accuracy"),)
CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0 auto;max-width:1280px;padding:0 16px;
color:#222;line-height:1.4}
h1{font-size:1.5em}h2{font-size:1.25em;border-bottom:1px solid #ccc;margin-top:2em}h3{font-size:1.05em}
.box{border:2px solid #2e7d32;background:#f1f8f1;padding:10px 14px;border-radius:6px;margin:10px 0}
.box.none{border-color:#c62828;background:#fdf1f1}
.scroll{overflow-x:auto}table{border-collapse:collapse;font-size:12.5px;margin:8px 0}
th,td{border:1px solid #ddd;padding:3px 6px;text-align:left;vertical-align:top}th{background:#f4f4f4}
td.num{text-align:right;white-space:nowrap}.good{color:#2e7d32;font-weight:600}.bad{color:#c62828;font-weight:600}
.spec{color:#666;font-size:11px;word-break:break-all}
.scope{border-left:4px solid #1565c0;background:#f0f5fb;padding:6px 10px}dl.glossary dt{font-weight:600;margin-top:6px}
dl.glossary dd{margin:2px 0 0 16px;font-size:13px}img{max-width:100%;height:auto}
pre{background:#f6f6f6;padding:8px;overflow-x:auto;font-size:12px}.muted{color:#666;font-size:12px}
td:last-child{min-width:220px}code{background:#e8ede8;padding:1px 4px;border-radius:3px;font-size:12.5px}
"""


# -- formatting ----------------------------------------------------------------------------------------------------


def _ok(x) -> bool:
    return x is not None and not (isinstance(x, float) and math.isnan(x))


def stat(row, prefix: str, digits: int = 3, ci: bool = True) -> str:
    """``mean ± std [ci_low, ci_high]`` with what is defined; '–' when nothing is; ``*`` after an interval clipped
    to the metric's possible values."""
    mean, std = row.get(f"{prefix}_mean"), row.get(f"{prefix}_std")
    if not _ok(mean):
        return "–"
    fmt = f"{{:,.{digits}f}}"
    text = fmt.format(mean)
    if _ok(std):
        text += " ± " + fmt.format(std)
    lo, hi = row.get(f"{prefix}_ci_low"), row.get(f"{prefix}_ci_high")
    if ci and _ok(lo) and _ok(hi):
        text += f" [{fmt.format(lo)}, {fmt.format(hi)}]" + ("*" if row.get(f"{prefix}_ci_clipped") is True else "")
    return text


def _num(x, digits: int = 3) -> str:
    return f"{x:.{digits}f}" if _ok(x) else "–"


def _label(objective: dict | None) -> str:
    return f"val {(objective or {}).get('metric', 'acc')}"


def _misfit(row) -> str:
    """`` (policy_fit: flat)`` after a candidate whose policy did not show its shape in the budget (see glossary)."""
    fit = row.get("policy_fit")
    return f" (policy_fit: {fit})" if isinstance(fit, str) and fit != "ok" else ""


def ranking_rows(ranked: pd.DataFrame, confidence: float, objective: dict | None = None
                 ) -> tuple[list[str], list[list[str]]]:
    """Header and rows of the ranking table as plain (unescaped) strings, shared by HTML and Markdown; the objective
    (``Objective.as_dict()``) names its columns. Every column is explained in the report's glossary."""
    pct = f"{confidence:.0%}"
    label = _label(objective)
    classification = (objective or {}).get("metric", "acc") == "acc"
    header = ["#", "policy", "verdict", f"steps to target (mean ± std [{pct} CI])", "seconds to target",
              "reached", f"best {label} [{pct} CI]", f"final {label}",
              "test top-1 / top-5" if classification else f"test {label[4:]}", "AC / CV / CVAC",
              "late std", "loss gap", "Pareto", "reasons"]
    rows = []
    for r in ranked.to_dict("records"):
        test = f"{_num(r['test_val_mean'])} / {_num(r['test_top5_mean'])}" if classification \
            else _num(r["test_val_mean"], 4)
        rows.append([
            str(r["rank"]), r["name"] + _misfit(r), "good" if r["good"] else "bad", stat(r, "steps", 0),
            stat(r, "seconds", 1),
            f"{r['n_reached']}/{r['n_runs']}", stat(r, "best_val"), stat(r, "final_val", ci=False), test,
            f"{_num(r['ac_mean'])} / {_num(r['cv_mean'])} / {_num(r['cvac_mean'])}",
            _num(r["fluct_mean"], 4), _num(r["loss_gap_mean"]), "yes" if r.get("pareto") is True else "",
            "; ".join(r["reasons"]) or "–"])
    return header, rows


def recommendation_lines(g: GroupReport) -> list[str]:
    """The recommendation box as plain sentences."""
    rec = g.recommendation
    if rec.policy is None:
        return [f"No recommendation: {rec.text}."]
    by = {"steps": "fastest to the target in optimizer steps (LRBench's rule)",
          "seconds": "fastest to the target in training seconds", "final": "best final objective within budget"}
    lines = [h.text + "." for h in rec.headlines]
    lines += [f"Recommended (rank_by={rec.rank_by}: {by.get(rec.rank_by, rec.rank_by)}): {rec.text}.",
              f"Policy: {rec.policy_spec}"]
    if rec.margin is not None:
        what = "final objective" if rec.rank_by == "final" else f"{rec.rank_by} to target"
        lines.append(f"Margin ({what}): {rec.margin.text}.")
    if rec.speedup is not None:
        lines.append(f"Speed-up vs baseline: {rec.speedup.text}.")
    if rec.composite is not None:
        lines.append(f"Proposed composite: {rec.composite.rule}.")
    if g.verification is not None:
        lines.append(f"Verified composite: {g.verification.text}.")
    if g.composite_command:
        lines.append(f"{RUN_IT}{g.composite_command}")
    if g.verify_command and g.verification is None:
        lines.append(f"{VERIFY_IT}{g.verify_command}")
    lines.extend(rec.notes)
    return lines


def robustness_rows(g: GroupReport) -> tuple[list[str], list[list[str]]]:
    header = ["policy", "k scales", "scales reaching target (all seeds)", "final val spread", "per scale"]
    rows = []
    for s in g.sensitivity.to_dict("records") if not g.sensitivity.empty else []:
        mine = g.robustness[(g.robustness["policy"] == s["policy"]) & (g.robustness["momentum"] == s["momentum"])
                            & (g.robustness["warmup"] == s["warmup"])]
        detail = ", ".join(f"×{p['k_scale']:g}: {p['share_reached']:.0%} reached, final {p['final_val_mean']:.3f}"
                           + (f", {p['n_failed']} failed" if p["n_failed"] else "") for p in mine.to_dict("records"))
        rows.append([str(s["policy"]), ", ".join(f"{k:g}" for k in s["scales"]), f"{s['share_scales_reaching']:.0%}",
                     f"{s['final_val_spread']:.3f}", detail])
    return header, rows


def failure_rows(ranked: pd.DataFrame) -> list[list[str]]:
    return [[r["name"], str(f["seed"]), f["failure"], f["run_name"] or f["run_id"], f["error"]]
            for r in ranked.to_dict("records") for f in r["failures"]]


def not_counted_rows(report: Report) -> tuple[list[str], list[list[str]]]:
    """The runs no policy is scored on (:func:`pipeline.analysis.scoring.not_counted`), and why."""
    table = report.not_counted
    rows = [[str(r["group"]), str(r["policy"]), "-" if r["seed"] is None or r["seed"] is pd.NA else str(r["seed"]),
             str(r["run_name"] or r["run_id"]), str(r["class"]), str(r["why"])]
            for r in (table.to_dict("records") if not table.empty else [])]
    return ["group", "policy", "seed", "run", "counted as", "why"], rows


def verification_rows(g: GroupReport) -> tuple[list[str], list[list[str]]]:
    """The composite's verification runs against the recommended policy, criterion by criterion."""
    v = g.verification
    rows = [[c.criterion, _num(c.composite, 4), _num(c.single, 4), c.margin.text] for c in v.comparisons]
    return ["criterion", f"{v.composite} (mean)", f"{v.against} (mean)", "margin (Welch)"], rows


def glossary_rows(report: Report) -> list[list[str]]:
    return [[term, text] for term, text in report.glossary.items()]


def intro_lines(report: Report) -> list[str]:
    """The first lines of every format: the scope, then what was measured."""
    objective = report.objective or {"key": "val/acc", "mode": "max"}
    cmp = "≥" if objective.get("mode", "max") == "max" else "≤"
    lines = [report.scope["text"]] if report.scope.get("text") else []
    lines.append(f"Generated {report.generated} from {report.n_runs} training runs; {_source_text(report.source)}. "
                 f"Target {objective.get('key')} {cmp} {report.settings.get('target')} "
                 f"({objective.get('direction', 'higher is better')}), budget {_budget_text(report.settings)}, "
                 f"ranked by {report.settings.get('rank_by')}. Every column and rule is explained in the glossary "
                 "at the end.")
    return lines


# -- HTML ----------------------------------------------------------------------------------------------------------


def _e(text) -> str:
    return html.escape(str(text), quote=True)


def _html_table(header: list[str], rows: list[list[str]], numeric: set[int] = frozenset(),
                classes: list[list[str]] | None = None) -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in header)
    body = []
    for i, row in enumerate(rows):
        cells = []
        for j, cell in enumerate(row):
            css = ["num"] if j in numeric else []
            if classes:
                css += [c for c in classes[i][j:j + 1] if c]
            cls = f' class="{" ".join(css)}"' if css else ""
            cells.append(f"<td{cls}>{_e(cell)}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f'<div class="scroll"><table><tr>{head}</tr>{"".join(body)}</table></div>'


def report_html(report: Report) -> str:
    """The whole report as one self-contained HTML page."""
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{_e(report.title)}</title>"
             f"<meta name='viewport' content='width=device-width, initial-scale=1'><style>{CSS}</style></head><body>",
             f"<h1>{_e(report.title)}</h1>"]
    intro = intro_lines(report)
    parts += [f"<p class='scope'><b>{_e(line)}</b></p>" if i == 0 and report.scope else
              f"<p class='muted'>{_e(line)}</p>" for i, line in enumerate(intro)]
    parts += [f"<p class='muted'>{_e(n)}</p>" for n in report.notes]
    confidence = report.settings.get("confidence", 0.95)
    for g in report.groups:
        parts.append(f"<h2>{_e(g.group)}</h2>")
        box = "box" if g.recommendation.policy else "box none"
        lines = []
        for line in recommendation_lines(g):
            command = next((p for p in (RUN_IT, VERIFY_IT) if line.startswith(p)), None)
            lines.append(f"<div class='headline'>{_e(line)}</div>" if command is None else
                         f"<div>{_e(command)}<code>{_e(line[len(command):])}</code></div>")
        parts.append(f"<div class='{box}'>" + "".join(lines) + "</div>")
        header, rows = ranking_rows(g.ranked, confidence, report.objective)
        classes = [["", "", "good" if row[2] == "good" else "bad"] for row in rows]
        if rows:
            parts.append("<h3>Ranking</h3>" + _html_table(header, rows, {0, 3, 4, 5, 6, 7, 8, 9, 10, 11}, classes))
        specs = "".join(f"<div class='spec'>{_e(r['name'])}: {_e(r['policy_spec'])}</div>"
                        for r in g.ranked.to_dict("records"))
        if specs:
            parts.append(f"<details><summary class='muted'>exact policies (LRBench strings)</summary>{specs}</details>")
        for key, title in FIGURES:
            if key in g.figures:
                data = base64.b64encode(g.figures[key]).decode("ascii")
                parts.append(f"<h3>{_e(title)}</h3><img alt='{_e(title)}' src='data:image/png;base64,{data}'>")
        if not g.sensitivity.empty:
            header, rows = robustness_rows(g)
            parts.append("<h3>Robustness: sensitivity to k scaling</h3>" + _html_table(header, rows))
        failures = failure_rows(g.ranked)
        if failures:
            parts.append("<h3>Failed runs (counted against their policy)</h3>"
                         + _html_table(["policy", "seed", "failure", "run", "error"], failures))
        if g.recommendation.composite is not None:
            parts.append(f"<h3>Proposed composite policy</h3><pre>{_e(composite_yaml(g))}</pre>")
        if g.verification is not None:
            parts.append(f"<h3>Verified composite: {_e(g.verification.verdict)}</h3>"
                         f"<p>{_e(g.verification.text)}</p>" + _html_table(*verification_rows(g)))
    if not report.not_counted.empty:
        parts.append(f"<h2>{_e(NOT_COUNTED)}</h2>" + _html_table(*not_counted_rows(report)))
    for section in report.sections:
        parts.append(f"<h2>{_e(section.title)}</h2><p class='muted'>{_e(section.note)}</p>"
                     + _html_table(section.header, section.rows))
    if report.glossary:
        parts.append("<h2 id='glossary'>Glossary</h2><dl class='glossary'>"
                     + "".join(f"<dt>{_e(t)}</dt><dd>{_e(d)}</dd>" for t, d in glossary_rows(report)) + "</dl>")
    parts.append("</body></html>")
    return "\n".join(parts)


def _source_text(source: dict) -> str:
    where = f"sweep {source['parent_run_id']}" if source.get("parent_run_id") else \
        f"experiments {', '.join(source.get('experiments') or ['(all)'])}"
    return f"{where} in {source.get('uri')}"


def _budget_text(settings: dict) -> str:
    steps = settings.get("budget_steps")
    seconds = settings.get("budget_s")
    text = f"{steps} steps" if steps else "each run's own steps"
    return text + (f", {seconds} s" if seconds else "")


# -- Markdown ------------------------------------------------------------------------------------------------------


# Characters that start inline Markdown (GitHub's included) anywhere in a line: links and images ([ ] !), emphasis
# (* _), code (`), strikethrough (~), math ($), a table cell's end (|) and the backslash itself. < > & are escaped as
# HTML, which also stops raw HTML and <autolinks>.
_MD_INLINE = re.compile(r"([\\`*_\[\]~$!|])")
# What starts a heading, list or rule at the beginning of a line (a quote's > is already &gt;).
_MD_LINE_START = re.compile(r"^(\s*(?:[#+=-]|\d+[.)]))")


def _m(text) -> str:
    """Text (from the store) as Markdown that renders as exactly that text, on one line."""
    text = _MD_INLINE.sub(r"\\\1", str(text).replace("\r", " ").replace("\n", " "))
    text = _MD_LINE_START.sub(lambda m: m.group(1)[:-1] + "\\" + m.group(1)[-1], text)
    return html.escape(text, quote=False)


def _code(text: str) -> str:
    """An inline code span (its content is shown literally); escaped text when a backtick in it (from a tag) would
    end the span early."""
    return f"`{text}`" if "`" not in text and "\n" not in text else _m(text)


def _fenced(text: str, info: str = "") -> list[str]:
    """A fenced code block longer than any run of backticks in ``text``, so nothing in it can close it."""
    fence = "`" * max([3] + [len(run) + 1 for run in re.findall("`+", text)])
    return [fence + info, text, fence]


def _md_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(_m(h) for h in header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_m(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def figure_name(group_index: int, key: str) -> str:
    return f"g{group_index + 1}_{key}.png"


def report_markdown(report: Report) -> str:
    """The report in Markdown; figures are referenced as :func:`figure_name` files beside it."""
    intro = intro_lines(report)
    out = [f"# {_m(report.title)}", ""]
    out += [(f"**{_m(line)}**" if i == 0 and report.scope else _m(line)) + "\n" for i, line in enumerate(intro)]
    out += [f"_{_m(n)}_\n" for n in report.notes]
    confidence = report.settings.get("confidence", 0.95)
    for i, g in enumerate(report.groups):
        out += [f"## {_m(g.group)}", ""]
        for line in recommendation_lines(g):
            command = next((p for p in (RUN_IT, VERIFY_IT) if line.startswith(p)), None)
            out.append(f"> {_m(line)}  " if command is None else f"> {command}{_code(line[len(command):])}  ")
        out.append("")
        if not g.ranked.empty:
            out += ["### Ranking", "", _md_table(*ranking_rows(g.ranked, confidence, report.objective)), ""]
        out += [f"- {_m(r['name'])}: {_code(str(r['policy_spec']))}" for r in g.ranked.to_dict("records")] + [""]
        out += [f"### {title}\n\n![{title}]({figure_name(i, key)})\n" for key, title in FIGURES if key in g.figures]
        if not g.sensitivity.empty:
            out += ["### Robustness: sensitivity to k scaling", "", _md_table(*robustness_rows(g)), ""]
        failures = failure_rows(g.ranked)
        if failures:
            out += ["### Failed runs (counted against their policy)", "",
                    _md_table(["policy", "seed", "failure", "run", "error"], failures), ""]
        if g.recommendation.composite is not None:
            out += ["### Proposed composite policy", "", *_fenced(composite_yaml(g).rstrip(), "yaml"), ""]
        if g.verification is not None:
            out += [f"### Verified composite: {_m(g.verification.verdict)}", "", _m(g.verification.text), "",
                    _md_table(*verification_rows(g)), ""]
    if not report.not_counted.empty:
        out += [f"## {_m(NOT_COUNTED)}", "", _md_table(*not_counted_rows(report)), ""]
    for section in report.sections:
        out += [f"## {_m(section.title)}", "", _m(section.note), "", _md_table(section.header, section.rows), ""]
    if report.glossary:
        out += ["## Glossary", ""] + [f"- **{_m(t)}**: {_m(d)}" for t, d in glossary_rows(report)] + [""]
    return "\n".join(out) + "\n"


# -- files ---------------------------------------------------------------------------------------------------------


def composite_yaml(g: GroupReport) -> str:
    """The proposed composite as a ``conf/policy`` file, commented like ``composite_sin2_fix.yaml``."""
    import yaml

    c = g.recommendation.composite
    header = (f"# {g.composite_name or 'proposed_composite'}: proposed by python -m pipeline.report for {g.group}.\n"
              f"# Rule: {c.rule}.\n"
              "# until_steps is an ABSOLUTE optimizer step; clock: local restarts the tail's t at 0 where it starts.\n"
              "# Units: k0, k1 learning rates; l optimizer steps (half a cycle); until_steps optimizer steps.\n")
    header = "".join(line if line.startswith("#") else f"# {line}" for line in header.splitlines(True))
    return header + yaml.safe_dump(plain(c.node), sort_keys=False, default_flow_style=False)


def write_composite(g: GroupReport, out_dir: str | Path) -> Path | None:
    """``policy/<composite name>.yaml`` under ``out_dir`` (the ``--config-dir`` of its command), if proposed."""
    if g.recommendation.composite is None or not g.composite_name:
        return None
    path = Path(out_dir) / "policy" / f"{g.composite_name}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(composite_yaml(g))
    return path


def write_report(report: Report, out_dir: str | Path) -> dict[str, Path]:
    """Write report.html, report.md, report.json, the figures and ``policy/<composite>.yaml`` files into
    ``out_dir``; return name -> path of everything written."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written: dict[str, Path] = {}
    for i, g in enumerate(report.groups):
        for key, _ in FIGURES:
            if key in g.figures:
                path = out / figure_name(i, key)
                path.write_bytes(g.figures[key])
                written[path.name] = path
        path = write_composite(g, out)
        if path is not None:
            written[f"policy/{path.name}"] = path
    for name, text in (("report.html", report_html(report)), ("report.md", report_markdown(report)),
                       ("report.json", json.dumps(report_json(report), indent=1, ensure_ascii=False))):
        path = out / name
        path.write_text(text, encoding="utf-8")
        written[name] = path
    return written
