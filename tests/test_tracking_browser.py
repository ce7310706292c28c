"""A real visitor in Debian's Chromium: merchant page on one origin, Calltrack on another."""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterator
from typing import Any

import pytest
from aiohttp import web
from playwright.sync_api import expect
from sqlalchemy import select
from support.app import BACKENDS, LiveServer, free_port, make_settings

from dashboard.app import create_app
from tracker.clock import SystemClock
from tracker.db import Database
from tracker.models import Cart, Pageview, Site, TrackedSession
from tracker.sites import SiteSpec, create_site, get_or_create_account, snippet_for

MERCHANT_PAGE = """<!doctype html><html><head><meta charset="utf-8"><title>Accueil — Vélos Martin</title>
{snippet}
<script>calltrack('cart', {{items: [{{name: 'Queued item', sku: 'Q1', qty: 1, price: 10}}], total: 10, currency: 'EUR'}});</script>
</head><body>
<h1 id="title">Accueil</h1><p>Appelez le <a href="tel:+33123456789">01 23 45 67 89</a></p>
<button id="to-gravel">Gravel</button><button id="add">Ajouter</button>
<script>
document.getElementById('to-gravel').onclick = () => {{
  history.pushState({{}}, '', '/velos/gravel?color=red');
  document.title = 'Gravel — Vélos Martin';
  document.getElementById('title').textContent = 'Gravel';
}};
document.getElementById('add').onclick = () => calltrack('cart', {{
  items: [{{name: 'Gravel Aventure', sku: 'VM-GRAV-02', qty: 2, price: 1290}}], total: 2580, currency: 'EUR'}});
</script></body></html>"""


class Stack:
    def __init__(
        self, backend_url: str, port: int | None = None, public_url: str | None = None
    ) -> None:
        port = port or free_port()
        self.public_url = public_url or f"http://127.0.0.1:{port}"
        self.calltrack = LiveServer(
            create_app(make_settings(backend_url, public_url=self.public_url)), port=port
        ).start()
        self.database = Database(backend_url)
        self.site_key: str = self.calltrack.call(self._site())
        merchant = web.Application()
        merchant.router.add_get("/{tail:.*}", self._page)
        # The merchant site is another origin: "localhost" is not "127.0.0.1" for the browser.
        self.merchant = LiveServer(merchant, host="localhost").start()

    async def _site(self) -> str:
        async with self.database.begin() as db:
            account = await get_or_create_account(
                db, f"browser-{secrets.token_hex(4)}", SystemClock()
            )
            site = await create_site(
                db, account, SiteSpec("Vélos Martin", "localhost", "+33123456789", "FR")
            )
            return site.site_key

    async def _page(self, request: web.Request) -> web.Response:
        key = request.query.get("site", self.site_key)  # another site of the test's own
        html = MERCHANT_PAGE.format(snippet=snippet_for(key, self.public_url))
        return web.Response(text=html, content_type="text/html")

    def query(self, coro: Any) -> Any:
        return self.calltrack.call(coro)

    def close(self) -> None:
        self.merchant.stop()
        self.calltrack.call(self.database.close())
        self.calltrack.stop()


@pytest.fixture(scope="module", params=BACKENDS)
def stack(request: pytest.FixtureRequest) -> Iterator[Stack]:
    url = str(request.getfixturevalue(f"{request.param}_url"))
    instance = Stack(url)
    yield instance
    instance.close()


def wait_for(stack: Stack, probe: Any, timeout: float = 10) -> Any:
    """Poll the database until `probe` returns something truthy."""
    import time

    deadline = time.monotonic() + timeout
    while True:
        value = stack.query(probe())
        if value or time.monotonic() > deadline:
            return value
        time.sleep(0.1)


def test_visit_spa_navigation_and_cart_are_recorded(stack: Stack, browser: Any) -> None:
    context = browser.new_context(locale="fr-FR")
    page = context.new_page()
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    landing = f"{stack.merchant.url}/?utm_source=facebook&utm_medium=paid_social&utm_campaign=printemps&fbclid=FB1"
    with page.expect_response(lambda r: r.url.endswith("/collect")):
        page.goto(landing, referer="https://m.facebook.com/")
    page.click("#to-gravel")
    page.click("#add")

    async def stored() -> Any:
        async with stack.database.sessions() as db:
            session = await db.scalar(
                select(TrackedSession).where(TrackedSession.landing_url == landing)
            )
            if session is None:
                return None
            pages = list(
                await db.scalars(
                    select(Pageview).where(Pageview.session_id == session.id).order_by(Pageview.id)
                )
            )
            cart = await db.get(Cart, session.id)
            if len(pages) < 2 or cart is None or cart.item_count != 2:
                return None
            return session, pages, cart

    result = wait_for(stack, stored)
    assert result, "the session, both pageviews and the cart were not all recorded"
    session, pages, cart = result
    assert session.channel == "Paid Social"
    assert (session.source, session.medium, session.campaign) == (
        "facebook",
        "paid_social",
        "printemps",
    )
    assert session.click_ids.get("fbclid") == "FB1"
    assert session.browser == "Chrome" or session.browser == "HeadlessChrome" or session.browser
    assert [p.url for p in pages] == [landing, f"{stack.merchant.url}/velos/gravel?color=red"]
    assert pages[1].title == "Gravel — Vélos Martin"
    assert str(cart.total) == "2580.00" and cart.items[0]["sku"] == "VM-GRAV-02"
    assert session.language and session.language.startswith("fr")
    # Consent is required by default: nothing was written to the visitor's browser.
    storage = page.evaluate("() => [localStorage.length, sessionStorage.length, document.cookie]")
    assert storage == [0, 0, ""]
    assert errors == []
    context.close()


def test_time_on_page_is_sent_when_the_page_is_hidden(stack: Stack, browser: Any) -> None:
    context = browser.new_context()
    page = context.new_page()
    landing = f"{stack.merchant.url}/?visit={secrets.token_hex(4)}"
    with page.expect_response(lambda r: r.url.endswith("/collect")):
        page.goto(landing)
    page.wait_for_timeout(1200)
    page.goto("about:blank")  # pagehide: the snippet sends a beacon with the visible time

    async def duration() -> Any:
        async with stack.database.sessions() as db:
            return await db.scalar(
                select(Pageview.duration_ms).where(
                    Pageview.url == landing, Pageview.duration_ms > 0
                )
            )

    measured = wait_for(stack, duration)
    assert measured and 1000 <= measured < 60_000
    context.close()


def test_a_key_no_site_has_sends_nothing_and_logs_nothing(stack: Stack, browser: Any) -> None:
    """A mistyped or deleted site key: the page works, the console stays clean (no failed
    request to collect), and commands queued by the page are harmless."""
    context = browser.new_context()
    page = context.new_page()
    messages: list[str] = []
    page.on("console", lambda m: messages.append(f"{m.type}: {m.text}"))
    page.on("pageerror", lambda e: messages.append(str(e)))
    requests: list[str] = []
    page.on("request", lambda r: requests.append(r.url))
    with page.expect_response(lambda r: "/ct.js?k=ct-no-such-site" in r.url) as script:
        page.goto(f"{stack.merchant.url}/?site=ct-no-such-site")
    assert script.value.status == 200
    page.click("#add")
    page.evaluate("calltrack('consent', true)")
    expect(page.locator("a[href^='tel:']")).to_have_text("01 23 45 67 89", timeout=3000)
    page.wait_for_timeout(1700)  # past the snippet's 1.5 s wait for numbers
    assert page.is_visible("a[href^='tel:']")
    assert [url for url in requests if "/collect" in url] == []
    assert messages == []
    context.close()


def test_gpc_sent_as_a_header_only_keeps_nothing_on_the_device(stack: Stack, browser: Any) -> None:
    """A browser (or extension) that sends Sec-GPC: 1 without navigator.globalPrivacyControl:
    the snippet learns it from the answer and stores nothing, even after consent."""
    context = browser.new_context(extra_http_headers={"Sec-GPC": "1"})
    page = context.new_page()
    with page.expect_response(lambda r: r.url.endswith("/collect")) as first:
        page.goto(f"{stack.merchant.url}/?visit={secrets.token_hex(4)}")
    assert first.value.json()["g"] is True
    with page.expect_response(lambda r: r.url.endswith("/collect")) as consent:
        page.evaluate("calltrack('consent', true)")
    assert consent.value.json()["v"] is None
    page.wait_for_timeout(300)
    assert page.evaluate("JSON.stringify(localStorage)") == "{}"
    page.goto(f"{stack.merchant.url}/next")
    page.wait_for_timeout(500)
    assert page.evaluate("JSON.stringify(localStorage)") == "{}"
    assert page.evaluate("document.cookie") == ""
    context.close()


# Prototype.js (still shipped by Magento 1 shops) defines Array.prototype.toJSON returning a
# JSON string, so JSON.stringify sends every array as a string of JSON.
PROTOTYPE_JS = """
Array.prototype.toJSON = function () {
  const own = Array.prototype.toJSON;
  delete Array.prototype.toJSON;
  try { return JSON.stringify(this); } finally { Array.prototype.toJSON = own; }
};
"""


def test_a_cart_is_recorded_on_a_page_running_prototype_js(stack: Stack, browser: Any) -> None:
    context = browser.new_context()
    context.add_init_script(PROTOTYPE_JS)
    page = context.new_page()
    landing = f"{stack.merchant.url}/?shop=magento-{secrets.token_hex(4)}"
    with page.expect_response(lambda r: r.url.endswith("/collect")):
        page.goto(landing)
    assert page.evaluate("JSON.stringify({a: [1]})") == '{"a":"[1]"}'
    page.click("#add")

    async def cart() -> Any:
        async with stack.database.sessions() as db:
            # Without consent, visits of one browser within 30 minutes are one session (the
            # other tests' visits included): find it by this page.
            session_id = await db.scalar(select(Pageview.session_id).where(Pageview.url == landing))
            found = await db.get(Cart, session_id) if session_id else None
            return found if found is not None and found.item_count == 2 else None

    stored = wait_for(stack, cart)
    assert stored is not None, "the cart sent with Prototype.js's toJSON was not recorded"
    assert stored.items[0]["sku"] == "VM-GRAV-02" and str(stored.total) == "2580.00"
    context.close()


class Outage:
    """Calltrack on a PostgreSQL reached through a forwarder the test cuts (a failover)."""

    def __init__(self, postgresql_url: str) -> None:
        from support.proxy import forward

        self.loop = LiveServer(web.Application()).start()  # a loop for the forwarder
        self.proxy, proxied = self.loop.call(forward(postgresql_url, 5432))
        self.stack = Stack(proxied)
        self.direct = Database(postgresql_url)  # the test's own reads bypass the forwarder

    def cut(self) -> None:
        self.loop.call(self.proxy.cut())

    def restore(self) -> None:
        self.loop.call(self.proxy.restore())

    def poll(self, probe: Any, timeout: float = 15) -> Any:
        """Read the database directly until `probe(db)` returns something."""

        async def once() -> Any:
            async with self.direct.sessions() as db:
                return await probe(db)

        deadline = time.monotonic() + timeout
        while (value := self.loop.call(once())) is None and time.monotonic() < deadline:
            time.sleep(0.2)
        return value

    def close(self) -> None:
        self.stack.close()
        self.loop.call(self.direct.close())
        self.cut()
        self.loop.stop()


@pytest.fixture
def outage(postgresql_url: str) -> Iterator[Outage]:
    instance = Outage(postgresql_url)
    yield instance
    instance.close()


def test_a_landing_pageview_refused_during_a_database_outage_is_sent_again(
    outage: Outage, browser: Any
) -> None:
    """PostgreSQL is away (a failover) when an ad click lands: collect answers 503, and the
    snippet sends the landing pageview again a few seconds later, so the visit keeps its click
    and channel instead of losing them (the next pages carry no UTM)."""
    stack = outage.stack
    outage.cut()
    context = browser.new_context(locale="fr-FR")
    page = context.new_page()
    with page.expect_response(lambda r: r.url.endswith("/collect")) as first:
        page.goto(f"{stack.merchant.url}/?utm_source=google&utm_medium=cpc&gclid=Cj0KCQ-x")
    assert first.value.status == 503
    expect(page.locator("a[href^='tel:']")).to_have_text("01 23 45 67 89")  # shown anyway
    outage.restore()

    async def landing(db: Any) -> Any:
        site = select(Site.id).where(Site.site_key == stack.site_key).scalar_subquery()
        return await db.scalar(select(TrackedSession).where(TrackedSession.site_id == site))

    session = outage.poll(landing)
    assert session is not None, "the landing pageview was not sent again"
    assert session.channel == "Paid Search" and session.gclid == "Cj0KCQ-x"
    assert "gclid=Cj0KCQ-x" in session.landing_url
    context.close()


def test_a_callback_request_refused_during_a_database_outage_is_sent_again(
    outage: Outage, browser: Any
) -> None:
    """The visitor asks to be called back while PostgreSQL is away: the widget keeps saying
    "sending", sends the request again once it answers, and confirms; it is stored once."""
    from tracker.models import ContactRequest

    stack = outage.stack

    async def widget_on() -> None:
        async with outage.direct.begin() as db:
            site = await db.scalar(select(Site).where(Site.site_key == stack.site_key))
            assert site is not None
            site.settings = {**(site.settings or {}), "contact_widget": True}

    outage.loop.call(widget_on())
    context = browser.new_context(locale="fr-FR")
    page = context.new_page()
    page.goto(f"{stack.merchant.url}/velos")
    page.get_by_role("button", name="Être rappelé").click()
    dialog = page.get_by_role("dialog", name="Être rappelé")
    page.keyboard.type("06 12 34 56 78")  # the phone field has the focus
    outage.cut()
    with page.expect_response(lambda r: r.url.endswith("/contact")) as first:
        dialog.get_by_role("button", name="Être rappelé").click()
    assert first.value.status == 503
    expect(dialog.get_by_role("button", name="Envoi…")).to_be_disabled()  # still sending
    outage.restore()
    expect(dialog.get_by_role("status")).to_contain_text("rappel", timeout=15_000)

    async def requests(db: Any) -> Any:
        site = select(Site.id).where(Site.site_key == stack.site_key).scalar_subquery()
        found = list(await db.scalars(select(ContactRequest).where(ContactRequest.site_id == site)))
        return found or None

    stored = outage.poll(requests)
    assert [r.phone_e164 for r in stored] == ["+33612345678"]
    context.close()


def test_events_and_a_callback_refused_by_a_restarting_worker_are_sent_again(
    sqlite_url: str, browser: Any
) -> None:
    """A lone worker restarting (no proxy in front) refuses connections: `fetch` fails. The
    snippet sends the page's events again and the widget its request, once it is back."""
    from support.proxy import CuttableProxy

    from tracker.models import ContactRequest

    loop = LiveServer(web.Application()).start()  # a loop for the forwarder
    port = free_port()
    front = CuttableProxy("127.0.0.1", port)  # the browser reaches Calltrack through it
    loop.call(front.restore())
    stack = Stack(sqlite_url, port=port, public_url=f"http://127.0.0.1:{front.port}")
    try:

        async def widget_on() -> None:
            async with stack.database.begin() as db:
                site = await db.scalar(select(Site).where(Site.site_key == stack.site_key))
                assert site is not None
                site.settings = {**(site.settings or {}), "contact_widget": True}

        stack.query(widget_on())
        context = browser.new_context(locale="fr-FR")
        page = context.new_page()
        with page.expect_response(lambda r: r.url.endswith("/collect")):
            page.goto(f"{stack.merchant.url}/velos")
        expect(page.get_by_role("button", name="Être rappelé")).to_be_visible()
        loop.call(front.cut())  # the worker restarts
        page.click("#to-gravel")  # an SPA navigation: a pageview nobody answers
        page.get_by_role("button", name="Être rappelé").click()
        dialog = page.get_by_role("dialog", name="Être rappelé")
        page.keyboard.type("06 12 34 56 79")
        dialog.get_by_role("button", name="Être rappelé").click()
        expect(dialog.get_by_role("button", name="Envoi…")).to_be_disabled()
        page.wait_for_timeout(1000)
        loop.call(front.restore())  # back
        expect(dialog.get_by_role("status")).to_contain_text("rappel", timeout=15_000)

        async def stored() -> Any:
            site = select(Site.id).where(Site.site_key == stack.site_key).scalar_subquery()
            async with stack.database.sessions() as db:
                pages = list(await db.scalars(select(Pageview.url).where(Pageview.site_id == site)))
                requests = list(
                    await db.scalars(
                        select(ContactRequest.phone_e164).where(ContactRequest.site_id == site)
                    )
                )
            return (pages, requests) if any("/velos/gravel" in u for u in pages) else None

        found = wait_for(stack, stored, timeout=15)
        assert found is not None, "the SPA pageview was not sent again"
        assert found[1] == ["+33612345679"]
        context.close()
    finally:
        stack.close()
        loop.call(front.cut())
        loop.stop()


def test_browsers_of_one_address_get_their_own_numbers(stack: Stack, browser: Any) -> None:
    """Every browser context here has the same address and user agent, as colleagues behind
    one office address may: consentless visits must not merge across them, and each consenting
    browser holds its own pool number on every page."""
    from telephony.carriers.simulated import SimulatedCarrier
    from tracker import appkeys
    from tracker.numbers.rules import parse_rule
    from tracker.numbers.service import NumberService
    from tracker.phones import phone_forms

    async def numbered_site() -> tuple[str, str]:
        service = stack.calltrack.app[appkeys.NUMBERS]
        assert isinstance(service, NumberService)
        service.carrier = service.carrier or SimulatedCarrier()
        async with stack.database.begin() as db:
            account = await get_or_create_account(db, f"dni-{secrets.token_hex(4)}", SystemClock())
            site = await create_site(db, account, SiteSpec("Vélos Martin", "localhost", "+33123456789", "FR"))  # fmt: skip
            now = SystemClock().now()
            await service.add_numbers(db, site, now, count=3)
            (source,) = await service.add_numbers(db, site, now, rule=parse_rule("utm_source", "newsletter"))  # fmt: skip
            return site.site_key, source.e164

    key, source = stack.query(numbered_site())
    business = "01 23 45 67 89"
    page_url = f"{stack.merchant.url}/?site={key}"

    def shown(page: Any) -> str:
        return str(page.text_content("a[href^='tel:']"))

    def settled(page: Any, not_this: str) -> str:
        expect(page.locator("a[href^='tel:']")).not_to_have_text(not_this, timeout=10_000)
        return shown(page)

    contexts = [browser.new_context() for _ in range(4)]
    try:
        pages = [context.new_page() for context in contexts]
        # Two consenting browsers: each its own pool number, kept on the next page.
        numbers = []
        for page in pages[:2]:
            page.goto(page_url)
            expect(page.locator("a[href^='tel:']")).to_have_text(business)
            page.evaluate("calltrack('consent', true)")
            numbers.append(settled(page, business))
        assert numbers[0] != numbers[1]
        for page, number in zip(pages[:2], numbers, strict=True):
            page.goto(f"{stack.merchant.url}/velos?site={key}")
            expect(page.locator("a[href^='tel:']")).to_have_text(number)
            assert page.get_attribute("a[href^='tel:']", "href") != "tel:+33123456789"
        # A newsletter reader sees the source number without consent; the next plain visitor
        # from the same address does not inherit it.
        pages[2].goto(page_url + "&utm_source=newsletter")
        assert settled(pages[2], business) == phone_forms(source).national
        pages[3].goto(page_url)
        pages[3].wait_for_timeout(600)
        expect(pages[3].locator("a[href^='tel:']")).to_have_text(business)
    finally:
        for context in contexts:
            context.close()
