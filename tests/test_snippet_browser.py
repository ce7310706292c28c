"""The visitor snippet in Debian's Chromium, against a collect endpoint the tests control.

The merchant pages come from http://127.0.0.1:PORT and the snippet and collect endpoint from
http://localhost:PORT: two origins, as on a real site. The script is served the way the server
serves it (`window.__calltrack_cfg=...;` + calltrack.min.js, built from calltrack.js). End-to-end tests against the real
server live in test_tracking_browser.py.
"""

from __future__ import annotations

import json
import re
import secrets
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from playwright.sync_api import Browser, BrowserContext, ConsoleMessage, Page

from tracker.phones import phone_forms
from tracker.sites import RENDER_HOLD_MS, snippet_for
from widget.http import minified_snippet

pytestmark = pytest.mark.browser

STUB = (
    "<script>window.calltrack=window.calltrack||function(){"
    "(calltrack.q=calltrack.q||[]).push(arguments)};</script>"
)
BUSINESS = "+33123456789"
TRACKING = "+33987654321"
UK = "+442079460958"  # a tracking number whose digit string is longer than the business one
SESSION = "5e55105e55105e55"
VISITOR = "7151707151707151"
PAGE_ID = re.compile(r"^[0-9a-f]{16,32}$")  # as the server takes them


def number(e164: str, *, display: bool = True) -> dict[str, str]:
    return phone_forms(e164).as_snippet(with_display=display)


def swap(to: str = TRACKING, source: str = BUSINESS) -> dict[str, Any]:
    # As the server answers: both with their display forms (the snippet compares how they are
    # written, and writes the business number back in its own forms).
    return {"from": number(source), "to": number(to), "kind": "pool"}


@dataclass
class Site:
    """One test's site: its pages, configuration, collect answers and what the snippet sent."""

    token: str
    page_origin: str
    ct_origin: str
    config: dict[str, Any] | None
    swaps: list[dict[str, Any]] = field(default_factory=lambda: [swap()])
    status: int = 200
    delay: float = 0.0  # before collect answers
    # Hold a page's <body> until the snippet has sent its first event (so: has run).
    body_after_snippet: bool = False
    collected: threading.Event = field(default_factory=threading.Event)
    tag: str = "async"  # the snippet tag's attributes
    printed: bool = False  # the tags as `site create` prints them, instead of STUB and tag
    script_delay: float = 0.0  # before ct.js is served
    pages: dict[str, str] = field(default_factory=dict)
    events: list[dict[str, Any]] = field(default_factory=list)
    preflights: int = 0

    @property
    def collect_url(self) -> str:
        return f"{self.ct_origin}/collect/{self.token}"

    @property
    def script_url(self) -> str:
        return f"{self.ct_origin}/ct.js?k=site-key&t={self.token}"

    def page(self, body: str, *, name: str = "home", head: str = "", title: str = "Shop") -> str:
        """Publish a merchant page with the snippet and return its URL."""
        tags = f'{STUB}{head}<script {self.tag} src="{self.script_url}"></script>'
        if self.printed:
            tags = head + snippet_for(f"site-key&t={self.token}", self.ct_origin)
            assert self.script_url in tags
        self.pages[name] = (
            f'<!doctype html><html><head><meta charset="utf-8"><title>{title}</title>'
            f'<link rel="icon" href="data:,">{tags}</head><body>{body}</body></html>'
        )
        return f"{self.page_origin}/p/{self.token}/{name}"

    def answer(self, event: dict[str, Any]) -> dict[str, Any]:
        config = self.config or {}
        consented = event.get("c") is True or config.get("cm") == "not_required"
        return {
            "s": SESSION,
            # The visitor id the browser made at consent, as the server keeps it.
            "v": (event.get("v") or VISITOR) if consented and not event.get("gpc") else None,
            "n": self.swaps,
        }

    def of_type(self, kind: str) -> list[dict[str, Any]]:
        return [e for e in self.events if e["t"] == kind]


class Registry:
    def __init__(self) -> None:
        self.sites: dict[str, Site] = {}
        self.snippet = minified_snippet()


def _handler(registry: Registry) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def _send(self, status: int, body: bytes, content_type: str, cors: bool) -> None:
            self.send_response(status)
            if status != 204:
                self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            if cors:
                self.send_header("Access-Control-Allow-Origin", "*")
            self.end_headers()
            self.wfile.write(body)

        def _site(self) -> tuple[Site | None, list[str]]:
            url = urlsplit(self.path)
            parts = url.path.strip("/").split("/")
            token = parts[1] if len(parts) > 1 else parse_qs(url.query).get("t", [""])[0]
            return registry.sites.get(token), parts

        def do_GET(self) -> None:
            site, parts = self._site()
            if site is None:
                self._send(404, b"", "text/plain", cors=True)
            elif parts[0] == "p":
                html = site.pages.get("/".join(parts[2:]), "")
                if not site.body_after_snippet:
                    self._send(200, html.encode(), "text/html; charset=utf-8", cors=False)
                    return
                # Stream the head, then the body: the browser runs the head's scripts meanwhile.
                head, _, body = html.partition("<body>")
                self.send_response(200)
                self.send_header("Content-Type", "text/html; charset=utf-8")
                self.send_header("Connection", "close")
                self.end_headers()
                self.wfile.write(head.encode() + b" " * 2048)
                self.wfile.flush()
                site.collected.wait(5)
                self.wfile.write(("<body>" + body).encode())
                self.close_connection = True
            elif parts[0] == "ct.js":
                time.sleep(site.script_delay)
                # Exactly what widget/http.py serves: configuration first, then the script.
                prefix = ""
                if site.config is not None:
                    payload = json.dumps(site.config, separators=(",", ":"))
                    payload = payload.replace("</", "<\\/")
                    prefix = f"window.__calltrack_cfg={payload};\n"
                body = (prefix + registry.snippet).encode()
                self._send(200, body, "application/javascript; charset=utf-8", cors=True)
            else:
                self._send(404, b"", "text/plain", cors=True)

        def do_OPTIONS(self) -> None:
            site, _ = self._site()
            if site is not None:
                site.preflights += 1
            self._send(204, b"", "text/plain", cors=True)

        def do_POST(self) -> None:
            site, _ = self._site()
            raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            if site is None:
                self._send(404, b"{}", "application/json", cors=True)
                return
            event = json.loads(raw)
            # How it came: fetch ("cors") or sendBeacon ("no-cors"), and as what content type.
            event["_http"] = {
                "content_type": self.headers.get("Content-Type", ""),
                "mode": self.headers.get("Sec-Fetch-Mode", ""),
                "cookie": self.headers.get("Cookie", ""),
            }
            site.events.append(event)
            site.collected.set()
            if site.delay:
                time.sleep(site.delay)
            if site.status != 200:
                error = {"error": {"code": "unknown_site", "message": "no such site"}}
                self._send(site.status, json.dumps(error).encode(), "application/json", True)
                return
            self._send(200, json.dumps(site.answer(event)).encode(), "application/json", True)

    return Handler


class QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A page closed mid-answer (a held collect request, a context closed by the test) is
        # expected here; anything else is a bug in the handler.
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


@pytest.fixture(scope="module")
def registry() -> Iterator[tuple[Registry, int]]:
    shared = Registry()
    server = QuietServer(("127.0.0.1", 0), _handler(shared))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield shared, int(server.server_address[1])
    server.shutdown()
    server.server_close()
    thread.join(5)


def site_config(**overrides: Any) -> dict[str, Any]:
    config: dict[str, Any] = {"k": "site-key", "cm": "required", "b": [number(BUSINESS)]}
    config.update(overrides)
    return config


@pytest.fixture
def site(registry: tuple[Registry, int]) -> Iterator[Site]:
    shared, port = registry
    token = secrets.token_hex(6)
    # "localhost" and "127.0.0.1" are two origins for the browser: a cross-origin snippet.
    instance = Site(token, f"http://127.0.0.1:{port}", f"http://localhost:{port}", None)
    instance.config = site_config(u=instance.collect_url)
    shared.sites[token] = instance
    yield instance
    del shared.sites[token]


class Visitor:
    """A fresh browser context and page that records every console error and page error."""

    def __init__(self, browser: Browser, site: Site, *, gpc: bool = False) -> None:
        self.site = site
        self.context: BrowserContext = browser.new_context()
        if gpc:
            self.context.add_init_script(
                "Object.defineProperty(Navigator.prototype, 'globalPrivacyControl',"
                " {get: () => true, configurable: true})"
            )
        self.page: Page = self.context.new_page()
        self.errors: list[str] = []
        self.page.on("console", self._console)
        self.page.on("pageerror", lambda error: self.errors.append(f"pageerror: {error}"))

    def _console(self, message: ConsoleMessage) -> None:
        if message.type not in ("error", "warning"):
            return
        # Chromium's own network log reports every 4xx/5xx or refused request as "Failed to load
        # resource" with the request's URL as location; no script can silence it. Anything else
        # (the snippet's own console calls, uncaught errors) counts.
        url = str(message.location.get("url", ""))
        if message.text.startswith("Failed to load resource") and "/collect" in url:
            return
        self.errors.append(f"console.{message.type}: {message.text} @ {url}")

    def wait_events(
        self, predicate: Callable[[list[dict[str, Any]]], bool], timeout: float = 5.0
    ) -> None:
        deadline = time.monotonic() + timeout
        while not predicate(self.site.events):
            if time.monotonic() > deadline:
                raise AssertionError(f"events never matched; got {self.site.events!r}")
            self.page.wait_for_timeout(15)

    def wait_count(self, kind: str, count: int = 1, timeout: float = 5.0) -> list[dict[str, Any]]:
        self.wait_events(
            lambda events: len([e for e in events if e["t"] == kind]) >= count, timeout
        )
        return self.site.of_type(kind)

    def text(self, selector: str) -> str:
        return str(self.page.locator(selector).text_content())

    def storage(self) -> dict[str, Any]:
        return dict(
            self.page.evaluate(
                """async () => ({local: {...localStorage}, session: {...sessionStorage},
                    cookie: document.cookie,
                    idb: indexedDB.databases ? (await indexedDB.databases()).length : 0})"""
            )
        )

    def close(self) -> None:
        self.context.close()


@pytest.fixture
def visitor(browser: Browser, site: Site) -> Iterator[Callable[..., Visitor]]:
    opened: list[Visitor] = []

    def open_visitor(**kwargs: Any) -> Visitor:
        opened.append(Visitor(browser, site, **kwargs))
        return opened[-1]

    yield open_visitor
    errors = [error for v in opened for error in v.errors]
    for v in opened:
        v.close()
    assert errors == [], "the snippet must never throw nor write to the console"


def swapped(v: Visitor, selector: str, text: str, timeout: float = 3000) -> None:
    v.page.wait_for_function(
        "([s, t]) => document.querySelector(s)?.textContent === t",
        arg=[selector, text],
        timeout=timeout,
    )


def assert_swapped_forms(
    site: Site, v: Visitor, business: str, tracking: str, forms: list[tuple[str, str]]
) -> None:
    """Each (page text, expected) in its own list item of one page, swapped as expected."""
    site.swaps = [swap(tracking, business)]
    assert site.config is not None
    site.config["b"] = [number(business)]
    body = "".join(f'<li id="f{i}">{text}</li>' for i, (text, _) in enumerate(forms))
    v.page.goto(site.page(f"<ul>{body}</ul>"))
    swapped(v, "#f0", forms[0][1])
    texts = v.page.evaluate(
        "n => Array.from({length: n}, (_, i) => document.getElementById('f' + i).textContent)",
        len(forms),
    )
    assert list(zip([text for text, _ in forms], texts, strict=True)) == forms


# ---------------------------------------------------------------------------------------------
# Tracking


def test_queued_commands_run_in_order_after_the_first_pageview(
    site: Site, visitor: Callable[..., Visitor]
) -> None:
    url = site.page(
        "<p>hello</p>",
        head="<script>"
        "calltrack('cart', {items: [{name: 'Mug', sku: 'M-1', qty: 2, price: 9.5}],"
        " total: 19, currency: 'EUR'});"
        "calltrack('consent', true);"
        "calltrack('contact', {later: true});"  # unknown today: ignored silently
        "calltrack('number', n => { window.shown = n });"
        "</script>",
        title="Mugs — Shop",
    )
    v = visitor()
    v.page.goto(url, referer="https://www.google.com/")
    v.wait_count("consent")
    v.page.wait_for_function("window.shown")
    assert [e["t"] for e in site.events] == ["pageview", "cart", "consent"]
    pageview, cart, consent = site.events
    assert pageview["k"] == "site-key"
    assert pageview["u"] == url
    assert pageview["r"] == "https://www.google.com/"
    assert pageview["ti"] == "Mugs — Shop"
    assert pageview["y"] == 0  # how the page was loaded: a navigation (1 reload, 2 back)
    assert PAGE_ID.match(pageview["p"])
    # Consent queued before the page's first request left goes with it: its answer already
    # holds the visitor's pool number (it used to answer for a consentless visit, showing
    # the business number for one more round trip). The consenting browser makes its visitor
    # id itself, at once (the server forks a visit another browser of the same address shared).
    assert pageview["s"] is None and pageview["c"] is True and pageview["gpc"] is False
    assert PAGE_ID.match(consent["v"]) and pageview["v"] == consent["v"]
    assert "lang" not in pageview  # the server reads Accept-Language
    # Events queued before the first answer wait for it, so they carry its session id.
    assert cart["s"] == consent["s"] == SESSION
    assert cart["p"] == consent["p"] == pageview["p"]
    assert cart["cart"] == {
        "items": [{"name": "Mug", "sku": "M-1", "qty": 2, "price": 9.5}],
        "total": 19,
        "currency": "EUR",
    }
    assert consent["c"] is True
    assert v.page.evaluate("window.shown.e164") == TRACKING
    assert v.page.evaluate("window.shown.national") == "09 87 65 43 21"
    # Simple requests only: text/plain, no preflight, no cookies.
    assert site.preflights == 0
    assert all(e["_http"]["content_type"].startswith("text/plain") for e in site.events)
    assert all(e["_http"]["cookie"] == "" for e in site.events)
    v.page.reload()
    assert v.wait_count("pageview", 2)[1]["y"] == 1  # a reload continues a consentless visit


def test_commands_after_load_and_a_second_tag_is_ignored(
    site: Site, visitor: Callable[..., Visitor]
) -> None:
    # The merchant pasted the tag twice: one snippet runs.
    url = site.page("<p>x</p>", head=f'<script async src="{site.script_url}"></script>')
    v = visitor()
    v.page.goto(url)
    v.wait_count("pageview")
    v.page.evaluate("calltrack('cart', {items: [], total: 0, currency: 'EUR'})")
    v.wait_count("cart")
    v.page.wait_for_timeout(100)
    assert [e["t"] for e in site.events] == ["pageview", "cart"]
    assert v.page.evaluate("typeof calltrack.q") == "undefined"


def test_single_page_navigations_send_leave_then_a_new_pageview(
    site: Site, visitor: Callable[..., Visitor]
) -> None:
    url = site.page("<p>x</p>", title="Home")
    v = visitor()
    v.page.goto(url)
    first = v.wait_count("pageview")[0]
    base = f"/p/{site.token}"

    v.page.evaluate(
        f"history.pushState({{}}, '', '{base}/bikes?color=red'); document.title = 'Bikes'"
    )
    second = v.wait_count("pageview", 2)[1]
    leave = v.site.of_type("leave")[0]
    # The leave names the page it closes: separate requests may reach the server in any order.
    assert leave["p"] == first["p"] and isinstance(leave["d"], int) and leave["d"] >= 0
    assert second["u"] == f"{site.page_origin}{base}/bikes?color=red"
    assert second.get("r") is None
    assert second["ti"] == "Bikes"  # the title set just after pushState
    assert PAGE_ID.match(second["p"]) and second["p"] != first["p"]
    assert second["s"] == SESSION

    # Not navigations: replaceState keeping the URL, anchors and hash changes.
    v.page.evaluate("history.replaceState({scroll: 10}, '', location.href)")
    v.page.evaluate("location.hash = '#reviews'")
    v.page.evaluate("history.pushState({}, '', '#specs')")
    v.page.wait_for_timeout(150)
    assert len(site.of_type("pageview")) == 2

    # replaceState to another path is a navigation.
    v.page.evaluate(f"history.replaceState({{}}, '', '{base}/cart')")
    third = v.wait_count("pageview", 3)[2]
    assert third["u"].endswith("/cart") and third["p"] not in (first["p"], second["p"])
    v.page.evaluate("history.pushState({}, '', '#/checkout')")

    # Back button (popstate): to /cart (no navigation), then to /bikes?color=red#reviews.
    v.page.go_back()
    v.page.wait_for_timeout(100)
    assert len(site.of_type("pageview")) == 3
    v.page.go_back()
    assert v.wait_count("pageview", 4)[3]["u"].endswith("/bikes?color=red#reviews")
    pages = [e["p"] for e in site.of_type("pageview")]
    assert len(set(pages)) == 4
    # The leave and the next pageview are separate requests: wait for the leave too.
    leaves = v.wait_count("leave", 3)
    assert len(leaves) == 3 and sorted(e["p"] for e in leaves) == sorted(pages[:3])

    # A router's redirect, pushState then replaceState in one task: two pages, each with its
    # own id and URL (the server keeps one pageview per id).
    v.page.evaluate(
        f"history.pushState({{}}, '', '{base}/old'); "
        f"history.replaceState({{}}, '', '{base}/new'); document.title = 'New'"
    )
    # (Two requests: they may arrive in either order.)
    old, new = sorted(v.wait_count("pageview", 6)[4:], key=lambda e: not e["u"].endswith("/old"))
    assert old["u"].endswith("/old") and new["u"].endswith("/new") and new["ti"] == "New"
    assert len({old["p"], new["p"], *pages}) == 6


def test_visible_time_pings_and_leave_beacons(site: Site, visitor: Callable[..., Visitor]) -> None:
    v = visitor()
    v.page.clock.install()
    v.page.goto(site.page("<p>x</p>"))
    v.wait_count("pageview")
    v.page.clock.run_for(31_000)
    ping = v.wait_count("ping")[0]
    assert 30_000 <= ping["d"] <= 32_000

    set_visibility = """state => {
        // As a browser does when the tab goes to the background (or comes back): both.
        Object.defineProperty(document, 'visibilityState', {value: state, configurable: true});
        Object.defineProperty(document, 'hidden', {value: state == 'hidden', configurable: true});
        document.dispatchEvent(new Event('visibilitychange'));
    }"""
    v.page.evaluate(set_visibility, "hidden")
    hidden = v.wait_count("leave")[0]
    assert 31_000 <= hidden["d"] <= 33_000
    # Hidden time does not count, and no ping is sent while hidden.
    v.page.clock.run_for(60_000)
    v.page.evaluate(set_visibility, "visible")
    v.page.clock.run_for(5_000)
    assert len(site.of_type("ping")) == 1
    v.page.goto(site.page("<p>next</p>", name="next"))  # pagehide
    leaves = v.wait_count("leave", 2)
    assert 36_000 <= leaves[1]["d"] <= hidden["d"] + 7_000
    assert leaves[1]["p"] == hidden["p"]
    assert [e["_http"]["mode"] for e in leaves] == ["no-cors", "no-cors"]  # sendBeacon


# ---------------------------------------------------------------------------------------------
# Consent and storage


def test_nothing_is_stored_before_consent(site: Site, visitor: Callable[..., Visitor]) -> None:
    v = visitor()
    v.page.goto(site.page("<p id=n>01 23 45 67 89</p>"))
    swapped(v, "#n", "09 87 65 43 21")
    v.page.evaluate("calltrack('cart', {items: [], total: 0, currency: 'EUR'})")
    v.wait_count("cart")
    assert v.storage() == {"local": {}, "session": {}, "cookie": "", "idb": 0}
    assert all(e["v"] is None and e["c"] is None for e in site.events)


def test_consent_stores_ids_and_the_next_page_swaps_at_once(
    site: Site, visitor: Callable[..., Visitor]
) -> None:
    v = visitor()
    v.page.goto(site.page("<p id=n>01 23 45 67 89</p>"))
    v.wait_count("pageview")
    v.page.evaluate("calltrack('consent', true)")
    consent = v.wait_count("consent")[0]
    assert consent["c"] is True
    # The browser made its own visitor id for the consent event, and keeps it (the server
    # answers it back).
    visitor_id = consent["v"]
    assert PAGE_ID.match(visitor_id) and visitor_id != VISITOR
    v.page.wait_for_function(f"localStorage.ct_v == '{visitor_id}'")
    stored = v.storage()["local"]
    assert stored["ct_v"] == visitor_id
    session = json.loads(stored["ct_s"])
    assert session["s"] == SESSION and session["n"] == site.swaps
    assert abs(session["t"] / 1000 - time.time()) < 60

    # Next page of the visit: the stored numbers swap before collect answers (held 1.2 s, longer
    # than the wait below), and the stored ids go with the pageview.
    site.delay = 1.2
    v.page.goto(site.page("<p id=n>01 23 45 67 89</p>", name="second"))
    swapped(v, "#n", "09 87 65 43 21", timeout=600)
    second = v.wait_count("pageview", 2)[1]
    assert second["s"] == SESSION and second["v"] == visitor_id and second["c"] is True

    # Withdrawal: both keys go, the server is told, and the visitor id is never sent again.
    site.delay = 0
    v.page.evaluate("calltrack('consent', false)")
    withdrawn = v.wait_count("consent", 2)[1]
    assert withdrawn["c"] is False and withdrawn["v"] is None
    assert v.storage()["local"] == {}
    v.page.evaluate("calltrack('cart', {items: [], total: 0, currency: 'EUR'})")
    assert v.wait_count("cart")[0]["v"] is None
    assert v.storage()["local"] == {}


def test_stale_stored_session_is_not_reused(site: Site, visitor: Callable[..., Visitor]) -> None:
    v = visitor()
    v.context.add_init_script(
        f"""if (location.origin === '{site.page_origin}') {{
            localStorage.ct_v = '{VISITOR}';
            localStorage.ct_s = JSON.stringify(
                {{s: 'aaaaaaaaaaaaaaaa', n: [], t: Date.now() - 31 * 60e3}});
        }}"""
    )
    v.page.goto(site.page("<p id=n>01 23 45 67 89</p>"))
    pageview = v.wait_count("pageview")[0]
    # The visitor id stays (consent was given earlier), the 31-minute-old session does not.
    assert pageview["s"] is None and pageview["v"] == VISITOR and pageview["c"] is True
    swapped(v, "#n", "09 87 65 43 21")


def test_not_required_mode_stores_without_a_consent_call(
    site: Site, visitor: Callable[..., Visitor]
) -> None:
    assert site.config is not None
    site.config["cm"] = "not_required"
    v = visitor()
    v.page.goto(site.page("<p>x</p>"))
    v.page.wait_for_function("localStorage.ct_v")
    assert v.storage()["local"]["ct_v"] == VISITOR
    assert site.events[0]["c"] is None


@pytest.mark.parametrize("mode", ["required", "not_required"])
def test_global_privacy_control_counts_as_no_consent(
    site: Site, visitor: Callable[..., Visitor], mode: str
) -> None:
    assert site.config is not None
    site.config["cm"] = mode
    v = visitor(gpc=True)
    v.page.goto(site.page("<p id=n>01 23 45 67 89</p>"))
    swapped(v, "#n", "09 87 65 43 21")  # source-level numbers still work
    v.page.evaluate("calltrack('consent', true)")
    v.wait_count("consent")
    v.page.wait_for_timeout(100)
    assert all(e["gpc"] is True and e["v"] is None for e in site.events)
    assert v.storage() == {"local": {}, "session": {}, "cookie": "", "idb": 0}


# ---------------------------------------------------------------------------------------------
# Dynamic number insertion

FORMATS = [
    # (page text, expected after the swap)
    ("01 23 45 67 89", "09 87 65 43 21"),
    ("01.23.45.67.89", "09.87.65.43.21"),
    ("01-23-45-67-89", "09-87-65-43-21"),
    ("0123456789", "0987654321"),
    ("01\u00a023\u00a045\u00a067\u00a089", "09\u00a087\u00a065\u00a043\u00a021"),
    ("+33 1 23 45 67 89", "+33 9 87 65 43 21"),
    ("+33 (0)1 23 45 67 89", "+33 (0)9 87 65 43 21"),
    ("+33123456789", "+33987654321"),
    ("+33.1.23.45.67.89", "+33.9.87.65.43.21"),
    ("0033 1 23 45 67 89", "0033 9 87 65 43 21"),
    ("Appelez le 01 23 45 67 89 !", "Appelez le 09 87 65 43 21 !"),
    ("Tél. : 01 23 45 67 89 / 01 98 76 54 32", "Tél. : 09 87 65 43 21 / 01 98 76 54 32"),
    ("01 98 76 54 32", "01 98 76 54 32"),  # another number
    ("Commande 70123456789", "Commande 70123456789"),  # digits inside a longer number
]
TEL_LINKS = [
    ("tel:+33123456789", "tel:+33987654321"),
    ("tel:0123456789", "tel:0987654321"),
    ("tel:01.23.45.67.89", "tel:09.87.65.43.21"),
    ("tel:+33-1-23-45-67-89", "tel:+33-9-87-65-43-21"),
    ("TEL:0033123456789", "TEL:0033987654321"),
    ("tel:+33198765432", "tel:+33198765432"),
]


def test_every_written_form_is_swapped_in_its_own_style(
    site: Site, visitor: Callable[..., Visitor]
) -> None:
    body = "".join(f'<li id="f{i}">{text}</li>' for i, (text, _) in enumerate(FORMATS))
    body += "".join(f'<a id="t{i}" href="{href}">call</a>' for i, (href, _) in enumerate(TEL_LINKS))
    body += (
        '<a id="split1" href="tel:0123456789">01 23 <b>45</b> 67 89</a>'
        '<p id="split2"><span class="cc">+33</span> 1 23 <em>45 67</em> 89</p>'
        # A search highlight, a form label (found by an audit: left as they were).
        '<p id="split3">01 23 <mark>45</mark> 67 89</p><label id="split4">01 <b>23</b> 45 '
        "<mark>67 89</mark></label>"
        '<div id="noswap" data-calltrack-noswap><a href="tel:0123456789">01 23 45 67 89</a></div>'
        '<textarea id="ta">01 23 45 67 89</textarea><input id="in" value="01 23 45 67 89">'
        '<div id="ce" contenteditable>01 23 45 67 89</div>'
        # Custom elements whose names hold "title" or "script" show page text; the script and
        # style of an inline SVG (lower-case names) are code.
        '<mat-card-title id="ce1">01 23 45 67 89</mat-card-title>'
        '<product-description id="ce2">Tél. 01 23 45 67 89</product-description>'
        '<svg><script id="svgs">window.svgNumber = "01 23 45 67 89"</script>'
        '<style id="svgst">/* 01 23 45 67 89 */</style><text id="svgt">01 23 45 67 89</text></svg>'
    )
    v = visitor()
    v.page.goto(site.page(f"<ul>{body}</ul>", title="Call 01 23 45 67 89"))
    swapped(v, "#f0", "09 87 65 43 21")
    texts = v.page.evaluate(
        "n => Array.from({length: n}, (_, i) => document.getElementById('f' + i).textContent)",
        len(FORMATS),
    )
    assert texts == [expected for _, expected in FORMATS]
    hrefs = v.page.evaluate(
        "n => Array.from({length: n},"
        " (_, i) => document.getElementById('t' + i).getAttribute('href'))",
        len(TEL_LINKS),
    )
    assert hrefs == [expected for _, expected in TEL_LINKS]
    # Split by inline markup: the markup stays and each digit stays in its own node.
    assert v.page.inner_html("#split1") == "09 87 <b>65</b> 43 21"
    assert v.page.get_attribute("#split1", "href") == "tel:0987654321"
    assert v.page.inner_html("#split2") == '<span class="cc">+33</span> 9 87 <em>65 43</em> 21'
    assert v.page.inner_html("#split3") == "09 87 <mark>65</mark> 43 21"
    assert v.page.inner_html("#split4") == "09 <b>87</b> 65 <mark>43 21</mark>"
    assert v.page.inner_html("#noswap") == '<a href="tel:0123456789">01 23 45 67 89</a>'
    assert v.page.input_value("#ta") == "01 23 45 67 89"
    assert v.page.input_value("#in") == "01 23 45 67 89"
    assert v.text("#ce") == "01 23 45 67 89"
    assert v.text("#ce1") == "09 87 65 43 21" and v.text("#ce2") == "Tél. 09 87 65 43 21"
    assert v.page.text_content("#svgs") == 'window.svgNumber = "01 23 45 67 89"'
    assert v.page.text_content("#svgst") == "/* 01 23 45 67 89 */"
    assert v.page.text_content("#svgt") == "09 87 65 43 21"
    assert v.page.title() == "Call 01 23 45 67 89"
    assert site.events[0]["ti"] == "Call 01 23 45 67 89"


def test_a_longer_tracking_number_uses_the_display_form_with_the_page_separator(
    site: Site, visitor: Callable[..., Visitor]
) -> None:
    site.swaps = [swap(UK)]
    v = visitor()
    v.page.goto(
        site.page(
            '<p id="a">01.23.45.67.89</p><p id="b">+33 1 23 45 67 89</p><p id="c">0123456789</p>'
            '<p id="d">0033 1 23 45 67 89</p><a id="e" href="tel:+33123456789">x</a>'
        )
    )
    swapped(v, "#a", "020.7946.0958")
    assert v.text("#b") == "+44 20 7946 0958"
    assert v.text("#c") == "02079460958"
    assert v.text("#d") == "0044 20 7946 0958"
    assert v.page.get_attribute("#e", "href") == "tel:+442079460958"


def test_later_content_is_swapped(site: Site, visitor: Callable[..., Visitor]) -> None:
    url = site.page(
        '<div id="popup"></div><p id="edit">soon</p>',
        head="""<script>
        setTimeout(() => {
          document.getElementById('popup').innerHTML =
            '<div class="modal"><p id="late">Call '
            + '<a href="tel:0123456789">01 23 45 67 89</a></p></div>';
        }, 2000);
        </script>""",
    )
    v = visitor()
    v.page.goto(url)
    v.wait_count("pageview")
    # A text node rewritten in place (characterData).
    v.page.evaluate("document.getElementById('edit').firstChild.data = 'Tel 01 23 45 67 89'")
    swapped(v, "#edit", "Tel 09 87 65 43 21")
    swapped(v, "#late", "Call 09 87 65 43 21", timeout=4000)
    assert v.page.get_attribute("#late a", "href") == "tel:0987654321"


def test_single_page_route_content_is_swapped(site: Site, visitor: Callable[..., Visitor]) -> None:
    url = site.page(
        '<main id="app"><h1>Home</h1></main>',
        head="""<script>
        window.route = path => {
          history.pushState({}, '', path);
          document.title = 'Contact';
          document.getElementById('app').innerHTML =
            '<h1>Contact</h1><p id="contact">Service client : <b>01 23 45 67 89</b></p>';
        };
        </script>""",
    )
    v = visitor()
    v.page.goto(url)
    v.wait_count("pageview")
    v.page.evaluate(f"route('/p/{site.token}/contact')")
    swapped(v, "#contact", "Service client : 09 87 65 43 21")
    assert v.wait_count("pageview", 2)[1]["ti"] == "Contact"


def test_number_callback_and_swap_command(site: Site, visitor: Callable[..., Visitor]) -> None:
    v = visitor()
    v.page.goto(site.page('<p id="n" data-calltrack-noswap>01 23 45 67 89</p>'))
    v.wait_count("pageview")
    received = v.page.evaluate("new Promise(resolve => calltrack('number', resolve))")
    assert received["e164"] == TRACKING
    assert received["national"] == "09 87 65 43 21"
    assert received["international"] == "+33 9 87 65 43 21"
    # Attribute changes are not observed: the page asks for a rescan.
    v.page.evaluate("document.getElementById('n').removeAttribute('data-calltrack-noswap')")
    v.page.wait_for_timeout(50)
    assert v.text("#n") == "01 23 45 67 89"
    v.page.evaluate("calltrack('swap')")
    assert v.text("#n") == "09 87 65 43 21"


def test_number_callback_gets_the_business_number_without_swaps(
    site: Site, visitor: Callable[..., Visitor]
) -> None:
    site.swaps = []
    v = visitor()
    v.page.goto(
        site.page(
            '<p id="n">01 23 45 67 89</p>',
            head="<script>calltrack('number', n => { window.shown = n })</script>",
        )
    )
    v.page.wait_for_function("window.shown")
    assert v.page.evaluate("window.shown.e164") == BUSINESS
    assert v.text("#n") == "01 23 45 67 89"
    assert v.page.is_visible("#n")


def test_a_new_number_from_a_later_answer_replaces_the_old_one(
    site: Site, visitor: Callable[..., Visitor]
) -> None:
    v = visitor()
    v.page.goto(
        site.page(
            '<p id="n">01 23 45 67 89</p><a id="t" href="tel:+33123456789">x</a>',
            head="<script>window.seen = []; calltrack('number', n => seen.push(n.e164))</script>",
        )
    )
    swapped(v, "#n", "09 87 65 43 21")
    # The lease changed (the tab slept past it): the next answer carries another number.
    site.swaps = [swap("+33612345678")]
    v.page.evaluate("calltrack('cart', {items: [], total: 0, currency: 'EUR'})")
    swapped(v, "#n", "06 12 34 56 78")
    assert v.page.get_attribute("#t", "href") == "tel:+33612345678"
    # No tracking number any more: back to the business number.
    site.swaps = []
    v.page.evaluate("calltrack('cart', {items: [], total: 1, currency: 'EUR'})")
    swapped(v, "#n", "01 23 45 67 89")
    assert v.page.get_attribute("#t", "href") == "tel:+33123456789"
    assert v.page.evaluate("seen") == [TRACKING, "+33612345678", BUSINESS]


@pytest.mark.parametrize(
    ("tag", "body_after_snippet"),
    [
        # The body arrives after the snippet has run (as when ct.js is cached, or the page is
        # slower than the script): the numbers are parsed while collect has not answered.
        ("async", True),
        # The whole page at once, with the tags `site create` prints: an async script may well
        # run after the first paint, which would show the number; their `blocking="render"`
        # (Chromium) holds that paint for the script.
        (None, False),
    ],
    ids=["async-body-after-snippet", "printed-tags"],
)
def test_no_flicker_while_collect_is_slow(
    site: Site, visitor: Callable[..., Visitor], tag: str | None, body_after_snippet: bool
) -> None:
    # Collect answers after 300 ms: the numbers must stay hidden until then, then show swapped.
    site.delay = 0.3
    site.body_after_snippet = body_after_snippet
    if tag is None:
        site.printed = True
    else:
        site.tag = tag
    v = visitor()
    # A probe run before every frame: was a text node holding (part of) the business number
    # ever rendered visible?
    v.context.add_init_script(
        """window.__seen = []; window.__frames = 0;
        const probe = () => {
          window.__frames++;
          for (const el of document.querySelectorAll('[data-probe]')) {
            if (!el.textContent.replace(/\\D/g, '').includes('123456789')) continue;
            const walker = document.createTreeWalker(el, NodeFilter.SHOW_TEXT);
            for (let node; (node = walker.nextNode()); ) {
              if (/\\d/.test(node.data) && node.parentElement.checkVisibility(
                  {visibilityProperty: true, opacityProperty: true})) {
                window.__seen.push([el.id, node.data, Math.round(performance.now())]);
              }
            }
          }
          requestAnimationFrame(probe);
        };
        requestAnimationFrame(probe);"""
    )
    url = site.page(
        '<header><p id="h" data-probe>Appelez-nous : '
        '<a href="tel:0123456789">01 23 45 67 89</a></p>'
        '</header><p id="s" data-probe>Ou le <span>+33</span> 1 23 <b>45</b> 67 89</p>'
        + "<p>Lorem ipsum dolor sit amet.</p>" * 200
        + '<footer><p id="f" data-probe>Service client +33 (0)1 23 45 67 89</p></footer>'
        + """<script>
        setTimeout(() => document.body.insertAdjacentHTML('beforeend',
          '<p id="late" data-probe>Aussi au 01.23.45.67.89</p>'), 50);
        </script>"""
    )
    v.page.goto(url)
    swapped(v, "#late", "Aussi au 09.87.65.43.21")
    assert v.text("#h") == "Appelez-nous : 09 87 65 43 21"
    assert v.text("#s") == "Ou le +33 9 87 65 43 21"
    assert v.text("#f") == "Service client +33 (0)9 87 65 43 21"
    assert v.page.evaluate("window.__frames") > 3
    assert v.page.evaluate("window.__seen") == []
    for selector in ("#h a", "#s", "#f", "#late"):
        assert v.page.is_visible(selector)


@pytest.mark.parametrize("copies", [1, 2], ids=["once", "pasted-twice"])
def test_a_slow_snippet_holds_the_first_paint_one_second_at_most(
    site: Site, visitor: Callable[..., Visitor], copies: int
) -> None:
    # ct.js takes 4 s (Calltrack slow or unreachable): the printed tags' timer lifts the
    # render hold after RENDER_HOLD_MS, so the merchant's page paints long before the script
    # arrives (with the business number: nothing could hide it), and the swap follows. A
    # page with the tags twice (a theme and a plugin) is released as well.
    site.printed = True
    site.script_delay = 4.0
    v = visitor()
    head = snippet_for(f"site-key&t={site.token}", site.ct_origin) * (copies - 1)
    v.page.goto(site.page('<p id="n">01 23 45 67 89</p>', head=head), wait_until="commit")
    swapped(v, "#n", "09 87 65 43 21", timeout=10_000)
    painted, arrived = v.page.evaluate(
        """url => [
            performance.getEntriesByName('first-contentful-paint')[0].startTime,
            performance.getEntriesByName(url)[0].responseEnd]""",
        site.script_url,
    )
    assert arrived > 3500
    assert RENDER_HOLD_MS <= painted < arrived - 1500


def test_business_number_shows_after_the_safety_timeout(
    site: Site, visitor: Callable[..., Visitor]
) -> None:
    site.delay = 3.0
    v = visitor()
    v.page.goto(site.page('<p id="n">01 23 45 67 89</p>'))
    assert v.page.evaluate("getComputedStyle(n).visibility") == "hidden"
    started = time.monotonic()
    v.page.wait_for_function("getComputedStyle(n).visibility === 'visible'", timeout=2500)
    assert time.monotonic() - started < 2.0
    assert v.text("#n") == "01 23 45 67 89"


# ---------------------------------------------------------------------------------------------
# Failures stay silent


@pytest.mark.parametrize("status", [404, 500, 429])
def test_error_answers_stay_silent_and_show_the_business_number(
    site: Site, visitor: Callable[..., Visitor], status: int
) -> None:
    site.status = status
    v = visitor()
    v.page.goto(site.page('<p id="n">01 23 45 67 89</p>'))
    v.wait_count("pageview")
    # Settled by the answer, not by the 1.5 s safety timeout.
    v.page.wait_for_function("getComputedStyle(n).visibility === 'visible'", timeout=1000)
    v.page.evaluate("calltrack('cart', {items: [], total: 0, currency: 'EUR'}); calltrack('swap')")
    v.wait_count("cart")
    assert v.text("#n") == "01 23 45 67 89"
    assert v.storage()["local"] == {}


def test_unreachable_collect_stays_silent(site: Site, visitor: Callable[..., Visitor]) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed_port = sock.getsockname()[1]
    assert site.config is not None
    site.config["u"] = f"http://127.0.0.1:{closed_port}/collect"
    v = visitor()
    v.page.goto(site.page('<p id="n">01 23 45 67 89</p>'))
    v.page.wait_for_function("getComputedStyle(n).visibility === 'visible'", timeout=2500)
    v.page.evaluate("calltrack('cart', {items: []}); calltrack('consent', true)")
    v.page.evaluate("history.pushState({}, '', '/elsewhere')")
    v.page.wait_for_timeout(200)
    assert v.text("#n") == "01 23 45 67 89"


def test_missing_configuration_stays_silent(site: Site, visitor: Callable[..., Visitor]) -> None:
    site.config = None
    v = visitor()
    v.page.goto(
        site.page('<p id="n">01 23 45 67 89</p>', head="<script>calltrack('cart', {})</script>")
    )
    v.page.wait_for_function("calltrack.ct === 1")
    v.page.evaluate(
        "calltrack('consent', true); calltrack('number', () => {}); calltrack('swap');"
        "history.pushState({}, '', '/x')"
    )
    v.page.wait_for_timeout(100)
    assert site.events == []
    assert v.text("#n") == "01 23 45 67 89"


OTHER_FORMS = [
    (
        "+390612345678",
        "+390698765432",
        [
            ("06 1234 5678", "06 9876 5432"),
            ("+39 06 1234 5678", "+39 06 9876 5432"),
            ("0612345678", "0698765432"),
            ("+39 0612345678", "+39 0698765432"),
        ],
    ),
    (
        "+31201234567",
        "+31207654321",
        [
            ("020-1234567", "020-7654321"),
            ("020 123 4567", "020 765 4321"),
            ("+31 20 123 4567", "+31 20 765 4321"),
            ("+31 (0)20 123 4567", "+31 (0)20 765 4321"),
        ],
    ),
    (
        "+33123456789",
        "+33987654321",
        [
            ("01\u00a023\u00a045\u00a067\u00a089", "09\u00a087\u00a065\u00a043\u00a021"),
            ("01\u202f23\u202f45\u202f67\u202f89", "09\u202f87\u202f65\u202f43\u202f21"),
            (
                "+33\u00a01\u00a023\u00a045\u00a067\u00a089",
                "+33\u00a09\u00a087\u00a065\u00a043\u00a021",
            ),
            ("01 23 45 67 89.", "09 87 65 43 21."),
            ("(01) 23 45 67 89", "(09) 87 65 43 21"),
            ("01-23-45-67-89", "09-87-65-43-21"),
            ("+33 (1) 23 45 67 89", "+33 (9) 87 65 43 21"),
            ("+33-1-23-45-67-89", "+33-9-87-65-43-21"),
            ("+33 123 456 789", "+33 987 654 321"),
        ],
    ),
    (
        "+41441234567",
        "+41449876543",
        [
            ("044 123 45 67", "044 987 65 43"),
            ("+41 44 123 45 67", "+41 44 987 65 43"),
        ],
    ),
    (
        "+18005550123",
        "+18005550199",
        [
            ("1 (800) 555-0123", "1 (800) 555-0199"),
            ("1.800.555.0123", "1.800.555.0199"),
            ("800-555-0123", "800-555-0199"),
        ],
    ),
    # (business, tracking, [(page text, expected)])
    (
        "+14155550123",
        "+14155550199",
        [
            ("(415) 555-0123", "(415) 555-0199"),
            ("415-555-0123", "415-555-0199"),
            ("415.555.0123", "415.555.0199"),
            ("+1 415 555 0123", "+1 415 555 0199"),
            ("1-415-555-0123", "1-415-555-0199"),
            ("+1 (415) 555-0123", "+1 (415) 555-0199"),
            ("4155550123", "4155550199"),
        ],
    ),
    (
        "+493012345678",
        "+493098765432",
        [
            ("030 12345678", "030 98765432"),
            ("030/12345678", "030/98765432"),
            ("+49 30 12345678", "+49 30 98765432"),
            ("+49 (0)30 12345678", "+49 (0)30 98765432"),
            ("030-123 456 78", "030-987 654 32"),
            ("(030) 12345678", "(030) 98765432"),
        ],
    ),
    (
        "+442079460958",
        "+442079460999",
        [
            ("020 7946 0958", "020 7946 0999"),
            ("+44 20 7946 0958", "+44 20 7946 0999"),
            ("+44 (0)20 7946 0958", "+44 (0)20 7946 0999"),
            ("(020) 7946 0958", "(020) 7946 0999"),
        ],
    ),
    (
        "+34912345678",
        "+34918765432",
        [
            ("912 34 56 78", "918 76 54 32"),
            ("+34 912 345 678", "+34 918 765 432"),
            ("91 234 56 78", "91 876 54 32"),
        ],
    ),
]


# (business, tracking, [(page text, expected)]): tracking numbers grouped otherwise than the
# business number (another area code, a mobile business number) or of another length. The
# page's style stays: its separators, brackets, (0) and 00 prefix.
REGROUPED = [
    (
        "+442079460018",  # 020 7946 0018
        "+441134960271",  # 0113 496 0271
        [
            ("020 7946 0018", "0113 496 0271"),
            ("+44 20 7946 0018", "+44 113 496 0271"),
            ("+44 (0)20 7946 0018", "+44 (0)113 496 0271"),
            ("0044 20 7946 0018", "0044 113 496 0271"),
            ("020-7946-0018", "0113-496-0271"),
            ("02079460018", "01134960271"),
            ("(020) 7946 0018", "(0113) 496 0271"),
            # Grouped the page's own way: the new number's standard groups, with the page's
            # separator (a space where the page's first group runs into the next).
            ("020 7946 00 18", "0113 496 0271"),
            ("0207 946 0018", "0113 496 0271"),
            ("+44 207 946 0018", "+44 113 496 0271"),
            ("020 79460018", "0113 496 0271"),
            ("020.7946.00.18", "0113.496.0271"),
        ],
    ),
    (
        "+447911123456",  # 07911 123456: a longer first group than the new number's
        "+442079460124",  # 020 7946 0124
        [
            ("07911 123456", "020 7946 0124"),
            ("+44 7911 123456", "+44 20 7946 0124"),
            ("+44 (0)7911 123456", "+44 (0)20 7946 0124"),
        ],
    ),
    (
        "+447911123456",  # 07911 123456
        "+441134960244",
        [("07911 123456", "0113 496 0244"), ("+44 7911 123456", "+44 113 496 0244")],
    ),
    (
        "+441134960271",  # 0113 496 0271: a longer first group than the new number's
        "+442079460018",  # 020 7946 0018
        [
            ("0113 496 0271", "020 7946 0018"),
            # The page's first group runs into the next, and the new first group is shorter:
            # one space, not two.
            ("011 3496 0271", "020 7946 0018"),
        ],
    ),
    (
        # A tracking number of another country, of the same shape after the country code
        # (000 000 0000): all its digits, not the old length's worth of them.
        "+353851234567",  # 085 123 4567
        "+441134960271",  # 0113 496 0271
        [("+353 85 123 4567", "+441 13 496 0271"), ("085 123 4567", "0113 496 0271")],
    ),
    (
        "+3225551212",  # 02 555 12 12
        "+3212348473",  # 012 34 84 73
        [("02 555 12 12", "012 34 84 73"), ("+32 2 555 12 12", "+32 12 34 84 73")],
    ),
    (
        "+493012345678",  # 030 12345678
        "+4930127231",  # 030 127231
        [
            ("(030) 12345678", "(030) 127231"),
            ("030 / 12345678", "030 / 127231"),
            ("030/12345678", "030/127231"),
            ("+49 (0)30 12345678", "+49 (0)30 127231"),
            ("+49 30 12345678", "+49 30 127231"),
            ("030 1234 5678", "030 127231"),
            ("+49 30 1234 5678", "+49 30 127231"),
            ("030 123 456 78", "030 127231"),
            ("+49 (0) 30 1234 5678", "+49 (0) 30 127231"),
            ("030 / 12 34 56 78", "030 / 127231"),
            ("030-1234-5678", "030-127231"),
            ("+493012345678", "+4930127231"),
        ],
    ),
]


@pytest.mark.parametrize(
    ("business", "tracking", "forms"), OTHER_FORMS + REGROUPED, ids=lambda value: str(value)[:12]
)
def test_numbers_of_every_country_keep_the_pages_style(
    site: Site,
    visitor: Callable[..., Visitor],
    business: str,
    tracking: str,
    forms: list[tuple[str, str]],
) -> None:
    assert_swapped_forms(site, visitor(), business, tracking, forms)


def test_a_shorter_number_split_by_markup_and_an_encoded_tel_link(
    site: Site, visitor: Callable[..., Visitor]
) -> None:
    """`<span>030</span> <b>12345678</b>` and WordPress's `tel:+49%2030%2012345678`."""
    site.swaps = [swap("+4930127231", "+493012345678")]
    assert site.config is not None
    site.config["b"] = [number("+493012345678")]
    v = visitor()
    v.page.goto(site.page(
        '<a id="s" href="tel:+493012345678"><span>030</span> <b>12345678</b></a>'
        '<a id="w" href="tel:+49%2030%2012345678">Anrufen</a>'
        '<a id="f" href="tel:+33%201%2023%2045%2067%2089">Appeler</a>'
        '<a id="x" href="tel:+493012345678,,12%23">Durchwahl</a>'
    ))  # fmt: skip
    swapped(v, "#s", "030 127231")
    assert v.page.get_attribute("#s", "href") == "tel:+4930127231"
    assert v.page.get_attribute("#w", "href") == "tel:+49 30 127231"
    assert v.page.get_attribute("#f", "href") == "tel:+33%201%2023%2045%2067%2089"  # not ours
    # Other escapes stay as written: a decoded # would end the number at a fragment.
    assert v.page.get_attribute("#x", "href") == "tel:+4930127231,,12%23"
