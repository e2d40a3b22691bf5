"""Config stage: Hydra composes the job from ``conf/``; :func:`checks.check` validates it before anything runs."""
