"""Charts drawn on the server as SVG: no script, nothing fetched, readable by screen
readers through their <title>/<desc> (each chart also has a data table beside it)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date

from markupsafe import Markup, escape

from meterbill.usage.reports import DayUsage

WIDTH, HEIGHT, PAD_LEFT, PAD_BOTTOM, PAD_TOP = 640, 220, 64, 28, 12


def _scale(value: float, top: float) -> float:
    plot = HEIGHT - PAD_BOTTOM - PAD_TOP
    return HEIGHT - PAD_BOTTOM - (value / top * plot if top else 0)


def _svg(title: str, description: str, body: list[str], chart_id: str) -> Markup:
    head = (
        f'<svg class="chart" id="{escape(chart_id)}" viewBox="0 0 {WIDTH} {HEIGHT}" '
        f'role="img" aria-labelledby="{escape(chart_id)}-t {escape(chart_id)}-d" '
        f'xmlns="http://www.w3.org/2000/svg" preserveAspectRatio="xMidYMid meet">'
        f'<title id="{escape(chart_id)}-t">{escape(title)}</title>'
        f'<desc id="{escape(chart_id)}-d">{escape(description)}</desc>'
    )
    return Markup(head + "".join(body) + "</svg>")  # noqa: S704 (every value is escaped)


def _axis(top: float, label: str) -> list[str]:
    parts = [
        f'<line x1="{PAD_LEFT}" y1="{HEIGHT - PAD_BOTTOM}" x2="{WIDTH - 8}" '
        f'y2="{HEIGHT - PAD_BOTTOM}" class="axis"/>'
    ]
    for fraction in (0, 0.5, 1):
        y = _scale(top * fraction, top)
        parts.append(
            f'<text x="{PAD_LEFT - 6}" y="{y + 4:.1f}" class="tick" text-anchor="end">'
            f"{escape(_short(top * fraction))}</text>"
        )
    parts.append(f'<text x="4" y="{PAD_TOP + 4}" class="tick">{escape(label)}</text>')
    return parts


def _short(value: float) -> str:
    for unit, size in (("M", 1_000_000), ("k", 1_000)):
        if abs(value) >= size:
            return f"{value / size:.1f}{unit}".replace(".0", "")
    return f"{value:.0f}"


def bar_chart(
    bars: Sequence[tuple[str, float]], title: str, description: str, unit: str, chart_id: str
) -> Markup:
    """Vertical bars, one per (label, value)."""
    top = max([value for _, value in bars] + [1]) * 1.1
    step = (WIDTH - PAD_LEFT - 8) / max(len(bars), 1)
    body = _axis(top, unit)
    for index, (label, value) in enumerate(bars):
        x = PAD_LEFT + index * step + step * 0.2
        y = _scale(max(value, 0), top)
        body.append(
            f'<rect x="{x:.1f}" y="{y:.1f}" width="{step * 0.6:.1f}" '
            f'height="{HEIGHT - PAD_BOTTOM - y:.1f}" class="bar"/>'
            f'<text x="{x + step * 0.3:.1f}" y="{HEIGHT - 10}" class="tick" '
            f'text-anchor="middle">{escape(label)}</text>'
        )
    return _svg(title, description, body, chart_id)


def usage_chart(
    month_start: date,
    days_in_month: int,
    days: Sequence[DayUsage],
    limit: int | None,
    soft_ratio: float,
    title: str,
    chart_id: str,
) -> Markup:
    """Usage so far in the month, day by day, against the limit and the alert threshold."""
    peak = max([d.month_to_date for d in days] + [0])
    top = max(peak, limit or 0, 1) * 1.1
    step = (WIDTH - PAD_LEFT - 8) / days_in_month
    body = _axis(top, "")
    if limit:
        for value, css in ((limit, "limit-line"), (limit * soft_ratio, "soft-line")):
            y = _scale(value, top)
            body.append(
                f'<line x1="{PAD_LEFT}" y1="{y:.1f}" x2="{WIDTH - 8}" y2="{y:.1f}" class="{css}"/>'
            )
    for item in days:
        index = (item.day - month_start).days
        x = PAD_LEFT + index * step + step * 0.15
        y = _scale(item.month_to_date, top)
        state = "hard" if limit and item.month_to_date >= limit else "ok"
        if limit and state == "ok" and item.month_to_date >= limit * soft_ratio:
            state = "soft"
        body.append(
            f'<rect x="{x:.1f}" y="{y:.1f}" width="{step * 0.7:.1f}" '
            f'height="{HEIGHT - PAD_BOTTOM - y:.1f}" class="bar {state}">'
            f"<title>{item.day.isoformat()}: {item.month_to_date}</title></rect>"
        )
    for day in (1, 10, 20, days_in_month):
        x = PAD_LEFT + (day - 1) * step + step / 2
        body.append(
            f'<text x="{x:.1f}" y="{HEIGHT - 10}" class="tick" text-anchor="middle">{day}</text>'
        )
    limit_text = f"limit {limit}" if limit else "no limit"
    description = f"{peak} used so far this month, {limit_text}, {len(days)} days with usage."
    return _svg(title, description, body, chart_id)
