"""The advisor console and the contact widget in Debian's Chromium, against the real server.

Two browser contexts per scenario, as in real life: the visitor on a merchant page served from
http://localhost:PORT (another origin than Calltrack's http://127.0.0.1:PORT) carrying the
snippet, and an advisor signed in to the console. Everything goes through the real app: collect,
the contact endpoint, the hub websocket, signed carrier webhooks.
"""

from __future__ import annotations

import json
import re
import secrets
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
from aiohttp import web
from playwright.sync_api import Browser, BrowserContext, Dialog, Page, expect
from sqlalchemy import select
from support.app import BACKENDS, LiveServer, free_port, make_settings
from twilio.request_validator import RequestValidator

from dashboard.app import create_app
from telephony.carrier_factory import create_carrier
from telephony.signature import VOICE_PATH, simulated_auth_token, webhook_urls
from tracker import appkeys
from tracker.clock import SystemClock
from tracker.config import Settings
from tracker.db import Database
from tracker.models import AuditEntry, Call, ContactRequest, Site
from tracker.numbers.service import number_service_for
from tracker.sites import SiteSpec, create_site, get_or_create_account, snippet_for
from tracker.users import create_user
from widget.contact_http import ContactRateLimiter

pytestmark = pytest.mark.browser

PASSWORD = "correct horse battery"
BUSINESS = "+33123456789"
DESKTOP_CHROME = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/126.0.0.0 Safari/537.36"
)
XSS = '<img src=x onerror="window.__xss=1">'

MERCHANT_PAGE = """<!doctype html><html lang="fr"><head><meta charset="utf-8">
<title>Gravel Aventure — Vélos Martin</title><link rel="icon" href="data:,">
{snippet}
</head><body>
<header>Vélos Martin · <a id="phone" href="tel:+33123456789">01 23 45 67 89</a></header>
<h1 id="title">Gravel Aventure</h1>
<button id="add">Ajouter au panier</button>
<button id="helmet">Ajouter un casque</button>
<button id="evil">Ajouter</button>
<button id="checkout">Commander</button>
<button id="evil-page">Page piégée</button>
<button id="consent">Accepter</button>
<script>
const items = [];
const push = item => {{
  items.push(item);
  const total = items.reduce((s, i) => s + i.qty * i.price, 0);
  calltrack('cart', {{items: items.slice(), total, currency: 'EUR'}});
}};
document.getElementById('add').onclick = () =>
  push({{name: 'Gravel Aventure', sku: 'VM-GRAV-02', qty: 2, price: 1290}});
document.getElementById('helmet').onclick = () =>
  push({{name: 'Casque Urbain', sku: 'VM-CASQ-01', qty: 1, price: 59}});
document.getElementById('evil').onclick = () =>
  push({{name: {xss}, sku: 'X', qty: 1, price: 1}});
document.getElementById('checkout').onclick = () => {{
  history.pushState({{}}, '', '/commande');
  document.title = 'Commande — Vélos Martin';
}};
document.getElementById('evil-page').onclick = () => {{
  history.pushState({{}}, '', '/piege?q=' + encodeURIComponent({xss}));
  document.title = {xss};
}};
document.getElementById('consent').onclick = () => calltrack('consent', true);
</script></body></html>"""


class Stack:
    """Calltrack on 127.0.0.1, a merchant on localhost, one account with three users."""

    def __init__(self, database_url: str) -> None:
        port = free_port()
        self.public_url = f"http://127.0.0.1:{port}"
        self.settings: Settings = make_settings(
            database_url, public_url=self.public_url, carrier="simulated"
        )
        app = create_app(self.settings)
        # Dynamic number insertion with the simulated carrier's numbers (pool: with consent).
        self.carrier = create_carrier(self.settings)
        self.numbers = number_service_for(self.settings, None, self.carrier)
        app[appkeys.NUMBERS] = self.numbers
        # Every scenario asks from 127.0.0.1; the per-address limit has its own test.
        app[appkeys.EXTRAS]["contact_limiter"] = ContactRateLimiter("test", limit=1000)
        self.app = app
        self.calltrack = LiveServer(app, port=port).start()
        self.database = Database(database_url)
        tag = secrets.token_hex(4)
        self.ana = f"ana-{tag}@velos-martin.fr"  # advisor, French UI
        self.ben = f"ben-{tag}@velos-martin.fr"  # advisor, English UI
        self.eve = f"eve-{tag}@autre-boutique.fr"  # advisor of another account
        self.site_key, self.site_id = self.query(self._world(tag))
        merchant = web.Application()
        merchant.router.add_get("/{tail:.*}", self._page)
        # The merchant site is another origin: "localhost" is not "127.0.0.1" for the browser.
        self.merchant = LiveServer(merchant, host="localhost").start()

    async def _world(self, tag: str) -> tuple[str, int]:
        clock = SystemClock()
        async with self.database.begin() as db:
            account = await get_or_create_account(db, f"console-{tag}", clock)
            site = await create_site(
                db, account, SiteSpec("Vélos Martin", "localhost", BUSINESS, "FR"), clock
            )
            site.settings = {"contact_widget": True}
            ana = await create_user(db, account, self.ana, PASSWORD, "advisor", clock)
            ana.language, ana.phone_e164 = "fr", "+33612345678"
            ben = await create_user(db, account, self.ben, PASSWORD, "advisor", clock)
            ben.phone_e164 = "+33698765432"
            other = await get_or_create_account(db, f"other-{tag}", clock)
            await create_site(
                db, other, SiteSpec("Autre boutique", "autre.test", "+33145678900", "FR"), clock
            )
            await create_user(db, other, self.eve, PASSWORD, "advisor", clock)
            await self.numbers.add_numbers(
                db, site, clock.now(), count=3, webhooks=webhook_urls(self.public_url)
            )
            return site.site_key, site.id

    async def _page(self, request: web.Request) -> web.Response:
        html = MERCHANT_PAGE.format(
            snippet=snippet_for(self.site_key, self.public_url), xss=json.dumps(XSS)
        )
        return web.Response(text=html, content_type="text/html")

    def query(self, coro: Any) -> Any:
        return self.calltrack.call(coro)

    def ring(self, to: str, caller: str = "+33142685300") -> str:
        """Post the carrier's signed voice webhook for a call to `to`; return the call sid."""
        sid = "CA" + secrets.token_hex(16)
        params = {
            "AccountSid": "AC" + "5" * 32,
            "ApiVersion": "2010-04-01",
            "CallSid": sid,
            "CallStatus": "ringing",
            "Called": to,
            "Caller": caller,
            "Direction": "inbound",
            "From": caller,
            "FromCountry": "FR",
            "To": to,
            "ToCountry": "FR",
        }
        url = self.public_url + VOICE_PATH
        signature = RequestValidator(simulated_auth_token(self.settings.secret_key))
        request = urllib.request.Request(
            url,
            data=urllib.parse.urlencode(params).encode(),
            headers={"X-Twilio-Signature": signature.compute_signature(url, params)},
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            assert response.status == 200
        return sid

    def close(self) -> None:
        self.merchant.stop()
        self.query(self.database.close())
        self.calltrack.stop()


@pytest.fixture(scope="module", params=BACKENDS)
def stack(request: pytest.FixtureRequest) -> Iterator[Stack]:
    instance = Stack(str(request.getfixturevalue(f"{request.param}_url")))
    yield instance
    instance.close()


def watch(page: Page) -> list[str]:
    """Collect the page's errors (console and uncaught), which every scenario expects none of."""
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))

    def dialog(shown: Dialog) -> None:
        # An alert() from visitor text would be an XSS: record it, and never block the page.
        errors.append(f"dialog: {shown.message}")
        shown.dismiss()

    page.on("dialog", dialog)
    return errors


def console_for(stack: Stack, browser: Browser, email: str) -> tuple[BrowserContext, Page]:
    """Sign an advisor in (with the login form) and wait for the console's live connection."""
    context = browser.new_context(viewport={"width": 1280, "height": 860})
    page = context.new_page()
    page.goto(f"{stack.public_url}/console")
    expect(page).to_have_url(re.compile(r"/login\?next=/console$"))
    page.fill("input[name=email]", email)
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")
    expect(page).to_have_url(f"{stack.public_url}/console")
    expect(page.locator("#conn")).to_have_attribute("data-state", "live")
    return context, page


def count_notifications(context: BrowserContext) -> None:
    """Count desktop notifications per tab (`window.__notes`: [title, tag]) with a stand-in for
    the browser's Notification, granted; it applies to the pages the context loads next."""
    context.add_init_script(
        """window.Notification = class {
             static permission = 'granted';
             static requestPermission() { return Promise.resolve('granted'); }
             constructor(title, options) {
               (window.__notes = window.__notes || []).push([title, options && options.tag]);
             }
           };"""
    )


def visit(
    stack: Stack, browser: Browser, path: str = "/velos/gravel"
) -> tuple[BrowserContext, Page]:
    # A user agent of its own: without consent the server stitches a visit's pages by address
    # and user agent, and every scenario's visitor comes from 127.0.0.1.
    context = browser.new_context(
        locale="fr-FR", user_agent=f"{DESKTOP_CHROME} {secrets.token_hex(4)}"
    )
    page = context.new_page()
    with page.expect_response(lambda r: r.url.endswith("/collect")):
        page.goto(
            f"{stack.merchant.url}{path}?utm_source=google&utm_medium=cpc&utm_campaign=printemps"
        )
    # The widget is loaded lazily after the snippet (cfg.c).
    expect(page.get_by_role("button", name="Être rappelé")).to_be_visible()
    return context, page


def ask_callback(page: Page, phone: str, message: str) -> dict[str, Any]:
    """Fill the widget's dialog with the keyboard and submit it; return the server's answer."""
    page.get_by_role("button", name="Être rappelé").click()
    dialog = page.get_by_role("dialog", name="Être rappelé")
    expect(dialog).to_be_visible()
    page.keyboard.type(phone)  # the phone field has the focus
    page.get_by_label("Message").fill(message)
    with page.expect_response(lambda r: r.url.endswith("/contact")) as answer:
        dialog.get_by_role("button", name="Être rappelé").click()
    response = answer.value
    assert response.status == 201, response.text()
    return dict(response.json())


def visitor_row(console: Page, page: Page) -> Any:
    """The console's row of the visit open in `page` (the snippet exposes its session id)."""
    # The page has the collect answer once `expect_response` returns, but the snippet reads its
    # body a moment later: wait for the session id rather than race it.
    session_id = page.wait_for_function(
        "(() => { const s = window.calltrack.s; return typeof s == 'function' ? s() : s })()"
    ).json_value()
    assert session_id, "the snippet does not expose calltrack.s()"
    return console.locator(f'table.visitors tr[data-id="{session_id}"]')


def request_card(page: Page, phone_display: str) -> Any:
    return page.locator("li.request", has=page.locator(".phone", has_text=phone_display))


# -- scenarios -----------------------------------------------------------------------------------


def test_callback_request_with_cart_appears_within_a_second_and_the_panel_follows(
    stack: Stack, browser: Browser
) -> None:
    advisor, console = console_for(stack, browser, stack.ana)
    console_errors = watch(console)
    shopper, page = visit(stack, browser)
    page_errors = watch(page)
    page.click("#add")
    row = visitor_row(console, page)
    expect(row).to_contain_text("2 580,00 €")

    answer = ask_callback(page, "06 11 22 33 44", "Quelle taille pour 1m80 ?")
    started = time.monotonic()
    card = request_card(console, "+33 6 11 22 33 44")
    expect(card).to_be_visible(timeout=1000)
    assert time.monotonic() - started < 1.0
    expect(card).to_contain_text("2 580,00 €")
    expect(card).to_contain_text("Quelle taille pour 1m80 ?")
    expect(card).to_contain_text("Paid Search")
    # The visitor sees the confirmation, announced in a live region, with the focus on "Fermer".
    confirmation = page.get_by_role("status").filter(has_text="Un conseiller vous rappelle")
    expect(confirmation).to_be_visible()
    assert answer["status"] == "open" and answer["outside_hours"] is False
    expect(page.get_by_role("button", name="Fermer").last).to_be_focused()
    page.keyboard.press("Escape")
    expect(page.get_by_role("dialog")).to_be_hidden()
    expect(page.get_by_role("button", name="Être rappelé")).to_be_focused()

    card.get_by_role("button", name="Visiteur →").click()
    panel = console.locator("#panel")
    expect(panel).to_contain_text("Gravel Aventure")
    expect(panel.locator("table.cart")).to_contain_text("2 580,00 €")
    expect(panel).to_contain_text("printemps")

    # The visitor moves on and changes the cart: the panel follows without a reload.
    page.click("#checkout")
    page.click("#helmet")
    expect(panel.locator(".now")).to_contain_text("Commande — Vélos Martin", timeout=3000)
    expect(panel.locator("table.cart")).to_contain_text("Casque Urbain", timeout=3000)
    expect(panel.locator("table.cart tfoot")).to_contain_text("2 639,00 €")
    expect(panel.locator("ol.timeline li")).to_have_count(2)
    expect(row).to_contain_text("Commande — Vélos Martin")
    console.screenshot(path="/tmp/console.png")
    page.screenshot(path="/tmp/widget.png")
    assert console_errors == [] and page_errors == []
    shopper.close()
    advisor.close()


def test_missed_events_are_replayed_after_the_connection_drops(
    stack: Stack, browser: Browser
) -> None:
    advisor, console = console_for(stack, browser, stack.ana)
    shopper, page = visit(stack, browser, "/velos/route")
    page.click("#add")
    row = visitor_row(console, page)
    expect(row).to_contain_text("2 580,00 €")
    snapshots = console.evaluate("window.__calltrackConsole.state.snapshots")

    # The network drops for three seconds; meanwhile the visitor navigates and adds a helmet.
    console.evaluate("window.__calltrackConsole.drop(3000)")
    expect(console.locator("#conn")).to_have_attribute("data-state", "offline")
    page.click("#checkout")
    page.click("#helmet")
    time.sleep(0.5)
    expect(console.locator("#conn")).to_have_attribute("data-state", "offline")
    expect(row).not_to_contain_text("2 639,00 €")

    expect(console.locator("#conn")).to_have_attribute("data-state", "live", timeout=10_000)
    expect(row).to_contain_text("Commande — Vélos Martin")
    expect(row).to_contain_text("2 639,00 €")
    # Resumed from the last ids, not rebuilt from a snapshot: the events themselves came back.
    assert console.evaluate("window.__calltrackConsole.state.snapshots") == snapshots
    shopper.close()
    advisor.close()


def test_visitor_text_stays_inert_in_the_console(stack: Stack, browser: Browser) -> None:
    advisor, console = console_for(stack, browser, stack.ana)
    errors = watch(console)
    response = console.request.get(f"{stack.public_url}/console")
    csp = response.headers["content-security-policy"]
    assert "script-src 'self' 'nonce-" in csp and "unsafe-inline" not in csp.split("style-src")[0]
    shopper, page = visit(stack, browser, "/velos/xss")
    page.click("#evil")
    page.click("#evil-page")
    ask_callback(page, "06 55 44 33 22", XSS)
    card = request_card(console, "+33 6 55 44 33 22")
    expect(card).to_contain_text(XSS)
    card.get_by_role("button", name="Visiteur →").click()
    panel = console.locator("#panel")
    expect(panel.locator("table.cart")).to_contain_text(XSS)
    expect(panel.locator(".now")).to_contain_text(XSS)
    expect(visitor_row(console, page)).to_contain_text(XSS)
    console.wait_for_timeout(300)
    assert console.evaluate("window.__xss") is None
    assert console.locator("main img, #pops img").count() == 0
    assert errors == []
    shopper.close()
    advisor.close()


def test_a_second_advisor_cannot_claim_a_claimed_request(stack: Stack, browser: Browser) -> None:
    first, ana = console_for(stack, browser, stack.ana)
    second, ben = console_for(stack, browser, stack.ben)
    shopper, page = visit(stack, browser, "/velos/claim")
    # The programmatic way: the merchant's own form calls calltrack('contact', ...).
    page.evaluate("calltrack('contact', {phone: '06 77 88 99 00', message: 'Rappel svp'})")
    expect(
        page.get_by_role("status").filter(has_text="Un conseiller vous rappelle")
    ).to_be_visible()
    expect(page.get_by_role("dialog")).to_be_hidden()

    card_ana = request_card(ana, "+33 6 77 88 99 00")
    card_ben = request_card(ben, "+33 6 77 88 99 00")
    expect(card_ana).to_be_visible()
    expect(card_ben).to_be_visible()
    card_ana.get_by_role("button", name="Prendre").click()
    expect(card_ana).to_contain_text("Pris par vous")
    expect(card_ben).to_contain_text("Taken by ana-")
    expect(card_ben.get_by_role("button", name="Claim")).to_have_count(0)
    request_id = int(card_ben.get_attribute("data-id") or 0)
    refused = ben.evaluate(
        """id => window.__calltrackConsole.send('claim', {request_id: id})
            .then(() => null, e => e.code)""",
        request_id,
    )
    assert refused == "already_claimed"

    # Ana calls back: her phone rings first (the simulated carrier), the call is linked.
    card_ana.get_by_role("button", name="Rappeler").click()

    async def linked() -> Any:
        async with stack.database.sessions() as db:
            stored = await db.get(ContactRequest, request_id)
            return stored.call_id if stored is not None else None

    call_id = wait_for(stack, linked)
    assert call_id, "the callback call was not linked to the request"

    # Ana tags the outcome: the request leaves both queues.
    card_ana.get_by_label("Résultat").select_option("sale")
    card_ana.get_by_role("button", name="OK").click()
    expect(card_ana).to_have_count(0)
    expect(card_ben).to_have_count(0)

    async def audited() -> Any:
        async with stack.database.sessions() as db:
            rows = await db.execute(
                select(AuditEntry.action, AuditEntry.ip_truncated).where(
                    AuditEntry.target == f"contact_request:{request_id}"
                )
            )
            return sorted(rows)

    # With where from, as every entry (the console's were without: found by an audit).
    assert wait_for(stack, audited) == [
        ("contact.claimed", "127.0.0.0"),
        ("contact.tagged", "127.0.0.0"),
    ]
    shopper.close()
    first.close()
    second.close()


def test_alerts_once_per_advisor_and_other_accounts_see_nothing(
    stack: Stack, browser: Browser
) -> None:
    advisor, tab_one = console_for(stack, browser, stack.ben)
    count_notifications(advisor)
    tab_one.reload()
    tab_two = advisor.new_page()
    tab_two.goto(f"{stack.public_url}/console")
    for tab in (tab_one, tab_two):
        expect(tab.locator("#conn")).to_have_attribute("data-state", "live")
    outsider, eve = console_for(stack, browser, stack.eve)
    assert "Vélos Martin" not in (eve.locator("#boot").text_content() or "")

    shopper, page = visit(stack, browser, "/velos/alert")
    page.evaluate("calltrack('contact', {phone: '06 12 12 12 12'})")
    for tab in (tab_one, tab_two):
        expect(request_card(tab, "+33 6 12 12 12 12")).to_be_visible()
    tab_one.wait_for_timeout(500)
    notes = [tab.evaluate("window.__notes || []") for tab in (tab_one, tab_two)]
    assert sorted(len(n) for n in notes) == [0, 1], notes
    leaders = [tab.evaluate("window.__calltrackConsole.isLeader()") for tab in (tab_one, tab_two)]
    assert sorted(leaders) == [False, True]

    # Another account's advisor: no request, no visitor, and no way to act on them.
    expect(eve.locator("#queue-count")).to_have_text("0")
    expect(eve.locator("#visitors-count")).to_have_text("0")
    request_id = int(request_card(tab_one, "+33 6 12 12 12 12").get_attribute("data-id") or 0)
    refused = eve.evaluate(
        """id => window.__calltrackConsole.send('claim', {request_id: id})
            .then(() => null, e => e.code)""",
        request_id,
    )
    assert refused == "unknown_request"
    shopper.close()
    outsider.close()
    advisor.close()


def test_a_call_to_the_visitors_tracking_number_pops_up_while_ringing(
    stack: Stack, browser: Browser
) -> None:
    advisor, console = console_for(stack, browser, stack.ana)
    shopper, page = visit(stack, browser, "/velos/appel")
    page.click("#add")
    with page.expect_response(lambda r: r.url.endswith("/collect")):
        page.click("#consent")
    # With consent the page shows a pool number of its own instead of the business number.
    phone = page.locator("#phone")
    expect(phone).not_to_have_attribute("href", "tel:+33123456789")
    tracking = (phone.get_attribute("href") or "").removeprefix("tel:")
    assert tracking.startswith("+33") and tracking != BUSINESS

    sid = stack.ring(tracking)
    pop = console.locator("#pops .pop.ringing")
    expect(pop).to_be_visible(timeout=2000)
    expect(pop).to_contain_text("Appel entrant")
    expect(pop).to_contain_text("+33 1 42 68 53 00")  # the caller, formatted for people
    expect(pop).to_contain_text("2 580,00 €")
    expect(pop).to_contain_text("Gravel Aventure — Vélos Martin")
    expect(pop).to_contain_text("Paid Search")

    async def status() -> Any:
        async with stack.database.sessions() as db:
            return await db.scalar(select(Call.status).where(Call.provider_call_id == sid))

    assert stack.query(status()) == "ringing"  # still ringing while the advisor reads it
    console.screenshot(path="/tmp/console-screenpop.png")
    pop.get_by_role("button", name="Ouvrir la fiche").click()
    expect(console.locator("#panel ul.calls")).to_contain_text("Entrant")
    shopper.close()
    advisor.close()


def wait_for(stack: Stack, probe: Any, timeout: float = 10) -> Any:
    """Poll the database until `probe` returns something truthy."""
    deadline = time.monotonic() + timeout
    while True:
        value = stack.query(probe())
        if value or time.monotonic() > deadline:
            return value
        time.sleep(0.1)


def test_the_console_requires_an_advisor_and_speaks_english_too(
    stack: Stack, browser: Browser
) -> None:
    context = browser.new_context()
    page = context.new_page()
    response = page.goto(f"{stack.public_url}/console")
    assert response is not None and "/login" in page.url
    context.close()
    advisor, console = console_for(stack, browser, stack.ben)
    expect(console.locator("h2#queue-title")).to_contain_text("Callback requests")
    console.goto(f"{stack.public_url}/console?lang=fr")
    expect(console.locator("h2#queue-title")).to_contain_text("Demandes de rappel")
    boot = json.loads(console.locator("#boot").text_content() or "{}")
    assert boot["lang"] == "fr" and [s["key"] for s in boot["sites"]] == [stack.site_key]
    advisor.close()


def test_the_widget_keeps_the_keyboard_inside_and_says_when_it_is_closed(
    stack: Stack, browser: Browser
) -> None:
    # Closed except one minute a week: the visitor is told before and after asking.
    stack.query(set_site_settings(stack, {"contact_widget": True, "opening_hours": CLOSED}))
    try:
        shopper, page = visit(stack, browser, "/velos/nuit")
        errors = watch(page)
        launcher = page.get_by_role("button", name="Être rappelé")
        launcher.focus()
        page.keyboard.press("Enter")
        dialog = page.get_by_role("dialog", name="Être rappelé")
        expect(dialog).to_have_attribute("aria-modal", "true")
        # The widget says its own language (screen readers pick their voice from it).
        assert dialog.evaluate("d => d.closest('[lang]').lang") == "fr"
        expect(dialog.get_by_label("Votre numéro de téléphone")).to_be_focused()
        expect(dialog).to_contain_text("Nous sommes fermés en ce moment")
        # Tab from the last control comes back to the first (the close button), and back.
        dialog.get_by_role("button", name="Être rappelé").focus()
        page.keyboard.press("Tab")
        expect(dialog.get_by_role("button", name="Fermer")).to_be_focused()
        page.keyboard.press("Shift+Tab")
        expect(dialog.get_by_role("button", name="Être rappelé")).to_be_focused()
        # An empty number is caught before sending; the error is announced (role=alert).
        page.keyboard.press("Enter")
        expect(dialog.get_by_role("alert")).to_have_text("Saisissez votre numéro de téléphone.")
        expect(dialog.get_by_label("Votre numéro de téléphone")).to_have_attribute(
            "aria-invalid", "true"
        )
        page.keyboard.type("06 10 20 30 40")
        with page.expect_response(lambda r: r.url.endswith("/contact")) as answer:
            page.keyboard.press("Enter")
        assert answer.value.json()["outside_hours"] is True
        confirmation = dialog.get_by_role("status")
        expect(confirmation).to_contain_text("fermés")
        expect(confirmation).to_contain_text("dimanche à 03:00")
        page.keyboard.press("Enter")  # "Fermer" has the focus
        expect(dialog).to_be_hidden()
        expect(launcher).to_be_focused()
        assert errors == []
        shopper.close()
    finally:
        stack.query(set_site_settings(stack, {"contact_widget": True}))


def test_on_a_phone_the_launcher_is_a_round_button_that_leaves_the_page_usable(
    stack: Stack, browser: Browser
) -> None:
    """A pill with its label covered half the width of a phone's bottom edge, where merchants
    put cookie banners and sticky "add to cart" bars: there it is an icon with the same name."""
    context = browser.new_context(
        locale="fr-FR",
        # A phone's width in CSS pixels, as on a page with <meta name="viewport">.
        viewport={"width": 390, "height": 780},
        user_agent=f"{DESKTOP_CHROME} {secrets.token_hex(4)}",
    )
    page = context.new_page()
    errors = watch(page)
    page.goto(f"{stack.merchant.url}/velos/gravel")
    launcher = page.get_by_role("button", name="Être rappelé")
    expect(launcher).to_be_visible()
    box = launcher.bounding_box()
    assert box is not None and box["width"] <= 64 and box["height"] <= 64, box
    assert box["x"] > 390 - 64 - 24 and box["y"] > 780 - 64 - 24, box  # bottom-right corner
    launcher.click()
    dialog = page.get_by_role("dialog", name="Être rappelé")
    expect(dialog).to_be_visible()
    wide = dialog.bounding_box()
    assert wide is not None and wide["width"] >= 390 - 2 * 12 - 1, wide
    assert errors == []
    context.close()


CLOSED = {"sun": [["03:00", "03:01"]]}


async def set_site_settings(stack: Stack, settings: dict[str, Any]) -> None:
    """Change the site's settings and drop the server's cached copy."""
    async with stack.database.begin() as db:
        site = await db.get(Site, stack.site_id)
        assert site is not None
        site.settings = settings
    stack.app[appkeys.SITE_CACHE].invalidate(stack.site_key)


def test_an_erased_visitor_disappears_from_an_open_console(stack: Stack, browser: Browser) -> None:
    from tracker.privacy.erase import erase_person, tell_consoles
    from tracker.privacy.find import Scope, SubjectQuery, find_person

    advisor, console = console_for(stack, browser, stack.ana)
    console_errors = watch(console)
    shopper, page = visit(stack, browser)
    page.click("#add")
    row = visitor_row(console, page)
    expect(row).to_contain_text("2 580,00 €")
    ask_callback(page, "07 81 92 03 14", "Effacez-moi ensuite")
    card = request_card(console, "+33 7 81 92 03 14")
    expect(card).to_be_visible()
    card.get_by_role("button", name="Visiteur →").click()
    expect(console.locator("#panel")).to_contain_text("Gravel Aventure")
    session_id = str(page.evaluate("window.calltrack.s()"))

    async def erase() -> None:
        async with stack.database.begin() as db:
            site = await db.get(Site, stack.site_id)
            assert site is not None
            scope = Scope(site.account_id, (site.id,), "FR")
            person = await find_person(db, scope, SubjectQuery("session", session_id), "k")
            hub = stack.app[appkeys.HUB].backend
            export_dir = stack.app[appkeys.PRIVACY_EXPORT_DIR]
            now = SystemClock().now()
            report = await erase_person(
                db, person, secret_key="k", export_dir=export_dir, now=now, hub=hub
            )
        await tell_consoles(hub, report, now)  # once committed, as the privacy page does

    stack.query(erase())
    # Gone from the visitors, the callback queue and the panel, without a reload.
    expect(row).to_have_count(0)
    expect(card).to_have_count(0)
    expect(console.locator("#panel")).not_to_contain_text("Gravel Aventure")
    expect(console.locator("#conn")).to_have_attribute("data-state", "live")
    assert console_errors == []
    shopper.close()
    advisor.close()


def test_a_request_whose_event_was_lost_still_reaches_the_console_with_an_alert(
    stack: Stack, browser: Browser
) -> None:
    """The hub's store (Redis) fails while a visitor asks to be called back: the request is
    kept, its event is lost, and once the store answers again the console is told to resync;
    it shows the request from the database and alerts the advisor as for a live one."""
    advisor, console = console_for(stack, browser, stack.ben)
    count_notifications(advisor)
    console.reload()
    expect(console.locator("#conn")).to_have_attribute("data-state", "live")
    console_errors = watch(console)
    backend = stack.app[appkeys.HUB].backend
    assert backend is not None

    async def away(*args: Any) -> Any:
        raise ConnectionError("the hub's Redis is restarting")

    backend.publish = away  # type: ignore[method-assign]
    try:
        shopper, page = visit(stack, browser, "/velos/lost")
        ask_callback(page, "07 81 92 03 15", "Rappelez-moi")
        # The advisor is told that live events stopped, rather than shown a stale "Live".
        expect(console.locator("#conn")).to_have_attribute("data-state", "paused")
        expect(console.locator("#conn")).to_have_text("Live updates paused")
        expect(request_card(console, "+33 7 81 92 03 15")).to_have_count(0)  # the event is lost
    finally:
        del backend.publish  # the store answers again
    expect(request_card(console, "+33 7 81 92 03 15")).to_be_visible()
    visitor_row(console, page).wait_for()  # the visit too, from the snapshot
    tags = [tag for _, tag in console.evaluate("window.__notes || []")]
    assert len([t for t in tags if t.startswith("calltrack-request-")]) == 1, tags
    expect(console.locator("#conn")).to_have_attribute("data-state", "live")
    assert console_errors == []
    shopper.close()
    advisor.close()
