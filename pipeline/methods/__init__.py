"""Opt-in methods: what a run does only when asked (``+analysis=lca``, ``+sampler=autoassist``).

Each method is a package: a thin Lightning callback whose hooks hand off to pure helpers, the method's maths as pure
functions and classes (tested without a Trainer), and its report summary beside it (plain pandas in and out). A
method writes only through the run's recorder it is given; nothing here talks to MLflow.

- :mod:`.lca`: Loss Change Allocation, which layers' motion lowered or raised the training loss at each step.
- :mod:`.autoassist`: AutoAssist, an assistant model that skips samples it predicts to be uninformative.
"""
