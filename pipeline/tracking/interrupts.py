"""Ctrl-C and SIGTERM end a run KILLED, and never land inside a store write.

Python raises ``KeyboardInterrupt`` at whatever bytecode the main thread is running. Inside MLflow's SQLAlchemy
session that leaks the connection with SQLite's write lock held: every later write from the process waits out the
20 s busy timeout and fails with "database is locked", so the interrupted run could not even be marked KILLED (the
recorder retried for minutes, then spooled). While a run is open, :func:`signals_as_interrupt` routes SIGINT and
SIGTERM to one handler; inside :func:`deferred` (each store call, and a run's ending) it holds the signal and raises
``KeyboardInterrupt`` as soon as the block is done. A second signal while one is held raises at once: pressing
Ctrl-C twice always stops the process.
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from contextlib import contextmanager

_depth = 0  # how many deferred() blocks the main thread is in
_pending: int | None = None  # a signal held until the outermost block ends


def _handler(signum, frame) -> None:
    global _pending
    if _depth > 0 and _pending is None:
        _pending = signum
        return
    _pending = None
    raise KeyboardInterrupt(f"signal {signum}")


@contextmanager
def signals_as_interrupt() -> Iterator[None]:
    """For the duration of a run: SIGINT and SIGTERM raise ``KeyboardInterrupt``, outside :func:`deferred` blocks."""
    global _pending
    _pending = None
    previous = {sig: signal.signal(sig, _handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


@contextmanager
def deferred() -> Iterator[None]:
    """Hold SIGINT and SIGTERM for the block (a store call that must not stop half-way); re-raise after it."""
    global _depth, _pending
    _depth += 1
    try:
        yield
    finally:
        _depth -= 1
        if _depth == 0 and _pending is not None:
            signum, _pending = _pending, None
            raise KeyboardInterrupt(f"signal {signum} (held until a store write was done)")
