"""Tracking stage: the only package that talks to MLflow.

``store`` resolves the tracking URI and prepares the store and experiment; ``recorder`` writes one run
(buffered, batched metric writes); ``runs`` reads runs back as plain tables for the analysis stage.
"""
