"""Dynamic number insertion on SQLite and PostgreSQL: precedence, pools, lease history."""

from __future__ import annotations

import datetime as dt
import secrets
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

import pytest
from sqlalchemy import select

from telephony.carriers.simulated import SimulatedCarrier
from tracker.clock import FrozenClock
from tracker.db import Database
from tracker.errors import ApiError, Conflict, NotFound
from tracker.models import Lease, Site, TrackedSession, TrackingNumber
from tracker.numbers.advise import advise
from tracker.numbers.pool import MemoryNumberPool
from tracker.numbers.rules import parse_rule
from tracker.numbers.service import (
    CACHE_TTL,
    NumberService,
    last_lease_before,
    lease_at,
    leases_at,
)
from tracker.phones import phone_forms
from tracker.sites import SiteSpec, add_business_number, create_site, get_or_create_account

T0 = dt.datetime(2026, 1, 5, 9, 0, tzinfo=dt.UTC)
MAIN = "+33123456789"
AFTER_SALES = "+33145678901"


@pytest.fixture
async def service() -> AsyncIterator[NumberService]:
    numbers = NumberService(MemoryNumberPool(), carrier=SimulatedCarrier())
    yield numbers
    await numbers.aclose()


async def new_site(database: Database, **settings: Any) -> Site:
    clock = FrozenClock(T0)
    async with database.begin() as db:
        account = await get_or_create_account(db, f"dni-{secrets.token_hex(4)}", clock)
        site = await create_site(
            db,
            account,
            SiteSpec(name="Vélos Martin", domain="velos-martin.fr", phone=MAIN, country="FR"),
            clock,
        )
        for name, value in settings.items():
            setattr(site, name, value)
        return site


async def add(database: Database, service: NumberService, site: Site, **options: Any) -> list[str]:
    async with database.begin() as db:
        return [n.e164 for n in await service.add_numbers(db, site, T0, **options)]


def visit(
    site: Site,
    at: dt.datetime = T0,
    *,
    consent: bool = True,
    landing: str = "https://velos-martin.fr/",
    referrer: str | None = None,
    channel: str = "Direct",
) -> TrackedSession:
    return TrackedSession(
        id=secrets.token_hex(16),
        site_id=site.id,
        consent=consent,
        started_at=at,
        last_seen_at=at,
        landing_url=landing,
        referrer=referrer,
        channel=channel,
    )


async def swaps(
    database: Database,
    service: NumberService,
    site: Site,
    session: TrackedSession,
    at: dt.datetime | None = None,
) -> list[dict[str, Any]]:
    """Play one collect event of `session` at `at` and return the `n` entries."""
    async with database.begin() as db:
        stored = await db.get(TrackedSession, session.id)
        if stored is None:
            db.add(session)
            stored = session
        stored.last_seen_at = at or session.started_at
        stored.consent = session.consent
        await db.flush()
        return await service.assign_numbers(db, site, stored, stored.last_seen_at)


def shown(entries: list[dict[str, Any]]) -> list[tuple[str, str, str]]:
    return [(e["from"]["e164"], e["to"]["e164"], e["kind"]) for e in entries]


async def test_precedence_landing_referrer_utm_channel_pool_business(
    database: Database, service: NumberService
) -> None:
    site = await new_site(database)
    pool = await add(database, service, site, count=2)
    (channel,) = await add(database, service, site, rule=parse_rule("channel", "paid social"))
    (utm,) = await add(database, service, site, rule=parse_rule("utm_source", "newsletter"))
    (referrer,) = await add(
        database, service, site, rule=parse_rule("referrer_domain", "lesbonsplans.fr")
    )
    (landing,) = await add(database, service, site, rule=parse_rule("landing_param", "promo=tv"))

    everything: dict[str, Any] = dict(
        landing="https://velos-martin.fr/?promo=TV&utm_source=Newsletter&utm_medium=email",
        referrer="https://bons.lesbonsplans.fr/velos",
        channel="Paid Social",
    )
    cases: list[tuple[dict[str, Any], str]] = [
        (everything, landing),
        ({**everything, "landing": "https://velos-martin.fr/?utm_source=newsletter"}, referrer),
        ({**everything, "referrer": "https://notlesbonsplans.fr/"}, landing),
        (
            {
                **everything,
                "landing": "https://velos-martin.fr/?utm_source=newsletter",
                "referrer": "https://www.google.com/",
            },
            utm,
        ),
        ({"landing": "https://velos-martin.fr/?x=1", "channel": "PAID SOCIAL"}, channel),
    ]
    for facts, expected in cases:
        for consent in (True, False):
            # Source numbers go to everyone matching, with consent or without.
            entries = await swaps(database, service, site, visit(site, consent=consent, **facts))
            assert shown(entries) == [(MAIN, expected, "source")], facts

    with_consent = await swaps(database, service, site, visit(site))
    assert [(f, k) for f, _, k in shown(with_consent)] == [(MAIN, "pool")]
    assert shown(with_consent)[0][1] in pool
    assert await swaps(database, service, site, visit(site, consent=False)) == []

    entry = with_consent[0]
    # With its display forms: the page writes it back in them when a tracking number of
    # another length goes away (an answer with no swaps).
    assert entry["from"] == phone_forms(MAIN).as_snippet(with_display=True)
    assert entry["to"] == phone_forms(entry["to"]["e164"]).as_snippet(with_display=True)
    assert entry["to"]["national"].startswith("01 99 00")


async def test_a_narrower_rule_wins_over_the_rule_it_narrows(
    database: Database, service: NumberService
) -> None:
    site = await new_site(database)
    rule = parse_rule
    (bare,) = await add(database, service, site, rule=rule("landing_param", "code"))
    (spring,) = await add(database, service, site, rule=rule("landing_param", "code=spring"))
    (wide,) = await add(database, service, site, rule=rule("referrer_domain", "example.com"))
    (deals,) = await add(database, service, site, rule=rule("referrer_domain", "deals.example.com"))
    await add(
        database, service, site, rule=rule("landing_param", "ref=partner")
    )  # newer, unrelated
    shop = "https://velos-martin.fr/"
    cases = [
        ({"landing": f"{shop}?code=spring"}, spring),
        ({"landing": f"{shop}?code=autumn"}, bare),
        ({"landing": f"{shop}?code"}, bare),
        # A newer rule on another parameter does not take over the older one's visitors.
        ({"landing": f"{shop}?code=autumn&ref=partner"}, bare),
        ({"landing": f"{shop}?ref=partner&code=spring"}, spring),
        ({"landing": shop, "referrer": "https://deals.example.com/x"}, deals),
        ({"landing": shop, "referrer": "https://m.deals.example.com/x"}, deals),
        ({"landing": shop, "referrer": "https://www.example.com/"}, wide),
    ]
    for facts, expected in cases:
        entries = await swaps(database, service, site, visit(site, consent=False, **facts))
        assert shown(entries) == [(MAIN, expected, "source")], facts


async def test_one_number_per_session_and_none_shared(
    database: Database, service: NumberService
) -> None:
    site = await new_site(database)
    await add(database, service, site, count=3)
    alice, bob = visit(site), visit(site)
    first = shown(await swaps(database, service, site, alice))
    for minutes in (1, 2, 10):
        again = await swaps(database, service, site, alice, T0 + dt.timedelta(minutes=minutes))
        assert shown(again) == first
    other = shown(await swaps(database, service, site, bob, T0 + dt.timedelta(minutes=11)))
    assert other[0][1] != first[0][1]


async def test_each_business_number_has_its_own_pool(
    database: Database, service: NumberService
) -> None:
    site = await new_site(database)
    async with database.begin() as db:
        stored = await db.get(Site, site.id)
        assert stored is not None
        await add_business_number(db, stored, "01 45 67 89 01", "after-sales")
    sales = await add(database, service, site, count=2)
    after_sales = await add(database, service, site, count=2, business_e164=AFTER_SALES)
    (tv,) = await add(
        database,
        service,
        site,
        rule=parse_rule("landing_param", "promo=tv"),
        business_e164=AFTER_SALES,
    )
    # A source number without a business number (its business number was deleted) stands
    # for the primary one.
    async with database.begin() as db:
        (orphan,) = await service.add_numbers(db, site, T0, rule=parse_rule("utm_source", "radio"))
        orphan.business_number_id = None
    service.forget_site(site.id)

    entries = shown(await swaps(database, service, site, visit(site)))
    assert [(f, k) for f, _, k in entries] == [(MAIN, "pool"), (AFTER_SALES, "pool")]
    assert entries[0][1] in sales and entries[1][1] in after_sales

    tv_visit = visit(site, landing="https://velos-martin.fr/?promo=tv")
    entries = shown(await swaps(database, service, site, tv_visit))
    assert entries[0][0] == MAIN and entries[0][1] in sales and entries[0][2] == "pool"
    assert entries[1] == (AFTER_SALES, tv, "source")

    radio = visit(site, consent=False, landing="https://velos-martin.fr/?utm_source=radio")
    assert shown(await swaps(database, service, site, radio)) == [(MAIN, orphan.e164, "source")]


async def _number_id(database: Database, e164: str) -> int:
    async with database.begin() as db:
        number = await db.scalar(select(TrackingNumber).where(TrackingNumber.e164 == e164))
        assert number is not None
        return number.id


async def _business_id(database: Database, e164: str) -> int:
    async with database.begin() as db:
        number = await db.scalar(select(TrackingNumber).where(TrackingNumber.e164 == e164))
        assert number is not None and number.business_number_id is not None
        return number.business_number_id


async def _leases(database: Database, number_id: int) -> list[Lease]:
    async with database.begin() as db:
        rows = await db.scalars(
            select(Lease).where(Lease.tracking_number_id == number_id).order_by(Lease.id)
        )
        return list(rows)


async def test_lease_history_and_lease_at(database: Database, service: NumberService) -> None:
    site = await new_site(database, pool_exhaustion="business")
    (e164,) = await add(database, service, site, count=1)
    number_id = await _number_id(database, e164)
    minute = dt.timedelta(minutes=1)
    alice, bob = visit(site), visit(site, T0 + 50 * minute)

    await swaps(database, service, site, alice)
    (lease,) = await _leases(database, number_id)
    assert (lease.session_id, lease.started_at, lease.last_seen_at, lease.hold_until) == (
        alice.id,
        T0,
        T0,
        T0 + 30 * minute,
    )
    # Activity within a minute is not written; after a minute it is.
    await swaps(database, service, site, alice, T0 + dt.timedelta(seconds=30))
    assert (await _leases(database, number_id))[0].hold_until == T0 + 30 * minute
    await swaps(database, service, site, alice, T0 + 5 * minute)
    (lease,) = await _leases(database, number_id)
    assert (lease.last_seen_at, lease.hold_until) == (T0 + 5 * minute, T0 + 35 * minute)
    # Last activity at 5:50, never written: the row says 35, the pool 35:50.
    await swaps(database, service, site, alice, T0 + 5 * minute + dt.timedelta(seconds=50))
    assert (await _leases(database, number_id))[0].hold_until == T0 + 35 * minute

    # Bob arrives after the hold: the expiry writes the exact end of Alice's hold.
    assert shown(await swaps(database, service, site, bob))[0][1] == e164
    first, second = await _leases(database, number_id)
    assert first.hold_until == T0 + 35 * minute + dt.timedelta(seconds=50)
    assert first.ended_at is None
    assert (second.session_id, second.started_at, second.overflow) == (
        bob.id,
        bob.started_at,
        False,
    )

    async with database.begin() as db:
        found = await lease_at(db, number_id, T0 + 20 * minute)
        assert found is not None and found.session_id == alice.id
        found = await lease_at(db, number_id, T0 + 35 * minute + dt.timedelta(seconds=50))
        assert found is not None and found.session_id == alice.id
        assert await lease_at(db, number_id, T0 + 40 * minute) is None
        assert await lease_at(db, number_id, T0 - minute) is None
        found = await lease_at(db, number_id, T0 + 50 * minute)
        assert found is not None and found.session_id == bob.id
        # After the hold nobody holds the number; the last holder is still known.
        last = await last_lease_before(db, number_id, T0 + 40 * minute)
        assert last is not None and last.session_id == alice.id


async def test_overflow_ends_the_previous_lease(database: Database, service: NumberService) -> None:
    site = await new_site(database)
    (e164,) = await add(database, service, site, count=1)
    number_id = await _number_id(database, e164)
    minute = dt.timedelta(minutes=1)
    alice, bob = visit(site), visit(site, T0 + 10 * minute)
    await swaps(database, service, site, alice)
    assert shown(await swaps(database, service, site, bob))[0][1] == e164
    first, second = await _leases(database, number_id)
    assert (first.session_id, first.ended_at, first.overflow) == (alice.id, T0 + 10 * minute, False)
    assert (second.session_id, second.ended_at, second.overflow) == (bob.id, None, True)
    async with database.begin() as db:
        before = await lease_at(db, number_id, T0 + 10 * minute - dt.timedelta(seconds=1))
        at = await leases_at(db, number_id, T0 + 10 * minute)
        assert before is not None and before.session_id == alice.id
        assert [lease.session_id for lease in at] == [bob.id]


async def test_a_displaced_visit_does_not_displace_the_next(
    database: Database, service: NumberService
) -> None:
    """Overflow gives a new visit the least recently active visitor's number; that visitor,
    on its next heartbeat, sees the business number rather than taking someone else's (which
    rotated every active visitor's number, one heartbeat apart), until a number is free."""
    site = await new_site(database)
    pool = set(await add(database, service, site, count=2))
    minute = dt.timedelta(minutes=1)
    alice, bob = visit(site), visit(site, T0 + minute)
    carol, dave = visit(site, T0 + 2 * minute), visit(site, T0 + 4 * minute)
    alices = shown(await swaps(database, service, site, alice))[0][1]
    bobs = shown(await swaps(database, service, site, bob))[0][1]
    assert {alices, bobs} == pool
    assert shown(await swaps(database, service, site, carol)) == [(MAIN, alices, "pool")]
    assert await swaps(database, service, site, alice, T0 + 3 * minute) == []
    assert shown(await swaps(database, service, site, bob, T0 + 3 * minute))[0][1] == bobs
    carols_ping = T0 + 3 * minute + dt.timedelta(seconds=30)
    assert shown(await swaps(database, service, site, carol, carols_ping))[0][1] == alices
    # A new visit still overflows: bob is now the least recently active.
    assert shown(await swaps(database, service, site, dave))[0][1] == bobs
    assert await swaps(database, service, site, bob, T0 + 5 * minute) == []
    # Once holds end, the displaced visits get numbers again.
    later = T0 + 40 * minute
    assert {
        shown(await swaps(database, service, site, v, later))[0][1] for v in (alice, bob)
    } == pool


async def test_an_overflow_that_could_not_end_the_displaced_lease(
    database: Database, service: NumberService
) -> None:
    """Two workers: a new visit overflowed onto alice's number before alice's lease row was
    committed, so the overflow could not end it and both rows stay open. bob, the later lease,
    holds the number: for attribution, for a pool rebuilt after a Redis restart, and alice's
    next heartbeat does not take another visitor's number in turn (found by an audit: numbers
    changed hands on every heartbeat)."""
    from sqlalchemy import update

    from tracker.numbers.pool import pool_key

    site = await new_site(database)
    pool = set(await add(database, service, site, count=2))
    minute = dt.timedelta(minutes=1)
    alice, carol = visit(site), visit(site, T0 + minute)
    bob = visit(site, T0 + 2 * minute)
    alices = shown(await swaps(database, service, site, alice))[0][1]
    carols = shown(await swaps(database, service, site, carol))[0][1]
    assert {alices, carols} == pool
    assert shown(await swaps(database, service, site, bob))[0][1] == alices
    number_id = await _number_id(database, alices)
    async with database.begin() as db:
        await db.execute(update(Lease).where(Lease.session_id == alice.id).values(ended_at=None))
    async with database.begin() as db:
        holders = await leases_at(db, number_id, T0 + 3 * minute)
    assert [lease.session_id for lease in holders] == [bob.id, alice.id]

    assert await swaps(database, service, site, alice, T0 + 3 * minute) == []
    assert shown(await swaps(database, service, site, carol, T0 + 3 * minute))[0][1] == carols

    # Redis restarted: the rebuilt pool gives alice's old number to bob, not back to alice.
    await service.pool.forget(pool_key(site.id, await _business_id(database, alices)))
    assert await swaps(database, service, site, alice, T0 + 4 * minute) == []
    assert shown(await swaps(database, service, site, bob, T0 + 4 * minute))[0][1] == alices
    assert shown(await swaps(database, service, site, carol, T0 + 4 * minute))[0][1] == carols


async def test_a_rebuilt_pool_overflows_onto_the_least_recently_active_visit(
    database: Database, service: NumberService
) -> None:
    """Rebuilt holds are padded (a row's hold_until may trail the pool by a minute), but stay
    below a new visit's: the padding made every new visit for a minute after a Redis restart
    take the previous new visit's number (found by an audit)."""
    from tracker.numbers.pool import pool_key

    site = await new_site(database)
    pool = set(await add(database, service, site, count=2))
    second = dt.timedelta(seconds=1)
    alice, dave = visit(site), visit(site, T0 + 50 * second)
    alices = shown(await swaps(database, service, site, alice))[0][1]
    daves = shown(await swaps(database, service, site, dave))[0][1]
    assert {alices, daves} == pool
    await service.pool.forget(pool_key(site.id, await _business_id(database, alices)))
    bob, carol = visit(site, T0 + 70 * second), visit(site, T0 + 80 * second)
    assert shown(await swaps(database, service, site, bob))[0][1] == alices
    # dave (last active before the restart) is less recently active than bob.
    assert shown(await swaps(database, service, site, carol))[0][1] == daves
    assert await swaps(database, service, site, dave, T0 + 90 * second) == []
    assert shown(await swaps(database, service, site, bob, T0 + 90 * second))[0][1] == alices


async def test_withdrawn_consent_gives_the_number_back(
    database: Database, service: NumberService
) -> None:
    site = await new_site(database, pool_exhaustion="business")
    (e164,) = await add(database, service, site, count=1)
    number_id = await _number_id(database, e164)
    alice = visit(site)
    assert shown(await swaps(database, service, site, alice))[0][1] == e164
    alice.consent = False
    assert await swaps(database, service, site, alice, T0 + dt.timedelta(minutes=2)) == []
    (lease,) = await _leases(database, number_id)
    assert lease.ended_at == T0 + dt.timedelta(minutes=2)
    bob = visit(site, T0 + dt.timedelta(minutes=3))
    assert shown(await swaps(database, service, site, bob))[0][1] == e164


async def test_release_and_numbers_added_elsewhere(
    database: Database, service: NumberService
) -> None:
    site = await new_site(database, pool_exhaustion="business")
    (first,) = await add(database, service, site, count=1)
    alice = visit(site)
    assert shown(await swaps(database, service, site, alice))[0][1] == first

    # Another process (the CLI) adds a number: workers see it when their cache expires.
    other = NumberService(MemoryNumberPool(), carrier=SimulatedCarrier())
    (second,) = await add(database, other, site, count=1)
    bob = visit(site, T0 + dt.timedelta(seconds=10))
    assert await swaps(database, service, site, bob) == []
    later = T0 + CACHE_TTL + dt.timedelta(minutes=2)
    assert shown(await swaps(database, service, site, bob, later))[0][1] == second

    async with database.begin() as db:
        released = await service.release_number(db, site, first, later)
        assert released.state == "released"
        listed = await service.list_numbers(db, site, later)
        assert [n["e164"] for n in listed] == [second]
        everything = await service.list_numbers(db, site, later, include_released=True)
        assert {n["e164"]: n["state"] for n in everything} == {
            first: "released",
            second: "active",
        }
    (lease,) = await _leases(database, await _number_id(database, first))
    assert lease.ended_at == later
    # Alice's number is gone: she sees the business number.
    assert await swaps(database, service, site, alice, later + dt.timedelta(seconds=1)) == []


async def test_list_numbers_describes_rule_state_holder_and_counts(
    database: Database, service: NumberService
) -> None:
    site = await new_site(database)
    (pool,) = await add(database, service, site, count=1)
    (source,) = await add(database, service, site, rule=parse_rule("referrer_domain", "www.x.fr"))
    alice = visit(site)
    await swaps(database, service, site, alice)
    async with database.begin() as db:
        listed = {n["e164"]: n for n in await service.list_numbers(db, site, T0)}
    assert listed[pool]["kind"] == "pool" and listed[pool]["rule"] is None
    assert listed[pool]["holder"] == alice.id
    assert listed[pool]["leases"] == {"total": 1, "last_30_days": 1, "overflow": 0}
    assert listed[pool]["business_number"] == {"e164": MAIN, "label": "main"}
    assert listed[pool]["provider"] == "simulated"
    assert listed[pool]["provider_sid"].startswith("SIM")
    assert listed[source]["rule"] == {"type": "referrer_domain", "value": "x.fr"}
    assert listed[source]["holder"] is None and listed[source]["state"] == "active"
    assert listed[source]["display"] == phone_forms(source).national


async def test_provisioning_errors(database: Database, service: NumberService) -> None:
    site = await new_site(database)
    with pytest.raises(ApiError) as invalid:
        parse_rule("channel", "Facebook Ads")
    assert invalid.value.code == "invalid_channel"
    with pytest.raises(ApiError) as domain:
        parse_rule("referrer_domain", "not a domain")
    assert domain.value.code == "invalid_rule"
    rule = parse_rule("utm_source", "newsletter")
    await add(database, service, site, rule=rule)
    with pytest.raises(Conflict) as duplicate:
        await add(database, service, site, rule=rule)
    assert duplicate.value.code == "duplicate_rule"
    with pytest.raises(ApiError) as count:
        await add(database, service, site, rule=parse_rule("utm_source", "radio"), count=2)
    assert count.value.code == "invalid_count"
    with pytest.raises(NotFound):
        await add(database, service, site, count=1, business_e164="+33140000000")
    (given,) = await add(database, service, site, e164="09 70 12 34 56")
    assert given == "+33970123456"
    with pytest.raises(Conflict):
        await add(database, service, site, e164="+33970123456")
    no_carrier = NumberService(MemoryNumberPool())
    with pytest.raises(ApiError) as missing:
        await add(database, no_carrier, site, count=1)
    assert missing.value.code == "carrier_unavailable"


async def test_advise_reports_peak_and_the_needed_size(
    database: Database, service: NumberService
) -> None:
    site = await new_site(database)
    await add(database, service, site, count=4)
    now = T0 + dt.timedelta(days=2)
    minute = dt.timedelta(minutes=1)
    async with database.begin() as db:
        # Six visits of 5 minutes, 10 minutes apart, the day before: with the 30-minute hold,
        # four are alive at once at the peak.
        for i in range(6):
            start = T0 + dt.timedelta(days=1) + 10 * i * minute
            session = visit(site, start)
            session.last_seen_at = start + 5 * minute
            db.add(session)
        db.add(visit(site, T0 + dt.timedelta(days=1), consent=False))
        stored = await db.get(Site, site.id)
        assert stored is not None
        report = await advise(db, stored, now, days=30, target=0.95)
    assert report["sessions_with_consent"] == 6
    assert report["peak_concurrent_sessions"] == 4
    assert report["peak_visible_sessions"] == 1
    assert report["pools"][0]["pool_size"] == 4
    assert report["pools"][0]["utilisation"] == 1.0
    assert report["recommended_pool_size"] is not None
    assert 1 <= report["recommended_pool_size"] <= 4
    assert report["rule_of_thumb"]["pool_size"] == 1


async def test_advise_leaves_out_visits_a_source_number_catches(
    database: Database, service: NumberService
) -> None:
    """A Paid Social visitor sees the Paid Social number and takes none from the sales pool:
    the sales pool is sized without them; the after-sales pool, with no rule, with all."""
    site = await new_site(database)
    async with database.begin() as db:
        stored = await db.get(Site, site.id)
        assert stored is not None
        await add_business_number(db, stored, "01 45 67 89 01", "after-sales")
    await add(database, service, site, count=2)
    await add(database, service, site, count=3, business_e164=AFTER_SALES)
    await add(database, service, site, rule=parse_rule("channel", "Paid Social"))
    await add(database, service, site, rule=parse_rule("landing_param", "promo"))
    day = T0 + dt.timedelta(days=1)
    async with database.begin() as db:
        # At the same time: 2 direct visits, 3 from Paid Social, 1 from a promo link.
        for _ in range(2):
            db.add(visit(site, day))
        for _ in range(3):
            db.add(visit(site, day, channel="Paid Social", referrer="https://facebook.com/"))
        db.add(visit(site, day, landing="https://velos-martin.fr/velos?PROMO=x"))
        stored = await db.get(Site, site.id)
        assert stored is not None
        report = await advise(db, stored, T0 + dt.timedelta(days=2), target=0.9)
    sales, after_sales = report["pools"]
    assert report["sessions_with_consent"] == 6
    assert (sales["sessions_wanting_a_number"], sales["sessions_on_source_numbers"]) == (2, 4)
    assert (sales["peak_concurrent_sessions"], sales["utilisation"]) == (2, 1.0)
    assert 1 <= sales["recommended_pool_size"] <= 2
    assert after_sales["sessions_wanting_a_number"] == 6
    assert (after_sales["peak_concurrent_sessions"], after_sales["utilisation"]) == (6, 2.0)
    assert after_sales["recommended_pool_size"] > sales["recommended_pool_size"]
    # Each pool's accuracy at its current size, by business number.
    assert report["accuracy_at_current_sizes"] == {
        MAIN: sales["accuracy_at_current_size"],
        AFTER_SALES: after_sales["accuracy_at_current_size"],
    }
    # The site's own figures are its primary pool's.
    assert report["peak_concurrent_sessions"] == 2
    assert report["recommended_pool_size"] == sales["recommended_pool_size"]
    # The calls drawn in the replay; the traffic is the site's own (no made-up daily volume).
    assert "daily_sessions" not in report["call_model"]
    assert report["call_model"]["call_share"] == 1.0


async def test_numbers_for_session_opens_its_own_transaction(database: Database) -> None:
    """The collector's NumberAssigner: no session passed, a transaction only when needed."""
    service = NumberService(MemoryNumberPool(), database=database, carrier=SimulatedCarrier())
    try:
        site = await new_site(database)
        (e164,) = await add(database, service, site, count=1)
        alice = visit(site)
        async with database.begin() as db:
            db.add(alice)
        for seconds in (0, 30, 90):
            entries = await service.numbers_for_session(
                site, alice, T0 + dt.timedelta(seconds=seconds)
            )
            assert shown(entries) == [(MAIN, e164, "pool")]
        (lease,) = await _leases(database, await _number_id(database, e164))
        assert (lease.session_id, lease.last_seen_at) == (alice.id, T0 + dt.timedelta(seconds=90))
    finally:
        await service.aclose()


async def test_business_and_tracking_numbers_never_mix(database: Database) -> None:
    """A US shop whose published number is in NANPA's fiction range (555-0100..0199), as
    tests and demos write them: the simulated carrier offers that range too, and must not
    hand the shop its own number, nor another shop's, as a tracking number."""
    service = NumberService(MemoryNumberPool(), carrier=SimulatedCarrier(seed=7))
    clock = FrozenClock(T0)
    async with database.begin() as db:
        account = await get_or_create_account(db, f"us-{secrets.token_hex(4)}", clock)
        shop = SiteSpec(name="Bikes", domain="bikes.example", phone="", country="US")
        sites = [
            await create_site(db, account, replace(shop, phone=phone), clock)
            for phone in ("(212) 555-0105", "(202) 555-0150", "(415) 555-0199")
        ]
    async with database.sessions() as db:
        tracked = await db.scalars(select(TrackingNumber.e164))
        taken = {e164 for e164 in tracked if e164.startswith("+1")}
    # 100 per area code, 300 in all: enough for many sites, none of them a business number.
    added = await add(database, service, sites[0], count=300 - 3 - len(taken))
    assert not {"+12125550105", "+12025550150", "+14155550199"} & set(added)
    with pytest.raises(ApiError) as exhausted:
        await add(database, service, sites[0], count=1)
    assert exhausted.value.code == "numbers_unavailable"
    with pytest.raises(Conflict) as own:
        await add(database, service, sites[0], e164="+1 212 555 0105")
    assert own.value.code == "business_number"
    with pytest.raises(Conflict) as others:
        await add(database, service, sites[0], e164="(202) 555-0150")
    assert others.value.code == "business_number"
    async with database.begin() as db:
        with pytest.raises(Conflict) as tracking:
            await add_business_number(db, sites[1], added[0], "after-sales")
        assert tracking.value.code == "tracking_number"
        with pytest.raises(Conflict):
            await create_site(db, account, replace(shop, phone=added[1]), clock)
    await service.aclose()
