"""Outgoing webhooks against a local receiver: signatures, retries with backoff, give-up, log."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import jsonschema
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from sqlalchemy import select, update
from support.app import make_settings
from test_reports import sign_in

from dashboard import webhooks
from dashboard.api.http import ROUTES
from dashboard.api.schema import openapi_document
from dashboard.app import create_app
from tracker import appkeys
from tracker.audit import audit
from tracker.clock import FrozenClock
from tracker.db import Database
from tracker.models import (
    Account,
    Call,
    ContactRequest,
    Site,
    User,
    WebhookDelivery,
    WebhookEndpoint,
)

T0 = dt.datetime(2026, 1, 12, 9, 0, tzinfo=dt.UTC)
ServerFactory = Callable[..., Awaitable[TestServer]]


@dataclass
class Receiver:
    """A merchant's endpoint: records what it gets, fails the first `failures` times."""

    failures: int = 0
    status: int = 500
    received: list[tuple[dict[str, str], bytes]] = field(default_factory=list)
    url: str = ""

    async def handle(self, request: web.Request) -> web.Response:
        self.received.append((dict(request.headers), await request.read()))
        if self.failures > 0:
            self.failures -= 1
            return web.Response(status=self.status, text="down for maintenance")
        return web.Response(status=204)


@pytest.fixture
async def receiver(aiohttp_server: ServerFactory) -> Receiver:
    box = Receiver()
    app = web.Application()
    app.router.add_post("/hooks", box.handle)
    server = await aiohttp_server(app)
    box.url = str(server.make_url("/hooks"))
    return box


@pytest.fixture(autouse=True)
async def empty_queue(database: Database) -> AsyncIterator[None]:
    """Settle what is pending before and after: the queue is shared by the whole database."""

    async def settle() -> None:
        async with database.begin() as db:
            await db.execute(
                update(WebhookDelivery)
                .where(WebhookDelivery.status == "pending")
                .values(status="failed")
            )

    await settle()
    yield
    await settle()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


@dataclass
class World:
    account_id: int
    site_id: int
    endpoint_id: int
    secret: str


async def make_world(database: Database, url: str, events: list[str] | None = None) -> World:
    async with database.begin() as db:
        account = Account(name=f"hooks-{secrets.token_hex(4)}", created_at=T0)
        db.add(account)
        await db.flush()
        site = Site(
            account_id=account.id,
            site_key="ct" + secrets.token_hex(10),
            name="Shop",
            domain="shop.example",
            country="FR",
            timezone="Europe/Paris",
            created_at=T0,
        )
        db.add(site)
        await db.flush()
        endpoint = await webhooks.create_endpoint(
            db, account.id, url, events or list(webhooks.EVENTS), T0
        )
        return World(account.id, site.id, endpoint.id, endpoint.secret)


def make_call(site_id: int, status: str = "ringing", outcome: str | None = None) -> Call:
    return Call(
        site_id=site_id,
        provider="simulated",
        provider_call_id="CA" + secrets.token_hex(16),
        caller_e164="+33612345678",
        tracking_e164="+33199000001",
        started_at=T0,
        status=status,
        outcome=outcome,
        channel="Paid Search",
        method="pool-session",
        confidence=1.0,
    )


async def deliveries(database: Database, world: World) -> list[WebhookDelivery]:
    async with database.sessions() as db:
        return list(
            await db.scalars(
                select(WebhookDelivery)
                .where(WebhookDelivery.endpoint_id == world.endpoint_id)
                .order_by(WebhookDelivery.id)
            )
        )


class FakeApp(dict[Any, Any]):
    """Just what the listeners read from an application."""


def fake_app(database: Database, clock: FrozenClock) -> Any:
    app = FakeApp()
    app[appkeys.DATABASE] = database
    app[appkeys.CLOCK] = clock
    app[appkeys.EXTRAS] = {}
    return app


def conforms(event: dict[str, Any]) -> None:
    """Validate an event against its schema in the OpenAPI document's `webhooks`."""
    document = openapi_document(ROUTES, "http://calltrack.test")
    body = document["webhooks"][event["type"]]["post"]["requestBody"]["content"]["application/json"]
    schema = {**body["schema"], "components": document["components"]}
    jsonschema.Draft202012Validator(schema, format_checker=jsonschema.FormatChecker()).validate(
        event
    )


def test_signature_covers_timestamp_and_body() -> None:
    body = b'{"type":"call.started"}'
    header = webhooks.signature("whsec_x", body, int(T0.timestamp()))
    stamp, digest = header.split(",")
    assert stamp == f"t={int(T0.timestamp())}" and len(digest) == len("v1=") + 64
    assert webhooks.verify_signature("whsec_x", header, body, T0)
    assert not webhooks.verify_signature("whsec_y", header, body, T0)
    assert not webhooks.verify_signature("whsec_x", header, body + b" ", T0)
    assert not webhooks.verify_signature("whsec_x", header, body, T0 + dt.timedelta(minutes=6))
    assert not webhooks.verify_signature("whsec_x", None, body, T0)


def test_backoff_doubles_from_30_seconds_and_caps_at_2_hours() -> None:
    delays = [webhooks.retry_delay(n).total_seconds() for n in range(1, 11)]
    assert delays == [30, 60, 120, 240, 480, 960, 1920, 3840, 7200, 7200]


async def test_call_events_are_signed_and_sent_once(
    database: Database, receiver: Receiver, http: aiohttp.ClientSession
) -> None:
    world = await make_world(database, receiver.url)
    clock = FrozenClock(T0)
    app = fake_app(database, clock)
    async with database.begin() as db:
        call = make_call(world.site_id)
        db.add(call)
    await webhooks.on_call(app, call)
    await webhooks.on_call(app, call)  # telephony reports every change: still one call.started
    call.status, call.outcome, call.duration_s = "completed", "answered", 42
    await webhooks.on_call(app, call)
    await webhooks.on_call(app, call)
    assert await webhooks.deliver_due(database, clock, http) == 2
    assert len(receiver.received) == 2
    events = []
    for headers, body in receiver.received:
        assert headers["Content-Type"] == "application/json"
        assert webhooks.verify_signature(world.secret, headers[webhooks.SIGNATURE_HEADER], body, T0)
        events.append(json.loads(body))
    assert sorted(e["type"] for e in events) == ["call.completed", "call.started"]
    for event in events:
        conforms(event)
    completed = next(e for e in events if e["type"] == "call.completed")
    assert completed["data"]["duration_s"] == 42 and completed["data"]["caller"] == "+33612345678"
    assert completed["account_id"] == world.account_id and completed["id"].startswith("evt_")
    assert all(
        d.status == "delivered" and d.attempts == 1 for d in await deliveries(database, world)
    )


async def test_failures_are_retried_with_exponential_backoff(
    database: Database, receiver: Receiver, http: aiohttp.ClientSession
) -> None:
    world = await make_world(database, receiver.url)
    clock = FrozenClock(T0)
    receiver.failures = 3
    async with database.begin() as db:
        await webhooks.enqueue(db, world.account_id, "call.started", {"id": 1}, T0, dedupe_key="k1")
    assert await webhooks.deliver_due(database, clock, http) == 1
    [delivery] = await deliveries(database, world)
    assert (
        delivery.status == "pending" and delivery.attempts == 1 and delivery.last_status_code == 500
    )
    assert delivery.next_attempt_at == T0 + dt.timedelta(seconds=30)
    clock.advance(seconds=29)
    assert await webhooks.deliver_due(database, clock, http) == 0
    clock.advance(seconds=1)
    assert await webhooks.deliver_due(database, clock, http) == 1
    [delivery] = await deliveries(database, world)
    assert delivery.next_attempt_at == clock.now() + dt.timedelta(seconds=60)
    clock.advance(seconds=60)
    assert await webhooks.deliver_due(database, clock, http) == 1
    clock.advance(seconds=120)
    assert await webhooks.deliver_due(database, clock, http) == 1
    [delivery] = await deliveries(database, world)
    assert delivery.status == "delivered" and delivery.attempts == 4
    assert delivery.delivered_at == T0 + dt.timedelta(seconds=210)
    # Every attempt is signed afresh with its own time; the body never changes.
    bodies = {body for _, body in receiver.received}
    stamps = [h[webhooks.SIGNATURE_HEADER].split(",")[0] for h, _ in receiver.received]
    assert len(bodies) == 1 and len(set(stamps)) == 4


async def test_an_endpoint_down_for_a_day_still_gets_retried_then_given_up(
    database: Database, receiver: Receiver, http: aiohttp.ClientSession
) -> None:
    world = await make_world(database, receiver.url)
    clock = FrozenClock(T0)
    receiver.failures = 10_000
    async with database.begin() as db:
        await webhooks.enqueue(
            db, world.account_id, "call.completed", {"id": 2}, T0, dedupe_key="k2"
        )
    attempts_at = []
    for _ in range(100):
        [delivery] = await deliveries(database, world)
        if delivery.status != "pending":
            break
        clock.set(max(clock.now(), delivery.next_attempt_at))
        attempts_at.append(clock.now())
        await webhooks.deliver_due(database, clock, http)
    [delivery] = await deliveries(database, world)
    assert delivery.status == "failed" and delivery.last_error == "HTTP 500"
    span = attempts_at[-1] - attempts_at[0]
    assert dt.timedelta(hours=24) <= span <= webhooks.GIVE_UP_AFTER
    # 9 attempts to reach the 2-hour cap (2 h 7 min in), then every 2 hours until 25 h.
    assert len(attempts_at) == delivery.attempts == 20
    assert len(receiver.received) == 20


async def test_network_errors_are_retried(database: Database, http: aiohttp.ClientSession) -> None:
    world = await make_world(database, "http://127.0.0.1:9/unreachable")
    clock = FrozenClock(T0)
    async with database.begin() as db:
        await webhooks.enqueue(db, world.account_id, "call.started", {"id": 3}, T0, dedupe_key="k3")
    await webhooks.deliver_due(database, clock, http)
    [delivery] = await deliveries(database, world)
    assert delivery.status == "pending" and delivery.last_status_code is None
    assert delivery.last_error and "Error" in delivery.last_error


async def test_a_claimed_delivery_is_not_sent_twice(database: Database, receiver: Receiver) -> None:
    world = await make_world(database, receiver.url)
    async with database.begin() as db:
        for n in range(6):
            await webhooks.enqueue(
                db, world.account_id, "call.started", {"id": n}, T0, dedupe_key=f"c{n}"
            )
    first, second = await asyncio.gather(
        webhooks.claim_due(database, T0, 4), webhooks.claim_due(database, T0, 4)
    )
    ids = [c.delivery_id for c in first + second]
    assert len(ids) == len(set(ids)) == 6
    # A crashed worker's claim expires, then the delivery is due again.
    assert await webhooks.claim_due(database, T0 + dt.timedelta(seconds=30)) == []
    assert (
        len(await webhooks.claim_due(database, T0 + webhooks.LOCK + dt.timedelta(seconds=1))) == 6
    )


async def test_only_subscribed_events_of_the_account_are_queued(
    database: Database, receiver: Receiver
) -> None:
    world = await make_world(database, receiver.url, ["contact.requested"])
    other = await make_world(database, receiver.url)
    async with database.begin() as db:
        assert (
            await webhooks.enqueue(db, world.account_id, "call.started", {}, T0, dedupe_key="x")
            == 0
        )
        assert (
            await webhooks.enqueue(
                db, world.account_id, "contact.requested", {}, T0, dedupe_key="y"
            )
            == 1
        )
    assert len(await deliveries(database, other)) == 0


async def test_a_restricted_persons_request_is_sent_nowhere(database: Database) -> None:
    """Restriction keeps the data but out of every outlet; the merchant's webhook received the
    restricted number in clear (found by an audit)."""
    from tracker.models import Restriction

    world = await make_world(database, "http://127.0.0.1:9/")
    clock = FrozenClock(T0)
    async with database.begin() as db:
        site = await db.get(Site, world.site_id)
        db.add(Restriction(account_id=world.account_id, kind="phone", value="+33655555555",
                           created_at=T0, created_by="dpo@velos-martin.fr"))  # fmt: skip
        restricted = ContactRequest(site_id=world.site_id, phone_e164="+33655555555", created_at=T0)
        free = ContactRequest(site_id=world.site_id, phone_e164="+33655555556", created_at=T0)
        db.add_all([restricted, free])
    assert site is not None
    for request in (restricted, free):
        await webhooks.on_contact_requested(fake_app(database, clock), site, {"id": request.id})
    sent = [json.loads(d.body)["data"]["phone"] for d in await deliveries(database, world)]
    assert sent == ["+33655555556"]


async def test_contact_events_from_the_widget_and_the_audit_log(
    database: Database, receiver: Receiver, http: aiohttp.ClientSession
) -> None:
    world = await make_world(database, receiver.url)
    clock = FrozenClock(T0)
    async with database.begin() as db:
        site = await db.get(Site, world.site_id)
        request = ContactRequest(site_id=world.site_id, phone_e164="+33655555555", created_at=T0)
        db.add(request)
    assert site is not None
    await webhooks.on_contact_requested(fake_app(database, clock), site, {"id": request.id})
    async with database.begin() as db:
        row = await db.get(ContactRequest, request.id)
        assert row is not None
        row.status, row.outcome_tag, row.closed_at = "closed", "sale", T0
        entry = await audit(
            db,
            action="contact.tagged",
            at=T0,
            actor="advisor@shop.example",
            account_id=world.account_id,
            target=f"contact_request:{request.id}",
        )
        await db.flush()
        mark = entry.id - 1
    _, queued = await webhooks.queue_closed_contacts(database, mark, T0)
    _, again = await webhooks.queue_closed_contacts(database, mark, T0)
    assert (queued, again) == (1, 0)
    await webhooks.deliver_due(database, clock, http)
    types = [json.loads(body)["type"] for _, body in receiver.received]
    assert sorted(types) == ["contact.closed", "contact.requested"]
    for _, body in receiver.received:
        conforms(json.loads(body))
    closed = next(
        json.loads(b) for _, b in receiver.received if json.loads(b)["type"] == "contact.closed"
    )
    assert closed["data"]["outcome"] == "sale" and closed["data"]["phone"] == "+33655555555"


async def test_test_button_and_delivery_log_in_the_dashboard(
    aiohttp_client: Callable[..., Awaitable[TestClient[Any, Any]]],
    database_url: str,
    database: Database,
    receiver: Receiver,
) -> None:
    world = await make_world(database, receiver.url)
    app = create_app(make_settings(database_url), clock=FrozenClock(T0))
    app[appkeys.EXTRAS]["workers_disabled"] = {"reports"}
    client = await aiohttp_client(app)
    email = f"admin-{secrets.token_hex(4)}@shop.example"
    async with database.begin() as db:
        db.add(
            User(
                account_id=world.account_id,
                email=email,
                password_hash="-",
                role="admin",
                created_at=T0,
            )
        )
    csrf = await sign_in(client, database, email, T0)
    path = f"/dashboard/webhooks/{world.endpoint_id}/test"
    assert (await client.post(path, data={}, allow_redirects=False)).status == 403
    sent = await client.post(path, data={"csrf": csrf}, allow_redirects=False)
    assert sent.status == 303
    for _ in range(50):  # the app's own worker delivers it
        if receiver.received:
            break
        await asyncio.sleep(0.1)
    headers, body = receiver.received[0]
    assert json.loads(body)["type"] == "webhook.test"
    assert webhooks.verify_signature(world.secret, headers[webhooks.SIGNATURE_HEADER], body, T0)
    for _ in range(50):
        [delivery] = await deliveries(database, world)
        if delivery.status == "delivered":
            break
        await asyncio.sleep(0.1)
    page = await client.get("/dashboard/webhooks")
    text = await page.text()
    assert page.status == 200 and "webhook.test" in text and "delivered" in text
    # Adding an endpoint shows its secret once; a bad URL is refused with a message.
    added = await client.post(
        "/dashboard/webhooks",
        data={"csrf": csrf, "url": "https://crm.example/h", "events": "call.completed"},
    )
    assert added.status == 200 and "whsec_" in await added.text()
    refused = await client.post(
        "/dashboard/webhooks",
        data={"csrf": csrf, "url": "javascript:alert(1)", "events": "call.completed"},
    )
    assert refused.status == 400
    async with database.sessions() as db:
        urls = set(
            await db.scalars(
                select(WebhookEndpoint.url).where(WebhookEndpoint.account_id == world.account_id)
            )
        )
    assert urls == {receiver.url, "https://crm.example/h"}
