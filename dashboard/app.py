"""The one app factory: compose every domain into one aiohttp application."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import text

from dashboard import demo
from tracker import appkeys
from tracker import http as tracker_http
from tracker.clock import Clock, SystemClock
from tracker.config import Settings
from tracker.db import Database
from tracker.geo import GeoLookup
from tracker.metrics import REGISTRY, REQUEST_SECONDS
from tracker.sitecache import SiteCache
from tracker.web import Handler, error_middleware
from widget import http as widget_http

log = logging.getLogger("calltrack")


@web.middleware
async def timing_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    started = time.perf_counter()
    try:
        return await handler(request)
    finally:
        resource = request.match_info.route.resource
        route = resource.canonical if resource is not None else "unmatched"
        REQUEST_SECONDS.labels(route).observe(time.perf_counter() - started)


async def health(request: web.Request) -> web.Response:
    """Report readiness: the database answers (and Redis, when configured)."""
    checks: dict[str, str] = {}
    status = 200
    try:
        async with request.app[appkeys.DATABASE].engine.connect() as connection:
            await connection.execute(text("SELECT 1"))
        checks["database"] = "ok"
    except Exception as exc:
        checks["database"] = f"error: {type(exc).__name__}"
        status = 503
    redis = request.app[appkeys.REDIS]
    if redis is not None:
        try:
            await redis.ping()
            checks["redis"] = "ok"
        except Exception as exc:
            checks["redis"] = f"error: {type(exc).__name__}"
            status = 503
    return web.json_response(
        {"status": "ok" if status == 200 else "degraded", **checks}, status=status
    )


async def metrics(request: web.Request) -> web.Response:
    body = generate_latest(REGISTRY)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


def create_app(settings: Settings, *, clock: Clock | None = None) -> web.Application:
    """Build the application for these settings; resources open in cleanup contexts."""
    app = web.Application(
        middlewares=[error_middleware, timing_middleware],
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
    app.router.add_get("/healthz", health)
    app.router.add_get("/metrics", metrics)
    tracker_http.setup(app)
    widget_http.setup(app)
    demo.setup(app)
    return app


async def _database_ctx(app: web.Application) -> AsyncIterator[None]:
    database = Database(app[appkeys.SETTINGS].database_url)
    app[appkeys.DATABASE] = database
    yield
    await database.close()


async def _redis_ctx(app: web.Application) -> AsyncIterator[None]:
    url = app[appkeys.SETTINGS].redis_url
    if not url:
        app[appkeys.REDIS] = None
        yield
        return
    from redis.asyncio import Redis

    redis = Redis.from_url(url, decode_responses=False)
    app[appkeys.REDIS] = redis
    yield
    await redis.aclose()


async def _geo_ctx(app: web.Application) -> AsyncIterator[None]:
    geo = GeoLookup(app[appkeys.SETTINGS].geoip_db)
    app[appkeys.GEO] = geo
    yield
    geo.close()
