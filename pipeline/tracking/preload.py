"""Imported once by the pool launcher's forkserver (``hydra_plugins/lrbench_launcher``), so that every worker forked
from it has MLflow's client already imported (seconds per worker otherwise); only ``pipeline.tracking`` imports
MLflow."""

import mlflow.tracking  # noqa: F401 - the import is the point
