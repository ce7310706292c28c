"""Every `web.AppKey` of the application, in one place."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from aiohttp import web

from tracker.clock import Clock
from tracker.config import Settings
from tracker.db import Database
from tracker.geo import GeoLookup

if TYPE_CHECKING:
    from redis.asyncio import Redis

    from tracker.collect import NumberAssigner
    from tracker.sitecache import SiteCache

SETTINGS = web.AppKey("settings", Settings)
DATABASE = web.AppKey("database", Database)
CLOCK = web.AppKey("clock", Clock)
GEO = web.AppKey("geo", GeoLookup)
REDIS: web.AppKey[Redis | None] = web.AppKey("redis")
SITE_CACHE: web.AppKey[SiteCache] = web.AppKey("site_cache")
NUMBERS: web.AppKey[NumberAssigner | None] = web.AppKey("numbers")
# Later domains register their services here (carrier, hub, ...) under their own keys.
EXTRAS: web.AppKey[dict[str, Any]] = web.AppKey("extras")
