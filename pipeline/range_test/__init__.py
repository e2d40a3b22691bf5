"""The LR range test (Smith, arXiv 1506.01186): Lightning's ``Tuner.lr_find`` on the job's own model, data, task and
optimizer, over a few seeds, turned into the policy's k0/k1 by a documented rule.

- :mod:`.finder`: the sweeps (Lightning's, one per seed) -> curves;
- :mod:`.rule`: curves -> k0/k1 (pure);
- :mod:`.plot`: the figure logged with the run;
- :mod:`.run`: find a finished test with the same key in the store or run and record one; ``policy.k_from=range_test``;
- ``python -m pipeline.range_test <overrides>``: the test alone, printed.

How each policy family uses k0/k1: :mod:`pipeline.policies.k_values`.
"""
