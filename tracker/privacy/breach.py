"""Breach report: who accessed which records, and how many people, in a time window.

It reads the audit log (every user action on personal data, sign-ins included) so that the
merchant can notify within 48 hours what a suspected breach may have exposed (GDPR art. 33 gives
the controller 72 hours; the processor tells the controller first). HTTP access logs are not
stored by Calltrack (they go to the operator's log collector), so sign-ins and audited actions
are the source here.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from tracker.errors import ApiError
from tracker.models import AuditEntry

MAX_LISTED = 1000
# Actions that only touch the actor's own sign-in: shown, but name no data subject.
SIGN_IN_ACTIONS = ("auth.login", "auth.login_failed", "auth.logout")
# Tables whose records belong to one data subject each (at most one person per record).
PERSON_TABLES = ("sessions", "calls", "contact_requests")


def parse_moment(text: str, *, end: bool = False) -> dt.datetime:
    """Parse an ISO date or date-time (UTC when no zone); a bare end date includes its day."""
    raw = (text or "").strip()
    try:
        if len(raw) == 10:
            day = dt.datetime.fromisoformat(raw).replace(tzinfo=dt.UTC)
            return day + dt.timedelta(days=1) if end else day
        moment = dt.datetime.fromisoformat(raw)
        moment = moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)
        # In UTC, as the columns store it: "0001-01-01T00:00+01:00" falls before year 1.
        return moment.astimezone(dt.UTC)
    except (ValueError, OverflowError) as exc:
        raise ApiError("invalid_date", f"{text!r} is not an ISO date such as 2026-03-01") from exc


def _refs(entry: AuditEntry) -> list[tuple[str, str]]:
    found: list[tuple[str, str]] = []
    if entry.target and ":" in entry.target:
        table, _, key = entry.target.partition(":")
        found.append((table, key))
    records = (entry.detail or {}).get("records")
    if isinstance(records, dict):
        for table, ids in records.items():
            if isinstance(ids, list):
                found += [(str(table), str(i)) for i in ids]
    return found


@dataclass
class BreachReport:
    since: dt.datetime
    until: dt.datetime
    entries: int = 0
    actions: Counter[str] = field(default_factory=Counter)
    actors: dict[str, dict[str, Any]] = field(default_factory=dict)
    records: dict[str, set[str]] = field(default_factory=lambda: defaultdict(set))
    subjects: set[str] = field(default_factory=set)
    sign_ins: list[dict[str, Any]] = field(default_factory=list)

    @property
    def people_at_least(self) -> int:
        """People named by a privacy search: certainly distinct persons."""
        return len(self.subjects)

    @property
    def people_at_most(self) -> int:
        """Every searched person plus one per visit, call or request otherwise accessed."""
        return len(self.subjects) + sum(len(self.records.get(t, ())) for t in PERSON_TABLES)

    def as_json(self) -> dict[str, Any]:
        return {
            "since": self.since.isoformat(),
            "until": self.until.isoformat(),
            "audit_entries": self.entries,
            "people": {"at_least": self.people_at_least, "at_most": self.people_at_most},
            "records": {
                table: {"count": len(ids), "ids": sorted(ids)[:MAX_LISTED]}
                for table, ids in sorted(self.records.items())
            },
            "actions": dict(sorted(self.actions.items())),
            "actors": self.actors,
            "sign_ins": self.sign_ins[:MAX_LISTED],
            "notes": [
                "Sources: the audit log (every user action on personal data) and sign-ins.",
                "HTTP access logs are kept by the operator's log collector, not by Calltrack.",
                "Notify the controller at once; the controller has 72 hours (GDPR art. 33).",
            ],
        }


async def breach_report(
    db: AsyncSession, account_id: int | None, since: dt.datetime, until: dt.datetime
) -> BreachReport:
    """List what the account's users (every account's, when None) accessed in a window."""
    if until <= since:
        raise ApiError("invalid_window", "--until must be after --since")
    report = BreachReport(since=since, until=until)
    query = select(AuditEntry).where(AuditEntry.at >= since, AuditEntry.at < until)
    if account_id is not None:
        query = query.where(AuditEntry.account_id == account_id)
    entries = await db.scalars(query.order_by(AuditEntry.id))
    for entry in entries:
        report.entries += 1
        report.actions[entry.action] += 1
        actor = report.actors.setdefault(
            entry.actor, {"entries": 0, "addresses": [], "first": None, "last": None}
        )
        actor["entries"] += 1
        if entry.ip_truncated and entry.ip_truncated not in actor["addresses"]:
            actor["addresses"].append(entry.ip_truncated)
        actor["first"] = actor["first"] or entry.at.isoformat()
        actor["last"] = entry.at.isoformat()
        if entry.action in SIGN_IN_ACTIONS:
            report.sign_ins.append(
                {
                    "at": entry.at.isoformat(),
                    "actor": entry.actor,
                    "action": entry.action,
                    "address": entry.ip_truncated,
                }
            )
            continue
        subject = (entry.detail or {}).get("subject")
        if isinstance(subject, str) and subject != "[erased]":
            report.subjects.add(subject)
        for table, key in _refs(entry):
            if key != "[erased]":
                report.records[table].add(key)
    return report


def report_text(report: BreachReport) -> str:
    """Render the report for a terminal or an e-mail to the controller."""
    data = report.as_json()
    lines = [
        f"Breach report {data['since']} → {data['until']}",
        f"audit entries: {data['audit_entries']}",
        f"people possibly concerned: at least {data['people']['at_least']}, "
        f"at most {data['people']['at_most']}",
        "records accessed:",
    ]
    lines += [f"  {table}: {r['count']}" for table, r in data["records"].items()] or ["  none"]
    lines.append("by user:")
    for actor, info in data["actors"].items():
        addresses = ", ".join(info["addresses"]) or "-"
        lines.append(f"  {actor}: {info['entries']} actions from {addresses}")
    lines.append("actions:")
    lines += [f"  {action}: {count}" for action, count in data["actions"].items()]
    return "\n".join(lines) + "\n"
