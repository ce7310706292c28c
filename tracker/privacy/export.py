"""Access and portability (GDPR art. 15 and 20): one person's data as a ZIP archive.

The archive holds `person.json` (every table, structured), one CSV per table, and a README that
explains every field. Archives are written under `var/exports/` with an `ExportRecord` that
names the person only by keyed hashes, so that erasing the person later deletes the archives
already produced as well; the retention purge deletes them after EXPORT_TTL in any case.
"""

from __future__ import annotations

import asyncio
import csv
import datetime as dt
import io
import json
import os
import secrets
import zipfile
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from tracker.models import ExportRecord
from tracker.privacy.find import Person

DEFAULT_EXPORT_DIR = Path("var") / "exports"
# Long enough to send the archive to the person, short enough not to become a second store.
EXPORT_TTL = dt.timedelta(days=7)

# Technical columns left out of the archive: they say nothing about the person.
_LEFT_OUT: dict[str, set[str]] = {
    "calls": {"twiml", "last_sequence"},
    # Staff names and addresses are the staff's personal data, not the requester's.
    "audit_log": {"actor", "user_id", "account_id", "ip_truncated", "detail"},
    "webhook_deliveries": {
        "endpoint_id",
        "account_id",
        "dedupe_key",
        "attempts",
        "first_attempt_at",
        "next_attempt_at",
        "locked_until",
        "last_attempt_at",
        "last_status_code",
        "last_error",
    },
    "privacy_restrictions": {"account_id", "created_by"},
}
EXPORTED_TABLES = (
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
)

TABLE_DOCS = {
    "sessions": "Visits to the website: how the visitor arrived, on which device, from where.",
    "pageviews": "Each page seen during those visits.",
    "carts": "The last known shopping cart of each visit.",
    "leases": "Which tracking phone number was shown during a visit, and when.",
    "calls": "Phone calls from or to the person, and what they were attributed to.",
    "carrier_events": "Notifications the phone carrier sent about those calls, as received.",
    "contact_requests": "Requests to be called back, made on the website.",
    "audit_log": "Actions of the merchant's staff that read or changed this data.",
    "webhook_deliveries": "Notifications about this data sent to the merchant's own systems.",
    "privacy_restrictions": "Identifiers whose processing is restricted at the person's request.",
}

FIELD_DOCS: dict[str, str] = {
    "id": "Identifier of the record in Calltrack.",
    "site_id": "The merchant's website (internal number).",
    "session_id": "The visit this record belongs to.",
    "sessions.visitor_id": "Random visitor identifier stored in the browser, only with consent.",
    "sessions.anon_key": "Keyed hash that links the pages of one visit without consent; "
    "it rotates daily and cannot be turned back into an IP address.",
    "sessions.consent": "Whether the visitor had consented to tracking.",
    "sessions.started_at": "When the visit started (UTC).",
    "sessions.last_seen_at": "Last activity of the visit (UTC).",
    "sessions.landing_url": "First page of the visit.",
    "sessions.referrer": "The page that linked to the website, if the browser sent it.",
    "sessions.channel": "Marketing channel of the visit (Google Analytics 4 default groups).",
    "sessions.source": "Traffic source (e.g. google).",
    "sessions.medium": "Traffic medium (e.g. cpc).",
    "sessions.campaign": "Advertising campaign.",
    "sessions.term": "Search keyword of the campaign.",
    "sessions.content": "Advertisement variant.",
    "sessions.click_ids": "Advertising click identifiers found in the landing URL.",
    "sessions.gclid": "Google Ads click identifier.",
    "sessions.ip_truncated": "IP address with its last part removed (IPv4 /24, IPv6 /48).",
    "sessions.country": "Country guessed from the IP address.",
    "sessions.region": "Region guessed from the IP address.",
    "sessions.city": "City guessed from the IP address.",
    "sessions.browser": "Browser family.",
    "sessions.os": "Operating system family.",
    "sessions.device": "Device type (desktop, mobile, tablet).",
    "sessions.language": "Browser language.",
    "sessions.pageview_count": "Number of pages seen.",
    "sessions.current_url": "Last page seen.",
    "sessions.current_title": "Title of the last page seen.",
    "pageviews.page_id": "Random identifier of the page load.",
    "pageviews.url": "Address of the page.",
    "pageviews.title": "Title of the page.",
    "pageviews.viewed_at": "When the page was opened (UTC).",
    "pageviews.duration_ms": "Time the page was visible, in milliseconds.",
    "carts.items": "Products in the cart: name, reference, quantity, price.",
    "carts.total": "Cart total.",
    "carts.currency": "Currency of the cart.",
    "carts.item_count": "Number of items.",
    "carts.updated_at": "When the cart was last updated (UTC).",
    "leases.tracking_number_id": "The tracking number shown (internal number).",
    "leases.started_at": "When the number was first shown.",
    "leases.last_seen_at": "Last activity while the number was shown.",
    "leases.hold_until": "Until when the number stayed reserved for the visit.",
    "leases.ended_at": "When the number was given back early, if it was.",
    "leases.overflow": "Whether the number was shared because all numbers were in use.",
    "calls.provider": "Phone carrier that handled the call.",
    "calls.provider_call_id": "The carrier's identifier of the call.",
    "calls.direction": "inbound (the person called) or outbound (a callback).",
    "calls.caller_e164": "The person's phone number, international format.",
    "calls.caller_country": "Country of the phone number.",
    "calls.caller_region": "Region of the phone number, from its prefix.",
    "calls.first_time_caller": "Whether it was the first call from this number.",
    "calls.tracking_number_id": "The tracking number called (internal number).",
    "calls.tracking_e164": "The tracking number called.",
    "calls.forwarded_to_e164": "The merchant's line the call was forwarded to.",
    "calls.started_at": "When the call started (UTC).",
    "calls.answered_at": "When it was answered (UTC).",
    "calls.ended_at": "When it ended (UTC).",
    "calls.status": "Carrier call status.",
    "calls.outcome": "answered, missed, busy or failed.",
    "calls.duration_s": "Talk time in seconds.",
    "calls.recording_sid": "The carrier's identifier of the recording, if the call was recorded.",
    "calls.recording_url": "Where the carrier keeps the recording.",
    "calls.recording_duration_s": "Length of the recording in seconds.",
    "calls.session_id": "The website visit the call was attributed to.",
    "calls.lease_id": "The tracking-number reservation used for attribution.",
    "calls.channel": "Marketing channel the call was attributed to.",
    "calls.source": "Traffic source the call was attributed to.",
    "calls.medium": "Traffic medium the call was attributed to.",
    "calls.campaign": "Campaign the call was attributed to.",
    "calls.term": "Keyword the call was attributed to.",
    "calls.method": "How the call was attributed.",
    "calls.confidence": "Confidence of the attribution, from 0 to 1.",
    "calls.unattributed_reason": "Why the call could not be attributed.",
    "calls.outcome_tag": "Outcome recorded by the merchant (sale, lead...).",
    "carrier_events.provider": "Phone carrier.",
    "carrier_events.provider_call_id": "The carrier's identifier of the call.",
    "carrier_events.kind": "Kind of notification (status, dial, recording).",
    "carrier_events.params": "The notification's parameters as sent by the carrier.",
    "carrier_events.received_at": "When it was received (UTC).",
    "carrier_events.applied_at": "When it was applied to the call (UTC).",
    "contact_requests.phone_e164": "The phone number given to be called back.",
    "contact_requests.message": "The message left with the request.",
    "contact_requests.language": "Language of the request.",
    "contact_requests.kind": "Kind of request (callback).",
    "contact_requests.status": "open, claimed or closed.",
    "contact_requests.claimed_by_user_id": "The advisor who took the request (internal number).",
    "contact_requests.claimed_at": "When an advisor took it (UTC).",
    "contact_requests.outcome_tag": "Outcome recorded by the advisor.",
    "contact_requests.created_at": "When the request was made (UTC).",
    "contact_requests.closed_at": "When it was closed (UTC).",
    "contact_requests.call_id": "The call that answered the request.",
    "contact_requests.outside_hours": "Whether it was made outside opening hours.",
    "audit_log.action": "What was done.",
    "audit_log.target": "Which record it was done to.",
    "audit_log.at": "When (UTC).",
    "webhook_deliveries.event_id": "Identifier of the notification.",
    "webhook_deliveries.event_type": "Kind of notification.",
    "webhook_deliveries.body": "The notification as sent.",
    "webhook_deliveries.status": "Whether it was delivered.",
    "webhook_deliveries.created_at": "When it was created (UTC).",
    "webhook_deliveries.delivered_at": "When it was delivered (UTC).",
    "privacy_restrictions.kind": "Kind of identifier (phone, visitor, session).",
    "privacy_restrictions.value": "The identifier.",
    "privacy_restrictions.created_at": "When the restriction was set (UTC).",
}


def field_doc(table: str, column: str) -> str | None:
    return FIELD_DOCS.get(f"{table}.{column}") or FIELD_DOCS.get(column)


def exported_columns(table: str, row: Any) -> list[str]:
    """Return the columns of `table` that go into the archive, in schema order."""
    left_out = _LEFT_OUT.get(table, set())
    return [c.key for c in row.__table__.columns if c.key not in left_out]


def plain(value: Any) -> Any:
    """Turn a column value into JSON: ISO dates, decimals as strings."""
    if isinstance(value, dt.datetime | dt.date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return str(value)
    return value


def person_tables(person: Person) -> dict[str, list[dict[str, Any]]]:
    """Return every exported table of the person as lists of plain dicts."""
    tables: dict[str, list[dict[str, Any]]] = {}
    for table in EXPORTED_TABLES:
        rows = person.rows(table)
        tables[table] = [
            {column: plain(getattr(row, column)) for column in exported_columns(table, row)}
            for row in rows
        ]
    return tables


def _csv(rows: list[dict[str, Any]]) -> str:
    buffer = io.StringIO()
    if rows:
        writer = csv.DictWriter(buffer, fieldnames=list(rows[0]))
        writer.writeheader()
        for row in rows:
            writer.writerow(
                {
                    k: json.dumps(v, ensure_ascii=False) if isinstance(v, dict | list) else v
                    for k, v in row.items()
                }
            )
    return buffer.getvalue()


def readme(person: Person, tables: dict[str, list[dict[str, Any]]], now: dt.datetime) -> str:
    """Explain the archive and every field in it."""
    lines = [
        "# Your data held by Calltrack / Vos données détenues par Calltrack",
        "",
        f"Generated {now.isoformat()} (UTC) at the request of the website's operator, who is the",
        "data controller; Calltrack is their call-tracking processor.",
        "",
        "Archive produite à la demande de l'exploitant du site (responsable de traitement) ; "
        "Calltrack est son sous-traitant de suivi d'appels. Chaque fichier CSV correspond à une "
        "table ; `person.json` contient les mêmes données en un seul document.",
        "",
        "- `person.json`: everything below in one structured document.",
        "- one CSV file per table (UTF-8, comma-separated, JSON for nested values).",
        "",
        "Dates are UTC (ISO 8601). Phone numbers are in international E.164 format.",
        "",
    ]
    for table in EXPORTED_TABLES:
        rows = tables[table]
        lines += [f"## {table}.csv ({len(rows)} rows)", "", TABLE_DOCS[table], ""]
        if rows:
            lines += ["| field | meaning |", "|---|---|"]
            for column in rows[0]:
                lines.append(f"| `{column}` | {field_doc(table, column) or '(no description)'} |")
            lines.append("")
    return "\n".join(lines) + "\n"


def build_archive(person: Person, now: dt.datetime) -> bytes:
    """Build the ZIP archive of the person's data in memory."""
    tables = person_tables(person)
    document = {
        "generated_at": now.isoformat(),
        "searched_by": person.query.kind,
        "identifiers": {
            "phone_numbers": sorted(person.phones),
            "visitor_ids": sorted(person.visitor_ids),
            "session_ids": sorted(person.session_ids),
        },
        "restricted": bool(person.restrictions),
        "excluded_from_tracking": bool(person.exclusions),
        "tables": tables,
    }
    folder = f"calltrack-export-{now:%Y%m%d}"
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr(f"{folder}/README.md", readme(person, tables, now))
        archive.writestr(
            f"{folder}/person.json", json.dumps(document, ensure_ascii=False, indent=2)
        )
        for table, rows in tables.items():
            archive.writestr(f"{folder}/{table}.csv", _csv(rows))
    return buffer.getvalue()


def _write_private(directory: Path, filename: str, content: bytes) -> Path:
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    path = directory / filename
    # Owner-only: the archive is personal data in clear.
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "wb") as handle:
        handle.write(content)
    return path


@dataclass(frozen=True)
class ExportResult:
    record: ExportRecord
    path: Path
    content: bytes
    counts: dict[str, int]


async def export_person(
    db: AsyncSession,
    person: Person,
    *,
    directory: Path,
    secret_key: str,
    actor: str,
    now: dt.datetime,
    site_id: int | None = None,
) -> ExportResult:
    """Write the person's archive under `directory` and record it (for erasure and expiry)."""
    content = build_archive(person, now)
    filename = f"{secrets.token_hex(16)}.zip"
    path = await asyncio.to_thread(_write_private, directory, filename, content)
    record = ExportRecord(
        account_id=person.scope.account_id,
        site_id=site_id,
        filename=filename,
        size_bytes=len(content),
        subject_hashes=person.subject_hashes(secret_key),
        created_at=now,
        created_by=actor,
        expires_at=now + EXPORT_TTL,
    )
    db.add(record)
    await db.flush()
    counts = {table: len(person.rows(table)) for table in EXPORTED_TABLES}
    return ExportResult(record, path, content, counts)


def export_path(directory: Path, record: ExportRecord) -> Path:
    """Return where an export's file lives (names are generated, never user input)."""
    return directory / Path(record.filename).name


def delete_export_file(directory: Path, record: ExportRecord) -> bool:
    """Delete an export's file; return whether it existed."""
    try:
        export_path(directory, record).unlink()
        return True
    except FileNotFoundError:
        return False
