"""Ad spend imported from CSV, for cost per call by channel and campaign.

The file has a header row; columns are found by name, in any order, case-insensitive:
`date` (YYYY-MM-DD), then `channel`, or `source_medium` ("google / cpc"), or `source` and
`medium`; `campaign` (optional), `cost` (a decimal number, "12.50" or "12,50") and `currency`
(ISO 4217). Source/medium without a channel is classified with GA4's default channel rules,
the same ones the sessions use. An import replaces the spend already imported for the same
site (or the whole account) on the days the file contains, so a corrected file can simply
be imported again.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import re
import secrets
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Final

from sqlalchemy import delete
from sqlalchemy.ext.asyncio import AsyncSession

from tracker.channels import CHANNELS, channel_group
from tracker.errors import ApiError
from tracker.models import AdCost

MAX_ROWS: Final = 100_000
_CURRENCY = re.compile(r"^[A-Z]{3}\Z")
_CHANNEL_NAMES: Final = {c.casefold(): c for c in CHANNELS}


@dataclass(frozen=True)
class CostRow:
    day: dt.date
    channel: str
    source: str | None
    medium: str | None
    campaign: str | None
    cost: Decimal
    currency: str


def _bad(line: int, message: str) -> ApiError:
    return ApiError("invalid_costs", f"line {line}: {message}", line=line)


def _decimal(text: str, line: int) -> Decimal:
    raw = text.strip().replace("\u00a0", "").replace(" ", "")
    if "," in raw and "." not in raw:
        raw = raw.replace(",", ".")
    try:
        value = Decimal(raw)
    except InvalidOperation as exc:
        raise _bad(line, f"cost {text!r} is not a number") from exc
    # Checked before rounding (1e30 has more digits than rounding can hold) and after
    # (999999999999.999 rounds past what the column holds: 12 digits, 2 decimals).
    limit = Decimal("1e12")
    if not value.is_finite() or value < 0 or value >= limit:
        raise _bad(line, f"cost {text!r} must be a positive amount under 1,000,000,000,000")
    rounded = value.quantize(Decimal("0.01"))
    if rounded >= limit:
        raise _bad(line, f"cost {text!r} must be a positive amount under 1,000,000,000,000")
    return rounded


def parse_costs_csv(text: str) -> list[CostRow]:
    """Read a spend file; raise ApiError naming the first bad line."""
    try:
        return _parse_costs_csv(text)
    except csv.Error as exc:  # a field over csv's 128 KiB limit, a NUL in a quoted field
        raise ApiError("invalid_costs", f"the file is not a readable CSV file: {exc}") from exc


def _parse_costs_csv(text: str) -> list[CostRow]:
    sample = text[:4096]
    try:
        dialect: type[csv.Dialect] | csv.Dialect = csv.Sniffer().sniff(sample, delimiters=",;\t")
    except csv.Error:
        dialect = csv.excel
    reader = csv.reader(io.StringIO(text.lstrip("\ufeff")), dialect)
    header = next(reader, None)
    if header is None:
        raise ApiError("invalid_costs", "the file is empty")
    names = [h.strip().casefold().replace(" ", "_").replace("/", "_") for h in header]
    column = {name: index for index, name in enumerate(names)}
    for needed in ("date", "cost", "currency"):
        if needed not in column:
            raise ApiError("invalid_costs", f"the header has no {needed!r} column")
    if not ({"channel", "source_medium"} & column.keys() or {"source", "medium"} <= column.keys()):
        raise ApiError(
            "invalid_costs", "the header needs channel, source_medium or source and medium"
        )
    rows: list[CostRow] = []
    for line, record in enumerate(reader, start=2):
        if not any(cell.strip() for cell in record):
            continue
        if len(rows) >= MAX_ROWS:
            raise ApiError("invalid_costs", f"a file holds at most {MAX_ROWS} rows")

        def cell(name: str, record: list[str] = record) -> str | None:
            index = column.get(name)
            if index is None or index >= len(record):
                return None
            return record[index].strip() or None

        try:
            day = dt.date.fromisoformat(cell("date") or "")
        except ValueError as exc:
            raise _bad(line, "date must be written YYYY-MM-DD") from exc
        source, medium = cell("source"), cell("medium")
        if cell("source_medium"):
            left, _, right = (cell("source_medium") or "").partition("/")
            source, medium = left.strip() or None, right.strip() or None
        campaign = cell("campaign")
        channel_text = cell("channel")
        if channel_text:
            channel = _CHANNEL_NAMES.get(channel_text.casefold())
            if channel is None:
                raise _bad(line, f"{channel_text!r} is not a GA4 default channel group")
        elif source or medium:
            channel = channel_group(source or "(direct)", medium or "(none)", campaign)
        else:
            raise _bad(line, "a channel or a source/medium is required")
        currency = (cell("currency") or "").upper()
        if not _CURRENCY.match(currency):
            raise _bad(line, "currency must be a 3-letter ISO 4217 code")
        rows.append(
            CostRow(
                day=day,
                channel=channel,
                source=source[:200] if source else None,
                medium=medium[:200] if medium else None,
                campaign=campaign[:300] if campaign else None,
                cost=_decimal(cell("cost") or "", line),
                currency=currency,
            )
        )
    if not rows:
        raise ApiError("invalid_costs", "the file has no data rows")
    return rows


async def import_costs(
    db: AsyncSession, account_id: int, site_id: int | None, rows: list[CostRow], now: dt.datetime
) -> str:
    """Store the rows, replacing earlier spend of the same scope on the same days."""
    import_id = secrets.token_hex(8)
    days = sorted({r.day for r in rows})
    site_condition = AdCost.site_id.is_(None) if site_id is None else AdCost.site_id == site_id
    for start in range(0, len(days), 500):
        await db.execute(
            delete(AdCost).where(
                AdCost.account_id == account_id,
                site_condition,
                AdCost.day.in_(days[start : start + 500]),
            )
        )
    db.add_all(
        AdCost(
            account_id=account_id,
            site_id=site_id,
            day=r.day,
            channel=r.channel,
            source=r.source,
            medium=r.medium,
            campaign=r.campaign,
            cost=r.cost,
            currency=r.currency,
            import_id=import_id,
            imported_at=now,
        )
        for r in rows
    )
    await db.flush()
    return import_id
