"""Pruned studies: successive halving over a sweep's candidates on Optuna's storage, with a rung score fair to
schedules that decay late (``hydra/sweeper=halving``; README, "Pruned studies").

``halving`` holds the rules (the rung ladder, who survives a rung), ``study`` their Optuna bookkeeping, ``rung`` what
a job does at a rung, ``cooldown`` the rung score.
"""
