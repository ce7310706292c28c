"""A Google Ads visitor sees a tracking number in Chromium; the call to it is credited to them.

The merchant page (http://localhost:PORT) carries the snippet; Calltrack runs on another origin
(http://127.0.0.1:PORT) with the simulated carrier's numbers in the pool. The test rings the
number the page shows through the simulated carrier, which posts signed Twilio-shaped webhooks
to the live server: the stored call must carry the visitor's session and "Paid Search".
"""

from __future__ import annotations

import datetime as dt
import secrets
import time
from collections.abc import Iterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from sqlalchemy import select
from support.app import BACKENDS, LiveServer, free_port, make_settings

from dashboard.app import create_app
from telephony.carrier_factory import close_carrier, create_carrier
from telephony.signature import webhook_urls
from telephony.simulate import SimulatedCarrierClient, http_poster, ring
from tracker import appkeys
from tracker.clock import SystemClock
from tracker.db import Database
from tracker.models import Call, TrackedSession
from tracker.numbers.service import number_service_for
from tracker.sites import SiteSpec, create_site, get_or_create_account, snippet_for

pytestmark = pytest.mark.browser

BUSINESS = "+33123456789"
CALLER = "+33142685300"
MERCHANT_PAGE = """<!doctype html><html lang="fr"><head><meta charset="utf-8">
<title>Vélos Martin</title><link rel="icon" href="data:,">{snippet}</head><body>
<p>Appelez-nous : <a id="phone" href="tel:+33123456789">01 23 45 67 89</a></p>
</body></html>"""


class Stack:
    def __init__(self, database_url: str) -> None:
        port = free_port()
        self.public_url = f"http://127.0.0.1:{port}"
        self.settings = make_settings(database_url, public_url=self.public_url, carrier="simulated")
        app = create_app(self.settings)
        self.carrier = create_carrier(self.settings)
        self.numbers = number_service_for(self.settings, None, self.carrier)
        app[appkeys.NUMBERS] = self.numbers
        self.calltrack = LiveServer(app, port=port).start()
        self.database = Database(database_url)
        self.site_key: str = self.calltrack.call(self._site())
        merchant = web.Application()
        merchant.router.add_get("/{tail:.*}", self._page)
        self.merchant = LiveServer(merchant, host="localhost").start()

    async def _site(self) -> str:
        clock = SystemClock()
        async with self.database.begin() as db:
            account = await get_or_create_account(db, f"ads-{secrets.token_hex(4)}", clock)
            site = await create_site(
                db,
                account,
                SiteSpec("Vélos Martin", "localhost", BUSINESS, "FR", consent_mode="not_required"),
                clock,
            )
            await self.numbers.add_numbers(
                db, site, clock.now(), count=2, webhooks=webhook_urls(self.public_url)
            )
            return site.site_key

    async def _page(self, request: web.Request) -> web.Response:
        html = MERCHANT_PAGE.format(snippet=snippet_for(self.site_key, self.public_url))
        return web.Response(text=html, content_type="text/html")

    def close(self) -> None:
        self.merchant.stop()
        self.calltrack.call(self.numbers.aclose())
        self.calltrack.call(close_carrier(self.carrier))
        self.calltrack.call(self.database.close())
        self.calltrack.stop()


@pytest.fixture(scope="module", params=BACKENDS)
def stack(request: pytest.FixtureRequest) -> Iterator[Stack]:
    instance = Stack(str(request.getfixturevalue(f"{request.param}_url")))
    yield instance
    instance.close()


async def _ring(stack: Stack, to: str) -> str:
    """Ring `to` through the simulated carrier, over HTTP, as a real carrier would."""
    async with aiohttp.ClientSession() as session:
        carrier = SimulatedCarrierClient(stack.settings.secret_key, http_poster(session))
        urls = webhook_urls(stack.public_url)
        result = await ring(
            carrier, voice_url=urls.voice_url, status_url=urls.status_url, to=to, from_=CALLER
        )
    assert result.voice_status == 200, result.twiml
    return result.call_sid


def test_a_google_ads_visitor_calls_the_number_they_see(stack: Stack, browser: Any) -> None:
    context = browser.new_context(locale="fr-FR")
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    landing = f"{stack.merchant.url}/velos?utm_source=google&utm_medium=cpc&utm_campaign=ete"
    with page.expect_response(lambda r: r.url.endswith("/collect")):
        page.goto(landing, referer="https://www.google.com/")
    page.wait_for_function(
        "document.getElementById('phone').getAttribute('href') !== 'tel:+33123456789'"
    )
    href = page.get_attribute("#phone", "href")
    assert href is not None and href.startswith("tel:+")
    tracking = href.removeprefix("tel:")
    shown = page.inner_text("#phone")
    assert "23 45 67 89" not in shown and shown.strip()

    # Playwright's sync API owns this thread's event loop: ring from the server's loop.
    sid = stack.calltrack.call(_ring(stack, tracking))

    async def stored() -> tuple[Call, TrackedSession] | None:
        async with stack.database.sessions() as db:
            call = await db.scalar(select(Call).where(Call.provider_call_id == sid))
            session = await db.scalar(
                select(TrackedSession).where(TrackedSession.landing_url == landing)
            )
            return (call, session) if call is not None and session is not None else None

    deadline = time.monotonic() + 10
    found = None
    while found is None and time.monotonic() < deadline:
        found = stack.calltrack.call(stored())
        time.sleep(0.1) if found is None else None
    assert found is not None, "the call or the visitor's session was not stored"
    call, session = found
    assert call.tracking_e164 == tracking and call.forwarded_to_e164 == BUSINESS
    assert call.session_id == session.id
    assert (call.channel, call.source, call.medium, call.campaign) == (
        "Paid Search",
        "google",
        "cpc",
        "ete",
    )
    assert call.method == "pool-session" and call.confidence == 1.0
    assert (call.status, call.outcome) == ("completed", "answered")
    assert call.started_at > dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5)
    assert errors == []
    context.close()
