"""Contact requests: a visitor asks to be called back; one advisor claims, calls and tags it.

Claims are exclusive across workers: the claim is one conditional `UPDATE ... WHERE
status = 'open'`, and the database lets exactly one transaction change the row (PostgreSQL
re-checks the condition after the first claimer commits; SQLite serialises writers), so the
loser sees no row changed and is told who holds the request.

Opening hours live in `Site.settings["opening_hours"]`, in the site's time zone:
`{"mon": [["09:00", "12:30"], ["14:00", "18:00"]], "sat": [["10:00", "13:00"]]}`; a day that is
missing is closed, a range that ends before it starts runs past midnight, and no setting means
always open. A request outside the hours is stored all the same and flagged, so the visitor can
be told when they will be called.

Merchants write the hours in a shorter form (`calltrack site set --opening-hours`, the settings
page): `mon-fri 09:00-12:30,14:00-18:00; sat 10:00-13:00`, read by `parse_opening_spec` and
written back by `format_opening_hours`.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import re
import zoneinfo
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, cast

from sqlalchemy import CursorResult, select, true, update
from sqlalchemy.ext.asyncio import AsyncSession

from tracker.audit import audit
from tracker.errors import ApiError, Conflict, NotFound
from tracker.models import Call, Cart, ContactRequest, Site, TrackedSession, User
from tracker.phones import InvalidPhoneNumber, UncallableNumber, callback_number, phone_forms

log = logging.getLogger("calltrack.contacts")

OPEN = "open"
CLAIMED = "claimed"
CLOSED = "closed"
CALLBACK = "callback"
OUTCOME_TAGS = ("sale", "lead", "no_answer", "spam")
DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
CONSOLE_ROLES = ("advisor", "admin")
FULL_DAY_NAMES = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
# The `opening_hours` value that means "no setting": open at all times.
ALWAYS = "always"
# parse_opening_hours refuses more ranges than this on one day.
MAX_RANGES_PER_DAY = 12
# A week of hours fits in a few hundred characters; more is not a schedule.
MAX_SPEC_LENGTH = 2000
# A visitor's note to the advisor: a few sentences; longer text is refused, not cut silently.
MAX_MESSAGE_LENGTH = 1000
LANGUAGES = ("en", "fr")

Ranges = tuple[tuple[dt.time, dt.time | None], ...]


@dataclass(frozen=True)
class OpeningHours:
    """Weekly opening ranges by weekday (0 = Monday); an end of None means midnight."""

    days: Mapping[int, Ranges]

    def is_open(self, local: dt.datetime) -> bool:
        """Tell whether the site is open at this local time."""
        clock = local.time().replace(tzinfo=None)
        for start, end in self.days.get(local.weekday(), ()):
            if end is None or end > start:
                if start <= clock and (end is None or clock < end):
                    return True
            elif clock >= start:
                return True
        # Yesterday's range that runs past midnight.
        for start, end in self.days.get((local.weekday() - 1) % 7, ()):
            if end is not None and end <= start and clock < end:
                return True
        return False

    def next_opening(self, local: dt.datetime) -> dt.datetime | None:
        """Return when the site next opens after `local` (same zone), or None if it never does."""
        zone = local.tzinfo
        for offset in range(8):
            day = local.date() + dt.timedelta(days=offset)
            starts = sorted(start for start, _ in self.days.get(day.weekday(), ()))
            for start in starts:
                candidate = dt.datetime.combine(day, start, tzinfo=zone)
                if candidate > local:
                    return candidate
        return None


def _parse_time(text: Any, *, end: bool) -> dt.time | None:
    if not isinstance(text, str):
        raise ValueError("times are strings like 09:00")
    if end and text == "24:00":
        return None
    parsed = dt.time.fromisoformat(text)
    if parsed.tzinfo is not None:
        # Hours are read in the site's time zone; an offset here would make them unusable.
        raise ValueError("times carry no UTC offset")
    return parsed.replace(second=0, microsecond=0)


def parse_opening_hours(raw: Any) -> OpeningHours | None:
    """Validate the `opening_hours` setting; None (always open) when it is absent or empty."""
    if raw is None or raw == {}:
        return None
    if not isinstance(raw, dict):
        raise ApiError("invalid_opening_hours", "opening_hours must be an object by weekday")
    days: dict[int, Ranges] = {}
    for name, ranges in raw.items():
        if name not in DAYS:
            raise ApiError("invalid_opening_hours", f"{name!r} is not one of {', '.join(DAYS)}")
        if not isinstance(ranges, list) or len(ranges) > 12:
            raise ApiError("invalid_opening_hours", f"{name}: a list of [start, end] is expected")
        parsed: list[tuple[dt.time, dt.time | None]] = []
        for item in ranges:
            try:
                if not isinstance(item, list | tuple) or len(item) != 2:
                    raise ValueError("a range is [start, end]")
                start = _parse_time(item[0], end=False)
                finish = _parse_time(item[1], end=True)
            except ValueError as exc:
                raise ApiError(
                    "invalid_opening_hours",
                    f'{name}: {item!r} is not a range like ["09:00", "18:00"]',
                ) from exc
            if start is None or start == finish:
                raise ApiError("invalid_opening_hours", f"{name}: {item!r} is an empty range")
            parsed.append((start, finish))
        days[DAYS.index(name)] = tuple(parsed)
    return OpeningHours(days)


# -- the merchant's form of the hours ------------------------------------------------------------

HoursSetting = dict[str, list[list[str]]]
_CLOCK = re.compile(r"(\d{1,2}):(\d{2})")
_RANGE = re.compile(r"(\d{1,2}:\d{2})\s*[-–]\s*(\d{1,2}:\d{2})")


def _invalid(message: str) -> ApiError:
    return ApiError("invalid_opening_hours", message)


def _clock_text(text: str, *, end: bool) -> str | None:
    """Return `H:MM` as `HH:MM`, or None when it is no time of day (24:00 only as an end)."""
    match = _CLOCK.fullmatch(text.strip())
    if match is None:
        return None
    hours, minutes = int(match[1]), int(match[2])
    if minutes > 59 or hours > 24 or (hours == 24 and (minutes or not end)):
        return None
    return f"{hours:02d}:{minutes:02d}"


def _range(start_text: str, end_text: str, shown: str) -> list[str]:
    start, end = _clock_text(start_text, end=False), _clock_text(end_text, end=True)
    if start is None or end is None:
        raise _invalid(f"{shown!r} is not a time range like 09:00-18:00")
    if start == end:
        raise _invalid(f"{shown!r} is an empty range")
    return [start, end]


def parse_time_ranges(text: str) -> list[list[str]]:
    """Read one day's `09:00-12:30, 14:00-18:00` into stored ranges; an empty text is closed."""
    ranges: list[list[str]] = []
    for part in text.split(","):
        item = part.strip()
        if not item:
            continue
        match = _RANGE.fullmatch(item)
        if match is None:
            raise _invalid(f"{item!r} is not a time range like 09:00-18:00")
        ranges.append(_range(match[1], match[2], item))
    return _tidy(ranges)


def _tidy(ranges: list[list[str]]) -> list[list[str]]:
    unique = sorted({(start, end) for start, end in ranges})
    if len(unique) > MAX_RANGES_PER_DAY:
        raise _invalid(f"at most {MAX_RANGES_PER_DAY} time ranges a day")
    return [[start, end] for start, end in unique]


def _day(word: str) -> str:
    if word in DAYS:
        return word
    if word in FULL_DAY_NAMES:
        return DAYS[FULL_DAY_NAMES.index(word)]
    raise _invalid(f"{word!r} is not a day: use {', '.join(DAYS)}")


def _days(text: str, group: str) -> list[str]:
    """Read `mon-fri`, `mon,wed`, `fri-mon` (a range may wrap past Sunday) into day names."""
    words = re.sub(r"\s*[-–]\s*", "-", text.strip().lower())
    if not words:
        raise _invalid(f"{group!r}: name the days first, e.g. mon-fri 09:00-18:00")
    days: list[str] = []
    for word in re.split(r"[\s,]+", words):
        if not word:
            continue
        first, dash, last = word.partition("-")
        if not dash:
            days.append(_day(word))
            continue
        index, stop = DAYS.index(_day(first)), _day(last)
        while True:
            days.append(DAYS[index])
            if DAYS[index] == stop:
                break
            index = (index + 1) % len(DAYS)
    return days


def _spec_from_json(text: str) -> HoursSetting | None:
    try:
        raw = json.loads(text)
    except ValueError as exc:
        raise _invalid(f"the opening hours are not valid JSON ({exc})") from exc
    if parse_opening_hours(raw) is None:
        return None
    hours: HoursSetting = {}
    for day in DAYS:
        if day in raw:
            # Stricter than parse_opening_hours: only HH:MM, so what is stored reads back the same.
            hours[day] = _tidy([_range(str(s), str(e), f"{s}-{e}") for s, e in raw[day]])
    return hours


def parse_opening_spec(text: str) -> HoursSetting | None:
    """Read the merchant's form of the hours; None for `always`; raise ApiError when invalid.

    `mon-fri 09:00-12:30,14:00-18:00; sat 10:00-13:00`: days (ranges, single days or lists)
    then time ranges, groups separated by `;`; a day that is not named is closed. A JSON object
    in the stored format is accepted as well.
    """
    spec = text.strip()
    if len(spec) > MAX_SPEC_LENGTH:
        raise _invalid(f"the opening hours are longer than {MAX_SPEC_LENGTH} characters")
    if spec.lower() == ALWAYS:
        return None
    if spec.startswith(("{", "[")):
        return _spec_from_json(spec)
    collected: dict[str, list[list[str]]] = {}
    for group in (part.strip() for part in spec.split(";")):
        if not group:
            continue
        digit = re.search(r"\d", group)
        if digit is None:
            raise _invalid(
                f"{group!r} has no hours: write e.g. sat 10:00-13:00 (a day not named is closed)"
            )
        days = _days(group[: digit.start()], group)
        ranges = parse_time_ranges(group[digit.start() :])
        for day in days:
            collected.setdefault(day, []).extend(ranges)
    if not collected:
        raise _invalid(f"no opening hours given: write e.g. mon-fri 09:00-18:00, or {ALWAYS}")
    hours = {day: _tidy(collected[day]) for day in DAYS if day in collected}
    parse_opening_hours(hours)
    return hours


def format_time_ranges(ranges: Sequence[Sequence[str]], separator: str = ",") -> str:
    """Write stored ranges as `09:00-12:30,14:00-18:00`."""
    return separator.join(f"{start}-{end}" for start, end in ranges)


def _day_runs(days: Sequence[str]) -> str:
    runs: list[list[str]] = []
    for day in days:
        if runs and DAYS.index(day) == DAYS.index(runs[-1][-1]) + 1:
            runs[-1].append(day)
        else:
            runs.append([day])
    return ",".join(run[0] if len(run) == 1 else f"{run[0]}-{run[-1]}" for run in runs)


def format_opening_hours(hours: Mapping[str, Sequence[Sequence[str]]] | None) -> str:
    """Write a valid `opening_hours` setting in the merchant's form (`always` without one)."""
    if not hours:
        return ALWAYS
    days_by_ranges: dict[str, list[str]] = {}
    for day in DAYS:
        ranges = hours.get(day)
        if ranges:
            days_by_ranges.setdefault(format_time_ranges(ranges), []).append(day)
    if not days_by_ranges:
        return "closed"  # every named day has no range: never open (only JSON can say that)
    return "; ".join(f"{_day_runs(days)} {ranges}" for ranges, days in days_by_ranges.items())


def _zone(site: Site) -> zoneinfo.ZoneInfo:
    try:
        return zoneinfo.ZoneInfo(site.timezone or "UTC")
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        return zoneinfo.ZoneInfo("UTC")


def _site_hours(site: Site) -> OpeningHours | None:
    try:
        return parse_opening_hours((site.settings or {}).get("opening_hours"))
    except ApiError:
        # A broken setting must not turn visitors away: treat the site as open, and say so.
        log.warning("site %s has invalid opening_hours; treating it as always open", site.id)
        return None


def is_open_now(site: Site, now: dt.datetime) -> bool:
    """Tell whether the site's advisors are on duty at `now` (always, without hours)."""
    hours = _site_hours(site)
    return hours is None or hours.is_open(now.astimezone(_zone(site)))


def next_opening(site: Site, now: dt.datetime) -> dt.datetime | None:
    """Return the next opening time in the site's zone, or None (open now, or never)."""
    hours = _site_hours(site)
    if hours is None:
        return None
    local = now.astimezone(_zone(site))
    return None if hours.is_open(local) else hours.next_opening(local)


def visitor_language(raw: str | None, fallback: str = "en") -> str:
    """Reduce a browser language (`fr-FR`) to one we speak."""
    code = (raw or "").strip().lower()[:2]
    if code in LANGUAGES:
        return code
    return fallback if fallback in LANGUAGES else "en"


# -- creating ------------------------------------------------------------------------------------


def check_contact_request(site: Site, phone: Any, message: str | None) -> tuple[str, str | None]:
    """The callback number (E.164) and message of a request; raise ApiError `invalid_phone`
    (also for a premium-rate or far-away number: `tracker.phones.callback_number`) or
    `invalid_message`."""
    if not isinstance(phone, str):
        raise ApiError("invalid_phone", "a phone number is required")
    try:
        e164 = callback_number(phone, site.country)
    except UncallableNumber as exc:
        raise ApiError("uncallable_number", str(exc), status=400) from exc
    except InvalidPhoneNumber as exc:
        raise ApiError("invalid_phone", "this phone number is not valid", status=400) from exc
    text = (message or "").strip() or None
    if text is not None and len(text) > MAX_MESSAGE_LENGTH:
        raise ApiError(
            "invalid_message", f"the message is longer than {MAX_MESSAGE_LENGTH} characters"
        )
    return e164, text


async def create_contact_request(
    db: AsyncSession,
    site: Site,
    session_id: str | None,
    phone: str,
    message: str | None,
    language: str | None,
    now: dt.datetime,
) -> ContactRequest:
    """Store a visitor's callback request; raise ApiError `invalid_phone` or `invalid_message`."""
    e164, text = check_contact_request(site, phone, message)
    linked: str | None = None
    if session_id:
        session = await db.get(TrackedSession, session_id[:32])
        # A session of another site is ignored rather than refused: the request is still real,
        # but it must never show one merchant's visitor to another's advisors.
        if session is not None and session.site_id == site.id:
            linked = session.id
    request = ContactRequest(
        site_id=site.id,
        session_id=linked,
        phone_e164=e164,
        message=text,
        language=visitor_language(language, site.language),
        kind=CALLBACK,
        status=OPEN,
        created_at=now,
        outside_hours=not is_open_now(site, now),
    )
    db.add(request)
    await db.flush()
    return request


# -- tenant checks -------------------------------------------------------------------------------


async def site_of_user(db: AsyncSession, site_id: int, user: User) -> Site:
    """Return the site if the user's account owns it; another tenant's site reads as missing."""
    site = await db.get(Site, site_id)
    if site is None or site.account_id != user.account_id:
        raise NotFound("unknown_site", "no such site in your account")
    return site


# Ids are 64-bit integers in PostgreSQL and SQLite; a larger one cannot even be compared.
_MAX_ID = 2**63 - 1


def _id(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise ApiError("invalid_request", f"{name} must be an id")
    try:
        key = int(value)
    except ValueError as exc:
        raise ApiError("invalid_request", f"{name} must be an id") from exc
    if not 0 < key <= _MAX_ID:
        raise ApiError("invalid_request", f"{name} must be an id")
    return key


async def request_of_user(
    db: AsyncSession, request_id: Any, user: User
) -> tuple[ContactRequest, Site]:
    """Return a request and its site if the user's account owns them; else NotFound."""
    query = (
        select(ContactRequest, Site)
        .join(Site, Site.id == ContactRequest.site_id)
        .where(
            ContactRequest.id == _id(request_id, "request_id"),
            Site.account_id == user.account_id,
        )
        .execution_options(populate_existing=True)
    )
    row = (await db.execute(query)).first()
    if row is None:
        raise NotFound("unknown_request", "no such contact request in your account")
    return row[0], row[1]


def _check_role(user: User) -> None:
    if user.role not in CONSOLE_ROLES or user.disabled_at is not None:
        raise ApiError("forbidden", "only advisors and administrators handle requests", status=403)


# -- claiming, tagging ---------------------------------------------------------------------------


async def claim_request(
    db: AsyncSession, request_id: Any, user: User, now: dt.datetime, ip: str | None = None
) -> ContactRequest:
    """Give the request to `user` if nobody holds it; raise Conflict `already_claimed`."""
    _check_role(user)
    key = _id(request_id, "request_id")
    # The conditional UPDATE is the transaction's first statement: on SQLite (WAL) a
    # transaction that read first could not upgrade to a writer after a rival's commit.
    result = cast(
        CursorResult[Any],
        await db.execute(
            update(ContactRequest)
            .where(
                ContactRequest.id == key,
                ContactRequest.status == OPEN,
                ContactRequest.site_id.in_(
                    select(Site.id).where(Site.account_id == user.account_id)
                ),
            )
            .values(status=CLAIMED, claimed_by_user_id=user.id, claimed_at=now)
            .execution_options(synchronize_session=False)
        ),
    )
    request, site = await request_of_user(db, key, user)
    if result.rowcount != 1:
        if request.status == CLAIMED and request.claimed_by_user_id == user.id:
            return request  # a second click, or the same advisor in another tab
        holder = (
            await db.get(User, request.claimed_by_user_id) if request.claimed_by_user_id else None
        )
        raise Conflict(
            "already_claimed",
            f"{holder.email if holder else 'another advisor'} already handles this request"
            if request.status == CLAIMED
            else "this request is already closed",
            claimed_by=holder.email if holder else None,
        )
    await audit(
        db,
        action="contact.claimed",
        at=now,
        user=user,
        target=f"contact_request:{request.id}",
        ip_truncated=ip,
        site_id=site.id,
    )
    return request


def _check_tag(tag: Any) -> str:
    if tag not in OUTCOME_TAGS:
        raise ApiError("invalid_tag", f"tag must be one of {', '.join(OUTCOME_TAGS)}")
    return str(tag)


async def tag_request(
    db: AsyncSession,
    request_id: Any,
    user: User,
    tag: Any,
    now: dt.datetime,
    ip: str | None = None,
) -> ContactRequest:
    """Record the outcome of a request and close it (a closed one can be re-tagged)."""
    _check_role(user)
    outcome = _check_tag(tag)
    request, site = await request_of_user(db, request_id, user)
    holder = request.claimed_by_user_id
    if holder is not None and holder != user.id and user.role != "admin":
        raise Conflict("claimed_by_other", "another advisor handles this request")
    if request.status == OPEN:
        # Tagging an unclaimed request (e.g. spam) takes it, so the queue shows who closed it.
        request.claimed_by_user_id = user.id
        request.claimed_at = now
    request.outcome_tag = outcome
    request.status = CLOSED
    request.closed_at = request.closed_at or now
    await db.flush()
    await audit(
        db,
        action="contact.tagged",
        at=now,
        user=user,
        target=f"contact_request:{request.id}",
        ip_truncated=ip,
        site_id=site.id,
        tag=outcome,
    )
    return request


async def close_request(
    db: AsyncSession, request_id: Any, user: User, now: dt.datetime
) -> ContactRequest:
    """Close a request without an outcome (e.g. a duplicate)."""
    _check_role(user)
    request, site = await request_of_user(db, request_id, user)
    holder = request.claimed_by_user_id
    if holder is not None and holder != user.id and user.role != "admin":
        raise Conflict("claimed_by_other", "another advisor handles this request")
    if request.status != CLOSED:
        request.status = CLOSED
        request.closed_at = now
        request.claimed_by_user_id = holder or user.id
        await db.flush()
        await audit(
            db,
            action="contact.closed",
            at=now,
            user=user,
            target=f"contact_request:{request.id}",
            site_id=site.id,
        )
    return request


async def tag_call(
    db: AsyncSession, call_id: Any, user: User, tag: Any, now: dt.datetime, ip: str | None = None
) -> Call:
    """Record the outcome of a call of the user's account."""
    _check_role(user)
    outcome = _check_tag(tag)
    key = _id(call_id, "target_id")
    row = (
        await db.execute(
            select(Call, Site)
            .join(Site, Site.id == Call.site_id)
            .where(Call.id == key, Site.account_id == user.account_id)
        )
    ).first()
    if row is None:
        raise NotFound("unknown_call", "no such call in your account")
    call, site = row
    call.outcome_tag = outcome
    await db.flush()
    await audit(
        db,
        action="call.tagged",
        at=now,
        user=user,
        target=f"call:{call.id}",
        ip_truncated=ip,
        site_id=site.id,
        tag=outcome,
    )
    return call


async def attach_call(db: AsyncSession, request_id: int, call_id: int) -> None:
    """Link the callback call placed for a request."""
    await db.execute(
        update(ContactRequest)
        .where(ContactRequest.id == request_id)
        .values(call_id=call_id)
        .execution_options(synchronize_session=False)
    )


# -- reading -------------------------------------------------------------------------------------


def _iso(value: dt.datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def cart_summary(cart: Cart | None) -> dict[str, Any] | None:
    """Shape a cart snapshot for the console."""
    if cart is None:
        return None
    return {
        "items": cart.items or [],
        "total": float(cart.total) if cart.total is not None else None,
        "currency": cart.currency,
        "item_count": cart.item_count,
        "updated_at": _iso(cart.updated_at),
    }


def request_summary(
    request: ContactRequest,
    site_key: str,
    *,
    claimed_by: User | None = None,
    cart: Cart | None = None,
    session: TrackedSession | None = None,
) -> dict[str, Any]:
    """Shape a request as the console's REQUEST (docs/hub-protocol.md)."""
    try:
        display = phone_forms(request.phone_e164).international
    except Exception:
        display = request.phone_e164
    summary: dict[str, Any] = {
        "id": request.id,
        "site": site_key,
        "session_id": request.session_id,
        "kind": request.kind,
        "phone": request.phone_e164,
        "phone_display": display,
        "message": request.message,
        "language": request.language,
        "status": request.status,
        "claimed_by": (
            {"id": claimed_by.id, "email": claimed_by.email} if claimed_by is not None else None
        ),
        "claimed_at": _iso(request.claimed_at),
        "outcome": request.outcome_tag,
        "created_at": _iso(request.created_at),
        "closed_at": _iso(request.closed_at),
        "call_id": request.call_id,
        "outside_hours": request.outside_hours,
        "cart": cart_summary(cart),
    }
    if session is not None:
        summary["visitor"] = {
            "current_url": session.current_url,
            "current_title": session.current_title,
            "channel": session.channel,
            "campaign": session.campaign,
            "city": session.city,
            "country": session.country,
        }
    return summary


async def describe_requests(
    db: AsyncSession, requests: Sequence[ContactRequest]
) -> list[dict[str, Any]]:
    """Shape several requests with what the console shows beside them, in four reads."""
    if not requests:
        return []
    site_ids = {r.site_id for r in requests}
    user_ids = {r.claimed_by_user_id for r in requests if r.claimed_by_user_id is not None}
    session_ids = {r.session_id for r in requests if r.session_id is not None}
    rows = await db.execute(select(Site.id, Site.site_key).where(Site.id.in_(site_ids)))
    sites: dict[int, str] = {site_id: key for site_id, key in rows}
    users = (
        {u.id: u for u in await db.scalars(select(User).where(User.id.in_(user_ids)))}
        if user_ids
        else {}
    )
    carts = (
        {
            c.session_id: c
            for c in await db.scalars(select(Cart).where(Cart.session_id.in_(session_ids)))
        }
        if session_ids
        else {}
    )
    sessions = (
        {
            s.id: s
            for s in await db.scalars(
                select(TrackedSession).where(TrackedSession.id.in_(session_ids))
            )
        }
        if session_ids
        else {}
    )
    return [
        request_summary(
            r,
            sites.get(r.site_id, ""),
            claimed_by=users.get(r.claimed_by_user_id) if r.claimed_by_user_id else None,
            cart=carts.get(r.session_id) if r.session_id else None,
            session=sessions.get(r.session_id) if r.session_id else None,
        )
        for r in requests
    ]


async def describe_request(db: AsyncSession, request: ContactRequest) -> dict[str, Any]:
    """Shape one request for the console (the REQUEST of docs/hub-protocol.md)."""
    return (await describe_requests(db, [request]))[0]


async def open_requests(
    db: AsyncSession,
    site_ids: Collection[int],
    *,
    limit: int = 200,
    account_id: int | None = None,
) -> list[dict[str, Any]]:
    """List the open and claimed requests of these sites, oldest first (the console's queue)."""
    if not site_ids:
        return []
    from tracker.privacy.restrict import contact_request_visible

    visible = contact_request_visible(account_id) if account_id is not None else true()
    rows = await db.scalars(
        select(ContactRequest)
        .where(
            ContactRequest.site_id.in_(list(site_ids)),
            ContactRequest.status.in_([OPEN, CLAIMED]),
            visible,
        )
        .order_by(ContactRequest.created_at, ContactRequest.id)
        .limit(limit)
    )
    return await describe_requests(db, list(rows))


async def requests_for_session(
    db: AsyncSession, session_id: str, *, limit: int = 50
) -> list[dict[str, Any]]:
    """List a visit's requests, newest first (the visitor panel)."""
    rows = await db.scalars(
        select(ContactRequest)
        .where(ContactRequest.session_id == session_id)
        .order_by(ContactRequest.created_at.desc(), ContactRequest.id.desc())
        .limit(limit)
    )
    return await describe_requests(db, list(rows))
