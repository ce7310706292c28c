"""The exclusion list: an excluded visitor is not tracked at all; an excluded caller's call is
forwarded to the merchant but leaves no trace (no call, no carrier event, no console event)."""

from __future__ import annotations

import datetime as dt
import json
import secrets
import xml.etree.ElementTree as ET
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestClient
from sqlalchemy import func, select
from support.app import make_settings
from support.numbers import random_e164
from test_privacy_erase import SECRET, random_mobile, scan_database
from twilio.request_validator import RequestValidator

from dashboard.app import create_app
from telephony.calls import drain_call_listeners
from tracker import appkeys
from tracker.clock import FrozenClock
from tracker.db import Database
from tracker.models import (
    BusinessNumber,
    Call,
    CarrierEvent,
    ExclusionEntry,
    Pageview,
    Site,
    TrackedSession,
    TrackingNumber,
)
from tracker.phones import phone_forms
from tracker.privacy.exclusion import add_exclusion, exclusion_hash, is_excluded
from tracker.privacy.find import SubjectQuery, parse_subject
from tracker.privacy.hashing import subject_hash
from tracker.sites import SiteSpec, create_site, get_or_create_account

ClientFactory = Callable[..., Awaitable[TestClient[Any, Any]]]
START = dt.datetime(2026, 3, 2, 10, 0, tzinfo=dt.UTC)
PUBLIC_URL = "https://ct.example.eu"
TWILIO_SID = "AC" + "2" * 32
TWILIO_TOKEN = "test-twilio-auth-token-exclusions"
BUSINESS = "+33123456789"
CHROME = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/126.0.0.0 Safari/537.36"
)


async def new_site(database: Database, consent_mode: str = "not_required") -> Site:
    async with database.begin() as db:
        account = await get_or_create_account(db, f"excl-{secrets.token_hex(4)}", FrozenClock())
        return await create_site(
            db,
            account,
            SiteSpec("Vélos Martin", "velos-martin.fr", BUSINESS, "FR", consent_mode=consent_mode),
            FrozenClock(START),
        )


async def exclude(database: Database, site: Site, kind: str, value: str) -> None:
    async with database.begin() as db:
        query = parse_subject(kind, value, "FR")
        await add_exclusion(
            db, site.account_id, query, secret_key=SECRET, actor="dpo@x.fr", now=START
        )


async def send(client: TestClient[Any, Any], site: Site, visitor: str | None, **fields: Any) -> Any:
    body = {"k": site.site_key, "t": "pageview", "p": secrets.token_hex(8), "v": visitor,
            "u": "https://velos-martin.fr/", "c": True, **fields}  # fmt: skip
    return await client.post(
        "/collect",
        data=json.dumps(body),
        headers={"Content-Type": "text/plain", "User-Agent": CHROME, "X-Forwarded-For": "203.0.113.9"},
    )  # fmt: skip


async def sessions_of(database: Database, visitor: str) -> int:
    async with database.sessions() as db:
        return int(
            await db.scalar(select(func.count()).where(TrackedSession.visitor_id == visitor)) or 0
        )


async def test_the_list_holds_keyed_hashes_never_the_identifiers(database: Database) -> None:
    site = await new_site(database)
    await exclude(database, site, "phone", "06 12 34 56 78")
    async with database.sessions() as db:
        entry = await db.scalar(
            select(ExclusionEntry).where(ExclusionEntry.account_id == site.account_id)
        )
        assert entry is not None and entry.kind == "phone"
        assert entry.key_hash == subject_hash(SECRET, site.account_id, "phone", "+33612345678")
        assert "612345678" not in entry.key_hash
        # Another written form of the same number is the same entry.
        assert await is_excluded(
            db, site.account_id, parse_subject("phone", "+33 6 12 34 56 78", "FR"), SECRET
        )
        # Another account, or another secret, gives an unrelated hash.
        query = SubjectQuery("phone", "+33612345678")
        assert exclusion_hash(SECRET, site.account_id + 1, query) != entry.key_hash
        assert exclusion_hash("another-secret", site.account_id, query) != entry.key_hash
    await exclude(database, site, "phone", "0612345678")
    async with database.sessions() as db:
        count = await db.scalar(
            select(func.count()).where(ExclusionEntry.account_id == site.account_id)
        )
        assert count == 1  # idempotent  # fmt: skip


async def test_an_excluded_visitor_is_not_tracked_at_all(
    aiohttp_client: ClientFactory, database_url: str, database: Database
) -> None:
    clock = FrozenClock(START)
    client = await aiohttp_client(create_app(make_settings(database_url), clock=clock))
    site = await new_site(database)
    excluded, welcome = secrets.token_hex(16), secrets.token_hex(16)
    await exclude(database, site, "visitor", excluded)

    refused = await send(client, site, excluded)
    assert refused.status == 204 and refused.headers["Access-Control-Allow-Origin"] == "*"
    cart = {"items": [{"name": "Vélo", "qty": 1, "price": 500}], "total": 500, "currency": "EUR"}
    assert (await send(client, site, excluded, t="cart", cart=cart)).status == 204
    accepted = await send(client, site, welcome)
    assert accepted.status == 200
    assert await sessions_of(database, excluded) == 0
    assert await sessions_of(database, welcome) == 1
    assert await scan_database(database, {excluded}) == {}


async def test_an_excluded_visitors_visit_is_not_tracked_without_its_visitor_id(
    aiohttp_client: ClientFactory, database_url: str, database: Database
) -> None:
    """The page goes on with its visit's id and no `v` (consent withdrawn on it): the visit
    was tracked on, and the answer even handed the visitor id back (found by an audit)."""
    clock = FrozenClock(START)
    client = await aiohttp_client(create_app(make_settings(database_url), clock=clock))
    site = await new_site(database)
    visitor = secrets.token_hex(16)
    reply = await send(client, site, visitor)
    assert reply.status == 200
    session_id = (await reply.json())["s"]
    await exclude(database, site, "visitor", visitor)
    client.server.app[appkeys.EXCLUSIONS].invalidate()
    for fields in (
        {"t": "pageview"},
        {"t": "ping", "d": 5000},
        {"t": "cart", "cart": {"total": 9}},
    ):
        later = await send(client, site, None, s=session_id, c=None, **fields)
        assert later.status == 204, fields
    async with database.sessions() as db:
        pages = await db.scalar(select(func.count()).where(Pageview.session_id == session_id))
    assert pages == 1


async def test_another_workers_exclusion_applies_within_the_cache_ttl(
    aiohttp_client: ClientFactory, database_url: str, database: Database
) -> None:
    clock = FrozenClock(START)
    client = await aiohttp_client(create_app(make_settings(database_url), clock=clock))
    site = await new_site(database)
    visitor = secrets.token_hex(16)
    assert (await send(client, site, visitor)).status == 200
    # Excluded through another process (the CLI): this worker's cache still says no entry...
    await exclude(database, site, "visitor", visitor)
    assert (await send(client, site, visitor)).status == 200
    clock.advance(seconds=31)
    # ...for at most 30 seconds.
    assert (await send(client, site, visitor)).status == 204


def sign(url: str, params: dict[str, str]) -> str:
    return str(RequestValidator(TWILIO_TOKEN).compute_signature(url, params))


async def telephony_setup(
    aiohttp_client: ClientFactory, database_url: str, database: Database
) -> tuple[TestClient[Any, Any], Site, TrackingNumber, list[Any]]:
    settings = make_settings(
        database_url,
        public_url=PUBLIC_URL,
        twilio_account_sid=TWILIO_SID,
        twilio_auth_token=TWILIO_TOKEN,
        secret_key=SECRET,
        carrier="simulated",
    )
    app = create_app(settings, clock=FrozenClock(START))
    seen: list[Any] = []

    async def listener(app: web.Application, call: Call) -> None:
        seen.append(call)

    app[appkeys.EXTRAS].setdefault("call_listeners", []).append(listener)
    client = await aiohttp_client(app)
    site = await new_site(database)
    async with database.begin() as db:
        business = await db.scalar(
            select(BusinessNumber.id).where(BusinessNumber.site_id == site.id)
        )
        number = TrackingNumber(
            site_id=site.id, business_number_id=business, provider="twilio", kind="pool",
            e164=random_e164(),
            state="active", created_at=START,
        )  # fmt: skip
        db.add(number)
    return client, site, number, seen


async def post_signed(client: TestClient[Any, Any], path: str, params: dict[str, str]) -> Any:
    signature = sign(PUBLIC_URL + path, params)
    return await client.post(path, data=params, headers={"X-Twilio-Signature": signature})


def voice_params(sid: str, caller: str, to: str) -> dict[str, str]:
    return {"AccountSid": TWILIO_SID, "CallSid": sid, "CallStatus": "ringing", "From": caller,
            "Caller": caller, "To": to, "Called": to, "Direction": "inbound"}  # fmt: skip


async def test_an_excluded_callers_call_is_forwarded_but_leaves_no_trace(
    aiohttp_client: ClientFactory, database_url: str, database: Database
) -> None:
    client, site, number, seen = await telephony_setup(aiohttp_client, database_url, database)
    caller = random_mobile()
    # Excluded as the DPO typed it, called as the carrier writes it.
    await exclude(database, site, "phone", phone_forms(caller).national)
    sid = "CA" + secrets.token_hex(16)

    answer = await post_signed(
        client, "/telephony/twilio/voice", voice_params(sid, caller, number.e164)
    )
    assert answer.status == 200
    twiml = await answer.text()
    dial = ET.fromstring(twiml).find("Dial")
    assert dial is not None and (dial.text or "").strip() == BUSINESS
    # Forwarded plainly: no recording, no whisper, no callbacks that would come back to us.
    assert "record" not in twiml.lower() and "whisper" not in twiml and "Say" not in twiml
    assert dial is not None and dial.get("action") is None

    # The number's own status callback still fires when the call ends: dropped as well.
    status = {"AccountSid": TWILIO_SID, "CallSid": sid, "CallStatus": "completed", "From": caller,
              "To": number.e164, "CallDuration": "42", "SequenceNumber": "3"}  # fmt: skip
    assert (await post_signed(client, "/telephony/twilio/status", status)).status == 204

    async with database.sessions() as db:
        assert await db.scalar(select(func.count()).where(Call.provider_call_id == sid)) == 0
        assert (
            await db.scalar(select(func.count()).where(CarrierEvent.provider_call_id == sid)) == 0
        )
    await drain_call_listeners(client.app)
    assert seen == []
    forms = phone_forms(caller)
    assert await scan_database(database, {caller, forms.national, forms.national_digits, sid}) == {}

    # Anybody else is tracked as usual.
    other = "CA" + secrets.token_hex(16)
    answer = await post_signed(
        client, "/telephony/twilio/voice", voice_params(other, "+33611223344", number.e164)
    )
    assert answer.status == 200
    async with database.sessions() as db:
        call = await db.scalar(select(Call).where(Call.provider_call_id == other))
        assert call is not None and call.caller_e164 == "+33611223344"
    await drain_call_listeners(client.app)
    assert len(seen) == 1


async def test_withheld_numbers_are_never_treated_as_excluded(
    aiohttp_client: ClientFactory, database_url: str, database: Database
) -> None:
    client, site, number, _ = await telephony_setup(aiohttp_client, database_url, database)
    await exclude(database, site, "phone", "06 87 65 43 21")
    sid = "CA" + secrets.token_hex(16)
    answer = await post_signed(
        client, "/telephony/twilio/voice", voice_params(sid, "anonymous", number.e164)
    )
    assert answer.status == 200
    async with database.sessions() as db:
        assert await db.scalar(select(func.count()).where(Call.provider_call_id == sid)) == 1
        assert await db.scalar(select(func.count()).where(Pageview.site_id == site.id)) == 0
