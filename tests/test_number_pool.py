"""Number pool semantics, one suite run on the in-process pool and on real Redis.

Time is a FrozenClock moved by hand: hold times and expiry are tested without sleeping.
"""

from __future__ import annotations

import datetime as dt
import secrets
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis
from sqlalchemy import select

from telephony.carriers.simulated import SimulatedCarrier
from tracker.clock import FrozenClock
from tracker.db import Database
from tracker.models import Lease, Site, TrackedSession
from tracker.numbers.pool import (
    REAP_LIMIT,
    MemoryNumberPool,
    NumberPool,
    PoolNotLoaded,
    PoolSnapshot,
    RedisNumberPool,
    pool_key,
)
from tracker.numbers.service import NumberService, lease_at
from tracker.sites import SiteSpec, business_numbers, create_site, get_or_create_account

HOLD = dt.timedelta(minutes=30)
T0 = dt.datetime(2026, 1, 5, 9, 0, tzinfo=dt.UTC)
POOL = "7:1"


async def _clean(client: Redis, prefix: str) -> None:
    keys = [key async for key in client.scan_iter(match=prefix + "*", count=1000)]
    if keys:
        await client.delete(*keys)


@pytest.fixture(params=["memory", "redis"])
async def pool(request: pytest.FixtureRequest, redis_prefix: str) -> AsyncIterator[NumberPool]:
    if request.param == "memory":
        yield MemoryNumberPool()
        return
    client = Redis.from_url(request.getfixturevalue("redis_url"))
    yield RedisNumberPool(client, redis_prefix)
    await _clean(client, redis_prefix)
    await client.aclose()


async def load(pool: NumberPool, free: dict[int, dt.datetime | None]) -> None:
    assert await pool.load(POOL, PoolSnapshot(free=free), T0)


async def take(
    pool: NumberPool, session: str, at: dt.datetime, *, overflow: bool = True
) -> int | None:
    result = await pool.acquire(POOL, session, at, HOLD, overflow=overflow)
    return None if result.grant is None else result.grant.number


async def test_a_pool_must_be_loaded_once(pool: NumberPool) -> None:
    with pytest.raises(PoolNotLoaded):
        await pool.acquire(POOL, "s1", T0, HOLD, overflow=True)
    await load(pool, {1: None})
    assert not await pool.load(POOL, PoolSnapshot(free={2: None}), T0)
    assert (await pool.state(POOL)).free == (1,)


async def test_least_recently_released_first(pool: NumberPool) -> None:
    await load(
        pool,
        {
            1: T0 - dt.timedelta(hours=3),
            2: T0 - dt.timedelta(hours=1),
            3: None,
            4: T0 - dt.timedelta(hours=2),
        },
    )
    assert [await take(pool, f"s{i}", T0) for i in range(4)] == [3, 1, 4, 2]


async def test_a_released_number_goes_to_the_back(pool: NumberPool) -> None:
    await load(pool, {1: None, 2: None, 3: None})
    assert await take(pool, "a", T0) == 1
    assert await pool.release(POOL, "a", T0 + dt.timedelta(minutes=1)) == 1
    assert await pool.release(POOL, "a", T0 + dt.timedelta(minutes=1)) is None
    assert [await take(pool, s, T0 + dt.timedelta(minutes=2)) for s in "bcd"] == [2, 3, 1]


async def test_the_same_session_keeps_its_number(pool: NumberPool) -> None:
    await load(pool, {1: None, 2: None})
    first = await pool.acquire(POOL, "a", T0, HOLD, overflow=True)
    again = await pool.acquire(POOL, "a", T0 + dt.timedelta(minutes=5), HOLD, overflow=True)
    other = await pool.acquire(POOL, "b", T0 + dt.timedelta(minutes=6), HOLD, overflow=True)
    assert first.grant is not None and again.grant is not None and other.grant is not None
    assert (first.grant.outcome, again.grant.outcome) == ("new", "held")
    assert again.grant.number == first.grant.number != other.grant.number
    assert again.grant.hold_until == T0 + dt.timedelta(minutes=35)
    # A late, out-of-order request never moves the hold backwards.
    late = await pool.acquire(POOL, "a", T0 + dt.timedelta(minutes=1), HOLD, overflow=True)
    assert late.grant is not None and late.grant.hold_until == T0 + dt.timedelta(minutes=35)


async def test_hold_time_then_expiry(pool: NumberPool) -> None:
    await load(pool, {1: None, 2: None})
    assert await take(pool, "a", T0) == 1
    # Still held at the exact end of its hold...
    at_end = await pool.acquire(POOL, "b", T0 + HOLD, HOLD, overflow=False)
    assert at_end.grant is not None and at_end.grant.number == 2 and at_end.expired == ()
    # ...and expired one millisecond later: free again, released at its hold_until.
    later = T0 + HOLD + dt.timedelta(milliseconds=1)
    result = await pool.acquire(POOL, "c", later, HOLD, overflow=False)
    assert [(e.number, e.session_id, e.hold_until) for e in result.expired] == [(1, "a", T0 + HOLD)]
    assert result.grant is not None and result.grant.number == 1
    # The session that lost its number by expiry gets a new lease, not its old one back.
    back = await pool.acquire(POOL, "a", later, HOLD, overflow=False)
    assert back.grant is None


async def test_heartbeats_extend_the_hold(pool: NumberPool) -> None:
    await load(pool, {1: None})
    assert await take(pool, "a", T0) == 1
    for minutes in (10, 20, 30, 40):
        assert await take(pool, "a", T0 + dt.timedelta(minutes=minutes)) == 1
    # Held until 40 + 30 minutes: "b" finds nothing free before that.
    assert await take(pool, "b", T0 + dt.timedelta(minutes=70), overflow=False) is None
    assert await take(pool, "b", T0 + dt.timedelta(minutes=70, seconds=1), overflow=False) == 1


async def test_overflow_reuses_the_least_recently_active_lease(pool: NumberPool) -> None:
    await load(pool, {1: None, 2: None})
    assert await take(pool, "a", T0) == 1
    assert await take(pool, "b", T0 + dt.timedelta(minutes=1)) == 2
    assert await take(pool, "a", T0 + dt.timedelta(minutes=2)) == 1  # "a" active again
    result = await pool.acquire(POOL, "c", T0 + dt.timedelta(minutes=3), HOLD, overflow=True)
    assert result.grant is not None
    assert result.grant.outcome == "overflow" and result.grant.number == 2
    assert result.grant.displaced_session == "b"
    assert result.grant.displaced_hold_until == T0 + dt.timedelta(minutes=31)
    holders = {held.number: held.session_id for held in (await pool.state(POOL)).held}
    assert holders == {1: "a", 2: "c"}


async def test_business_exhaustion_shows_the_business_number(pool: NumberPool) -> None:
    await load(pool, {1: None})
    assert await take(pool, "a", T0, overflow=False) == 1
    assert await take(pool, "b", T0 + dt.timedelta(minutes=1), overflow=False) is None
    assert {h.session_id for h in (await pool.state(POOL)).held} == {"a"}


async def test_database_writes_are_throttled(pool: NumberPool) -> None:
    await load(pool, {1: None})
    steps = [0, 30, 59, 60, 90, 121]
    due = []
    for seconds in steps:
        result = await pool.acquire(
            POOL, "a", T0 + dt.timedelta(seconds=seconds), HOLD, overflow=True
        )
        assert result.grant is not None
        due.append(result.grant.record_due)
    assert due == [True, False, False, True, False, True]


async def test_expiry_is_spread_over_calls(pool: NumberPool) -> None:
    count = REAP_LIMIT + 5
    await load(pool, dict.fromkeys(range(count)))
    for i in range(count):
        assert await take(pool, f"s{i}", T0) is not None
    later = T0 + HOLD + dt.timedelta(minutes=1)
    first = await pool.acquire(POOL, "x", later, HOLD, overflow=True)
    second = await pool.acquire(POOL, "y", later, HOLD, overflow=True)
    assert len(first.expired) == REAP_LIMIT
    assert len(second.expired) == 5
    assert first.grant is not None and first.grant.outcome == "new"


async def test_sync_adds_and_retires_numbers(pool: NumberPool) -> None:
    await load(pool, {1: None, 2: None})
    assert await take(pool, "a", T0) == 1
    result = await pool.sync(POOL, {1: None, 2: None, 3: None}, [1], T0)
    assert result.added == (3,)
    assert result.removed == ((1, "a"),)
    state = await pool.state(POOL)
    assert set(state.free) == {2, 3} and state.held == ()
    with pytest.raises(PoolNotLoaded):
        await pool.sync("other", {1: None}, [], T0)


async def test_forget_drops_the_state(pool: NumberPool) -> None:
    await load(pool, {1: None})
    await pool.forget(POOL)
    with pytest.raises(PoolNotLoaded):
        await take(pool, "a", T0)


async def test_redis_rebuilds_a_pool_restored_from_an_old_snapshot(
    redis_url: str, redis_prefix: str
) -> None:
    """A restarted Redis may reload a stale snapshot: the pool must be rebuilt anyway."""
    client = Redis.from_url(redis_url)
    pool = RedisNumberPool(client, redis_prefix)
    try:
        free, _, lease = pool.keys(POOL)
        # What a snapshot of an earlier server life would hold: marked loaded, number 1 free.
        await client.hset(lease, "ready", "0" * 40)
        await client.zadd(free, {"1": 0})
        with pytest.raises(PoolNotLoaded):
            await pool.acquire(POOL, "a", T0, HOLD, overflow=True)
        snapshot = PoolSnapshot(free={2: None})
        assert await pool.load(POOL, snapshot, T0)
        assert (await pool.state(POOL)).free == (2,)
    finally:
        await _clean(client, redis_prefix)
        await client.aclose()


# -- rebuilding from the database after a restart ---------------------------------------------


async def _site_with_pool(database: Database, service: NumberService, size: int) -> Site:
    clock = FrozenClock(T0)
    async with database.begin() as db:
        account = await get_or_create_account(db, f"pool-{secrets.token_hex(4)}", clock)
        site = await create_site(
            db,
            account,
            SiteSpec(name="Shop", domain="shop.example", phone="+33123456789", country="FR"),
            clock,
        )
        await service.add_numbers(db, site, T0, count=size)
        return site


def _session(site: Site, at: dt.datetime) -> TrackedSession:
    return TrackedSession(
        id=secrets.token_hex(16),
        site_id=site.id,
        consent=True,
        started_at=at,
        last_seen_at=at,
        landing_url="https://shop.example/",
        channel="Direct",
    )


async def _visit(
    database: Database, service: NumberService, site: Site, session: TrackedSession
) -> str | None:
    async with database.begin() as db:
        if await db.get(TrackedSession, session.id) is None:
            db.add(session)
            await db.flush()
        swaps = await service.assign_numbers(db, site, session, session.last_seen_at)
        return swaps[0]["to"]["e164"] if swaps else None


@pytest.mark.parametrize("backend", ["memory", "redis"])
async def test_rebuild_after_a_restart_keeps_every_lease(
    database: Database, backend: str, request: pytest.FixtureRequest, redis_prefix: str
) -> None:
    client = Redis.from_url(request.getfixturevalue("redis_url")) if backend == "redis" else None

    def fresh_pool() -> NumberPool:
        return RedisNumberPool(client, redis_prefix) if client else MemoryNumberPool()

    carrier = SimulatedCarrier()
    service = NumberService(fresh_pool(), carrier=carrier)
    try:
        site = await _site_with_pool(database, service, 4)
        held = [_session(site, T0 + dt.timedelta(minutes=i)) for i in range(3)]
        shown = [await _visit(database, service, site, s) for s in held]
        assert None not in shown and len(set(shown)) == 3

        # The restart: Redis loses our keys (or the process its memory).
        async with database.begin() as db:
            primary = (await business_numbers(db, site.id))[0]
        if client is not None:
            await _clean(client, redis_prefix)
        service = NumberService(fresh_pool(), carrier=carrier)

        later = T0 + dt.timedelta(minutes=10)
        for session in held:
            session.last_seen_at = later
        # Old sessions keep their numbers; new ones get only the number nobody holds.
        assert [await _visit(database, service, site, s) for s in held] == shown
        newcomers = [_session(site, later + dt.timedelta(minutes=i + 1)) for i in range(2)]
        first = await _visit(database, service, site, newcomers[0])
        assert first not in shown
        # The pool is full now: the next visitor overflows the least recently active lease.
        second = await _visit(database, service, site, newcomers[1])
        assert second in shown
        state = await service.pool.state(pool_key(site.id, primary.id))
        assert len({h.session_id for h in state.held}) == len(state.held) == 4

        async with database.begin() as db:
            leases = list(await db.scalars(select(Lease).where(Lease.site_id == site.id)))
            assert len(leases) == 5
            holder = await lease_at(db, leases[0].tracking_number_id, later)
            assert holder is not None
    finally:
        await service.aclose()
        if client is not None:
            await _clean(client, redis_prefix)
            await client.aclose()
