"""1,000 concurrent lease requests from two worker processes sharing one real Redis."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import sys
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis

from tracker.numbers.pool import PoolSnapshot, RedisNumberPool

ROOT = Path(__file__).resolve().parent.parent
POOL = "1:1"
PER_WORKER = 500
T0 = dt.datetime(2026, 1, 5, 9, 0, tzinfo=dt.UTC)

# Each worker fires its requests at once, on its own connections, when the test says go.
WORKER = """
import asyncio, datetime as dt, json, sys
from redis.asyncio import BlockingConnectionPool, Redis
from tracker.numbers.pool import RedisNumberPool

url, prefix, pool, worker, count, overflow = sys.argv[1:7]

async def main():
    # All requests are issued at once; they share 100 connections per worker, opened before
    # the start so that the test measures leasing, not 1,000 TCP handshakes on a busy machine.
    connections = BlockingConnectionPool.from_url(
        url, max_connections=100, timeout=60, socket_connect_timeout=30
    )
    redis = Redis(connection_pool=connections)
    numbers = RedisNumberPool(redis, prefix)
    await asyncio.gather(*(redis.ping() for _ in range(100)))
    await redis.incr(prefix + "ready")
    while not await redis.exists(prefix + "go"):
        await asyncio.sleep(0.005)
    t0 = dt.datetime(2026, 1, 5, 9, 0, tzinfo=dt.UTC)

    async def one(i):
        session = f"w{worker}-{i % (int(count) // 2)}"  # each session asks twice
        now = t0 + dt.timedelta(milliseconds=i)
        result = await numbers.acquire(
            pool, session, now, dt.timedelta(minutes=30), overflow=overflow == "1"
        )
        grant = result.grant
        if grant is None:
            return [session, None, None, None]
        return [session, grant.number, grant.outcome, grant.displaced_session]

    results = await asyncio.gather(*(one(i) for i in range(int(count))))
    await redis.aclose()
    print(json.dumps(results))

asyncio.run(main())
"""


async def _run_workers(redis_url: str, prefix: str, overflow: bool) -> list[list[Any]]:
    redis = Redis.from_url(redis_url)
    workers: list[asyncio.subprocess.Process] = []
    try:
        for worker in range(2):
            workers.append(
                await asyncio.create_subprocess_exec(
                    sys.executable,
                    "-c",
                    WORKER,
                    redis_url,
                    prefix,
                    POOL,
                    str(worker),
                    str(PER_WORKER),
                    "1" if overflow else "0",
                    cwd=ROOT,
                    stdout=asyncio.subprocess.PIPE,
                    stderr=asyncio.subprocess.PIPE,
                )
            )
        async with asyncio.timeout(60):
            while int(await redis.get(prefix + "ready") or 0) < 2:  # noqa: ASYNC110 - another process
                await asyncio.sleep(0.01)
        await redis.set(prefix + "go", 1)
        results: list[list[Any]] = []
        for process in workers:
            out, err = await asyncio.wait_for(process.communicate(), 90)
            assert process.returncode == 0, err.decode()
            results += json.loads(out)
        return results
    finally:
        for process in workers:
            if process.returncode is None:
                process.kill()
                await process.communicate()
        await redis.aclose()


@pytest.fixture
async def numbers(redis_url: str, redis_prefix: str) -> Any:
    redis = Redis.from_url(redis_url)
    pool = RedisNumberPool(redis, redis_prefix)
    yield pool
    keys = [key async for key in redis.scan_iter(match=redis_prefix + "*", count=1000)]
    if keys:
        await redis.delete(*keys)
    await redis.aclose()


async def _holders(pool: RedisNumberPool) -> dict[int, str]:
    state = await pool.state(POOL)
    holders = {held.number: held.session_id for held in state.held}
    assert len(set(holders.values())) == len(holders), "a session holds two numbers"
    return holders


async def test_business_mode_never_leases_a_number_twice(
    numbers: RedisNumberPool, redis_url: str, redis_prefix: str
) -> None:
    size = 200
    await numbers.load(POOL, PoolSnapshot(free=dict.fromkeys(range(size))), T0)
    results = await _run_workers(redis_url, redis_prefix, overflow=False)
    assert len(results) == 2 * PER_WORKER

    first_grant: dict[str, int | None] = {}
    owner: dict[int, str] = {}
    for session, number, outcome, _ in results:
        assert outcome in (None, "new", "held")
        if number is None:
            continue
        # No number ever goes to two sessions...
        assert owner.setdefault(number, session) == session
        # ...and a session asking again keeps the number it got.
        assert first_grant.setdefault(session, number) == number
    assert len(owner) == size
    assert await _holders(numbers) == owner


async def test_overflow_hands_each_number_from_holder_to_holder(
    numbers: RedisNumberPool, redis_url: str, redis_prefix: str
) -> None:
    size = 50
    await numbers.load(POOL, PoolSnapshot(free=dict.fromkeys(range(size))), T0)
    results = await _run_workers(redis_url, redis_prefix, overflow=True)
    assert all(number is not None for _, number, _, _ in results)

    # Per number: one "new" grant, then every overflow ends exactly one earlier holding: the
    # sessions given the number are those displaced from it plus the one holding it now (as
    # multisets, since a displaced session may win the number back). So the number passed
    # from one session to the next and was never held by two at once.
    grants: dict[int, list[tuple[str, str, str | None]]] = defaultdict(list)
    for session, number, outcome, displaced in results:
        if outcome != "held":
            grants[number].append((session, outcome, displaced))
    holders = await _holders(numbers)
    assert set(holders) == set(range(size)) == set(grants)
    for number, handed in grants.items():
        assert [outcome for _, outcome, _ in handed].count("new") == 1
        given = Counter(session for session, _, _ in handed)
        displaced = Counter(d for _, outcome, d in handed if outcome == "overflow")
        assert given == displaced + Counter([holders[number]])
