"""Every `web.AppKey` of the application, in one place."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from aiohttp import web

from tracker.clock import Clock
from tracker.config import Settings
from tracker.db import Database
from tracker.geo import GeoLookup

if TYPE_CHECKING:
    from redis.asyncio import Redis

    from dashboard.hub.connection import Hub
    from telephony.carriers.base import Carrier
    from tracker.collect import NumberAssigner
    from tracker.collector import Collector
    from tracker.privacy.exclusion import ExclusionCache
    from tracker.sitecache import SiteCache

SETTINGS = web.AppKey("settings", Settings)
DATABASE = web.AppKey("database", Database)
CLOCK = web.AppKey("clock", Clock)
GEO = web.AppKey("geo", GeoLookup)
REDIS: web.AppKey[Redis | None] = web.AppKey("redis")
SITE_CACHE: web.AppKey[SiteCache] = web.AppKey("site_cache")
COLLECTOR: web.AppKey[Collector] = web.AppKey("collector")
NUMBERS: web.AppKey[NumberAssigner | None] = web.AppKey("numbers")
# The carrier for outbound calls (None when Settings.carrier cannot be built).
CARRIER: web.AppKey[Carrier | None] = web.AppKey("carrier")
# Later domains register their services here (carrier, hub, ...) under their own keys.
EXTRAS: web.AppKey[dict[str, Any]] = web.AppKey("extras")
# The console hub: live site events fanned out to advisors' websockets (dashboard.hub).
HUB: web.AppKey[Hub] = web.AppKey("hub")
# The privacy exclusion list's per-account cache, read on collect (tracker.privacy.exclusion).
EXCLUSIONS: web.AppKey[ExclusionCache] = web.AppKey("exclusions")
# Where data-subject export archives are written (tracker.privacy.export).
PRIVACY_EXPORT_DIR = web.AppKey("privacy_export_dir", Path)
