"""The simulated carrier end to end: calls, callbacks and the CLI, through the real webhooks."""

from __future__ import annotations

import argparse
import base64
import datetime as dt
import json
import secrets
import xml.etree.ElementTree as ET
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from sqlalchemy import select
from support.app import free_port
from support.numbers import random_e164
from test_telephony_webhooks import (
    BUSINESS,
    CALLER,
    SECRET,
    ClientFactory,
    World,
    build_world,
    telephony_app,
)

from dashboard import telephony_cli
from telephony.callback import CallbackRequest, place_callback, prepare_callback
from telephony.carrier_factory import SimulatedTelephony, close_carrier, create_carrier
from telephony.carriers.base import CarrierError, PlacedCall, ProvisionedNumber, WebhookUrls
from telephony.signature import simulated_auth_token
from telephony.simulate import CallScript, Poster, SimulatedCarrierClient, new_call_sid, ring
from tracker import appkeys
from tracker.clock import FrozenClock
from tracker.db import Database
from tracker.errors import ApiError
from tracker.models import Account, Call, CarrierEvent, User
from tracker.users import create_user

PASSWORD = "correct horse battery"


def client_poster(client: TestClient[Any, Any], public_url: str) -> Poster:
    """Post to the test server what the carrier would post to the public URL."""

    async def post(url: str, body: bytes, headers: dict[str, str]) -> tuple[int, str]:
        assert url.startswith(public_url), url
        response = await client.post(url[len(public_url) :], data=body, headers=headers)
        return response.status, await response.text()

    return post


@pytest.fixture
async def simulated_world(
    aiohttp_client: ClientFactory, database: Database, database_url: str
) -> World:
    clock = FrozenClock(dt.datetime(2026, 3, 2, 10, 0, tzinfo=dt.UTC))
    client = await aiohttp_client(telephony_app(database_url, clock))
    return await build_world(
        database, client, clock, provider="simulated", record_calls=True,
        token=simulated_auth_token(SECRET),
    )  # fmt: skip


def carrier_client(world: World) -> SimulatedCarrierClient:
    return SimulatedCarrierClient(SECRET, client_poster(world.client, world.public_url))


async def test_a_simulated_call_goes_through_the_twilio_webhooks(simulated_world: World) -> None:
    world = simulated_world
    carrier = carrier_client(world)
    urls = f"{world.public_url}/telephony/twilio"
    result = await ring(
        carrier,
        voice_url=f"{urls}/voice",
        status_url=f"{urls}/status",
        to=world.pool.e164,
        from_=CALLER,
        now=world.clock.now(),
    )
    assert result.voice_status == 200 and result.dialed == BUSINESS
    assert "Cet appel est susceptible d'être enregistré." in result.twiml
    assert result.whisper is not None and "Appel Google Ads" in result.whisper
    assert {status for _, _, status in carrier.sent} == {200, 204}
    # Everything a real carrier sends: voice, 4 leg events, whisper, dial, recording, parent.
    assert len(carrier.sent) == 9
    assert all("X-Twilio-Signature" not in params for _, params, _ in carrier.sent)

    call = await world.call(result.call_sid)
    assert call is not None and call.provider == "simulated"
    start = world.clock.now()
    assert (call.method, call.confidence, call.session_id) == (
        "pool-session",
        1.0,
        world.session.id,
    )
    assert (call.status, call.outcome, call.duration_s) == ("completed", "answered", 42)
    assert call.answered_at == start + dt.timedelta(seconds=6)
    assert call.ended_at == start + dt.timedelta(seconds=48)
    assert call.recording_sid == result.recording_sid
    assert call.recording_url is not None and call.recording_url.endswith(str(result.recording_sid))
    async with world.database.sessions() as db:
        kept = list(
            await db.scalars(
                select(CarrierEvent).where(CarrierEvent.provider_call_id == result.call_sid)
            )
        )
    assert len(kept) == 7 and all(e.applied_at is not None for e in kept)


async def test_a_missed_simulated_call(simulated_world: World) -> None:
    world = simulated_world
    urls = f"{world.public_url}/telephony/twilio"
    result = await ring(
        carrier_client(world),
        voice_url=f"{urls}/voice",
        status_url=f"{urls}/status",
        to=world.source.e164,
        from_=CALLER,
        script=CallScript(answer="no-answer"),
    )
    call = await world.call(result.call_sid)
    assert call is not None and result.whisper is None
    assert (call.status, call.outcome, call.duration_s, call.answered_at) == (
        "no-answer",
        "missed",
        0,
        None,
    )
    assert call.recording_url is None and call.method == "source-number"


async def test_simulated_requests_need_the_simulated_token(simulated_world: World) -> None:
    world = simulated_world
    forged = SimulatedCarrierClient("another-secret", client_poster(world.client, world.public_url))
    result = await ring(
        forged,
        voice_url=f"{world.public_url}/telephony/twilio/voice",
        status_url=None,
        to=world.pool.e164,
        from_=CALLER,
    )
    assert result.voice_status == 403 and await world.call(result.call_sid) is None


# ---------------------------------------------------------------------------------------------
# Callbacks (advisor ↔ visitor)


async def add_user(
    world: World, role: str, email: str | None = None, phone: str | None = None
) -> User:
    async with world.database.begin() as db:
        account = await db.get(Account, world.site.account_id)
        assert account is not None
        user = await create_user(
            db, account, email or f"{secrets.token_hex(4)}@velos.test", PASSWORD, role, world.clock
        )
        user.phone_e164 = phone
        return user


def basic(email: str, password: str = PASSWORD) -> dict[str, str]:
    token = base64.b64encode(f"{email}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


@pytest.fixture
async def live_world(aiohttp_client: ClientFactory, database: Database, database_url: str) -> World:
    """A server on a known port whose public URL is itself: the carrier's legs reach it."""
    port = free_port()
    public_url = f"http://127.0.0.1:{port}"
    clock = FrozenClock(dt.datetime(2026, 3, 2, 10, 0, tzinfo=dt.UTC))
    app = telephony_app(database_url, clock, public_url=public_url)
    client = await aiohttp_client(app, server_kwargs={"port": port})
    return await build_world(
        database, client, clock, provider="simulated", public_url=public_url,
        token=simulated_auth_token(SECRET),
    )  # fmt: skip


async def test_a_callback_rings_the_advisor_then_the_visitor(live_world: World) -> None:
    world = live_world
    advisor = await add_user(world, "advisor", phone="+33612345678")
    visitor = "06 98 76 54 32"
    response = await world.client.post(
        "/api/calls/callback",
        json={"session_id": world.session.id, "visitor_phone": visitor},
        headers=basic(advisor.email),
    )
    assert response.status == 202, await response.text()
    body = await response.json()
    assert body["provider"] == "simulated" and body["session_id"] == world.session.id

    carrier = world.client.app[appkeys.CARRIER]
    assert isinstance(carrier, SimulatedTelephony)
    await carrier.calls.wait()
    assert carrier.calls.placed[0]["first"] == "+33612345678"
    async with world.database.sessions() as db:
        call = await db.get(Call, body["call_id"])
    assert call is not None
    assert call.provider_call_id == carrier.calls.placed[0]["sid"]
    assert (call.direction, call.method, call.confidence) == ("outbound", "callback", 1.0)
    assert (call.caller_e164, call.forwarded_to_e164) == ("+33698765432", "+33612345678")
    # Both parties see the tracking number the visitor's session holds.
    assert call.tracking_e164 == world.pool.e164
    assert (call.session_id, call.channel, call.source) == (
        world.session.id,
        "Paid Search",
        "google",
    )
    assert (call.status, call.outcome, call.duration_s) == ("completed", "answered", 42)
    assert call.answered_at is not None and call.twiml is not None
    # Dialling a visitor's number is an action on personal data: audited (found by an audit).
    from tracker.models import AuditEntry

    async with world.database.sessions() as db:
        entry = await db.scalar(
            select(AuditEntry).where(AuditEntry.action == "api.callback_placed")
        )
    assert entry is not None and entry.user_id == advisor.id
    assert entry.target == f"call:{call.id}" and entry.ip_truncated is not None
    assert "+33698765432" in call.twiml and "Rappel d'un visiteur" in call.twiml


async def test_callback_authentication_roles_and_tenants(live_world: World) -> None:
    world = live_world
    advisor = await add_user(world, "advisor")
    marketer = await add_user(world, "marketer")
    request = {"session_id": world.session.id, "visitor_phone": "+33698765432"}
    cases = [
        ({}, request, 401),
        (basic(advisor.email, "wrong password!"), request, 401),
        (basic("nobody@velos.test"), request, 401),
        ({"Authorization": "Basic !!!"}, request, 401),
        (basic(marketer.email), request, 403),
        # No advisor_phone and none on the user.
        (basic(advisor.email), request, 400),
        (basic(advisor.email), {**request, "advisor_phone": "12"}, 400),
        (basic(advisor.email), {"visitor_phone": "+33698765432"}, 400),
        (basic(advisor.email), {**request, "session_id": "0" * 32}, 404),
    ]
    for headers, body, status in cases:
        response = await world.client.post("/api/calls/callback", json=body, headers=headers)
        assert response.status == status, (headers, body, await response.text())
        assert "error" in await response.json()

    # An advisor of another account cannot call this site's visitors.
    async with world.database.begin() as db:
        from tracker.sites import get_or_create_account

        other = await get_or_create_account(db, f"other-{secrets.token_hex(4)}", world.clock)
        stranger = await create_user(
            db, other, f"{secrets.token_hex(4)}@other.test", PASSWORD, "admin", world.clock
        )
    response = await world.client.post(
        "/api/calls/callback",
        json={**request, "advisor_phone": "+33612345678"},
        headers=basic(stranger.email),
    )
    assert response.status == 404
    response = await world.client.post(
        "/api/calls/callback",
        json={"site_key": world.site.site_key, "visitor_phone": "+33698765432",
              "advisor_phone": "+33612345678"},
        headers=basic(stranger.email),
    )  # fmt: skip
    assert response.status == 404


class RefusingCarrier:
    name = "twilio"

    async def place_bridged_call(self, **kwargs: str) -> PlacedCall:
        raise CarrierError("Twilio refused the request: unverified caller id (code 21210)")


async def test_a_refused_callback_is_stored_as_failed(live_world: World) -> None:
    world = live_world
    advisor = await add_user(world, "admin", phone="+33612345678")
    with pytest.raises(ApiError) as refused:
        await place_callback(
            world.database,
            RefusingCarrier(),  # type: ignore[arg-type]
            advisor,
            CallbackRequest(visitor_phone="+33698765432", site_key=world.site.site_key),
            public_url=world.public_url,
            clock=world.clock,
        )
    assert refused.value.status == 502 and "21210" in refused.value.message
    async with world.database.sessions() as db:
        call = await db.scalar(
            select(Call).where(Call.site_id == world.site.id, Call.direction == "outbound")
        )
    assert call is not None and (call.status, call.outcome) == ("failed", "failed")
    # Without a session nor a number of this carrier, both parties see the business number.
    assert call.tracking_e164 == BUSINESS and call.session_id is None


# ---------------------------------------------------------------------------------------------
# CLI


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser()
    commands = root.add_subparsers(dest="command", required=True)
    numbers = commands.add_parser("numbers").add_subparsers(dest="numbers_command", required=True)
    telephony_cli.register_numbers_commands(numbers)
    telephony_cli.register(commands)
    return root


async def run_cli(settings: Any, *argv: str) -> int:
    args = parser().parse_args(list(argv))
    return int(await args.handler(args, settings))


async def test_cli_simulate_call_then_calls_list(
    aiohttp_client: ClientFactory,
    database: Database,
    database_url: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # The CLI serves the webhooks in its own process with the system clock: a live lease now.
    clock = FrozenClock(dt.datetime.now(dt.UTC))
    client = await aiohttp_client(telephony_app(database_url, clock))
    world = await build_world(database, client, clock, provider="simulated")
    settings = client.app[appkeys.SETTINGS]
    status = await run_cli(
        settings, "simulate", "call", "--to", world.pool.e164, "--from", CALLER, "--in-process"
    )
    assert status == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["dialed"] == BUSINESS and "Google Ads" in shown["whisper"]
    assert shown["call"]["session_id"] == world.session.id

    assert await run_cli(settings, "calls", "list", "--site", world.site.site_key, "--json") == 0
    calls = json.loads(capsys.readouterr().out)
    assert len(calls) == 1
    assert tuple(calls[0]) == telephony_cli.CALL_FIELDS
    call = calls[0]
    assert call["provider_call_id"] == shown["call_sid"]
    assert (call["caller"], call["tracking_number"]) == (CALLER, world.pool.e164)
    assert (call["status"], call["outcome"], call["duration"]) == ("completed", "answered", 42)
    assert (call["channel"], call["source"], call["medium"], call["campaign"]) == (
        "Paid Search",
        "google",
        "cpc",
        "ete",
    )
    assert (call["method"], call["confidence"], call["recording_url"]) == (
        "pool-session",
        1.0,
        None,
    )
    assert call["answered_at"] and call["ended_at"] and call["started_at"]

    # No server at the public URL: a clear one-line error, exit status 2.
    assert await run_cli(settings, "simulate", "call", "--to", world.pool.e164, "--from", CALLER,
                         "--server", f"http://127.0.0.1:{free_port()}") == 2  # fmt: skip
    assert "no Calltrack server answers" in capsys.readouterr().err


async def test_cli_simulate_call_rings_a_server_on_another_port(
    aiohttp_client: ClientFactory,
    database: Database,
    database_url: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`serve --port 8099` without CALLTRACK_PUBLIC_URL checks signatures against its own
    address: `simulate call --server` signs for the server it names, and says why when the
    server refuses the signature."""
    import dataclasses

    from tracker.config import DEFAULT_PUBLIC_URL

    clock = FrozenClock()
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    app = telephony_app(database_url, clock, public_url=base)
    client = await aiohttp_client(app, server_kwargs={"port": port})
    world = await build_world(database, client, clock, provider="simulated")
    # What a shell without CALLTRACK_PUBLIC_URL reads.
    monkeypatch.delenv("CALLTRACK_PUBLIC_URL", raising=False)
    shell = dataclasses.replace(client.app[appkeys.SETTINGS], public_url=DEFAULT_PUBLIC_URL)
    argv = ("simulate", "call", "--to", world.pool.e164, "--from", CALLER, "--server", base)
    assert await run_cli(shell, *argv) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["voice_status"] == 200 and shown["call"]["session_id"] == world.session.id

    # A shell configured for another public URL signs for it: refused, and told why.
    monkeypatch.setenv("CALLTRACK_PUBLIC_URL", "https://elsewhere.example")
    elsewhere = dataclasses.replace(shell, public_url="https://elsewhere.example")
    assert await run_cli(elsewhere, *argv) == 1
    printed = capsys.readouterr()
    assert json.loads(printed.out)["voice_status"] == 403
    assert "refused the carrier's signature" in printed.err
    assert "CALLTRACK_SECRET_KEY and CALLTRACK_PUBLIC_URL" in printed.err


async def test_cli_buys_and_imports_simulated_numbers(
    aiohttp_client: ClientFactory,
    database: Database,
    database_url: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    clock = FrozenClock()
    client = await aiohttp_client(telephony_app(database_url, clock))
    world = await build_world(database, client, clock, provider="simulated")
    settings = client.app[appkeys.SETTINGS]
    site = world.site.site_key
    assert await run_cli(settings, "numbers", "buy", "--site", site, "--count", "2", "--json") == 0
    bought = json.loads(capsys.readouterr().out)
    assert len(bought) == 2 and len({n["e164"] for n in bought}) == 2
    for number in bought:
        assert number["provider"] == "simulated" and number["kind"] == "pool"
        assert number["e164"].startswith("+3319900")
        assert number["voice_url"] == f"{world.public_url}/telephony/twilio/voice"
        assert number["status_url"] == f"{world.public_url}/telephony/twilio/status"

    number = random_e164()
    status = await run_cli(
        settings, "numbers", "import", "--site", site, "--provider", "simulated",
        "--number", number, "--kind", "source", "--rule-type", "utm_source",
        "--rule-value", "newsletter",
    )  # fmt: skip
    assert status == 0
    imported = json.loads(capsys.readouterr().out)
    assert (imported["e164"], imported["kind"]) == (number, "source")
    assert imported["voice_url"] == f"{world.public_url}/telephony/twilio/voice"

    assert await run_cli(settings, "numbers", "import", "--site", site, "--number", "12") == 2
    assert "invalid_phone" in capsys.readouterr().err

    # Released through the carrier it came from.
    async with world.database.sessions() as db:
        from tracker.models import TrackingNumber

        row = await db.scalar(select(TrackingNumber).where(TrackingNumber.e164 == number))
    assert row is not None
    carrier = create_carrier(settings, row.provider)
    await carrier.release(ProvisionedNumber(row.e164, row.provider, row.provider_sid))
    await close_carrier(carrier)


async def test_the_simulated_carrier_records_the_webhooks_it_was_given() -> None:
    from support.app import make_settings

    from telephony.carrier_factory import close_carrier, create_carrier

    carrier = create_carrier(make_settings("sqlite+aiosqlite:///:memory:"), "simulated")
    hooks = WebhookUrls("https://ct.example.eu/v", "https://ct.example.eu/s")
    (e164,) = await carrier.search_available("FR", 1)
    bought = await carrier.buy(e164, hooks)
    assert (bought.voice_url, bought.status_url) == (hooks.voice_url, hooks.status_url)
    await carrier.release(ProvisionedNumber(e164, "simulated", bought.provider_sid))
    await close_carrier(carrier)


async def test_the_bridge_dials_the_visitor_even_before_the_carrier_id_is_stored(
    simulated_world: World,
) -> None:
    world = simulated_world
    advisor = await add_user(world, "advisor", phone="+33612345678")
    async with world.database.begin() as db:
        call = await prepare_callback(
            db,
            advisor,
            CallbackRequest(visitor_phone="+33698765432", session_id=world.session.id),
            "simulated",
            world.clock.now(),
        )
    assert call.provider_call_id.startswith("pending-")
    advisor_leg = new_call_sid()
    params = {"CallSid": advisor_leg, "CallStatus": "in-progress", "To": "+33612345678"}
    response = await world.post(f"/telephony/twilio/bridge?call={call.id}", params)
    assert response.status == 200
    root = ET.fromstring(await response.text())
    say, dial = root.find("Say"), root.find("Dial")
    assert say is not None and say.get("language") == "fr-FR"
    assert dial is not None and dial.get("callerId") == world.pool.e164
    assert dial.get("record") == "record-from-answer-dual"
    number = dial.find("Number")
    assert number is not None and number.text == "+33698765432"
    # The visitor hears the recording notice when they answer.
    assert number.get("url") == f"{world.public_url}/telephony/twilio/whisper?call={advisor_leg}"
    notice = await world.post(
        f"/telephony/twilio/whisper?call={advisor_leg}",
        {"CallSid": new_call_sid(), "ParentCallSid": advisor_leg},
    )
    assert "susceptible d'être enregistré" in await notice.text()
    async with world.database.sessions() as db:
        stored = await db.get(Call, call.id)
    assert stored is not None and stored.provider_call_id == advisor_leg

    unknown = await world.post("/telephony/twilio/bridge?call=999999999", params)
    assert ET.fromstring(await unknown.text()).find("Hangup") is not None


async def test_posting_to_a_worker_drops_the_public_urls_path_prefix(
    aiohttp_server: Any,
) -> None:
    """Behind a proxy that serves Calltrack under /ct, `simulate call --server` posted to
    /ct/telephony/... on the worker itself: a 404 (found by an audit)."""
    import aiohttp
    from aiohttp import web

    from telephony.simulate import http_poster

    seen: list[str] = []

    async def record(request: web.Request) -> web.Response:
        seen.append(request.path_qs)
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_post("/{tail:.*}", record)
    server = await aiohttp_server(app)
    worker = f"http://127.0.0.1:{server.port}"
    async with aiohttp.ClientSession() as session:
        post = http_poster(session, worker, "https://pub.example:8443/ct")
        assert await post("https://pub.example:8443/ct/telephony/twilio/voice?x=1", b"", {}) == (
            200,
            "ok",
        )
        plain = http_poster(session, worker, "https://pub.example")
        await plain("https://pub.example/telephony/twilio/status", b"", {})
    assert seen == ["/telephony/twilio/voice?x=1", "/telephony/twilio/status"]
