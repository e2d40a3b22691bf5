"""Keep passwords out of everything a process prints or logs, whoever writes it.

A password given in ``tracking.uri=`` is echoed by Hydra (its launch lines ``#0 : ...``, ``Error executing job with
overrides``, its error messages), by tracebacks and by MLflow. :func:`install` passes every write to stdout and
stderr and every log record (so log files too) through :func:`pipeline.tracking.store.public_uri`;
:func:`mask_files` does the same to Hydra's saved configs. Nothing happens on import.
"""

from __future__ import annotations

import logging
import os
import sys
import tempfile
from pathlib import Path

from pipeline.tracking.store import public_uri


class MaskedStream:
    """A text stream that masks passwords in what is written to it; everything else is the wrapped stream's."""

    def __init__(self, stream):
        self.wrapped = stream

    def write(self, text: str) -> int:
        self.wrapped.write(public_uri(text))
        return len(text)

    def writelines(self, lines) -> None:
        for line in lines:
            self.write(line)

    def __getattr__(self, name: str):
        return getattr(self.wrapped, name)


def _masking_record_factory(make_record):
    def factory(*args, **kwargs) -> logging.LogRecord:
        record = make_record(*args, **kwargs)
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - a malformed record is logging's to report, not ours
            return record
        masked = public_uri(message)
        if masked != message:
            record.msg, record.args = masked, None
        if record.exc_info and not record.exc_text:  # formatters use exc_text when it is set
            record.exc_text = public_uri(logging.Formatter().formatException(record.exc_info))
        return record

    factory.masks_secrets = True
    return factory


def install() -> None:
    """Mask passwords in this process's stdout, stderr and log records from now on (idempotent)."""
    for name in ("stdout", "stderr"):
        stream = getattr(sys, name)
        if stream is not None and not isinstance(stream, MaskedStream):
            setattr(sys, name, MaskedStream(stream))
    make_record = logging.getLogRecordFactory()
    if not getattr(make_record, "masks_secrets", False):
        logging.setLogRecordFactory(_masking_record_factory(make_record))


def mask_files(paths) -> None:
    """Rewrite each file (Hydra's ``.hydra/*.yaml``, ``multirun.yaml``) with its passwords masked; each is replaced
    at once, so jobs of one sweep doing this together leave the same content."""
    for path in map(Path, paths):
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            continue
        masked = public_uri(text)
        if masked == text:
            continue
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(masked)
        os.replace(tmp, path)
