"""The collect hot path: decide in memory, write in batches, answer after the commit.

Every accepted event is durable before the visitor's request is answered, yet the database
sees one transaction per batch rather than one per event: requests that arrive while a batch
is being written wait for the next one (group commit, as databases do for their own logs).
Sessions a worker has seen are kept in memory, so continuing a visit needs no read; what the
cache says is only trusted when it proves a session active (last activity only ever grows,
so a stale entry can only look older than it is, and then the database is asked).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Table, and_, bindparam, func, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from tracker.channels import classify
from tracker.clock import Clock
from tracker.collect import (
    SESSION_TIMEOUT,
    ClientInfo,
    CollectEvent,
    CollectResult,
    NumberAssigner,
    anon_visit_key,
    consent_granted,
    new_id,
)
from tracker.collector_pg import PostgresBatchWriter
from tracker.errors import ApiError
from tracker.models import Cart, Pageview, Site, TrackedSession
from tracker.referrers import host_of, is_same_site
from tracker.web import unreachable

log = logging.getLogger("calltrack.collect")

SESSIONS: Table = TrackedSession.__table__  # type: ignore[assignment]
PAGEVIEWS: Table = Pageview.__table__  # type: ignore[assignment]
CARTS: Table = Cart.__table__  # type: ignore[assignment]

# About 1 KiB per cached visit: 100,000 visits active in the last half hour fit in ~100 MiB and
# cover far more concurrent visitors than one worker serves.
SESSION_CACHE_SIZE = 100_000
# One batch is one transaction; 500 rows keep it short (a few ms) so waiters are not delayed.
MAX_BATCH = 500
# Events in progress (looked up, queued, written), at most. While the database hangs (a
# network partition, a long lock) every waiting event holds a request and its memory; past this
# many (seconds of peak traffic), new events are refused with a 503 instead of piling up until
# the worker runs out of memory. Events already waiting are written when the database answers.
MAX_WAITING = 20_000
# Batches written at once. PostgreSQL: two, so that one batch is being built and sent while the
# other waits for its commit (the worker would otherwise sit idle during every round trip).
# SQLite has a single writer: one.
POSTGRES_WRITERS = 2
# Page ids remembered per session to drop a retried beacon without asking the database.
RECENT_PAGES = 16

Row = dict[str, Any]
# A lookup's answer: the event's visit, else None and the visit a new one forks from (if any).
Found = tuple[TrackedSession | None, TrackedSession | None]
# What one event writes: (statement name, row) pairs. A batch groups them by statement and
# runs the statements in WRITE_ORDER, so foreign keys are satisfied (sessions first).
Writes = list[tuple[str, Row]]
WRITE_ORDER = (
    "new_sessions",
    "pageviews",
    "session_pages",
    "session_seen",
    "session_consent",
    "durations",
    "carts",
)


class VisitorExcluded(Exception):
    """The event's visit belongs to a visitor on the exclusion list: nothing is stored."""


@dataclass(slots=True)
class _Pending:
    writes: Writes
    done: asyncio.Future[None]


class SessionCache:
    """Least-recently-used visits this worker has seen, with the anonymous-key index."""

    def __init__(self, size: int = SESSION_CACHE_SIZE) -> None:
        self._size = size
        self._sessions: OrderedDict[str, TrackedSession] = OrderedDict()
        self._anon: dict[str, str] = {}
        self._pages: dict[str, list[str]] = {}

    def get(self, session_id: str) -> TrackedSession | None:
        session = self._sessions.get(session_id)
        if session is not None:
            self._sessions.move_to_end(session_id)
        return session

    def by_anon_key(self, anon_key: str) -> TrackedSession | None:
        session_id = self._anon.get(anon_key)
        return self.get(session_id) if session_id else None

    def put(self, session: TrackedSession) -> None:
        self._sessions[session.id] = session
        self._sessions.move_to_end(session.id)
        if session.anon_key:
            self._anon[session.anon_key] = session.id
        while len(self._sessions) > self._size:
            old_id, old = self._sessions.popitem(last=False)
            self._pages.pop(old_id, None)
            if old.anon_key and self._anon.get(old.anon_key) == old_id:
                del self._anon[old.anon_key]

    def seen_page(self, session_id: str, page_id: str) -> bool:
        """Remember a page id; tell whether it was already recorded."""
        pages = self._pages.setdefault(session_id, [])
        if page_id in pages:
            return True
        pages.append(page_id)
        del pages[:-RECENT_PAGES]
        return False

    def forget(self, session_id: str) -> None:
        session = self._sessions.pop(session_id, None)
        self._pages.pop(session_id, None)
        if session is not None and session.anon_key:
            self._anon.pop(session.anon_key, None)


def _session_from_row(row: Any) -> TrackedSession:
    return TrackedSession(**dict(row._mapping))


def _session_values(session: TrackedSession) -> dict[str, Any]:
    return {column.key: getattr(session, column.key) for column in SESSIONS.columns}


class Collector:
    """Record snippet events for one worker: in-memory decisions, batched durable writes."""

    def __init__(self, engine: AsyncEngine, clock: Clock, secret: str) -> None:
        self._engine = engine
        self._clock = clock
        self._secret = secret
        self._dialect = engine.dialect.name
        self.cache = SessionCache()
        self._queue: list[_Pending] = []
        self._waiting = 0  # events in progress: being looked up, queued or written
        self._writers: set[asyncio.Task[None]] = set()
        # PostgreSQL (asyncpg) writes a batch as one statement of its own, with rows in lock
        # order (tracker/collector_pg.py); anything else takes the generic one-writer path.
        one_statement = self._dialect == "postgresql" and engine.dialect.driver == "asyncpg"
        self._max_writers = POSTGRES_WRITERS if one_statement else 1
        # Sessions whose first row is in a batch not yet committed: a later event of the same
        # visit waits for that commit, so it can never be written (by the other writer) first.
        self._inserting: dict[str, asyncio.Future[None]] = {}
        # Lookups in progress by keyed visit hash: two first events of one browser that arrive
        # together (a pageview and a cart) must find one visit, not start two.
        self._finding: dict[str, asyncio.Future[None]] = {}
        self._postgres = (
            PostgresBatchWriter(engine, SESSIONS, PAGEVIEWS, CARTS, self._max_writers)
            if one_statement
            else None
        )
        self._statements = self._build_statements() if self._postgres is None else {}
        # (account id, visitor id) -> is that visitor on the exclusion list? Set by the privacy
        # domain (tracker.privacy.exclusion); the collect handler checks an event's own `v`.
        self.excluded_visitor: Callable[[int, str], Awaitable[bool]] | None = None

    # -- reading -------------------------------------------------------------------------

    async def _load(self, condition: Any) -> TrackedSession | None:
        query = select(SESSIONS).where(condition).order_by(SESSIONS.c.last_seen_at.desc()).limit(1)
        async with self._engine.connect() as connection:
            row = (await connection.execute(query)).first()
        if row is None:
            return None
        session = _session_from_row(row)
        self.cache.put(session)
        return session

    def _cached_session(
        self, site: Site, event: CollectEvent, now: dt.datetime
    ) -> TrackedSession | None:
        """The event's visit when this worker's cache proves it active (most events)."""
        if not event.session_id:
            return None
        session = self.cache.get(event.session_id)
        if not _usable(session, site, event, now - SESSION_TIMEOUT) or _unsure(session, event):
            return None
        assert session is not None
        return None if _other_visitor(session, event) else session

    async def _find_session_once(
        self, site: Site, event: CollectEvent, anon_key: str | None, now: dt.datetime
    ) -> Found:
        """Find the event's visit; lookups of the same browser wait for each other.

        The caller starts a visit right after a miss, without awaiting anything in between,
        so a lookup that waited here finds the visit the previous one started.
        """
        if anon_key is None:
            return await self._find_session(site, event, anon_key, now)
        while (pending := self._finding.get(anon_key)) is not None:
            await asyncio.wait([pending])
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._finding[anon_key] = done
        try:
            return await self._find_session(site, event, anon_key, now)
        finally:
            del self._finding[anon_key]
            done.set_result(None)

    async def _find_session(
        self, site: Site, event: CollectEvent, anon_key: str | None, now: dt.datetime
    ) -> Found:
        """The event's visit, else (None, the visit a new one forks from, if any)."""
        cutoff = now - SESSION_TIMEOUT

        def usable(session: TrackedSession | None) -> bool:
            return _usable(session, site, event, cutoff)

        parent: TrackedSession | None = None
        if event.session_id:
            session = self.cache.get(event.session_id)
            if not usable(session) or _unsure(session, event):
                session = await self._load(SESSIONS.c.id == event.session_id)
            if usable(session):
                assert session is not None
                if not _other_visitor(session, event):
                    return session, None
                # Two browsers shared this visit (same day, address and browser, before either
                # consented) and another one's visitor owns it now: this browser forks it.
                parent = session
        if event.visitor_id:
            session = await self._load(
                and_(
                    SESSIONS.c.site_id == site.id,
                    SESSIONS.c.visitor_id == event.visitor_id,
                    SESSIONS.c.last_seen_at > cutoff,
                )
            )
            if usable(session):
                return session, None
        if anon_key and event.type != "leave" and parent is None and _continues(site, event):
            session = self.cache.by_anon_key(anon_key)
            if not usable(session) or _unsure(session, event):
                session = await self._load(
                    and_(
                        SESSIONS.c.site_id == site.id,
                        SESSIONS.c.anon_key == anon_key,
                        SESSIONS.c.last_seen_at > cutoff,
                    )
                )
            if usable(session):
                assert session is not None
                if not _other_visitor(session, event):
                    return session, None
        return None, parent

    # -- deciding ------------------------------------------------------------------------

    async def record(
        self,
        site: Site,
        event: CollectEvent,
        client: ClientInfo,
        numbers: NumberAssigner | None = None,
    ) -> CollectResult:
        """Apply one snippet event; return once it is committed."""
        if self._waiting >= MAX_WAITING:
            # Before anything is decided or looked up: the database is not keeping up (or
            # hangs). A TimeoutError is a 503 with Retry-After, with CORS for the snippet.
            raise TimeoutError(f"{self._waiting} events are already waiting for the database")
        self._waiting += 1
        try:
            return await self._record(site, event, client, numbers)
        except IntegrityError:
            # The cached visit was deleted meanwhile (an erasure or a purge on another worker):
            # the cache entry is gone now, so the retry reads the database and starts afresh.
            log.info("collect retried after its visit disappeared")
            return await self._record(site, event, client, numbers)
        finally:
            self._waiting -= 1

    async def _record(
        self,
        site: Site,
        event: CollectEvent,
        client: ClientInfo,
        numbers: NumberAssigner | None,
    ) -> CollectResult:
        now = self._clock.now()
        consent = consent_granted(site, event, client)
        anon_key: str | None = None
        session = self._cached_session(site, event, now)
        parent: TrackedSession | None = None
        if session is None:
            # Only a visit this worker does not hold needs the keyed hash (an HMAC per event).
            anon_key = anon_visit_key(self._secret, site.id, client, now)
            session, parent = await self._find_session_once(site, event, anon_key, now)
        if (
            session is not None
            and session.visitor_id
            and session.visitor_id != event.visitor_id
            and self.excluded_visitor is not None
            and await self.excluded_visitor(site.account_id, session.visitor_id)
        ):
            # An excluded visitor's page that sends its visit's id but no `v` (consent withdrawn
            # on that page): their visit is not tracked any further either.
            raise VisitorExcluded(session.id)
        if session is not None:
            inserting = self._inserting.get(session.id)
            if inserting is not None and not inserting.done():
                await asyncio.wait([inserting])
        writes: Writes = []
        new_session = session is None
        if session is None:
            if event.type == "leave":
                raise ApiError("unknown_session", "leave needs a session that exists", status=409)
            # An event without a page address (a cart, a ping) after 30 idle minutes: the new
            # visit lands on the page the previous one was on, not on an invented home page.
            previous = self.cache.get(event.session_id) if event.session_id else None
            page = previous.current_url if previous and previous.site_id == site.id else None
            session = _start_session(site, event, client, anon_key, consent, now, parent, page)
            self.cache.put(session)
        elif event.type != "leave" and session.last_seen_at < now:
            session.last_seen_at = now

        withdrawn = (not consent and event.consent is False) or event.gpc or client.gpc_header
        if withdrawn and (session.consent or session.visitor_id):
            # Withdrawn consent (or GPC): the visit goes on, unlinked from any visitor.
            session.consent = False
            session.visitor_id = None
            writes.append(("session_consent", _consent_row(session)))
        elif consent and not session.consent:
            session.consent = True
            session.visitor_id = session.visitor_id or event.visitor_id or new_id()
            if not new_session:
                writes.append(("session_consent", _consent_row(session)))

        pageview: dict[str, Any] | None = None
        if event.type == "pageview":
            if not self.cache.seen_page(session.id, event.page_id):
                url = event.url or session.current_url or session.landing_url
                pageview = {
                    "site_id": site.id,
                    "session_id": session.id,
                    "page_id": event.page_id,
                    "url": url,
                    "title": event.title,
                    "viewed_at": now,
                    "duration_ms": 0,
                }
                writes.append(("pageviews", pageview))
                session.current_url = url
                session.current_title = event.title
                if new_session:
                    session.pageview_count = 1
                else:
                    session.pageview_count = (session.pageview_count or 0) + 1
                    writes.append(
                        (
                            "session_pages",
                            {
                                "b_id": session.id,
                                "b_seen": now,
                                "b_url": url,
                                "b_title": event.title,
                            },
                        )
                    )
        elif not new_session and event.type != "leave":
            writes.append(("session_seen", {"b_id": session.id, "b_seen": now}))
        if event.duration_ms is not None and not new_session:
            writes.append(
                (
                    "durations",
                    {
                        "b_session": session.id,
                        "b_page": event.page_id,
                        "b_duration": event.duration_ms,
                    },
                )
            )
        if event.type == "cart" and event.cart is not None:
            items = [item.as_json() for item in event.cart.items]
            writes.append(
                (
                    "carts",
                    {
                        "session_id": session.id,
                        "site_id": site.id,
                        "items": items,
                        "total": event.cart.total,
                        "currency": event.cart.currency,
                        "item_count": sum(item.qty for item in event.cart.items),
                        "updated_at": now,
                    },
                )
            )
        if new_session:
            writes.append(("new_sessions", _session_values(session)))
        try:
            await self._submit(writes, session.id if new_session else None)
        except Exception:
            # The database refused: drop what the cache believes so the next event re-reads.
            self.cache.forget(session.id)
            raise
        result = CollectResult(
            session=session,
            new_session=new_session,
            # Only to a browser that consents (see NumberService.numbers_for_session).
            visitor_id=session.visitor_id if consent else None,
            pageview_data=pageview,
        )
        if event.type == "leave":
            # A leave says nothing about numbers. Its answer can arrive after the next
            # pageview's (an SPA route change sends both at once): an empty list there would
            # put the business number back; None keeps what the page shows.
            result.numbers = None
        elif numbers is not None:
            try:
                result.numbers = await numbers.numbers_for_session(
                    site, session, now, consent=consent
                )
            except Exception as exc:
                if not unreachable(exc):
                    raise
                # The event is stored; only the number pool (Redis) is away. Answer without
                # numbers: the page keeps what it shows (its last numbers, else the business
                # number) instead of losing the visit's id to a 503.
                log.warning("numbers unavailable for session %s: %r", session.id, exc)
                result.numbers = None
        return result

    # -- writing -------------------------------------------------------------------------

    def _build_statements(self) -> dict[str, Any]:
        insert = postgresql.insert if self._dialect == "postgresql" else sqlite.insert
        cart_insert = insert(CARTS)
        cart_upsert = cart_insert.on_conflict_do_update(
            index_elements=[CARTS.c.session_id],
            set_={
                "items": cart_insert.excluded["items"],
                "total": cart_insert.excluded.total,
                "currency": cart_insert.excluded.currency,
                "item_count": cart_insert.excluded.item_count,
                "updated_at": cart_insert.excluded.updated_at,
            },
        )
        pageview_insert = insert(PAGEVIEWS).on_conflict_do_nothing(
            index_elements=[PAGEVIEWS.c.session_id, PAGEVIEWS.c.page_id]
        )
        return {
            "new_sessions": SESSIONS.insert(),
            "pageviews": pageview_insert,
            "session_pages": update(SESSIONS)
            .where(SESSIONS.c.id == bindparam("b_id"))
            .values(
                last_seen_at=bindparam("b_seen"),
                # Counted, not incremented: a pageview sent again adds no row (see
                # collector_pg), and the insert above is in this transaction.
                pageview_count=select(func.count())
                .select_from(PAGEVIEWS)
                .where(PAGEVIEWS.c.session_id == bindparam("b_id"))
                .scalar_subquery(),
                current_url=bindparam("b_url"),
                current_title=bindparam("b_title"),
            ),
            "session_seen": update(SESSIONS)
            .where(
                SESSIONS.c.id == bindparam("b_id"), SESSIONS.c.last_seen_at < bindparam("b_seen")
            )
            .values(last_seen_at=bindparam("b_seen")),
            "session_consent": update(SESSIONS)
            .where(SESSIONS.c.id == bindparam("b_id"))
            .values(consent=bindparam("b_consent"), visitor_id=bindparam("b_visitor")),
            # Durations only grow: a late heartbeat must not shorten what a beacon recorded.
            "durations": update(PAGEVIEWS)
            .where(
                PAGEVIEWS.c.session_id == bindparam("b_session"),
                PAGEVIEWS.c.page_id == bindparam("b_page"),
                PAGEVIEWS.c.duration_ms < bindparam("b_duration"),
            )
            .values(duration_ms=bindparam("b_duration")),
            "carts": cart_upsert,
        }

    async def _submit(self, writes: Writes, new_session_id: str | None) -> None:
        if not writes:
            return
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._queue.append(_Pending(writes, done))
        if new_session_id is not None:
            self._inserting[new_session_id] = done
        if len(self._writers) < self._max_writers:
            writer = asyncio.create_task(self._flush_loop())
            self._writers.add(writer)
            writer.add_done_callback(self._writers.discard)
        try:
            await done
        finally:
            if new_session_id is not None and self._inserting.get(new_session_id) is done:
                del self._inserting[new_session_id]

    async def _flush_loop(self) -> None:
        try:
            await self._flush_queue()
        finally:
            # At once, not in a done-callback: an event queued between this writer's last look
            # at the queue and a callback run later would find the writer slots still taken,
            # start no writer, and wait for the next event to arrive.
            task = asyncio.current_task()
            if task is not None:
                self._writers.discard(task)

    async def _flush_queue(self) -> None:
        while self._queue:
            batch, self._queue = self._queue[:MAX_BATCH], self._queue[MAX_BATCH:]
            try:
                await self._write(_grouped(batch))
            except Exception:
                # One bad event must not fail the others: write them one by one.
                log.warning("batch of %d events failed; retrying one by one", len(batch))
                for pending in batch:
                    try:
                        await self._write(_grouped([pending]))
                    except Exception as exc:
                        log.exception("collect write failed")
                        if not pending.done.done():
                            pending.done.set_exception(exc)
                    else:
                        if not pending.done.done():
                            pending.done.set_result(None)
                continue
            for pending in batch:
                if not pending.done.done():
                    pending.done.set_result(None)

    async def _write(self, grouped: dict[str, list[Row]]) -> None:
        if self._postgres is not None:
            await self._postgres.write(grouped)
            return
        async with self._engine.begin() as connection:
            for name in WRITE_ORDER:
                rows = grouped.get(name)
                if rows:
                    await connection.execute(self._statements[name], rows)

    async def drain(self) -> None:
        """Wait for the writes in flight (shutdown)."""
        while self._writers:
            await asyncio.wait(list(self._writers))

    async def close(self) -> None:
        """Drain, then close the collector's own connections (if it has any)."""
        await self.drain()
        if self._postgres is not None:
            await self._postgres.close()


def _grouped(batch: Sequence[_Pending]) -> dict[str, list[Row]]:
    """Group a batch's rows by statement, each statement's rows in arrival order."""
    grouped: dict[str, list[Row]] = {}
    for pending in batch:
        for name, row in pending.writes:
            grouped.setdefault(name, []).append(row)
    return grouped


def _usable(
    session: TrackedSession | None, site: Site, event: CollectEvent, cutoff: dt.datetime
) -> bool:
    """A visit of this site, active since `cutoff` (a closing `leave` may come later)."""
    return (
        session is not None
        and session.site_id == site.id
        and (session.last_seen_at > cutoff or event.type == "leave")
    )


def _unsure(session: TrackedSession | None, event: CollectEvent) -> bool:
    """This worker's copy of the visit has no visitor, and the browser brings one: it consents
    now, and another worker may have given the visit another browser's visitor meanwhile
    (two browsers of one address share a consentless visit until they consent). Read the row:
    a copy trusted here made both browsers one visit, with one number."""
    return session is not None and bool(event.visitor_id) and not session.visitor_id


def _other_visitor(session: TrackedSession, event: CollectEvent) -> bool:
    """The visit belongs to another consenting browser (each one makes its own visitor id)."""
    return bool(event.visitor_id and session.visitor_id and event.visitor_id != session.visitor_id)


def _continues(site: Site, event: CollectEvent) -> bool:
    """May an event that does not name its visit join the visit of the same day, address and
    browser (the consentless stitching)? A page reached by a link of the site, reloaded or
    reached with the back button continues a visit. A page opened from elsewhere (another
    site, an ad, a bookmark, a typed address) starts one: otherwise every visitor behind one
    office address with the same browser, or a test's fresh browser contexts, would merge into
    the first one's visit and show its numbers. Events of an older snippet, which does not say
    how its page was loaded, and events other than pageviews continue as before.
    """
    if event.type != "pageview" or event.navigation in (None, "reload", "back_forward"):
        return True
    referrer_host = host_of(event.referrer or "")
    return bool(referrer_host) and is_same_site(
        referrer_host, host_of(event.url or ""), site.domain
    )


def _consent_row(session: TrackedSession) -> dict[str, Any]:
    return {"b_id": session.id, "b_consent": session.consent, "b_visitor": session.visitor_id}


def _start_session(
    site: Site,
    event: CollectEvent,
    client: ClientInfo,
    anon_key: str | None,
    consent: bool,
    now: dt.datetime,
    parent: TrackedSession | None = None,
    page: str | None = None,
) -> TrackedSession:
    landing = event.url or page or f"https://{site.domain}/"
    referrer = event.referrer if event.type == "pageview" else None
    attribution = classify(landing, referrer, site_domain=site.domain)
    geo = client.geo_lookup(client.ip)
    session = TrackedSession(
        id=new_id(),
        site_id=site.id,
        visitor_id=(event.visitor_id or new_id()) if consent else None,
        anon_key=anon_key,
        consent=consent,
        started_at=now,
        last_seen_at=now,
        landing_url=landing,
        referrer=referrer,
        channel=attribution.channel,
        source=attribution.source,
        medium=attribution.medium,
        campaign=attribution.campaign,
        term=attribution.term,
        content=attribution.content,
        click_ids=dict(attribution.click_ids),
        gclid=attribution.click_ids.get("gclid"),
        ip_truncated=client.ip_truncated,
        country=geo.country,
        region=geo.region,
        city=geo.city,
        browser=client.device.browser,
        os=client.device.os,
        device=client.device.device,
        language=event.language,
        pageview_count=0,
        current_url=landing,
        current_title=event.title,
    )
    if parent is not None:
        # A fork keeps where the shared visit came from: this browser arrived that way too.
        for name in _ORIGIN_FIELDS:
            setattr(session, name, getattr(parent, name))
        session.click_ids = dict(parent.click_ids or {})
    return session


# Where a visit came from (`_start_session` copies them into a fork).
_ORIGIN_FIELDS = ("landing_url", "referrer", "channel", "source", "medium", "campaign", "term",
                  "content", "gclid")  # fmt: skip
