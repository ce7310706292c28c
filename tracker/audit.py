"""The audit log: who did what to which personal data, when and from where."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from tracker.models import AuditEntry, User


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
