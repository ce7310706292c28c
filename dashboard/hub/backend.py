"""The fan-out backend interface: one resumable stream of events per site.

Two implementations (`memory.MemoryHub`, `redis.RedisHub`) pass the same test suite
(tests/test_hub_backends.py). A backend stores and relays events; the `Hub` in
`dashboard.hub.connection` turns them into frames for the local websockets.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Collection, Iterable
from dataclasses import dataclass

# Ids are Redis stream ids, "<milliseconds>-<sequence>", compared as integer pairs.
EventId = tuple[int, int]
_ID = re.compile(r"^(\d{1,15})-(\d{1,15})\Z")
ZERO_ID: EventId = (0, 0)


def parse_event_id(text: str) -> EventId:
    """Parse "<ms>-<seq>"; raise ValueError for anything else."""
    match = _ID.match(text) if isinstance(text, str) else None
    if match is None:
        raise ValueError(f"{text!r} is not a stream id like 1767603600000-0")
    return int(match[1]), int(match[2])


def format_event_id(event_id: EventId) -> str:
    return f"{event_id[0]}-{event_id[1]}"


@dataclass(frozen=True, slots=True)
class StoredEvent:
    """One event of a site's stream; `data` is already JSON text so fan-out never re-encodes."""

    site_id: int
    id: str
    kind: str
    at: str
    data: str

    @property
    def key(self) -> EventId:
        return parse_event_id(self.id)


@dataclass(frozen=True, slots=True)
class Replay:
    """What a stream still holds after an id; `gap` means some events in between may be lost."""

    events: list[StoredEvent]
    gap: bool


class HubBackend(ABC):
    """Store, replay and relay site events (in one process or across workers)."""

    @abstractmethod
    async def start(self) -> None:
        """Open what the backend needs (called once, before any other method)."""

    @abstractmethod
    async def stop(self) -> None:
        """Release everything; `stream_events` ends."""

    @abstractmethod
    async def publish(self, site_id: int, kind: str, at: str, data: str) -> StoredEvent:
        """Append an event to the site's stream, trim what is past retention, return it."""

    @abstractmethod
    async def read_after(self, site_id: int, after: str) -> Replay:
        """Return the stream's events after `after`, oldest first, and whether some are lost."""
        # `gap` is true unless `after` is "0-0" or the event `after` itself is still held:
        # trimming only drops the oldest events, so then nothing after it was dropped.

    @abstractmethod
    async def forget(self, site_ids: Iterable[int], tokens: Collection[str]) -> int:
        """Delete the stored events of these sites whose data names any of `tokens` (erasure);
        return how many were deleted. Consoles resuming later no longer receive them."""

    # False while the backend cannot deliver events (its store is unreachable); consoles are
    # told (a `status` message), and resync when it is back.
    live: bool = True

    def may_be_wanted(self, site_id: int) -> bool:
        """Tell whether an event of this site could reach a console, live or on resume.

        A backend shared by several workers cannot know what the others follow: yes.
        """
        return True

    @abstractmethod
    async def follow(self, site_ids: Iterable[int]) -> None:
        """Relay these sites' events published from now on through `stream_events`."""

    @abstractmethod
    async def unfollow(self, site_ids: Iterable[int]) -> None:
        """Stop relaying these sites' events."""

    @abstractmethod
    def stream_events(self) -> AsyncIterator[StoredEvent]:
        """Yield the followed streams' events, each stream in id order (one consumer)."""
