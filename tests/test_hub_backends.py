"""The hub backends: one suite, run on the in-process backend and on a real Redis."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import secrets
from collections.abc import AsyncIterator
from types import SimpleNamespace
from typing import Any

import pytest
from redis.asyncio import Redis

from dashboard.hub.backend import HubBackend, StoredEvent, parse_event_id
from dashboard.hub.connection import Connection, Hub
from dashboard.hub.events import check_event
from dashboard.hub.memory import MemoryHub
from dashboard.hub.redis import RedisHub
from tracker.clock import FrozenClock

SITE_A, SITE_B = 101, 202


class Backends:
    """Make backends of one kind that share their storage (two workers, for Redis)."""

    def __init__(self, kind: str, clock: FrozenClock, redis: Redis | None, prefix: str) -> None:
        self.kind = kind
        self.clock = clock
        self.redis = redis
        self.prefix = prefix
        self.made: list[HubBackend] = []

    async def make(self) -> HubBackend:
        backend: HubBackend
        if self.kind == "memory":
            backend = MemoryHub(self.clock)
        else:
            assert self.redis is not None
            backend = RedisHub(self.redis, self.prefix, self.clock)
        await backend.start()
        self.made.append(backend)
        return backend


@pytest.fixture(params=["memory", "redis"])
async def backends(request: pytest.FixtureRequest, redis_prefix: str) -> AsyncIterator[Backends]:
    redis = None
    if request.param == "redis":
        redis = Redis.from_url(request.getfixturevalue("redis_url"))
    made = Backends(request.param, FrozenClock(), redis, redis_prefix)
    yield made
    for backend in made.made:
        await backend.stop()
    if redis is not None:
        keys = [key async for key in redis.scan_iter(match=f"{redis_prefix}*")]
        if keys:
            await redis.delete(*keys)
        await redis.aclose()


@pytest.fixture
async def backend(backends: Backends) -> HubBackend:
    return await backends.make()


async def publish(
    backend: HubBackend, site_id: int, n: int = 1, kind: str = "call.tagged"
) -> list[StoredEvent]:
    return [
        await backend.publish(site_id, kind, "2026-01-05T09:00:00+00:00", json.dumps({"n": i}))
        for i in range(n)
    ]


async def take(events: AsyncIterator[StoredEvent], n: int, within: float = 5) -> list[StoredEvent]:
    async def collect() -> list[StoredEvent]:
        return [await anext(events) for _ in range(n)]

    return await asyncio.wait_for(collect(), within)


async def test_ids_strictly_increase_even_when_the_clock_stands_still(
    backend: HubBackend, backends: Backends
) -> None:
    same_ms = await publish(backend, SITE_A, 3)
    backends.clock.advance(milliseconds=5)
    later = await publish(backend, SITE_A, 1)
    backends.clock.advance(seconds=-60)  # a clock stepping back never moves ids back
    earlier_clock = await publish(backend, SITE_A, 1)
    keys = [parse_event_id(e.id) for e in same_ms + later + earlier_clock]
    assert keys == sorted(keys) and len(set(keys)) == len(keys)
    assert keys[0][0] == int(FrozenClock().now().timestamp() * 1000)


async def test_read_after_returns_what_came_later_in_order(backend: HubBackend) -> None:
    events = await publish(backend, SITE_A, 5)
    replay = await backend.read_after(SITE_A, events[1].id)
    assert [e.id for e in replay.events] == [e.id for e in events[2:]]
    assert [json.loads(e.data)["n"] for e in replay.events] == [2, 3, 4]
    assert replay.gap is False
    assert (await backend.read_after(SITE_A, events[-1].id)).events == []
    with pytest.raises(ValueError):
        await backend.read_after(SITE_A, "not-an-id")


async def test_streams_of_sites_are_separate(backend: HubBackend) -> None:
    a = await publish(backend, SITE_A, 2)
    await publish(backend, SITE_B, 3)
    replay = await backend.read_after(SITE_A, "0-0")
    assert [e.id for e in replay.events] == [e.id for e in a]
    assert {e.site_id for e in replay.events} == {SITE_A}


async def test_events_are_kept_ten_minutes_then_a_late_reader_is_told_of_the_gap(
    backend: HubBackend, backends: Backends
) -> None:
    # Enough entries to fill whole Redis stream nodes: MINID ~ only drops complete nodes.
    old = await publish(backend, SITE_A, 200)
    backends.clock.advance(minutes=10)
    ten_minutes = (await publish(backend, SITE_A, 1))[0]
    kept = await backend.read_after(SITE_A, old[0].id)
    assert kept.gap is False and len(kept.events) == 200  # 199 old ones + the new one

    backends.clock.advance(minutes=10)
    newest = (await publish(backend, SITE_A, 1))[0]
    late = await backend.read_after(SITE_A, old[0].id)
    assert late.gap is True
    assert [e.id for e in late.events][-2:] == [ten_minutes.id, newest.id]
    assert all(parse_event_id(e.id) > parse_event_id(old[0].id) for e in late.events)
    # A reader whose last event is still held (ten minutes old) missed nothing.
    recent = await backend.read_after(SITE_A, ten_minutes.id)
    assert recent.gap is False
    assert [e.id for e in recent.events] == [newest.id]
    # An id this stream never held (another process's, a made-up one) cannot vouch for it.
    assert (await backend.read_after(SITE_A, "1-0")).gap is True
    assert (await backend.read_after(SITE_A, "0-0")).gap is False


async def test_erasure_deletes_the_stored_events_that_name_the_person(
    backend: HubBackend,
) -> None:
    """A console resuming after an erasure must not be replayed the erased visitor's pages."""
    erased, kept = "a" * 32, "b" * 32
    at = "2026-01-05T09:00:00+00:00"
    for session in (erased, kept, erased):
        data = json.dumps({"session": {"id": session}, "page": {"url": "https://velos.fr/"}})
        await backend.publish(SITE_A, "visitor.pageview", at, data)
    other_site = await backend.publish(SITE_B, "visitor.pageview", at, json.dumps({"s": erased}))
    assert await backend.forget([SITE_A], {erased}) == 2
    replay = await backend.read_after(SITE_A, "0-0")
    assert [json.loads(e.data)["session"]["id"] for e in replay.events] == [kept]
    # Only the sites asked for; nothing else named: nothing deleted.
    assert [e.id for e in (await backend.read_after(SITE_B, "0-0")).events] == [other_site.id]
    assert await backend.forget([SITE_A], {"c" * 32}) == 0
    assert await backend.forget([SITE_A], set()) == 0


async def test_followed_streams_are_relayed_and_others_are_not(backend: HubBackend) -> None:
    await backend.follow([SITE_A])
    events = backend.stream_events()
    reader = asyncio.ensure_future(take(events, 3))
    await asyncio.sleep(0.05)  # the reader blocks on the streams before anything is published
    await publish(backend, SITE_B, 2)
    published = await publish(backend, SITE_A, 3)
    relayed = await reader
    assert [e.id for e in relayed] == [e.id for e in published]
    await backend.unfollow([SITE_A])
    await backend.follow([SITE_B])
    reader = asyncio.ensure_future(take(events, 1))
    await asyncio.sleep(0.05)
    await publish(backend, SITE_A, 1)
    b = await publish(backend, SITE_B, 1)
    assert [e.id for e in await reader] == [b[0].id]


# -- the local fan-out over each backend ---------------------------------------------------------


class FakeSocket:
    """Stands in for aiohttp's WebSocketResponse: records what the writer sends."""

    def __init__(self, stalled: bool = False) -> None:
        self.messages: list[dict[str, Any]] = []
        self.closed_with: int | None = None
        self.arrived = asyncio.Event()
        self.stalled = stalled

    async def send_frame(self, data: bytes, opcode: Any) -> None:
        if self.stalled:  # a browser that stopped reading: the socket buffer never drains
            await asyncio.Event().wait()
        self.messages.append(json.loads(data))
        self.arrived.set()

    async def close(self, *, code: int, message: bytes = b"", drain: bool = True) -> bool:
        self.closed_with = code
        return True

    def events(self) -> list[dict[str, Any]]:
        return [m["event"] for m in self.messages if m["type"] == "event"]

    async def wait_events(self, n: int, within: float = 5) -> list[dict[str, Any]]:
        async def wait() -> None:
            while len(self.events()) < n:
                self.arrived.clear()
                await self.arrived.wait()

        await asyncio.wait_for(wait(), within)
        return self.events()


def console(
    hub: Hub, queue_size: int = 256, stalled: bool = False
) -> tuple[Connection, FakeSocket]:
    socket = FakeSocket(stalled)
    login = SimpleNamespace(
        expires_at=dt.datetime(2100, 1, 1, tzinfo=dt.UTC), token_hash=secrets.token_hex(32)
    )
    auth = SimpleNamespace(user=SimpleNamespace(account_id=1), login=login)
    connection = Connection(socket, auth, queue_size=queue_size)  # type: ignore[arg-type]
    hub.add(connection)
    return connection, socket


@pytest.fixture
async def hub(backend: HubBackend, backends: Backends) -> AsyncIterator[Hub]:
    hub = Hub()
    await hub.start(backend, backends.clock)
    yield hub
    for connection in list(hub.connections):
        await hub.remove(connection)
    for task in hub._tasks:
        task.cancel()
    await asyncio.gather(*hub._tasks, return_exceptions=True)


async def subscribe(
    hub: Hub, connection: Connection, site_id: int = SITE_A, last: str | None = None
) -> None:
    last_ids = {site_id: last} if last else {}
    replays = await hub.subscribe(connection, {site_id: f"ctsite{site_id}"}, last_ids)
    await hub.finish_subscribe(connection, last_ids, replays)


async def test_every_subscriber_of_a_site_gets_each_event_once(hub: Hub) -> None:
    consoles = [console(hub) for _ in range(3)]
    for connection, _ in consoles:
        await subscribe(hub, connection)
    other, other_socket = console(hub)
    await subscribe(hub, other, SITE_B)
    await asyncio.sleep(0.05)
    await hub.publish(SITE_A, "visitor.consent", {"session_id": "s1", "consent": True})
    await hub.publish(SITE_A, "visitor.consent", {"session_id": "s1", "consent": False})
    for _, socket in consoles:
        events = await socket.wait_events(2)
        assert [e["data"]["consent"] for e in events] == [True, False]
        assert {e["site"] for e in events} == {f"ctsite{SITE_A}"}
        for event in events:
            check_event(event)
    await asyncio.sleep(0.05)
    assert other_socket.events() == []  # another site's subscriber sees nothing of site A


async def test_resume_sends_missed_events_then_live_ones_without_doubles(hub: Hub) -> None:
    first, socket = console(hub)
    await subscribe(hub, first)
    await asyncio.sleep(0.05)
    await hub.publish(SITE_A, "call.tagged", {"target_id": 1, "tag": "sale"})
    seen = (await socket.wait_events(1))[-1]["id"]
    await hub.remove(first)  # the laptop sleeps
    missed = [
        (await hub.publish(SITE_A, "call.tagged", {"target_id": n, "tag": "lead"})).id
        for n in (2, 3)
    ]
    again, socket = console(hub)
    await subscribe(hub, again, last=seen)
    await asyncio.sleep(0.05)
    live = await hub.publish(SITE_A, "call.tagged", {"target_id": 4, "tag": "spam"})
    events = await socket.wait_events(3)
    await asyncio.sleep(0.1)
    assert [e["id"] for e in socket.events()] == [*missed, live.id]
    assert [e["data"]["target_id"] for e in events] == [2, 3, 4]


async def test_a_full_send_queue_closes_the_slow_consumer_only(hub: Hub) -> None:
    slow, slow_socket = console(hub, queue_size=2, stalled=True)
    fast, fast_socket = console(hub)
    await subscribe(hub, slow)
    await subscribe(hub, fast)
    for n in range(6):
        await hub.publish(SITE_A, "call.tagged", {"target_id": n, "tag": "lead"})
    await fast_socket.wait_events(6)
    for _ in range(50):
        if slow_socket.closed_with is not None:
            break
        await asyncio.sleep(0.02)
    assert slow_socket.closed_with == 4008
    assert fast_socket.closed_with is None


async def test_memory_hub_skips_only_what_no_console_can_ever_receive() -> None:
    """A single process knows every console: a site nobody followed within the retention
    window has nobody to send visitor events to, live or on a resume."""
    clock = FrozenClock()
    hub = MemoryHub(clock, retention=dt.timedelta(minutes=15))
    assert not hub.may_be_wanted(7)
    await hub.follow([7])
    assert hub.may_be_wanted(7) and not hub.may_be_wanted(8)
    await hub.unfollow([7])
    clock.advance(minutes=14)
    assert hub.may_be_wanted(7)  # a console that dropped may still come back and resume
    clock.advance(minutes=2)
    assert not hub.may_be_wanted(7)
