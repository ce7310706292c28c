"""Report queries over the rollups, the drill-down list of calls and a call's journey.

Every function takes a `Scope` whose sites were resolved from the signed-in user's or the API
token's account, so a report can never read another tenant's rows.
"""

from __future__ import annotations

import datetime as dt
import zoneinfo
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from decimal import Decimal
from typing import Any, Final

from sqlalchemy import ColumnElement, and_, false, func, or_, select, true
from sqlalchemy.ext.asyncio import AsyncSession

from dashboard.reports.models import (
    DEFAULT_MODEL,
    LOOKBACK,
    MODELS,
    UNITS_PER_CALL,
    Model,
    allocate,
    round_to_total,
    shares,
)
from dashboard.reports.rollup import (
    ANY_MODEL,
    DIMENSIONS,
    NOT_SET,
    UNATTRIBUTED,
    Visit,
    in_local_days,
    journeys_for,
    zone,
)
from tracker.errors import ApiError, NotFound
from tracker.models import (
    AdCost,
    Call,
    Cart,
    Pageview,
    ReportCallDay,
    ReportSessionDay,
    Site,
    TrackedSession,
)
from tracker.privacy.restrict import call_visible
from tracker.web import MAX_ID, is_digits

# The longest range a report may cover: two years of daily rows is still small.
MAX_DAYS: Final = 731
METRICS: Final = ("answered", "missed", "first_time", "sale", "lead")


@dataclass(frozen=True)
class Period:
    """Local days first..last, both included."""

    first: dt.date
    last: dt.date

    @property
    def days(self) -> int:
        return (self.last - self.first).days + 1

    def previous(self) -> Period:
        """The period of the same length just before this one."""
        return Period(self.first - dt.timedelta(days=self.days), self.first - dt.timedelta(days=1))

    def dates(self) -> list[dt.date]:
        return [self.first + dt.timedelta(days=i) for i in range(self.days)]


EARLIEST = dt.date(1970, 1, 1)
LATEST = dt.date(9000, 12, 31)


def parse_period(
    start: str | None, end: str | None, today: dt.date, default_days: int = 30
) -> Period:
    """Read `from`/`to` (YYYY-MM-DD, inclusive); default to the last `default_days` days."""
    try:
        last = dt.date.fromisoformat(end) if end else today
        first = (
            dt.date.fromisoformat(start) if start else last - dt.timedelta(days=default_days - 1)
        )
    except (ValueError, OverflowError) as exc:
        raise ApiError("invalid_date", "dates are written YYYY-MM-DD") from exc
    if first < EARLIEST or last > LATEST:
        # Far dates would overflow the previous period and the time zone arithmetic.
        raise ApiError(
            "invalid_date", f"dates lie between {EARLIEST.isoformat()} and {LATEST.isoformat()}"
        )
    if first > last:
        raise ApiError("invalid_period", "the start date is after the end date")
    if (last - first).days + 1 > MAX_DAYS:
        raise ApiError("invalid_period", f"a report covers at most {MAX_DAYS} days")
    return Period(first, last)


def parse_model(name: str | None) -> Model:
    if not name:
        return DEFAULT_MODEL
    for model in MODELS:
        if model == name:
            return model
    raise ApiError("invalid_model", f"model must be one of {', '.join(MODELS)}")


@dataclass(frozen=True)
class Scope:
    """What a report covers: an account's sites, a period and an attribution model."""

    account_id: int
    sites: tuple[Site, ...]
    period: Period
    model: Model = DEFAULT_MODEL

    @property
    def site_ids(self) -> list[int]:
        return [s.id for s in self.sites]

    @property
    def single_site(self) -> Site | None:
        return self.sites[0] if len(self.sites) == 1 else None

    def previous(self) -> Scope:
        return replace(self, period=self.period.previous())


async def account_sites(db: AsyncSession, account_id: int) -> list[Site]:
    return list(
        await db.scalars(
            select(Site).where(Site.account_id == account_id).order_by(Site.name, Site.id)
        )
    )


async def resolve_sites(
    db: AsyncSession, account_id: int, site: str | int | None
) -> tuple[Site, ...]:
    """Return the account's sites, or the one asked for (404 when it is not the account's)."""
    sites = await account_sites(db, account_id)
    if site in (None, "", "all"):
        return tuple(sites)
    try:
        wanted = int(site)
    except (TypeError, ValueError) as exc:
        raise ApiError("invalid_site", "site must be a site id") from exc
    chosen = tuple(s for s in sites if s.id == wanted)
    if not chosen:
        raise NotFound("unknown_site", "no such site in your account")
    return chosen


def today_for(sites: Sequence[Site], now: dt.datetime) -> dt.date:
    """Today for the sites a report shows: the latest of their local dates (UTC without
    sites), so a default period always holds the calls of today in each of them. (It was the
    first site's today: viewing a Paris site from an account whose first site is in Samoa hid
    the day's calls until noon.)"""
    if not sites:
        return now.astimezone(zone("UTC")).date()
    return max(now.astimezone(zone(site.timezone)).date() for site in sites)


@dataclass
class Metrics:
    """Sums over a set of rollup rows; credits are in milli-calls."""

    calls: int = 0
    answered: int = 0
    missed: int = 0
    first_time: int = 0
    talk: int = 0
    sales: int = 0
    leads: int = 0
    sessions: int = 0

    def add(self, other: Metrics) -> None:
        for name in (
            "calls",
            "answered",
            "missed",
            "first_time",
            "talk",
            "sales",
            "leads",
            "sessions",
        ):
            setattr(self, name, getattr(self, name) + getattr(other, name))

    @property
    def call_count(self) -> float:
        return self.calls / UNITS_PER_CALL

    def rate(self, part: int) -> float | None:
        return part / self.calls if self.calls else None

    @property
    def answered_rate(self) -> float | None:
        return self.rate(self.answered)

    @property
    def missed_rate(self) -> float | None:
        return self.rate(self.missed)

    @property
    def average_duration(self) -> float | None:
        """Average talk time of answered calls, in seconds."""
        return self.talk / self.answered if self.answered else None

    @property
    def per_thousand_sessions(self) -> float | None:
        return self.calls / UNITS_PER_CALL * 1000 / self.sessions if self.sessions else None

    def as_json(self) -> dict[str, Any]:
        return {
            "calls": round(self.call_count, 3),
            "answered": round(self.answered / UNITS_PER_CALL, 3),
            "missed": round(self.missed / UNITS_PER_CALL, 3),
            "answered_rate": _round(self.answered_rate, 4),
            "missed_rate": _round(self.missed_rate, 4),
            "average_duration_s": _round(self.average_duration, 1),
            "first_time_callers": round(self.first_time / UNITS_PER_CALL, 3),
            "sales": round(self.sales / UNITS_PER_CALL, 3),
            "leads": round(self.leads / UNITS_PER_CALL, 3),
            "sessions": self.sessions,
            "calls_per_1000_sessions": _round(self.per_thousand_sessions, 2),
        }


def _round(value: float | None, digits: int) -> float | None:
    return None if value is None else round(value, digits)


@dataclass
class Row:
    """One line of a breakdown table."""

    value: str
    current: Metrics = field(default_factory=Metrics)
    previous: Metrics = field(default_factory=Metrics)
    costs: dict[str, Decimal] = field(default_factory=dict)
    # Calls in tenths, rounded so that the column adds up to the rounded total (display, CSV).
    display_tenths: int = 0

    def cost_per_call(self) -> dict[str, Decimal]:
        if not self.current.calls:
            return {}
        return {
            currency: (amount * UNITS_PER_CALL / self.current.calls).quantize(Decimal("0.01"))
            for currency, amount in self.costs.items()
        }


_CALL_SUMS = (
    func.sum(ReportCallDay.calls),
    func.sum(ReportCallDay.answered),
    func.sum(ReportCallDay.missed),
    func.sum(ReportCallDay.first_time),
    func.sum(ReportCallDay.talk),
    func.sum(ReportCallDay.sales),
    func.sum(ReportCallDay.leads),
)


def _metrics(values: Sequence[Any]) -> Metrics:
    numbers = [int(v or 0) for v in values]
    return Metrics(*numbers)


def _call_rows(scope: Scope, model: str, dimension: str) -> ColumnElement[bool]:
    return and_(
        ReportCallDay.site_id.in_(scope.site_ids),
        ReportCallDay.model == model,
        ReportCallDay.dimension == dimension,
        ReportCallDay.day >= scope.period.first,
        ReportCallDay.day <= scope.period.last,
    )


def _session_rows(scope: Scope, dimension: str) -> ColumnElement[bool]:
    return and_(
        ReportSessionDay.site_id.in_(scope.site_ids),
        ReportSessionDay.dimension == dimension,
        ReportSessionDay.day >= scope.period.first,
        ReportSessionDay.day <= scope.period.last,
    )


async def _by_value(db: AsyncSession, scope: Scope, dimension: str) -> dict[str, Metrics]:
    found: dict[str, Metrics] = defaultdict(Metrics)
    if not scope.sites:
        return found
    model = ANY_MODEL if dimension in ("total", "slot", "tag") else scope.model
    rows = await db.execute(
        select(ReportCallDay.value, *_CALL_SUMS)
        .where(_call_rows(scope, model, dimension))
        .group_by(ReportCallDay.value)
    )
    for value, *sums in rows:
        found[value] = _metrics(sums)
    if dimension in (*DIMENSIONS, "total"):
        sessions = await db.execute(
            select(ReportSessionDay.value, func.sum(ReportSessionDay.sessions))
            .where(_session_rows(scope, dimension))
            .group_by(ReportSessionDay.value)
        )
        for value, count in sessions:
            found[value].sessions = int(count or 0)
    return found


async def breakdown(
    db: AsyncSession, scope: Scope, dimension: str, *, compare: bool = True
) -> tuple[list[Row], Row]:
    """Return the rows of a breakdown table (most calls first) and its total row."""
    if dimension not in DIMENSIONS:
        raise ApiError("invalid_dimension", f"dimension must be one of {', '.join(DIMENSIONS)}")
    current = await _by_value(db, scope, dimension)
    previous = await _by_value(db, scope.previous(), dimension) if compare else {}
    costs = await costs_by(db, scope, dimension)
    values = {v for v, m in current.items() if m.calls or (m.sessions and dimension == "channel")}
    values |= {v for v, m in previous.items() if m.calls}
    # Spend that brought no call is a row too: dropped, it vanished from the total cost and
    # flattered the cost per call (found by an audit).
    values |= {v for v, amounts in costs.items() if any(amounts.values())}
    rows = [
        Row(
            value=value,
            current=current.get(value, Metrics()),
            previous=previous.get(value, Metrics()),
            costs=costs.get(value, {}),
        )
        for value in values
    ]
    rows.sort(key=lambda r: (-r.current.calls, -r.previous.calls, -r.current.sessions, r.value))
    tenths = round_to_total([r.current.calls for r in rows], UNITS_PER_CALL // 10)
    total = Row(value="total")
    for row, shown in zip(rows, tenths, strict=True):
        row.display_tenths = shown
        total.current.add(row.current)
        total.previous.add(row.previous)
        for currency, amount in row.costs.items():
            total.costs[currency] = total.costs.get(currency, Decimal(0)) + amount
    total.display_tenths = sum(tenths)
    # Sessions of a call-less value are not rows, but they are still the period's sessions.
    totals_now = await _by_value(db, scope, "total")
    total.current.sessions = totals_now["all"].sessions if "all" in totals_now else 0
    return rows, total


async def totals(
    db: AsyncSession, scope: Scope, *, compare: bool = True
) -> tuple[Metrics, Metrics]:
    """Return the period's totals (model-free) and the previous period's."""
    current = (await _by_value(db, scope, "total")).get("all", Metrics())
    previous = (
        (await _by_value(db, scope.previous(), "total")).get("all", Metrics())
        if compare
        else Metrics()
    )
    return current, previous


async def daily(db: AsyncSession, scope: Scope) -> list[int]:
    """Return the milli-calls of each day of the period (model-free)."""
    found: dict[dt.date, int] = {}
    if scope.sites:
        rows = await db.execute(
            select(ReportCallDay.day, func.sum(ReportCallDay.calls))
            .where(_call_rows(scope, ANY_MODEL, "total"))
            .group_by(ReportCallDay.day)
        )
        found = {day: int(n or 0) for day, n in rows}
    return [found.get(day, 0) for day in scope.period.dates()]


async def daily_by_value(db: AsyncSession, scope: Scope, dimension: str) -> dict[str, list[int]]:
    """Return each value's milli-calls per day of the period under the scope's model."""
    series: dict[str, list[int]] = {}
    if not scope.sites:
        return series
    index = {day: i for i, day in enumerate(scope.period.dates())}
    rows = await db.execute(
        select(ReportCallDay.value, ReportCallDay.day, func.sum(ReportCallDay.calls))
        .where(_call_rows(scope, scope.model, dimension))
        .group_by(ReportCallDay.value, ReportCallDay.day)
    )
    for value, day, n in rows:
        series.setdefault(value, [0] * scope.period.days)[index[day]] = int(n or 0)
    return series


async def heatmap(db: AsyncSession, scope: Scope) -> list[list[int]]:
    """Return milli-calls by weekday (0 = Monday) and local hour."""
    grid = [[0] * 24 for _ in range(7)]
    for value, metrics in (await _by_value(db, scope, "slot")).items():
        weekday, _, hour = value.partition("-")
        if is_digits(weekday) and is_digits(hour):
            grid[int(weekday)][int(hour)] += metrics.calls
    return grid


async def tag_counts(db: AsyncSession, scope: Scope) -> dict[str, int]:
    """Return milli-calls by outcome tag ("(none)" for untagged calls)."""
    return {value: m.calls for value, m in (await _by_value(db, scope, "tag")).items()}


async def costs_by(db: AsyncSession, scope: Scope, dimension: str) -> dict[str, dict[str, Decimal]]:
    """Return the ad spend of the period by channel, campaign or source/medium, per currency.

    Spend imported for the whole account counts only when every site is in the scope (it
    cannot be split between sites); spend imported for a site counts with that site.
    """
    if dimension not in ("channel", "campaign", "source_medium") or not scope.sites:
        return {}
    everything = len(scope.sites) == len(await account_sites(db, scope.account_id))
    site_condition: ColumnElement[bool] = AdCost.site_id.in_(scope.site_ids)
    if everything:
        site_condition = or_(site_condition, AdCost.site_id.is_(None))
    rows = await db.execute(
        select(
            AdCost.channel,
            AdCost.source,
            AdCost.medium,
            AdCost.campaign,
            AdCost.currency,
            func.sum(AdCost.cost),
        )
        .where(
            AdCost.account_id == scope.account_id,
            site_condition,
            AdCost.day >= scope.period.first,
            AdCost.day <= scope.period.last,
        )
        .group_by(AdCost.channel, AdCost.source, AdCost.medium, AdCost.campaign, AdCost.currency)
    )
    found: dict[str, dict[str, Decimal]] = defaultdict(dict)
    for channel, source, medium, campaign, currency, amount in rows:
        if dimension == "channel":
            key = channel
        elif dimension == "campaign":
            key = campaign or NOT_SET
        else:
            if source is None and medium is None:
                continue
            key = f"{source or '(direct)'} / {medium or '(none)'}"
        found[key][currency] = found[key].get(currency, Decimal(0)) + Decimal(amount)
    return found


# -- drill-down ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class CallFilter:
    """Which calls a figure stands for: a dimension value, a metric, a day or an hour slot."""

    dimension: str | None = None
    value: str | None = None
    metric: str | None = None
    day: dt.date | None = None
    slot: str | None = None
    tag: str | None = None

    @classmethod
    def parse(cls, query: Any) -> CallFilter:
        dimension = query.get("dim") or None
        if dimension is not None and dimension not in DIMENSIONS:
            raise ApiError("invalid_dimension", f"dim must be one of {', '.join(DIMENSIONS)}")
        metric = query.get("metric") or None
        if metric is not None and metric not in METRICS:
            raise ApiError("invalid_metric", f"metric must be one of {', '.join(METRICS)}")
        day_text = query.get("day") or None
        try:
            day = dt.date.fromisoformat(day_text) if day_text else None
        except ValueError as exc:
            raise ApiError("invalid_date", "day is written YYYY-MM-DD") from exc
        if day is not None and not EARLIEST <= day <= LATEST:
            raise ApiError(
                "invalid_date", f"day lies between {EARLIEST.isoformat()} and {LATEST.isoformat()}"
            )
        slot = query.get("slot") or None
        if slot is not None:
            weekday, _, hour = slot.partition("-")
            if not (is_digits(weekday) and is_digits(hour) and int(weekday) < 7 and int(hour) < 24):
                raise ApiError("invalid_slot", "slot is weekday-hour, e.g. 0-09 for Monday 9 h")
        value = query.get("value")
        if dimension is not None and value is None:
            raise ApiError("invalid_value", "a value is required with dim")
        return cls(dimension, value, metric, day, slot, query.get("tag") or None)

    def as_query(self) -> dict[str, str]:
        items = {
            "dim": self.dimension,
            "value": self.value,
            "metric": self.metric,
            "day": self.day.isoformat() if self.day else None,
            "slot": self.slot,
            "tag": self.tag,
        }
        return {k: v for k, v in items.items() if v is not None}


@dataclass
class CallLine:
    """A call of the drill-down list with its credit for the filtered value."""

    call: Call
    site: Site
    credit: int  # milli-calls given to the filtered value (1000 without a value filter)
    journey: list[Visit]


def _candidate(dimension: str, value: str) -> ColumnElement[bool]:
    """A superset condition on a session for a dimension value (exact check in Python)."""
    s = TrackedSession
    if dimension == "channel":
        return s.channel == value
    if dimension == "source_medium":
        if value == NOT_SET:  # the row of the touches without a channel (rollup.visit_of)
            return s.channel.is_(None)
        source, _, medium = value.partition(" / ")
        return and_(
            func.coalesce(s.source, "(direct)") == source,
            func.coalesce(s.medium, "(none)") == medium,
        )
    if dimension == "campaign":
        return func.coalesce(s.campaign, NOT_SET) == value
    if dimension == "term":
        return func.coalesce(s.term, NOT_SET) == value
    if value == NOT_SET:
        return s.landing_url.is_(None)
    return s.landing_url.contains(value, autoescape=True)


def _own_candidate(dimension: str, value: str) -> ColumnElement[bool]:
    """The same superset condition on a call's own fields (calls without a session)."""
    c = Call
    if dimension == "channel":
        return c.channel.is_(None) if value == UNATTRIBUTED else c.channel == value
    if dimension == "source_medium":
        if value == NOT_SET:  # an unattributed call's row (rollup.visit_of)
            return c.channel.is_(None)
        source, _, medium = value.partition(" / ")
        return and_(
            func.coalesce(c.source, "(direct)") == source,
            func.coalesce(c.medium, "(none)") == medium,
        )
    if dimension == "campaign":
        return func.coalesce(c.campaign, NOT_SET) == value
    if dimension == "term":
        return func.coalesce(c.term, NOT_SET) == value
    return true() if value == NOT_SET else false()


def _conditions(scope: Scope, f: CallFilter) -> list[ColumnElement[bool]]:
    period = Period(f.day, f.day) if f.day else scope.period
    bounds = in_local_days(scope.sites, period.first, period.last, Call.site_id, Call.started_at)
    conditions: list[ColumnElement[bool]] = [
        or_(*bounds) if bounds else false(),
        Call.direction == "inbound",
        # A restricted person's calls are kept but left out of lists and exports.
        call_visible(scope.account_id),
    ]
    if f.metric == "answered":
        conditions.append(
            or_(
                Call.outcome == "answered",
                and_(Call.outcome.is_(None), Call.answered_at.is_not(None)),
            )
        )
    elif f.metric == "missed":
        conditions.append(
            Call.outcome.in_(("missed", "busy", "failed"))
            | and_(
                Call.outcome.is_(None), Call.status.in_(("no-answer", "busy", "failed", "canceled"))
            )
        )
    elif f.metric == "first_time":
        conditions.append(Call.first_time_caller.is_(True))
    elif f.metric in ("sale", "lead"):
        conditions.append(Call.outcome_tag == f.metric)
    if f.tag is not None:
        conditions.append(
            Call.outcome_tag.is_(None) if f.tag == "(none)" else Call.outcome_tag == f.tag
        )
    if f.dimension is not None and f.value is not None:
        anchor = TrackedSession.__table__.alias("anchor")
        touched = (
            select(TrackedSession.id)
            .where(
                TrackedSession.site_id == anchor.c.site_id,
                TrackedSession.visitor_id == anchor.c.visitor_id,
                TrackedSession.started_at <= anchor.c.started_at,
                _candidate(f.dimension, f.value),
            )
            .exists()
        )
        own_session = (
            select(TrackedSession.id)
            .where(TrackedSession.id == Call.session_id, _candidate(f.dimension, f.value))
            .exists()
        )
        journey = (
            select(anchor.c.id)
            .where(anchor.c.id == Call.session_id, anchor.c.visitor_id.is_not(None), touched)
            .exists()
        )
        conditions.append(
            or_(
                and_(Call.session_id.is_(None), _own_candidate(f.dimension, f.value)),
                own_session,
                journey,
            )
        )
    return conditions


def _credit(line_journey: list[Visit], call: Call, scope: Scope, f: CallFilter) -> int:
    if f.dimension is None or f.value is None:
        return UNITS_PER_CALL
    index = DIMENSIONS.index(f.dimension)
    units = allocate(
        shares(scope.model, [v.touch for v in line_journey], call.started_at), UNITS_PER_CALL
    )
    return sum(u for v, u in zip(line_journey, units, strict=True) if v.values[index] == f.value)


def _in_slot(call: Call, site: Site, slot: str) -> bool:
    local = call.started_at.astimezone(zone(site.timezone))
    weekday, _, hour = slot.partition("-")
    return local.weekday() == int(weekday) and local.hour == int(hour)


def encode_cursor(call: Call) -> str:
    return f"{call.started_at.timestamp():.6f}_{call.id}"


def decode_cursor(cursor: str | None) -> tuple[dt.datetime, int] | None:
    if not cursor:
        return None
    stamp, _, ident = cursor.partition("_")
    try:
        moment, call_id = dt.datetime.fromtimestamp(float(stamp), dt.UTC), int(ident)
    except (ValueError, OverflowError) as exc:
        raise ApiError("invalid_cursor", "cursor is not one this API returned") from exc
    if not 0 <= call_id <= MAX_ID:  # past the id column: the database would refuse it
        raise ApiError("invalid_cursor", "cursor is not one this API returned")
    return moment, call_id


async def list_calls(
    db: AsyncSession,
    scope: Scope,
    f: CallFilter,
    *,
    limit: int = 50,
    cursor: str | None = None,
) -> tuple[list[CallLine], str | None]:
    """Return one page of the calls behind a figure, newest first, and the next cursor."""
    if not scope.sites:
        return [], None
    sites = {s.id: s for s in scope.sites}
    conditions = _conditions(scope, f)
    after = decode_cursor(cursor)
    lines: list[CallLine] = []
    batch = max(limit * 2, 100)
    while len(lines) < limit:
        query = select(Call).where(*conditions)
        if after is not None:
            at, ident = after
            query = query.where(
                or_(Call.started_at < at, and_(Call.started_at == at, Call.id < ident))
            )
        calls = list(
            await db.scalars(query.order_by(Call.started_at.desc(), Call.id.desc()).limit(batch))
        )
        if not calls:
            return lines, None
        journeys = await journeys_for(db, calls) if f.dimension else {}
        for call in calls:
            after = (call.started_at, call.id)
            site = sites[call.site_id]
            if f.slot and not _in_slot(call, site, f.slot):
                continue
            journey = journeys.get(call.id, [])
            credit = _credit(journey, call, scope, f)
            if credit <= 0:
                continue
            lines.append(CallLine(call, site, credit, journey))
            if len(lines) == limit:
                return lines, encode_cursor(call)
        if len(calls) < batch:
            return lines, None
    return lines, None


# -- one call's journey --------------------------------------------------------------------------


@dataclass
class JourneySession:
    session: TrackedSession
    pageviews: list[Pageview]
    cart: Cart | None
    credits: dict[str, int]  # model → milli-calls


@dataclass
class CallJourney:
    call: Call
    site: Site
    sessions: list[JourneySession]


async def call_in_account(db: AsyncSession, account_id: int, call_id: int) -> tuple[Call, Site]:
    """Return a call of the account (404 for another account's call: no existence leak).

    A restricted person's call is kept but shown to no one here either, as in the lists: the
    detail page, the API and the recording served it by its id (found by an audit). The DPO
    reaches it through the privacy tools."""
    row = (
        await db.execute(
            select(Call, Site)
            .join(Site, Site.id == Call.site_id)
            .where(Call.id == call_id, Site.account_id == account_id, call_visible(account_id))
        )
    ).first()
    if row is None:
        raise NotFound("unknown_call", "no such call in your account")
    return row[0], row[1]


async def call_journey(db: AsyncSession, account_id: int, call_id: int) -> CallJourney:
    """Return a call with its visitor's sessions (pages, cart) and each model's credit."""
    call, site = await call_in_account(db, account_id, call_id)
    sessions: list[TrackedSession] = []
    anchor = await db.get(TrackedSession, call.session_id) if call.session_id else None
    if anchor is not None:
        if anchor.visitor_id:
            sessions = list(
                await db.scalars(
                    select(TrackedSession)
                    .where(
                        TrackedSession.site_id == anchor.site_id,
                        TrackedSession.visitor_id == anchor.visitor_id,
                        TrackedSession.started_at >= anchor.started_at - LOOKBACK,
                        TrackedSession.started_at <= anchor.started_at,
                    )
                    .order_by(TrackedSession.started_at, TrackedSession.id)
                )
            )
        if anchor not in sessions:
            sessions.append(anchor)
    journey = (await journeys_for(db, [call]))[call.id]
    credits: dict[str, list[int]] = {
        model: allocate(shares(model, [v.touch for v in journey], call.started_at), UNITS_PER_CALL)
        for model in MODELS
    }
    ids = [s.id for s in sessions]
    pages: dict[str, list[Pageview]] = defaultdict(list)
    carts: dict[str, Cart] = {}
    if ids:
        for pageview in await db.scalars(
            select(Pageview)
            .where(Pageview.session_id.in_(ids))
            .order_by(Pageview.viewed_at, Pageview.id)
        ):
            pages[pageview.session_id].append(pageview)
        for cart in await db.scalars(select(Cart).where(Cart.session_id.in_(ids))):
            carts[cart.session_id] = cart
    # The journey the models saw keeps at most MAX_TOUCHES sessions, the latest ones.
    offset = len(sessions) - len(journey)
    entries = [
        JourneySession(
            session=s,
            pageviews=pages.get(s.id, []),
            cart=carts.get(s.id),
            credits={m: (credits[m][i - offset] if i >= offset else 0) for m in MODELS},
        )
        for i, s in enumerate(sessions)
    ]
    return CallJourney(call=call, site=site, sessions=entries)


def timezone_of(sites: Sequence[Site]) -> zoneinfo.ZoneInfo:
    """The one time zone of these sites, or UTC when they differ."""
    names = {s.timezone for s in sites}
    return zone(names.pop() if len(names) == 1 else "UTC")


async def gclids_of(db: AsyncSession, calls: Sequence[Call]) -> list[tuple[Call, str]]:
    """Pair each call whose attributed session carried a Google click id with that id."""
    ids = sorted({c.session_id for c in calls if c.session_id})
    found: dict[str, str] = {}
    for start in range(0, len(ids), 2000):
        rows = await db.execute(
            select(TrackedSession.id, TrackedSession.gclid, TrackedSession.click_ids).where(
                TrackedSession.id.in_(ids[start : start + 2000])
            )
        )
        for session_id, gclid, click_ids in rows:
            value = gclid or (click_ids or {}).get("gclid")
            if value:
                found[session_id] = value
    return [(c, found[c.session_id]) for c in calls if c.session_id in found]
