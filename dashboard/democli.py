"""`calltrack demo`: create the demo account, site and user, then say where to look."""

from __future__ import annotations

import asyncio
import sys

from dashboard.demo import ensure_demo_site
from tracker.clock import SystemClock
from tracker.config import Settings
from tracker.db import Database, migrate_sync
from tracker.sites import snippet_for


async def _prepare(settings: Settings) -> str:
    database = Database(settings.database_url)
    try:
        async with database.begin() as db:
            site = await ensure_demo_site(db, SystemClock())
            return site.site_key
    finally:
        await database.close()


def prepare_demo(settings: Settings, host: str, port: int) -> None:
    migrate_sync(settings.database_url)
    site_key = asyncio.run(_prepare(settings))
    base = f"http://{host}:{port}"
    print(
        "\nCalltrack demo is ready.\n"
        f"  Demo shop (carries the snippet):  {base}/demo/\n"
        f"  Same shop as a Google Ads click:  {base}/demo/?utm_source=google&utm_medium=cpc\n"
        f"  What Calltrack recorded:          {base}/demo/activity\n"
        f"  Demo site key: {site_key}\n"
        f"  Snippet:\n{snippet_for(site_key, settings.public_url)}\n",
        file=sys.stderr,
    )
