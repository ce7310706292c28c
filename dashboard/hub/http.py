"""The console websocket endpoint, the collect and call listeners, and the hub's lifecycle."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlsplit

from aiohttp import WSMsgType, web
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from dashboard.auth import current_auth
from dashboard.hub import publish_site_event
from dashboard.hub.backend import HubBackend
from dashboard.hub.commands import handle_message
from dashboard.hub.connection import Connection, Hub
from dashboard.hub.const import CONSOLE_ROLES, ERR_INVALID_MESSAGE, MAX_MESSAGE_BYTES, URL
from dashboard.hub.events import (
    CallRingingData,
    call_info,
    cart_info,
    cart_info_from_snapshot,
    page_info,
    page_info_from_row,
    session_summary,
)
from dashboard.hub.memory import MemoryHub
from tracker import appkeys
from tracker.audit import COMMIT_MARGIN
from tracker.collect import CollectEvent, CollectResult
from tracker.db import Database
from tracker.errors import ApiError
from tracker.geo import truncate_ip
from tracker.models import (
    AuditEntry,
    BusinessNumber,
    Call,
    Cart,
    LoginSession,
    Pageview,
    Restriction,
    Site,
    TrackedSession,
)
from tracker.numbers.pool import NumberPool, PoolNotLoaded, pool_key
from tracker.privacy.restrict import is_restricted, session_visible
from tracker.web import client_ip, log_background_failure

log = logging.getLogger("calltrack.hub")

RINGING_STATUSES = frozenset({"queued", "initiated", "ringing"})
# A call rings for 30 s before `<Dial>` gives up (Twilio's default timeout): one that started
# longer ago than this is not ringing whatever its last status says (its callbacks replayed
# after a database outage, a final status that never came), so it pops no screen.
RING_WINDOW = dt.timedelta(minutes=2)


def _origin_allowed(request: web.Request) -> bool:
    """Refuse cross-site sockets: a page elsewhere must not ride the advisor's cookie."""
    origin = request.headers.get("Origin")
    if origin is None:
        return True  # browsers always send Origin on websockets; tools and tests may not
    public = urlsplit(request.app[appkeys.SETTINGS].public_url)
    return origin in {f"{public.scheme}://{public.netloc}", f"{request.scheme}://{request.host}"}


async def console_socket(request: web.Request) -> web.StreamResponse:
    """Open an advisor's console socket: check the sign-in, then serve commands and events."""
    if not _origin_allowed(request):
        raise ApiError("forbidden_origin", "this socket only serves our own pages", status=403)
    auth = await current_auth(request)
    if auth is None:
        raise ApiError("unauthorized", "Sign in first.", status=401)
    if auth.user.role not in CONSOLE_ROLES:
        raise ApiError("forbidden", "the console is for advisors and administrators", status=403)
    app = request.app
    hub = app[appkeys.HUB]
    # No permessage-deflate: one event goes to every console of a site, and deflating it once
    # per socket (each has its own compressor state) would cost more CPU than the bytes saved.
    ws = web.WebSocketResponse(compress=False, max_msg_size=MAX_MESSAGE_BYTES)
    await ws.prepare(request)
    ip = client_ip(request, app[appkeys.SETTINGS].trusted_proxies)
    connection = Connection(
        ws,
        auth,
        queue_size=hub.options.queue_size,
        ip_truncated=truncate_ip(ip),
        transport=request.transport,
    )
    hub.add(connection)
    try:
        async for message in ws:
            connection.touch()
            if message.type is WSMsgType.TEXT:
                await handle_message(app, hub, connection, message.data)
            elif message.type is WSMsgType.BINARY:
                connection.send_error(0, ERR_INVALID_MESSAGE, "messages are JSON text")
    finally:
        await hub.remove(connection)
    return ws


# -- publishers ----------------------------------------------------------------------------------


# Restrictions change rarely, and the collect path reads nothing else: each worker keeps an
# account's restricted identifiers this many seconds.
RESTRICTIONS_TTL = 5.0


async def _restricted_visit(app: web.Application, account_id: int, session: Any) -> bool:
    """Is this visit restricted, by its id or its visitor's? (Cached per account.)"""
    cache: dict[int, tuple[float, set[tuple[str, str]]]] = app[appkeys.EXTRAS].setdefault(
        "restrictions", {}
    )
    now = time.monotonic()
    entry = cache.get(account_id)
    if entry is None or now - entry[0] > RESTRICTIONS_TTL:
        async with app[appkeys.DATABASE].sessions() as db:
            rows = await db.execute(
                select(Restriction.kind, Restriction.value).where(
                    Restriction.account_id == account_id, Restriction.kind != "phone"
                )
            )
        entry = cache[account_id] = (now, {(kind, value) for kind, value in rows})
    restricted = entry[1]
    return ("session", session.id) in restricted or (
        bool(session.visitor_id) and ("visitor", session.visitor_id) in restricted
    )


async def publish_collect_event(
    app: web.Application, site: Site, event: CollectEvent, result: CollectResult
) -> None:
    """Tell the consoles about a pageview, a cart or a consent change (no database reads)."""
    hub = app.get(appkeys.HUB)
    if hub is not None and not hub.may_be_wanted(site.id):
        return  # the busiest path of all: nothing to build when no console can see it
    session = result.session
    if await _restricted_visit(app, site.account_id, session):
        return  # kept, not shown (privacy: restriction), as in the console's snapshot
    if event.type == "pageview" and result.pageview_data is not None:
        page = page_info_from_row(result.pageview_data)
        await publish_site_event(
            app,
            site.id,
            "visitor.pageview",
            {"session": session_summary(session, None), "page": page},
        )
    elif event.type == "cart" and event.cart is not None:
        await publish_site_event(
            app,
            site.id,
            "visitor.cart",
            {
                "session_id": session.id,
                "cart": cart_info_from_snapshot(event.cart, session.last_seen_at),
            },
        )
    elif event.type == "consent":
        await publish_site_event(
            app,
            site.id,
            "visitor.consent",
            {"session_id": session.id, "consent": bool(session.consent)},
        )


async def screen_pop(
    database: Database, call: Call, account_id: int, pages: int = 10
) -> CallRingingData:
    """Gather what an advisor needs while the phone rings: the caller's visit, cart and pages."""
    data: CallRingingData = {"call": call_info(call), "session": None, "cart": None, "pages": []}
    if call.session_id is None:
        return data
    async with database.sessions() as db:
        # A visit restricted through its visitor id is left out too.
        session = await db.scalar(
            select(TrackedSession).where(
                TrackedSession.id == call.session_id, session_visible(account_id)
            )
        )
        if session is None:
            return data
        cart = await db.get(Cart, session.id)
        latest = await db.scalars(
            select(Pageview)
            .where(Pageview.session_id == session.id)
            .order_by(Pageview.viewed_at.desc(), Pageview.id.desc())
            .limit(pages)
        )
        data["session"] = session_summary(session, cart)
        data["cart"] = cart_info(cart) if cart is not None else None
        data["pages"] = [page_info(page) for page in reversed(list(latest))]
    return data


async def _shown_account(database: Database, call: Call) -> int | None:
    """The call's account, or None when the call stays off the console: its caller or its
    visit is restricted (kept, not shown), as in the console's snapshot."""
    async with database.sessions() as db:
        account_id = await db.scalar(select(Site.account_id).where(Site.id == call.site_id))
        if account_id is None or await is_restricted(
            db, account_id, phone=call.caller_e164, session_id=call.session_id
        ):
            return None
        return int(account_id)


async def publish_call_event(app: web.Application, call: Call) -> None:
    """Screen-pop an inbound call while it rings; report any later change as an update."""
    account_id = await _shown_account(app[appkeys.DATABASE], call)
    if account_id is None:
        return
    started = call.started_at
    if started.tzinfo is None:  # SQLite gives naive UTC datetimes
        started = started.replace(tzinfo=dt.UTC)
    ringing = (
        call.direction == "inbound"
        and call.status in RINGING_STATUSES
        and call.answered_at is None
        and call.ended_at is None
        and app[appkeys.CLOCK].now() - started < RING_WINDOW
    )
    if ringing:
        data = await screen_pop(app[appkeys.DATABASE], call, account_id)
        await publish_site_event(app, call.site_id, "call.ringing", data)
    else:
        await publish_site_event(app, call.site_id, "call.updated", {"call": call_info(call)})


# -- lifecycle -----------------------------------------------------------------------------------


async def _hub_ctx(app: web.Application) -> AsyncIterator[None]:
    hub = app[appkeys.HUB]
    clock = app[appkeys.CLOCK]
    redis = app[appkeys.REDIS]
    if redis is not None:
        from dashboard.hub.redis import RedisHub

        backend: HubBackend = RedisHub(redis, app[appkeys.SETTINGS].redis_prefix, clock)
    else:
        backend = MemoryHub(clock)
    await hub.start(backend, clock)
    tasks = [asyncio.create_task(_recheck_logins(app), name="hub-login-recheck")]
    if isinstance(backend, MemoryHub):
        tasks.append(asyncio.create_task(_follow_cli_erasures(app, backend), name="hub-erasures"))
    yield
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    await hub.close_all()
    await hub.stop()


async def _recheck_logins(app: web.Application) -> None:
    """Close consoles whose sign-in is gone: signed out on another worker, or user deleted.

    A sign-out on this worker closes its sockets at once (`dashboard.auth.logout`); this
    covers the others, with one indexed query per worker every `login_recheck` seconds.
    """
    hub = app[appkeys.HUB]
    while True:
        await asyncio.sleep(hub.options.login_recheck)
        tokens = {c.login_token_hash for c in hub.connections if not c.closing}
        if not tokens:
            continue
        try:
            async with app[appkeys.DATABASE].sessions() as db:
                valid = set(
                    await db.scalars(
                        select(LoginSession.token_hash).where(
                            LoginSession.token_hash.in_(tokens),
                            LoginSession.expires_at > app[appkeys.CLOCK].now(),
                        )
                    )
                )
        except Exception as exc:
            log_background_failure(
                log, "could not recheck console sign-ins; trying again later", exc
            )
            continue
        gone = tokens - valid
        if gone:
            hub.close_logins(gone)


async def _follow_cli_erasures(app: web.Application, backend: MemoryHub) -> None:
    """Apply to this process the erasures that `calltrack privacy erase` made.

    The CLI is another process: it cannot delete the person's events kept here for resuming
    consoles, nor tell the open ones, nor free the numbers the in-process pool holds for the
    person's visits. Its audit entry names no identifier, only the sites, so each site's kept
    events are all dropped (resuming consoles take a snapshot instead) and open consoles get
    `visitor.erased`, within `erasure_poll` seconds of the erasure. The visits holding a number
    of those sites then are looked up one round later (a visit that had just taken its number
    has its row committed by then): those the erasure deleted give their number back.
    """
    hub, database, clock = app[appkeys.HUB], app[appkeys.DATABASE], app[appkeys.CLOCK]
    mark: int | None = None  # erasures before this server started left nothing here
    done: set[int] = set()
    suspects: dict[str, set[str]] = {}  # pool → visits holding one of its numbers
    while True:
        await asyncio.sleep(hub.options.erasure_poll)
        try:
            async with database.sessions() as db:
                if mark is None:
                    mark = await db.scalar(select(func.max(AuditEntry.id))) or 0
                    continue
                if suspects:
                    await _free_numbers_of_erased_visits(app, db, suspects)
                    suspects = {}
                # Transactions may commit audit rows out of id order: look a margin back.
                entries = list(
                    await db.scalars(
                        select(AuditEntry)
                        .where(
                            AuditEntry.id > mark - COMMIT_MARGIN,
                            AuditEntry.action == "privacy.erase",
                        )
                        .order_by(AuditEntry.id)
                    )
                )
                for entry in entries:
                    mark = max(mark, entry.id)
                    detail = entry.detail or {}
                    if entry.id in done or detail.get("consoles_told", True):
                        continue
                    done.add(entry.id)
                    sites = [int(site) for site in detail.get("sites") or ()]
                    dropped = backend.drop_history(sites)
                    for site_id in sites:
                        await backend.publish(
                            site_id, "visitor.erased", clock.now().isoformat(), "{}"
                        )
                    for pool, holders in (await _holders(app, db, sites)).items():
                        suspects.setdefault(pool, set()).update(holders)
                    log.info(
                        "CLI erasure %s: %d live events dropped on sites %s",
                        entry.target,
                        dropped,
                        sites,
                    )
        except Exception as exc:
            log_background_failure(
                log, "could not apply erasures from the audit log; trying again later", exc
            )
            continue
        done = {entry_id for entry_id in done if entry_id > mark - COMMIT_MARGIN}


def _pool(app: web.Application) -> NumberPool | None:
    pool: NumberPool | None = getattr(app.get(appkeys.NUMBERS), "pool", None)
    return pool


async def _holders(app: web.Application, db: AsyncSession, sites: list[int]) -> dict[str, set[str]]:
    """The visits holding a number of these sites' pools in this process, by pool."""
    pool = _pool(app)
    if pool is None or not sites:
        return {}
    businesses = await db.execute(
        select(BusinessNumber.site_id, BusinessNumber.id).where(BusinessNumber.site_id.in_(sites))
    )
    found: dict[str, set[str]] = {}
    for site_id, business_id in businesses:
        key = pool_key(site_id, business_id)
        held = {lease.session_id for lease in (await pool.state(key)).held}
        if held:
            found[key] = held
    return found


async def _free_numbers_of_erased_visits(
    app: web.Application, db: AsyncSession, suspects: dict[str, set[str]]
) -> None:
    pool = _pool(app)
    if pool is None:
        return
    everyone = set().union(*suspects.values())
    alive = set(await db.scalars(select(TrackedSession.id).where(TrackedSession.id.in_(everyone))))
    freed = 0
    for key, holders in suspects.items():
        for session_id in holders - alive:
            try:
                if await pool.release(key, session_id, app[appkeys.CLOCK].now()) is not None:
                    freed += 1
            except PoolNotLoaded:
                break  # dropped since (no numbers left): nobody holds anything there
    if freed:
        log.info("CLI erasure: %d numbers of erased visits given back to the pool", freed)


async def _close_consoles(app: web.Application) -> None:
    # on_shutdown runs before aiohttp waits for handlers to finish; cleanup contexts only after,
    # so closing here lets consoles reconnect to another worker at once instead of timing out.
    await app[appkeys.HUB].close_all()


def setup(app: web.Application) -> None:
    app[appkeys.HUB] = Hub()
    app.router.add_get(URL, console_socket)
    extras = app[appkeys.EXTRAS]
    extras.setdefault("collect_listeners", []).append(publish_collect_event)
    extras.setdefault("call_listeners", []).append(publish_call_event)
    app.on_shutdown.append(_close_consoles)
    app.cleanup_ctx.append(_hub_ctx)
