"""lrbench-pipeline: find good learning-rate policies, track every run in MLflow, recommend one with evidence.

Stages, one folder each, in the order a run goes through them:

- ``conf/`` and :mod:`pipeline.config`: Hydra composes a job; the config stage checks it before anything runs.
- :mod:`pipeline.policies`: learning-rate policies as values (``t -> lr``).
- :mod:`pipeline.training`: data, models and the Lightning module that trains under a policy.
- :mod:`pipeline.tracking`: the only code that talks to MLflow.
- :mod:`pipeline.analysis`: scoring, recommending and the report, on plain data.

Entry points: ``python -m pipeline`` (train one job or a sweep) and ``python -m pipeline.report``.
"""
