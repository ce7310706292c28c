"""The in-process backend (embedded default): a deque per site, trimmed by age; asyncio only."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections import deque
from collections.abc import AsyncIterator, Collection, Iterable
from dataclasses import dataclass, field

from dashboard.hub.backend import (
    ZERO_ID,
    EventId,
    HubBackend,
    Replay,
    StoredEvent,
    format_event_id,
    parse_event_id,
)
from dashboard.hub.const import MAX_EVENTS_PER_STREAM, RETENTION
from tracker.clock import Clock


def _ms(when: dt.datetime) -> int:
    return int(when.timestamp() * 1000)


@dataclass
class _Stream:
    events: deque[tuple[EventId, StoredEvent]] = field(default_factory=deque)
    last: EventId = ZERO_ID


class MemoryHub(HubBackend):
    """Keep each site's recent events in memory and relay them in the same process."""

    def __init__(
        self,
        clock: Clock,
        *,
        retention: dt.timedelta = RETENTION,
        max_events: int = MAX_EVENTS_PER_STREAM,
    ) -> None:
        self._clock = clock
        self._retention_ms = int(retention.total_seconds() * 1000)
        self._max_events = max_events
        self._streams: dict[int, _Stream] = {}
        self._followed: set[int] = set()
        # When each site was last unfollowed: its events may still be replayed to a console
        # that comes back within the retention window.
        self._unfollowed_ms: dict[int, int] = {}
        self._queue: asyncio.Queue[StoredEvent | None] = asyncio.Queue()

    async def start(self) -> None:
        pass

    async def stop(self) -> None:
        self._queue.put_nowait(None)

    async def publish(self, site_id: int, kind: str, at: str, data: str) -> StoredEvent:
        now_ms = _ms(self._clock.now())
        stream = self._streams.get(site_id)
        if stream is None:
            stream = self._streams[site_id] = _Stream()
        # Like Redis: the clock may stall or step back, the ids never do.
        last_ms, last_seq = stream.last
        key = (now_ms, 0) if now_ms > last_ms else (last_ms, last_seq + 1)
        stream.last = key
        event = StoredEvent(site_id, format_event_id(key), kind, at, data)
        stream.events.append((key, event))
        self._trim(stream, now_ms - self._retention_ms)
        if site_id in self._followed:
            self._queue.put_nowait(event)
        return event

    def _trim(self, stream: _Stream, min_ms: int) -> None:
        events = stream.events
        while events and (events[0][0][0] < min_ms or len(events) > self._max_events):
            events.popleft()

    async def read_after(self, site_id: int, after: str) -> Replay:
        key = parse_event_id(after)
        stream = self._streams.get(site_id)
        newer: list[StoredEvent] = []
        # Same rule as Redis: no gap while the client's own last event is still held (an id
        # from before a restart, or trimmed away, is not).
        held_after = key == ZERO_ID
        for event_key, event in reversed(stream.events if stream is not None else ()):
            if event_key <= key:
                held_after = held_after or event_key == key
                break
            newer.append(event)
        newer.reverse()
        return Replay(newer, gap=not held_after)

    async def forget(self, site_ids: Iterable[int], tokens: Collection[str]) -> int:
        if not tokens:
            return 0
        removed = 0
        for site_id in set(site_ids):
            stream = self._streams.get(site_id)
            if stream is None:
                continue
            kept = deque(
                (key, event)
                for key, event in stream.events
                if not any(token in event.data for token in tokens)
            )
            removed += len(stream.events) - len(kept)
            stream.events = kept
        return removed

    def drop_history(self, site_ids: Iterable[int]) -> int:
        """Drop every kept event of these sites (an erasure whose identifiers are unknown here).

        A console that resumes from a dropped event is told of a gap and takes a snapshot.
        """
        dropped = 0
        for site_id in set(site_ids):
            stream = self._streams.get(site_id)
            if stream is not None:
                dropped += len(stream.events)
                stream.events = deque()
        return dropped

    def may_be_wanted(self, site_id: int) -> bool:
        """Only this process has consoles: a site nobody followed within the retention window
        has nobody to send its visitor events to, now or on a resume (a console that comes
        back later starts from a snapshot)."""
        if site_id in self._followed:
            return True
        left = self._unfollowed_ms.get(site_id)
        return left is not None and _ms(self._clock.now()) - left < self._retention_ms

    async def follow(self, site_ids: Iterable[int]) -> None:
        self._followed.update(site_ids)

    async def unfollow(self, site_ids: Iterable[int]) -> None:
        now_ms = _ms(self._clock.now())
        for site_id in site_ids:
            self._followed.discard(site_id)
            self._unfollowed_ms[site_id] = now_ms

    async def stream_events(self) -> AsyncIterator[StoredEvent]:
        while True:
            event = await self._queue.get()
            if event is None:
                return
            yield event
