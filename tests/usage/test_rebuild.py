"""`meterbill usage rebuild`: totals recomputed from raw events, drift reported and fixed."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import delete, update
from typer.testing import CliRunner

from meterbill.cli import app
from meterbill.usage.models import UsageDaily, UsageMonthly
from tests.usage.conftest import Metering, event


def test_rebuild_reports_drift_then_fixes_it(metering: Metering) -> None:
    yesterday = datetime.now(UTC) - timedelta(days=1)
    metering.send(
        [
            event("paul", value=3),
            event("paul", value=4),
            event("paul", value=2, at=yesterday),
            event("rita", "tokens", 50),
        ]
    )
    runner = CliRunner()
    env = {"METERBILL_DATABASE_URL": metering.service.settings.database_url}
    clean = runner.invoke(app, ["usage", "rebuild"], env=env)
    assert clean.exit_code == 0, clean.output
    assert "4 events, 3 daily totals, 0 drifted" in clean.output, clean.output

    with metering.service.db.transaction() as session:
        session.execute(
            update(UsageDaily)
            .where(UsageDaily.user_id == "paul", UsageDaily.day == datetime.now(UTC).date())
            .values(total=999)
        )
        session.execute(delete(UsageDaily).where(UsageDaily.user_id == "rita"))
        session.execute(update(UsageMonthly).where(UsageMonthly.user_id == "paul").values(total=1))
    assert metering.daily_total("paul") == 999 + 2

    dry = runner.invoke(app, ["usage", "rebuild", "--dry-run"], env=env)
    assert "3 drifted" in dry.output and "not fixed" in dry.output
    assert "stored=999/2 events/peak 4\trebuilt=7/2 events/peak 4" in dry.output
    assert "usage_monthly\tpaul\tapi_calls" in dry.output
    assert metering.daily_total("paul") == 999 + 2

    fixed = runner.invoke(app, ["usage", "rebuild"], env=env)
    assert fixed.exit_code == 0 and "3 drifted" in fixed.output and "fixed" in fixed.output
    assert metering.daily_total("paul") == 9
    assert metering.daily_total("rita", "tokens") == 50
    assert metering.check("paul").json()["used"] == _this_month(metering, "paul")
    assert "0 drifted" in runner.invoke(app, ["usage", "rebuild"], env=env).output


def _this_month(metering: Metering, user_id: str) -> int:
    """The user's api_calls this month, summed from the raw events."""
    from sqlalchemy import func, select

    from meterbill.usage.models import ConsumptionEvent

    start = datetime.now(UTC).replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    with metering.service.db.reading() as session:
        return int(
            session.scalar(
                select(func.sum(ConsumptionEvent.value)).where(
                    ConsumptionEvent.user_id == user_id, ConsumptionEvent.date >= start
                )
            )
            or 0
        )
