"""What one of meterbill's loggers wrote during a test (its records, as objects)."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager


class Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@contextmanager
def records_of(name: str, level: int | None = None) -> Iterator[Records]:
    """The records `name` emits inside the block (at `level` and above, if given)."""
    handler = Records()
    logger = logging.getLogger(name)
    logger.addHandler(handler)
    previous = logger.level
    if level is not None:
        logger.setLevel(level)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        logger.setLevel(previous)
