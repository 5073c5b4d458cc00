"""The client middlewares tell a misconfiguration (401/403) from an outage: a start-up
check, one loud log line, no endless queueing; and an on-disk buffer that outlives a crash
of the host process."""

from __future__ import annotations

import logging
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from flask import Flask

from meterbill.auth.service import create_api_key, revoke_api_key
from meterbill.client import (
    EventBuffer,
    MeterbillClient,
    MeterbillConfigurationError,
    MeterbillWSGI,
    header_identity,
    usage_event,
)
from tests.conftest import free_port
from tests.log_records import Records, records_of
from tests.usage.conftest import Metering


@pytest.fixture
def client_log() -> Iterator[Records]:
    with records_of("meterbill.client") as records:
        yield records


def _wait(condition: Callable[[], bool], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)


def test_ping_names_the_key_and_refuses_a_bad_one(metering: Metering) -> None:
    with MeterbillClient(metering.service.url, metering.key) as client:
        answer = client.ping()
    assert answer["status"] == "ok" and set(answer["scopes"]) == {"ingest", "read", "admin"}
    with (
        MeterbillClient(metering.service.url, "mb_wrong_key") as client,
        pytest.raises(MeterbillConfigurationError) as refused,
    ):
        client.ping()
    assert refused.value.status == 401 and refused.value.code == "invalid_api_key"


def test_middleware_refuses_to_start_with_a_bad_key_but_starts_during_an_outage(
    metering: Metering,
) -> None:
    host = Flask("host")
    with pytest.raises(MeterbillConfigurationError):
        MeterbillWSGI(
            host.wsgi_app, metering.service.url, "mb_nope_nope", identify=header_identity("X-User")
        )
    with metering.service.db.transaction() as session:
        ingest_only = create_api_key(session, "ingest only", ("ingest",))
    with pytest.raises(MeterbillConfigurationError) as missing:
        MeterbillWSGI(
            host.wsgi_app, metering.service.url, ingest_only, identify=header_identity("X-User")
        )
    assert missing.value.status == 403
    down = f"http://127.0.0.1:{free_port()}"
    started = MeterbillWSGI(host.wsgi_app, down, "mb_any_key", identify=header_identity("X-User"))
    started.guard.close(timeout=0)


def test_a_refused_key_is_said_once_and_nothing_queues_forever(
    metering: Metering, client_log: Records
) -> None:
    buffer = EventBuffer(
        MeterbillClient(metering.service.url, metering.key, retries=0),
        flush_interval=0.05,
        max_backoff=0.1,
    )
    try:
        buffer.add(usage_event("amy"))
        _wait(lambda: buffer.pending == 0)
        prefix = metering.key.removeprefix("mb_").split("_")[0]
        with metering.service.db.transaction() as session:
            revoke_api_key(session, prefix)
        for _ in range(5):
            buffer.add(usage_event("amy"))
        _wait(lambda: buffer.refused is not None)
        for _ in range(100):
            buffer.add(usage_event("amy"))
        assert buffer.pending == 0 and buffer.dropped >= 100
        loud = [r for r in client_log.records if r.levelno == logging.CRITICAL]
        assert len(loud) == 1 and "configuration error" in loud[0].getMessage()
    finally:
        buffer.close(timeout=1)
    assert metering.stored_events() == 1


def test_the_disk_buffer_outlives_a_crash_of_the_host(metering: Metering, tmp_path: Path) -> None:
    path = tmp_path / "events.db"
    down = f"http://127.0.0.1:{free_port()}"
    crash = textwrap.dedent(
        f"""
        import os
        from meterbill.client import EventBuffer, MeterbillClient, usage_event
        buffer = EventBuffer(MeterbillClient({down!r}, "mb_x_y", retries=0), path={str(path)!r})
        for index in range(3):
            buffer.add(usage_event("crashy", id=f"crash-{{index}}"))
        os._exit(9)  # the host dies: no close(), no flush
        """
    )
    died = subprocess.run([sys.executable, "-c", crash], timeout=60, check=False)
    assert died.returncode == 9
    buffer = EventBuffer(
        MeterbillClient(metering.service.url, metering.key, retries=0),
        flush_interval=0.05,
        path=path,
    )
    try:
        _wait(lambda: metering.stored_events() == 3)
        _wait(lambda: buffer.pending == 0)
    finally:
        buffer.close(timeout=2)
    reopened = EventBuffer(MeterbillClient(metering.service.url, metering.key), path=path)
    assert reopened.pending == 0
    reopened.close(timeout=1)
