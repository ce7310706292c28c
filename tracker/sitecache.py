"""A short-lived in-process cache of site configuration, read on every collect request."""

from __future__ import annotations

import asyncio
import datetime as dt
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncSession

from tracker.clock import Clock
from tracker.errors import NotFound
from tracker.models import Site
from tracker.sites import business_numbers, site_by_key
from tracker.web import unreachable

# Settings changed in the dashboard reach every worker within this many seconds.
TTL = dt.timedelta(seconds=30)
MAX_ENTRIES = 10_000
# Longer than this for one site read means the database hangs (a network partition, a long
# lock): answer from what this worker last knew rather than hold the request (the snippet is
# on every page of the merchant's site).
READ_DEADLINE = 3.0


@dataclass(frozen=True)
class CachedSite:
    site: Site
    business_e164: tuple[str, ...]
    expires_at: dt.datetime


class SiteCache:
    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self._entries: dict[str, CachedSite | None] = {}
        self._expiry: dict[str, dt.datetime] = {}

    def fresh(self, site_key: str) -> CachedSite | None:
        """Return the cached site when fresh, without touching the database; raise NotFound."""
        if site_key in self._entries and self._expiry[site_key] > self._clock.now():
            cached = self._entries[site_key]
            if cached is None:
                raise NotFound("unknown_site", f"no site has the key {site_key!r}")
            return cached
        return None

    async def get(self, db: AsyncSession, site_key: str) -> CachedSite:
        """Return the site for a key, from cache when fresh; raise NotFound."""
        now = self._clock.now()
        hit = self.fresh(site_key)
        if hit is not None:
            return hit
        if len(self._entries) >= MAX_ENTRIES:
            self._entries.clear()
            self._expiry.clear()
        try:
            async with asyncio.timeout(READ_DEADLINE):
                site = await site_by_key(db, site_key)
                numbers = await business_numbers(db, site.id)
        except NotFound:
            # Negative entries stop a flood of unknown keys from reaching the database.
            self._entries[site_key] = None
            self._expiry[site_key] = now + TTL
            raise
        except Exception as exc:
            # The database is away or hangs (TimeoutError counts as unreachable): what this
            # worker last knew of the site beats an error page for the snippet and a refused
            # visit (stale-if-error).
            stale = self._entries.get(site_key)
            if stale is None or not unreachable(exc):
                raise
            return stale
        db.expunge(site)
        cached = CachedSite(site, tuple(n.e164 for n in numbers), now + TTL)
        self._entries[site_key] = cached
        self._expiry[site_key] = cached.expires_at
        return cached

    def invalidate(self, site_key: str | None = None) -> None:
        if site_key is None:
            self._entries.clear()
            self._expiry.clear()
        else:
            self._entries.pop(site_key, None)
            self._expiry.pop(site_key, None)
