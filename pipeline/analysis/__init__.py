"""Analysis stage: score, verify and recommend LR policies from recorded runs; write the report.

Pure code on plain data (pandas tables, dataclasses); nothing here imports mlflow. Runs come from
:mod:`pipeline.tracking.runs`; ``python -m pipeline.report`` wires the stages together.

- :mod:`.options`: the report's settings, checked at the edge.
- :mod:`.scoring`: per-run outcomes (reached the target within budget? failed?) and per-candidate scores over seeds.
- :mod:`.recommend`: good/bad verdicts with reasons, ranking, the recommendation, margin and speed-up.
- :mod:`.composite`: the proposed composite policy, as a ready-to-run ``conf/policy`` node, and the sweep that
  verifies it; :mod:`.verification`: its runs against the recommended policy.
- :mod:`.document`, :mod:`.plots`, :mod:`.render`, :mod:`.glossary`: the report's content, its figures, HTML /
  Markdown / JSON, and what every column and rule means.
"""
