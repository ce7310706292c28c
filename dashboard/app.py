"""The one app factory: compose every domain into one aiohttp application."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from pathlib import Path

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import text

from dashboard import auth, console, demo, privacy_http, site_settings, users_http, webhooks
from dashboard.api import http as api_http
from dashboard.errors import html_error_middleware
from dashboard.hub import http as hub_http
from dashboard.reports import http as reports_http
from telephony import http as telephony_http
from telephony import spool
from tracker import appkeys
from tracker import http as tracker_http
from tracker.clock import Clock, SystemClock
from tracker.collector import Collector
from tracker.config import Settings
from tracker.db import Database
from tracker.geo import GeoLookup
from tracker.metrics import REGISTRY, request_seconds
from tracker.sitecache import SiteCache
from tracker.web import Handler, answer_protocol_errors_in_the_envelope, error_middleware
from widget import contact_http
from widget import http as widget_http

log = logging.getLogger("calltrack")
STATIC = Path(__file__).with_name("static")
# Seconds each readiness check may take before it counts as failed.
HEALTH_TIMEOUT = 2.0


@web.middleware
async def timing_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    started = time.perf_counter()
    try:
        return await handler(request)
    finally:
        resource = request.match_info.route.resource
        route = resource.canonical if resource is not None else "unmatched"
        request_seconds(route).observe(time.perf_counter() - started)


async def health(request: web.Request) -> web.Response:
    """Report readiness: the database answers (and Redis, when configured).

    Each check gives up after `HEALTH_TIMEOUT`: a database that hangs is reported, not waited
    for. Carrier webhooks waiting in the spool for the database are counted when there are any.
    """
    checks: dict[str, str | int] = {}
    status = 200
    try:
        async with (
            asyncio.timeout(HEALTH_TIMEOUT),
            request.app[appkeys.DATABASE].engine.connect() as connection,
        ):
            await connection.execute(text("SELECT 1"))
        checks["database"] = "ok"
    except Exception as exc:
        checks["database"] = f"error: {type(exc).__name__}"
        status = 503
    redis = request.app[appkeys.REDIS]
    if redis is not None:
        try:
            async with asyncio.timeout(HEALTH_TIMEOUT):
                await redis.ping()
            checks["redis"] = "ok"
        except Exception as exc:
            checks["redis"] = f"error: {type(exc).__name__}"
            status = 503
    try:
        spooled = await asyncio.to_thread(spool.pending, request.app[appkeys.SETTINGS].spool_dir)
        if spooled:
            checks["spooled_webhooks"] = spooled
    except OSError as exc:
        checks["spool"] = f"error: {type(exc).__name__}"
    return web.json_response(
        {"status": "ok" if status == 200 else "degraded", **checks}, status=status
    )


async def favicon(request: web.Request) -> web.Response:
    # Browsers ask for it on every page; answering 204 keeps their consoles free of 404s.
    return web.Response(status=204, headers={"Cache-Control": "public, max-age=86400"})


async def metrics(request: web.Request) -> web.Response:
    body = generate_latest(REGISTRY)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


def create_app(settings: Settings, *, clock: Clock | None = None) -> web.Application:
    """Build the application for these settings; resources open in cleanup contexts."""
    answer_protocol_errors_in_the_envelope()
    app = web.Application(
        middlewares=[html_error_middleware, error_middleware, timing_middleware],
        client_max_size=max(settings.max_body_bytes, 1024 * 1024),
    )
    app[appkeys.SETTINGS] = settings
    app[appkeys.CLOCK] = clock or SystemClock()
    app[appkeys.SITE_CACHE] = SiteCache(app[appkeys.CLOCK])
    app[appkeys.NUMBERS] = None
    app[appkeys.EXTRAS] = {"collect_listeners": []}
    app.cleanup_ctx.append(_database_ctx)
    app.cleanup_ctx.append(_redis_ctx)
    app.cleanup_ctx.append(_geo_ctx)
    app.cleanup_ctx.append(_numbers_ctx)
    app.cleanup_ctx.append(_config_watch_ctx)
    app.router.add_get("/healthz", health)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/favicon.ico", favicon)
    tracker_http.setup(app)
    widget_http.setup(app)
    contact_http.setup(app)
    auth.setup(app)
    app.router.add_static("/static", STATIC, append_version=True)
    if settings.demo:
        # Only `calltrack demo`: its pages need no sign-in and create the demo account.
        demo.setup(app)
    else:
        app.router.add_get("/", auth.start)
    telephony_http.setup(app)
    hub_http.setup(app)
    console.setup(app)
    reports_http.setup(app)
    webhooks.setup(app)
    api_http.setup(app)
    privacy_http.setup(app)
    site_settings.setup(app)
    users_http.setup(app)
    return app


async def _database_ctx(app: web.Application) -> AsyncIterator[None]:
    settings = app[appkeys.SETTINGS]
    database = Database(settings.database_url)
    app[appkeys.DATABASE] = database
    collector = app[appkeys.COLLECTOR] = Collector(
        database.engine, app[appkeys.CLOCK], settings.secret_key
    )
    exclusions = app.get(appkeys.EXCLUSIONS)
    if exclusions is not None:
        # A visit of an excluded visitor that goes on without its `v` is not tracked either.
        async def excluded(account_id: int, visitor_id: str) -> bool:
            return await exclusions.visitor_excluded(database, account_id, visitor_id)

        collector.excluded_visitor = excluded
    yield
    await app[appkeys.COLLECTOR].close()
    await database.close()


async def _redis_ctx(app: web.Application) -> AsyncIterator[None]:
    url = app[appkeys.SETTINGS].redis_url
    if not url:
        app[appkeys.REDIS] = None
        yield
        return
    from redis.asyncio import BlockingConnectionPool, Redis
    from redis.asyncio.retry import Retry
    from redis.backoff import NoBackoff
    from redis.exceptions import ConnectionError as RedisConnectionError

    # A blocking pool makes bursts wait for a connection instead of failing: redis-py's default
    # pool raises once 100 commands are in flight, which a busy collect worker reaches.
    # One immediate retry on a fresh connection: after a Redis restart every pooled connection
    # is dead, and without it each one failed its next command (a lost console event, a visit
    # answered without numbers). While Redis stays down the retry is one refused connect.
    pool = BlockingConnectionPool.from_url(
        url,
        max_connections=200,
        timeout=5,
        retry=Retry(NoBackoff(), 1, supported_errors=(RedisConnectionError,)),
    )
    redis = Redis(connection_pool=pool, decode_responses=False)
    app[appkeys.REDIS] = redis
    yield
    await redis.aclose()


async def _numbers_ctx(app: web.Application) -> AsyncIterator[None]:
    from tracker.numbers.service import NumberService, number_service_for

    if app[appkeys.NUMBERS] is not None:  # given by the caller (tests with their own carrier)
        yield
        return
    service: NumberService = number_service_for(
        app[appkeys.SETTINGS], app[appkeys.REDIS], database=app[appkeys.DATABASE]
    )
    app[appkeys.NUMBERS] = service
    yield
    await service.aclose()


async def _config_watch_ctx(app: web.Application) -> AsyncIterator[None]:
    from tracker import confwatch

    def forget() -> None:
        app[appkeys.SITE_CACHE].invalidate()
        forget_numbers = getattr(app[appkeys.NUMBERS], "forget_all", None)
        if forget_numbers is not None:
            forget_numbers()
        if appkeys.EXCLUSIONS in app:
            app[appkeys.EXCLUSIONS].invalidate()

    task = asyncio.create_task(confwatch.watch(app[appkeys.DATABASE], forget))
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def _geo_ctx(app: web.Application) -> AsyncIterator[None]:
    geo = GeoLookup(app[appkeys.SETTINGS].geoip_db)
    app[appkeys.GEO] = geo
    yield
    geo.close()
