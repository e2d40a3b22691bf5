"""The MLflow side of a pack (``pipeline.packing``): one run per packed copy, each opened with
:func:`~pipeline.tracking.recorder.open_run` and ending with its own status."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import ExitStack, contextmanager
from typing import Any

from pipeline.tracking import store, sweeps
from pipeline.tracking.recorder import RunRecorder, open_run

# open(run_name, tags) -> the new run's recorder
OpenRun = Callable[[str, Mapping[str, Any]], RunRecorder]


@contextmanager
def run_opener(uri: str, experiment_id: str, flush_every: int) -> Iterator[OpenRun]:
    """Yield ``open(run_name, tags) -> RunRecorder``: each call creates one run of the experiment. On exit every run
    opened ends as :func:`open_run` ends it (FINISHED, FAILED or KILLED), the last opened first."""
    mlflow_client = store.client(uri)
    with ExitStack() as runs:
        yield lambda run_name, tags: runs.enter_context(open_run(mlflow_client, experiment_id, run_name, tags,
                                                                 flush_every, parent_run_id=sweeps.current_parent()))
