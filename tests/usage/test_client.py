"""meterbill.client against a running meterbill: answers lost on the way back are retried
with the same ids, so nothing is counted twice."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import httpx

from meterbill.client import AsyncMeterbillClient, MeterbillClient, usage_event
from tests.usage.conftest import Metering


class LosesFirstAnswer(httpx.HTTPTransport):
    """Delivers every request, but the first answer is 'lost' (a read timeout)."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.calls += 1
        response = super().handle_request(request)
        if self.calls == 1:
            response.read()
            raise httpx.ReadTimeout("answer lost", request=request)
        return response


class AsyncLosesFirstAnswer(httpx.AsyncHTTPTransport):
    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.calls += 1
        response = await super().handle_async_request(request)
        if self.calls == 1:
            await response.aread()
            raise httpx.ReadTimeout("answer lost", request=request)
        return response


def test_a_retried_batch_is_counted_once(metering: Metering) -> None:
    transport = LosesFirstAnswer()
    events = [
        {"user_id": "ivy", "metric": "tokens", "value": 10, "timestamp": e["timestamp"]}
        for e in (usage_event("ivy") for _ in range(3))
    ]  # no ids: the client gives them, once
    with MeterbillClient(
        metering.service.url, metering.key, transport=transport, backoff=0.01
    ) as client:
        result = client.send_events(events)
    assert transport.calls == 2
    assert (result.new, result.duplicates) == (0, 3)  # the first attempt had stored them
    assert metering.daily_total("ivy", "tokens") == 30


def test_async_consume_retried_is_counted_once_and_reports_the_limit(
    make_metering: Callable[..., Metering],
) -> None:
    metering = make_metering(limit_free_api_calls=2)

    async def scenario() -> list[bool]:
        transport = AsyncLosesFirstAnswer()
        async with AsyncMeterbillClient(
            metering.service.url, metering.key, transport=transport, backoff=0.01
        ) as client:
            first = await client.consume("jo")  # stored, answer lost, retried: duplicate
            second = await client.consume("jo")
            third = await client.consume("jo")  # past the limit: refused
            status = await client.check("jo")
        assert transport.calls == 5
        assert (status.used, status.limit, status.alert) == (2, 2, "hard_limit_reached")
        return [first.allowed, second.allowed, third.allowed]

    assert asyncio.run(scenario()) == [True, True, False]
    assert metering.daily_total("jo") == 2
