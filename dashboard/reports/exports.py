"""CSV exports: report tables, call lists and Google Ads offline conversion files.

Google Ads files follow Google's upload templates ("Import phone call conversions" and
"Import conversions from ad clicks", support.google.com/google-ads): a first row
`Parameters:TimeZone=<IANA zone>` that applies to every time in the file, then the header row
Google expects, then one row per conversion. Times are written `yyyy-MM-dd HH:mm:ss` in that
zone, one of the formats the templates list; caller ids are E.164 with the leading `+`.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import re
import zoneinfo
from collections.abc import Iterable, Sequence
from decimal import Decimal
from typing import Final

from dashboard.reports.models import UNITS_PER_CALL
from dashboard.reports.queries import CallLine, Row
from dashboard.reports.roles import caller_for
from tracker.models import Call

CALL_CONVERSION_HEADER: Final = (
    "Caller's Phone Number",
    "Call Start Time",
    "Conversion Name",
    "Conversion Time",
    "Conversion Value",
    "Conversion Currency",
)
CLICK_CONVERSION_HEADER: Final = (
    "Google Click ID",
    "Conversion Name",
    "Conversion Time",
    "Conversion Value",
    "Conversion Currency",
)
GOOGLE_TIME_FORMAT: Final = "%Y-%m-%d %H:%M:%S"
# Google's default "call length" for a call to count as a conversion is 60 seconds.
DEFAULT_MIN_DURATION: Final = 60
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
# A phone number, full or masked: digits, spaces and mask dots. Not dashes, dots or brackets:
# "+1234-5678" (a visitor's utm_campaign) is a formula Excel evaluates (found by an audit).
_PHONE = re.compile(r"\+[0-9][0-9 •]{3,30}")
# Google click ids are URL-safe base64; anything else came from a forged landing URL.
_GCLID = re.compile(r"[A-Za-z0-9_-]{10,300}")


def safe_cell(value: object) -> str:
    """Write a cell so a spreadsheet never runs it as a formula (CSV injection).

    Visitor-supplied text (campaign names, landing pages) reaches these files; a leading `=`
    or `@` would be evaluated by Excel. Phone numbers keep their `+`: they are ours, E.164.
    """
    text = "" if value is None else str(value)
    if _PHONE.fullmatch(text):
        return text
    if text.startswith(_FORMULA_START) and not _is_number(text):
        return "'" + text
    return text


def _is_number(text: str) -> bool:
    try:
        Decimal(text)
    except ArithmeticError:
        return False
    return True


def _csv(
    header: Sequence[str],
    rows: Iterable[Sequence[object]],
    preamble: str | None = None,
    trusted: frozenset[int] = frozenset(),
) -> str:
    """Write CSV with CRLF line ends (RFC 4180); `trusted` columns are validated already."""
    buffer = io.StringIO()
    if preamble is not None:
        buffer.write(preamble + "\r\n")
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow(header)
    for row in rows:
        writer.writerow(
            [
                ("" if c is None else str(c)) if i in trusted else safe_cell(c)
                for i, c in enumerate(row)
            ]
        )
    return buffer.getvalue()


def tenths(value: int) -> str:
    """Write a number of tenths of a call as a decimal ("12.3")."""
    return f"{value // 10}.{value % 10}"


def milli(value: int) -> str:
    return f"{Decimal(value) / UNITS_PER_CALL:.3f}"


def _rate(value: float | None) -> str:
    return "" if value is None else f"{value * 100:.1f}"


def _money(amounts: dict[str, Decimal]) -> str:
    return " ".join(f"{amount:.2f} {currency}" for currency, amount in sorted(amounts.items()))


REPORT_HEADER: Final = (
    "value",
    "calls",
    "calls_exact",
    "answered_rate_pct",
    "missed_rate_pct",
    "average_duration_s",
    "first_time_callers",
    "sessions",
    "calls_per_1000_sessions",
    "sales",
    "leads",
    "cost",
    "cost_per_call",
    "previous_calls",
)


def report_csv(rows: Sequence[Row], total: Row) -> str:
    """Write a breakdown table as on screen (calls rounded to tenths that add up), plus a total."""

    def line(row: Row, label: str) -> list[object]:
        m = row.current
        return [
            label,
            tenths(row.display_tenths),
            milli(m.calls),
            _rate(m.answered_rate),
            _rate(m.missed_rate),
            "" if m.average_duration is None else f"{m.average_duration:.0f}",
            milli(m.first_time),
            m.sessions,
            "" if m.per_thousand_sessions is None else f"{m.per_thousand_sessions:.2f}",
            milli(m.sales),
            milli(m.leads),
            _money(row.costs),
            _money(row.cost_per_call()),
            milli(row.previous.calls),
        ]

    return _csv(REPORT_HEADER, [*(line(r, r.value) for r in rows), line(total, "Total")])


CALLS_HEADER: Final = (
    "call_id",
    "site",
    "started_at",
    "caller",
    "first_time_caller",
    "tracking_number",
    "channel",
    "source",
    "medium",
    "campaign",
    "term",
    "outcome",
    "duration_s",
    "outcome_tag",
    "attribution_method",
    "confidence",
    "credit",
)


def calls_csv(lines: Sequence[CallLine], role: str) -> str:
    """Write a drill-down list; caller numbers masked unless the role may see them."""
    return _csv(
        CALLS_HEADER,
        (
            [
                line.call.id,
                line.site.name,
                line.call.started_at.astimezone(
                    zoneinfo.ZoneInfo(line.site.timezone or "UTC")
                ).isoformat(),
                caller_for(role, line.call.caller_e164) or "",
                "yes" if line.call.first_time_caller else "no",
                line.call.tracking_e164,
                line.call.channel or "",
                line.call.source or "",
                line.call.medium or "",
                line.call.campaign or "",
                line.call.term or "",
                line.call.outcome or line.call.status,
                line.call.duration_s if line.call.duration_s is not None else "",
                line.call.outcome_tag or "",
                line.call.method,
                f"{line.call.confidence:.2f}",
                milli(line.credit),
            ]
            for line in lines
        ),
    )


def series_csv(dates: Sequence[dt.date], current: Sequence[int], previous: Sequence[int]) -> str:
    return _csv(
        ("date", "calls", "previous_period_calls"),
        (
            [d.isoformat(), milli(c), milli(p)]
            for d, c, p in zip(dates, current, previous, strict=True)
        ),
    )


WEEKDAYS: Final = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")


def heatmap_csv(grid: Sequence[Sequence[int]]) -> str:
    return _csv(
        ("weekday", *(f"{h:02d}h" for h in range(24))),
        ([WEEKDAYS[d], *(milli(v) for v in grid[d])] for d in range(7)),
    )


def _google_time(at: dt.datetime, tz: zoneinfo.ZoneInfo) -> str:
    return at.astimezone(tz).strftime(GOOGLE_TIME_FORMAT)


def conversion_time(call: Call) -> dt.datetime:
    """When the conversion happened: the end of the call (Google wants it after the start)."""
    if call.ended_at is not None and call.ended_at > call.started_at:
        return call.ended_at
    return call.started_at + dt.timedelta(seconds=max(call.duration_s or 0, 1))


def google_ads_calls_csv(
    calls: Sequence[Call],
    tz: zoneinfo.ZoneInfo,
    *,
    conversion_name: str,
    value: Decimal,
    currency: str,
) -> str:
    """Write Google Ads' offline call-conversion file (caller ids in E.164)."""
    return _csv(
        CALL_CONVERSION_HEADER,
        (
            [
                call.caller_e164,
                _google_time(call.started_at, tz),
                conversion_name,
                _google_time(conversion_time(call), tz),
                f"{value:.2f}",
                currency,
            ]
            for call in calls
            if call.caller_e164
        ),
        preamble=f"Parameters:TimeZone={tz.key}",
    )


def google_ads_clicks_csv(
    rows: Sequence[tuple[Call, str]],
    tz: zoneinfo.ZoneInfo,
    *,
    conversion_name: str,
    value: Decimal,
    currency: str,
) -> str:
    """Write Google Ads' click conversion file: one row per call whose session had a gclid."""
    return _csv(
        CLICK_CONVERSION_HEADER,
        (
            [gclid, conversion_name, _google_time(call.started_at, tz), f"{value:.2f}", currency]
            for call, gclid in rows
            if _GCLID.fullmatch(gclid)
        ),
        preamble=f"Parameters:TimeZone={tz.key}",
        trusted=frozenset({0}),
    )
