"""Outgoing webhooks: signed JSON events to the merchant's URLs, retried for 25 hours.

Events: `call.started`, `call.completed`, `contact.requested`, `contact.closed` (and
`webhook.test` from the "send test event" button). Each is one JSON object
`{"id", "type", "created_at", "account_id", "data"}`, sent as the POST body.

Signature: `Calltrack-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>`.
Signing the timestamp with the body lets a receiver refuse replays (`verify_signature` accepts
five minutes of clock skew); SHA-256, not SHA-1, as NIST has deprecated SHA-1 (SP 800-131A).

Delivery: every event is a row in `webhook_deliveries` before anything is sent, so nothing is
lost when a worker stops. Each worker polls for due rows and claims them with an UPDATE on
`next_attempt_at <= now AND (locked_until IS NULL OR locked_until < now)` (`FOR UPDATE SKIP
LOCKED` on PostgreSQL), so several workers never send the same attempt twice and a crashed
worker's claim expires after `LOCK`. A delivery that does not get a 2xx is retried after
30 s × 2^(attempt − 1), capped at 2 hours, until 25 hours after its first attempt: a receiver
down for a whole day still gets everything (CallRail does not retry at all).

Where events come from: telephony's `call_listeners` (every call change: the first one sends
`call.started`, the first final status `call.completed`), the contact endpoint's
`contact_listeners` (`contact.requested`), and the audit log for `contact.closed`: the console
closes requests through the hub without a listener hook, and every close is audited. A
(endpoint, event key) unique constraint makes each event go out once per endpoint.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import hashlib
import hmac
import json
import logging
import secrets
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal, TypedDict
from urllib.parse import urlsplit

import aiohttp
from aiohttp import web
from sqlalchemy import func, not_, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from tracker import appkeys
from tracker.audit import COMMIT_MARGIN, recent_audit_mark
from tracker.clock import Clock
from tracker.db import Database
from tracker.errors import ApiError
from tracker.models import AuditEntry, Call, ContactRequest, Site, WebhookDelivery, WebhookEndpoint
from tracker.privacy.restrict import call_visible, contact_request_visible
from tracker.web import log_background_failure

log = logging.getLogger("calltrack.webhooks")

EventType = Literal[
    "call.started", "call.completed", "contact.requested", "contact.closed", "webhook.test"
]
EVENTS: Final[tuple[EventType, ...]] = (
    "call.started",
    "call.completed",
    "contact.requested",
    "contact.closed",
)
TEST_EVENT: Final[EventType] = "webhook.test"
SIGNATURE_HEADER: Final = "Calltrack-Signature"
# A receiver should answer quickly and work asynchronously; 10 s is what GitHub allows too.
REQUEST_TIMEOUT: Final = 10.0
# A claim outlives the request timeout comfortably, so a live worker never loses its claim.
LOCK: Final = dt.timedelta(seconds=60)
FIRST_RETRY: Final = dt.timedelta(seconds=30)
MAX_RETRY_DELAY: Final = dt.timedelta(hours=2)
GIVE_UP_AFTER: Final = dt.timedelta(hours=25)
# Replay window of `verify_signature`.
SIGNATURE_TOLERANCE: Final = dt.timedelta(minutes=5)
POLL_SECONDS: Final = 2.0
CLAIM_BATCH: Final = 20
MAX_ENDPOINTS_PER_ACCOUNT: Final = 20
FINAL_STATUSES: Final = frozenset({"completed", "busy", "no-answer", "failed", "canceled"})
# Keys of app[EXTRAS]: the worker's wake-up event, and names of workers a test turned off.
WAKE_KEY: Final = "webhooks_wake"
DISABLED_KEY: Final = "workers_disabled"


class CallData(TypedDict):
    id: int
    site_id: int
    direction: str
    caller: str | None
    tracking_number: str
    started_at: str
    answered_at: str | None
    ended_at: str | None
    status: str
    outcome: str | None
    duration_s: int | None
    channel: str | None
    source: str | None
    medium: str | None
    campaign: str | None
    term: str | None
    attribution_method: str
    confidence: float
    session_id: str | None
    outcome_tag: str | None


class ContactData(TypedDict):
    id: int
    site_id: int
    session_id: str | None
    kind: str
    phone: str
    status: str
    outcome: str | None
    created_at: str | None
    closed_at: str | None
    call_id: int | None


class Event(TypedDict):
    id: str
    type: EventType
    created_at: str
    account_id: int
    data: CallData | ContactData | dict[str, Any]


def _iso(value: dt.datetime | None) -> str | None:
    return value.astimezone(dt.UTC).isoformat().replace("+00:00", "Z") if value else None


def call_data(call: Call) -> CallData:
    """Describe a call for an event (the full caller number: the merchant is the controller)."""
    return {
        "id": call.id,
        "site_id": call.site_id,
        "direction": call.direction,
        "caller": call.caller_e164,
        "tracking_number": call.tracking_e164,
        "started_at": _iso(call.started_at) or "",
        "answered_at": _iso(call.answered_at),
        "ended_at": _iso(call.ended_at),
        "status": call.status,
        "outcome": call.outcome,
        "duration_s": call.duration_s,
        "channel": call.channel,
        "source": call.source,
        "medium": call.medium,
        "campaign": call.campaign,
        "term": call.term,
        "attribution_method": call.method,
        "confidence": call.confidence,
        "session_id": call.session_id,
        "outcome_tag": call.outcome_tag,
    }


def contact_data(request: ContactRequest) -> ContactData:
    return {
        "id": request.id,
        "site_id": request.site_id,
        "session_id": request.session_id,
        "kind": request.kind,
        "phone": request.phone_e164,
        "status": request.status,
        "outcome": request.outcome_tag,
        "created_at": _iso(request.created_at),
        "closed_at": _iso(request.closed_at),
        "call_id": request.call_id,
    }


# -- signatures ----------------------------------------------------------------------------------


def signature(secret: str, body: bytes, timestamp: int) -> str:
    """Return the `Calltrack-Signature` header value for a body sent at `timestamp`."""
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"


def verify_signature(secret: str, header: str | None, body: bytes, now: dt.datetime) -> bool:
    """Check a signature header as a receiver should: right HMAC, recent timestamp."""
    if not header:
        return False
    parts: dict[str, list[str]] = {}
    for item in header.split(","):
        key, _, value = item.strip().partition("=")
        parts.setdefault(key, []).append(value)
    try:
        timestamp = int(parts.get("t", [""])[0])
    except ValueError:
        return False
    if abs(now.timestamp() - timestamp) > SIGNATURE_TOLERANCE.total_seconds():
        return False
    expected = signature(secret, body, timestamp).split("v1=", 1)[1]
    return any(hmac.compare_digest(expected, candidate) for candidate in parts.get("v1", []))


def new_secret() -> str:
    return "whsec_" + secrets.token_urlsafe(32)


def retry_delay(attempts: int) -> dt.timedelta:
    """Delay before the next attempt after `attempts` failed ones: 30 s, 1 min, 2 min ... 2 h."""
    delay: dt.timedelta = FIRST_RETRY * (2 ** max(attempts - 1, 0))
    return min(delay, MAX_RETRY_DELAY)


# -- endpoints -----------------------------------------------------------------------------------


def validate_url(url: str) -> str:
    """Accept an absolute http(s) URL without credentials."""
    text = (url or "").strip()
    try:
        parts = urlsplit(text)
        valid = parts.scheme in ("http", "https") and bool(parts.hostname) and len(text) <= 2000
        parts.port  # noqa: B018 -- raises ValueError for a port out of range
    except ValueError:  # "https://[::1" (an unclosed IPv6 address), "https://x:99999"
        valid = False
    if not valid:
        raise ApiError("invalid_url", "the endpoint must be an absolute http(s) URL")
    if parts.username or parts.password:
        raise ApiError("invalid_url", "put no credentials in the URL; verify our signature instead")
    return text


def validate_events(events: Sequence[str]) -> list[str]:
    chosen: list[str] = [e for e in EVENTS if e in set(events)]
    unknown = set(events) - set(EVENTS)
    if unknown or not chosen:
        raise ApiError("invalid_events", f"events must be among {', '.join(EVENTS)}")
    return chosen


async def create_endpoint(
    db: AsyncSession,
    account_id: int,
    url: str,
    events: Sequence[str],
    now: dt.datetime,
    description: str | None = None,
) -> WebhookEndpoint:
    """Add an endpoint with a fresh signing secret."""
    count = await db.scalar(
        select(func.count())
        .select_from(WebhookEndpoint)
        .where(WebhookEndpoint.account_id == account_id)
    )
    if (count or 0) >= MAX_ENDPOINTS_PER_ACCOUNT:
        raise ApiError(
            "too_many_endpoints", f"an account has at most {MAX_ENDPOINTS_PER_ACCOUNT} endpoints"
        )
    endpoint = WebhookEndpoint(
        account_id=account_id,
        url=validate_url(url),
        secret=new_secret(),
        events=validate_events(events),
        description=(description or "").strip()[:200] or None,
        active=True,
        created_at=now,
    )
    db.add(endpoint)
    await db.flush()
    return endpoint


async def endpoint_of_account(
    db: AsyncSession, account_id: int, endpoint_id: int
) -> WebhookEndpoint:
    endpoint = await db.get(WebhookEndpoint, endpoint_id)
    if endpoint is None or endpoint.account_id != account_id:
        raise ApiError("unknown_endpoint", "no such webhook endpoint in your account", status=404)
    return endpoint


# -- queueing ------------------------------------------------------------------------------------


def _insert_ignore(db: AsyncSession) -> Any:
    if db.get_bind().dialect.name == "postgresql":
        return postgresql.insert(WebhookDelivery).on_conflict_do_nothing()
    return sqlite.insert(WebhookDelivery).on_conflict_do_nothing()


def encode_event(event: Event) -> str:
    return json.dumps(event, ensure_ascii=False, separators=(",", ":"), sort_keys=True)


async def enqueue(
    db: AsyncSession,
    account_id: int,
    event_type: EventType,
    data: CallData | ContactData | dict[str, Any],
    now: dt.datetime,
    *,
    dedupe_key: str,
    endpoint_ids: Sequence[int] | None = None,
) -> int:
    """Queue one event for every active endpoint of the account that subscribed to it."""
    query = select(WebhookEndpoint).where(
        WebhookEndpoint.account_id == account_id, WebhookEndpoint.active.is_(True)
    )
    if endpoint_ids is not None:
        query = query.where(WebhookEndpoint.id.in_(endpoint_ids))
    endpoints = [
        e
        for e in await db.scalars(query)
        if endpoint_ids is not None or event_type in (e.events or [])
    ]
    if endpoints:
        # Skip endpoints that already have this event (the insert below ignores them anyway,
        # which keeps two workers racing on the same event safe; this keeps the count right).
        done = set(
            await db.scalars(
                select(WebhookDelivery.endpoint_id).where(
                    WebhookDelivery.dedupe_key == dedupe_key[:100],
                    WebhookDelivery.endpoint_id.in_([e.id for e in endpoints]),
                )
            )
        )
        endpoints = [e for e in endpoints if e.id not in done]
    if not endpoints:
        return 0
    event: Event = {
        "id": "evt_" + secrets.token_hex(12),
        "type": event_type,
        "created_at": _iso(now) or "",
        "account_id": account_id,
        "data": data,
    }
    body = encode_event(event)
    await db.execute(
        _insert_ignore(db),
        [
            {
                "endpoint_id": e.id,
                "account_id": account_id,
                "event_id": event["id"],
                "event_type": event_type,
                "dedupe_key": dedupe_key[:100],
                "body": body,
                "status": "pending",
                "attempts": 0,
                "created_at": now,
                "next_attempt_at": now,
            }
            for e in endpoints
        ],
    )
    return len(endpoints)


def wake(app: web.Application) -> None:
    """Tell this process's worker that something is due now."""
    event = app[appkeys.EXTRAS].get(WAKE_KEY)
    if isinstance(event, asyncio.Event):
        event.set()


async def on_call(app: web.Application, call: Call) -> None:
    """Queue `call.started` (once) and `call.completed` (once, at the first final status)."""
    database, now = app[appkeys.DATABASE], app[appkeys.CLOCK].now()
    async with database.begin() as db:
        account_id = await db.scalar(select(Site.account_id).where(Site.id == call.site_id))
        if account_id is None:
            return
        restricted = await db.scalar(
            select(Call.id).where(Call.id == call.id, not_(call_visible(account_id)))
        )
        if restricted is not None:
            return  # a restricted person's calls are kept but not sent anywhere
        data = call_data(call)
        queued = await enqueue(
            db, account_id, "call.started", data, now, dedupe_key=f"call.started:{call.id}"
        )
        if call.status in FINAL_STATUSES or call.outcome is not None:
            queued += await enqueue(
                db, account_id, "call.completed", data, now, dedupe_key=f"call.completed:{call.id}"
            )
    if queued:
        wake(app)


async def on_contact_requested(app: web.Application, site: Site, summary: dict[str, Any]) -> None:
    """Queue `contact.requested` for a new contact request."""
    request_id = summary.get("id")
    if not isinstance(request_id, int):
        return
    async with app[appkeys.DATABASE].begin() as db:
        # Not the request of a restricted number or visit: kept, but sent nowhere.
        request = await db.scalar(
            select(ContactRequest).where(
                ContactRequest.id == request_id, contact_request_visible(site.account_id)
            )
        )
        if request is None:
            return
        queued = await enqueue(
            db,
            site.account_id,
            "contact.requested",
            contact_data(request),
            app[appkeys.CLOCK].now(),
            dedupe_key=f"contact.requested:{request.id}",
        )
    if queued:
        wake(app)


async def queue_closed_contacts(
    database: Database, after_id: int, now: dt.datetime
) -> tuple[int, int]:
    """Queue `contact.closed` for requests closed (audit log) after audit id `after_id`.

    Returns (highest audit id seen, events queued).
    """
    queued = 0
    async with database.begin() as db:
        rows = list(
            await db.execute(
                select(AuditEntry.id, AuditEntry.target)
                .where(
                    AuditEntry.id > after_id,
                    AuditEntry.action.in_(("contact.closed", "contact.tagged")),
                )
                .order_by(AuditEntry.id)
                .limit(1000)
            )
        )
        highest = (
            rows[-1][0] if len(rows) == 1000 else await db.scalar(select(func.max(AuditEntry.id)))
        )
        ids = {
            int(target.split(":", 1)[1])
            for _, target in rows
            if target
            and target.startswith("contact_request:")
            and target.split(":", 1)[1].isdigit()
        }
        if ids:
            found = await db.execute(
                select(ContactRequest, Site.account_id)
                .join(Site, Site.id == ContactRequest.site_id)
                .where(ContactRequest.id.in_(ids), ContactRequest.status == "closed")
            )
            for request, account_id in found:
                queued += await enqueue(
                    db,
                    account_id,
                    "contact.closed",
                    contact_data(request),
                    now,
                    dedupe_key=f"contact.closed:{request.id}",
                )
    return int(highest or after_id), queued


async def send_test_event(db: AsyncSession, endpoint: WebhookEndpoint, now: dt.datetime) -> None:
    """Queue a `webhook.test` event for one endpoint, whatever it subscribed to."""
    await enqueue(
        db,
        endpoint.account_id,
        TEST_EVENT,
        {"endpoint_id": endpoint.id, "message": "Calltrack test event"},
        now,
        dedupe_key=f"test:{secrets.token_hex(8)}",
        endpoint_ids=[endpoint.id],
    )


# -- delivering ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Claimed:
    delivery_id: int
    body: str
    url: str
    secret: str
    active: bool


@dataclass(frozen=True)
class Attempt:
    delivery_id: int
    at: dt.datetime
    status_code: int | None
    error: str | None

    @property
    def ok(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


async def claim_due(
    database: Database, now: dt.datetime, limit: int = CLAIM_BATCH
) -> list[Claimed]:
    """Lock up to `limit` due deliveries for this worker (committed before sending)."""
    async with database.begin() as db:
        due = (
            select(WebhookDelivery.id)
            .where(
                WebhookDelivery.status == "pending",
                WebhookDelivery.next_attempt_at <= now,
                or_(WebhookDelivery.locked_until.is_(None), WebhookDelivery.locked_until < now),
            )
            .order_by(WebhookDelivery.next_attempt_at, WebhookDelivery.id)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
        ids = list(
            await db.scalars(
                update(WebhookDelivery)
                .where(WebhookDelivery.id.in_(due))
                .values(locked_until=now + LOCK)
                .returning(WebhookDelivery.id)
                .execution_options(synchronize_session=False)
            )
        )
        if not ids:
            return []
        rows = await db.execute(
            select(
                WebhookDelivery.id,
                WebhookDelivery.body,
                WebhookEndpoint.url,
                WebhookEndpoint.secret,
                WebhookEndpoint.active,
            )
            .join(WebhookEndpoint, WebhookEndpoint.id == WebhookDelivery.endpoint_id)
            .where(WebhookDelivery.id.in_(ids))
            .order_by(WebhookDelivery.id)
        )
        return [Claimed(r[0], r[1], r[2], r[3], bool(r[4])) for r in rows]


async def post(http: aiohttp.ClientSession, claimed: Claimed, now: dt.datetime) -> Attempt:
    """Send one delivery; never raise (a failure is an outcome to record)."""
    if not claimed.active:
        return Attempt(claimed.delivery_id, now, None, "endpoint disabled")
    body = claimed.body.encode()
    headers = {
        "Content-Type": "application/json",
        "User-Agent": "Calltrack-Webhooks/1",
        SIGNATURE_HEADER: signature(claimed.secret, body, int(now.timestamp())),
    }
    try:
        async with http.post(
            claimed.url,
            data=body,
            headers=headers,
            allow_redirects=False,
            timeout=aiohttp.ClientTimeout(total=REQUEST_TIMEOUT),
        ) as response:
            await response.read()
            error = None if 200 <= response.status < 300 else f"HTTP {response.status}"
            return Attempt(claimed.delivery_id, now, response.status, error)
    except (aiohttp.ClientError, TimeoutError, OSError, ValueError) as exc:
        return Attempt(claimed.delivery_id, now, None, f"{type(exc).__name__}: {exc}"[:300])


async def record(database: Database, attempts: Sequence[Attempt]) -> None:
    """Store attempts: delivered, retried later with backoff, or given up after 25 hours."""
    async with database.begin() as db:
        for attempt in attempts:
            delivery = await db.get(WebhookDelivery, attempt.delivery_id)
            if delivery is None:
                continue
            delivery.attempts += 1
            delivery.first_attempt_at = delivery.first_attempt_at or attempt.at
            delivery.last_attempt_at = attempt.at
            delivery.last_status_code = attempt.status_code
            delivery.last_error = attempt.error
            delivery.locked_until = None
            if attempt.ok:
                delivery.status = "delivered"
                delivery.delivered_at = attempt.at
                continue
            retry_at = attempt.at + retry_delay(delivery.attempts)
            if (
                attempt.error == "endpoint disabled"
                or retry_at > delivery.first_attempt_at + GIVE_UP_AFTER
            ):
                delivery.status = "failed"
            else:
                delivery.next_attempt_at = retry_at


async def deliver_due(database: Database, clock: Clock, http: aiohttp.ClientSession) -> int:
    """Claim, send and record one batch of due deliveries; return how many were attempted."""
    now = clock.now()
    claimed = await claim_due(database, now)
    if not claimed:
        return 0
    attempts = await asyncio.gather(*(post(http, c, now) for c in claimed))
    await record(database, attempts)
    return len(claimed)


async def _worker(
    app: web.Application, http: aiohttp.ClientSession, wake_up: asyncio.Event
) -> None:
    database, clock = app[appkeys.DATABASE], app[appkeys.CLOCK]
    audit_mark: int | None = None
    while True:
        try:
            # Read inside the loop: a database still starting must not end the worker for good.
            if audit_mark is None:
                audit_mark = await recent_audit_mark(database)
            # Concurrent transactions may commit audit rows out of id order: rescan a margin.
            audit_mark, _ = await queue_closed_contacts(
                database, max(audit_mark - COMMIT_MARGIN, 0), clock.now()
            )
            while await deliver_due(database, clock, http):
                pass
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log_background_failure(log, "webhook delivery round failed", exc)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(wake_up.wait(), POLL_SECONDS)
        wake_up.clear()


async def _worker_ctx(app: web.Application) -> AsyncIterator[None]:
    wake_up = asyncio.Event()
    app[appkeys.EXTRAS][WAKE_KEY] = wake_up
    if "webhooks" in app[appkeys.EXTRAS].get(DISABLED_KEY, ()):
        yield
        return
    http = aiohttp.ClientSession()
    task = asyncio.create_task(_worker(app, http, wake_up), name="webhook-deliveries")
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    await http.close()


def setup(app: web.Application) -> None:
    """Register the event listeners and the delivery worker."""
    extras = app[appkeys.EXTRAS]
    extras.setdefault("call_listeners", []).append(on_call)
    extras.setdefault("contact_listeners", []).append(on_contact_requested)
    app.cleanup_ctx.append(_worker_ctx)
