"""The exclusion list: people who objected, never tracked again (GDPR art. 21).

Entries are keyed hashes (tracker.privacy.hashing) of an E.164 number or a visitor id, per
account; the list never holds a number or an id in clear. An excluded visitor's events are
dropped at the collect endpoint; an excluded caller's call is forwarded to the merchant like any
call but not recorded, not attributed, not stored and not shown.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from tracker.clock import Clock
from tracker.db import Database
from tracker.errors import ApiError, NotFound
from tracker.models import ExclusionEntry, Site, TrackingNumber
from tracker.phones import InvalidPhoneNumber, to_e164
from tracker.privacy.find import SubjectQuery, parse_subject
from tracker.privacy.hashing import subject_hash

EXCLUSION_KINDS = ("phone", "visitor")
# Another worker's exclusion reaches this worker's collect endpoint within this time (the same
# delay as the site cache): one query per account per TTL keeps the hot path to a dict lookup.
CACHE_TTL = dt.timedelta(seconds=30)
MAX_CACHED_ACCOUNTS = 10_000


def exclusion_hash(secret_key: str, account_id: int, query: SubjectQuery) -> str:
    if query.kind not in EXCLUSION_KINDS:
        raise ApiError("invalid_kind", "only phone numbers and visitor ids can be excluded")
    return subject_hash(secret_key, account_id, query.kind, query.value)


async def add_exclusion(
    db: AsyncSession,
    account_id: int,
    query: SubjectQuery,
    *,
    secret_key: str,
    actor: str,
    now: dt.datetime,
) -> tuple[ExclusionEntry, bool]:
    """Exclude a number or visitor id; return (entry, created). Idempotent."""
    key_hash = exclusion_hash(secret_key, account_id, query)
    existing = await db.scalar(
        select(ExclusionEntry).where(
            ExclusionEntry.account_id == account_id,
            ExclusionEntry.kind == query.kind,
            ExclusionEntry.key_hash == key_hash,
        )
    )
    if existing is not None:
        return existing, False
    entry = ExclusionEntry(
        account_id=account_id, kind=query.kind, key_hash=key_hash, created_at=now, created_by=actor
    )
    db.add(entry)
    await db.flush()
    return entry, True


async def remove_exclusion(db: AsyncSession, account_id: int, entry_id: int) -> ExclusionEntry:
    """Delete one entry of the account's list; raise NotFound."""
    entry = await db.get(ExclusionEntry, entry_id)
    if entry is None or entry.account_id != account_id:
        raise NotFound("unknown_exclusion", f"no exclusion {entry_id} in this account")
    await db.execute(delete(ExclusionEntry).where(ExclusionEntry.id == entry_id))
    return entry


async def remove_exclusion_of(
    db: AsyncSession, account_id: int, query: SubjectQuery, secret_key: str
) -> int:
    """Delete the entry of a number or visitor id, if any; return how many were deleted."""
    key_hash = exclusion_hash(secret_key, account_id, query)
    rows = await db.scalars(
        select(ExclusionEntry.id).where(
            ExclusionEntry.account_id == account_id,
            ExclusionEntry.kind == query.kind,
            ExclusionEntry.key_hash == key_hash,
        )
    )
    ids = list(rows)
    if ids:
        await db.execute(delete(ExclusionEntry).where(ExclusionEntry.id.in_(ids)))
    return len(ids)


async def list_exclusions(db: AsyncSession, account_id: int) -> list[ExclusionEntry]:
    rows = await db.scalars(
        select(ExclusionEntry)
        .where(ExclusionEntry.account_id == account_id)
        .order_by(ExclusionEntry.created_at.desc(), ExclusionEntry.id.desc())
    )
    return list(rows)


async def is_excluded(
    db: AsyncSession, account_id: int, query: SubjectQuery, secret_key: str
) -> bool:
    """Tell whether this number or visitor id is on the account's list (one indexed query)."""
    key_hash = exclusion_hash(secret_key, account_id, query)
    found = await db.scalar(
        select(ExclusionEntry.id)
        .where(
            ExclusionEntry.account_id == account_id,
            ExclusionEntry.kind == query.kind,
            ExclusionEntry.key_hash == key_hash,
        )
        .limit(1)
    )
    return found is not None


@dataclass(frozen=True)
class _Cached:
    hashes: frozenset[str]
    expires_at: dt.datetime


class ExclusionCache:
    """Each account's excluded visitor hashes, in memory for CACHE_TTL (the collect hot path)."""

    def __init__(self, secret_key: str, clock: Clock) -> None:
        self._secret_key = secret_key
        self._clock = clock
        self._accounts: dict[int, _Cached] = {}

    async def visitor_excluded(self, database: Database, account_id: int, visitor_id: str) -> bool:
        """Tell whether a visitor id is excluded; costs one HMAC when the account has a list."""
        now = self._clock.now()
        cached = self._accounts.get(account_id)
        if cached is None or cached.expires_at <= now:
            async with database.sessions() as db:
                rows = await db.scalars(
                    select(ExclusionEntry.key_hash).where(
                        ExclusionEntry.account_id == account_id, ExclusionEntry.kind == "visitor"
                    )
                )
                hashes = frozenset(rows)
            if len(self._accounts) >= MAX_CACHED_ACCOUNTS:
                self._accounts.clear()
            cached = _Cached(hashes, now + CACHE_TTL)
            self._accounts[account_id] = cached
        if not cached.hashes:
            return False
        return subject_hash(self._secret_key, account_id, "visitor", visitor_id) in cached.hashes

    def invalidate(self, account_id: int | None = None) -> None:
        """Forget cached lists (this worker sees its own changes at once)."""
        if account_id is None:
            self._accounts.clear()
        else:
            self._accounts.pop(account_id, None)


async def is_excluded_caller(
    db: AsyncSession, site: Site, caller_e164: str | None, secret_key: str
) -> bool:
    """Tell telephony whether a caller objected: forward the call, store and show nothing."""
    if caller_e164 is None:
        return False
    return await is_excluded(db, site.account_id, SubjectQuery("phone", caller_e164), secret_key)


async def is_excluded_callback(
    db: AsyncSession, params: Mapping[str, str], secret_key: str
) -> bool:
    """Tell whether a carrier callback (status of the caller's leg) is about an excluded caller.

    The number-level status callback (set on every tracking number we provision) still fires
    for a call we did not store; its `From` is the caller, its `To` our tracking number.
    """
    called, caller = params.get("To") or params.get("Called"), params.get("From")
    if not called or not caller:
        return False
    try:
        called_e164 = to_e164(called)
    except InvalidPhoneNumber:
        return False
    site = await db.scalar(
        select(Site)
        .join(TrackingNumber, TrackingNumber.site_id == Site.id)
        .where(TrackingNumber.e164 == called_e164)
        .limit(1)
    )
    if site is None:
        return False
    try:
        query = parse_subject("phone", caller, site.country)
    except ApiError:
        return False
    return await is_excluded(db, site.account_id, query, secret_key)
