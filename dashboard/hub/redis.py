"""The Redis backend: one stream per site (XADD), one XREAD BLOCK reader per worker.

Every worker appends to the same streams, so an advisor on worker A sees a pageview that
worker B collected, and a console that reconnects to any worker resumes from its last ids.
Each worker follows only the streams its own consoles subscribed to.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import secrets
from collections.abc import AsyncIterator, Collection, Iterable
from typing import TYPE_CHECKING, Any

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from dashboard.hub.backend import ZERO_ID, HubBackend, Replay, StoredEvent, parse_event_id
from dashboard.hub.const import RETENTION
from tracker.clock import Clock

if TYPE_CHECKING:
    from redis.asyncio import Redis

log = logging.getLogger("calltrack.hub")

# XREAD BLOCK returns at least this often, so a lost wake-up only delays, never stalls; it
# must stay under redis-py's socket timeout (5 s by default), which also bounds blocking reads.
BLOCK_MS = 2_000
READ_COUNT = 1_000
REPLAY_PAGE = 5_000
# After a Redis outage the reader retries at this pace; positions are kept, so the events
# published meanwhile are still delivered (if the outage is shorter than the retention).
RETRY_SECONDS = 1.0


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


class RedisHub(HubBackend):
    """Keep site streams in Redis; relay the followed ones to this worker's consoles."""

    def __init__(
        self,
        redis: Redis,
        prefix: str,
        clock: Clock,
        *,
        retention: dt.timedelta = RETENTION,
    ) -> None:
        self._redis = redis
        self._prefix = f"{prefix}hub:site:"
        self._clock = clock
        self._retention_ms = int(retention.total_seconds() * 1000)
        # A private stream the reader also blocks on: writing to it wakes the reader up when
        # a console follows a new site, instead of waiting for BLOCK_MS to run out.
        self._wake_key = f"{prefix}hub:wake:{secrets.token_hex(8)}"
        self._wake_position = "0-0"
        self._positions: dict[int, str] = {}
        self._stopping = False

    def stream_key(self, site_id: int) -> str:
        return f"{self._prefix}{site_id}"

    async def start(self) -> None:
        try:
            await self._redis.ping()
        except (RedisConnectionError, RedisTimeoutError) as exc:
            # Start anyway: collect must keep working, and the reader retries until Redis is back.
            log.error(
                "the hub cannot reach Redis yet (%s); consoles get no events until it can", exc
            )

    async def stop(self) -> None:
        self._stopping = True
        try:
            await self._redis.delete(self._wake_key)
        except (RedisConnectionError, RedisTimeoutError):
            log.warning("could not delete the hub wake-up stream %s", self._wake_key)

    async def publish(self, site_id: int, kind: str, at: str, data: str) -> StoredEvent:
        now_ms = int(self._clock.now().timestamp() * 1000)
        fields = {"k": kind, "a": at, "d": data}
        try:
            event_id = await self._append(site_id, fields, f"{now_ms}-*", now_ms)
        except ResponseError as exc:
            if "equal or smaller" not in str(exc):
                raise
            # This worker's clock is behind another's: let Redis pick the next id.
            event_id = await self._append(site_id, fields, "*", now_ms)
        return StoredEvent(site_id, event_id, kind, at, data)

    async def forget(self, site_ids: Iterable[int], tokens: Collection[str]) -> int:
        if not tokens:
            return 0
        removed = 0
        for site_id in set(site_ids):
            key = self.stream_key(site_id)
            doomed: list[str] = []
            start = "-"
            while True:
                page: Any = await self._redis.xrange(key, min=start, max="+", count=REPLAY_PAGE)
                for entry_id, fields in page:
                    data = _text(fields.get(b"d", fields.get("d", b"")))
                    if any(token in data for token in tokens):
                        doomed.append(_text(entry_id))
                if len(page) < REPLAY_PAGE:
                    break
                start = "(" + _text(page[-1][0])
            for index in range(0, len(doomed), 1000):
                removed += int(await self._redis.xdel(key, *doomed[index : index + 1000]))
        return removed

    async def _append(self, site_id: int, fields: dict[str, str], new_id: str, now_ms: int) -> str:
        key = self.stream_key(site_id)
        # One round trip: the entry, trimming by age (MINID, approximate so Redis drops whole
        # nodes cheaply) and an expiry, so a site gone quiet does not keep visitor data forever.
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.xadd(
                key,
                fields,  # type: ignore[arg-type]
                id=new_id,
                minid=str(now_ms - self._retention_ms),
                approximate=True,
            )
            pipe.pexpire(key, self._retention_ms)
            added, _ = await pipe.execute()
        return _text(added)

    async def read_after(self, site_id: int, after: str) -> Replay:
        after_key = parse_event_id(after)
        key = self.stream_key(site_id)
        events: list[StoredEvent] = []
        # Inclusive of `after`: trimming only removes the oldest entries, so if the client's
        # own last event is still there, everything after it is too.
        start = after
        held_after = after_key == ZERO_ID
        while True:
            entries: Any = await self._redis.xrange(key, min=start, max="+", count=REPLAY_PAGE)
            page = self._decode(site_id, entries)
            if start == after and page and page[0].id == after:
                held_after = True
                page = page[1:]
            events.extend(page)
            if len(entries) < REPLAY_PAGE:
                break
            start = f"({events[-1].id}"
        return Replay(events, gap=not held_after)

    @staticmethod
    def _decode(site_id: int, entries: Any) -> list[StoredEvent]:
        decoded = []
        for entry_id, fields in entries:
            values = {_text(k): _text(v) for k, v in fields.items()}
            decoded.append(
                StoredEvent(site_id, _text(entry_id), values["k"], values["a"], values["d"])
            )
        return decoded

    async def follow(self, site_ids: Iterable[int]) -> None:
        new = [site_id for site_id in site_ids if site_id not in self._positions]
        if not new:
            return
        async with self._redis.pipeline(transaction=False) as pipe:
            for site_id in new:
                pipe.xrevrange(self.stream_key(site_id), "+", "-", count=1)
            replies = await pipe.execute()
        for site_id, last in zip(new, replies, strict=True):
            # Start after the newest entry now: the subscriber's replay covers what came before.
            self._positions.setdefault(site_id, _text(last[0][0]) if last else "0-0")
        # Only now wake the reader, so that its next XREAD includes the new positions.
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.xadd(self._wake_key, {"w": "1"}, maxlen=1, approximate=False)
            pipe.pexpire(self._wake_key, self._retention_ms)
            await pipe.execute()

    async def unfollow(self, site_ids: Iterable[int]) -> None:
        for site_id in site_ids:
            self._positions.pop(site_id, None)

    async def stream_events(self) -> AsyncIterator[StoredEvent]:
        while not self._stopping:
            streams: dict[Any, Any] = {self._wake_key: self._wake_position}
            streams.update({self.stream_key(s): p for s, p in self._positions.items()})
            try:
                reply: Any = await self._redis.xread(streams, count=READ_COUNT, block=BLOCK_MS)
            except (RedisConnectionError, RedisTimeoutError) as exc:
                log.warning("hub reader lost Redis (%s); retrying", exc)
                self.live = False
                await asyncio.sleep(RETRY_SECONDS)
                continue
            self.live = True
            # RESP2 answers [[key, entries], ...]; RESP3 answers {key: entries}.
            items: Any = reply.items() if isinstance(reply, dict) else (reply or [])
            for raw_key, entries in items:
                key = _text(raw_key)
                if key == self._wake_key:
                    self._wake_position = _text(entries[-1][0])
                    continue
                site_id = int(key[len(self._prefix) :])
                if site_id not in self._positions:
                    continue  # unfollowed while the read was in flight
                for event in self._decode(site_id, entries):
                    self._positions[site_id] = event.id
                    yield event
