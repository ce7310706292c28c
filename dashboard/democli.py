"""`calltrack demo`: create the demo account, site, numbers and user, then say where to look."""

from __future__ import annotations

import asyncio
import sys

from sqlalchemy import func, select

from dashboard.demo import DEMO_ACCOUNT, ensure_demo_site
from telephony.carrier_factory import close_carrier, create_carrier
from telephony.signature import webhook_urls
from tracker.clock import SystemClock
from tracker.config import DEFAULT_PUBLIC_URL, Settings
from tracker.db import Database, migrate_sync
from tracker.models import TrackingNumber, User
from tracker.numbers.rules import parse_rule
from tracker.numbers.service import number_service_for
from tracker.sites import get_or_create_account, snippet_for
from tracker.users import create_user

DEMO_EMAIL = "demo@calltrack.test"
DEMO_PASSWORD = "calltrack-demo"


async def _prepare(settings: Settings) -> tuple[str, list[str]]:
    database = Database(settings.database_url)
    carrier = create_carrier(settings)
    service = number_service_for(settings, None, carrier, database=database)
    clock = SystemClock()
    try:
        async with database.begin() as db:
            site = await ensure_demo_site(db, clock)
            if "contact_widget" not in (site.settings or {}):
                # On by default in the demo; a merchant who turned it off keeps it off.
                site.settings = {**(site.settings or {}), "contact_widget": True}
            held = await db.scalar(
                select(func.count()).where(
                    TrackingNumber.site_id == site.id, TrackingNumber.state == "active"
                )
            )
            if not held:
                hooks = webhook_urls(settings.public_url)
                # Pool numbers for consenting visitors, and a static number for newsletter clicks.
                await service.add_numbers(db, site, clock.now(), count=4, webhooks=hooks)
                await service.add_numbers(
                    db,
                    site,
                    clock.now(),
                    rule=parse_rule("utm_source", "newsletter"),
                    webhooks=hooks,
                )
            account = await get_or_create_account(db, DEMO_ACCOUNT, clock)
            if await db.scalar(select(User.id).where(User.email == DEMO_EMAIL)) is None:
                await create_user(db, account, DEMO_EMAIL, DEMO_PASSWORD, "admin", clock)
            numbers = list(
                await db.scalars(
                    select(TrackingNumber.e164).where(
                        TrackingNumber.site_id == site.id, TrackingNumber.state == "active"
                    )
                )
            )
            return site.site_key, numbers
    finally:
        await service.aclose()
        await close_carrier(carrier)
        await database.close()


def prepare_demo(settings: Settings, host: str, port: int) -> None:
    migrate_sync(settings.database_url)
    site_key, numbers = asyncio.run(_prepare(settings))
    base = f"http://{host}:{port}"
    # Another port than the commands' default: tell `simulate call` where the server is.
    server = "" if settings.public_url == DEFAULT_PUBLIC_URL else f" --server {settings.public_url}"
    print(
        "\nCalltrack demo is ready.\n"
        f"  Demo shop (carries the snippet):  {base}/demo/\n"
        f"  Same shop as a Google Ads click:  {base}/demo/?utm_source=google&utm_medium=cpc\n"
        f"  What Calltrack recorded:          {base}/demo/activity\n"
        f"  Advisor console / reports:        {base}/console  {base}/dashboard\n"
        f"    sign in as {DEMO_EMAIL} / {DEMO_PASSWORD}\n"
        f"  Tracking numbers: {', '.join(numbers)}\n"
        "  Ring one (the shop shows yours once you accept the consent banner):\n"
        f"    calltrack simulate call --to {numbers[0] if numbers else '+33...'} --from +33612345678{server}\n"
        f"  Demo site key: {site_key}\n"
        f"  Snippet:\n{snippet_for(site_key, settings.public_url)}\n",
        file=sys.stderr,
    )
