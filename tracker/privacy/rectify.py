"""Rectification (GDPR art. 16): correct a caller's or visitor's stored details.

Only what a person can meaningfully correct is editable: the number and message of a callback
request, a caller's number (a carrier can pass a wrong caller id), and the location and language
guessed for a visit. Observed facts (pages, times, channel) are not rewritten.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from tracker.errors import ApiError, NotFound
from tracker.models import Call, ContactRequest, TrackedSession
from tracker.phones import InvalidPhoneNumber, caller_location, to_e164
from tracker.privacy.find import Person
from tracker.privacy.hashing import subject_hash

# table -> field a person names -> (column, kind of value)
RECTIFIABLE: dict[str, dict[str, tuple[str, str]]] = {
    "contact_requests": {
        "phone": ("phone_e164", "phone"),
        "message": ("message", "text"),
        "language": ("language", "language"),
    },
    "calls": {"phone": ("caller_e164", "phone")},
    "sessions": {
        "country": ("country", "country"),
        "region": ("region", "place"),
        "city": ("city", "place"),
        "language": ("language", "language"),
    },
}
_LANGUAGE = re.compile(r"^[A-Za-z]{2,3}(-[A-Za-z0-9]{2,8})?\Z")
MAX_MESSAGE = 2000


@dataclass(frozen=True)
class Change:
    table: str
    record_id: str
    field: str
    changed: bool
    # What the audit entry records: hashes for numbers, nothing for free text.
    audit: dict[str, Any]


def _value(kind: str, raw: str, default_country: str | None) -> str | None:
    text = (raw or "").strip()
    if kind == "phone":
        try:
            return to_e164(text, default_country)
        except InvalidPhoneNumber as exc:
            raise ApiError("invalid_phone", str(exc)) from exc
    if kind == "text":
        if len(text) > MAX_MESSAGE:  # refused, not cut: the DPO would not know what was kept
            raise ApiError("invalid_value", f"the text is longer than {MAX_MESSAGE} characters")
        return text or None
    if kind == "language":
        if not _LANGUAGE.match(text):
            raise ApiError("invalid_language", "a language is a code such as fr or en-GB")
        return text
    if kind == "country":
        if not re.fullmatch(r"[A-Za-z]{2}", text):
            raise ApiError("invalid_country", "a country is an ISO code such as FR")
        return text.upper()
    return text[:100] or None


def _record(person: Person, table: str, record_id: str) -> Any:
    rows: list[Any]
    if table == "contact_requests":
        rows = list(person.contact_requests)
    elif table == "calls":
        rows = list(person.calls)
    else:
        rows = list(person.sessions)
    for row in rows:
        if str(row.id) == record_id:
            return row
    raise NotFound("unknown_record", f"{table} {record_id} is not a record of this person")


async def rectify(
    db: AsyncSession,
    person: Person,
    *,
    table: str,
    record_id: str,
    field: str,
    value: str,
    secret_key: str,
) -> Change:
    """Correct one field of one of the person's records, in the caller's transaction."""
    fields = RECTIFIABLE.get(table)
    if fields is None or field not in fields:
        allowed = "; ".join(f"{t}: {', '.join(f)}" for t, f in RECTIFIABLE.items())
        raise ApiError("not_rectifiable", f"editable fields are {allowed}")
    column, kind = fields[field]
    row: ContactRequest | Call | TrackedSession = _record(person, table, record_id)
    new = _value(kind, value, person.scope.default_country)
    if kind == "phone" and new is None:
        raise ApiError("invalid_phone", "a phone number is required")
    old = getattr(row, column)
    audit: dict[str, Any] = {"table": table, "record": f"{table}:{row.id}", "field": field}
    account = person.scope.account_id
    if kind == "phone":
        # The audit log names numbers only by keyed hash: it must not become a copy of them.
        audit["old"] = subject_hash(secret_key, account, "phone", old) if old else None
        audit["new"] = subject_hash(secret_key, account, "phone", str(new))
    elif kind != "text":
        audit["old"], audit["new"] = old, new
    if old == new:
        return Change(table, str(row.id), field, False, audit)
    setattr(row, column, new)
    if isinstance(row, Call) and new is not None:
        row.caller_country, row.caller_region = caller_location(new)
    await db.flush()
    return Change(table, str(row.id), field, True, audit)
