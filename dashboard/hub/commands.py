"""The command table: envelope checks, dispatch, and the hub's own commands.

A handler is `async def handler(ctx, payload) -> dict | None`: `payload` is the message
without `id` and `type`; the returned dict is sent as the result (None sends nothing, for
`pong`); an `ApiError` becomes an error result with its code. Other domains add theirs with
`register_command` (the console's `claim`, `callback`, `tag`).
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

from aiohttp import web
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from dashboard.hub.backend import parse_event_id
from dashboard.hub.connection import Connection, Hub
from dashboard.hub.const import (
    ERR_ID_REUSE,
    ERR_INTERNAL,
    ERR_INVALID_MESSAGE,
    ERR_INVALID_PAYLOAD,
    ERR_UNAVAILABLE,
    ERR_UNKNOWN_COMMAND,
    ERR_UNKNOWN_SITE,
    LIVE_WINDOW,
    MAX_CALL_AGE,
    MAX_LIVE_VISITORS,
    MAX_PANEL_CALLS,
    MAX_PANEL_PAGES,
)
from dashboard.hub.events import call_info, cart_info, page_info, session_summary
from tracker import appkeys
from tracker.audit import audit
from tracker.errors import ApiError
from tracker.models import Call, Cart, Pageview, Site, TrackedSession, User
from tracker.privacy.restrict import call_visible, session_visible
from tracker.web import loads_strict, unreachable

log = logging.getLogger("calltrack.hub")

ACTIVE_CALL_STATUSES = ("queued", "initiated", "ringing", "in-progress")
# How many earlier visits of the same (consenting) visitor the panel looks through for calls
# and requests: a regular customer's history, without scanning years of sessions.
MAX_RELATED_SESSIONS = 20


@dataclass
class CommandContext:
    """What a handler may use: the app, the hub, the connection and its signed-in user."""

    app: web.Application
    hub: Hub
    connection: Connection
    message_id: int
    after_result: list[Callable[[], Awaitable[None]]] = field(default_factory=list)

    @property
    def user(self) -> User:
        return self.connection.user

    @property
    def account_id(self) -> int:
        return self.connection.account_id


CommandHandler = Callable[[CommandContext, dict[str, Any]], Awaitable[dict[str, Any] | None]]
COMMANDS: dict[str, CommandHandler] = {}


def register_command(type_: str, handler: CommandHandler) -> None:
    """Add (or replace) the handler of a command type."""
    COMMANDS[type_] = handler


async def handle_message(app: web.Application, hub: Hub, connection: Connection, raw: str) -> None:
    """Check one client message's envelope, run its command, answer with a result or error."""
    try:
        message = loads_strict(raw)
    except (ValueError, RecursionError):
        connection.send_error(0, ERR_INVALID_MESSAGE, "messages are JSON objects")
        return
    message_id = message.get("id") if isinstance(message, dict) else None
    if not isinstance(message_id, int) or isinstance(message_id, bool) or message_id < 1:
        connection.send_error(0, ERR_INVALID_MESSAGE, "a message needs an integer id above 0")
        return
    if message_id <= connection.last_message_id:
        connection.send_error(message_id, ERR_ID_REUSE, "ids must increase on each message")
        return
    connection.last_message_id = message_id
    command = message.get("type")
    handler = COMMANDS.get(command) if isinstance(command, str) else None
    if handler is None:
        connection.send_error(message_id, ERR_UNKNOWN_COMMAND, f"unknown command {command!r}")
        return
    payload = {k: v for k, v in message.items() if k not in ("id", "type")}
    ctx = CommandContext(app, hub, connection, message_id)
    try:
        result = await handler(ctx, payload)
    except ApiError as exc:
        connection.send_error(message_id, exc.code, exc.message)
        return
    except Exception as exc:
        if unreachable(exc):
            log.warning("console command %s: a backing service is unreachable: %r", command, exc)
            connection.send_error(
                message_id,
                ERR_UNAVAILABLE,
                "Calltrack cannot reach its database or Redis right now; try again in a few "
                "seconds.",
            )
            return
        log.exception("console command %s failed", command)
        connection.send_error(message_id, ERR_INTERNAL, "Something went wrong on our side.")
        return
    if result is not None:
        connection.send_result(message_id, result)
    for work in ctx.after_result:
        await work()


# -- payload checks ------------------------------------------------------------------------------


def _bad(message: str) -> ApiError:
    return ApiError(ERR_INVALID_PAYLOAD, message)


def _optional_key(payload: dict[str, Any], name: str) -> str | None:
    value = payload.get(name)
    if value is None:
        return None
    if not isinstance(value, str) or not 1 <= len(value) <= 64:
        raise _bad(f"{name} must be a site key or null")
    return value


async def _account_sites(db: AsyncSession, account_id: int) -> list[Site]:
    rows = await db.scalars(select(Site).where(Site.account_id == account_id).order_by(Site.id))
    return list(rows)


def _pick_sites(sites: Sequence[Site], keys: Sequence[str]) -> list[Site]:
    by_key = {site.site_key: site for site in sites}
    chosen = []
    for key in keys:
        site = by_key.get(key)
        if site is None:
            # The same answer for another tenant's site and a made-up key: nothing leaks.
            raise ApiError(ERR_UNKNOWN_SITE, f"no site {key!r} in your account")
        if site not in chosen:
            chosen.append(site)
    return chosen


def _contacts() -> ModuleType | None:
    """Import the contact-request service when it exists (it ships with the console)."""
    try:
        return importlib.import_module("tracker.contacts")
    except ImportError:
        return None


# -- subscribe -----------------------------------------------------------------------------------


async def subscribe(ctx: CommandContext, payload: dict[str, Any]) -> dict[str, Any]:
    """Follow sites of my account; replay what I missed after my last ids."""
    keys = payload.get("sites")
    if keys is not None and (
        not isinstance(keys, list) or not all(isinstance(k, str) for k in keys) or len(keys) > 500
    ):
        raise _bad("sites must be a list of site keys, or null for all of them")
    last_raw = payload.get("last_event_ids") or {}
    if not isinstance(last_raw, dict):
        raise _bad("last_event_ids must map site keys to event ids")
    for key, value in last_raw.items():
        try:
            parse_event_id(value)
        except ValueError:
            raise _bad(f"last_event_ids[{key!r}] is not an event id") from None
    async with ctx.app[appkeys.DATABASE].sessions() as db:
        owned = await _account_sites(db, ctx.account_id)
    chosen = owned if keys is None else _pick_sites(owned, keys)
    by_key = {site.site_key: site for site in chosen}
    for key in last_raw:
        if key not in by_key:
            raise ApiError(ERR_UNKNOWN_SITE, f"{key!r} is not among the subscribed sites")
    last_ids = {by_key[key].id: value for key, value in last_raw.items()}
    replays = await ctx.hub.subscribe(
        ctx.connection, {site.id: site.site_key for site in chosen}, last_ids
    )

    async def send_replays() -> None:
        await ctx.hub.finish_subscribe(ctx.connection, last_ids, replays)

    ctx.after_result.append(send_replays)
    keys_by_id = {site.id: site.site_key for site in chosen}
    gap_sites = [keys_by_id[site_id] for site_id, replay in replays.items() if replay.gap]
    return {
        "sites": [{"site_key": site.site_key, "name": site.name} for site in chosen],
        "replayed": sum(len(replay.events) for replay in replays.values()),
        "gap": bool(gap_sites),
        "gap_sites": gap_sites,
    }


# -- snapshot ------------------------------------------------------------------------------------


async def snapshot(ctx: CommandContext, payload: dict[str, Any]) -> dict[str, Any]:
    """List live visitors, open contact requests and calls in progress."""
    key = _optional_key(payload, "site")
    app = ctx.app
    now = app[appkeys.CLOCK].now()
    async with app[appkeys.DATABASE].sessions() as db:
        owned = await _account_sites(db, ctx.account_id)
        if key is not None:
            sites = _pick_sites(owned, [key])
        else:
            subscribed = set(ctx.connection.sites)
            sites = [s for s in owned if s.id in subscribed] if subscribed else owned
        keys = {site.id: site.site_key for site in sites}
        if not keys:
            return {"visitors": [], "requests": [], "calls": []}
        rows = await db.execute(
            select(TrackedSession, Cart)
            .outerjoin(Cart, Cart.session_id == TrackedSession.id)
            .where(
                TrackedSession.site_id.in_(list(keys)),
                TrackedSession.last_seen_at >= now - LIVE_WINDOW,
                # A restricted person's data is kept but not shown (privacy: restriction).
                session_visible(ctx.account_id),
            )
            .order_by(TrackedSession.last_seen_at.desc())
            .limit(MAX_LIVE_VISITORS)
        )
        visitors = [
            {**session_summary(session, cart), "site": keys[session.site_id]}
            for session, cart in rows
        ]
        calls = await db.scalars(
            select(Call)
            .where(
                Call.site_id.in_(list(keys)),
                Call.status.in_(ACTIVE_CALL_STATUSES),
                Call.ended_at.is_(None),
                Call.started_at >= now - MAX_CALL_AGE,
                call_visible(ctx.account_id),
            )
            .order_by(Call.started_at.desc())
            .limit(MAX_LIVE_VISITORS)
        )
        live_calls = [{**call_info(call), "site": keys[call.site_id]} for call in calls]
        contacts = _contacts()
        requests: list[dict[str, Any]] = []
        if contacts is not None and hasattr(contacts, "open_requests"):
            requests = await contacts.open_requests(db, list(keys), account_id=ctx.account_id)
    if not ctx.connection.snapshot_audited:
        # Visitors' pages and carts, requesters' numbers and messages: a read of personal data.
        async with app[appkeys.DATABASE].begin() as db:
            await audit(db, action="console.snapshot", at=now, user=ctx.user,
                        ip_truncated=ctx.connection.ip_truncated, visitors=len(visitors),
                        requests=len(requests), calls=len(live_calls))  # fmt: skip
        ctx.connection.snapshot_audited = True
    return {"visitors": visitors, "requests": requests, "calls": live_calls}


# -- visitor -------------------------------------------------------------------------------------


async def visitor(ctx: CommandContext, payload: dict[str, Any]) -> dict[str, Any]:
    """Show one visit in full (pages, cart, calls, requests) and audit that it was viewed."""
    session_id = payload.get("session_id")
    if not isinstance(session_id, str) or not 1 <= len(session_id) <= 32:
        raise _bad("session_id must be a session id")
    app = ctx.app
    now = app[appkeys.CLOCK].now()
    async with app[appkeys.DATABASE].begin() as db:
        row = (
            await db.execute(
                select(TrackedSession, Site)
                .join(Site, Site.id == TrackedSession.site_id)
                .where(
                    TrackedSession.id == session_id,
                    Site.account_id == ctx.account_id,
                    # A restricted person's visit is kept but not shown, as in the snapshot.
                    session_visible(ctx.account_id),
                )
            )
        ).first()
        if row is None:
            raise ApiError("unknown_session", "no such visit on your sites")
        session, site = row
        cart = await db.get(Cart, session.id)
        pages = await db.scalars(
            select(Pageview)
            .where(Pageview.session_id == session.id)
            .order_by(Pageview.viewed_at, Pageview.id)
            .limit(MAX_PANEL_PAGES)
        )
        related = [session.id]
        if session.visitor_id is not None:
            related = list(
                await db.scalars(
                    select(TrackedSession.id)
                    .where(
                        TrackedSession.site_id == site.id,
                        TrackedSession.visitor_id == session.visitor_id,
                        session_visible(ctx.account_id),
                    )
                    .order_by(TrackedSession.started_at.desc())
                    .limit(MAX_RELATED_SESSIONS)
                )
            )
            if session.id not in related:
                related.append(session.id)
        calls = await db.scalars(
            select(Call)
            .where(
                Call.site_id == site.id,
                Call.session_id.in_(related),
                call_visible(ctx.account_id),
            )
            .order_by(Call.started_at.desc())
            .limit(MAX_PANEL_CALLS)
        )
        call_list = [call_info(call) for call in calls]
        requests: list[dict[str, Any]] = []
        contacts = _contacts()
        if contacts is not None and hasattr(contacts, "requests_for_session"):
            for related_id in related:
                requests.extend(await contacts.requests_for_session(db, related_id))
        await audit(
            db,
            action="console.visitor_viewed",
            at=now,
            user=ctx.user,
            target=f"session:{session.id}",
            ip_truncated=ctx.connection.ip_truncated,
            site_id=site.id,
        )
        detail = {
            **session_summary(session, cart),
            "landing_url": session.landing_url,
            "referrer": session.referrer,
            "content": session.content,
            "language": session.language,
        }
        return {
            "site": site.site_key,
            "session": detail,
            "pages": [page_info(page) for page in pages],
            "cart": cart_info(cart) if cart is not None else None,
            "calls": call_list,
            "requests": requests,
        }


async def pong(ctx: CommandContext, payload: dict[str, Any]) -> None:
    """Answer a heartbeat (receiving any message already counts)."""
    return None


register_command("subscribe", subscribe)
register_command("snapshot", snapshot)
register_command("visitor", visitor)
register_command("pong", pong)
