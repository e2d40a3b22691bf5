"""Training stage: data, models, the Lightning module that trains under a policy, and the metrics callback.

``job.run_job`` is the whole of one run, top to bottom: check the config, load data, build the model, open the
MLflow run, fit, test, write the summary.
"""
