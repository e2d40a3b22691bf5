"""Metrics that could not reach the tracking store, kept on local disk until they can be sent.

When a run ends while its store (typically a tracking server) stays unreachable, the recorder writes what it could
not send, buffered metric values, tags and the run's final status, to ``<spool dir>/<run id>.json``. Nothing is lost:
``python -m pipeline.tracking.spool`` sends every spooled run once the store is back, then removes its file.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

SPOOL_ENV = "LRBENCH_SPOOL_DIR"


def spool_dir() -> Path:
    return Path(os.environ.get(SPOOL_ENV) or Path.cwd() / "mlruns" / "spool")


def write(uri: str, run_id: str, metrics: list, tags: dict[str, str], status: str) -> Path:
    """Save a run's unsent metrics (mlflow Metric objects), tags and final status; return the file's path."""
    folder = spool_dir()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{run_id}.json"
    record = {
        "uri": uri,
        "run_id": run_id,
        "status": status,
        "tags": tags,
        "metrics": [[m.key, m.value, m.timestamp, m.step] for m in metrics],
    }
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(record))
    tmp.replace(path)  # atomic: a crash while writing never leaves half a file behind
    return path


def resend(folder: Path | None = None) -> int:
    """Send every spooled run to its store; return how many were sent. A store still down leaves its file."""
    from mlflow.entities import Metric, RunTag

    from pipeline.tracking import store
    from pipeline.tracking.sender import MAX_METRICS_PER_BATCH

    sent = 0
    for path in sorted((folder or spool_dir()).glob("*.json")):
        record = json.loads(path.read_text())
        client = store.client(record["uri"])
        metrics = [Metric(key, value, timestamp, step) for key, value, timestamp, step in record["metrics"]]
        for i in range(0, len(metrics), MAX_METRICS_PER_BATCH):
            client.log_batch(record["run_id"], metrics=metrics[i : i + MAX_METRICS_PER_BATCH], synchronous=True)
        if record["tags"]:
            client.log_batch(record["run_id"], tags=[RunTag(k, v) for k, v in record["tags"].items()])
        client.set_terminated(record["run_id"], status=record["status"])
        path.unlink()
        sent += 1
        print(f"sent run {record['run_id']}: {len(metrics)} metric values, status {record['status']}")
    return sent


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipeline.tracking.spool", description=__doc__.split("\n\n")[0])
    parser.add_argument("--dir", type=Path, default=None, help=f"spool folder (default ${SPOOL_ENV} or mlruns/spool)")
    args = parser.parse_args(argv)
    try:
        sent = resend(args.dir)
    except Exception as exc:  # noqa: BLE001 - one line for the user, the file stays for the next try
        print(f"error: could not send spooled runs: {exc}", file=sys.stderr)
        return 1
    print(f"{sent} spooled run(s) sent")
    return 0


if __name__ == "__main__":
    sys.exit(main())
