"""Erasure, table by table: a person seeded across every table and Redis leaves nothing behind.

`seed_person` is also used by the other privacy tests: one visitor with two visits (pages,
cart, a tracking-number lease held in the Redis pool), a call attributed to the first visit
(recording, carrier callbacks), a callback request from the second visit, audit entries that
name them, a webhook delivery carrying their number, a restriction, an exclusion entry and an
export archive; plus a bystander whose data must survive.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import phonenumbers
import pytest
from redis.asyncio import Redis
from sqlalchemy import func, select
from support.numbers import random_e164

import dashboard.models_registry  # noqa: F401  (every model, for the table scan)
from dashboard.hub.redis import RedisHub
from tracker.audit import audit
from tracker.clock import FrozenClock
from tracker.db import Database
from tracker.models import (
    Base,
    BusinessNumber,
    Call,
    CarrierEvent,
    Cart,
    ContactRequest,
    ExclusionEntry,
    Lease,
    Pageview,
    Site,
    TrackedSession,
    TrackingNumber,
    WebhookDelivery,
    WebhookEndpoint,
)
from tracker.numbers.pool import HeldLease, PoolSnapshot, RedisNumberPool, pool_key
from tracker.phones import phone_forms
from tracker.privacy.erase import erase_person, tell_consoles
from tracker.privacy.exclusion import add_exclusion
from tracker.privacy.export import export_person
from tracker.privacy.find import Person, Scope, SubjectQuery, find_person
from tracker.privacy.hashing import subject_hash, subject_ref
from tracker.privacy.inventory import TABLES, unclassified
from tracker.privacy.restrict import restrict_person
from tracker.sites import SiteSpec, create_site, get_or_create_account

SECRET = "test-secret-key-" + "x" * 32
NOW = dt.datetime(2026, 3, 2, 10, 0, tzinfo=dt.UTC)
PHONE = "+33612345678"
OTHER_PHONE = "+33698765432"


@dataclass
class Seeded:
    site: Site
    account_id: int
    visitor_id: str
    session_ids: list[str]
    bystander_session: str
    call_id: int
    call_sid: str
    bystander_call_id: int
    request_id: int
    number_id: int
    business_id: int

    @property
    def scope(self) -> Scope:
        return Scope(self.account_id, (self.site.id,), "FR")


def random_mobile() -> str:
    """A French mobile number (E.164) that no other test uses: scans search every table."""
    while True:
        # Not every +336 range is allocated (06 9x is not): draw until phonenumbers agrees.
        number = "+336" + "".join(secrets.choice("0123456789") for _ in range(8))
        if phonenumbers.is_valid_number(phonenumbers.parse(number)):
            return number


async def seed_person(
    database: Database,
    *,
    phone: str = PHONE,
    now: dt.datetime = NOW,
    consent_mode: str = "required",
    with_privacy_rows: bool = True,
    export_dir: Path | None = None,
) -> Seeded:
    """Put one person in every table that can hold them, and a bystander next to them."""
    visitor = secrets.token_hex(16)
    sessions = [secrets.token_hex(16), secrets.token_hex(16)]
    bystander = secrets.token_hex(16)
    call_sid = "CA" + secrets.token_hex(16)
    clock = FrozenClock(now)
    async with database.begin() as db:
        account = await get_or_create_account(db, f"privacy-{secrets.token_hex(4)}", clock)
        site = await create_site(
            db,
            account,
            SiteSpec("Vélos Martin", "velos-martin.fr", "+33 1 23 45 67 89", "FR",
                     consent_mode=consent_mode),
            clock,
        )  # fmt: skip
        business_id = await db.scalar(
            select(BusinessNumber.id).where(BusinessNumber.site_id == site.id)
        )
        number = TrackingNumber(
            site_id=site.id, business_number_id=business_id,
            e164=random_e164(),
            provider="simulated", kind="pool", state="active", created_at=now,
        )  # fmt: skip
        db.add(number)
        for index, session_id in enumerate([*sessions, bystander]):
            db.add(
                TrackedSession(
                    id=session_id, site_id=site.id,
                    visitor_id=visitor if session_id != bystander else secrets.token_hex(16),
                    consent=True, started_at=now - dt.timedelta(days=3 - index),
                    last_seen_at=now - dt.timedelta(days=3 - index, minutes=-20),
                    landing_url="https://velos-martin.fr/?utm_source=google&utm_medium=cpc",
                    channel="Paid Search", source="google", medium="cpc",
                    ip_truncated="203.0.113.0", country="FR", city="Lyon",
                    browser="Chrome", device="desktop", pageview_count=2,
                )
            )  # fmt: skip
        await db.flush()
        for session_id in [*sessions, bystander]:
            for page in range(2):
                db.add(
                    Pageview(
                        site_id=site.id, session_id=session_id, page_id=secrets.token_hex(8),
                        url=f"https://velos-martin.fr/p/{page}", title=f"Page {page}",
                        viewed_at=now - dt.timedelta(days=2, minutes=page),
                    )
                )  # fmt: skip
        db.add(Cart(session_id=sessions[0], site_id=site.id, updated_at=now,
                    items=[{"name": "Gravel", "sku": "G1", "qty": 1, "price": "1290.00"}],
                    item_count=1))  # fmt: skip
        lease = Lease(
            site_id=site.id, tracking_number_id=number.id, session_id=sessions[0],
            started_at=now - dt.timedelta(days=2), last_seen_at=now - dt.timedelta(days=2),
            hold_until=now + dt.timedelta(minutes=30),
        )  # fmt: skip
        db.add(lease)
        await db.flush()
        call = Call(
            site_id=site.id, provider="simulated", provider_call_id=call_sid,
            caller_e164=phone, caller_country="FR", caller_region="Lyon",
            tracking_number_id=number.id, tracking_e164=number.e164,
            forwarded_to_e164="+33123456789", started_at=now - dt.timedelta(days=2),
            status="completed", outcome="answered", duration_s=95,
            recording_sid="RE" + secrets.token_hex(16),
            recording_url=f"https://api.twilio.com/Recordings/{call_sid}",
            recording_duration_s=90, session_id=sessions[0], lease_id=lease.id,
            channel="Paid Search", source="google", medium="cpc", method="pool-session",
            confidence=1.0, twiml=f"<Response><Dial><Number url='/w?call={call_sid}'/></Dial></Response>",
        )  # fmt: skip
        other = Call(
            site_id=site.id, provider="simulated", provider_call_id="CA" + secrets.token_hex(16),
            caller_e164=OTHER_PHONE, tracking_e164=number.e164, started_at=now,
            session_id=bystander, channel="Direct", method="pool-session", confidence=1.0,
        )  # fmt: skip
        db.add_all([call, other])
        await db.flush()
        db.add(CarrierEvent(provider="simulated", provider_call_id=call_sid, kind="status",
                            params={"CallSid": call_sid, "From": phone, "To": number.e164},
                            received_at=now))  # fmt: skip
        request = ContactRequest(site_id=site.id, session_id=sessions[1], phone_e164=phone,
                                 message="Rappelez-moi avant midi", created_at=now)  # fmt: skip
        db.add(request)
        await db.flush()
        await audit(db, action="console.visitor_view", at=now, actor="advisor@velos-martin.fr",
                    account_id=account.id, target=f"sessions:{sessions[0]}")  # fmt: skip
        await audit(db, action="console.call_view", at=now, actor="advisor@velos-martin.fr",
                    account_id=account.id, target=f"calls:{call.id}",
                    caller=phone_forms(phone).national, records={"calls": [str(call.id)]})  # fmt: skip
        await audit(db, action="privacy.find", at=now, actor="dpo@velos-martin.fr",
                    account_id=account.id,
                    subject=subject_ref(SECRET, account.id, "phone", phone))  # fmt: skip
        await audit(db, action="auth.login", at=now, actor="advisor@velos-martin.fr",
                    account_id=account.id)  # fmt: skip
        endpoint = WebhookEndpoint(account_id=account.id, url="https://crm.velos-martin.fr/hook",
                                   secret=secrets.token_hex(16), created_at=now)  # fmt: skip
        db.add(endpoint)
        await db.flush()
        db.add(WebhookDelivery(
            endpoint_id=endpoint.id, account_id=account.id, event_id=secrets.token_hex(8),
            event_type="call.completed", dedupe_key=f"call:{call.id}", status="delivered",
            body=json.dumps({"caller": phone, "session": sessions[0]}),
            created_at=now, next_attempt_at=now,
        ))  # fmt: skip
        seeded = Seeded(
            site=site, account_id=account.id, visitor_id=visitor, session_ids=sessions,
            bystander_session=bystander, call_id=call.id, call_sid=call_sid,
            bystander_call_id=other.id, request_id=request.id, number_id=number.id,
            business_id=int(business_id or 0),
        )  # fmt: skip
        if with_privacy_rows:
            person = await find_person(db, seeded.scope, SubjectQuery("phone", phone), SECRET)
            await restrict_person(db, person, actor="dpo@velos-martin.fr", now=now)
            await add_exclusion(db, account.id, SubjectQuery("visitor", visitor),
                                secret_key=SECRET, actor="dpo@velos-martin.fr", now=now)  # fmt: skip
            if export_dir is not None:
                await export_person(db, person, directory=export_dir, secret_key=SECRET,
                                    actor="dpo@velos-martin.fr", now=now)  # fmt: skip
    return seeded


def identifying_tokens(seeded: Seeded, phone: str = PHONE) -> set[str]:
    """Every string that would still identify the person."""
    forms = phone_forms(phone)
    tokens = {phone, forms.national, forms.international, forms.national_digits, seeded.call_sid}
    tokens |= {seeded.visitor_id, *seeded.session_ids}
    for kind, value in (("phone", phone), ("visitor", seeded.visitor_id),
                        *(("session", s) for s in seeded.session_ids)):  # fmt: skip
        tokens.add(subject_hash(SECRET, seeded.account_id, kind, value))
    return tokens


async def scan_database(database: Database, tokens: set[str]) -> dict[str, list[str]]:
    """Read every row of every table; return, per table, the tokens found in it."""
    found: dict[str, list[str]] = {}
    async with database.sessions() as db:
        for table in Base.metadata.sorted_tables:
            rows = (await db.execute(select(table))).all()
            text = "\n".join(json.dumps(list(row), default=str, ensure_ascii=False) for row in rows)
            hits = sorted(token for token in tokens if token in text)
            if hits:
                found[table.name] = hits
    return found


async def scan_redis(redis: Redis, prefix: str, tokens: set[str]) -> list[str]:
    """Dump every key under the prefix; return the keys whose name or content names the person."""
    hits = []
    async for key in redis.scan_iter(match=f"{prefix}*"):
        raw_kind = await redis.type(key)
        kind = raw_kind.decode() if isinstance(raw_kind, bytes) else str(raw_kind)
        if kind == "string":
            content: Any = await redis.get(key)
        elif kind == "hash":
            content = await redis.hgetall(key)
        elif kind == "zset":
            content = await redis.zrange(key, 0, -1, withscores=True)
        elif kind == "set":
            content = await redis.smembers(key)
        elif kind == "list":
            content = await redis.lrange(key, 0, -1)
        elif kind == "stream":
            content = await redis.xrange(key)
        else:
            content = await redis.dump(key)
        text = repr(key) + repr(content)
        if any(token in text for token in tokens):
            hits.append(key.decode() if isinstance(key, bytes) else str(key))
    return hits


@pytest.fixture
async def redis_pool(
    redis_url: str, redis_prefix: str
) -> AsyncIterator[tuple[Redis, RedisNumberPool]]:
    client = Redis.from_url(redis_url)
    yield client, RedisNumberPool(client, redis_prefix)
    keys = [key async for key in client.scan_iter(match=f"{redis_prefix}*")]
    if keys:
        await client.delete(*keys)
    await client.aclose()


def test_every_table_is_classified() -> None:
    """A new table must say what erasure does with it (tracker.privacy.inventory)."""
    assert unclassified(list(Base.metadata.tables)) == []
    assert set(TABLES) >= set(Person.TABLES)


async def test_erasure_leaves_nothing_identifying_in_any_table_or_redis(
    database: Database,
    redis_pool: tuple[Redis, RedisNumberPool],
    redis_prefix: str,
    tmp_path: Path,
) -> None:
    redis, pool = redis_pool
    phone = random_mobile()
    seeded = await seed_person(database, phone=phone, export_dir=tmp_path)
    key = pool_key(seeded.site.id, seeded.business_id)
    await pool.load(key, PoolSnapshot(free={}, held=[HeldLease(seeded.number_id,
                    seeded.session_ids[0], NOW + dt.timedelta(minutes=30))]), NOW)  # fmt: skip
    tokens = identifying_tokens(seeded, phone)
    # The live hub's recent events: the person's page and ringing call, and a bystander's page.
    hub = RedisHub(redis, redis_prefix, FrozenClock(NOW))
    at = NOW.isoformat()
    for data in ({"session": {"id": seeded.session_ids[0]}, "page": {"url": "https://v.fr/"}},
                 {"call": {"caller": phone, "session_id": seeded.session_ids[1]}},
                 {"session": {"id": seeded.bystander_session}}):  # fmt: skip
        await hub.publish(seeded.site.id, "visitor.pageview", at, json.dumps(data))
    before = await scan_database(database, tokens)
    assert {"sessions", "pageviews", "leases", "calls", "carrier_events", "contact_requests",
            "audit_log", "webhook_deliveries", "privacy_restrictions",
            "privacy_exclusions"} <= set(before)  # fmt: skip
    assert hub.stream_key(seeded.site.id) in await scan_redis(redis, redis_prefix, tokens)
    assert len(await asyncio.to_thread(lambda: list(tmp_path.iterdir()))) == 1

    async with database.begin() as db:
        person = await find_person(db, seeded.scope, SubjectQuery("phone", phone), SECRET)
        assert person.session_ids == set(seeded.session_ids)
        report = await erase_person(db, person, secret_key=SECRET, export_dir=tmp_path, now=NOW,
                                    pool=pool, drop_exclusion=True, hub=hub)  # fmt: skip

    assert report.live_events_deleted == 2
    await tell_consoles(hub, report, NOW)
    kept = await hub.read_after(seeded.site.id, "0-0")
    # The bystander's page stays, and consoles are told to resync, without a name.
    assert [(e.kind, json.loads(e.data)) for e in kept.events] == [
        ("visitor.pageview", {"session": {"id": seeded.bystander_session}}),
        ("visitor.erased", {}),
    ]
    assert report.tables["sessions"] == {"deleted": 2}
    assert report.tables["pageviews"] == {"deleted": 4}
    assert report.tables["carts"] == {"deleted": 1}
    assert report.tables["leases"] == {"deleted": 1}
    assert report.tables["calls"] == {"anonymised": 1}
    assert report.tables["carrier_events"] == {"deleted": 1}
    assert report.tables["contact_requests"] == {"deleted": 1}
    assert report.tables["webhook_deliveries"] == {"deleted": 1}
    assert report.tables["privacy_restrictions"] == {"deleted": 4}
    assert report.tables["privacy_exclusions"] == {"deleted": 1}
    assert report.tables["privacy_exports"] == {"deleted": 1}
    assert report.tables["audit_log"] == {"scrubbed": 3}
    assert report.redis_released == 1 and report.files_deleted == 1

    assert await scan_database(database, tokens) == {}
    assert await scan_redis(redis, redis_prefix, tokens) == []
    assert await asyncio.to_thread(lambda: list(tmp_path.iterdir())) == []

    async with database.sessions() as db:
        call = await db.get(Call, seeded.call_id)
        assert call is not None
        # Still counted in "Paid Search: N calls", linked to nobody.
        assert (call.channel, call.duration_s, call.outcome) == ("Paid Search", 95, "answered")
        assert call.caller_e164 is None and call.session_id is None
        assert call.recording_sid is None and call.recording_url is None
        bystander = await db.get(Call, seeded.bystander_call_id)
        assert bystander is not None and bystander.caller_e164 == OTHER_PHONE
        assert await db.get(TrackedSession, seeded.bystander_session) is not None
        pages = await db.scalar(
            select(func.count()).where(Pageview.session_id == seeded.bystander_session)
        )
        assert pages == 2
        actions = list(await db.scalars(
            select(func.count()).select_from(Call).where(Call.site_id == seeded.site.id)
        ))  # fmt: skip
        assert actions == [2]


async def test_erasure_is_idempotent_and_keeps_the_objection(
    database: Database, tmp_path: Path
) -> None:
    phone = random_mobile()
    seeded = await seed_person(database, phone=phone)
    async with database.begin() as db:
        person = await find_person(db, seeded.scope, SubjectQuery("visitor", seeded.visitor_id),
                                   SECRET)  # fmt: skip
        first = await erase_person(db, person, secret_key=SECRET, export_dir=tmp_path, now=NOW)
    assert first.tables["privacy_exclusions"] == {"kept": 1}
    assert first.tables["calls"] == {"anonymised": 1}
    remaining = await scan_database(database, identifying_tokens(seeded, phone))
    # Only the keyed hash that keeps the visitor untracked remains.
    assert remaining == {"privacy_exclusions": [subject_hash(SECRET, seeded.account_id,
                                                             "visitor", seeded.visitor_id)]}  # fmt: skip

    async with database.begin() as db:
        again = await find_person(db, seeded.scope, SubjectQuery("visitor", seeded.visitor_id),
                                  SECRET)  # fmt: skip
        second = await erase_person(db, again, secret_key=SECRET, export_dir=tmp_path, now=NOW)
    assert not again.found
    assert second.total == 0
    async with database.begin() as db:
        by_phone = await find_person(db, seeded.scope, SubjectQuery("phone", phone), SECRET)
        assert not by_phone.found and by_phone.counts()["calls"] == 0
        exclusions = await db.scalar(
            select(func.count()).where(ExclusionEntry.account_id == seeded.account_id)
        )
        assert exclusions == 1


async def test_a_doubtful_attribution_does_not_make_two_people_one(database: Database) -> None:
    seeded = await seed_person(database, with_privacy_rows=False)
    async with database.begin() as db:
        # An overflow lease: the call may have come from someone else looking at the number.
        shared = Call(
            site_id=seeded.site.id, provider="simulated", provider_call_id="CA" + secrets.token_hex(16),
            caller_e164="+33611112222", tracking_e164="+33970000000", started_at=NOW,
            session_id=seeded.session_ids[0], channel="Paid Search", method="overflow",
            confidence=0.45,
        )  # fmt: skip
        db.add(shared)
        await db.flush()
        person = await find_person(db, seeded.scope, SubjectQuery("phone", PHONE), SECRET)
        assert shared.id not in {c.id for c in person.calls}
        assert "+33611112222" not in person.phones
        await erase_person(db, person, secret_key=SECRET, export_dir=Path("/nonexistent"), now=NOW)
    async with database.sessions() as db:
        kept = await db.get(Call, shared.id)
        # Someone else's call keeps its number; only its link to the erased visit goes.
        assert kept is not None and kept.caller_e164 == "+33611112222" and kept.session_id is None
