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
"""

from __future__ import annotations

import datetime as dt
import logging
import zoneinfo
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, cast

from sqlalchemy import CursorResult, select, true, update
from sqlalchemy.ext.asyncio import AsyncSession

from tracker.audit import audit
from tracker.errors import ApiError, Conflict, NotFound
from tracker.models import Call, Cart, ContactRequest, Site, TrackedSession, User
from tracker.phones import InvalidPhoneNumber, phone_forms, to_e164

log = logging.getLogger("calltrack.contacts")

OPEN = "open"
CLAIMED = "claimed"
CLOSED = "closed"
CALLBACK = "callback"
OUTCOME_TAGS = ("sale", "lead", "no_answer", "spam")
DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
CONSOLE_ROLES = ("advisor", "admin")
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
    if not isinstance(phone, str):
        raise ApiError("invalid_phone", "a phone number is required")
    try:
        e164 = to_e164(phone, site.country)
    except InvalidPhoneNumber as exc:
        raise ApiError("invalid_phone", "this phone number is not valid", status=400) from exc
    text = (message or "").strip() or None
    if text is not None and len(text) > MAX_MESSAGE_LENGTH:
        raise ApiError(
            "invalid_message", f"the message is longer than {MAX_MESSAGE_LENGTH} characters"
        )
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


def _id(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise ApiError("invalid_request", f"{name} must be an id")
    try:
        return int(value)
    except ValueError as exc:
        raise ApiError("invalid_request", f"{name} must be an id") from exc


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
    db: AsyncSession, request_id: Any, user: User, now: dt.datetime
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
        site_id=site.id,
    )
    return request


def _check_tag(tag: Any) -> str:
    if tag not in OUTCOME_TAGS:
        raise ApiError("invalid_tag", f"tag must be one of {', '.join(OUTCOME_TAGS)}")
    return str(tag)


async def tag_request(
    db: AsyncSession, request_id: Any, user: User, tag: Any, now: dt.datetime
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


async def tag_call(db: AsyncSession, call_id: Any, user: User, tag: Any, now: dt.datetime) -> Call:
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
