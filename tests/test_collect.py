"""Collect endpoint, sessions, carts, consent and tenant isolation, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import itertools
import json
import secrets
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from sqlalchemy import select
from support.app import make_settings

from dashboard.app import create_app
from tracker.clock import FrozenClock
from tracker.db import Database
from tracker.models import Cart, Pageview, Site, TrackedSession
from tracker.numbers.rules import parse_rule
from tracker.sites import SiteSpec, create_site, get_or_create_account

ClientFactory = Callable[..., Awaitable[TestClient[Any, Any]]]
CHROME = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/126.0.0.0 Safari/537.36"
)
GOOGLEBOT = "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)"


def page_id() -> str:
    return secrets.token_hex(8)


async def new_site(
    database: Database, consent_mode: str = "required", account: str | None = None
) -> Site:
    async with database.begin() as db:
        owner = await get_or_create_account(
            db, account or f"acct-{secrets.token_hex(4)}", FrozenClock()
        )
        return await create_site(
            db,
            owner,
            SiteSpec(
                name="Vélos Martin",
                domain="velos-martin.fr",
                phone="+33 1 23 45 67 89",
                country="FR",
                consent_mode=consent_mode,
            ),
            FrozenClock(),
        )


class Visitor:
    """A browser as the server sees it: an address, a user agent and what the page knows."""

    def __init__(
        self, client: TestClient[Any, Any], site: Site, ip: str = "203.0.113.77", ua: str = CHROME
    ) -> None:
        self.client = client
        self.site = site
        self.ip = ip
        self.ua = ua
        self.session: str | None = None
        self.page: str = page_id()

    async def send(self, kind: str, expect: int = 200, **fields: Any) -> dict[str, Any]:
        body = {"k": self.site.site_key, "t": kind, "p": self.page, "s": self.session, **fields}
        response = await self.client.post(
            "/collect",
            data=json.dumps(body),
            headers={
                "Content-Type": "text/plain",
                "User-Agent": self.ua,
                "X-Forwarded-For": self.ip,
            },
        )
        assert response.status == expect, await response.text()
        if response.status != 200:
            return {}
        reply: dict[str, Any] = await response.json()
        self.session = reply["s"]
        return reply

    async def view(
        self, url: str, referrer: str | None = None, title: str = "Page", **fields: Any
    ) -> dict[str, Any]:
        self.page = page_id()
        return await self.send("pageview", u=url, r=referrer, ti=title, **fields)


@pytest.fixture
def clock() -> FrozenClock:
    return FrozenClock()


@pytest.fixture
async def client(
    aiohttp_client: ClientFactory, database_url: str, clock: FrozenClock
) -> TestClient[Any, Any]:
    return await aiohttp_client(create_app(make_settings(database_url), clock=clock))


async def load_session(database: Database, session_id: str) -> TrackedSession:
    async with database.sessions() as db:
        session = await db.get(TrackedSession, session_id)
        assert session is not None
        return session


async def test_first_pageview_records_session_with_channel(
    client: TestClient[Any, Any], database: Database
) -> None:
    site = await new_site(database)
    visitor = Visitor(client, site)
    reply = await visitor.view(
        "https://velos-martin.fr/?utm_source=google&utm_medium=cpc&utm_campaign=ete&utm_term=velo+ville"
        "&utm_content=ad1&gclid=abc123",
        referrer="https://www.google.com/",
        title="Accueil",
    )
    assert reply["v"] is None and reply["n"] == []
    session = await load_session(database, reply["s"])
    assert session.channel == "Paid Search"
    assert (session.source, session.medium, session.campaign) == ("google", "cpc", "ete")
    assert session.term == "velo ville" and session.content == "ad1"
    assert session.gclid == "abc123" and session.click_ids["gclid"] == "abc123"
    assert session.ip_truncated == "203.0.113.0"
    assert session.browser == "Chrome" and session.device == "desktop"
    assert session.visitor_id is None and session.consent is False
    assert session.pageview_count == 1


async def test_pages_of_a_visit_share_the_session(
    client: TestClient[Any, Any], database: Database
) -> None:
    site = await new_site(database)
    visitor = Visitor(client, site)
    first = await visitor.view("https://velos-martin.fr/", title="Home")
    await visitor.send("ping", d=15000)
    await visitor.send("leave", d=21000)
    await visitor.view("https://velos-martin.fr/gravel", title="Gravel")
    assert visitor.session == first["s"]
    async with database.sessions() as db:
        pages = list(
            await db.scalars(
                select(Pageview).where(Pageview.session_id == first["s"]).order_by(Pageview.id)
            )
        )
    assert [p.title for p in pages] == ["Home", "Gravel"]
    assert pages[0].duration_ms == 21000
    session = await load_session(database, first["s"])
    assert session.current_url == "https://velos-martin.fr/gravel"


async def test_late_heartbeat_never_shortens_time_on_page(
    client: TestClient[Any, Any], database: Database
) -> None:
    site = await new_site(database)
    visitor = Visitor(client, site)
    await visitor.view("https://velos-martin.fr/")
    await visitor.send("leave", d=40000)
    await visitor.send("ping", d=30000)
    async with database.sessions() as db:
        page = await db.scalar(select(Pageview).where(Pageview.session_id == visitor.session))
    assert page is not None and page.duration_ms == 40000


async def test_consentless_full_page_loads_are_stitched_by_keyed_hash(
    client: TestClient[Any, Any], database: Database, clock: FrozenClock
) -> None:
    site = await new_site(database)
    first = Visitor(client, site)
    await first.view("https://velos-martin.fr/?utm_source=newsletter&utm_medium=email")
    second = Visitor(client, site)  # a new page load: nothing stored in the browser
    await second.view("https://velos-martin.fr/produits", referrer="https://velos-martin.fr/")
    assert second.session == first.session
    other = Visitor(client, site, ip="198.51.100.9")
    await other.view("https://velos-martin.fr/")
    assert other.session != first.session
    session = await load_session(database, first.session or "")
    assert session.anon_key and "203.0.113" not in session.anon_key
    assert session.channel == "Email"


async def test_thirty_minutes_of_inactivity_start_a_new_session(
    client: TestClient[Any, Any], database: Database, clock: FrozenClock
) -> None:
    site = await new_site(database)
    visitor = Visitor(client, site)
    await visitor.view("https://velos-martin.fr/")
    first = visitor.session
    clock.advance(minutes=29)
    await visitor.view("https://velos-martin.fr/a")
    assert visitor.session == first
    clock.advance(minutes=30, seconds=1)
    await visitor.view("https://velos-martin.fr/b")
    assert visitor.session != first
    fresh = Visitor(client, site)
    clock.advance(minutes=31)
    await fresh.view("https://velos-martin.fr/c")
    assert fresh.session not in (first, visitor.session)

    # A cart (no page address) after 31 idle minutes on /b: the new visit lands on /b.
    second = visitor.session
    clock.advance(minutes=31)
    await visitor.send("cart", cart={"items": [], "total": 0, "currency": "EUR"})
    assert visitor.session not in (first, second)
    assert (await load_session(database, visitor.session or "")).landing_url == (
        "https://velos-martin.fr/b"
    )


async def test_cart_keeps_the_latest_snapshot(
    client: TestClient[Any, Any], database: Database
) -> None:
    site = await new_site(database)
    visitor = Visitor(client, site)
    await visitor.view("https://velos-martin.fr/")
    await visitor.send(
        "cart",
        cart={
            "items": [{"name": "Gravel", "sku": "G1", "qty": 1, "price": 1290}],
            "total": 1290,
            "currency": "eur",
        },
    )
    await visitor.send(
        "cart",
        cart={
            "items": [
                {"name": "Gravel", "sku": "G1", "qty": 1, "price": "1290.00"},
                {"name": "Casque <b>", "sku": "C2", "qty": 2, "price": 49.5},
            ],
            "currency": "EUR",
        },
    )
    async with database.sessions() as db:
        carts = list(await db.scalars(select(Cart).where(Cart.session_id == visitor.session)))
    assert len(carts) == 1
    cart = carts[0]
    assert str(cart.total) == "1389.00" and cart.currency == "EUR" and cart.item_count == 3
    assert [item["name"] for item in cart.items] == ["Gravel", "Casque <b>"]


async def test_consent_gives_a_visitor_id_and_withdrawal_removes_it(
    client: TestClient[Any, Any], database: Database
) -> None:
    site = await new_site(database)
    visitor = Visitor(client, site)
    reply = await visitor.view("https://velos-martin.fr/")
    assert reply["v"] is None
    granted = await visitor.send("consent", c=True)
    assert granted["v"] and len(granted["v"]) == 32
    session = await load_session(database, visitor.session or "")
    assert session.consent and session.visitor_id == granted["v"]
    withdrawn = await visitor.send("consent", c=False)
    assert withdrawn["v"] is None
    session = await load_session(database, visitor.session or "")
    assert not session.consent and session.visitor_id is None


async def test_global_privacy_control_counts_as_no_consent(
    client: TestClient[Any, Any], database: Database
) -> None:
    site = await new_site(database, consent_mode="not_required")
    visitor = Visitor(client, site)
    reply = await visitor.view("https://velos-martin.fr/", c=True, gpc=True)
    assert reply["v"] is None
    plain = Visitor(client, site, ip="198.51.100.20")
    assert (await plain.view("https://velos-martin.fr/"))["v"]


async def test_gpc_sent_as_a_header_only_is_told_to_the_snippet(
    client: TestClient[Any, Any], database: Database
) -> None:
    site = await new_site(database, consent_mode="not_required")
    cases = [({"Sec-GPC": "1"}, False, True), ({}, False, False), ({"Sec-GPC": "1"}, True, False)]
    for n, (headers, gpc_in_body, told) in enumerate(cases):
        event = {"k": site.site_key, "t": "pageview", "p": page_id(), "gpc": gpc_in_body,
                 "u": "https://velos-martin.fr/", "c": True}  # fmt: skip
        response = await client.post(
            "/collect",
            data=json.dumps(event),
            headers={"Content-Type": "text/plain", "User-Agent": CHROME,
                     "X-Forwarded-For": f"198.51.100.{30 + n}", **headers},
        )  # fmt: skip
        reply = await response.json()
        # `g` only where the snippet cannot know (no navigator.globalPrivacyControl).
        assert reply.get("g", False) is told
        assert (reply["v"] is None) is (gpc_in_body or told)


async def test_bots_are_kept_out_of_sessions(
    client: TestClient[Any, Any], database: Database
) -> None:
    site = await new_site(database)
    bot = Visitor(client, site, ua=GOOGLEBOT)
    await bot.send("pageview", expect=204, u="https://velos-martin.fr/")
    async with database.sessions() as db:
        count = len(
            list(
                await db.scalars(select(TrackedSession.id).where(TrackedSession.site_id == site.id))
            )
        )
    assert count == 0


async def test_accounts_never_see_each_other(
    client: TestClient[Any, Any], database: Database
) -> None:
    shop_a = await new_site(database)
    shop_b = await new_site(database)
    visitor_b = Visitor(client, shop_b)
    await visitor_b.view("https://velos-martin.fr/")
    intruder = Visitor(client, shop_a, ip="192.0.2.50")
    intruder.session = visitor_b.session  # a session id of another account
    await intruder.send(
        "cart", u="https://velos-martin.fr/", cart={"items": [], "total": 0, "currency": "EUR"}
    )
    assert intruder.session != visitor_b.session
    session_b = await load_session(database, visitor_b.session or "")
    assert session_b.site_id == shop_b.id
    async with database.sessions() as db:
        assert await db.get(Cart, visitor_b.session) is None


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        (b"{not json", 400, "invalid_json"),
        (b"", 400, "invalid_json"),
        (b"\xff\xfe", 400, "invalid_json"),
        (b"[1, 2]", 400, "invalid_event"),
        (
            b'{"k": "nope", "t": "pageview", "p": "0123456789abcdef", "u": "https://x.fr/"}',
            404,
            "unknown_site",
        ),
        (b'{"k": "K", "t": "explode", "p": "0123456789abcdef"}', 400, "invalid_event"),
        (
            b'{"k": "K", "t": "pageview", "p": "0123456789abcdef", "u": "javascript:alert(1)"}',
            400,
            "invalid_url",
        ),
        # Not URLs a browser's location.href can be: a port out of range, a raw space or a
        # control character.
        *[
            (
                b'{"k": "K", "t": "pageview", "p": "0123456789abcdef", "u": "%s"}' % url,
                400,
                "invalid_url",
            )
            for url in (
                b"https://a.fr:99999/",
                b"https://a b.fr/",
                b"https://a.fr/p\\u0007ge",
                b"https://a.fr/?q=\\tx",
                b"https://[::1/",
                b"http://:80/",  # a netloc, but no host
                b"http://@/",
            )
        ],
        # abs() of these overflowed Decimal's context: a 500.
        *[
            (
                b'{"k": "K", "t": "cart", "p": "0123456789abcdef", "cart": %s}' % cart,
                400,
                "invalid_cart",
            )
            for cart in (
                b'{"items": [], "total": "1e999999999999999999"}',
                b'{"items": [{"name": "x", "qty": 1, "price": "-1e1000000"}]}',
                b'{"items": [], "total": -50}',
                b'{"items": [{"name": "x", "qty": 1, "price": -5}]}',
                b'{"items": [{"name": 7, "qty": 1}]}',
                b'{"items": [], "currency": ["EUR"]}',
            )
        ],
        (b'{"k": "K", "t": "pageview", "p": "0123456789abcdef"}', 400, "invalid_event"),
        (
            b'{"k": "K", "t": "pageview", "p": "../../etc", "u": "https://x.fr/"}',
            400,
            "invalid_event",
        ),
        (b'{"k": "K", "t": "ping", "p": "0123456789abcdef", "d": -5}', 400, "invalid_event"),
        (
            b'{"k": "K", "t": "cart", "p": "0123456789abcdef", "cart": {"items": "lots"}}',
            400,
            "invalid_cart",
        ),
        (
            b'{"k": "K", "t": "cart", "p": "0123456789abcdef", "cart": {"items": [], "total": "NaN"}}',
            400,
            "invalid_cart",
        ),
        (
            b'{"k": "K", "t": "cart", "p": "0123456789abcdef", "cart": {"items": [], '
            b'"currency": "EURO"}}',
            400,
            "invalid_cart",
        ),
        (b'{"k": "K", "t": "consent", "p": "0123456789abcdef"}', 400, "invalid_event"),
        (b"[" * 60000, 400, "invalid_json"),
        # Python's json module accepts these; JSON does not, and int(inf) would raise.
        (b'{"k": "K", "t": "ping", "p": "0123456789abcdef", "d": Infinity}', 400, "invalid_json"),
        (b'{"k": "K", "t": "ping", "p": "0123456789abcdef", "d": NaN}', 400, "invalid_json"),
        (
            b'{"k": "K", "t": "cart", "p": "0123456789abcdef", "cart": {"items": '
            b'[{"name": "x", "qty": -Infinity}]}}',
            400,
            "invalid_json",
        ),
        # Longer than Python converts (4,300 digits): a ValueError, not a JSONDecodeError.
        (
            b'{"k": "K", "t": "ping", "p": "0123456789abcdef", "d": ' + b"9" * 5000 + b"}",
            400,
            "invalid_json",
        ),
    ],
)
async def test_bad_input_gets_a_clear_4xx(
    client: TestClient[Any, Any], database: Database, body: bytes, status: int, code: str
) -> None:
    site = await new_site(database)
    response = await client.post(
        "/collect",
        data=body.replace(b'"K"', f'"{site.site_key}"'.encode()),
        headers={"Content-Type": "text/plain", "User-Agent": CHROME},
    )
    assert response.status == status
    error = (await response.json())["error"]
    assert error["code"] == code and error["message"]
    assert response.headers["Access-Control-Allow-Origin"] == "*"


@pytest.mark.parametrize(
    ("encoding", "body", "status", "code", "says"),
    [
        # No Brotli decoder is installed: aiohttp's own message was "Please install `Brotli`".
        ("br", b"\x8b\x00\x80{}\x03", 415, "unsupported_encoding", "gzip"),
        # Not gzip at all: aiohttp decodes it to nothing, which read as "the body is empty".
        ("gzip", b"plain text, not gzip", 400, "invalid_json", "Content-Encoding"),
    ],
)
async def test_a_body_in_an_encoding_we_cannot_read_is_refused_with_a_reason(
    client: TestClient[Any, Any], encoding: str, body: bytes, status: int, code: str, says: str
) -> None:
    response = await client.post(
        "/collect",
        data=body,
        headers={"Content-Type": "text/plain", "Content-Encoding": encoding, "User-Agent": CHROME},
    )
    assert response.status == status
    error = (await response.json())["error"]
    assert error["code"] == code and says in error["message"]


async def test_oversized_body_is_refused(client: TestClient[Any, Any], database: Database) -> None:
    site = await new_site(database)
    body = json.dumps(
        {
            "k": site.site_key,
            "t": "pageview",
            "p": page_id(),
            "u": "https://x.fr/",
            "ti": "x" * 200_000,
        }
    )
    response = await client.post("/collect", data=body, headers={"User-Agent": CHROME})
    assert response.status == 413
    assert (await response.json())["error"]["code"] == "payload_too_large"


async def test_a_pageview_sent_again_to_a_fresh_worker_counts_once(
    aiohttp_client: ClientFactory, database_url: str, database: Database, clock: FrozenClock
) -> None:
    # The snippet sends an event again when a proxy answers 502-504 (a worker restarting): the
    # worker that gets it has never seen the page, and the stored row must not count twice.
    site = await new_site(database)
    workers = [
        await aiohttp_client(create_app(make_settings(database_url), clock=clock)) for _ in range(2)
    ]
    visitor = Visitor(workers[0], site)
    await visitor.view("https://velos-martin.fr/", title="Home")
    await visitor.view("https://velos-martin.fr/gravel", title="Gravel")
    visitor.client = workers[1]
    await visitor.send("pageview", u="https://velos-martin.fr/gravel", ti="Gravel")
    await visitor.view("https://velos-martin.fr/panier", title="Panier")
    session = await load_session(database, visitor.session or "")
    async with database.sessions() as db:
        pages = list(await db.scalars(select(Pageview).where(Pageview.session_id == session.id)))
    assert sorted(p.title for p in pages) == ["Gravel", "Home", "Panier"]
    assert session.pageview_count == 3
    assert session.current_url == "https://velos-martin.fr/panier"


async def test_headers_no_column_can_hold_are_made_to_fit(
    client: TestClient[Any, Any], database: Database
) -> None:
    site = await new_site(database)
    # uap-core names this browser after most of the user agent (111 characters); the column
    # holds 64, and PostgreSQL refused the visit with a 500.
    app_ua = (
        "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) My Shopping App For Everyone "
        "In The World Version Deluxe/1.0 CFNetwork/1408.0.4 Darwin/22.5.0"
    )
    visitor = Visitor(client, site, ip="198.51.100.9:8080", ua=app_ua)
    await visitor.view("https://velos-martin.fr/", lang="<script>x")
    session = await load_session(database, visitor.session or "")
    assert session.browser is not None and 0 < len(session.browser) <= 64
    # Some proxies add the port: the address is still the visitor's (and truncated).
    assert session.ip_truncated == "198.51.100.0"
    # A `lang` that is no language tag gives way to the Accept-Language header's.
    assert session.language is None
    other = Visitor(client, site, ip="[2001:db8:abcd:12::1]:443")
    await other.view("https://velos-martin.fr/", lang="fr-FR")
    session = await load_session(database, other.session or "")
    assert session.ip_truncated == "2001:db8:abcd::" and session.language == "fr-FR"


async def test_hostile_strings_are_stored_as_text(
    client: TestClient[Any, Any], database: Database
) -> None:
    site = await new_site(database)
    visitor = Visitor(client, site)
    hostile = "<script>alert(1)</script>\x00'; DROP TABLE sessions; --  🚲 ‮"
    reply = await visitor.view(
        "https://velos-martin.fr/?q=%00%ff&utm_campaign=" + "é" * 5000,
        title=hostile * 40,
        referrer="https://evil.example/" + "a" * 10000,
    )
    async with database.sessions() as db:
        page = await db.scalar(select(Pageview).where(Pageview.session_id == reply["s"]))
    assert page is not None and page.title is not None
    assert (
        page.title.startswith("<script>alert(1)</script>'; DROP TABLE") and len(page.title) <= 500
    )


async def test_encoded_nul_in_campaign_parameters_and_click_ids_is_dropped(
    client: TestClient[Any, Any], database: Database
) -> None:
    # %00 decodes to a NUL, which PostgreSQL's text refuses: the visit was lost with a 500.
    site = await new_site(database)
    reply = await Visitor(client, site).view(
        "https://velos-martin.fr/?utm_source=news%00letter&utm_medium=e%00mail"
        "&utm_campaign=%00&utm_term=v%C3%A9lo%00&gclid=abc%00def&fbclid=x%00"
    )
    async with database.sessions() as db:
        session = await db.get(TrackedSession, reply["s"])
    assert session is not None
    assert (session.source, session.medium, session.channel) == ("google", "cpc", "Paid Search")
    assert (session.campaign, session.term) == (None, "vélo")
    assert session.click_ids == {"gclid": "abcdef", "fbclid": "x"} and session.gclid == "abcdef"


async def test_half_surrogate_pairs_are_stored_as_replacement_characters(
    client: TestClient[Any, Any], database: Database
) -> None:
    # JSON.stringify escapes a lone surrogate (a string cut in the middle of an emoji) as
    # \ud83d; neither UTF-8 nor the databases can hold it, and the whole event was refused.
    site = await new_site(database)
    event = {
        "k": site.site_key,
        "t": "pageview",
        "p": page_id(),
        "u": "https://velos-martin.fr/",
        "ti": "Vélo \ud83d \U0001f6b2 fin\udc00",
    }
    body = json.dumps(event)  # ensure_ascii: \\ud83d, as a browser sends it
    response = await client.post(
        "/collect", data=body, headers={"Content-Type": "text/plain", "User-Agent": CHROME}
    )
    assert response.status == 200, await response.text()
    reply = await response.json()
    async with database.sessions() as db:
        page = await db.scalar(select(Pageview).where(Pageview.session_id == reply["s"]))
    assert page is not None and page.title == "Vélo \ufffd 🚲 fin\ufffd"


async def test_a_key_no_site_has_gets_the_script_without_a_collect_url(
    client: TestClient[Any, Any],
) -> None:
    for query in ("?k=ct-no-such-site", "?k=", ""):
        script = await client.get(f"/ct.js{query}")
        assert script.status == 200
        text = await script.text()
        config = json.loads(text.split("=", 1)[1].split(";\n", 1)[0])
        assert "u" not in config and "b" not in config  # the snippet sends nothing
        assert script.headers["Cache-Control"] == "public, max-age=60"  # soon asked again


async def test_preflight_and_snippet_are_cross_origin(
    client: TestClient[Any, Any], database: Database
) -> None:
    site = await new_site(database)
    preflight = await client.options(
        "/collect",
        headers={"Origin": "https://velos-martin.fr", "Access-Control-Request-Method": "POST"},
    )
    assert preflight.status == 204 and preflight.headers["Access-Control-Allow-Origin"] == "*"
    script = await client.get(f"/ct.js?k={site.site_key}")
    assert script.status == 200
    assert script.headers["Content-Type"].startswith("application/javascript")
    # Fresh for 5 minutes, then run from the cache while a fresh copy is fetched: the printed
    # tag holds the first paint for ct.js, which a cached copy never delays.
    assert script.headers["Cache-Control"] == "public, max-age=300, stale-while-revalidate=86400"
    assert script.headers["Access-Control-Allow-Origin"] == "*"
    text = await script.text()
    assert text.startswith("window.__calltrack_cfg={")
    config = json.loads(text.split("=", 1)[1].split(";\n", 1)[0])
    assert config["k"] == site.site_key and "cm" not in config  # required: the default
    assert config["u"] == "http://calltrack.test/collect"
    assert config["b"] == [
        {
            "e164": "+33123456789",
            "cc": "33",
            "nat": "0123456789",
            "national": "01 23 45 67 89",
            "international": "+33 1 23 45 67 89",
        }
    ]
    # Sent gzipped to browsers (they all accept it), plain to clients that do not.
    assert script.headers["Content-Encoding"] == "gzip"
    assert script.headers["Vary"] == "Accept-Encoding"
    plain = await client.get(f"/ct.js?k={site.site_key}", headers={"Accept-Encoding": "identity"})
    assert "Content-Encoding" not in plain.headers and await plain.text() == text
    refused = await client.get(
        f"/ct.js?k={site.site_key}", headers={"Accept-Encoding": "br, gzip;q=0"}
    )
    assert "Content-Encoding" not in refused.headers and await refused.text() == text
    assert plain.headers["ETag"] != script.headers["ETag"]
    again = await client.get(
        f"/ct.js?k={site.site_key}", headers={"If-None-Match": script.headers["ETag"]}
    )
    assert again.status == 304
    unknown = await client.get("/ct.js?k=doesnotexist")
    assert unknown.status == 200 and '"b"' not in (await unknown.text()).split(";\n", 1)[0]


async def test_health_and_metrics(client: TestClient[Any, Any]) -> None:
    health = await client.get("/healthz")
    assert health.status == 200 and (await health.json())["database"] == "ok"
    metrics = await client.get("/metrics")
    assert "calltrack_collect_events_total" in await metrics.text()


async def test_concurrent_events_of_many_visits_are_all_stored_once(
    client: TestClient[Any, Any], database: Database
) -> None:
    """Events that arrive together are written by concurrent batches (two on PostgreSQL):
    a visit's second event may come before its first is committed, and nothing is lost,
    duplicated or refused."""
    site = await new_site(database)
    visitors = [Visitor(client, site, ip=f"198.51.100.{n + 1}") for n in range(12)]

    async def browse(visitor: Visitor) -> None:
        # The first pageview and a cart, sent together: the cart finds the visit by its keyed
        # hash while the visit's first row may still be in a batch being written.
        await asyncio.gather(
            visitor.view("https://velos-martin.fr/", title="Home"),
            visitor.send("cart", cart={"items": [{"name": "Vélo", "qty": 1, "price": 649}]}),
        )
        pages = [Visitor(client, site, ip=visitor.ip) for _ in range(4)]
        for page in pages:
            page.session = visitor.session
            page.page = page_id()
        await asyncio.gather(
            *(
                page.send("pageview", u=f"https://velos-martin.fr/p/{n}", ti=f"P{n}")
                for n, page in enumerate(pages)
            ),
            visitor.send("ping", d=5000),
        )

    await asyncio.gather(*(browse(visitor) for visitor in visitors))
    async with database.sessions() as db:
        sessions = list(
            await db.scalars(select(TrackedSession).where(TrackedSession.site_id == site.id))
        )
        pageviews = list(await db.scalars(select(Pageview).where(Pageview.site_id == site.id)))
        carts = list(await db.scalars(select(Cart).where(Cart.site_id == site.id)))
    assert len(sessions) == len(visitors)
    assert {s.id for s in sessions} == {v.session for v in visitors}
    assert all(s.pageview_count == 5 for s in sessions)
    assert len(pageviews) == 5 * len(visitors)
    assert len(carts) == len(visitors)


async def test_a_visit_erased_by_another_worker_is_started_afresh_not_refused(
    client: TestClient[Any, Any], database: Database
) -> None:
    """The worker's visit cache still knows a visit another process just erased: the next
    event's write fails on the missing visit, and the event is kept as a new visit."""
    from sqlalchemy import delete

    site = await new_site(database)
    visitor = Visitor(client, site)
    first = await visitor.view("https://velos-martin.fr/", title="Home")
    async with database.begin() as db:
        await db.execute(delete(Pageview).where(Pageview.session_id == first["s"]))
        await db.execute(delete(TrackedSession).where(TrackedSession.id == first["s"]))
    again = await visitor.view("https://velos-martin.fr/gravel", title="Gravel")
    assert again["s"] != first["s"]
    session = await load_session(database, again["s"])
    assert session.current_url == "https://velos-martin.fr/gravel"
    async with database.sessions() as db:
        pages = list(await db.scalars(select(Pageview).where(Pageview.session_id == again["s"])))
    assert [p.title for p in pages] == ["Gravel"]


async def test_one_postgresql_batch_merges_what_one_statement_cannot_apply_twice(
    postgresql_url: str,
) -> None:
    """The PostgreSQL batch is one statement: a page's time-on-page in the batch that inserts
    the page, two updates of one visit and two carts of one visit must all land."""
    import datetime as dt

    from tracker.collector import CARTS, PAGEVIEWS, SESSIONS, _session_values
    from tracker.collector_pg import PostgresBatchWriter

    database = Database(postgresql_url)
    try:
        site = await new_site(database)
        now = dt.datetime(2026, 11, 23, 9, 0, tzinfo=dt.UTC)
        old = TrackedSession(id=secrets.token_hex(16), site_id=site.id, started_at=now,
                             last_seen_at=now, landing_url="https://velos-martin.fr/",
                             channel="Direct", click_ids={}, pageview_count=2, consent=False)  # fmt: skip
        async with database.begin() as db:
            db.add(old)
            await db.flush()
            for page_id in ("a" * 16, "f" * 16):
                db.add(Pageview(site_id=site.id, session_id=old.id, page_id=page_id,
                                url="https://velos-martin.fr/", viewed_at=now, duration_ms=100))  # fmt: skip
        new = TrackedSession(id=secrets.token_hex(16), site_id=site.id, started_at=now,
                             last_seen_at=now, landing_url="https://velos-martin.fr/?gclid=x",
                             channel="Paid Search", click_ids={"gclid": "x"}, pageview_count=1,
                             consent=True, visitor_id=secrets.token_hex(16))  # fmt: skip
        later = now + dt.timedelta(seconds=30)
        page = {"site_id": site.id, "session_id": new.id, "page_id": "b" * 16,
                "url": "https://velos-martin.fr/?gclid=x", "title": "Home", "viewed_at": now,
                "duration_ms": 0}  # fmt: skip
        # The visit's two new pages (what the two session_pages rows below stand for), and a
        # page it has sent before: that one adds no row, so it does not count.
        old_pages = [
            {**page, "session_id": old.id, "page_id": page_id, "url": url, "viewed_at": seen}
            for page_id, url, seen in (
                ("f" * 16, "https://velos-martin.fr/", now),
                ("d" * 16, "https://velos-martin.fr/b", later),
                ("e" * 16, "https://velos-martin.fr/a", now),
            )
        ]
        grouped = {
            "new_sessions": [_session_values(new)],
            "pageviews": [page, *old_pages],
            "durations": [
                {"b_session": new.id, "b_page": "b" * 16, "b_duration": 4000},
                {"b_session": old.id, "b_page": "a" * 16, "b_duration": 9000},
                {"b_session": old.id, "b_page": "a" * 16, "b_duration": 7000},
            ],
            "session_pages": [
                {"b_id": old.id, "b_seen": later, "b_url": "https://velos-martin.fr/b", "b_title": "B"},
                {"b_id": old.id, "b_seen": now, "b_url": "https://velos-martin.fr/a", "b_title": "A"},
                {"b_id": old.id, "b_seen": now, "b_url": "https://velos-martin.fr/", "b_title": "Home"},
            ],
            "session_seen": [{"b_id": old.id, "b_seen": later + dt.timedelta(seconds=5)}],
            "session_consent": [{"b_id": old.id, "b_consent": True, "b_visitor": "c" * 32}],
            "carts": [
                {"session_id": new.id, "site_id": site.id, "items": [{"name": "A"}], "total": 1,
                 "currency": "EUR", "item_count": 1, "updated_at": now},
                {"session_id": new.id, "site_id": site.id, "items": [{"name": "B"}], "total": 2,
                 "currency": "EUR", "item_count": 1, "updated_at": later},
            ],
        }  # fmt: skip
        writer = PostgresBatchWriter(database.engine, SESSIONS, PAGEVIEWS, CARTS, writers=1)
        try:
            await writer.write(grouped)
        finally:
            await writer.close()
        async with database.sessions() as db:
            stored_new = await db.get(TrackedSession, new.id)
            stored_old = await db.get(TrackedSession, old.id)
            pages = {p.page_id: p for p in await db.scalars(select(Pageview))}
            cart = await db.get(Cart, new.id)
        assert stored_new is not None and stored_new.click_ids == {"gclid": "x"}
        assert stored_new.consent is True and stored_new.visitor_id == new.visitor_id
        assert pages["b" * 16].duration_ms == 4000  # folded into the page it came with
        assert pages["a" * 16].duration_ms == 9000  # the longest of two
        assert stored_old is not None and stored_old.pageview_count == 4
        assert stored_old.current_url == "https://velos-martin.fr/b"  # the latest page
        assert stored_old.last_seen_at == later + dt.timedelta(seconds=5)
        assert stored_old.consent is True and stored_old.visitor_id == "c" * 32
        assert cart is not None and cart.items == [{"name": "B"}] and cart.total == 2
    finally:
        await database.close()


async def test_session_settings_outlive_the_pools_reset_on_checkin(postgresql_url: str) -> None:
    """The collect writer's connections plan each batch afresh (tracker/collector_pg.py): the
    setting must hold on every later checkout, not only the first."""
    from sqlalchemy import text

    from tracker.db import create_engine

    engine = create_engine(
        postgresql_url, pool_size=1, session_settings={"plan_cache_mode": "force_custom_plan"}
    )
    try:
        for _ in range(3):
            async with engine.connect() as connection:
                mode = (await connection.execute(text("SHOW plan_cache_mode"))).scalar()
                assert mode == "force_custom_plan"
                await connection.rollback()
    finally:
        await engine.dispose()


async def test_back_to_back_events_are_written_and_a_leave_keeps_the_shown_numbers(
    database: Database,
) -> None:
    """Two events of one quiet visit, one right after the other: the second used to wait for
    a third (the first batch's writer still counted as running), and a `leave` answered an
    empty number list, which the snippet reads as "show the business number"."""
    from tracker.clock import SystemClock
    from tracker.collect import ClientInfo, parse_event
    from tracker.collector import Collector
    from tracker.geo import GeoInfo
    from tracker.useragent import parse_user_agent

    class Numbers:
        async def numbers_for_session(self, *_: Any, **__: Any) -> list[dict[str, Any]]:
            return [{"from": {"e164": "+33123456789"}, "to": {"e164": "+33987654321"}}]

    site = await new_site(database)
    collector = Collector(database.engine, SystemClock(), "collector-test-secret")
    agent = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 Chrome/120 Safari/537"
    client = ClientInfo(
        ip="198.51.100.7", user_agent=agent, device=parse_user_agent(agent),
        geo_lookup=lambda _ip: GeoInfo(None, None, None), ip_truncated="198.51.100.0",
    )  # fmt: skip
    page = secrets.token_hex(8)
    try:
        # asyncio.timeout, not wait_for: a task of its own would give the old writer's
        # done-callback the turn it needed, and hide the wait.
        async with asyncio.timeout(10):
            first = await collector.record(site, parse_event(
                {"k": site.site_key, "t": "pageview", "p": page, "u": "https://velos-martin.fr/"}
            ), client, Numbers())  # fmt: skip
            assert first.numbers and first.numbers[0]["to"]["e164"] == "+33987654321"
            leave = await collector.record(site, parse_event(
                {"k": site.site_key, "t": "leave", "p": page, "s": first.session.id, "d": 4000}
            ), client, Numbers())  # fmt: skip
        assert leave.numbers is None
    finally:
        await collector.close()
    async with database.sessions() as db:
        duration = await db.scalar(select(Pageview.duration_ms).where(Pageview.page_id == page))
    assert duration == 4000


async def _add_numbers(client: TestClient[Any, Any], database: Database, site: Site,
                       **options: Any) -> list[str]:  # fmt: skip
    from telephony.carriers.simulated import SimulatedCarrier
    from tracker import appkeys
    from tracker.numbers.service import NumberService

    service = client.server.app[appkeys.NUMBERS]
    assert isinstance(service, NumberService)
    service.carrier = service.carrier or SimulatedCarrier()  # the test app has none configured
    async with database.begin() as db:
        return [n.e164 for n in await service.add_numbers(db, site, FrozenClock().now(), **options)]


def _shown(reply: dict[str, Any]) -> list[str]:
    return [swap["to"]["e164"] for swap in reply["n"] or []]


async def test_a_page_opened_from_elsewhere_starts_its_own_consentless_visit(
    client: TestClient[Any, Any], database: Database
) -> None:
    """Same day, address and browser (an office, or a test's fresh browser contexts): only a
    link of the site, a reload or the back button continue the consentless visit. `y` is the
    snippet's `performance.navigation.type` (0 navigate, 1 reload, 2 back_forward)."""
    site = await new_site(database)
    (newsletter,) = await _add_numbers(client, database, site, rule=parse_rule("utm_source", "newsletter"))  # fmt: skip
    first = Visitor(client, site)
    reply = await first.view("https://velos-martin.fr/?utm_source=newsletter&utm_medium=email", y=0)
    assert _shown(reply) == [newsletter]
    for y, referrer in [(0, "https://velos-martin.fr/?utm_source=newsletter&utm_medium=email"),
                        (1, None), (2, "https://www.google.com/"), ("reload", None)]:  # fmt: skip
        again = Visitor(client, site)  # a new page load: nothing stored in the browser
        reply = await again.view("https://velos-martin.fr/produits", referrer=referrer, y=y)
        assert again.session == first.session, (y, referrer)
        assert _shown(reply) == [newsletter]  # the source number follows the visit

    latest = first.session
    for y, referrer in [(0, None), (0, "https://www.google.com/"),
                        (0, "https://velos-martin.fr.example.org/"), ("navigate", None),
                        ("prerender", None)]:  # fmt: skip
        fresh = Visitor(client, site)
        reply = await fresh.view("https://velos-martin.fr/produits", referrer=referrer, y=y)
        assert fresh.session not in (None, latest, first.session), (y, referrer)
        assert _shown(reply) == [], (y, referrer)  # not the newsletter visitor's number
        latest = fresh.session
        # Its own next page continues its own visit (the latest of that browser).
        follow = Visitor(client, site)
        await follow.view("https://velos-martin.fr/panier", referrer="https://velos-martin.fr/produits", y=0)  # fmt: skip
        assert follow.session == latest
    session = await load_session(database, latest or "")
    assert session.channel == "Direct" and session.landing_url == "https://velos-martin.fr/produits"
    # An unknown `y` (a later browser type, a wrong type) reads as unknown: the visit continues.
    for y in ("teleport", True, [0], None):
        unknown = Visitor(client, site)
        await unknown.view("https://velos-martin.fr/", y=y)
        assert unknown.session == latest, y


async def _share_then_consent(
    first_client: TestClient[Any, Any],
    second_client: TestClient[Any, Any],
    database: Database,
    site: Site,
) -> tuple[Visitor, Visitor, str | None, dict[str, Any], dict[str, Any]]:
    """Two browsers of one address share a consentless visit, then each consents (through
    its own worker, when two are given): the second forks the visit, with its own number."""
    await _add_numbers(first_client, database, site, count=3)
    one, two = Visitor(first_client, site), Visitor(second_client, site)
    await one.view("https://velos-martin.fr/?utm_source=google&utm_medium=cpc&gclid=g1")
    await two.view("https://velos-martin.fr/velos", referrer="https://velos-martin.fr/", y=0)
    assert one.session == two.session
    shared = one.session
    first_id, second_id = secrets.token_hex(8), secrets.token_hex(8)
    reply_one = await one.send("consent", c=True, v=first_id)
    reply_two = await two.send("consent", c=True, v=second_id)
    assert one.session == shared and reply_one["v"] == first_id
    assert two.session != shared and reply_two["v"] == second_id
    assert _shown(reply_one) and _shown(reply_two) and _shown(reply_one) != _shown(reply_two)
    return one, two, shared, reply_one, reply_two


async def test_browsers_that_shared_a_consentless_visit_part_when_they_consent(
    client: TestClient[Any, Any], database: Database
) -> None:
    """Two browsers of one address joined one visit before consent (an older snippet, or a
    link followed in each); each consenting browser makes its own visitor id, and the second
    one forks the visit: its own pool number, the same origin."""
    site = await new_site(database)
    one, two, shared, reply_one, reply_two = await _share_then_consent(
        client, client, database, site
    )
    first_id, second_id = reply_one["v"], reply_two["v"]
    fork = await load_session(database, two.session or "")
    assert (fork.visitor_id, fork.consent) == (second_id, True)
    assert (fork.channel, fork.gclid) == ("Paid Search", "g1")
    assert fork.landing_url == "https://velos-martin.fr/?utm_source=google&utm_medium=cpc&gclid=g1"
    # Each keeps its own visit and number on its next pages.
    reply_two = await two.send("ping", c=True, v=second_id, d=1000)
    reply_one = await one.send("ping", c=True, v=first_id, d=1000)
    assert two.session == fork.id and one.session == shared
    assert _shown(reply_one) != _shown(reply_two)
    # A consenting browser without its visit's id (its first page) never joins another
    # browser's consenting visit either.
    three = Visitor(client, site)
    reply = await three.view("https://velos-martin.fr/velos", referrer="https://velos-martin.fr/",
                             y=0, c=True, v=secrets.token_hex(8))  # fmt: skip
    assert three.session not in (shared, fork.id) and _shown(reply) not in (_shown(reply_one), _shown(reply_two))  # fmt: skip


@pytest.fixture
async def two_workers(
    aiohttp_client: ClientFactory,
    database_url: str,
    clock: FrozenClock,
    redis_url: str,
    redis_prefix: str,
) -> list[TestClient[Any, Any]]:
    """Two workers of one deployment: one database, one Redis (the number pools)."""
    settings = make_settings(database_url, redis_url=redis_url, redis_prefix=redis_prefix)
    return [await aiohttp_client(create_app(settings, clock=clock)) for _ in range(2)]


async def test_consent_withdrawn_on_one_worker_holds_on_the_other(
    two_workers: list[TestClient[Any, Any]], database: Database
) -> None:
    """Each worker keeps the visits it saw in memory: the worker that did not see the
    withdrawal still believed the visit consents, and gave the next page its pool number and
    visitor id (found by an audit with two workers)."""
    one, two = two_workers
    site = await new_site(database)
    await _add_numbers(one, database, site, count=2)
    visitor_id = secrets.token_hex(8)
    browser = Visitor(one, site)
    reply = await browser.view("https://velos-martin.fr/", c=True, v=visitor_id)
    assert _shown(reply) and reply["v"] == visitor_id
    browser.client = two
    reply = await browser.send("consent", c=False)
    assert reply["n"] == [] and reply["v"] is None
    # The next page, served by the first worker: nothing is stored in the browser any more.
    again = Visitor(one, site)
    reply = await again.view(
        "https://velos-martin.fr/velos", referrer="https://velos-martin.fr/", y=0
    )
    assert again.session == browser.session
    assert reply["n"] == [] and reply["v"] is None
    session = await load_session(database, again.session or "")
    assert (session.consent, session.visitor_id) == (False, None)


async def test_browsers_that_shared_a_visit_part_when_they_consent_on_two_workers(
    two_workers: list[TestClient[Any, Any]], database: Database
) -> None:
    """The second browser consents on a worker whose copy of the shared visit predates the
    first browser's consent: it must still fork the visit, not take it (and its number) over."""
    site = await new_site(database)
    first, _, shared, reply_one, reply_two = await _share_then_consent(*two_workers, database, site)
    first_id = reply_one["v"]
    assert (await load_session(database, shared or "")).visitor_id == first_id
    reply_one = await first.send("ping", c=True, v=first_id, d=1000)
    assert first.session == shared and _shown(reply_one) != _shown(reply_two)


async def test_numbers_added_by_another_process_are_used_within_a_second(
    client: TestClient[Any, Any], database: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`calltrack numbers add` while the service runs: the worker's cache of the site's
    numbers (30 s, and frozen here with the clock) gives way once the configuration
    generation moves. Collecting itself does not move it."""
    from telephony.carriers.simulated import SimulatedCarrier
    from tracker import confwatch
    from tracker.numbers.pool import MemoryNumberPool
    from tracker.numbers.service import NumberService

    monkeypatch.setattr(confwatch, "POLL_SECONDS", 0.05)
    site = await new_site(database)
    landing = "https://velos-martin.fr/?utm_source=newsletter"
    assert _shown(await Visitor(client, site, ip="203.0.113.1").view(landing)) == []
    before = await confwatch.current_generation(database)
    for n in range(2, 6):
        await Visitor(client, site, ip=f"203.0.113.{n}").view(landing)
    assert await confwatch.current_generation(database) == before

    cli = NumberService(MemoryNumberPool(), carrier=SimulatedCarrier())  # another process
    try:
        async with database.begin() as db:
            (added,) = await cli.add_numbers(
                db, site, FrozenClock().now(), rule=parse_rule("utm_source", "newsletter")
            )
    finally:
        await cli.aclose()
    assert await confwatch.current_generation(database) != before
    async with asyncio.timeout(5):
        for n in itertools.count(10):
            if _shown(await Visitor(client, site, ip=f"203.0.113.{n}").view(landing)):
                break
            await asyncio.sleep(0.05)
    assert _shown(await Visitor(client, site, ip="198.51.100.9").view(landing)) == [added.e164]


async def test_the_browser_language_comes_from_accept_language(
    client: TestClient[Any, Any], database: Database
) -> None:
    """The snippet no longer sends `lang`: every request carries the browser's languages."""
    site = await new_site(database)
    languages = {}
    for n, header in enumerate(["fr-FR,fr;q=0.9,en;q=0.8", "de", "*", "x" * 40, ""]):
        body = {
            "k": site.site_key,
            "t": "pageview",
            "p": page_id(),
            "u": "https://velos-martin.fr/",
        }
        response = await client.post("/collect", data=json.dumps(body), headers={
            "Content-Type": "text/plain", "User-Agent": CHROME,
            "X-Forwarded-For": f"192.0.2.{n + 1}", "Accept-Language": header,
        })  # fmt: skip
        assert response.status == 200
        session = await load_session(database, (await response.json())["s"])
        languages[header[:10]] = session.language
    assert languages == {"fr-FR,fr;q": "fr-FR", "de": "de", "*": None, "x" * 10: None, "": None}
    # A `lang` sent by an older snippet still wins.
    reply = await Visitor(client, site, ip="192.0.2.99").view("https://velos-martin.fr/", lang="es")
    assert (await load_session(database, reply["s"])).language == "es"
