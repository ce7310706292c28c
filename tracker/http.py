"""The collect endpoint: thin handlers around `tracker.collect`."""

from __future__ import annotations

import logging
from typing import Any

from aiohttp import web

from tracker import appkeys
from tracker.collect import ClientInfo, parse_event
from tracker.collector import VisitorExcluded
from tracker.errors import ApiError
from tracker.geo import truncate_ip
from tracker.metrics import BOT_HITS, COLLECT_REJECTED, SESSIONS_STARTED, collect_events
from tracker.useragent import parse_user_agent
from tracker.web import CORS_HEADERS, client_ip, read_json, valid_text

log = logging.getLogger("calltrack.collect")


async def collect_preflight(request: web.Request) -> web.Response:
    return web.Response(status=204, headers=CORS_HEADERS)


async def collect(request: web.Request) -> web.Response:
    """Record one snippet event and answer the session id and tracking numbers."""
    app = request.app
    settings = app[appkeys.SETTINGS]
    try:
        body = await read_json(request, settings.max_body_bytes)
        event = parse_event(body, request.headers.get("Accept-Language"))
    except ApiError as exc:
        COLLECT_REJECTED.labels(exc.code).inc()
        raise
    # Bytes that are not UTF-8 reach us as lone surrogates, which nothing can encode again.
    user_agent = valid_text(request.headers.get("User-Agent", "")[:1000])
    device = parse_user_agent(user_agent)
    if device.is_bot or (device.headless and settings.block_headless):
        BOT_HITS.inc()
        return web.Response(status=204, headers=CORS_HEADERS)
    database = app[appkeys.DATABASE]
    ip = client_ip(request, settings.trusted_proxies)
    # The site comes from a 30-second cache: no database round trip on the hot path.
    cached = app[appkeys.SITE_CACHE].fresh(event.site_key)
    if cached is None:
        async with database.sessions() as db:
            cached = await app[appkeys.SITE_CACHE].get(db, event.site_key)
    exclusions = app.get(appkeys.EXCLUSIONS)
    if event.visitor_id and exclusions is not None:
        # An excluded visitor objected to tracking: store nothing (tracker.privacy.exclusion).
        if await exclusions.visitor_excluded(database, cached.site.account_id, event.visitor_id):
            return web.Response(status=204, headers=CORS_HEADERS)
    client = ClientInfo(
        ip=ip,
        user_agent=user_agent,
        device=device,
        geo_lookup=app[appkeys.GEO].lookup,
        ip_truncated=truncate_ip(ip),
        gpc_header=request.headers.get("Sec-GPC") == "1",
    )
    try:
        result = await app[appkeys.COLLECTOR].record(
            cached.site, event, client, app[appkeys.NUMBERS]
        )
    except VisitorExcluded:
        return web.Response(status=204, headers=CORS_HEADERS)
    collect_events(event.type).inc()
    if result.new_session:
        SESSIONS_STARTED.inc()
    payload: dict[str, Any] = {
        "s": result.session.id,
        "v": result.visitor_id,
        "n": result.numbers,
    }
    if client.gpc_header and not event.gpc:
        # Global Privacy Control sent as a header only (no navigator.globalPrivacyControl):
        # the snippet learns it here, and keeps nothing on the device from then on.
        payload["g"] = True
    for listener in app[appkeys.EXTRAS].get("collect_listeners", ()):
        try:
            await listener(app, cached.site, event, result)
        except Exception:
            # The event is already stored; a live-console hiccup must not fail the visitor.
            log.exception("collect listener failed")
    return web.json_response(payload, headers=CORS_HEADERS)


def setup(app: web.Application) -> None:
    app.router.add_post("/collect", collect)
    app.router.add_route("OPTIONS", "/collect", collect_preflight)
