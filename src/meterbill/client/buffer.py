"""A background sender: events are queued in memory and sent in batches by one thread.

When meterbill is down the events stay queued and are sent again (same ids, so nothing is
counted twice) with a growing pause between attempts; `close()` sends what is left before
the process exits. The queue is bounded (`max_buffered`): beyond it the oldest events are
dropped, with a warning, rather than letting the host's memory grow without end.

An outage is not a misconfiguration: when meterbill answers 401 or 403 (a wrong key, or a
key without the `ingest` scope) no retry can help, so the buffer says so once, loudly
(`critical`), drops what it holds and stops queueing until the host is restarted with a
working key.

With `path=`, queued events are also kept in a small SQLite file (committed on `add`), so
the events of a host process that crashes are sent by the next one that opens the file.
"""

from __future__ import annotations

import atexit
import json
import logging
import sqlite3
import threading
import time
from collections import deque
from pathlib import Path
from typing import Any

from meterbill.client.api import (
    MeterbillClient,
    MeterbillClientError,
    MeterbillConfigurationError,
    MeterbillUnavailable,
)

log = logging.getLogger("meterbill.client")


class DiskQueue:
    """The events waiting to be sent, in a SQLite file: one row per event, removed once
    meterbill has it. Used under the buffer's lock."""

    def __init__(self, path: str | Path) -> None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.execute(
            "CREATE TABLE IF NOT EXISTS pending (seq INTEGER PRIMARY KEY, event TEXT NOT NULL)"
        )

    def load(self) -> list[tuple[int, dict[str, Any]]]:
        rows = self.db.execute("SELECT seq, event FROM pending ORDER BY seq").fetchall()
        return [(int(seq), json.loads(event)) for seq, event in rows]

    def append(self, event: dict[str, Any]) -> int:
        cursor = self.db.execute("INSERT INTO pending (event) VALUES (?)", (json.dumps(event),))
        return int(cursor.lastrowid or 0)

    def remove(self, seqs: list[int]) -> None:
        self.db.executemany("DELETE FROM pending WHERE seq = ?", [(seq,) for seq in seqs])

    def close(self) -> None:
        self.db.close()


class EventBuffer:
    def __init__(
        self,
        client: MeterbillClient,
        *,
        batch_size: int = 500,
        flush_interval: float = 1.0,
        max_buffered: int = 1_000_000,
        max_backoff: float = 30.0,
        path: str | Path | None = None,
    ) -> None:
        self.client = client
        self.batch_size = batch_size
        self.flush_interval = flush_interval
        self.max_buffered = max_buffered
        self.max_backoff = max_backoff
        self._queue: deque[dict[str, Any]] = deque()
        self._seqs: deque[int] = deque()  # row of each queued event in the disk queue
        self.disk = DiskQueue(path) if path else None
        if self.disk:
            for seq, event in self.disk.load():
                self._seqs.append(seq)
                self._queue.append(event)
        # The 401/403 that stopped the buffer: a configuration error, not an outage.
        self.refused: MeterbillConfigurationError | None = None
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
            if self.refused is not None:
                self.dropped += 1  # said loudly once already; nothing is queued any more
                return
            self._queue.append(event)
            if self.disk:
                self._seqs.append(self.disk.append(event))
            if len(self._queue) > self.max_buffered:
                self._pop_oldest(1)
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
        if self._queue and self.disk:
            log.warning("meterbill unreachable at exit: %d events kept on disk", len(self._queue))
        elif self._queue:
            log.error("meterbill unreachable at exit: %d events not delivered", len(self._queue))
        if self.disk:
            self.disk.close()
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
                except MeterbillConfigurationError as exc:
                    self._refuse(exc)
                    return False
                except MeterbillClientError as exc:
                    if not self._drop_refused(batch, exc):
                        return False
                    continue
                self._remove(len(batch))
            self._failures = 0
            return True

    def _refuse(self, exc: MeterbillConfigurationError) -> None:
        """A 401/403: say it once, loudly, and stop queueing what can never be sent."""
        with self._wake:
            if self.refused is None:
                log.critical(
                    "meterbill refused this API key (%s %s): a configuration error, not an "
                    "outage; fix METERBILL's API key or its `ingest` scope and restart. "
                    "Events are no longer queued (%d dropped now).",
                    exc.status,
                    exc.code,
                    len(self._queue),
                )
            self.refused = exc
            self.dropped += len(self._queue)
            self._pop_oldest(len(self._queue))

    def _pop_oldest(self, count: int) -> None:
        """Forget the `count` oldest events (the caller holds the lock)."""
        done = []
        for _ in range(min(count, len(self._queue))):
            self._queue.popleft()
            if self._seqs:
                done.append(self._seqs.popleft())
        if self.disk and done:
            self.disk.remove(done)

    def _remove(self, count: int) -> None:
        with self._wake:
            self._pop_oldest(count)

    def _drop_refused(self, batch: list[dict[str, Any]], exc: MeterbillClientError) -> bool:
        """A 422 names the events meterbill will never accept (e.g. older than 35 days):
        drop those, keep the rest. Other refusals (a bad API key) keep everything."""
        bad = {e.get("index") for e in exc.body.get("errors", []) if isinstance(e, dict)}
        if exc.status != 422 or not bad:
            log.error("meterbill refused events (%s); keeping them queued", exc)
            return False
        log.warning("meterbill refused %d events for good: %s", len(bad), exc.body["errors"][:3])
        with self._wake:
            seqs = [self._seqs[i] for i in range(len(batch))] if self.disk else []
            self._pop_oldest(len(batch))
            for index in reversed(range(len(batch))):
                if index in bad:
                    continue
                self._queue.appendleft(batch[index])
                if self.disk:
                    self._seqs.appendleft(seqs[index])
                    self.disk.db.execute(
                        "INSERT INTO pending (seq, event) VALUES (?, ?)",
                        (seqs[index], json.dumps(batch[index])),
                    )
        return True
