"""The audit log: who did what to which personal data, when and from where."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from tracker.db import Database
from tracker.models import AuditEntry, User

# How far back a background worker that follows the audit log starts reading.
RESCAN_ON_START = 1000
# Concurrent transactions may commit audit rows out of id order: a follower looks this many
# ids back from the highest it has read.
COMMIT_MARGIN = 200


async def audit(
    db: AsyncSession,
    *,
    action: str,
    at: dt.datetime,
    user: User | None = None,
    actor: str | None = None,
    account_id: int | None = None,
    target: str | None = None,
    ip_truncated: str | None = None,
    **detail: Any,
) -> AuditEntry:
    """Append one entry in the caller's transaction (rolled back with it if the action fails)."""
    entry = AuditEntry(
        account_id=account_id if account_id is not None else (user.account_id if user else None),
        user_id=user.id if user else None,
        actor=actor or (user.email if user else "system"),
        action=action,
        target=target,
        detail=detail,
        ip_truncated=ip_truncated,
        at=at,
    )
    db.add(entry)
    return entry


async def recent_audit_mark(database: Database) -> int:
    """Where a worker that follows the audit log starts: a little history before the end.

    Re-reading some history is harmless (what follows the log is idempotent); missing is not.
    """
    async with database.sessions() as db:
        highest = await db.scalar(select(func.max(AuditEntry.id))) or 0
    return max(highest - RESCAN_ON_START, 0)
