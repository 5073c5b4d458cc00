"""A background sender: events are queued in memory and sent in batches by one thread.

When meterbill is down the events stay queued and are sent again (same ids, so nothing is
counted twice) with a growing pause between attempts; `close()` sends what is left before
the process exits. The queue is bounded (`max_buffered`): beyond it the oldest events are
dropped, with a warning, rather than letting the host's memory grow without end.
"""

from __future__ import annotations

import atexit
import logging
import threading
import time
from collections import deque
from typing import Any

from meterbill.client.api import MeterbillClient, MeterbillClientError, MeterbillUnavailable

log = logging.getLogger("meterbill.client")


class EventBuffer:
    def __init__(
        self,
        client: MeterbillClient,
        *,
        batch_size: int = 500,
        flush_interval: float = 1.0,
        max_buffered: int = 1_000_000,
        max_backoff: float = 30.0,
    ) -> None:
        self.client = client
        self.batch_size = batch_size
        self.flush_interval = flush_interval
        self.max_buffered = max_buffered
        self.max_backoff = max_backoff
        self._queue: deque[dict[str, Any]] = deque()
        self._wake = threading.Condition()
        self._sending = threading.Lock()
        self._closed = False
        self._failures = 0
        self.dropped = 0
        self._thread = threading.Thread(target=self._run, name="meterbill-events", daemon=True)
        self._thread.start()
        atexit.register(self.close)

    @property
    def pending(self) -> int:
        return len(self._queue)

    def add(self, event: dict[str, Any]) -> None:
        with self._wake:
            self._queue.append(event)
            if len(self._queue) > self.max_buffered:
                self._queue.popleft()
                self.dropped += 1
                if self.dropped % 1000 == 1:
                    log.warning("meterbill buffer full: %d oldest events dropped", self.dropped)
            if len(self._queue) >= self.batch_size:
                self._wake.notify()

    def flush(self) -> bool:
        """Send everything queued now, in this thread; False if meterbill is unreachable."""
        return self._send_all(retries=1)

    def close(self, timeout: float = 10.0) -> None:
        """Stop the thread and send what is left, trying for up to `timeout` seconds."""
        if self._closed:
            return
        with self._wake:
            self._closed = True
            self._wake.notify()
        self._thread.join(timeout)
        deadline = time.monotonic() + timeout
        while self._queue and time.monotonic() < deadline and not self.flush():
            time.sleep(0.2)
        if self._queue:
            log.error("meterbill unreachable at exit: %d events not delivered", len(self._queue))
        self.client.close()
        atexit.unregister(self.close)

    def _run(self) -> None:
        while True:
            deadline = time.monotonic() + self._pause()
            with self._wake:
                while not self._closed:
                    left = deadline - time.monotonic()
                    full = not self._failures and len(self._queue) >= self.batch_size
                    if left <= 0 or full:
                        break
                    self._wake.wait(left)
                if self._closed:
                    return
            if self._queue and not self._send_all(retries=0):
                self._failures += 1

    def _pause(self) -> float:
        if not self._failures:
            return self.flush_interval
        return float(min(self.max_backoff, self.flush_interval * 2**self._failures))

    def _send_all(self, retries: int) -> bool:
        with self._sending:
            while self._queue:
                batch = [self._queue[i] for i in range(min(self.batch_size, len(self._queue)))]
                try:
                    self.client.send_events(batch, retries=retries)
                except MeterbillUnavailable:
                    return False
                except MeterbillClientError as exc:
                    if not self._drop_refused(batch, exc):
                        return False
                    continue
                self._remove(len(batch))
            self._failures = 0
            return True

    def _remove(self, count: int) -> None:
        with self._wake:
            for _ in range(min(count, len(self._queue))):
                self._queue.popleft()

    def _drop_refused(self, batch: list[dict[str, Any]], exc: MeterbillClientError) -> bool:
        """A 422 names the events meterbill will never accept (e.g. older than 35 days):
        drop those, keep the rest. Other refusals (a bad API key) keep everything."""
        bad = {e.get("index") for e in exc.body.get("errors", []) if isinstance(e, dict)}
        if exc.status != 422 or not bad:
            log.error("meterbill refused events (%s); keeping them queued", exc)
            return False
        log.warning("meterbill refused %d events for good: %s", len(bad), exc.body["errors"][:3])
        keep = [event for index, event in enumerate(batch) if index not in bad]
        with self._wake:
            for _ in range(len(batch)):
                self._queue.popleft()
            self._queue.extendleft(reversed(keep))
        return True
