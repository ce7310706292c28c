"""Retention: per-site periods per data class, and the purge that enforces them.

Periods live in `Site.settings["retention"]` (months per data class) over lawful defaults.
The purge deletes expired rows in bounded batches, each in its own short transaction, selected
by the (site, time) indexes oldest first, so collection keeps writing meanwhile: on PostgreSQL a
batch locks only the old rows it deletes, which collection never touches; on SQLite the write
lock is held for one batch (milliseconds), well under the 30 s busy timeout. Between batches the
purge pauses four times as long as the batch took (DEFAULT_PAUSE_RATIO), leaving collection at
least four fifths of the database's time: `calltrack bench purge` measures the cost. Progress is kept per (site, data class) in `privacy_purge_cursors`: an interrupted
run resumes where it stopped, and the dashboard shows how far each run went.

A closed account's data is all deleted CLOSED_ACCOUNT_GRACE after closure (the purge runs every
few hours), well within the 90 days the service promises.
"""

from __future__ import annotations

import asyncio
import calendar
import datetime as dt
import logging
import time
from collections.abc import Awaitable, Callable, Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

from sqlalchemy import ColumnElement, CursorResult, delete, func, select, text, tuple_, update
from sqlalchemy.ext.asyncio import AsyncSession

from tracker.db import Database
from tracker.errors import ApiError
from tracker.models import (
    Account,
    AdCost,
    ApiToken,
    AuditEntry,
    Call,
    CarrierEvent,
    Cart,
    ContactRequest,
    ExclusionEntry,
    ExportRecord,
    Lease,
    Pageview,
    PurgeCursor,
    Restriction,
    Site,
    TrackedSession,
    User,
    WebhookDelivery,
    WebhookEndpoint,
)
from tracker.privacy.export import delete_export_file

log = logging.getLogger("calltrack.privacy.purge")


@dataclass(frozen=True)
class DataClass:
    name: str
    months: int
    basis_en: str
    basis_fr: str
    # Server logs are written to stderr and kept by the operator's log rotation, not by us.
    purged_by_calltrack: bool = True


_AUDIENCE_EN = (
    "CNIL guidelines and recommendation on trackers (deliberations 2020-091 and 2020-092): "
    "audience-measurement trackers last at most 13 months"
)
_AUDIENCE_FR = (
    "Lignes directrices et recommandation de la CNIL sur les traceurs (délibérations 2020-091 "
    "et 2020-092) : traceurs de mesure d'audience 13 mois au plus"
)
DATA_CLASSES: dict[str, DataClass] = {
    c.name: c
    for c in (
        DataClass("pageviews", 13, _AUDIENCE_EN, _AUDIENCE_FR),
        DataClass("sessions", 13, _AUDIENCE_EN, _AUDIENCE_FR),
        DataClass("carts", 13, _AUDIENCE_EN, _AUDIENCE_FR),
        DataClass(
            "calls",
            25,
            "CNIL: information collected for audience measurement is kept at most 25 months",
            "CNIL : les informations collectées pour la mesure d'audience sont conservées "
            "25 mois au plus",
        ),
        DataClass(
            "recordings",
            6,
            "CNIL guidance on recording telephone calls: at most 6 months",
            "CNIL, écoute et enregistrement des appels : 6 mois au plus",
        ),
        DataClass(
            "contact_requests",
            36,
            "CNIL reference for commercial management: prospects' data 3 years after the last "
            "contact",
            "Référentiel CNIL gestion commerciale : données de prospects 3 ans après le dernier "
            "contact",
        ),
        DataClass(
            "audit_log",
            60,
            "Limitation period of civil and commercial actions (French Civil Code art. 2224, "
            "5 years): proof of who accessed which data",
            "Prescription des actions civiles et commerciales (art. 2224 du Code civil, 5 ans) : "
            "preuve des accès aux données",
        ),
        DataClass(
            "server_logs",
            12,
            "CNIL recommendation on logging (2021): 6 months to 1 year; applied by the "
            "operator's log rotation (journald, logrotate)",
            "Recommandation CNIL sur la journalisation (2021) : 6 mois à 1 an ; appliquée par "
            "la rotation des journaux de l'exploitant (journald, logrotate)",
            purged_by_calltrack=False,
        ),
    )
}
MIN_MONTHS, MAX_MONTHS = 1, 120
CLOSED_ACCOUNT_GRACE = dt.timedelta(days=30)
CLOSED_ACCOUNT_DEADLINE = dt.timedelta(days=90)
DEFAULT_BATCH = 2000
# Retention is not urgent: at this pace a 1 M row purge still takes about a minute of running
# time, and collection keeps over 90 % of its throughput even counting the WAL writes and
# autovacuum the deletions cause (`calltrack bench purge`, 2-core machine; at 1.0 it kept ~70 %).
DEFAULT_PAUSE_RATIO = 4.0
# Pending carrier callbacks that never matched a call (unknown numbers, lost calls).
ORPHAN_EVENT_TTL = dt.timedelta(days=30)
RECORDING_CALLBACK = "recording"  # CarrierEvent.kind of the carrier's recording callbacks
# Webhook deliveries keep the exact body sent (a caller's number, a visitor's callback number)
# for the delivery log: done with (delivered or given up), they go after this long, whatever
# the data's own retention (the copy outlived the call or request it was about).
WEBHOOK_DELIVERY_TTL = dt.timedelta(days=30)


def months_before(moment: dt.datetime, months: int) -> dt.datetime:
    """Go back calendar months (31 March minus one month is 28 or 29 February)."""
    years, month_index = divmod(moment.month - 1 - months, 12)
    year, month = moment.year + years, month_index + 1
    day = min(moment.day, calendar.monthrange(year, month)[1])
    return moment.replace(year=year, month=month, day=day)


def retention_months(site: Site) -> dict[str, int]:
    """Return the site's period per data class: its settings over the defaults."""
    configured = (site.settings or {}).get("retention") or {}
    periods = {name: c.months for name, c in DATA_CLASSES.items()}
    for name, value in configured.items():
        if name in periods and isinstance(value, int) and MIN_MONTHS <= value <= MAX_MONTHS:
            periods[name] = value
    return periods


def validate_retention(values: Mapping[str, Any]) -> dict[str, int]:
    """Check submitted periods (months per data class); raise ApiError."""
    periods: dict[str, int] = {}
    for name, raw in values.items():
        if name not in DATA_CLASSES:
            raise ApiError(
                "invalid_data_class", f"{name!r} is not one of {', '.join(DATA_CLASSES)}"
            )
        try:
            months = int(str(raw).strip())
        except ValueError as exc:
            raise ApiError("invalid_retention", f"{name}: a whole number of months") from exc
        if not MIN_MONTHS <= months <= MAX_MONTHS:
            raise ApiError(
                "invalid_retention", f"{name}: between {MIN_MONTHS} and {MAX_MONTHS} months"
            )
        periods[name] = months
    return periods


def set_retention(site: Site, values: Mapping[str, Any]) -> dict[str, int]:
    """Store new periods on the site (caller commits); return the effective periods."""
    periods = {**retention_months(site), **validate_retention(values)}
    defaults = {name: c.months for name, c in DATA_CLASSES.items()}
    overrides = {name: m for name, m in periods.items() if m != defaults[name]}
    # A new dict: the JSON column only notices replaced values.
    site.settings = {**(site.settings or {}), "retention": overrides}
    return periods


# ---------------------------------------------------------------------------------------------
# Batched purge


@dataclass(frozen=True)
class Progress:
    scope: str
    data_class: str
    done: int
    total: int


ProgressCallback = Callable[[Progress], None]


@dataclass
class PurgeReport:
    deleted: dict[str, int] = field(default_factory=dict)
    batches: int = 0
    interrupted: bool = False
    closed_accounts: list[int] = field(default_factory=list)
    # The same counts per scope ("site:3", "account:2"): each account's audit entry tells its
    # own deletions, not every tenant's.
    by_scope: dict[str, dict[str, int]] = field(default_factory=dict)

    def add(self, data_class: str, count: int, scope: str | None = None) -> None:
        self.deleted[data_class] = self.deleted.get(data_class, 0) + count
        if scope is not None:
            mine = self.by_scope.setdefault(scope, {})
            mine[data_class] = mine.get(data_class, 0) + count

    def for_account(self, account_id: int, site_ids: Collection[int]) -> dict[str, Any]:
        """What this purge deleted of one account (its sites and its audit log)."""
        scopes = {f"site:{site_id}" for site_id in site_ids} | {f"account:{account_id}"}
        deleted: dict[str, int] = {}
        for scope in scopes:
            for data_class, count in self.by_scope.get(scope, {}).items():
                deleted[data_class] = deleted.get(data_class, 0) + count
        return {
            "deleted": deleted,
            "total": sum(deleted.values()),
            "interrupted": self.interrupted,
            "account_deleted": account_id in self.closed_accounts,
        }

    def as_json(self) -> dict[str, Any]:
        return {
            "deleted": self.deleted,
            "total": sum(self.deleted.values()),
            "batches": self.batches,
            "interrupted": self.interrupted,
            "closed_accounts_deleted": self.closed_accounts,
        }


@dataclass(frozen=True)
class _Target:
    """One (scope, data class) to purge: which rows, ordered by which time and key."""

    scope: str
    data_class: str
    model: Any
    time_column: Any
    key_column: Any
    where: tuple[ColumnElement[bool], ...]
    cutoff: dt.datetime
    # None: delete the rows; else the values that anonymise them.
    values: Mapping[str, Any] | None = None


def _rowcount(result: Any) -> int:
    return max(0, int(cast(CursorResult[Any], result).rowcount))


def _targets_for_site(site: Site, now: dt.datetime, everything: bool) -> list[_Target]:
    periods = retention_months(site)

    def cutoff(name: str) -> dt.datetime:
        # A closed account: everything, including what is being written right now.
        return now + dt.timedelta(days=1) if everything else months_before(now, periods[name])

    scope = f"site:{site.id}"
    return [
        _Target(
            scope,
            "pageviews",
            Pageview,
            Pageview.viewed_at,
            Pageview.id,
            (Pageview.site_id == site.id,),
            cutoff("pageviews"),
        ),
        _Target(
            scope,
            "carts",
            Cart,
            Cart.updated_at,
            Cart.session_id,
            (Cart.site_id == site.id,),
            cutoff("carts"),
        ),
        _Target(
            scope,
            "recordings",
            Call,
            Call.started_at,
            Call.id,
            (Call.site_id == site.id, Call.recording_sid.is_not(None)),
            cutoff("recordings"),
            {"recording_sid": None, "recording_url": None, "recording_duration_s": None},
        ),
        _Target(
            scope,
            "contact_requests",
            ContactRequest,
            ContactRequest.created_at,
            ContactRequest.id,
            (ContactRequest.site_id == site.id,),
            cutoff("contact_requests"),
        ),
        _Target(
            scope,
            "calls",
            Call,
            Call.started_at,
            Call.id,
            (Call.site_id == site.id,),
            cutoff("calls"),
        ),
        _Target(
            scope,
            "sessions",
            TrackedSession,
            TrackedSession.last_seen_at,
            TrackedSession.id,
            (TrackedSession.site_id == site.id,),
            cutoff("sessions"),
        ),
    ]


async def _cursor(db: AsyncSession, target: _Target, now: dt.datetime) -> PurgeCursor:
    cursor = await db.scalar(
        select(PurgeCursor).where(
            PurgeCursor.scope == target.scope, PurgeCursor.data_class == target.data_class
        )
    )
    if cursor is None:
        cursor = PurgeCursor(
            scope=target.scope,
            data_class=target.data_class,
            cutoff_at=target.cutoff,
            deleted=0,
            started_at=now,
            updated_at=now,
        )
        db.add(cursor)
    elif cursor.finished_at is not None:
        # A new run starts again from the oldest row.
        cursor.position_at, cursor.position_key = None, None
        cursor.deleted, cursor.started_at, cursor.finished_at = 0, now, None
    # An interrupted run resumes from its position: every row before it is already gone.
    cursor.cutoff_at = target.cutoff
    cursor.updated_at = now
    await db.flush()
    return cursor


def _selection(target: _Target, cursor: PurgeCursor) -> list[ColumnElement[bool]]:
    conditions = [*target.where, target.time_column < cursor.cutoff_at]
    if cursor.position_at is not None:
        # Rows before the position are gone; starting here skips their dead index entries.
        conditions.append(target.time_column >= cursor.position_at)
    return conditions


async def _delete_children(db: AsyncSession, target: _Target, keys: list[Any]) -> None:
    """Delete what hangs off the rows (the foreign keys would too; this keeps counts honest)."""
    if target.data_class == "sessions":
        await db.execute(delete(Pageview).where(Pageview.session_id.in_(keys)))
        await db.execute(delete(Cart).where(Cart.session_id.in_(keys)))
        await db.execute(
            update(Call)
            .where(Call.session_id.in_(keys))
            .values(session_id=None, lease_id=None)
            .execution_options(synchronize_session=False)
        )
        await db.execute(delete(Lease).where(Lease.session_id.in_(keys)))
    elif target.data_class == "calls":
        sids = select(Call.provider_call_id).where(Call.id.in_(keys)).scalar_subquery()
        await db.execute(delete(CarrierEvent).where(CarrierEvent.provider_call_id.in_(sids)))


async def _purge_batch(
    db: AsyncSession, target: _Target, cursor: PurgeCursor, batch_size: int
) -> tuple[int, bool]:
    """Delete (or anonymise) the next `batch_size` rows, oldest first; return (count, more)."""
    selection = _selection(target, cursor)
    order = (target.time_column, target.key_column)
    # The batch's last row bounds a range delete: one indexed range scan and no list of
    # thousands of keys to send back (sending them costs more than deleting the rows).
    boundary = (
        await db.execute(
            select(*order).where(*selection).order_by(*order).offset(batch_size - 1).limit(1)
        )
    ).first()
    if boundary is not None:
        selection.append(tuple_(*order) <= tuple_(*boundary))
    else:
        last = (
            await db.execute(
                select(*order).where(*selection).order_by(*(c.desc() for c in order)).limit(1)
            )
        ).first()
        if last is None:
            return 0, False
        boundary = last
    if target.values is not None:
        if target.data_class == "recordings":
            # The carrier's recording callbacks hold the same reference (RecordingSid, URL):
            # they go with it, not 19 months later with the call (found by an audit).
            sids = select(Call.provider_call_id).where(*selection).scalar_subquery()
            await db.execute(
                delete(CarrierEvent).where(
                    CarrierEvent.kind == RECORDING_CALLBACK, CarrierEvent.provider_call_id.in_(sids)
                )
            )
        statement: Any = update(target.model).where(*selection).values(**target.values)
    else:
        if target.data_class in ("sessions", "calls"):
            keys = list(await db.scalars(select(target.key_column).where(*selection)))
            await _delete_children(db, target, keys)
        statement = delete(target.model).where(*selection)
    count = _rowcount(await db.execute(statement.execution_options(synchronize_session=False)))
    cursor.deleted += count
    cursor.position_at, cursor.position_key = boundary[0], str(boundary[1])
    return count, boundary is not None and count >= batch_size


async def _purge_target(
    database: Database,
    target: _Target,
    now: dt.datetime,
    report: PurgeReport,
    *,
    batch_size: int,
    pause_ratio: float,
    progress: ProgressCallback | None,
    should_stop: Callable[[], bool],
) -> None:
    async with database.begin() as db:
        cursor = await _cursor(db, target, now)
        remaining = int(
            await db.scalar(
                select(func.count()).select_from(target.model).where(*_selection(target, cursor))
            )
            or 0
        )
        done, total = cursor.deleted, cursor.deleted + remaining
    if progress is not None:
        progress(Progress(target.scope, target.data_class, done, total))
    more = remaining > 0
    while more:
        if should_stop():
            report.interrupted = True
            return
        started = time.perf_counter()
        async with database.begin() as db:
            cursor = await _cursor(db, target, now)
            count, more = await _purge_batch(db, target, cursor, batch_size)
            cursor.updated_at = now
            done = cursor.deleted
        if count:
            report.add(target.data_class, count, target.scope)
            report.batches += 1
            if progress is not None:
                progress(Progress(target.scope, target.data_class, done, max(total, done)))
        # Leave the database to collection for `pause_ratio` times as long as this batch used it.
        await asyncio.sleep((time.perf_counter() - started) * pause_ratio)
    async with database.begin() as db:
        cursor = await _cursor(db, target, now)
        cursor.finished_at = now


async def _audit_target(db: AsyncSession, account_id: int, now: dt.datetime) -> _Target:
    sites = list(await db.scalars(select(Site).where(Site.account_id == account_id)))
    # The audit log is the account's: keep it as long as the longest period any site asks for.
    months = max((retention_months(s)["audit_log"] for s in sites), default=60)
    return _Target(
        f"account:{account_id}",
        "audit_log",
        AuditEntry,
        AuditEntry.at,
        AuditEntry.id,
        (AuditEntry.account_id == account_id,),
        months_before(now, months),
    )


async def purge(
    database: Database,
    now: dt.datetime,
    *,
    site_ids: list[int] | None = None,
    data_classes: list[str] | None = None,
    batch_size: int = DEFAULT_BATCH,
    pause_ratio: float = DEFAULT_PAUSE_RATIO,
    progress: ProgressCallback | None = None,
    should_stop: Callable[[], bool] = lambda: False,
    export_dir: Path | None = None,
) -> PurgeReport:
    """Delete everything past its retention period, batch by batch; resumable."""
    if batch_size < 1 or batch_size > 50_000:
        raise ApiError("invalid_batch_size", "the batch size is between 1 and 50,000 rows")
    if not 0 <= pause_ratio <= 100:  # also NaN
        raise ApiError("invalid_pause_ratio", "the pause ratio is between 0 and 100")
    unknown = set(data_classes or ()) - set(DATA_CLASSES) - {"exports", "carrier_events"}
    if unknown:
        raise ApiError("invalid_data_class", f"unknown data classes: {', '.join(sorted(unknown))}")
    wanted = set(data_classes or DATA_CLASSES) | (set() if data_classes else {"exports"})
    report = PurgeReport()
    async with database.begin() as db:
        query = select(Site).order_by(Site.id)
        if site_ids is not None:
            query = query.where(Site.id.in_(site_ids))
        sites = list(await db.scalars(query))
        closed = {
            a.id
            for a in await db.scalars(select(Account).where(Account.closed_at.is_not(None)))
            if a.closed_at is not None and a.closed_at + CLOSED_ACCOUNT_GRACE <= now
        }
        accounts = sorted({s.account_id for s in sites})
        audit_targets = [await _audit_target(db, a, now) for a in accounts if a not in closed]
        for site in sites:
            db.expunge(site)
    options: dict[str, Any] = {
        "batch_size": batch_size,
        "pause_ratio": pause_ratio,
        "progress": progress,
        "should_stop": should_stop,
    }
    targets: list[_Target] = []
    for site in sites:
        everything = site.account_id in closed
        targets += [
            t
            for t in _targets_for_site(site, now, everything)
            if everything or t.data_class in wanted
        ]
    targets += [t for t in audit_targets if "audit_log" in wanted]
    for target in targets:
        await _purge_target(database, target, now, report, **options)
        if report.interrupted:
            return report
    if "sessions" in wanted:
        await _forget_purged_visits(database, accounts)
    if "exports" in wanted and export_dir is not None:
        owners = None if site_ids is None else accounts
        report.add("exports", await purge_exports(database, now, export_dir, owners))
    if not data_classes and site_ids is None:
        report.add("carrier_events", await _purge_orphan_events(database, now, batch_size))
        report.add("webhook_deliveries", await _purge_deliveries(database, now, batch_size))
    for account_id in sorted(closed):
        if site_ids is None or any(s.account_id == account_id for s in sites):
            await delete_closed_account(database, account_id, export_dir)
            report.closed_accounts.append(account_id)
    return report


async def _forget_purged_visits(database: Database, account_ids: list[int]) -> None:
    """Drop restrictions that name visits the purge deleted (an id is still an identifier)."""
    async with database.begin() as db:
        await db.execute(
            delete(Restriction).where(
                Restriction.account_id.in_(account_ids),
                Restriction.kind == "session",
                ~select(TrackedSession.id).where(TrackedSession.id == Restriction.value).exists(),
            )
        )


async def purge_exports(
    database: Database, now: dt.datetime, export_dir: Path, account_ids: list[int] | None = None
) -> int:
    """Delete export archives past their expiry (files and records), of some accounts or all."""
    async with database.begin() as db:
        query = select(ExportRecord).where(ExportRecord.expires_at <= now)
        if account_ids is not None:
            query = query.where(ExportRecord.account_id.in_(account_ids))
        expired = list(await db.scalars(query))
        for record in expired:
            delete_export_file(export_dir, record)
        if expired:
            await db.execute(
                delete(ExportRecord).where(ExportRecord.id.in_([e.id for e in expired]))
            )
    return len(expired)


async def _delete_in_batches(
    database: Database, key: Any, conditions: list[ColumnElement[bool]], batch_size: int
) -> int:
    """Delete the rows matching `conditions` (`key` is their table's id column), a batch per
    short transaction; return how many went."""
    deleted = 0
    while True:
        async with database.begin() as db:
            ids = list(
                await db.scalars(select(key).where(*conditions).order_by(key).limit(batch_size))
            )
            if ids:
                await db.execute(delete(key.table).where(key.in_(ids)))
        deleted += len(ids)
        if len(ids) < batch_size:
            return deleted


async def _purge_orphan_events(database: Database, now: dt.datetime, batch_size: int) -> int:
    """Delete carrier callbacks that never matched a call, after ORPHAN_EVENT_TTL."""
    matched = select(Call.id).where(Call.provider_call_id == CarrierEvent.provider_call_id)
    conditions = [CarrierEvent.received_at < now - ORPHAN_EVENT_TTL, ~matched.exists()]
    return await _delete_in_batches(database, CarrierEvent.id, conditions, batch_size)


async def _purge_deliveries(database: Database, now: dt.datetime, batch_size: int) -> int:
    """Delete webhook deliveries done with (delivered, or given up) for WEBHOOK_DELIVERY_TTL."""
    conditions = [
        WebhookDelivery.status != "pending",
        WebhookDelivery.created_at < now - WEBHOOK_DELIVERY_TTL,
    ]
    return await _delete_in_batches(database, WebhookDelivery.id, conditions, batch_size)


async def delete_closed_account(
    database: Database, account_id: int, export_dir: Path | None
) -> None:
    """Delete what is left of a closed account once its big tables are purged."""
    async with database.begin() as db:
        if export_dir is not None:
            for record in await db.scalars(
                select(ExportRecord).where(ExportRecord.account_id == account_id)
            ):
                delete_export_file(export_dir, record)
        site_ids = list(await db.scalars(select(Site.id).where(Site.account_id == account_id)))
        scopes = [f"site:{s}" for s in site_ids] + [f"account:{account_id}"]
        await db.execute(delete(PurgeCursor).where(PurgeCursor.scope.in_(scopes)))
        for model in (
            ExportRecord,
            ExclusionEntry,
            Restriction,
            AuditEntry,
            ApiToken,
            WebhookEndpoint,
            AdCost,
            User,
        ):
            await db.execute(delete(model).where(model.account_id == account_id))
        if site_ids:
            # Calls of other tables reference tracking numbers of these sites: all purged above.
            await db.execute(delete(Site).where(Site.id.in_(site_ids)))
        await db.execute(delete(Account).where(Account.id == account_id))
    log.info("closed account %s deleted", account_id)


# Any fixed 64-bit key; the purge is the only user of advisory locks in Calltrack.
PURGE_LOCK_KEY = 7423190011


async def locked_purge(
    database: Database, run: Callable[[], Awaitable[PurgeReport]]
) -> PurgeReport | None:
    """Run a purge unless another process is purging (None then).

    On PostgreSQL several workers and the CLI share one database: a session-level advisory lock,
    held by a connection of its own for the whole run, lets only one of them purge. SQLite is
    the single-process embedded default; concurrent batches would only repeat idempotent work.
    """
    if database.is_sqlite:
        return await run()
    async with database.engine.connect() as connection:
        locked = await connection.scalar(
            text("SELECT pg_try_advisory_lock(:key)"), {"key": PURGE_LOCK_KEY}
        )
        await connection.commit()
        if not locked:
            return None
        try:
            return await run()
        finally:
            await connection.execute(
                text("SELECT pg_advisory_unlock(:key)"), {"key": PURGE_LOCK_KEY}
            )
            await connection.commit()
