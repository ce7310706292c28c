"""Pre-aggregated report tables: sessions and attributed calls per site, local day and value.

Why pre-aggregation and not only indexes: a report sums a date range, and with indexes alone
the work grows with the rows in that range, so ten times the data costs ten times the time.
The rollups hold one row per (site, local day, dimension value) — and per attribution model for
calls — so their size follows the number of distinct channels, campaigns and pages a day
sees, which grows far slower than traffic. A 90-day channel report reads a few thousand rows
whatever the traffic; see docs/benchmarks.md for the measurements.

Freshness: every call event telephony reports (`call_listeners`) marks the call's local day
dirty; the refresher (a background task of every worker, `REFRESH_SECONDS`) recomputes dirty
days, and always today and yesterday, for sessions (written by the hot collect path, which
must not pay for a write per event) and for calls (outcome tags set from the console). Tags on
older calls are found in the audit log (`call.tagged`), read by primary-key range. The
dashboard is therefore at most `REFRESH_SECONDS` behind; `calltrack reports refresh --all`
rebuilds everything (after an import or a data-subject erasure).

Several workers may refresh at once: dirty days are claimed with a DELETE ... RETURNING
(`SKIP LOCKED` on PostgreSQL), and a site's session rollup is taken with a row lock on its
state row, so no two workers compute the same rows.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import re
import zoneinfo
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Final, cast

from sqlalchemy import Table, and_, delete, func, insert, select, text, true, tuple_
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from dashboard.reports.models import (
    DIRECT,
    LOOKBACK,
    MAX_TOUCHES,
    MODELS,
    UNITS_PER_CALL,
    Model,
    Touch,
    allocate,
    shares,
)
from tracker.clock import Clock
from tracker.db import Database
from tracker.models import (
    AuditEntry,
    Call,
    ReportCallDay,
    ReportDirtyDay,
    ReportRollupState,
    ReportSessionDay,
    Site,
    TrackedSession,
)
from tracker.privacy.find import Person
from tracker.privacy.restrict import call_visible, session_visible

log = logging.getLogger("calltrack.reports")

# How often each worker refreshes: the dashboard's figures are at most this old.
REFRESH_SECONDS: Final = 30
# A session that started this long before a refresh may still have been committed after it.
LATE_COMMITS: Final = dt.timedelta(minutes=5)
# The refresher's first round waits this long after start-up (let the worker settle first).
FIRST_REFRESH_DELAY: Final = 10.0
# Dimensions of the breakdown tables; "total" has the single value "all".
DIMENSIONS: Final = ("channel", "source_medium", "campaign", "term", "landing")
SESSION_DIMENSIONS: Final = (*DIMENSIONS, "total")
# Rows that do not depend on the model are stored once, under this model name.
ANY_MODEL: Final = "any"
ANY_DIMENSIONS: Final = ("total", "slot", "tag")
NOT_SET: Final = "(not set)"
UNATTRIBUTED: Final = "(unattributed)"
SALE_TAGS: Final = frozenset({"sale"})
LEAD_TAGS: Final = frozenset({"lead"})
MISSED_OUTCOMES: Final = frozenset({"missed", "busy", "failed"})
MISSED_STATUSES: Final = frozenset({"no-answer", "busy", "failed", "canceled"})
VALUE_WIDTH: Final = 300
# Dirty days recomputed per transaction: keeps each transaction short under heavy backfill.
DAYS_PER_BATCH: Final = 16
_SCHEME_HOST = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*://[^/?#]*")


def zone(name: str | None) -> zoneinfo.ZoneInfo:
    """Return the site's time zone (UTC when the name is unknown)."""
    try:
        return zoneinfo.ZoneInfo(name or "UTC")
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        return zoneinfo.ZoneInfo("UTC")


def local_day(at: dt.datetime, tz: zoneinfo.ZoneInfo) -> dt.date:
    return at.astimezone(tz).date()


def day_bounds(
    first: dt.date, last: dt.date, tz: zoneinfo.ZoneInfo
) -> tuple[dt.datetime, dt.datetime]:
    """Return the UTC instants [start, end) of local days first..last."""
    start = dt.datetime.combine(first, dt.time(), tz).astimezone(dt.UTC)
    end = dt.datetime.combine(last + dt.timedelta(days=1), dt.time(), tz).astimezone(dt.UTC)
    return start, end


def in_local_days(
    sites: Iterable[Site], first: dt.date, last: dt.date, site_column: Any, time_column: Any
) -> list[Any]:
    """Return one condition per site: its rows whose instant falls in local days first..last."""
    conditions = []
    for site in sites:
        start, end = day_bounds(first, last, zone(site.timezone))
        conditions.append(and_(site_column == site.id, time_column >= start, time_column < end))
    return conditions


def landing_path(url: str | None) -> str:
    """Reduce a landing URL to its path: the query holds click ids, not a page."""
    if not url:
        return NOT_SET
    path = _SCHEME_HOST.sub("", url, count=1).split("#", 1)[0].split("?", 1)[0]
    return (path or "/")[:VALUE_WIDTH]


def source_medium(source: str | None, medium: str | None) -> str:
    return f"{source or '(direct)'} / {medium or '(none)'}"[:VALUE_WIDTH]


@dataclass(frozen=True, slots=True)
class Visit:
    """A touch with every dimension value the reports break down by."""

    started_at: dt.datetime
    channel: str
    values: tuple[str, str, str, str, str]

    @property
    def touch(self) -> Touch:
        return Touch(self.started_at, self.channel)


def visit_of(
    started_at: dt.datetime,
    channel: str | None,
    source: str | None,
    medium: str | None,
    campaign: str | None,
    term: str | None,
    landing_url: str | None,
) -> Visit:
    """Build the dimension values of one touch (the same rules as the session rollup)."""
    name = channel or UNATTRIBUTED
    return Visit(
        started_at,
        name,
        (
            name[:VALUE_WIDTH],
            source_medium(source, medium) if channel else NOT_SET,
            (campaign or NOT_SET)[:VALUE_WIDTH],
            (term or NOT_SET)[:VALUE_WIDTH],
            landing_path(landing_url),
        ),
    )


@dataclass(frozen=True, slots=True)
class CallFacts:
    """What one call adds to the rollups besides its credit."""

    started_at: dt.datetime
    answered: bool
    missed: bool
    first_time: bool
    talk_seconds: int
    tag: str | None


# What the rollup reads of a call (rows of these columns stand in for Call objects).
_CALL_COLUMNS = (
    Call.id,
    Call.site_id,
    Call.session_id,
    Call.started_at,
    Call.answered_at,
    Call.status,
    Call.outcome,
    Call.outcome_tag,
    Call.duration_s,
    Call.first_time_caller,
    Call.channel,
    Call.source,
    Call.medium,
    Call.campaign,
    Call.term,
)


def call_facts(call: Any) -> CallFacts:
    answered = call.outcome == "answered" or (call.outcome is None and call.answered_at is not None)
    missed = not answered and (
        call.outcome in MISSED_OUTCOMES or (call.outcome is None and call.status in MISSED_STATUSES)
    )
    return CallFacts(
        started_at=call.started_at,
        answered=answered,
        missed=missed,
        first_time=bool(call.first_time_caller),
        talk_seconds=(call.duration_s or 0) if answered else 0,
        tag=call.outcome_tag,
    )


Key = tuple[str, str, dt.date, str]


class CallAccumulator:
    """Sum the credit of calls into rollup rows (model, dimension, day, value) → metrics."""

    def __init__(self) -> None:
        self.rows: dict[Key, list[int]] = defaultdict(lambda: [0] * 7)

    def add(
        self, model: str, dimension: str, day: dt.date, value: str, units: int, facts: CallFacts
    ) -> None:
        row = self.rows[(model, dimension, day, value)]
        row[0] += units
        if facts.answered:
            row[1] += units
            row[4] += units * facts.talk_seconds
        if facts.missed:
            row[2] += units
        if facts.first_time:
            row[3] += units
        if facts.tag in SALE_TAGS:
            row[5] += units
        if facts.tag in LEAD_TAGS:
            row[6] += units

    def add_call(self, journey: Sequence[Visit], facts: CallFacts, tz: zoneinfo.ZoneInfo) -> None:
        """Credit one call to its journey under every model (plus model-free rows)."""
        local = facts.started_at.astimezone(tz)
        day = local.date()
        if len(journey) == 1:
            # Every model gives a lone touch the whole call: add it once for all of them.
            for dimension, value in zip(DIMENSIONS, journey[0].values, strict=True):
                self.add(_EVERY_MODEL, dimension, day, value, UNITS_PER_CALL, facts)
        else:
            for model in MODELS:
                units = _units(model, journey, facts.started_at)
                for index, dimension in enumerate(DIMENSIONS):
                    merged: dict[str, int] = defaultdict(int)
                    for visit, share in zip(journey, units, strict=True):
                        if share:
                            merged[visit.values[index]] += share
                    for value, share in merged.items():
                        self.add(model, dimension, day, value, share, facts)
        self.add(ANY_MODEL, "total", day, "all", UNITS_PER_CALL, facts)
        self.add(
            ANY_MODEL, "slot", day, f"{local.weekday()}-{local.hour:02d}", UNITS_PER_CALL, facts
        )
        self.add(ANY_MODEL, "tag", day, facts.tag or "(none)", UNITS_PER_CALL, facts)

    def records(self, site_id: int) -> list[dict[str, Any]]:
        rows = {k: v for k, v in self.rows.items() if k[0] != _EVERY_MODEL}
        for (_, dimension, day, value), metrics in self.rows.items():
            if _ != _EVERY_MODEL:
                continue
            for model in MODELS:
                row = rows.setdefault((model, dimension, day, value), [0] * 7)
                for i, amount in enumerate(metrics):
                    row[i] += amount
        return [
            {
                "site_id": site_id,
                "model": model,
                "dimension": dimension,
                "day": day,
                "value": value,
                "calls": m[0],
                "answered": m[1],
                "missed": m[2],
                "first_time": m[3],
                "talk": m[4],
                "sales": m[5],
                "leads": m[6],
            }
            for (model, dimension, day, value), m in rows.items()
        ]


# Core tables for the bulk inserts: the ORM's bulk path costs more than the database here.
_CALL_TABLE: Final = cast(Table, ReportCallDay.__table__)
_SESSION_TABLE: Final = cast(Table, ReportSessionDay.__table__)
# Rows added once on behalf of every model (single-touch journeys), split out in `records`.
_EVERY_MODEL: Final = "*"
_UNITS_CACHE: dict[tuple[str, tuple[bool, ...]], list[int]] = {}


def _units(model: Model, journey: Sequence[Visit], at: dt.datetime) -> list[int]:
    """Allocate one call's milli-calls to a multi-touch journey (memoised where time-free)."""
    touches = [v.touch for v in journey]
    if model == "time_decay":
        return allocate(shares(model, touches, at), UNITS_PER_CALL)
    # Every other model depends only on the number of touches and which ones are Direct.
    key = (model, tuple(t.channel == DIRECT for t in touches))
    cached = _UNITS_CACHE.get(key)
    if cached is None:
        cached = allocate(shares(model, touches, at), UNITS_PER_CALL)
        if len(_UNITS_CACHE) < 10_000:
            _UNITS_CACHE[key] = cached
    return cached


_SESSION_COLUMNS = (
    TrackedSession.id,
    TrackedSession.site_id,
    TrackedSession.visitor_id,
    TrackedSession.started_at,
    TrackedSession.channel,
    TrackedSession.source,
    TrackedSession.medium,
    TrackedSession.campaign,
    TrackedSession.term,
    TrackedSession.landing_url,
)


def _visit_from_row(row: Any) -> Visit:
    return visit_of(
        row.started_at, row.channel, row.source, row.medium, row.campaign, row.term, row.landing_url
    )


async def journeys_for(db: AsyncSession, calls: Sequence[Any]) -> dict[int, list[Visit]]:
    """Return each call's journey, oldest first (see dashboard.reports.models)."""
    session_ids = {c.session_id for c in calls if c.session_id}
    attributed: dict[str, Any] = {}
    for chunk in _chunks(sorted(session_ids), 2000):
        for row in await db.execute(select(*_SESSION_COLUMNS).where(TrackedSession.id.in_(chunk))):
            attributed[row.id] = row
    visitors = {r.visitor_id for r in attributed.values() if r.visitor_id}
    site_ids = sorted({r.site_id for r in attributed.values() if r.visitor_id})
    history: dict[tuple[int, str], list[Any]] = defaultdict(list)
    if visitors:
        earliest = min(r.started_at for r in attributed.values() if r.visitor_id) - LOOKBACK
        latest = max(r.started_at for r in attributed.values() if r.visitor_id)
        for chunk in _chunks(sorted(visitors), 2000):
            rows = await db.execute(
                select(*_SESSION_COLUMNS).where(
                    TrackedSession.site_id.in_(site_ids),
                    TrackedSession.visitor_id.in_(chunk),
                    TrackedSession.started_at >= earliest,
                    TrackedSession.started_at <= latest,
                )
            )
            for row in rows:
                history[(row.site_id, row.visitor_id)].append(row)
        for rows_of_visitor in history.values():
            rows_of_visitor.sort(key=lambda r: (r.started_at, r.id))
    journeys: dict[int, list[Visit]] = {}
    for call in calls:
        anchor = attributed.get(call.session_id or "")
        if anchor is None:
            journeys[call.id] = [
                visit_of(
                    call.started_at,
                    call.channel,
                    call.source,
                    call.medium,
                    call.campaign,
                    call.term,
                    None,
                )
            ]
            continue
        if not anchor.visitor_id:
            journeys[call.id] = [_visit_from_row(anchor)]
            continue
        since = anchor.started_at - LOOKBACK
        touches = [
            r
            for r in history.get((anchor.site_id, anchor.visitor_id), [])
            if since <= r.started_at <= anchor.started_at and r.id != anchor.id
        ]
        touches = [*touches[-(MAX_TOUCHES - 1) :], anchor]
        journeys[call.id] = [_visit_from_row(r) for r in touches]
    return journeys


def _chunks(items: Sequence[Any], size: int) -> Iterable[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


async def rebuild_call_days(db: AsyncSession, site: Site, days: Iterable[dt.date]) -> int:
    """Recompute the call rollup of these local days of one site; return the calls counted."""
    tz = zone(site.timezone)
    wanted = sorted(set(days))
    counted = 0
    for group in _runs(wanted):
        start, end = day_bounds(group[0], group[-1], tz)
        await db.execute(
            delete(ReportCallDay).where(
                ReportCallDay.site_id == site.id,
                ReportCallDay.day >= group[0],
                ReportCallDay.day <= group[-1],
            )
        )
        # Plain rows, not ORM objects: a backfill reads hundreds of thousands of calls.
        calls = list(
            await db.execute(
                select(*_CALL_COLUMNS).where(
                    Call.site_id == site.id,
                    Call.direction == "inbound",
                    Call.started_at >= start,
                    Call.started_at < end,
                    # A restricted person's calls are kept but not reported.
                    call_visible(site.account_id),
                )
            )
        )
        if not calls:
            continue
        journeys = await journeys_for(db, calls)
        accumulator = CallAccumulator()
        for call in calls:
            accumulator.add_call(journeys[call.id], call_facts(call), tz)
        records = accumulator.records(site.id)
        for chunk in _chunks(records, 5000):
            await db.execute(insert(_CALL_TABLE), list(chunk))
        counted += len(calls)
    return counted


def _runs(days: Sequence[dt.date]) -> Iterable[list[dt.date]]:
    """Group sorted days into runs of consecutive days (one range query each)."""
    run: list[dt.date] = []
    for day in days:
        if run and (day - run[-1]).days != 1:
            yield run
            run = []
        run.append(day)
    if run:
        yield run


async def rebuild_session_days(db: AsyncSession, site: Site, first: dt.date, last: dt.date) -> None:
    """Recompute the session rollup of local days first..last of one site."""
    tz = zone(site.timezone)
    start, end = day_bounds(first, last, tz)
    await db.execute(
        delete(ReportSessionDay).where(
            ReportSessionDay.site_id == site.id,
            ReportSessionDay.day >= first,
            ReportSessionDay.day <= last,
        )
    )
    if db.get_bind().dialect.name == "postgresql":
        # The grouping sets sort a day range of sessions: keep the sorts in memory.
        await db.execute(text("SET LOCAL work_mem = '128MB'"))
        await db.execute(
            _PG_SESSION_ROLLUP,
            {
                "site": site.id,
                "account": site.account_id,
                "tz": tz.key,
                "start": start,
                "end": end,
            },
        )
        return
    counts: dict[tuple[str, dt.date, str], int] = defaultdict(int)
    result = await db.stream(
        select(*_SESSION_COLUMNS[3:]).where(
            TrackedSession.site_id == site.id,
            TrackedSession.started_at >= start,
            TrackedSession.started_at < end,
            # A restricted person's visits are kept but not counted.
            session_visible(site.account_id),
        )
    )
    async for row in result:
        visit = visit_of(
            row.started_at,
            row.channel,
            row.source,
            row.medium,
            row.campaign,
            row.term,
            row.landing_url,
        )
        day = local_day(row.started_at, tz)
        for dimension, value in zip(DIMENSIONS, visit.values, strict=True):
            counts[(dimension, day, value)] += 1
        counts[("total", day, "all")] += 1
    records = [
        {"site_id": site.id, "dimension": d, "day": day, "value": v, "sessions": n}
        for (d, day, v), n in counts.items()
    ]
    for chunk in _chunks(records, 5000):
        await db.execute(insert(_SESSION_TABLE), list(chunk))


# One scan of the sessions for every dimension (GROUPING SETS); the expressions mirror
# `visit_of` and `landing_path` exactly, which the tests check on both backends.
_PG_SESSION_ROLLUP = text(
    """
    WITH s AS (
        SELECT (started_at AT TIME ZONE :tz)::date AS day,
               left(channel, 300) AS ch,
               left(coalesce(source, '(direct)') || ' / ' || coalesce(medium, '(none)'), 300) AS sm,
               left(coalesce(campaign, '(not set)'), 300) AS cp,
               left(coalesce(term, '(not set)'), 300) AS tm,
               left(coalesce(nullif(split_part(split_part(regexp_replace(landing_url,
                    '^[a-zA-Z][a-zA-Z0-9+.-]*://[^/?#]*', ''), '#', 1), '?', 1), ''), '/'), 300)
                    AS lp
        FROM sessions
        WHERE site_id = :site AND started_at >= :start AND started_at < :end
          -- A restricted person's visits are kept but not counted (session_visible).
          AND NOT EXISTS (
              SELECT 1 FROM privacy_restrictions r
              WHERE r.account_id = :account
                AND ((r.kind = 'session' AND r.value = sessions.id)
                     OR (r.kind = 'visitor' AND r.value = sessions.visitor_id))
          )
    )
    INSERT INTO report_session_days (site_id, dimension, day, value, sessions)
    SELECT :site,
           CASE WHEN GROUPING(ch) = 0 THEN 'channel'
                WHEN GROUPING(sm) = 0 THEN 'source_medium'
                WHEN GROUPING(cp) = 0 THEN 'campaign'
                WHEN GROUPING(tm) = 0 THEN 'term'
                WHEN GROUPING(lp) = 0 THEN 'landing'
                ELSE 'total' END,
           day,
           coalesce(ch, sm, cp, tm, lp, 'all'),
           count(*)
    FROM s
    GROUP BY GROUPING SETS ((day, ch), (day, sm), (day, cp), (day, tm), (day, lp), (day))
    """
)


def _insert_ignore(db: AsyncSession, table: Any) -> Any:
    if db.get_bind().dialect.name == "postgresql":
        return postgresql.insert(table).on_conflict_do_nothing()
    return sqlite.insert(table).on_conflict_do_nothing()


async def mark_dirty(
    db: AsyncSession, site_id: int, days: Iterable[dt.date], now: dt.datetime
) -> None:
    """Ask the refresher to recompute these local days of a site's call rollup."""
    rows = [{"site_id": site_id, "day": d, "marked_at": now} for d in sorted(set(days))]
    if rows:
        await db.execute(_insert_ignore(db, ReportDirtyDay), rows)


async def mark_call_dirty(database: Database, call: Call, now: dt.datetime) -> None:
    """Mark the local day of a call dirty (a `call_listeners` entry calls this)."""
    async with database.begin() as db:
        timezone = await db.scalar(select(Site.timezone).where(Site.id == call.site_id))
        await mark_dirty(db, call.site_id, [local_day(call.started_at, zone(timezone))], now)


async def _claim_dirty(
    db: AsyncSession, limit: int, site_ids: Sequence[int] | None = None
) -> list[tuple[int, dt.date]]:
    chosen = (
        select(ReportDirtyDay.site_id, ReportDirtyDay.day)
        .where(true() if site_ids is None else ReportDirtyDay.site_id.in_(site_ids))
        .order_by(ReportDirtyDay.site_id, ReportDirtyDay.day)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    result = await db.execute(
        delete(ReportDirtyDay)
        .where(tuple_(ReportDirtyDay.site_id, ReportDirtyDay.day).in_(chosen))
        .returning(ReportDirtyDay.site_id, ReportDirtyDay.day)
    )
    return [(row[0], row[1]) for row in result]


async def _lock_state(db: AsyncSession, site: Site, now: dt.datetime) -> ReportRollupState | None:
    """Take a site's rollup state row for this transaction; None if another worker holds it."""
    await db.execute(
        _insert_ignore(db, ReportRollupState),
        [{"site_id": site.id, "sessions_through": None, "refreshed_at": now}],
    )
    return await db.scalar(
        select(ReportRollupState)
        .where(ReportRollupState.site_id == site.id)
        .with_for_update(skip_locked=True)
    )


async def refresh_site_sessions(db: AsyncSession, site: Site, now: dt.datetime) -> bool:
    """Bring one site's session rollup up to date; False when another worker is on it."""
    state = await _lock_state(db, site, now)
    if state is None:
        return False
    fresh = dt.timedelta(seconds=REFRESH_SECONDS * 0.8)
    if state.sessions_through is not None and now - state.refreshed_at < fresh:
        # Another worker did this round already: every worker runs the refresher.
        return False
    tz = zone(site.timezone)
    today = local_day(now, tz)
    first = state.sessions_through
    if first is None:
        oldest = await db.scalar(
            select(func.min(TrackedSession.started_at)).where(TrackedSession.site_id == site.id)
        )
        first = local_day(oldest, tz) if oldest is not None else today
        await _mark_all_call_days(db, site, tz, now)
        await rebuild_session_days(db, site, min(first, today), today)
    elif await _has_rows(db, TrackedSession, site.id, state.refreshed_at - LATE_COMMITS):
        await rebuild_session_days(db, site, min(first, today), today)
    # Yesterday stays open one more round: a session that started at 23:59 may commit later.
    state.sessions_through = today - dt.timedelta(days=1)
    state.refreshed_at = now
    return True


async def _has_rows(db: AsyncSession, table: Any, site_id: int, since: dt.datetime) -> bool:
    """Tell whether a site has sessions (or calls) that started since an instant (index probe)."""
    found = await db.scalar(
        select(table.site_id).where(table.site_id == site_id, table.started_at >= since).limit(1)
    )
    return found is not None


async def _mark_all_call_days(
    db: AsyncSession, site: Site, tz: zoneinfo.ZoneInfo, now: dt.datetime
) -> None:
    """On a site's first refresh, have every day with calls computed."""
    bounds = (
        await db.execute(
            select(func.min(Call.started_at), func.max(Call.started_at)).where(
                Call.site_id == site.id
            )
        )
    ).first()
    if bounds is None or bounds[0] is None:
        return
    day, last = local_day(bounds[0], tz), local_day(bounds[1], tz)
    days = []
    while day <= last:
        days.append(day)
        day += dt.timedelta(days=1)
    await mark_dirty(db, site.id, days, now)


@dataclass
class RefreshStats:
    sites: int = 0
    call_days: int = 0
    calls: int = 0


async def refresh(
    database: Database, clock: Clock, *, site_ids: Sequence[int] | None = None
) -> RefreshStats:
    """Run one refresh round: sessions and recent days of the sites, then dirty call days."""
    stats = RefreshStats()
    now = clock.now()
    async with database.sessions() as db:
        query = select(Site).order_by(Site.id)
        if site_ids is not None:
            query = query.where(Site.id.in_(site_ids))
        sites = list(await db.scalars(query))
    for site in sites:
        async with database.begin() as db:
            if await refresh_site_sessions(db, site, now):
                stats.sites += 1
                tz = zone(site.timezone)
                today = local_day(now, tz)
                yesterday = today - dt.timedelta(days=1)
                # Recent calls get tags and outcomes late: recompute their days each round.
                if await _has_rows(db, Call, site.id, day_bounds(yesterday, today, tz)[0]):
                    await mark_dirty(db, site.id, [yesterday, today], now)
    by_id = {s.id: s for s in sites}
    while True:
        async with database.begin() as db:
            claimed = await _claim_dirty(db, DAYS_PER_BATCH, site_ids)
            if not claimed:
                break
            per_site: dict[int, list[dt.date]] = defaultdict(list)
            for site_id, day in claimed:
                per_site[site_id].append(day)
            for site_id, days in per_site.items():
                found = by_id.get(site_id) or await db.get(Site, site_id)
                if found is None:
                    continue
                stats.calls += await rebuild_call_days(db, found, days)
                stats.call_days += len(days)
    return stats


async def mark_tagged_calls(database: Database, after_id: int, now: dt.datetime) -> int:
    """Mark dirty the days of calls tagged (audit `call.tagged`) after audit id `after_id`.

    Returns the highest audit id seen. The console tags calls without telling listeners; the
    audit log is the one place every tag lands, and its primary key makes the scan cheap.
    """
    async with database.begin() as db:
        rows = list(
            await db.execute(
                select(AuditEntry.id, AuditEntry.target)
                .where(AuditEntry.id > after_id, AuditEntry.action == "call.tagged")
                .order_by(AuditEntry.id)
                .limit(5000)
            )
        )
        highest = await db.scalar(select(func.max(AuditEntry.id))) or after_id
        ids = [
            int(t.split(":", 1)[1])
            for _, t in rows
            if t and t.startswith("call:") and t[5:].isdigit()
        ]
        if ids:
            found = await db.execute(
                select(Call.site_id, Call.started_at, Site.timezone)
                .join(Site, Site.id == Call.site_id)
                .where(Call.id.in_(ids))
            )
            per_site: dict[int, set[dt.date]] = defaultdict(set)
            for site_id, started_at, timezone in found:
                per_site[site_id].add(local_day(started_at, zone(timezone)))
            for site_id, days in per_site.items():
                await mark_dirty(db, site_id, days, now)
    return int(highest)


async def rebuild_all(
    database: Database, clock: Clock, site_ids: Sequence[int] | None = None
) -> RefreshStats:
    """Forget the rollups of these sites (all by default) and compute them again."""
    async with database.begin() as db:
        for table in (ReportRollupState, ReportSessionDay, ReportCallDay, ReportDirtyDay):
            await db.execute(
                delete(table).where(true() if site_ids is None else table.site_id.in_(site_ids))
            )
    async with database.sessions() as db:
        query = select(Site.id).order_by(Site.id)
        if site_ids is not None:
            query = query.where(Site.id.in_(site_ids))
        chosen = list(await db.scalars(query))
    # Sites are independent (their own dirty days and state rows): while one waits for the
    # database (the session rollup), another computes call credit in Python.
    parts = await asyncio.gather(*(refresh(database, clock, site_ids=[i]) for i in chosen))
    total = RefreshStats()
    for part in parts:
        total.sites += part.sites
        total.call_days += part.call_days
        total.calls += part.calls
    return total


async def refresh_for_read(database: Database, clock: Clock, site_ids: Sequence[int]) -> None:
    """Bring the rollups of the sites about to be read up to date before a report is shown.

    The background refresher keeps them at most `REFRESH_SECONDS` behind; doing one round on
    read as well means a site read for the first time (or with dirty days, e.g. calls that just
    ended) shows its data at once. A failure only logs: the report then shows the last rollup.
    """
    if not site_ids:
        return
    try:
        await refresh(database, clock, site_ids=site_ids)
    except Exception:
        logging.getLogger("calltrack.reports").exception("report refresh on read failed")


async def mark_person_dirty(db: AsyncSession, person: Person, now: dt.datetime) -> None:
    """Have every report figure of a person recomputed (a restriction was set or lifted)."""
    await mark_calls_dirty(db, person.calls, now)
    earliest: dict[int, dt.datetime] = {}
    for session in person.sessions:
        first = earliest.get(session.site_id)
        if first is None or session.started_at < first:
            earliest[session.site_id] = session.started_at
    for site_id, started in earliest.items():
        site = await db.get(Site, site_id)
        state = await db.get(ReportRollupState, site_id, with_for_update=True)
        if site is None or state is None or state.sessions_through is None:
            continue  # never rolled up: the first refresh counts everything anew
        day = local_day(started, zone(site.timezone))
        if state.sessions_through >= day:
            # The session rollup is rebuilt from the state's day on: move it back, and make
            # the next round run (it skips a site refreshed moments ago without new visits).
            state.sessions_through = day - dt.timedelta(days=1)
        state.refreshed_at = min(state.refreshed_at, started - LATE_COMMITS)


async def mark_calls_dirty(db: AsyncSession, calls: Iterable[Call], now: dt.datetime) -> None:
    """Have the days of these calls recomputed (after a restriction is set or lifted)."""
    zones: dict[int, zoneinfo.ZoneInfo] = {}
    for call in calls:
        if call.site_id not in zones:
            site = await db.get(Site, call.site_id)
            zones[call.site_id] = zone(site.timezone if site else None)
        await mark_dirty(db, call.site_id, [local_day(call.started_at, zones[call.site_id])], now)
