"""Console connections and the local fan-out over a backend.

Each connection owns a bounded send queue drained by one writer task (Home Assistant's
websocket_api pattern). Fan-out only appends to queues, so one slow browser never delays the
others: when its queue is full it is closed with 4008 and resumes from its last ids.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections import deque
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NamedTuple

from aiohttp import WSCloseCode, WSMsgType, web

from dashboard.hub.backend import EventId, HubBackend, Replay, StoredEvent, parse_event_id
from dashboard.hub.const import (
    CLOSE_IDLE,
    CLOSE_SESSION_EXPIRED,
    CLOSE_SLOW_CONSUMER,
    ERASURE_POLL,
    HEARTBEAT_INTERVAL,
    IDLE_TIMEOUT,
    LOGIN_RECHECK,
    RESYNC_INTERVAL,
    SEND_QUEUE_SIZE,
    SHUTDOWN_GRACE,
    WRITE_BUFFER_LIMIT,
)
from tracker.clock import Clock, SystemClock

if TYPE_CHECKING:
    from dashboard.auth import Auth
    from tracker.models import User

log = logging.getLogger("calltrack.hub")


class Frame(NamedTuple):
    """A message as JSON and as the bytes of its websocket frame, both built once."""

    payload: bytes
    wire: bytes


def text_frame(payload: bytes) -> Frame:
    """Wrap JSON in a server-to-client text frame (RFC 6455 section 5.2: unmasked, FIN set)."""
    # A server frame is the same for every recipient: an event is framed once for all its
    # consoles, not once per socket as `WebSocketResponse.send_frame` would.
    length = len(payload)
    if length < 126:
        header = bytes((0x81, length))
    elif length < 65536:
        header = b"\x81\x7e" + length.to_bytes(2, "big")
    else:
        header = b"\x81\x7f" + length.to_bytes(8, "big")
    return Frame(payload, header + payload)


def dumps(message: Any) -> Frame:
    """Encode a message once; every console receives the same bytes."""
    return text_frame(json.dumps(message, ensure_ascii=False, separators=(",", ":")).encode())


def event_frame(event: StoredEvent, site_key: str) -> Frame:
    """Build the event message around the stored JSON data without decoding it."""
    site, kind, at = json.dumps(site_key), json.dumps(event.kind), json.dumps(event.at)
    head = f'{{"type":"event","event":{{"id":"{event.id}","site":{site},"kind":{kind},"at":{at},'
    return text_frame(f'{head}"data":{event.data}}}}}'.encode())


class Connection:
    """One console websocket: who is connected, what it follows, and its send queue."""

    def __init__(
        self,
        ws: web.WebSocketResponse,
        auth: Auth,
        *,
        queue_size: int = SEND_QUEUE_SIZE,
        ip_truncated: str | None = None,
        transport: asyncio.Transport | None = None,
    ) -> None:
        self.ws = ws
        self._transport = transport
        self.user: User = auth.user
        self.account_id = auth.user.account_id
        self.login_expires_at = auth.login.expires_at
        self.login_token_hash = auth.login.token_hash
        self.ip_truncated = ip_truncated
        self.last_message_id = 0
        # Subscribed site id → site key.
        self.sites: dict[int, str] = {}
        # The first snapshot of a connection is audited (who saw the live list, from where);
        # the console's minute refreshes of the same list are not.
        self.snapshot_audited = False
        self._loop = asyncio.get_running_loop()
        self.last_received = self._loop.time()
        # Each console is pinged on its own schedule (from when it connected), so that ten
        # thousand consoles do not all answer in the same instant.
        self.next_ping_at = self.last_received
        self._queue: deque[Frame] = deque()
        self._queue_size = queue_size
        self._ready: asyncio.Future[None] | None = None
        self._space: asyncio.Future[None] | None = None
        self._closing = False
        # Live events held while a subscribe reads its replay, released after it in id order.
        self._held: dict[int, list[tuple[EventId, Frame]]] = {}
        # After a replay: live events at or below these ids were already sent.
        self._floors: dict[int, EventId] = {}
        self._writer: asyncio.Task[None] | None = None
        self._closer: asyncio.Task[Any] | None = None

    @property
    def closing(self) -> bool:
        return self._closing

    def start(self) -> None:
        self._writer = asyncio.create_task(self._write_loop(), name="hub-writer")

    def touch(self) -> None:
        self.last_received = self._loop.time()
        # Each console is pinged on its own schedule (from when it connected), so that ten
        # thousand consoles do not all answer in the same instant.
        self.next_ping_at = self.last_received

    def send(self, frame: Frame) -> None:
        """Send or queue a message; a full queue means a slow consumer, which is let go."""
        if self._closing:
            return
        transport = self._transport
        if (
            not self._queue
            and self._ready is not None
            and transport is not None
            and transport.get_write_buffer_size() < WRITE_BUFFER_LIMIT
            and not transport.is_closing()
            and not self.ws.closed
        ):
            # The writer is idle and the socket keeps up: write now, in order, without waking
            # a task per console per event (which would cost more than the write itself).
            transport.write(frame.wire)
            return
        if len(self._queue) >= self._queue_size:
            self.close_soon(CLOSE_SLOW_CONSUMER, "slow consumer")
            return
        self._queue.append(frame)
        ready = self._ready
        if ready is not None and not ready.done():
            ready.set_result(None)

    def send_message(self, message: Mapping[str, Any]) -> None:
        self.send(dumps(message))

    def send_result(self, message_id: int, result: Mapping[str, Any] | None) -> None:
        self.send_message({"id": message_id, "type": "result", "success": True, "result": result})

    def send_error(self, message_id: int, code: str, text: str) -> None:
        self.send_message(
            {
                "id": message_id,
                "type": "result",
                "success": False,
                "error": {"code": code, "message": text},
            }
        )

    async def send_paced(self, frame: Frame) -> None:
        """Queue a message once there is room (replays go at the pace the browser reads)."""
        while len(self._queue) >= self._queue_size and not self._closing:
            self._space = self._loop.create_future()
            await self._space
        self.send(frame)

    def deliver(self, site_id: int, key: EventId, frame: Frame) -> None:
        """Take a live event of a subscribed site."""
        if self._held or self._floors:
            held = self._held.get(site_id)
            if held is not None:
                if len(held) >= self._queue_size:
                    self.close_soon(CLOSE_SLOW_CONSUMER, "slow consumer")
                else:
                    held.append((key, frame))
                return
            floor = self._floors.get(site_id)
            if floor is not None:
                if key <= floor:
                    return
                del self._floors[site_id]
        self.send(frame)

    def hold(self, site_id: int) -> None:
        self._held.setdefault(site_id, [])

    def release(self, site_id: int) -> None:
        self._held.pop(site_id, None)

    async def replay(self, site_id: int, after: EventId | None, replay: Replay | None) -> None:
        """Send a site's missed events, then the live ones held meanwhile, without doubles."""
        floor = after
        if replay is not None:
            for event in replay.events:
                await self.send_paced(event_frame(event, self.sites.get(site_id, "")))
            if replay.events:
                floor = replay.events[-1].key
        held = self._held.pop(site_id, [])
        for key, frame in held:
            if floor is None or key > floor:
                self.send(frame)
                floor = key
        if floor is not None:
            self._floors[site_id] = floor

    def close_soon(self, code: int, reason: str) -> None:
        """Stop sending and close the socket with this code (from any task, never blocking)."""
        if self._closing:
            return
        self._closing = True
        self._queue.clear()
        self._held.clear()
        for waiter in (self._ready, self._space):
            if waiter is not None and not waiter.done():
                waiter.set_result(None)
        # drain=False: a slow consumer's full socket buffer must not keep us waiting.
        self._closer = asyncio.create_task(
            self.ws.close(code=code, message=reason.encode(), drain=False)
        )

    @property
    def closer(self) -> asyncio.Task[Any] | None:
        return self._closer

    async def stop(self) -> None:
        """Stop the writer once the socket is done."""
        self._closing = True
        if self._writer is not None:
            self._writer.cancel()
            await asyncio.gather(self._writer, return_exceptions=True)

    async def _write_loop(self) -> None:
        queue = self._queue
        send_frame = self.ws.send_frame
        try:
            while not self._closing:
                if not queue:
                    self._ready = self._loop.create_future()
                    await self._ready
                    self._ready = None
                    continue
                frame = queue.popleft()
                space = self._space
                if space is not None and not space.done():
                    space.set_result(None)
                await send_frame(frame.payload, WSMsgType.TEXT)
        except (ConnectionError, RuntimeError):
            # The browser went away; the handler's receive loop sees it and cleans up.
            self._closing = True


@dataclass
class HubOptions:
    """Limits of the hub; tests shrink them (a queue of 2, heartbeats in milliseconds)."""

    queue_size: int = SEND_QUEUE_SIZE
    heartbeat_interval: float = HEARTBEAT_INTERVAL
    idle_timeout: float = IDLE_TIMEOUT
    login_recheck: float = LOGIN_RECHECK
    resync_interval: float = RESYNC_INTERVAL
    erasure_poll: float = ERASURE_POLL


class Hub:
    """Route a backend's events to this process's subscribed connections."""

    def __init__(self, options: HubOptions | None = None) -> None:
        self.options = options or HubOptions()
        self.backend: HubBackend | None = None
        self.connections: set[Connection] = set()
        self._clock: Clock = SystemClock()
        self._subscribers: dict[int, set[Connection]] = {}
        self._tasks: list[asyncio.Task[None]] = []
        # Sites whose events the backend failed to store (Redis unreachable): their consoles
        # missed something and get a `hub.resync` once the backend answers again.
        self._lost: set[int] = set()
        # What consoles were last told: whether live events reach them (`status` messages).
        self.live = True

    async def start(self, backend: HubBackend, clock: Clock) -> None:
        self.backend = backend
        self._clock = clock
        await backend.start()
        self._tasks = [
            asyncio.create_task(self._dispatch(backend), name="hub-dispatch"),
            asyncio.create_task(self._heartbeat(), name="hub-heartbeat"),
            asyncio.create_task(self._resync_lost(backend), name="hub-resync"),
        ]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        if self.backend is not None:
            await self.backend.stop()

    def close_logins(self, token_hashes: Collection[str]) -> int:
        """Close the consoles of these sign-ins (signed out, or no longer valid); say how many."""
        closed = 0
        for connection in list(self.connections):
            if connection.login_token_hash in token_hashes and not connection.closing:
                connection.close_soon(CLOSE_SESSION_EXPIRED, "signed out")
                closed += 1
        return closed

    async def close_all(self, code: int = WSCloseCode.GOING_AWAY, reason: str = "") -> None:
        """Close every console (server shutdown: they reconnect to another worker)."""
        for connection in list(self.connections):
            connection.close_soon(code, reason or "server shutdown")
        closers = [c.closer for c in self.connections if c.closer is not None]
        if closers:
            # The close frames are written at once; waiting longer for each browser's answer
            # would only hold up the restart (aiohttp waits up to 10 s per socket).
            await asyncio.wait(closers, timeout=SHUTDOWN_GRACE)

    def add(self, connection: Connection) -> None:
        self.connections.add(connection)
        connection.start()
        if not self.live:
            connection.send(self._status_frame())

    def _status_frame(self) -> Frame:
        return dumps({"type": "status", "live": self.live, "at": self._clock.now().isoformat()})

    def _tell_status(self) -> None:
        """Tell every console when live events stop reaching it, and when they are back."""
        live = self.backend is not None and self.backend.live and not self._lost
        if live == self.live:
            return
        self.live = live
        log.warning(
            "console events %s", "flow again" if live else "paused: the hub's store is away"
        )
        frame = self._status_frame()
        for connection in list(self.connections):
            connection.send(frame)

    async def remove(self, connection: Connection) -> None:
        self.connections.discard(connection)
        await self.unsubscribe(connection, list(connection.sites))
        await connection.stop()

    async def publish(self, site_id: int, kind: str, data: Mapping[str, Any]) -> StoredEvent:
        if self.backend is None:
            raise RuntimeError("the hub is not started")
        text = json.dumps(data, ensure_ascii=False, separators=(",", ":"))
        try:
            return await self.backend.publish(site_id, kind, self._clock.now().isoformat(), text)
        except Exception:
            self._lost.add(site_id)
            raise

    async def _resync_lost(self, backend: HubBackend) -> None:
        """Tell the consoles of sites whose events were lost to rebuild their state.

        The event itself cannot be published again (the request that caused it has been
        answered; its data may be stale by now), but what it reported is in the database, which
        a console's `snapshot` reads. A `hub.resync` on the site's stream reaches every console
        of the site, on every worker, live or when it resumes.
        """
        while True:
            await asyncio.sleep(self.options.resync_interval)
            if not self._lost:
                continue
            lost = sorted(self._lost)
            self._lost.clear()
            for index, site_id in enumerate(lost):
                try:
                    await backend.publish(
                        site_id, "hub.resync", self._clock.now().isoformat(), "{}"
                    )
                except Exception as exc:
                    # Still unreachable: keep the rest for the next round.
                    self._lost.update(lost[index:])
                    log.debug("hub resync of site %s not published yet: %r", site_id, exc)
                    break
                log.info("consoles of site %s told to resync after lost events", site_id)

    async def subscribe(
        self, connection: Connection, sites: Mapping[int, str], last_ids: Mapping[int, str]
    ) -> dict[int, Replay]:
        """Follow these sites (only these) and read what the connection missed."""
        # Live events are held from before the replay is read until `Connection.replay` sends
        # it, so nothing falls between the two and nothing is sent twice.
        assert self.backend is not None
        await self.unsubscribe(connection, [s for s in connection.sites if s not in sites])
        for site_id, site_key in sites.items():
            connection.hold(site_id)
            connection.sites[site_id] = site_key
            self._subscribers.setdefault(site_id, set()).add(connection)
        try:
            await self.backend.follow(sites)
            return {
                site_id: await self.backend.read_after(site_id, last_id)
                for site_id, last_id in last_ids.items()
            }
        except BaseException:
            await self.unsubscribe(connection, list(sites))
            raise

    async def finish_subscribe(
        self, connection: Connection, last_ids: Mapping[int, str], replays: Mapping[int, Replay]
    ) -> None:
        """Send each site's replay and release its held live events."""
        for site_id in list(connection.sites):
            last = last_ids.get(site_id)
            after = parse_event_id(last) if last is not None else None
            await connection.replay(site_id, after, replays.get(site_id))

    async def unsubscribe(self, connection: Connection, site_ids: list[int]) -> None:
        unfollowed = []
        for site_id in site_ids:
            connection.sites.pop(site_id, None)
            connection.release(site_id)
            subscribers = self._subscribers.get(site_id)
            if subscribers is not None:
                subscribers.discard(connection)
                if not subscribers:
                    del self._subscribers[site_id]
                    unfollowed.append(site_id)
        if unfollowed and self.backend is not None:
            await self.backend.unfollow(unfollowed)

    def may_be_wanted(self, site_id: int) -> bool:
        """Whether publishing a visitor event of this site can reach anyone (see backends)."""
        return self.backend is not None and self.backend.may_be_wanted(site_id)

    async def _dispatch(self, backend: HubBackend) -> None:
        while True:
            try:
                async for event in backend.stream_events():
                    self._fan_out(event)
                return
            except asyncio.CancelledError:
                raise
            except Exception:
                # Never let one bad event stop the console for everyone; keep reading.
                log.exception("hub dispatch failed; restarting the reader")
                await asyncio.sleep(1)

    def _fan_out(self, event: StoredEvent) -> None:
        subscribers = self._subscribers.get(event.site_id)
        if not subscribers:
            return
        key = event.key
        site_key = next(iter(subscribers)).sites.get(event.site_id, "")
        frame = event_frame(event, site_key)
        for connection in list(subscribers):
            connection.deliver(event.site_id, key, frame)

    async def _heartbeat(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            interval = self.options.heartbeat_interval
            # A tick of a twentieth of the interval (1 s) spreads the pings and their answers.
            await asyncio.sleep(interval / 20)
            self._tell_status()
            now = loop.time()
            wall = self._clock.now()
            ping: Frame | None = None
            for connection in list(self.connections):
                if now - connection.last_received > self.options.idle_timeout:
                    connection.close_soon(CLOSE_IDLE, "no message for too long")
                elif connection.login_expires_at <= wall:
                    connection.close_soon(CLOSE_SESSION_EXPIRED, "signed out")
                elif now >= connection.next_ping_at + interval:
                    connection.next_ping_at = now
                    ping = ping or dumps({"type": "ping", "at": wall.isoformat()})
                    connection.send(ping)
