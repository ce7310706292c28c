"""The voice webhook: signatures, public-URL reconstruction, attribution, TwiML, idempotency.

Requests are signed with twilio's own `RequestValidator` over the public URL, with Twilio's
exact parameter names, on SQLite and PostgreSQL.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import secrets
import xml.etree.ElementTree as ET
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from sqlalchemy import func, select
from support.app import make_settings
from support.numbers import random_e164
from twilio.request_validator import RequestValidator

from dashboard.app import create_app
from telephony.calls import drain_call_listeners
from telephony.signature import simulated_auth_token
from tracker.clock import FrozenClock
from tracker.db import Database
from tracker.models import (
    BusinessNumber,
    Call,
    CarrierEvent,
    Lease,
    Site,
    TrackedSession,
    TrackingNumber,
)
from tracker.sites import SiteSpec, create_site, get_or_create_account

ClientFactory = Callable[..., Awaitable[TestClient[Any, Any]]]
TWILIO_SID = "AC" + "1" * 32
TWILIO_TOKEN = "test-twilio-auth-token-0123456789"
PUBLIC_URL = "https://ct.example.eu"
SECRET = "test-secret-key-" + "x" * 32
START = dt.datetime(2026, 3, 2, 10, 0, tzinfo=dt.UTC)
BUSINESS = "+33123456789"
CALLER = "+33142685300"


def call_sid() -> str:
    return "CA" + secrets.token_hex(16)


def sign(url: str, params: dict[str, str], token: str = TWILIO_TOKEN) -> str:
    return str(RequestValidator(token).compute_signature(url, params))


def voice_params(to: str, sid: str | None = None, caller: str = CALLER) -> dict[str, str]:
    """What Twilio posts to a voice URL (https://www.twilio.com/docs/voice/twiml#request-parameters)."""
    return {
        "AccountSid": TWILIO_SID,
        "ApiVersion": "2010-04-01",
        "CallSid": sid or call_sid(),
        "CallStatus": "ringing",
        "Called": to,
        "CalledCountry": "FR",
        "Caller": caller,
        "CallerCountry": "FR",
        "Direction": "inbound",
        "From": caller,
        "FromCountry": "FR",
        "To": to,
        "ToCountry": "FR",
    }


@dataclass
class World:
    """A site with a pool number held by a Google Ads visit, a source number and more."""

    client: TestClient[Any, Any]
    database: Database
    clock: FrozenClock
    site: Site
    pool: TrackingNumber
    idle_pool: TrackingNumber
    source: TrackingNumber
    session: TrackedSession
    public_url: str = PUBLIC_URL
    token: str = TWILIO_TOKEN

    async def post(
        self,
        path_qs: str,
        params: dict[str, str],
        *,
        token: str | None = None,
        signature: str | None = None,
        signed_url: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> Any:
        """POST a form signed as the carrier signs it: over the public URL it called."""
        url = signed_url or self.public_url + path_qs
        sig = signature if signature is not None else sign(url, params, token or self.token)
        all_headers = {"X-Twilio-Signature": sig, **(headers or {})}
        if signature == "":
            all_headers.pop("X-Twilio-Signature")
        return await self.client.post(path_qs, data=params, headers=all_headers)

    async def voice(self, to: str, sid: str | None = None, **kwargs: Any) -> tuple[int, str]:
        params = voice_params(to, sid, **kwargs)
        response = await self.post("/telephony/twilio/voice", params)
        return response.status, await response.text()

    async def call(self, sid: str) -> Call | None:
        async with self.database.sessions() as db:
            return await db.scalar(select(Call).where(Call.provider_call_id == sid))


async def build_world(
    database: Database,
    client: TestClient[Any, Any],
    clock: FrozenClock,
    *,
    provider: str = "twilio",
    record_calls: bool = False,
    public_url: str = PUBLIC_URL,
    token: str = TWILIO_TOKEN,
) -> World:
    """Create the site, its numbers, a Paid Search session and its live lease."""
    now = clock.now()
    async with database.begin() as db:
        account = await get_or_create_account(db, f"acct-{secrets.token_hex(4)}", clock)
        site = await create_site(
            db,
            account,
            SiteSpec(name="Vélos Martin", domain="velos-martin.fr", phone=BUSINESS, country="FR"),
            clock,
        )
        site.record_calls = record_calls
        business_id = await db.scalar(
            select(BusinessNumber.id).where(BusinessNumber.site_id == site.id)
        )

        def number(kind: str, **extra: Any) -> TrackingNumber:
            row = TrackingNumber(
                site_id=site.id,
                business_number_id=business_id,
                e164=random_e164(),
                provider=provider,
                provider_sid="PN" + secrets.token_hex(16),
                kind=kind,
                state="active",
                created_at=now,
                **extra,
            )
            db.add(row)
            return row

        pool = number("pool")
        idle_pool = number("pool")
        source = number("source", rule_type="channel", rule_value="Organic Social")
        session = TrackedSession(
            id=secrets.token_hex(16),
            site_id=site.id,
            started_at=now - dt.timedelta(minutes=3),
            last_seen_at=now - dt.timedelta(minutes=1),
            landing_url="https://velos-martin.fr/?utm_source=google&utm_medium=cpc&utm_campaign=ete",
            channel="Paid Search",
            source="google",
            medium="cpc",
            campaign="ete",
            term="velo gravel",
        )
        db.add(session)
        await db.flush()
        db.add(
            Lease(
                site_id=site.id,
                tracking_number_id=pool.id,
                session_id=session.id,
                started_at=now - dt.timedelta(minutes=3),
                last_seen_at=now - dt.timedelta(minutes=1),
                hold_until=now + dt.timedelta(minutes=29),
            )
        )
    return World(client, database, clock, site, pool, idle_pool, source, session, public_url, token)


@pytest.fixture
def clock() -> FrozenClock:
    return FrozenClock(START)


def telephony_app(database_url: str, clock: FrozenClock, **overrides: Any) -> web.Application:
    values: dict[str, Any] = {
        "public_url": PUBLIC_URL,
        "twilio_account_sid": TWILIO_SID,
        "twilio_auth_token": TWILIO_TOKEN,
        "secret_key": SECRET,
        "carrier": "simulated",
    }
    values.update(overrides)
    return create_app(make_settings(database_url, **values), clock=clock)


@pytest.fixture
async def world(
    aiohttp_client: ClientFactory, database: Database, database_url: str, clock: FrozenClock
) -> World:
    client = await aiohttp_client(telephony_app(database_url, clock))
    return await build_world(database, client, clock)


def dial_of(twiml: str) -> ET.Element:
    dial = ET.fromstring(twiml).find("Dial")
    assert dial is not None, twiml
    return dial


async def test_pool_call_is_attributed_to_the_session_holding_the_number(world: World) -> None:
    sid = call_sid()
    status, twiml = await world.voice(world.pool.e164, sid)
    assert status == 200
    dial = dial_of(twiml)
    assert dial.get("answerOnBridge") == "true"
    assert dial.get("action") == f"{PUBLIC_URL}/telephony/twilio/dial"
    number = dial.find("Number")
    assert number is not None and number.text == BUSINESS
    assert number.get("url") == f"{PUBLIC_URL}/telephony/twilio/whisper?call={sid}"
    assert number.get("statusCallback") == f"{PUBLIC_URL}/telephony/twilio/status"
    assert number.get("statusCallbackEvent") == "initiated ringing answered completed"
    # Calls are not recorded by default: no notice, no recording.
    assert "Say" not in twiml and dial.get("record") is None

    call = await world.call(sid)
    assert call is not None
    assert (call.method, call.confidence) == ("pool-session", 1.0)
    assert call.session_id == world.session.id
    assert (call.channel, call.source, call.medium, call.campaign, call.term) == (
        "Paid Search",
        "google",
        "cpc",
        "ete",
        "velo gravel",
    )
    assert call.tracking_number_id == world.pool.id and call.tracking_e164 == world.pool.e164
    assert call.forwarded_to_e164 == BUSINESS
    assert (call.caller_e164, call.caller_country, call.caller_region) == (CALLER, "FR", "Paris")
    assert call.first_time_caller is True
    assert call.direction == "inbound" and call.status == "ringing"
    assert call.started_at == START and call.twiml == twiml

    world.clock.advance(minutes=2)
    again = call_sid()
    assert (await world.voice(world.pool.e164, again))[0] == 200
    repeat = await world.call(again)
    assert repeat is not None and repeat.first_time_caller is False


async def test_a_retried_webhook_gets_the_same_twiml_and_no_second_call(world: World) -> None:
    sid = call_sid()
    first = await world.voice(world.pool.e164, sid)
    world.clock.advance(seconds=5)
    second = await world.voice(world.pool.e164, sid)
    assert first == second and first[0] == 200
    async with world.database.sessions() as db:
        count = await db.scalar(select(func.count()).where(Call.provider_call_id == sid))
    assert count == 1


async def test_concurrent_first_deliveries_store_one_call(world: World) -> None:
    sid = call_sid()
    answers = await asyncio.gather(*(world.voice(world.pool.e164, sid) for _ in range(4)))
    assert {status for status, _ in answers} == {200}
    assert len({twiml for _, twiml in answers}) == 1
    async with world.database.sessions() as db:
        count = await db.scalar(select(func.count()).where(Call.provider_call_id == sid))
    assert count == 1


@pytest.mark.parametrize(
    "case",
    ["missing", "wrong", "other_token", "tampered", "signed_for_another_path"],
)
async def test_forged_signatures_are_refused_with_403(world: World, case: str) -> None:
    sid = call_sid()
    params = voice_params(world.pool.e164, sid)
    path = "/telephony/twilio/voice"
    if case == "missing":
        response = await world.post(path, params, signature="")
    elif case == "wrong":
        response = await world.post(path, params, signature="bm90IGEgc2lnbmF0dXJl")
    elif case == "other_token":
        response = await world.post(path, params, token="another-account-token")
    elif case == "tampered":
        signature = sign(PUBLIC_URL + path, params)
        response = await world.post(path, {**params, "From": "+33600000000"}, signature=signature)
    else:
        # Signed for another path: a signature is only good for the URL it was made for.
        signature = sign(PUBLIC_URL + "/telephony/twilio/status", params)
        response = await world.post(path, params, signature=signature)
    assert response.status == 403
    body = await response.json()
    assert body["error"]["code"] == "invalid_signature"
    assert await world.call(sid) is None


async def test_both_twilio_tokens_sign_during_a_rotation(
    aiohttp_client: ClientFactory, database: Database, database_url: str, clock: FrozenClock
) -> None:
    """CALLTRACK_TWILIO_AUTH_TOKEN_SECONDARY is accepted too, and only for Twilio's numbers."""
    app = telephony_app(database_url, clock, twilio_auth_token_secondary="rotated-token")
    world = await build_world(database, await aiohttp_client(app), clock)
    for token in (TWILIO_TOKEN, "rotated-token"):
        sid = call_sid()
        params = voice_params(world.pool.e164, sid)
        response = await world.post("/telephony/twilio/voice", params, token=token)
        assert response.status == 200, await response.text()
        call = await world.call(sid)
        assert call is not None and call.session_id == world.session.id
    forged = await world.post(
        "/telephony/twilio/voice", voice_params(world.pool.e164), token="a-third-token"
    )
    assert forged.status == 403


@pytest.mark.parametrize(
    "public_url",
    [
        "https://ct.example.eu",  # TLS terminated by the proxy: the worker sees plain HTTP
        "http://ct.example.eu:8443",  # a non-default port is part of what Twilio signs
        "https://example.eu/calltrack",  # a path prefix the proxy strips
    ],
)
async def test_the_public_url_is_rebuilt_behind_a_proxy(
    aiohttp_client: ClientFactory,
    database: Database,
    database_url: str,
    clock: FrozenClock,
    public_url: str,
) -> None:
    client = await aiohttp_client(telephony_app(database_url, clock, public_url=public_url))
    world = await build_world(database, client, clock, public_url=public_url)
    sid = call_sid()
    params = voice_params(world.pool.e164, sid)
    proxy_headers = {"X-Forwarded-Proto": "https", "X-Forwarded-Host": "evil.example"}
    response = await world.post("/telephony/twilio/voice", params, headers=proxy_headers)
    assert response.status == 200, await response.text()
    # The URL the worker itself saw (http://127.0.0.1:port/...) is not what Twilio signed.
    local_url = str(client.make_url("/telephony/twilio/voice"))
    response = await world.post(
        "/telephony/twilio/voice", voice_params(world.pool.e164), signed_url=local_url
    )
    assert response.status == 403
    # A query string is signed exactly as sent, and a callback with one validates too.
    query_path = f"/telephony/twilio/whisper?call={sid}"
    response = await world.post(query_path, {"CallSid": call_sid(), "ParentCallSid": sid})
    assert response.status == 200
    assert "Appel Google Ads" in await response.text()
    response = await world.post(
        query_path,
        {"CallSid": call_sid()},
        signed_url=public_url + f"/telephony/twilio/whisper?call={call_sid()}",
    )
    assert response.status == 403


async def test_recording_notice_whisper_and_recording_in_the_site_language(
    aiohttp_client: ClientFactory, database: Database, database_url: str, clock: FrozenClock
) -> None:
    client = await aiohttp_client(telephony_app(database_url, clock))
    world = await build_world(database, client, clock, record_calls=True)
    sid = call_sid()
    status, twiml = await world.voice(world.pool.e164, sid)
    assert status == 200
    root = ET.fromstring(twiml)
    say = root.find("Say")
    assert say is not None and say.get("language") == "fr-FR"
    assert say.text == "Cet appel est susceptible d'être enregistré."
    assert [child.tag for child in root] == ["Say", "Dial"]
    dial = dial_of(twiml)
    assert dial.get("record") == "record-from-answer-dual"
    assert dial.get("recordingStatusCallback") == f"{PUBLIC_URL}/telephony/twilio/recording"
    whisper_url = dial.find("Number").get("url")  # type: ignore[union-attr]
    assert whisper_url is not None
    response = await world.post(
        whisper_url.removeprefix(PUBLIC_URL),
        {"CallSid": call_sid(), "ParentCallSid": sid, "CallStatus": "in-progress"},
    )
    whisper = ET.fromstring(await response.text()).find("Say")
    assert whisper is not None and whisper.text == "Appel Google Ads"
    assert whisper.get("language") == "fr-FR"


async def test_a_source_number_credits_its_rule_not_a_session(world: World) -> None:
    sid = call_sid()
    status, twiml = await world.voice(world.source.e164, sid)
    assert status == 200 and dial_of(twiml).find("Number").text == BUSINESS  # type: ignore[union-attr]
    call = await world.call(sid)
    assert call is not None
    assert (call.method, call.confidence, call.session_id) == ("source-number", 0.9, None)
    assert call.channel == "Organic Social"


@pytest.mark.parametrize(
    ("rule_type", "value", "channel", "source", "whisper"),
    [
        # GA4 on the source alone: reports count the call in a channel, not with the
        # unattributed ones (found by an audit), and the whisper names the source.
        ("utm_source", "newsletter", "Unassigned", "newsletter", "Appel newsletter"),
        ("utm_source", "facebook", "Organic Social", "facebook", "Appel réseaux sociaux"),
        ("landing_param", "promo=tv", "Direct", "tv", "Appel tv"),
    ],
)
def test_a_source_number_of_a_utm_or_landing_rule_has_a_channel(
    rule_type: str, value: str, channel: str, source: str, whisper: str
) -> None:
    from telephony.attribution import source_rule_attribution
    from telephony.twiml import whisper_phrase

    site = Site(domain="velos-martin.fr", language="fr")
    number = TrackingNumber(kind="source", rule_type=rule_type, rule_value=value)
    found = source_rule_attribution(site, number)
    assert (found.method, found.channel, found.source) == ("source-number", channel, source)
    assert whisper_phrase(found.channel, found.source, "fr", say_source=True).startswith(whisper)
    # A visit's own source (whatever its link said) is never read out.
    assert "newsletter" not in whisper_phrase("Unassigned", "newsletter", "fr")


async def test_a_pool_number_without_lease_is_forwarded_unattributed(world: World) -> None:
    sid = call_sid()
    status, twiml = await world.voice(world.idle_pool.e164, sid)
    assert status == 200 and dial_of(twiml).find("Number").text == BUSINESS  # type: ignore[union-attr]
    call = await world.call(sid)
    assert call is not None
    assert (call.method, call.confidence) == ("unattributed", 0.0)
    assert call.unattributed_reason == "no lease at call time"
    assert call.session_id is None and call.channel is None


async def test_confidence_decreases_with_inactivity_then_late_callers_fade_out(
    world: World,
) -> None:
    # Last activity 17.5 minutes before the call, hold 30 minutes: halfway from 5 to 30.
    world.clock.advance(minutes=16, seconds=30)
    sid = call_sid()
    await world.voice(world.pool.e164, sid)
    call = await world.call(sid)
    assert call is not None and call.method == "pool-session"
    assert call.confidence == pytest.approx(0.8)
    # A day after the hold, nobody was given the number since: its last holder still gets the
    # call, with the end-of-hold confidence halved.
    world.clock.advance(minutes=13, hours=24)
    late = call_sid()
    await world.voice(world.pool.e164, late)
    called_back = await world.call(late)
    assert called_back is not None and called_back.method == "pool-session"
    assert called_back.session_id == world.session.id
    assert called_back.confidence == pytest.approx(0.3, abs=0.01)
    world.clock.advance(days=7)  # beyond the week a late caller is credited for
    too_late = call_sid()
    await world.voice(world.pool.e164, too_late)
    expired = await world.call(too_late)
    assert expired is not None and expired.unattributed_reason == "no lease at call time"


@pytest.mark.parametrize("erased", [False, True])
async def test_a_number_taken_back_from_a_visit_is_never_credited_to_it(
    world: World, erased: bool
) -> None:
    """The lease was ended, not run out: the visitor withdrew consent (or the number went to
    another visit by overflow, and that visit was erased since). The call was credited to the
    visit at 0.6 (found by an audit): its hold had not even passed."""
    from sqlalchemy import delete

    now = world.clock.now()
    async with world.database.begin() as db:
        lease = await db.scalar(select(Lease).where(Lease.session_id == world.session.id))
        assert lease is not None
        lease.ended_at = now
        if erased:
            other = TrackedSession(id=secrets.token_hex(16), site_id=world.site.id,
                                   started_at=now, last_seen_at=now,
                                   landing_url="https://velos-martin.fr/", channel="Direct")  # fmt: skip
            db.add(other)
            await db.flush()
            db.add(Lease(site_id=world.site.id, tracking_number_id=world.pool.id,
                         session_id=other.id, started_at=now, last_seen_at=now,
                         hold_until=now + dt.timedelta(minutes=30), overflow=True))  # fmt: skip
            await db.flush()
            await db.execute(delete(Lease).where(Lease.session_id == other.id))
            await db.execute(delete(TrackedSession).where(TrackedSession.id == other.id))
    for later in (dt.timedelta(minutes=2), dt.timedelta(hours=3)):
        world.clock.advance(seconds=later.total_seconds())
        sid = call_sid()
        await world.voice(world.pool.e164, sid)
        call = await world.call(sid)
        assert call is not None and call.session_id is None, later
        assert call.method == "unattributed"


async def test_an_overflow_lease_is_attributed_with_lower_confidence(world: World) -> None:
    now = world.clock.now()
    async with world.database.begin() as db:
        other = TrackedSession(
            id=secrets.token_hex(16),
            site_id=world.site.id,
            started_at=now,
            last_seen_at=now,
            landing_url="https://velos-martin.fr/",
            channel="Organic Search",
            source="google",
            medium="organic",
        )
        db.add(other)
        await db.flush()
        previous = await db.scalar(select(Lease).where(Lease.session_id == world.session.id))
        assert previous is not None
        previous.ended_at = now
        db.add(
            Lease(
                site_id=world.site.id,
                tracking_number_id=world.pool.id,
                session_id=other.id,
                started_at=now,
                last_seen_at=now,
                hold_until=now + dt.timedelta(minutes=30),
                overflow=True,
            )
        )
    world.clock.advance(seconds=30)
    sid = call_sid()
    await world.voice(world.pool.e164, sid)
    call = await world.call(sid)
    assert call is not None
    assert (call.method, call.confidence, call.session_id) == ("overflow", 0.5, other.id)
    assert call.channel == "Organic Search"


async def test_an_unknown_number_gets_a_polite_apology_and_a_logged_event(world: World) -> None:
    sid = call_sid()
    unknown = random_e164()
    status, twiml = await world.voice(unknown, sid)
    assert status == 200
    root = ET.fromstring(twiml)
    say = root.find("Say")
    assert say is not None and say.get("language") == "fr-FR" and "désolés" in (say.text or "")
    assert root.find("Hangup") is not None
    assert await world.call(sid) is None
    async with world.database.sessions() as db:
        event = await db.scalar(select(CarrierEvent).where(CarrierEvent.provider_call_id == sid))
    assert event is not None and event.kind == "unknown-number" and event.params["To"] == unknown


async def test_a_released_number_still_reaches_the_business_line(world: World) -> None:
    async with world.database.begin() as db:
        number = await db.get(TrackingNumber, world.idle_pool.id)
        assert number is not None
        number.state = "released"
    sid = call_sid()
    status, twiml = await world.voice(world.idle_pool.e164, sid)
    assert status == 200 and dial_of(twiml).find("Number").text == BUSINESS  # type: ignore[union-attr]
    call = await world.call(sid)
    assert call is not None and call.unattributed_reason == "number not in pool"


async def test_a_number_of_another_carrier_is_not_attributed(world: World) -> None:
    # Signed by the simulated carrier, for a number bought from Twilio: the simulated
    # carrier does not own it; the site is known, so the caller still reaches it.
    sid = call_sid()
    params = voice_params(world.pool.e164, sid)
    response = await world.post(
        "/telephony/twilio/voice", params, token=simulated_auth_token(SECRET)
    )
    assert response.status == 200
    dial = dial_of(await response.text())
    assert dial.text == BUSINESS and dial.find("Number") is None
    async with world.database.sessions() as db:
        call = await db.scalar(select(Call).where(Call.provider_call_id == sid))
    assert call is not None and call.provider == "simulated"
    assert (call.method, call.unattributed_reason) == ("unattributed", "unknown number")


async def test_an_anonymous_caller_is_kept_without_a_number(world: World) -> None:
    sid = call_sid()
    status, _ = await world.voice(world.pool.e164, sid, caller="anonymous")
    assert status == 200
    call = await world.call(sid)
    assert call is not None and call.caller_e164 is None and call.caller_country is None
    assert call.session_id == world.session.id


@pytest.mark.parametrize(
    "params",
    [
        {"To": "+33123456789"},
        {"CallSid": "CA-not-a-sid", "To": "+33123456789"},
        {"CallSid": "CA" + "0" * 32},
        {"CallSid": "CA" + "0" * 32, "To": "+33" + "1" * 2000},
    ],
    ids=["no-callsid", "bad-callsid", "no-to", "too-long"],
)
async def test_malformed_voice_parameters_are_refused_with_400(
    world: World, params: dict[str, str]
) -> None:
    response = await world.post("/telephony/twilio/voice", params)
    assert response.status == 400
    assert (await response.json())["error"]["code"] == "invalid_parameters"


async def test_garbage_bodies_never_cause_a_500(world: World) -> None:
    path = "/telephony/twilio/voice"
    for body, content_type in [
        (b"\xff\xfe\x00garbage", "application/x-www-form-urlencoded"),
        (b'{"CallSid": "CA1"}', "application/json"),
        (b"", "application/x-www-form-urlencoded"),
    ]:
        response = await world.client.post(
            path,
            data=body,
            headers={"Content-Type": content_type, "X-Twilio-Signature": "x"},
        )
        assert response.status in (400, 403), await response.text()


async def test_call_listeners_hear_new_calls_and_cannot_break_them(
    aiohttp_client: ClientFactory, database: Database, database_url: str, clock: FrozenClock
) -> None:
    app = telephony_app(database_url, clock)
    heard: list[tuple[str, str | None]] = []

    async def listener(_app: web.Application, call: Call) -> None:
        heard.append((call.provider_call_id, call.session_id))

    async def broken(_app: web.Application, call: Call) -> None:
        raise RuntimeError("console is down")

    from tracker import appkeys

    app[appkeys.EXTRAS]["call_listeners"] = [broken, listener]
    client = await aiohttp_client(app)
    world = await build_world(database, client, clock)
    sid = call_sid()
    status, _ = await world.voice(world.pool.e164, sid)
    assert status == 200
    await drain_call_listeners(app)
    assert heard == [(sid, world.session.id)]


async def test_the_carrier_gets_its_answer_before_slow_listeners_finish_in_order_per_call(
    aiohttp_client: ClientFactory, database: Database, database_url: str, clock: FrozenClock
) -> None:
    """Twilio waits while the caller hears silence: listeners run after the answer, but each
    call's notifications still reach a listener in the order the carrier sent them."""
    app = telephony_app(database_url, clock)
    release = asyncio.Event()
    heard: list[tuple[str, str]] = []

    async def slow(_app: web.Application, call: Call) -> None:
        if call.status == "ringing":
            await release.wait()  # a console or a webhook receiver that is slow right now
        heard.append((call.provider_call_id, call.status))

    from tracker import appkeys

    app[appkeys.EXTRAS]["call_listeners"] = [slow]
    client = await aiohttp_client(app)
    world = await build_world(database, client, clock)
    sid = call_sid()
    status, twiml = await asyncio.wait_for(world.voice(world.pool.e164, sid), 10)
    assert status == 200 and "<Dial" in twiml
    ended = {"AccountSid": TWILIO_SID, "CallSid": sid, "CallStatus": "completed",
             "CallDuration": "12", "SequenceNumber": "2"}  # fmt: skip
    answer = await asyncio.wait_for(world.post("/telephony/twilio/status", ended), 10)
    assert answer.status == 204
    await asyncio.sleep(0.05)
    assert heard == []  # the "completed" notification waits for the call's "ringing" one
    release.set()
    await drain_call_listeners(app)
    assert heard == [(sid, "ringing"), (sid, "completed")]
