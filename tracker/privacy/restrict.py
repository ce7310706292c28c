"""Restriction of processing (GDPR art. 18): the data is kept but shown and counted nowhere.

A restricted person's identifiers (numbers, visitor ids, visits) are listed per account. Their
records stay in the database, and in data-subject exports (the right of access is not
restricted), but reports, marketer exports and the advisor console must leave them out: they
filter with `session_visible` / `call_visible` (SQL) or `is_restricted` / `restricted_session_ids`.
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import ColumnElement, and_, delete, exists, not_, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from tracker.models import Call, ContactRequest, Restriction, TrackedSession
from tracker.privacy.find import Person

RESTRICTION_KINDS = ("phone", "visitor", "session")


def _restricted(account_id: int, kind: str, column: object) -> ColumnElement[bool]:
    return exists().where(
        Restriction.account_id == account_id,
        Restriction.kind == kind,
        Restriction.value == column,
    )


def session_visible(account_id: int) -> ColumnElement[bool]:
    """SQL condition on `TrackedSession`: the visit is not restricted."""
    return not_(
        or_(
            _restricted(account_id, "session", TrackedSession.id),
            and_(
                TrackedSession.visitor_id.is_not(None),
                _restricted(account_id, "visitor", TrackedSession.visitor_id),
            ),
        )
    )


def _visit_restricted(account_id: int, session_column: object) -> ColumnElement[bool]:
    """The visit `session_column` names is restricted, itself or through its visitor (a
    restricted visitor's later visits have new ids: a review found their callback requests
    and calls still shown)."""
    return or_(
        _restricted(account_id, "session", session_column),
        exists().where(
            TrackedSession.id == session_column,
            TrackedSession.visitor_id.is_not(None),
            _restricted(account_id, "visitor", TrackedSession.visitor_id),
        ),
    )


def call_visible(account_id: int) -> ColumnElement[bool]:
    """SQL condition on `Call`: neither the caller nor the attributed visit is restricted."""
    return not_(
        or_(
            and_(
                Call.caller_e164.is_not(None),
                _restricted(account_id, "phone", Call.caller_e164),
            ),
            and_(Call.session_id.is_not(None), _visit_restricted(account_id, Call.session_id)),
        )
    )


def contact_request_visible(account_id: int) -> ColumnElement[bool]:
    """SQL condition on `ContactRequest`: neither the number nor the visit is restricted."""
    return not_(
        or_(
            _restricted(account_id, "phone", ContactRequest.phone_e164),
            and_(
                ContactRequest.session_id.is_not(None),
                _visit_restricted(account_id, ContactRequest.session_id),
            ),
        )
    )


async def restricted_session_ids(db: AsyncSession, account_id: int) -> set[str]:
    """Return the ids of the account's restricted visits (for in-memory filtering)."""
    direct = await db.scalars(
        select(Restriction.value).where(
            Restriction.account_id == account_id, Restriction.kind == "session"
        )
    )
    ids = set(direct)
    visitors = select(Restriction.value).where(
        Restriction.account_id == account_id, Restriction.kind == "visitor"
    )
    ids |= set(
        await db.scalars(select(TrackedSession.id).where(TrackedSession.visitor_id.in_(visitors)))
    )
    return ids


async def is_restricted(
    db: AsyncSession,
    account_id: int,
    *,
    phone: str | None = None,
    visitor_id: str | None = None,
    session_id: str | None = None,
) -> bool:
    """Tell whether any of these identifiers belongs to a restricted person."""
    wanted = [
        (kind, value)
        for kind, value in (("phone", phone), ("visitor", visitor_id), ("session", session_id))
        if value
    ]
    if not wanted:
        return False
    found = await db.scalar(
        select(Restriction.id)
        .where(
            Restriction.account_id == account_id,
            or_(*(and_(Restriction.kind == k, Restriction.value == v) for k, v in wanted)),
        )
        .limit(1)
    )
    return found is not None


async def restrict_person(db: AsyncSession, person: Person, *, actor: str, now: dt.datetime) -> int:
    """Restrict every identifier of the person; return how many were added. Idempotent."""
    account = person.scope.account_id
    existing = {(r.kind, r.value) for r in person.restrictions}
    wanted = {("phone", p) for p in person.phones}
    wanted |= {("visitor", v) for v in person.visitor_ids}
    wanted |= {("session", s) for s in person.session_ids}
    if person.query.kind in ("phone", "visitor", "session"):
        wanted.add((person.query.kind, person.query.value))
    added = 0
    for kind, value in sorted(wanted - existing):
        db.add(
            Restriction(
                account_id=account, kind=kind, value=value, created_at=now, created_by=actor
            )
        )
        added += 1
    await db.flush()
    return added


async def lift_restriction(db: AsyncSession, person: Person) -> int:
    """Lift the person's restriction; return how many identifiers were freed."""
    ids = [r.id for r in person.restrictions]
    if ids:
        await db.execute(delete(Restriction).where(Restriction.id.in_(ids)))
    return len(ids)
