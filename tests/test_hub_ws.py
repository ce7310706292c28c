"""The console websocket, end to end through aiohttp, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import json
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import pytest
from aiohttp import WSMsgType, web
from aiohttp.test_utils import TestClient
from sqlalchemy import delete, select
from support.app import make_settings
from support.numbers import random_e164
from support.proxy import CuttableProxy, forward

from dashboard.app import create_app
from dashboard.console_commands import publish_contact_requested
from dashboard.hub import publish_site_event
from dashboard.hub.connection import HubOptions
from dashboard.hub.events import check_message
from dashboard.hub.http import publish_call_event
from tracker import appkeys
from tracker.clock import FrozenClock
from tracker.db import Database
from tracker.models import AuditEntry, BusinessNumber, Call, LoginSession, Site, TrackingNumber
from tracker.sites import SiteSpec, create_site, get_or_create_account
from tracker.users import create_user

ClientFactory = Callable[..., Awaitable[TestClient[Any, Any]]]
PASSWORD = "correct horse battery"
CHROME = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/126.0.0.0 Safari/537.36"
)


async def new_site(database: Database, account: str) -> Site:
    async with database.begin() as db:
        owner = await get_or_create_account(db, account, FrozenClock())
        return await create_site(
            db,
            owner,
            SiteSpec(
                name="Vélos Martin", domain="velos-martin.fr", phone="+33123456789", country="FR"
            ),
        )


async def new_user(
    database: Database, account: str, role: str = "advisor", language: str | None = None
) -> str:
    email = f"{role}-{secrets.token_hex(4)}@velos-martin.fr"
    async with database.begin() as db:
        owner = await get_or_create_account(db, account, FrozenClock())
        user = await create_user(db, owner, email, PASSWORD, role, FrozenClock())
        if language is not None:
            user.language = language
    return email


class Shop:
    """An account with a site, an advisor signed in, and another tenant's site next door."""

    def __init__(
        self,
        client: TestClient[Any, Any],
        app: web.Application,
        site: Site,
        foreign: Site,
        redis_proxy: CuttableProxy | None = None,
    ) -> None:
        self.client = client
        self.app = app
        self.site = site
        self.foreign = foreign
        self.redis_proxy = redis_proxy

    async def connect(self, **kwargs: Any) -> aiohttp.ClientWebSocketResponse:
        ws: aiohttp.ClientWebSocketResponse = await self.client.ws_connect("/console/ws", **kwargs)
        return ws

    async def collect(
        self, site: Site | None = None, ip: str = "203.0.113.9", **fields: Any
    ) -> dict[str, Any]:
        body = {"k": (site or self.site).site_key, "p": secrets.token_hex(8), **fields}
        body.setdefault("t", "pageview")
        if body["t"] == "pageview":
            body.setdefault("u", "https://velos-martin.fr/velos/route?utm_source=google")
            body.setdefault("ti", "Vélos de route")
        response = await self.client.post(
            "/collect",
            data=json.dumps(body),
            headers={"User-Agent": CHROME, "X-Forwarded-For": ip},
        )
        assert response.status == 200, await response.text()
        result: dict[str, Any] = await response.json()
        return result


@pytest.fixture
def options() -> HubOptions:
    return HubOptions()


@pytest.fixture
def hub_kind() -> str:
    """The hub backend: in-process unless a test asks for Redis too."""
    return "memory"


@pytest.fixture
async def shop(
    request: pytest.FixtureRequest,
    aiohttp_client: ClientFactory,
    database_url: str,
    database: Database,
    options: HubOptions,
    hub_kind: str,
) -> AsyncIterator[Shop]:
    account = f"acct-{secrets.token_hex(4)}"
    site = await new_site(database, account)
    foreign = await new_site(database, f"other-{secrets.token_hex(4)}")
    overrides: dict[str, Any] = {}
    proxy = None
    if hub_kind in ("redis", "cuttable redis"):
        overrides["redis_url"] = request.getfixturevalue("redis_url")
        overrides["redis_prefix"] = request.getfixturevalue("redis_prefix")
    if hub_kind == "cuttable redis":
        # Redis reached through a forwarder the test can cut, as in a Redis restart.
        proxy, overrides["redis_url"] = await forward(overrides["redis_url"], 6379)
    app = create_app(make_settings(database_url, **overrides))
    app[appkeys.HUB].options = options
    client = await aiohttp_client(app)
    email = await new_user(database, account)
    signed = await client.post(
        "/login", data={"email": email, "password": PASSWORD}, allow_redirects=False
    )
    assert signed.status == 302
    yield Shop(client, app, site, foreign, proxy)
    if proxy is not None:
        await proxy.cut()


async def receive(ws: aiohttp.ClientWebSocketResponse, within: float = 5) -> dict[str, Any]:
    """Return the next message other than a ping, checked against the typed models."""
    while True:
        message = await ws.receive(timeout=within)
        assert message.type is WSMsgType.TEXT, message
        data: dict[str, Any] = json.loads(message.data)
        check_message(data)
        if data["type"] != "ping":
            return data


async def command(
    ws: aiohttp.ClientWebSocketResponse, message_id: int, type_: str, **payload: Any
) -> dict[str, Any]:
    await ws.send_json({"id": message_id, "type": type_, **payload})
    reply = await receive(ws)
    assert reply["type"] == "result" and reply["id"] == message_id, reply
    return reply


async def closed_with(ws: aiohttp.ClientWebSocketResponse, within: float = 5) -> int | None:
    async with asyncio.timeout(within):
        while True:
            message = await ws.receive()
            if message.type is WSMsgType.CLOSE:
                return int(message.data)  # the code the server sent
            if message.type in (WSMsgType.CLOSED, WSMsgType.CLOSING):
                return ws.close_code


# -- connecting ----------------------------------------------------------------------------------


async def test_the_socket_needs_a_signed_in_advisor_from_our_own_origin(
    aiohttp_client: ClientFactory, database_url: str, database: Database, shop: Shop
) -> None:
    stranger = await aiohttp_client(create_app(make_settings(database_url)))
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await stranger.ws_connect("/console/ws")
    assert refused.value.status == 401

    marketer = await new_user(database, f"acct-{secrets.token_hex(4)}", "marketer")
    await stranger.post("/login", data={"email": marketer, "password": PASSWORD})
    with pytest.raises(aiohttp.WSServerHandshakeError) as forbidden:
        await stranger.ws_connect("/console/ws")
    assert forbidden.value.status == 403

    with pytest.raises(aiohttp.WSServerHandshakeError) as cross_site:
        await shop.connect(headers={"Origin": "https://evil.example"})
    assert cross_site.value.status == 403
    ws = await shop.connect(headers={"Origin": "http://calltrack.test"})
    assert (await command(ws, 1, "snapshot"))["success"] is True
    await ws.close()


async def test_envelope_errors_have_codes(shop: Shop) -> None:
    ws = await shop.connect()
    await ws.send_str("not json")
    assert (await receive(ws))["error"]["code"] == "invalid_message"
    await ws.send_json({"type": "snapshot"})
    assert (await receive(ws))["error"]["code"] == "invalid_message"
    # Deeper than Python's parser recurses, and a NaN id: errors, not a dropped connection.
    await ws.send_str("[" * 30_000)
    assert (await receive(ws))["error"]["code"] == "invalid_message"
    await ws.send_str('{"id": NaN, "type": "snapshot"}')
    assert (await receive(ws))["error"]["code"] == "invalid_message"
    reply = await command(ws, 1, "teleport")
    assert reply["success"] is False and reply["error"]["code"] == "unknown_command"
    reply = await command(ws, 2, "subscribe", sites="all of them")
    assert reply["error"]["code"] == "invalid_payload"
    reply = await command(ws, 3, "subscribe", sites=None, last_event_ids={"x": "yesterday"})
    assert reply["error"]["code"] == "invalid_payload"
    reply = await command(ws, 3, "snapshot")
    assert reply["error"]["code"] == "id_reuse"
    reply = await command(ws, 4, "visitor", session_id=42)
    assert reply["error"]["code"] == "invalid_payload"
    await ws.close()


# -- subscribing and events ----------------------------------------------------------------------


async def test_an_advisor_follows_only_their_own_sites(shop: Shop) -> None:
    ws = await shop.connect()
    refused = await command(ws, 1, "subscribe", sites=[shop.foreign.site_key])
    assert refused["success"] is False and refused["error"]["code"] == "unknown_site"
    everything = await command(ws, 2, "subscribe", sites=None)
    assert everything["result"]["sites"] == [
        {"site_key": shop.site.site_key, "name": shop.site.name}
    ]
    assert everything["result"]["replayed"] == 0 and everything["result"]["gap"] is False

    await shop.collect(shop.foreign)
    await shop.collect()
    event = (await receive(ws))["event"]
    assert event["site"] == shop.site.site_key  # the foreign pageview never arrived
    with pytest.raises(asyncio.TimeoutError):
        await receive(ws, within=0.3)
    await ws.close()


@pytest.mark.parametrize("hub_kind", ["memory", "redis"])
async def test_a_pageview_reaches_the_console_with_the_visit_summary(shop: Shop) -> None:
    ws = await shop.connect()
    await command(ws, 1, "subscribe", sites=[shop.site.site_key])
    visit = await shop.collect(
        u="https://velos-martin.fr/?utm_source=google&utm_medium=cpc&utm_campaign=ete",
        r="https://www.google.com/",
        ti="Accueil <script>",
    )
    event = (await receive(ws))["event"]
    assert event["kind"] == "visitor.pageview"
    session = event["data"]["session"]
    assert session["id"] == visit["s"] and session["pageviews"] == 1
    assert session["channel"] == "Paid Search" and session["campaign"] == "ete"
    assert session["browser"] == "Chrome" and session["cart_total"] is None
    assert event["data"]["page"]["title"] == "Accueil <script>"  # data, shown with textContent

    await shop.collect(
        t="cart",
        s=visit["s"],
        cart={"items": [{"name": "Vélo", "sku": "V1", "qty": 2, "price": 649}], "currency": "EUR"},
    )
    cart = (await receive(ws))["event"]
    assert cart["kind"] == "visitor.cart" and cart["data"]["session_id"] == visit["s"]
    assert cart["data"]["cart"]["total"] == 1298.0 and cart["data"]["cart"]["item_count"] == 2
    await ws.close()


@pytest.mark.parametrize("hub_kind", ["memory", "redis"])
async def test_a_console_that_reconnects_gets_what_it_missed(shop: Shop) -> None:
    ws = await shop.connect()
    await command(ws, 1, "subscribe", sites=None)
    await shop.collect()
    last = (await receive(ws))["event"]["id"]
    await ws.close()  # the laptop sleeps

    missed = [await shop.collect(ti=f"Page {n}") for n in range(3)]
    ws = await shop.connect()
    reply = await command(ws, 1, "subscribe", sites=None, last_event_ids={shop.site.site_key: last})
    assert reply["result"]["replayed"] == 3 and reply["result"]["gap"] is False
    replayed = [(await receive(ws))["event"] for _ in missed]
    assert [e["data"]["page"]["title"] for e in replayed] == ["Page 0", "Page 1", "Page 2"]
    ids = [e["id"] for e in replayed]
    assert ids == sorted(ids, key=lambda i: tuple(map(int, i.split("-"))))
    await shop.collect(ti="Live")
    assert (await receive(ws))["event"]["data"]["page"]["title"] == "Live"

    stale = await command(
        ws, 2, "subscribe", sites=None, last_event_ids={shop.site.site_key: "1-0"}
    )
    assert stale["result"]["gap"] is True and stale["result"]["gap_sites"] == [shop.site.site_key]
    await ws.close()


@pytest.mark.parametrize("options", [HubOptions(queue_size=2)])
async def test_a_console_that_does_not_read_is_closed_as_a_slow_consumer(shop: Shop) -> None:
    ws = await shop.connect()
    await command(ws, 1, "subscribe", sites=None)
    # The client stops reading: its socket buffers, then the server's transport buffer fill
    # (a few MiB on loopback), then the queue of 2; the next event closes it with 4008.
    request = {"id": 1, "message": "x" * 40_000}
    for _ in range(400):
        await publish_site_event(shop.app, shop.site.id, "contact.requested", {"request": request})
    assert await closed_with(ws, within=30) == 4008
    # The other consoles of the site are unaffected.
    other = await shop.connect()
    await command(other, 1, "subscribe", sites=None)
    await publish_site_event(shop.app, shop.site.id, "call.tagged", {"target_id": 1, "tag": "lead"})
    assert (await receive(other))["event"]["kind"] == "call.tagged"
    await other.close()


@pytest.mark.parametrize("options", [HubOptions(heartbeat_interval=0.1, idle_timeout=0.5)])
async def test_heartbeats_and_silent_consoles_are_closed(shop: Shop) -> None:
    ws = await shop.connect()
    for n in range(1, 5):
        message = json.loads((await ws.receive(timeout=2)).data)
        assert check_message(message)["type"] == "ping"
        await ws.send_json({"id": n, "type": "pong"})  # answering keeps the socket open
    assert await closed_with(ws, within=3) == 4009  # then silence


async def test_shutdown_closes_consoles_with_going_away(shop: Shop) -> None:
    ws = await shop.connect()
    await command(ws, 1, "subscribe", sites=None)
    await shop.app.shutdown()
    assert await closed_with(ws) == aiohttp.WSCloseCode.GOING_AWAY


async def _login_of(shop: Shop, database: Database) -> LoginSession:
    """The advisor's sign-in: the row of the token in the browser's cookie."""
    from dashboard.auth import COOKIE

    cookies = shop.client.session.cookie_jar.filter_cookies(shop.client.make_url("/"))
    token = cookies[COOKIE].value
    async with database.sessions() as db:
        login = await db.get(LoginSession, hashlib.sha256(token.encode()).hexdigest())
    assert login is not None
    return login


async def test_signing_out_closes_that_browsers_consoles_at_once(
    shop: Shop, database: Database
) -> None:
    ws = await shop.connect()
    await command(ws, 1, "subscribe", sites=None)
    login = await _login_of(shop, database)
    done = await shop.client.post("/logout", data={"csrf": login.csrf_token}, allow_redirects=False)
    assert done.status == 302
    assert await closed_with(ws, within=2) == 4001
    # A visitor's next page no longer reaches that socket, and a new one is refused.
    await shop.collect()
    refused = await shop.client.get("/console/ws")
    assert refused.status in (401, 403)


@pytest.mark.parametrize("options", [HubOptions(login_recheck=0.05)])
async def test_a_sign_in_ended_on_another_worker_closes_this_workers_consoles(
    shop: Shop, database: Database
) -> None:
    ws = await shop.connect()
    await command(ws, 1, "subscribe", sites=None)
    login = await _login_of(shop, database)
    async with database.begin() as db:
        # What another worker's sign-out does: the sign-in row is gone.
        await db.execute(delete(LoginSession).where(LoginSession.token_hash == login.token_hash))
    assert await closed_with(ws, within=3) == 4001


# -- snapshot, visitor panel, calls --------------------------------------------------------------


async def test_snapshot_and_visitor_panel_show_only_my_visitors_and_are_audited(
    shop: Shop, database: Database
) -> None:
    visit = await shop.collect(ti="Accueil")
    await shop.collect(s=visit["s"], ti="Panier", u="https://velos-martin.fr/panier")
    stranger = await shop.collect(shop.foreign)
    ws = await shop.connect()
    await command(ws, 1, "subscribe", sites=None)
    snapshot = (await command(ws, 2, "snapshot", site=None))["result"]
    assert [v["id"] for v in snapshot["visitors"]] == [visit["s"]]
    assert snapshot["visitors"][0]["site"] == shop.site.site_key
    assert snapshot["requests"] == [] and snapshot["calls"] == []
    foreign = await command(ws, 3, "snapshot", site=shop.foreign.site_key)
    assert foreign["error"]["code"] == "unknown_site"

    panel = (await command(ws, 4, "visitor", session_id=visit["s"]))["result"]
    assert [p["title"] for p in panel["pages"]] == ["Accueil", "Panier"]
    assert panel["session"]["landing_url"].startswith("https://velos-martin.fr/")
    assert panel["cart"] is None and panel["calls"] == [] and panel["requests"] == []
    hidden = await command(ws, 5, "visitor", session_id=stranger["s"])
    assert hidden["error"]["code"] == "unknown_session"
    async with database.sessions() as db:
        audited = list(
            await db.scalars(
                select(AuditEntry.target).where(AuditEntry.action == "console.visitor_viewed")
            )
        )
    assert f"session:{visit['s']}" in audited and f"session:{stranger['s']}" not in audited
    # The live list (visitors, requesters' numbers) is a read of personal data too: audited
    # once per console connection, not on each of its minute's refreshes (found by an audit).
    await command(ws, 6, "snapshot", site=None)
    async with database.sessions() as db:
        snapshots = list(
            await db.execute(
                select(AuditEntry.ip_truncated, AuditEntry.detail).where(
                    AuditEntry.action == "console.snapshot",
                    AuditEntry.account_id == shop.site.account_id,
                )
            )
        )
    assert len(snapshots) == 1 and snapshots[0][0] and snapshots[0][1]["visitors"] == 1
    await ws.close()


async def test_a_restricted_visit_is_neither_opened_nor_its_call_popped(
    shop: Shop, database: Database
) -> None:
    """Restriction keeps a person's data but out of the console: the snapshot already left
    the visit out; opening it by id and the screen-pop of their call did not."""
    from tracker.models import Restriction

    visit = await shop.collect(ti="Vélo cargo")
    async with database.begin() as db:
        db.add(Restriction(account_id=shop.site.account_id, kind="session", value=visit["s"],
                           created_at=dt.datetime.now(dt.UTC), created_by="dpo@velos-martin.fr"))  # fmt: skip
        call = Call(
            site_id=shop.site.id, provider="simulated", provider_call_id="CA" + secrets.token_hex(16),
            caller_e164="+33612345678", tracking_e164="+33970000001",
            started_at=dt.datetime.now(dt.UTC), status="ringing", session_id=visit["s"],
            channel="Paid Search", method="pool-session", confidence=0.9,
        )  # fmt: skip
        db.add(call)
    ws = await shop.connect()
    await command(ws, 1, "subscribe", sites=None)
    snapshot = (await command(ws, 2, "snapshot", site=None))["result"]
    assert visit["s"] not in {v["id"] for v in snapshot["visitors"]}
    refused = await command(ws, 3, "visitor", session_id=visit["s"])
    assert refused["error"]["code"] == "unknown_session"
    await publish_call_event(shop.app, call)
    # Nor what the restricted visitor does next, live (found by an audit: their pages and cart
    # reached the console again), nor their callback request.
    await shop.collect(s=visit["s"], ti="Vélo cargo, encore")
    await shop.collect(t="cart", s=visit["s"], cart={"items": [{"name": "Cargo", "qty": 1}]})
    shop.app[appkeys.EXTRAS].get("restrictions", {}).clear()  # restrictions are cached 5 s
    async with database.begin() as db:
        db.add(Restriction(account_id=shop.site.account_id, kind="phone", value="+33611111111",
                           created_at=dt.datetime.now(dt.UTC), created_by="dpo@velos-martin.fr"))  # fmt: skip
    await publish_contact_requested(
        shop.app, shop.site, await contact_of(database, shop.site, "+33611111111")
    )
    # A restricted visitor's later visit (a new id) and its request, with another number.
    visitor_id = secrets.token_hex(8)
    async with database.begin() as db:
        db.add(Restriction(account_id=shop.site.account_id, kind="visitor", value=visitor_id,
                           created_at=dt.datetime.now(dt.UTC), created_by="dpo@velos-martin.fr"))  # fmt: skip
    shop.app[appkeys.EXTRAS].get("restrictions", {}).clear()
    later = await shop.collect(ip="198.51.100.77", c=True, v=visitor_id, ti="Retour")
    request = await contact_of(database, shop.site, "+33622222222", session_id=later["s"])
    await publish_contact_requested(shop.app, shop.site, request)
    # The next event is another visitor's page.
    other = await shop.collect(ti="Accueil", ip="198.51.100.5")
    seen = (await receive(ws))["event"]
    assert seen["kind"] == "visitor.pageview" and seen["data"]["session"]["id"] == other["s"]
    await ws.close()


async def contact_of(
    database: Database, site: Site, phone: str, session_id: str | None = None
) -> dict[str, Any]:
    """A callback request stored for `phone`, as the contact endpoint describes it."""
    from tracker.contacts import create_contact_request, describe_request

    async with database.begin() as db:
        created = await create_contact_request(
            db, site, session_id, phone, "Rappel ?", "fr", dt.datetime.now(dt.UTC)
        )
        return await describe_request(db, created)


async def test_a_ringing_call_pops_the_callers_visit_then_updates(
    shop: Shop, database: Database
) -> None:
    visit = await shop.collect(ti="Vélo électrique")
    ws = await shop.connect()
    await command(ws, 1, "subscribe", sites=None)
    async with database.begin() as db:
        call = Call(
            site_id=shop.site.id,
            provider="simulated",
            provider_call_id="CA" + secrets.token_hex(16),
            caller_e164="+33612345678",
            tracking_e164="+33970000001",
            started_at=dt.datetime.now(dt.UTC),
            status="ringing",
            session_id=visit["s"],
            channel="Paid Search",
            method="pool-session",
            confidence=0.9,
        )
        db.add(call)
    await publish_call_event(shop.app, call)
    pop = (await receive(ws))["event"]
    assert pop["kind"] == "call.ringing" and pop["data"]["call"]["id"] == call.id
    assert pop["data"]["session"]["id"] == visit["s"]
    assert [p["title"] for p in pop["data"]["pages"]] == ["Vélo électrique"]
    call.status, call.answered_at = "in-progress", FrozenClock().now()
    await publish_call_event(shop.app, call)
    update = (await receive(ws))["event"]
    assert update["kind"] == "call.updated" and update["data"]["call"]["status"] == "in-progress"
    # A call that started minutes ago is not ringing any more, whatever its status says (its
    # callbacks replayed after a database outage): an update, no screen-pop.
    call.status, call.answered_at = "ringing", None
    call.started_at = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=10)
    await publish_call_event(shop.app, call)
    late = (await receive(ws))["event"]
    assert late["kind"] == "call.updated" and late["data"]["call"]["status"] == "ringing"
    await ws.close()


@pytest.mark.parametrize("hub_kind", ["memory", "redis"])
async def test_an_erased_visitor_leaves_open_and_resuming_consoles(
    shop: Shop, database: Database, tmp_path: Any
) -> None:
    from tracker.privacy.erase import erase_person, tell_consoles
    from tracker.privacy.find import Scope, SubjectQuery, find_person

    ws = await shop.connect()
    await command(ws, 1, "subscribe", sites=None)
    # Someone else's event, which the erasure must keep.
    await publish_site_event(shop.app, shop.site.id, "call.tagged", {"target_id": 1, "tag": "x"})
    before = (await receive(ws))["event"]["id"]
    visit = await shop.collect(ti="Vélos de route")
    assert (await receive(ws))["event"]["data"]["session"]["id"] == visit["s"]
    await ws.close()  # a second console will resume from `before`
    live = await shop.connect()
    await command(live, 1, "subscribe", sites=None)

    backend = shop.app[appkeys.HUB].backend
    scope = Scope(shop.site.account_id, (shop.site.id,), "FR")
    async with database.begin() as db:
        person = await find_person(db, scope, SubjectQuery("session", visit["s"]), "secret")
        now = shop.app[appkeys.CLOCK].now()
        report = await erase_person(
            db, person, secret_key="secret", export_dir=tmp_path, now=now, hub=backend
        )
    await tell_consoles(backend, report, now)  # once committed, as the privacy page does
    erased = (await receive(live))["event"]
    assert erased["kind"] == "visitor.erased" and erased["site"] == shop.site.site_key
    assert erased["data"] == {}  # it names nobody: consoles fetch a fresh snapshot
    snapshot = await command(live, 2, "snapshot", site=None)
    assert visit["s"] not in {v["id"] for v in snapshot["result"]["visitors"]}
    await live.close()

    # A console that resumes is replayed the erasure, never the erased visit's pages.
    resumed = await shop.connect()
    reply = await command(
        resumed, 1, "subscribe", sites=None, last_event_ids={shop.site.site_key: before}
    )
    assert reply["result"]["replayed"] == 1 and reply["result"]["gap"] is False
    assert (await receive(resumed))["event"]["kind"] == "visitor.erased"
    await resumed.close()


@pytest.mark.parametrize(
    ("hub_kind", "options"), [("cuttable redis", HubOptions(resync_interval=0.05))]
)
async def test_events_lost_while_redis_is_away_make_the_consoles_resync(
    shop: Shop, database: Database
) -> None:
    """Redis holds the hub's streams, not the visits: events published while it is away are
    lost, but what they said is in the database. Once Redis answers, the consoles of the site
    are told to resync, and their snapshot shows the visit and the request they missed."""
    assert shop.redis_proxy is not None
    async with database.begin() as db:
        site = await db.get(Site, shop.site.id)
        assert site is not None
        site.settings = {**(site.settings or {}), "contact_widget": True}
    ws = await shop.connect()
    await command(ws, 1, "subscribe", sites=None)
    await shop.collect(ti="Before")
    assert (await receive(ws))["event"]["data"]["page"]["title"] == "Before"

    await shop.redis_proxy.cut()
    visit = await shop.collect(ti="During the outage")
    asked = await shop.client.post(
        "/contact",
        json={"k": shop.site.site_key, "s": visit["s"], "phone": "06 12 34 56 78"},
        headers={"User-Agent": CHROME, "X-Forwarded-For": "203.0.113.9"},
    )
    assert asked.status == 201, await asked.text()
    request_id = (await asked.json())["id"]
    # The console is told that live events stopped (and not sent anything else meanwhile).
    paused = await receive(ws, within=10)
    assert paused["type"] == "status" and paused["live"] is False
    await shop.redis_proxy.restore()

    # Once Redis answers: a resync on the site's stream, and the console told events flow.
    got: dict[str, Any] = {}
    while len(got) < 2:
        message = await receive(ws, within=10)
        got[message["type"]] = message
    event, status = got["event"]["event"], got["status"]
    assert event["kind"] == "hub.resync" and event["site"] == shop.site.site_key
    assert event["data"] == {} and status["live"] is True
    snapshot = (await command(ws, 2, "snapshot", site=None))["result"]
    assert visit["s"] in {v["id"] for v in snapshot["visitors"]}
    assert request_id in {r["id"] for r in snapshot["requests"]}
    # The first event after the outage is not lost on a pooled connection Redis closed (one
    # retry on a fresh connection). Another resync may come first: a publish that failed late.
    await shop.collect(ti="After")
    while (after := (await receive(ws))["event"])["kind"] == "hub.resync":
        pass
    assert after["kind"] == "visitor.pageview" and after["data"]["page"]["title"] == "After"
    await ws.close()


@pytest.mark.parametrize("options", [HubOptions(erasure_poll=0.05)])
async def test_an_erasure_from_the_cli_reaches_the_in_process_hub(
    shop: Shop,
    database: Database,
    database_url: str,
    tmp_path: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`calltrack privacy erase` is another process: without Redis it cannot reach a running
    embedded server's hub nor its number pool. The server finds the erasure in the audit log,
    drops the site's kept events (they may name the person), tells open consoles, and gives
    the erased visit's number back to the pool; another visitor's stays theirs."""
    from support.cli import run_cli_beside

    from tracker.numbers.pool import pool_key

    numbers = shop.app[appkeys.NUMBERS]
    async with database.begin() as db:
        business = await db.scalar(
            select(BusinessNumber.id).where(BusinessNumber.site_id == shop.site.id)
        )
        for _ in range(2):
            db.add(TrackingNumber(
                site_id=shop.site.id, business_number_id=business, e164=random_e164(),
                provider="simulated", kind="pool", state="active", created_at=dt.datetime.now(dt.UTC),
            ))  # fmt: skip
    key = pool_key(shop.site.id, business)

    async def holders() -> set[str]:
        return {lease.session_id for lease in (await numbers.pool.state(key)).held}

    ws = await shop.connect()
    await command(ws, 1, "subscribe", sites=None)
    visit = await shop.collect(ti="Vélos de route", c=True)
    seen = (await receive(ws))["event"]
    assert seen["data"]["session"]["id"] == visit["s"]
    other = await shop.collect(ti="Gravel", c=True, ip="198.51.100.4")
    await receive(ws)
    assert visit["s"] != other["s"] and visit["n"] and other["n"]
    assert await holders() == {visit["s"], other["s"]}

    monkeypatch.setenv("CALLTRACK_DATABASE_URL", database_url)
    monkeypatch.setenv("CALLTRACK_SECRET_KEY", shop.app[appkeys.SETTINGS].secret_key)
    monkeypatch.delenv("CALLTRACK_REDIS_URL", raising=False)
    argv = ["privacy", "erase", "--session", visit["s"], "--site", shop.site.site_key]
    assert await run_cli_beside([*argv, "--yes", "--json", "--export-dir", str(tmp_path)]) == 0

    erased = (await receive(ws))["event"]
    assert erased["kind"] == "visitor.erased" and erased["site"] == shop.site.site_key
    await ws.close()
    for _ in range(100):  # the next round of the follower, 0.05 s later
        if await holders() == {other["s"]}:
            break
        await asyncio.sleep(0.05)
    assert await holders() == {other["s"]}
    # A console resuming from before the erasure is not replayed the visit's page: the kept
    # events are gone, so it is told of a gap and takes a snapshot without the person.
    resumed = await shop.connect()
    reply = await command(
        resumed, 1, "subscribe", sites=None, last_event_ids={shop.site.site_key: seen["id"]}
    )
    assert reply["result"]["gap"] is True and reply["result"]["replayed"] == 1
    assert (await receive(resumed))["event"]["kind"] == "visitor.erased"  # not the page
    snapshot = await command(resumed, 2, "snapshot", site=None)
    assert visit["s"] not in {v["id"] for v in snapshot["result"]["visitors"]}
    await resumed.close()


async def test_a_command_while_the_database_is_away_says_so(
    aiohttp_client: ClientFactory, postgresql_url: str
) -> None:
    """A console command that needs PostgreSQL during a failover gets `service_unavailable`
    (the console tells the advisor to try again), not `internal_error`; once it is back, the
    same command works on the same socket."""
    database = Database(postgresql_url, pool_size=2)
    proxy, proxied = await forward(postgresql_url, 5432)
    app = create_app(make_settings(proxied))
    app[appkeys.EXTRAS]["workers_disabled"] = {"webhooks", "reports", "spool"}
    client = await aiohttp_client(app)
    account = f"acct-{secrets.token_hex(4)}"
    await new_site(database, account)
    email = await new_user(database, account)
    try:
        signed = await client.post(
            "/login", data={"email": email, "password": PASSWORD}, allow_redirects=False
        )
        assert signed.status == 302
        ws: aiohttp.ClientWebSocketResponse = await client.ws_connect("/console/ws")
        await command(ws, 1, "subscribe", sites=None)
        await proxy.cut()
        refused = await command(ws, 2, "snapshot", site=None)
        assert refused["success"] is False
        assert refused["error"]["code"] == "service_unavailable"
        await proxy.restore()
        for message_id in range(3, 20):  # the pool replaces its dead connections
            again = await command(ws, message_id, "snapshot", site=None)
            if again["success"]:
                break
            await asyncio.sleep(0.2)
        assert again["success"] is True and again["result"]["visitors"] == []
        await ws.close()
    finally:
        await proxy.cut()
        await database.close()
