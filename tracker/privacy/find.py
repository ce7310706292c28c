"""Find a person: everything Calltrack holds about a phone number, visitor, session or call.

A person is found from one identifier and followed through the links the data itself makes:
a call's caller number and attributed visit, a callback request's number and visit, a visit's
visitor id. Call attribution is a probability, so a call and a visit are treated as the same
person only when the attribution is confident (see LINK_MIN_CONFIDENCE): an overflow lease is
one of two visitors, and erasing the other one's visit by mistake would be a breach in itself.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

from sqlalchemy import ColumnElement, Text, false, or_, select
from sqlalchemy import cast as sql_cast
from sqlalchemy.ext.asyncio import AsyncSession

from tracker.errors import ApiError, NotFound
from tracker.models import (
    AuditEntry,
    Call,
    CarrierEvent,
    Cart,
    ContactRequest,
    ExclusionEntry,
    ExportRecord,
    Lease,
    Pageview,
    Restriction,
    Site,
    TrackedSession,
    TrackingNumber,
    WebhookDelivery,
)
from tracker.phones import InvalidPhoneNumber, phone_forms, to_e164
from tracker.privacy.hashing import SubjectKind, subject_hash, subject_ref
from tracker.web import parse_id

SUBJECT_KINDS: tuple[SubjectKind, ...] = ("phone", "visitor", "session", "call")
# Pool attribution never goes below 0.6 (telephony.attribution.STALE_CONFIDENCE); overflow
# leases are at most 0.5. Below this a call and a visit are not assumed to be one person.
LINK_MIN_CONFIDENCE = 0.6
# Links are followed until nothing new is found, at most this many times: a person with more
# than a handful of hops is almost certainly several people joined by a shared number.
MAX_ROUNDS = 5
# Beyond this many visits or calls the search stops growing; the result says it was capped.
MAX_RECORDS = 2000
_HEX_ID = re.compile(r"^[0-9a-f]{16,32}\Z")
_CALL_ID = re.compile(r"^(?:\d{1,18}|[A-Za-z0-9_-]{8,64})\Z")
_CHUNK = 500


@dataclass(frozen=True)
class SubjectQuery:
    """One identifier of a person, normalised: E.164 number, visitor id, session id or call."""

    kind: SubjectKind
    value: str


def parse_subject(kind: str, raw: str, default_country: str | None = None) -> SubjectQuery:
    """Normalise what a DPO typed; phone numbers in any written form; raise ApiError."""
    text = (raw or "").strip()
    if kind == "phone":
        try:
            return SubjectQuery("phone", to_e164(text, default_country))
        except InvalidPhoneNumber as exc:
            raise ApiError("invalid_phone", str(exc)) from exc
    if kind in ("visitor", "session"):
        value = text.lower()
        if not _HEX_ID.match(value):
            raise ApiError(f"invalid_{kind}", f"a {kind} id is 16 to 32 hexadecimal characters")
        return SubjectQuery(cast(SubjectKind, kind), value)
    if kind == "call":
        if not _CALL_ID.match(text):
            raise ApiError("invalid_call", "a call is its number in Calltrack or its carrier id")
        return SubjectQuery("call", text)
    raise ApiError("invalid_kind", f"search by one of {', '.join(SUBJECT_KINDS)}")


@dataclass(frozen=True)
class Scope:
    """Where to look: one account, some of its sites."""

    account_id: int
    site_ids: tuple[int, ...]
    default_country: str | None = None


async def scope_for(db: AsyncSession, account_id: int | None, site_key: str | None) -> Scope:
    """Scope a search to a site (by key) or to every site of an account; raise NotFound."""
    if site_key:
        site = await db.scalar(select(Site).where(Site.site_key == site_key))
        if site is None or (account_id is not None and site.account_id != account_id):
            raise NotFound("unknown_site", f"no site has the key {site_key!r}")
        return Scope(site.account_id, (site.id,), site.country)
    if account_id is None:
        raise ApiError("site_required", "name a site with --site KEY")
    sites = list(await db.scalars(select(Site).where(Site.account_id == account_id)))
    return Scope(account_id, tuple(s.id for s in sites), sites[0].country if sites else None)


@dataclass
class Person:
    """Every record found for one person, table by table."""

    scope: Scope
    query: SubjectQuery
    phones: set[str] = field(default_factory=set)
    visitor_ids: set[str] = field(default_factory=set)
    session_ids: set[str] = field(default_factory=set)
    sessions: list[TrackedSession] = field(default_factory=list)
    pageviews: list[Pageview] = field(default_factory=list)
    carts: list[Cart] = field(default_factory=list)
    leases: list[Lease] = field(default_factory=list)
    calls: list[Call] = field(default_factory=list)
    carrier_events: list[CarrierEvent] = field(default_factory=list)
    contact_requests: list[ContactRequest] = field(default_factory=list)
    audit_entries: list[AuditEntry] = field(default_factory=list)
    webhook_deliveries: list[WebhookDelivery] = field(default_factory=list)
    restrictions: list[Restriction] = field(default_factory=list)
    exclusions: list[ExclusionEntry] = field(default_factory=list)
    exports: list[ExportRecord] = field(default_factory=list)
    # E.164 of the tracking numbers the person's leases name (for display).
    tracking_numbers: dict[int, str] = field(default_factory=dict)
    capped: bool = False

    TABLES = (
        "sessions",
        "pageviews",
        "carts",
        "leases",
        "calls",
        "carrier_events",
        "contact_requests",
        "audit_log",
        "webhook_deliveries",
        "privacy_restrictions",
        "privacy_exclusions",
        "privacy_exports",
    )

    def rows(self, table: str) -> Sequence[Any]:
        """Return the rows found in one table (by table name)."""
        attribute = {
            "audit_log": "audit_entries",
            "privacy_restrictions": "restrictions",
            "privacy_exclusions": "exclusions",
            "privacy_exports": "exports",
        }.get(table, table)
        return cast(Sequence[Any], getattr(self, attribute))

    def counts(self) -> dict[str, int]:
        return {table: len(self.rows(table)) for table in self.TABLES}

    @property
    def found(self) -> bool:
        """Tell whether any data about the person itself was found (not only audit traces)."""
        return bool(self.sessions or self.calls or self.contact_requests)

    @property
    def call_sids(self) -> set[str]:
        return {c.provider_call_id for c in self.calls}

    def identifiers(self) -> list[tuple[str, str]]:
        """Return (kind, value) of every identifier of the person."""
        found: list[tuple[str, str]] = [("phone", p) for p in sorted(self.phones)]
        found += [("visitor", v) for v in sorted(self.visitor_ids)]
        found += [("session", s) for s in sorted(self.session_ids)]
        found += [("call", str(c.id)) for c in self.calls]
        if (self.query.kind, self.query.value) not in found:
            found.append((self.query.kind, self.query.value))
        return found

    def subject_hashes(self, secret_key: str) -> list[str]:
        return sorted(
            {
                subject_hash(secret_key, self.scope.account_id, kind, value)
                for kind, value in self.identifiers()
            }
        )

    def subject(self, secret_key: str) -> str:
        """Name the person in audit entries by the keyed hash of what was searched."""
        return subject_ref(secret_key, self.scope.account_id, self.query.kind, self.query.value)

    def record_refs(self) -> dict[str, list[str]]:
        """Name the main records (for audit entries): `{"calls": ["12"], ...}`."""
        refs = {
            "sessions": sorted(self.session_ids),
            "calls": [str(c.id) for c in self.calls],
            "contact_requests": [str(r.id) for r in self.contact_requests],
        }
        return {table: ids for table, ids in refs.items() if ids}

    def text_tokens(self, secret_key: str) -> tuple[set[str], set[str]]:
        """Return (substrings, exact strings) that identify the person in free text and JSON."""
        substrings: set[str] = set(self.visitor_ids) | set(self.session_ids)
        substrings |= {sid for sid in self.call_sids if len(sid) >= 16}
        substrings |= set(self.subject_hashes(secret_key))
        for phone in self.phones:
            forms = phone_forms(phone)
            substrings |= {phone, forms.national, forms.international, forms.national_digits}
        if self.query.kind in ("visitor", "session", "phone"):
            substrings.add(self.query.value)
        exact: set[str] = set()
        for call in self.calls:
            exact |= {f"calls:{call.id}", f"call:{call.id}"}
        for request in self.contact_requests:
            exact |= {f"contact_requests:{request.id}", f"contact_request:{request.id}"}
        return {s for s in substrings if len(s) >= 8}, exact


def _chunks(values: Iterable[Any]) -> list[list[Any]]:
    items = sorted(values)
    return [items[i : i + _CHUNK] for i in range(0, len(items), _CHUNK)]


def in_values(column: Any, values: set[Any]) -> ColumnElement[bool]:
    """Build `column IN (...)` in chunks (SQLite caps bound parameters); false when empty."""
    if not values:
        return false()
    return or_(*(column.in_(chunk) for chunk in _chunks(values)))


def _linked(call: Call) -> bool:
    return call.direction == "outbound" or call.confidence >= LINK_MIN_CONFIDENCE


async def _seed_calls(db: AsyncSession, scope: Scope, value: str) -> list[Call]:
    call_id = parse_id(value)
    condition = Call.id == call_id if call_id is not None else Call.provider_call_id == value
    return list(await db.scalars(select(Call).where(Call.site_id.in_(scope.site_ids), condition)))


async def find_person(
    db: AsyncSession, scope: Scope, query: SubjectQuery, secret_key: str
) -> Person:
    """Collect every record of the person named by `query` within `scope`."""
    person = Person(scope=scope, query=query)
    sites = scope.site_ids
    call_ids: set[int] = set()
    if query.kind == "phone":
        person.phones.add(query.value)
    elif query.kind == "visitor":
        person.visitor_ids.add(query.value)
    elif query.kind == "session":
        person.session_ids.add(query.value)
    else:
        call_ids = {c.id for c in await _seed_calls(db, scope, query.value)}

    calls: list[Call] = []
    requests: list[ContactRequest] = []
    sessions: list[TrackedSession] = []
    for _ in range(MAX_ROUNDS):
        size = (len(person.phones), len(person.visitor_ids), len(person.session_ids), len(call_ids))
        calls = list(
            await db.scalars(
                select(Call)
                .where(
                    Call.site_id.in_(sites),
                    or_(
                        in_values(Call.caller_e164, person.phones),
                        in_values(Call.id, call_ids),
                        in_values(Call.session_id, person.session_ids),
                    ),
                )
                .order_by(Call.started_at)
                .limit(MAX_RECORDS)
            )
        )
        # A call reached only through a doubtful attribution is someone else's call.
        calls = [
            c
            for c in calls
            if c.id in call_ids
            or (c.caller_e164 is not None and c.caller_e164 in person.phones)
            or _linked(c)
        ]
        for call in calls:
            call_ids.add(call.id)
            if call.caller_e164:
                person.phones.add(call.caller_e164)
            if call.session_id and _linked(call):
                person.session_ids.add(call.session_id)
        requests = list(
            await db.scalars(
                select(ContactRequest)
                .where(
                    ContactRequest.site_id.in_(sites),
                    or_(
                        in_values(ContactRequest.phone_e164, person.phones),
                        in_values(ContactRequest.session_id, person.session_ids),
                    ),
                )
                .order_by(ContactRequest.created_at)
                .limit(MAX_RECORDS)
            )
        )
        for request in requests:
            person.phones.add(request.phone_e164)
            if request.session_id:
                person.session_ids.add(request.session_id)
        sessions = list(
            await db.scalars(
                select(TrackedSession)
                .where(
                    TrackedSession.site_id.in_(sites),
                    or_(
                        in_values(TrackedSession.id, person.session_ids),
                        in_values(TrackedSession.visitor_id, person.visitor_ids),
                    ),
                )
                .order_by(TrackedSession.started_at)
                .limit(MAX_RECORDS)
            )
        )
        for session in sessions:
            person.session_ids.add(session.id)
            if session.visitor_id:
                person.visitor_ids.add(session.visitor_id)
        if max(len(calls), len(requests), len(sessions)) >= MAX_RECORDS:
            person.capped = True
            break
        new_size = (
            len(person.phones),
            len(person.visitor_ids),
            len(person.session_ids),
            len(call_ids),
        )
        if new_size == size:
            break
    # Ids that only the query named (a session that does not exist) are not records.
    person.session_ids = {s.id for s in sessions}
    person.sessions, person.calls, person.contact_requests = sessions, calls, requests
    await _load_related(db, person, secret_key)
    return person


async def _load_related(db: AsyncSession, person: Person, secret_key: str) -> None:
    ids = person.session_ids
    person.pageviews = list(
        await db.scalars(
            select(Pageview).where(in_values(Pageview.session_id, ids)).order_by(Pageview.viewed_at)
        )
    )
    person.carts = list(await db.scalars(select(Cart).where(in_values(Cart.session_id, ids))))
    person.leases = list(
        await db.scalars(select(Lease).where(in_values(Lease.session_id, ids)).order_by(Lease.id))
    )
    numbers = {lease.tracking_number_id for lease in person.leases}
    person.tracking_numbers = {
        number_id: e164
        for number_id, e164 in await db.execute(
            select(TrackingNumber.id, TrackingNumber.e164).where(
                in_values(TrackingNumber.id, numbers)
            )
        )
    }
    providers = {(c.provider, c.provider_call_id) for c in person.calls}
    events = await db.scalars(
        select(CarrierEvent)
        .where(in_values(CarrierEvent.provider_call_id, {sid for _, sid in providers}))
        .order_by(CarrierEvent.id)
    )
    person.carrier_events = [e for e in events if (e.provider, e.provider_call_id) in providers]
    account = person.scope.account_id
    values = person.phones | person.visitor_ids | person.session_ids
    person.restrictions = list(
        await db.scalars(
            select(Restriction).where(
                Restriction.account_id == account, in_values(Restriction.value, values)
            )
        )
    )
    hashes = set(person.subject_hashes(secret_key))
    person.exclusions = list(
        await db.scalars(
            select(ExclusionEntry).where(
                ExclusionEntry.account_id == account, in_values(ExclusionEntry.key_hash, hashes)
            )
        )
    )
    exports = await db.scalars(select(ExportRecord).where(ExportRecord.account_id == account))
    person.exports = [e for e in exports if hashes.intersection(e.subject_hashes or [])]
    substrings, exact = person.text_tokens(secret_key)
    person.audit_entries = await audit_entries_about(db, account, substrings, exact)
    deliveries: dict[int, WebhookDelivery] = {}
    for some, _ in _token_chunks(substrings, set()):
        for delivery in await db.scalars(
            select(WebhookDelivery).where(
                WebhookDelivery.account_id == account,
                _text_match(WebhookDelivery.body, some, set()),
            )
        ):
            deliveries[delivery.id] = delivery
    person.webhook_deliveries = [deliveries[key] for key in sorted(deliveries)]


# Conditions per statement: SQLite parses "a OR b OR ..." as a tree at most 1,000 deep, and a
# caller with a few hundred calls and visits names more records than that.
MAX_TEXT_CONDITIONS = 200


def _token_chunks(substrings: set[str], exact: set[str]) -> list[tuple[set[str], set[str]]]:
    """Split the tokens into groups of at most MAX_TEXT_CONDITIONS, for one query each."""
    tokens = [(token, False) for token in sorted(substrings)] + [(t, True) for t in sorted(exact)]
    return [
        (
            {t for t, is_exact in tokens[i : i + MAX_TEXT_CONDITIONS] if not is_exact},
            {t for t, is_exact in tokens[i : i + MAX_TEXT_CONDITIONS] if is_exact},
        )
        for i in range(0, len(tokens), MAX_TEXT_CONDITIONS)
    ]


def _text_match(column: Any, substrings: set[str], exact: set[str]) -> ColumnElement[bool]:
    conditions = [column.contains(token, autoescape=True) for token in sorted(substrings)]
    # Exact references are matched as whole JSON strings ("calls:12" must not match "calls:123").
    conditions += [column.contains(f'"{token}"', autoescape=True) for token in sorted(exact)]
    return or_(*conditions) if conditions else false()


async def audit_entries_about(
    db: AsyncSession, account_id: int, substrings: set[str], exact: set[str]
) -> list[AuditEntry]:
    """Return the account's audit entries whose target or detail names the person."""
    if not substrings and not exact:
        return []
    detail = sql_cast(AuditEntry.detail, Text)
    found: dict[int, AuditEntry] = {}
    for some, some_exact in _token_chunks(substrings, exact):
        rows = await db.scalars(
            select(AuditEntry).where(
                AuditEntry.account_id == account_id,
                or_(
                    _text_match(AuditEntry.target, some, set()),
                    in_values(AuditEntry.target, some_exact),
                    _text_match(detail, some, some_exact),
                ),
            )
        )
        for entry in rows:
            found[entry.id] = entry
    return [found[key] for key in sorted(found)]
