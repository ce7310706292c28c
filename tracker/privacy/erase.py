"""Erasure (GDPR art. 17): delete a person's data everywhere it lives, keep anonymous counts.

- visits, their pages, carts and number leases, callback requests, carrier callbacks, webhook
  copies, restrictions and export archives (rows and files) are deleted;
- calls are anonymised: caller number, region, visit, lease, carrier ids and recording
  references are removed, while channel, campaign, date, duration and outcome stay, so that
  "Paid Search: 12 calls" still counts the call but nothing links it to anyone;
- the number pool (in process or Redis) lets go of the person's visits through its own API;
- audit entries keep their action, but identifiers are scrubbed from their target and detail;
- the exclusion list keeps its keyed hash unless asked otherwise: erasing a person who objected
  must not start tracking them again.

- the live hub's recent events (kept up to 15 minutes for consoles that resume, in process or in
  Redis) that name the person are deleted, when the caller passes the hub;

Not erased here: the audio of recordings, which the carrier keeps (its references are removed;
delete the audio in the carrier's console or with its API), and what an open console already
shows until it reloads.

Erasure is idempotent: a second run finds nothing and reports zeros.
"""

from __future__ import annotations

import datetime as dt
import logging
import secrets
from collections.abc import Collection, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, cast

from sqlalchemy import CursorResult, delete, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from tracker.models import (
    BusinessNumber,
    Call,
    CarrierEvent,
    Cart,
    ContactRequest,
    ExclusionEntry,
    ExportRecord,
    Lease,
    Pageview,
    Restriction,
    TrackedSession,
    WebhookDelivery,
)
from tracker.numbers.pool import PoolNotLoaded, pool_key
from tracker.privacy.export import delete_export_file
from tracker.privacy.find import Person, in_values

ERASED = "[erased]"


class PoolReleaser(Protocol):
    """What erasure needs of a number pool (tracker.numbers.pool.NumberPool fits)."""

    async def release(self, pool: str, session_id: str, now: dt.datetime) -> int | None: ...


class HubForgetter(Protocol):
    """The live hub's backend (`dashboard.hub.backend.HubBackend`: forget, publish)."""

    async def forget(self, site_ids: Iterable[int], tokens: Collection[str]) -> int: ...

    async def publish(self, site_id: int, kind: str, at: str, data: str) -> Any: ...


@dataclass
class ErasureReport:
    """What was done, table by table: {"sessions": {"deleted": 2}, "calls": {"anonymised": 1}}."""

    erasure_id: str
    tables: dict[str, dict[str, int]] = field(default_factory=dict)
    redis_released: int = 0
    files_deleted: int = 0
    live_events_deleted: int = 0
    # The sites whose live consoles must be told, once the erasure is committed
    # (`tell_consoles`); not part of the report.
    site_ids: set[int] = field(default_factory=set)

    def add(self, table: str, what: str, count: int) -> None:
        if count:
            self.tables.setdefault(table, {})[what] = (
                self.tables.get(table, {}).get(what, 0) + count
            )

    @property
    def total(self) -> int:
        return sum(
            n for table in self.tables.values() for what, n in table.items() if what != "kept"
        )

    def as_json(self) -> dict[str, Any]:
        return {
            "erasure_id": self.erasure_id,
            "tables": self.tables,
            "number_pool_released": self.redis_released,
            "export_files_deleted": self.files_deleted,
            "live_events_deleted": self.live_events_deleted,
            "total": self.total,
        }


def _count(result: Any) -> int:
    return max(0, int(cast(CursorResult[Any], result).rowcount))


def scrub(value: Any, substrings: set[str], exact: set[str]) -> Any:
    """Replace every string that names the person, however deep in JSON."""
    if isinstance(value, str):
        if value in exact or any(token in value for token in substrings):
            return ERASED
        return value
    if isinstance(value, list):
        return [scrub(item, substrings, exact) for item in value]
    if isinstance(value, dict):
        return {key: scrub(item, substrings, exact) for key, item in value.items()}
    return value


async def _release_numbers(
    db: AsyncSession, person: Person, pool: PoolReleaser | None, now: dt.datetime
) -> int:
    if pool is None or not person.sessions:
        return 0
    sites = {s.site_id for s in person.sessions}
    businesses = list(
        await db.execute(
            select(BusinessNumber.site_id, BusinessNumber.id).where(
                BusinessNumber.site_id.in_(sites)
            )
        )
    )
    released = 0
    for session in person.sessions:
        for site_id, business_id in businesses:
            if site_id != session.site_id:
                continue
            try:
                if await pool.release(pool_key(site_id, business_id), session.id, now) is not None:
                    released += 1
            except PoolNotLoaded:
                # Nobody holds anything in a pool that is not loaded.
                pass
    return released


async def tell_consoles(hub: HubForgetter | None, report: ErasureReport, now: dt.datetime) -> None:
    """Have open consoles drop an erased person (`visitor.erased`, docs/hub-protocol.md).

    Call it after the erasure committed: consoles answer with a fresh snapshot, which must no
    longer hold the person. The event names nobody. It follows `forget` in the stream, so a
    console that resumes later is replayed it, not the erased events.
    """
    if hub is None:
        return
    for site_id in sorted(report.site_ids):
        try:
            await hub.publish(site_id, "visitor.erased", now.isoformat(), "{}")
        except Exception:
            # The erasure stands; consoles drop the person at their next reload or reconnect.
            logging.getLogger("calltrack.privacy").exception("visitor.erased not published")


async def erase_person(
    db: AsyncSession,
    person: Person,
    *,
    secret_key: str,
    export_dir: Path,
    now: dt.datetime,
    pool: PoolReleaser | None = None,
    drop_exclusion: bool = False,
    hub: HubForgetter | None = None,
) -> ErasureReport:
    """Erase everything found for `person`, in the caller's transaction; report counts."""
    report = ErasureReport(erasure_id=secrets.token_hex(8))
    substrings, exact = person.text_tokens(secret_key)
    session_ids = set(person.session_ids)
    report.redis_released = await _release_numbers(db, person, pool, now)
    # The sites whose live events may name the person (the hub's, or a running embedded
    # server's that this process cannot reach: it reads them from the audit entry).
    report.site_ids = {s.site_id for s in person.sessions} | {c.site_id for c in person.calls}
    report.site_ids |= {r.site_id for r in person.contact_requests}
    if hub is not None and substrings:
        report.live_events_deleted = await hub.forget(report.site_ids, substrings)

    for record in person.exports:
        if delete_export_file(export_dir, record):
            report.files_deleted += 1
    if person.exports:
        report.add(
            "privacy_exports",
            "deleted",
            _count(
                await db.execute(
                    delete(ExportRecord).where(ExportRecord.id.in_([e.id for e in person.exports]))
                )
            ),
        )
    if person.carrier_events:
        ids = {e.id for e in person.carrier_events}
        report.add(
            "carrier_events",
            "deleted",
            _count(await db.execute(delete(CarrierEvent).where(in_values(CarrierEvent.id, ids)))),
        )
    if person.webhook_deliveries:
        ids = {d.id for d in person.webhook_deliveries}
        report.add(
            "webhook_deliveries",
            "deleted",
            _count(
                await db.execute(delete(WebhookDelivery).where(in_values(WebhookDelivery.id, ids)))
            ),
        )
    if person.contact_requests:
        ids = {r.id for r in person.contact_requests}
        report.add(
            "contact_requests",
            "deleted",
            _count(
                await db.execute(delete(ContactRequest).where(in_values(ContactRequest.id, ids)))
            ),
        )
    for call in person.calls:
        # A fresh carrier id keeps (provider, provider_call_id) unique without pointing at the
        # carrier's own record of the call, which holds the caller's number.
        call.provider_call_id = f"erased-{secrets.token_hex(12)}"
        call.caller_e164 = None
        call.caller_region = None
        call.session_id = None
        call.lease_id = None
        call.recording_sid = None
        call.recording_url = None
        call.recording_duration_s = None
        # The TwiML names the carrier's call id (whisper URL).
        call.twiml = None
    report.add("calls", "anonymised", len(person.calls))
    await db.flush()
    if session_ids:
        # Calls attributed (with low confidence) to these visits stay someone else's calls;
        # only their link to the visit goes with it.
        unlinked = await db.execute(
            update(Call)
            .where(in_values(Call.session_id, session_ids))
            .values(session_id=None, lease_id=None)
            .execution_options(synchronize_session=False)
        )
        report.add("calls", "unlinked", _count(unlinked))
        for table, statement in (
            ("leases", delete(Lease).where(in_values(Lease.session_id, session_ids))),
            ("carts", delete(Cart).where(in_values(Cart.session_id, session_ids))),
            ("pageviews", delete(Pageview).where(in_values(Pageview.session_id, session_ids))),
        ):
            report.add(table, "deleted", _count(await db.execute(statement)))
        result = await db.execute(
            delete(TrackedSession).where(in_values(TrackedSession.id, session_ids))
        )
        report.add("sessions", "deleted", _count(result))
    if person.restrictions:
        ids = {r.id for r in person.restrictions}
        report.add(
            "privacy_restrictions",
            "deleted",
            _count(await db.execute(delete(Restriction).where(in_values(Restriction.id, ids)))),
        )
    if person.exclusions:
        ids = {e.id for e in person.exclusions}
        if drop_exclusion:
            result = await db.execute(
                delete(ExclusionEntry).where(in_values(ExclusionEntry.id, ids))
            )
            report.add("privacy_exclusions", "deleted", _count(result))
        else:
            report.add("privacy_exclusions", "kept", len(ids))
    scrubbed = 0
    for entry in person.audit_entries:
        target = scrub(entry.target, substrings, exact)
        detail = scrub(entry.detail or {}, substrings, exact)
        if target != entry.target or detail != entry.detail:
            entry.target = target
            # A new object, so that the JSON column is seen as changed.
            entry.detail = dict(detail)
            scrubbed += 1
    report.add("audit_log", "scrubbed", scrubbed)
    await db.flush()
    return report
