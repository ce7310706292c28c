"""Dynamic number insertion: which tracking numbers a session sees, and the lease history.

`NumberService.numbers_for_session` is the `tracker.collect.NumberAssigner` of the collect
endpoint. For each business number of the site it picks, in this order (see `rules`):
a matching source number (everyone, consent or not), else the session's pool number (only with
consent), else nothing (the page keeps the business number).

The pool (`pool.NumberPool`, in process or Redis) decides who holds what, atomically; the
database keeps every lease as history, which is what call attribution reads (`lease_at`).
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Awaitable, Callable, Collection, Mapping
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, cast

from sqlalchemy import CursorResult, and_, case, exists, func, insert, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased

from tracker.db import Database
from tracker.errors import ApiError, Conflict, NotFound
from tracker.models import BusinessNumber, Lease, Site, TrackedSession, TrackingNumber
from tracker.numbers.pool import (
    RECORD_INTERVAL,
    AcquireResult,
    HeldLease,
    MemoryNumberPool,
    NumberPool,
    PoolNotLoaded,
    PoolSnapshot,
    RedisNumberPool,
    pool_key,
)
from tracker.numbers.rules import SourceRule, VisitFacts, best_match
from tracker.phones import InvalidPhoneNumber, phone_forms, to_e164

if TYPE_CHECKING:
    from redis.asyncio import Redis

    from tracker.config import Settings

log = logging.getLogger("calltrack.numbers")

# Workers see numbers added or released from another process (the CLI, another worker) within
# this time; the same delay as the site cache, for the same reason.
CACHE_TTL = dt.timedelta(seconds=30)
MAX_ADD = 500
# How far back to look for a number's last release when rebuilding a pool: older releases tie
# with never-used numbers, which costs nothing since both wait the longest already.
RELEASE_LOOKBACK = dt.timedelta(days=7)
ACTIVE = "active"
RELEASED = "released"


class Provisioned(Protocol):
    """A number a carrier provisioned (telephony.carriers.base.ProvisionedNumber fits)."""

    @property
    def e164(self) -> str: ...
    @property
    def provider(self) -> str: ...
    @property
    def provider_sid(self) -> str | None: ...
    @property
    def voice_url(self) -> str | None: ...


class NumberProvider(Protocol):
    """What provisioning needs of a carrier (telephony.carriers.base.Carrier fits).

    Declared here, structurally, so that tracker does not import telephony: dependencies point
    from telephony to tracker.
    """

    @property
    def name(self) -> str: ...
    async def search_available(
        self, country: str, count: int, contains: str | None = None
    ) -> list[str]: ...
    async def buy(self, e164: str, webhooks: Any) -> Provisioned: ...
    async def configure(self, e164: str, webhooks: Any) -> Provisioned: ...
    async def release(self, number: Any) -> None: ...


@dataclass(frozen=True)
class ProvisionedRecord:
    """A tracked number as its carrier knows it, to hand back to `release`."""

    e164: str
    provider: str
    provider_sid: str | None
    voice_url: str | None = None
    status_url: str | None = None


@dataclass(frozen=True)
class _Source:
    rule: SourceRule
    number_id: int
    to: dict[str, str]


@dataclass
class _Business:
    id: int
    e164: str
    label: str
    is_primary: bool
    snippet: dict[str, str]
    pool: dict[int, dict[str, str]] = field(default_factory=dict)
    pool_released: dict[int, dt.datetime | None] = field(default_factory=dict)
    sources: list[_Source] = field(default_factory=list)


@dataclass(frozen=True)
class _SiteNumbers:
    businesses: tuple[_Business, ...]
    expires_at: dt.datetime

    @property
    def has_pool(self) -> bool:
        return any(b.pool for b in self.businesses)


def _swap(business: _Business, to: dict[str, str], kind: str) -> dict[str, Any]:
    return {"from": dict(business.snippet), "to": dict(to), "kind": kind}


def _rowcount(result: Any) -> int:
    return int(cast(CursorResult[Any], result).rowcount)


def _latest_open_lease(session_id: str, number_id: int) -> Any:
    """Select the id of the current lease of (session, number): the latest one still open."""
    return (
        select(func.max(Lease.id))
        .where(
            Lease.session_id == session_id,
            Lease.tracking_number_id == number_id,
            Lease.ended_at.is_(None),
        )
        .scalar_subquery()
    )


_ONE_MS = dt.timedelta(milliseconds=1)

# Opens the transaction on first use: most collect events (a heartbeat of a session that
# already holds its number) need no database at all.
GetDb = Callable[[], Awaitable[AsyncSession]]


class NumberService:
    """Assign tracking numbers to sessions, provision numbers, and keep the lease history."""

    def __init__(
        self,
        pool: NumberPool,
        *,
        database: Database | None = None,
        carrier: NumberProvider | None = None,
        record_interval: dt.timedelta = RECORD_INTERVAL,
        owned_redis: Redis | None = None,
        owns_database: bool = False,
    ) -> None:
        self.pool = pool
        self.database = database
        self.carrier = carrier
        self.record_interval = record_interval
        self._cache: dict[int, _SiteNumbers] = {}
        self._owned_redis = owned_redis
        self._owns_database = owns_database

    async def aclose(self) -> None:
        """Close what the service opened itself."""
        await self.pool.aclose()
        if self._owned_redis is not None:
            await self._owned_redis.aclose()
        if self._owns_database and self.database is not None:
            await self.database.close()

    # -- what a session sees -------------------------------------------------------------------

    async def numbers_for_session(
        self, site: Site, session: TrackedSession, now: dt.datetime, *, consent: bool = True
    ) -> list[dict[str, Any]]:
        """Return the collect response's `n`, in a transaction of its own when one is needed.

        This is the `tracker.collect.NumberAssigner`; the session row is already committed.
        `consent` is the event's own (tracker.collect.consent_granted): a pool number needs it
        as well as the visit's. A browser that sends no consent gets none even where the visit
        consented: it withdrew it on a page another worker served (this worker's copy of the
        visit may not know yet), or it is another browser joined to the visit by its address.
        """
        database = self.database
        if database is None:
            raise RuntimeError("NumberService needs a Database to assign numbers on its own")
        async with AsyncExitStack() as stack:
            opened: list[AsyncSession] = []

            async def get_db() -> AsyncSession:
                if not opened:
                    opened.append(await stack.enter_async_context(database.begin()))
                return opened[0]

            return await self._assign(get_db, site, session, now, consent)

    async def assign_numbers(
        self,
        db: AsyncSession,
        site: Site,
        session: TrackedSession,
        now: dt.datetime,
        *,
        consent: bool = True,
    ) -> list[dict[str, Any]]:
        """Return the collect response's `n`, inside the caller's transaction."""

        async def get_db() -> AsyncSession:
            return db

        return await self._assign(get_db, site, session, now, consent)

    async def _assign(
        self,
        get_db: GetDb,
        site: Site,
        session: TrackedSession,
        now: dt.datetime,
        consent: bool,
    ) -> list[dict[str, Any]]:
        numbers = await self._site_numbers(get_db, site, now)
        if not numbers.businesses:
            return []
        facts: VisitFacts | None = None
        swaps = []
        for business in numbers.businesses:
            if not business.pool and not business.sources:
                continue  # a business number with no tracking numbers: nothing to swap
            if business.pool and not session.consent:
                # Consent withdrawn mid-visit: give the number back rather than let a later
                # call be attributed to a visit the visitor asked us to stop following.
                await self._release_withdrawn(get_db, site, business.id, session.id, now)
            source = None
            if business.sources:
                # Read once per event, and only for a site that has source numbers.
                facts = facts or VisitFacts.of(session)
                source = best_match(((s.rule, s.number_id, s) for s in business.sources), facts)
            if source is not None:
                swaps.append(_swap(business, source.to, "source"))
            elif session.consent and consent and business.pool:
                to = await self._lease(get_db, site, business, session.id, now)
                if to is not None:
                    swaps.append(_swap(business, to, "pool"))
        return swaps

    async def _release_withdrawn(
        self, get_db: GetDb, site: Site, business_id: int, session_id: str, now: dt.datetime
    ) -> None:
        try:
            number_id = await self.pool.release(pool_key(site.id, business_id), session_id, now)
        except PoolNotLoaded:
            return
        if number_id is None:
            return
        db = await get_db()
        await db.execute(
            update(Lease)
            .where(Lease.id == _latest_open_lease(session_id, number_id))
            .values(ended_at=now)
            .execution_options(synchronize_session=False)
        )
        await self._mark_released(db, number_id, now)

    async def _lease(
        self,
        get_db: GetDb,
        site: Site,
        business: _Business,
        session_id: str,
        now: dt.datetime,
    ) -> dict[str, str] | None:
        """Hold (or keep) a pool number of `business` for the session; record the lease."""
        for _ in range(2):
            result = await self._acquire(get_db, site, business.id, session_id, now)
            grant = result.grant
            if result.expired or (grant and (grant.outcome != "held" or grant.record_due)):
                await self._record(await get_db(), site.id, result, now)
            if grant is None:
                return None
            to = business.pool.get(grant.number)
            if to is not None:
                return to
            db = await get_db()
            number = await db.get(TrackingNumber, grant.number)
            if number is not None and number.state == ACTIVE and number.kind == "pool":
                return phone_forms(number.e164).as_snippet(with_display=True)
            # Released by another process and still in the pool: update the pool (which ends
            # this lease), try again.
            self.forget_site(site.id)
            await self._sync_pool(db, site.id, business.id, now)
        return None

    async def _acquire(
        self, get_db: GetDb, site: Site, business_id: int, session_id: str, now: dt.datetime
    ) -> AcquireResult:
        key = pool_key(site.id, business_id)
        hold = dt.timedelta(minutes=site.lease_hold_minutes)
        overflow = site.pool_exhaustion == "overflow"
        for _ in range(3):
            try:
                result = await self.pool.acquire(
                    key, session_id, now, hold, overflow=False, record_interval=self.record_interval
                )
                if result.grant is not None or not overflow:
                    return result
                # The pool is full. A visit that already lost its number to an overflow (or
                # gave it back) does not take another visitor's in turn: each displaced
                # visitor would displace the next on its next heartbeat, and every active
                # visitor's number would change every 30 s. It sees the business number
                # until a number is free again; only new visits overflow.
                if await self._had_a_number(await get_db(), session_id, business_id):
                    return result
                more = await self.pool.acquire(
                    key, session_id, now, hold, overflow=True, record_interval=self.record_interval
                )
                return AcquireResult(more.grant, result.expired + more.expired)
            except PoolNotLoaded:
                await self.rebuild_pool(await get_db(), site.id, business_id, now, hold)
        # Redis lost the pool three times in a row: show the business number this time.
        log.warning("number pool %s could not be loaded", key)
        return AcquireResult(None)

    @staticmethod
    async def _had_a_number(db: AsyncSession, session_id: str, business_id: int) -> bool:
        """Did this visit ever hold a number of this pool? (It holds none now: the pool said.)

        Any lease counts, ended or not: an overflow on another worker may have run before the
        displaced visit's lease row was committed, and then could not end it."""
        leased = await db.scalar(
            select(Lease.id)
            .join(TrackingNumber, TrackingNumber.id == Lease.tracking_number_id)
            .where(
                Lease.session_id == session_id,
                TrackingNumber.business_number_id == business_id,
            )
            .limit(1)
        )
        return leased is not None

    async def _record(
        self, db: AsyncSession, site_id: int, result: AcquireResult, now: dt.datetime
    ) -> None:
        """Write what an acquisition changed to the lease history."""
        for expired in result.expired:
            # The pool knows the exact end of the hold; the row may be up to
            # record_interval behind, so history is exact once a lease has expired.
            await db.execute(
                update(Lease)
                .where(Lease.id == _latest_open_lease(expired.session_id, expired.number))
                .values(hold_until=expired.hold_until)
                .execution_options(synchronize_session=False)
            )
            await self._mark_released(db, expired.number, expired.hold_until)
        grant = result.grant
        if grant is None:
            return
        if grant.outcome == "overflow" and grant.displaced_session is not None:
            await db.execute(
                update(Lease)
                .where(Lease.id == _latest_open_lease(grant.displaced_session, grant.number))
                .values(ended_at=now, hold_until=grant.displaced_hold_until)
                .execution_options(synchronize_session=False)
            )
            await self._mark_released(db, grant.number, now)
        if grant.outcome != "held":
            await self._insert_lease(db, site_id, grant.number, grant.session_id, now, grant)
        elif grant.record_due:
            updated = await db.execute(
                update(Lease)
                .where(Lease.id == _latest_open_lease(grant.session_id, grant.number))
                .values(last_seen_at=now, hold_until=grant.hold_until)
                .execution_options(synchronize_session=False)
            )
            if _rowcount(updated) == 0:
                # The transaction that wrote the lease was rolled back: write it again.
                await self._insert_lease(db, site_id, grant.number, grant.session_id, now, grant)

    async def _insert_lease(
        self,
        db: AsyncSession,
        site_id: int,
        number_id: int,
        session_id: str,
        now: dt.datetime,
        grant: Any,
    ) -> None:
        await db.execute(
            insert(Lease).values(
                site_id=site_id,
                tracking_number_id=number_id,
                session_id=session_id,
                started_at=now,
                last_seen_at=now,
                hold_until=grant.hold_until,
                ended_at=None,
                overflow=grant.outcome == "overflow",
            )
        )

    async def _mark_released(self, db: AsyncSession, number_id: int, when: dt.datetime) -> None:
        await db.execute(
            update(TrackingNumber)
            .where(TrackingNumber.id == number_id)
            .values(last_released_at=when)
            .execution_options(synchronize_session=False)
        )

    async def release_session(
        self, db: AsyncSession, site: Site, session_id: str, now: dt.datetime
    ) -> list[int]:
        """End the session's pool leases now (consent withdrawn, erasure); return the numbers."""
        rows = (
            await db.execute(
                select(Lease.tracking_number_id, TrackingNumber.business_number_id)
                .join(TrackingNumber, TrackingNumber.id == Lease.tracking_number_id)
                .where(
                    Lease.session_id == session_id,
                    Lease.ended_at.is_(None),
                    Lease.hold_until >= now - self.record_interval,
                )
            )
        ).all()
        released = []
        for number_id, business_id in rows:
            if business_id is not None:
                try:
                    await self.pool.release(pool_key(site.id, business_id), session_id, now)
                except PoolNotLoaded:
                    pass
            await db.execute(
                update(Lease)
                .where(
                    Lease.session_id == session_id,
                    Lease.tracking_number_id == number_id,
                    Lease.ended_at.is_(None),
                    Lease.hold_until >= now - self.record_interval,
                )
                .values(ended_at=now)
                .execution_options(synchronize_session=False)
            )
            await self._mark_released(db, number_id, now)
            released.append(number_id)
        return released

    # -- pool state from the database ----------------------------------------------------------

    async def rebuild_pool(
        self,
        db: AsyncSession,
        site_id: int,
        business_id: int,
        now: dt.datetime,
        hold: dt.timedelta,
    ) -> bool:
        """Load a pool from the database: open leases held, the rest free by release time.

        Only one worker's load takes effect (the pool refuses a second one). A lease row's
        hold_until may trail the pool by up to record_interval, so rebuilt holds get that much
        extra (a number is never handed out while its holder may still be active), but less
        than `now + hold`: every rebuilt holder was last active before now, and a hold beyond
        a new visit's made an overflow take the newest visit's number rather than the least
        recently active one's.

        A number's holder is its latest lease: a lease followed by another one on the same
        number was displaced, even if its row was never ended (see `_had_a_number`).
        """
        numbers = await self._pool_numbers(db, site_id, business_id)
        ids = list(numbers)
        held: list[HeldLease] = []
        released: dict[int, dt.datetime | None] = dict(numbers)
        if ids:
            later = aliased(Lease)
            leases = await db.scalars(
                select(Lease)
                .where(
                    Lease.tracking_number_id.in_(ids),
                    Lease.ended_at.is_(None),
                    Lease.hold_until >= now - self.record_interval,
                    ~exists().where(
                        later.tracking_number_id == Lease.tracking_number_id,
                        later.started_at > Lease.started_at,
                    ),
                )
                .order_by(Lease.started_at.desc(), Lease.id.desc())
            )
            taken_numbers: set[int] = set()
            taken_sessions: set[str] = set()
            for lease in leases:
                if lease.tracking_number_id in taken_numbers or lease.session_id in taken_sessions:
                    continue
                taken_numbers.add(lease.tracking_number_id)
                taken_sessions.add(lease.session_id)
                until = min(lease.hold_until + self.record_interval, now + hold - _ONE_MS)
                held.append(HeldLease(lease.tracking_number_id, lease.session_id, until))
            end = case(
                (
                    and_(Lease.ended_at.is_not(None), Lease.ended_at < Lease.hold_until),
                    Lease.ended_at,
                ),
                else_=Lease.hold_until,
            )
            latest = await db.execute(
                select(Lease.tracking_number_id, func.max(end))
                .where(
                    Lease.tracking_number_id.in_(ids),
                    Lease.started_at >= now - RELEASE_LOOKBACK,
                )
                .group_by(Lease.tracking_number_id)
            )
            for number_id, when in latest.all():
                when = _aware(when)
                previous = released.get(number_id)
                if when is not None and (previous is None or when > previous):
                    released[number_id] = when
        free = {n: r for n, r in released.items() if n not in {h.number for h in held}}
        return await self.pool.load(
            pool_key(site_id, business_id), PoolSnapshot(free=free, held=held), now
        )

    async def _pool_numbers(
        self, db: AsyncSession, site_id: int, business_id: int
    ) -> dict[int, dt.datetime | None]:
        rows = await db.execute(
            select(TrackingNumber.id, TrackingNumber.last_released_at).where(
                TrackingNumber.site_id == site_id,
                TrackingNumber.business_number_id == business_id,
                TrackingNumber.kind == "pool",
                TrackingNumber.state == ACTIVE,
            )
        )
        return {number_id: _aware(when) for number_id, when in rows.all()}

    async def _retired_numbers(self, db: AsyncSession, site_id: int, business_id: int) -> list[int]:
        rows = await db.scalars(
            select(TrackingNumber.id).where(
                TrackingNumber.site_id == site_id,
                TrackingNumber.business_number_id == business_id,
                or_(TrackingNumber.kind != "pool", TrackingNumber.state != ACTIVE),
            )
        )
        return list(rows)

    async def _sync_pool(
        self, db: AsyncSession, site_id: int, business_id: int, now: dt.datetime
    ) -> None:
        """Bring a loaded pool's numbers in line with the database."""
        active = await self._pool_numbers(db, site_id, business_id)
        retired = await self._retired_numbers(db, site_id, business_id)
        await self._apply_sync(db, pool_key(site_id, business_id), active, retired, now)

    async def _apply_sync(
        self,
        db: AsyncSession,
        key: str,
        active: Mapping[int, dt.datetime | None],
        retired: Collection[int],
        now: dt.datetime,
    ) -> None:
        # Removal is explicit (numbers the database says are retired), never "whatever is not
        # listed": a worker reading the database just before another process added a number
        # must not take that number away again.
        try:
            result = await self.pool.sync(key, active, retired, now)
        except PoolNotLoaded:
            return
        for number_id, session_id in result.removed:
            if session_id is not None:
                await db.execute(
                    update(Lease)
                    .where(Lease.id == _latest_open_lease(session_id, number_id))
                    .values(ended_at=now)
                    .execution_options(synchronize_session=False)
                )

    async def _site_numbers(self, get_db: GetDb, site: Site, now: dt.datetime) -> _SiteNumbers:
        cached = self._cache.get(site.id)
        if cached is not None and cached.expires_at > now:
            return cached
        db = await get_db()
        businesses = {
            b.id: _Business(
                id=b.id,
                e164=b.e164,
                label=b.label,
                is_primary=b.is_primary,
                # With display forms: when a tracking number of another length goes away, the
                # page writes the business number back in them (`from` of an answer's swaps).
                snippet=phone_forms(b.e164).as_snippet(with_display=True),
            )
            for b in await db.scalars(
                select(BusinessNumber)
                .where(BusinessNumber.site_id == site.id)
                .order_by(BusinessNumber.is_primary.desc(), BusinessNumber.id)
            )
        }
        primary = next(iter(businesses.values()), None)
        numbers = await db.scalars(
            select(TrackingNumber)
            .where(TrackingNumber.site_id == site.id)
            .order_by(TrackingNumber.id)
        )
        retired: dict[int, list[int]] = {b: [] for b in businesses}
        for number in numbers:
            business = businesses.get(number.business_number_id or -1, primary)
            if business is None:
                continue
            if number.state != ACTIVE or number.kind != "pool":
                if number.business_number_id in retired:
                    retired[business.id].append(number.id)
                if number.state != ACTIVE:
                    continue
            to = phone_forms(number.e164).as_snippet(with_display=True)
            if number.kind == "pool" and number.business_number_id == business.id:
                business.pool[number.id] = to
                business.pool_released[number.id] = number.last_released_at
            elif number.kind == "source" and number.rule_type and number.rule_value is not None:
                rule = SourceRule(number.rule_type, number.rule_value)  # type: ignore[arg-type]
                business.sources.append(_Source(rule, number.id, to))
        entry = _SiteNumbers(tuple(businesses.values()), now + CACHE_TTL)
        self._cache[site.id] = entry
        # Numbers added or released by another process reach a loaded pool here.
        for business in entry.businesses:
            key = pool_key(site.id, business.id)
            await self._apply_sync(db, key, business.pool_released, retired[business.id], now)
        return entry

    def forget_site(self, site_id: int) -> None:
        """Drop the cached numbers of a site (after a change made through this service)."""
        self._cache.pop(site_id, None)

    def forget_all(self) -> None:
        """Drop every site's cached numbers (a change made in another process)."""
        self._cache.clear()

    # -- provisioning --------------------------------------------------------------------------

    async def business_number(
        self, db: AsyncSession, site: Site, e164: str | None = None
    ) -> BusinessNumber:
        """Find a business number of the site (the primary when none is named)."""
        return await find_business_number(db, site, e164)

    async def add_numbers(
        self,
        db: AsyncSession,
        site: Site,
        now: dt.datetime,
        *,
        count: int = 1,
        rule: SourceRule | None = None,
        business_e164: str | None = None,
        e164: str | None = None,
        webhooks: Any = None,
    ) -> list[TrackingNumber]:
        """Add pool numbers (no rule) or a source number (a rule), bought or given (`e164`)."""
        if not 1 <= count <= MAX_ADD:
            raise ApiError("invalid_count", f"count must be between 1 and {MAX_ADD}")
        if rule is not None and count != 1:
            raise ApiError("invalid_count", "a source rule shows one number: count must be 1")
        if e164 is not None and count != 1:
            raise ApiError("invalid_count", "a given number is added alone: count must be 1")
        business = await self.business_number(db, site, business_e164)
        if webhooks is not None and hasattr(webhooks, "forwarding_to"):
            # The carrier's fallback rings this business line when our webhook cannot answer.
            webhooks = webhooks.forwarding_to(business.e164)
        if rule is not None:
            await self._check_rule_free(db, site, business, rule)
        carrier = self._carrier()
        if e164 is not None:
            try:
                wanted = to_e164(e164, site.country)
            except InvalidPhoneNumber as exc:
                raise ApiError("invalid_phone", str(exc)) from exc
            existing = await self._existing(db, site, [wanted])
            provisioned = [await carrier.configure(wanted, webhooks)]
        else:
            chosen = await self._search(db, carrier, site.country, count)
            existing = {}
            provisioned = [await carrier.buy(n, webhooks) for n in chosen]
        added = []
        for item in provisioned:
            row = existing.get(item.e164) or TrackingNumber(site_id=site.id, e164=item.e164)
            row.business_number_id = business.id
            row.provider = item.provider
            row.provider_sid = item.provider_sid
            row.voice_url = item.voice_url
            row.kind = "source" if rule else "pool"
            row.rule_type = rule.type if rule else None
            row.rule_value = rule.value if rule else None
            row.state = ACTIVE
            if row.id is None:
                row.created_at = now
                db.add(row)
            added.append(row)
        await db.flush()
        self.forget_site(site.id)
        if rule is None:
            await self._sync_pool(db, site.id, business.id, now)
        return added

    def _carrier(self) -> NumberProvider:
        if self.carrier is None:
            raise ApiError(
                "carrier_unavailable",
                "no carrier is configured to provision numbers (CALLTRACK_CARRIER)",
                status=503,
            )
        return self.carrier

    async def _existing(
        self, db: AsyncSession, site: Site, e164s: Collection[str]
    ) -> dict[str, TrackingNumber]:
        """Return released numbers of this site to reuse; refuse numbers in use."""
        business = await db.scalar(
            select(BusinessNumber.e164).where(BusinessNumber.e164.in_(e164s)).limit(1)
        )
        if business is not None:
            raise Conflict(
                "business_number",
                f"{business} is a business number here; a tracking number must be another one",
            )
        rows = await db.scalars(select(TrackingNumber).where(TrackingNumber.e164.in_(e164s)))
        reusable = {}
        for row in rows:
            if row.state == ACTIVE or row.site_id != site.id:
                raise Conflict("duplicate_number", f"{row.e164} is already a tracking number")
            reusable[row.e164] = row
        return reusable

    async def _search(
        self, db: AsyncSession, carrier: NumberProvider, country: str, count: int
    ) -> list[str]:
        # Numbers tracked here, and every site's business numbers (a carrier may well offer a
        # merchant's own number back: the simulated one offers fiction ranges that tests and
        # demos use for business numbers too).
        taken = set(await db.scalars(select(TrackingNumber.e164)))
        taken.update(await db.scalars(select(BusinessNumber.e164)))
        chosen: list[str] = []
        # A carrier's search may offer numbers we already track (always, for the simulated
        # carrier, which has no account state): ask again for what is missing, a few times.
        for _ in range(5):
            missing = count - len(chosen)
            if missing <= 0:
                break
            offered = await carrier.search_available(country, missing * 2 + 10)
            for e164 in offered:
                if e164 not in taken and e164 not in chosen and len(chosen) < count:
                    chosen.append(e164)
        if len(chosen) < count:
            raise ApiError(
                "numbers_unavailable",
                f"the carrier offers {len(chosen)} of the {count} numbers asked for in {country}",
                status=503,
            )
        return chosen

    async def _check_rule_free(
        self, db: AsyncSession, site: Site, business: BusinessNumber, rule: SourceRule
    ) -> None:
        clash = await db.scalar(
            select(TrackingNumber).where(
                TrackingNumber.site_id == site.id,
                TrackingNumber.state == ACTIVE,
                TrackingNumber.kind == "source",
                TrackingNumber.business_number_id == business.id,
                TrackingNumber.rule_type == rule.type,
                func.lower(TrackingNumber.rule_value) == rule.value.lower(),
            )
        )
        if clash is not None:
            raise Conflict(
                "duplicate_rule",
                f"{clash.e164} already answers {rule.type} {rule.value!r} for {business.e164}",
            )

    async def release_number(
        self, db: AsyncSession, site: Site, e164: str, now: dt.datetime
    ) -> TrackingNumber:
        """Give a tracking number back to its carrier and end its leases; history stays."""
        try:
            wanted = to_e164(e164, site.country)
        except InvalidPhoneNumber as exc:
            raise ApiError("invalid_phone", str(exc)) from exc
        number = await db.scalar(
            select(TrackingNumber).where(
                TrackingNumber.site_id == site.id,
                TrackingNumber.e164 == wanted,
                TrackingNumber.state == ACTIVE,
            )
        )
        if number is None:
            raise NotFound("unknown_number", f"{wanted} is not an active number of this site")
        carrier = self._carrier()
        if carrier.name != number.provider:
            raise ApiError(
                "carrier_unavailable",
                f"{wanted} belongs to {number.provider}, not to the configured {carrier.name}",
                status=503,
            )
        await carrier.release(
            ProvisionedRecord(number.e164, number.provider, number.provider_sid, number.voice_url)
        )
        number.state = RELEASED
        number.last_released_at = now
        await db.execute(
            update(Lease)
            .where(
                Lease.tracking_number_id == number.id,
                Lease.ended_at.is_(None),
                Lease.hold_until >= now - self.record_interval,
            )
            .values(ended_at=now)
            .execution_options(synchronize_session=False)
        )
        await db.flush()
        self.forget_site(site.id)
        if number.kind == "pool" and number.business_number_id is not None:
            await self._sync_pool(db, site.id, number.business_number_id, now)
        return number

    async def list_numbers(
        self, db: AsyncSession, site: Site, now: dt.datetime, *, include_released: bool = False
    ) -> list[dict[str, Any]]:
        """Describe the site's tracking numbers: rule, state, holder now and lease counts."""
        query = select(TrackingNumber).where(TrackingNumber.site_id == site.id)
        if not include_released:
            query = query.where(TrackingNumber.state == ACTIVE)
        numbers = list(await db.scalars(query.order_by(TrackingNumber.id)))
        businesses = {
            b.id: b
            for b in await db.scalars(
                select(BusinessNumber).where(BusinessNumber.site_id == site.id)
            )
        }
        primary = next((b for b in businesses.values() if b.is_primary), None)
        since = now - dt.timedelta(days=30)
        counts = {
            row[0]: row[1:]
            for row in (
                await db.execute(
                    select(
                        Lease.tracking_number_id,
                        func.count(),
                        func.sum(case((Lease.started_at >= since, 1), else_=0)),
                        func.sum(case((Lease.overflow, 1), else_=0)),
                    )
                    .where(Lease.tracking_number_id.in_([n.id for n in numbers]))
                    .group_by(Lease.tracking_number_id)
                )
            ).all()
        }
        described = []
        for number in numbers:
            business = businesses.get(number.business_number_id or -1) or primary
            holder = await lease_at(db, number.id, now) if number.kind == "pool" else None
            total, recent, overflow = counts.get(number.id, (0, 0, 0))
            described.append(
                {
                    "e164": number.e164,
                    "display": phone_forms(number.e164).national,
                    "kind": number.kind,
                    "rule": (
                        {"type": number.rule_type, "value": number.rule_value}
                        if number.kind == "source"
                        else None
                    ),
                    "state": number.state,
                    "business_number": (
                        {"e164": business.e164, "label": business.label} if business else None
                    ),
                    "provider": number.provider,
                    "provider_sid": number.provider_sid,
                    "voice_url": number.voice_url,
                    "holder": holder.session_id if holder else None,
                    "leases": {
                        "total": int(total or 0),
                        "last_30_days": int(recent or 0),
                        "overflow": int(overflow or 0),
                    },
                    "created_at": number.created_at.isoformat(),
                    "last_released_at": (
                        number.last_released_at.isoformat() if number.last_released_at else None
                    ),
                }
            )
        return described

    async def lease_at(
        self, db: AsyncSession, tracking_number_id: int, instant: dt.datetime
    ) -> Lease | None:
        """Return the lease that held a number at an instant (see the module function)."""
        return await lease_at(db, tracking_number_id, instant)


# -- the lease history ---------------------------------------------------------------------------


async def find_business_number(
    db: AsyncSession, site: Site, e164: str | None = None
) -> BusinessNumber:
    """Find a business number of the site (the primary when none is named); 404 otherwise."""
    query = select(BusinessNumber).where(BusinessNumber.site_id == site.id)
    if e164:
        try:
            wanted = to_e164(e164, site.country)
        except InvalidPhoneNumber as exc:
            raise ApiError("invalid_phone", str(exc)) from exc
        query = query.where(BusinessNumber.e164 == wanted)
    found = await db.scalar(
        query.order_by(BusinessNumber.is_primary.desc(), BusinessNumber.id).limit(1)
    )
    if found is None:
        raise NotFound(
            "unknown_business_number",
            f"{e164} is not a business number of this site" if e164 else "no business number",
        )
    return found


async def leases_at(db: AsyncSession, tracking_number_id: int, instant: dt.datetime) -> list[Lease]:
    """Return every lease holding a number at `instant`, the latest started first.

    A lease holds its number at `instant` when `started_at <= instant`, it had not ended
    (`ended_at` is null or later than `instant`) and `hold_until >= instant`. The pool hands a
    number to one session at a time, so this is normally one lease. More than one appears when
    an overflow on another worker ran before the displaced visit's lease row was committed (the
    later lease is the holder: the first one returned), and around a pool rebuild after a Redis
    failure (see `NumberService.rebuild_pool`).

    Precision: `hold_until` of an open lease may trail the pool by up to `RECORD_INTERVAL`
    (60 s of a 30-minute hold) because activity is written at most that often; it becomes exact
    when the pool expires the lease. `ended_at` is exact (overflow, release).
    """
    rows = await db.scalars(
        select(Lease)
        .where(
            Lease.tracking_number_id == tracking_number_id,
            Lease.hold_until >= instant,
            Lease.started_at <= instant,
            or_(Lease.ended_at.is_(None), Lease.ended_at > instant),
        )
        .order_by(Lease.started_at.desc(), Lease.id.desc())
    )
    return list(rows)


async def lease_at(db: AsyncSession, tracking_number_id: int, instant: dt.datetime) -> Lease | None:
    """Return who held a number at `instant`: the latest started of `leases_at`."""
    found = await leases_at(db, tracking_number_id, instant)
    return found[0] if found else None


async def last_lease_before(
    db: AsyncSession, tracking_number_id: int, instant: dt.datetime
) -> Lease | None:
    """Return the latest lease started at or before `instant` if its hold simply ran out.

    For a call after the hold: when nobody was given the number since, its last holder is the
    only visitor who saw it last (a weaker attribution; `calltrack bench dni` measures both).
    A lease that was ended instead (its visitor withdrew consent, the number went to another
    visit by overflow, or was released) gives nothing: the visitor was told to stop being
    followed, or someone else was shown the number since (a visit erased later included).
    """
    result: Lease | None = await db.scalar(
        select(Lease)
        .where(Lease.tracking_number_id == tracking_number_id, Lease.started_at <= instant)
        .order_by(Lease.started_at.desc(), Lease.id.desc())
        .limit(1)
    )
    if result is not None and result.ended_at is not None and result.ended_at <= instant:
        return None
    return result


def _aware(value: Any) -> dt.datetime | None:
    """Re-attach UTC to datetimes an aggregate returned naive (SQLite), or parse its text."""
    if value is None:
        return None
    if isinstance(value, str):
        value = dt.datetime.fromisoformat(value)
    if not isinstance(value, dt.datetime):
        return None
    return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)


# -- wiring --------------------------------------------------------------------------------------


def number_service_for(
    settings: Settings,
    redis: Redis | None,
    carrier: NumberProvider | None = None,
    database: Database | None = None,
) -> NumberService:
    """Build the service for these settings: Redis pool when a Redis URL is set.

    Pass the application's Database to share its connections (else the service opens its own
    when it first needs one). Without a carrier it assigns numbers but provisions none.
    """
    owned = None
    if settings.redis_url and redis is None:
        from redis.asyncio import Redis as RedisClient

        redis = owned = RedisClient.from_url(settings.redis_url)
    pool: NumberPool
    if settings.redis_url and redis is not None:
        pool = RedisNumberPool(redis, settings.redis_prefix)
    else:
        pool = MemoryNumberPool()
    owns_database = database is None
    return NumberService(
        pool,
        database=database or Database(settings.database_url),
        carrier=carrier,
        owned_redis=owned,
        owns_database=owns_database,
    )
