"""Send one run's metric values to the tracking store from a background thread, so that a slow or dead store never
holds up training.

Values are sent in the order they were handed over, at most 1,000 per request (MLflow's limit), and leave the queue
only once the store has taken them: the store always holds a prefix of each key's steps, which resuming relies on
(a resumed run skips the steps the store already holds). While the store is down the thread retries with growing
waits and says so in one line, and in one more when the store is back. Re-sending a batch whose answer was lost
stores nothing twice: MLflow skips a value it already holds (same key, step, timestamp and value).

Only the main thread handles Ctrl-C and SIGTERM (see ``interrupts.py``); this thread never touches them, and
:meth:`Sender.drain` lets a request under way finish before the main thread sends the rest itself.
"""

from __future__ import annotations

import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from itertools import islice

# MLflow's limit of metric values per log_batch request.
MAX_METRICS_PER_BATCH = 1000
# Waits between tries while the store is down, in seconds: 0.5, 1, 2, ... up to 30 (a store back from an outage
# is noticed within 30 s; a dead one costs one failed request per 30 s).
RETRY_BASE_S = 0.5
RETRY_MAX_S = 30.0


def retry_wait_s(failures: int) -> float:
    """Seconds to wait after ``failures`` (>= 1) failed tries in a row."""
    return min(RETRY_BASE_S * 2 ** (failures - 1), RETRY_MAX_S)


class Sender:
    """A FIFO of metric values (mlflow ``Metric``) and the daemon thread that sends it with ``send(batch)``.

    ``put`` returns at once; ``unsent`` is everything the store has not confirmed (a batch in flight included);
    ``drain`` stops the thread and sends the rest from the calling thread, with bounded retries.
    """

    def __init__(self, send: Callable[[list], None], name: str = "metrics"):
        self._send = send
        self._name = name
        self._queue: deque = deque()
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self._stopping = False
        self._down_since: float | None = None  # time.monotonic() of the first failure of the current outage

    @property
    def down(self) -> bool:
        """Whether the last try failed: the store is unavailable as far as this run knows."""
        return self._down_since is not None

    def put(self, values: Sequence) -> None:
        """Queue ``values`` for sending; start the thread if it is not running."""
        if not values:
            return
        with self._cond:
            self._queue.extend(values)
            if self._thread is None:
                self._stopping = False
                self._thread = threading.Thread(target=self._run, name=f"sender-{self._name}", daemon=True)
                self._thread.start()
            self._cond.notify()

    def unsent(self) -> list:
        """The queued values, in order, including a batch whose request is under way."""
        with self._cond:
            return list(self._queue)

    def take(self) -> list:
        """Remove and return every queued value (after :meth:`drain` failed: the caller keeps them elsewhere)."""
        self._stop()
        with self._cond:
            values, self._queue = list(self._queue), deque()
        return values

    def drain(self, retries: int, values: Sequence = ()) -> None:
        """Stop the thread, queue ``values``, then send everything queued from the calling thread.

        A failed try is repeated up to ``retries`` times in a row, waiting as the thread does; after that the error
        rises and the values stay queued. A store known to be down (the thread's last try failed) gets one try: the
        thread has been retrying it all along.
        """
        self._stop()
        self._queue.extend(values)
        retries = 0 if self.down else retries
        failures = 0
        while self._queue:
            error = self._send_head()
            if error is None:
                failures = 0
                continue
            if failures == retries:
                raise error
            failures += 1
            time.sleep(retry_wait_s(failures))

    # -- the thread ------------------------------------------------------------------------------------------
    def _run(self) -> None:
        failures = 0
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._queue or self._stopping)
                if self._stopping:
                    return
            if self._send_head() is None:
                failures = 0
                continue
            failures += 1
            with self._cond:
                self._cond.wait_for(lambda: self._stopping, timeout=retry_wait_s(failures))

    def _stop(self) -> None:
        """End the thread once a request under way is done (it is not cut off: the store sees whole batches)."""
        with self._cond:
            thread, self._stopping = self._thread, True
            self._cond.notify()
        if thread is not None:
            thread.join()
        with self._cond:
            self._thread = None

    def _send_head(self) -> Exception | None:
        """Send the oldest batch; drop it from the queue once the store took it. Return the error of a failure."""
        with self._cond:
            batch = list(islice(self._queue, MAX_METRICS_PER_BATCH))
        try:
            self._send(batch)
        except Exception as exc:  # noqa: BLE001 - MLflow raises many types for an unreachable or failing store
            if self._down_since is None:
                self._down_since = time.monotonic()
                _say(f"warning: tracking store unavailable ({_reason(exc)}); training goes on, its metric values "
                     f"are kept in memory ({len(self._queue)} so far) and sent when the store is back")
            return exc
        with self._cond:
            for _ in batch:
                self._queue.popleft()
            left = len(self._queue)
        if self._down_since is not None:
            _say(f"tracking store is back after {time.monotonic() - self._down_since:.0f} s; sending the "
                 f"{left + len(batch)} metric values kept meanwhile")
            self._down_since = None
        return None


def _reason(exc: Exception, head: int = 60, tail: int = 120) -> str:
    """The error on one line, its middle cut out: MLflow's messages start with the request and end with the cause
    (``... Failed to establish a new connection: [Errno 111] Connection refused``)."""
    text = " ".join(f"{type(exc).__name__}: {exc}".split())
    return text if len(text) <= head + tail else f"{text[:head]} ... {text[-tail:]}"


def _say(line: str) -> None:
    print(line, file=sys.stderr, flush=True)
