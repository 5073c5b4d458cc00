"""Whatever the batches, repetitions and order: totals equal a direct sum of accepted events."""

from __future__ import annotations

import uuid
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from itertools import pairwise

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.usage.conftest import Metering, event

USERS = ("u1", "u2", "u3")
METRICS = ("api_calls", "tokens")

# An event is (id number, user, metric, value, days ago); ids are drawn from a small pool
# so the same id often comes back, possibly with other fields: the first one counts, per
# user and UTC month (the raw log's unique key, one partition per month on PostgreSQL).
events_strategy = st.lists(
    st.tuples(
        st.integers(0, 30),
        st.sampled_from(USERS),
        st.sampled_from(METRICS),
        st.integers(0, 1_000),
        st.integers(0, 3),
    ),
    max_size=60,
)


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(raw=events_strategy, cuts=st.lists(st.integers(0, 60), max_size=4))
def test_totals_equal_the_sum_of_accepted_events(
    metering: Metering, raw: list[tuple[int, str, str, int, int]], cuts: list[int]
) -> None:
    run = uuid.uuid4().hex[:8]  # each example gets its own users and ids
    now = datetime.now(UTC) - timedelta(seconds=5)
    events = [
        event(f"{run}-{user}", metric, value, id=f"{run}-{n}", at=now - timedelta(days=ago))
        for n, user, metric, value, ago in raw
    ]
    bounds = sorted({0, len(events), *(c for c in cuts if c < len(events))})
    new = 0
    for start, stop in pairwise(bounds):
        answer = metering.send(events[start:stop])
        assert answer.status_code == 202, answer.text
        new += answer.json()["new"]

    accepted: dict[tuple[str, str, str], dict[str, object]] = {}
    for e in events:
        accepted.setdefault((str(e["user_id"]), str(e["id"]), str(e["timestamp"])[:7]), e)
    assert new == len(accepted)
    expected: dict[tuple[str, str], int] = defaultdict(int)
    this_month: dict[tuple[str, str], int] = defaultdict(int)
    for e in accepted.values():
        key = (str(e["user_id"]), str(e["metric"]))
        expected[key] += int(e["value"])  # type: ignore[call-overload]
        if str(e["timestamp"])[:7] == datetime.now(UTC).isoformat()[:7]:
            this_month[key] += int(e["value"])  # type: ignore[call-overload]
    for user in (f"{run}-{u}" for u in USERS):
        for metric in METRICS:
            assert metering.daily_total(user, metric) == expected[(user, metric)]
            if (user, metric) in expected:  # the quota read: this month's total
                assert metering.check(user, metric).json()["used"] == this_month[(user, metric)]
