"""`calltrack privacy ...`: the data-subject and retention tools from the command line.

find, export, rectify, erase, restrict, exclude, purge, register and breach-report: the same
services as the dashboard's privacy pages, and every use is audited the same way (the actor is
`cli:<login name>`).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shutil
import signal
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, TextIO

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from dashboard.cli import CliError, cli_actor, emit
from dashboard.reports import rollup
from tracker.audit import audit
from tracker.clock import SystemClock
from tracker.config import Settings
from tracker.db import Database, migrated_database
from tracker.models import Account, Site
from tracker.phones import phone_forms
from tracker.privacy import breach, retention
from tracker.privacy import register as records
from tracker.privacy.erase import PoolReleaser, erase_person, tell_consoles
from tracker.privacy.exclusion import add_exclusion, list_exclusions, remove_exclusion_of
from tracker.privacy.export import DEFAULT_EXPORT_DIR, export_person, person_tables
from tracker.privacy.find import Person, SubjectQuery, find_person, parse_subject, scope_for
from tracker.privacy.hashing import subject_ref
from tracker.privacy.rectify import RECTIFIABLE, rectify
from tracker.privacy.restrict import lift_restriction, restrict_person
from tracker.sites import site_by_key


@contextlib.asynccontextmanager
async def _database(settings: Settings) -> AsyncIterator[Database]:
    database = await migrated_database(settings.database_url)
    try:
        yield database
    finally:
        await database.close()


def _add_subject(parser: argparse.ArgumentParser, *, kinds: tuple[str, ...] = ("phone", "visitor", "session", "call")) -> None:  # fmt: skip
    group = parser.add_mutually_exclusive_group(required=True)
    helps = {
        "phone": "a phone number in any written form (normalised with the site's country)",
        "visitor": "a visitor id (32 hex characters)",
        "session": "a visit id",
        "call": "a call: its number in Calltrack or the carrier's call id (CA...)",
    }
    for kind in kinds:
        group.add_argument(f"--{kind}", help=helps[kind])
    parser.add_argument("--site", required=True, help="the site key")


def _subject_of(args: argparse.Namespace) -> tuple[str, str]:
    for kind in ("phone", "visitor", "session", "call"):
        value = getattr(args, kind, None)
        if value:
            return kind, str(value)
    raise CliError("name the person with --phone, --visitor, --session or --call")


async def _find(db: AsyncSession, args: argparse.Namespace, settings: Settings) -> Person:
    scope = await scope_for(db, None, args.site)
    kind, value = _subject_of(args)
    query = parse_subject(kind, value, scope.default_country)
    return await find_person(db, scope, query, settings.secret_key)


async def _audit(db: AsyncSession, person_or_account: Person | int | None, action: str, now: Any,
                 target: str | None = None, **detail: Any) -> None:  # fmt: skip
    account = (
        person_or_account.scope.account_id
        if isinstance(person_or_account, Person)
        else person_or_account
    )
    await audit(
        db, action=action, at=now, actor=cli_actor(), account_id=account, target=target, **detail
    )


def _summary(person: Person) -> dict[str, Any]:
    return {
        "found": person.found,
        "searched_by": person.query.kind,
        "phones": sorted(person.phones),
        "visitor_ids": sorted(person.visitor_ids),
        "session_ids": sorted(person.session_ids),
        "restricted": bool(person.restrictions),
        "excluded": bool(person.exclusions),
        "capped": person.capped,
        "counts": person.counts(),
    }


def _print_person(person: Person, out: TextIO) -> None:
    if not person.found:
        print("Calltrack holds nothing about this person.", file=out)
        return
    phones = ", ".join(phone_forms(p).international for p in sorted(person.phones)) or "-"
    print(f"phones:      {phones}", file=out)
    print(f"visitor ids: {', '.join(sorted(person.visitor_ids)) or '-'}", file=out)
    flags = [f for f, on in (("restricted", person.restrictions), ("excluded", person.exclusions)) if on]  # fmt: skip
    if flags:
        print(f"status:      {', '.join(flags)}", file=out)
    print("records:", file=out)
    for table, count in person.counts().items():
        if count:
            print(f"  {table:<22} {count:>6}", file=out)
    for call in person.calls:
        print(
            f"  call {call.id}: {call.started_at:%Y-%m-%d %H:%M} {call.direction} "
            f"{call.caller_e164 or '-'} {call.channel or '-'} {call.duration_s or 0}s",
            file=out,
        )


async def cmd_find(args: argparse.Namespace, settings: Settings) -> int:
    async with _database(settings) as database, database.begin() as db:
        person = await _find(db, args, settings)
        now = SystemClock().now()
        await _audit(db, person, "privacy.find", now, subject=person.subject(settings.secret_key),
                     records=person.record_refs())  # fmt: skip
        if args.json:
            emit({**_summary(person), "tables": person_tables(person)})
        else:
            _print_person(person, sys.stdout)
    return 0


def _output_path(raw: str, default_name: str) -> Path:
    """Where `--output` puts a file: into a directory it names, with the file's own name;
    refused before anything is done when its folder does not exist."""
    path = Path(raw)
    if path.is_dir():
        path = path / default_name
    if not path.parent.is_dir():
        raise CliError(f"--output: the folder {path.parent} does not exist")
    return path


def _copy_private(source: Path, target: Path) -> None:
    """Copy personal data readable by its owner only, like the archives in var/exports."""
    with source.open("rb") as read, open(target, "wb", opener=_owner_only) as write:
        shutil.copyfileobj(read, write)


def _owner_only(path: str, flags: int) -> int:
    return os.open(path, flags, 0o600)


async def cmd_export(args: argparse.Namespace, settings: Settings) -> int:
    if args.output:
        _output_path(args.output, "export.zip")  # refused before the export is made and audited
    async with _database(settings) as database, database.begin() as db:
        person = await _find(db, args, settings)
        now = SystemClock().now()
        result = await export_person(
            db, person, directory=Path(args.export_dir), secret_key=settings.secret_key,
            actor=cli_actor(), now=now,
            site_id=person.scope.site_ids[0] if person.scope.site_ids else None,
        )  # fmt: skip
        await _audit(db, person, "privacy.export", now, f"privacy_exports:{result.record.id}",
                     subject=person.subject(settings.secret_key), records=person.record_refs(),
                     counts=result.counts)  # fmt: skip
    path = result.path
    if args.output:
        # A copy outside var/exports is the operator's to delete: say so.
        path = _output_path(args.output, result.path.name)
        await asyncio.to_thread(_copy_private, result.path, path)
        print(f"copied to {path}; erasing the person deletes only {result.path}", file=sys.stderr)
    emit({"archive": str(path), "export_id": result.record.id, "counts": result.counts,
          "expires_at": result.record.expires_at.isoformat()})  # fmt: skip
    return 0


async def cmd_rectify(args: argparse.Namespace, settings: Settings) -> int:
    async with _database(settings) as database, database.begin() as db:
        person = await _find(db, args, settings)
        change = await rectify(db, person, table=args.table, record_id=args.record,
                               field=args.field, value=args.value,
                               secret_key=settings.secret_key)  # fmt: skip
        await _audit(db, person, "privacy.rectify", SystemClock().now(),
                     f"{change.table}:{change.record_id}",
                     subject=person.subject(settings.secret_key), **change.audit,
                     changed=change.changed)  # fmt: skip
    emit({"table": change.table, "record": change.record_id, "field": change.field,
          "changed": change.changed})  # fmt: skip
    return 0


async def _pool(settings: Settings) -> tuple[PoolReleaser | None, Any]:
    """Reach the shared number pool (Redis); the in-process pool lives in the server."""
    if not settings.redis_url:
        return None, None
    from redis.asyncio import Redis

    from tracker.numbers.pool import RedisNumberPool

    client = Redis.from_url(settings.redis_url)
    return RedisNumberPool(client, settings.redis_prefix), client


async def cmd_erase(args: argparse.Namespace, settings: Settings) -> int:
    pool, client = await _pool(settings)
    try:
        async with _database(settings) as database, database.begin() as db:
            person = await _find(db, args, settings)
            now = SystemClock().now()
            if not args.yes:
                await _audit(db, person, "privacy.erase_preview", now,
                             subject=person.subject(settings.secret_key),
                             records=person.record_refs())  # fmt: skip
                emit({"would_erase": person.counts(), "hint": "run again with --yes to erase"})
                return 1
            hub = None
            if client is not None:
                # The shared hub's streams (with Redis); the in-process hub lives in the server.
                from dashboard.hub.redis import RedisHub

                hub = RedisHub(client, settings.redis_prefix, SystemClock())
            report = await erase_person(
                db, person, secret_key=settings.secret_key, export_dir=Path(args.export_dir),
                now=now, pool=pool, drop_exclusion=args.drop_exclusion, hub=hub,
            )  # fmt: skip
            # Names no identifier: the erased person must not reappear through this entry.
            # `sites` and `consoles_told` let an embedded server, whose in-process hub this
            # process cannot reach, drop the sites' live history (dashboard/hub/http.py).
            await _audit(db, person, "privacy.erase", now, f"erasure:{report.erasure_id}",
                         tables=report.tables, total=report.total,
                         sites=sorted(report.site_ids), consoles_told=hub is not None)  # fmt: skip
        await tell_consoles(hub, report, now)
    finally:
        if client is not None:
            await client.aclose()
    if args.json:
        emit(report.as_json())
    else:
        print(f"erasure {report.erasure_id}:")
        for table, what in sorted(report.tables.items()):
            done = ", ".join(f"{n} {kind}" for kind, n in what.items())
            print(f"  {table:<22} {done}")
        if not report.tables:
            print("  nothing left to erase")
    return 0


async def cmd_restrict(args: argparse.Namespace, settings: Settings) -> int:
    async with _database(settings) as database, database.begin() as db:
        person = await _find(db, args, settings)
        now = SystemClock().now()
        if args.lift:
            count = await lift_restriction(db, person)
        else:
            count = await restrict_person(db, person, actor=cli_actor(), now=now)
        await rollup.mark_person_dirty(db, person, now)
        await _audit(db, person, "privacy.restrict_lift" if args.lift else "privacy.restrict",
                     now, subject=person.subject(settings.secret_key),
                     records=person.record_refs(), identifiers=count)  # fmt: skip
    emit({"restricted": not args.lift, "identifiers": count})
    return 0


async def cmd_exclude(args: argparse.Namespace, settings: Settings) -> int:
    async with _database(settings) as database, database.begin() as db:
        site = await site_by_key(db, args.site)
        now = SystemClock().now()
        if args.list:
            entries = await list_exclusions(db, site.account_id)
            await _audit(db, site.account_id, "privacy.exclusions_view", now, count=len(entries))
            emit([{"id": e.id, "kind": e.kind, "key_hash": e.key_hash,
                   "created_at": e.created_at.isoformat(), "created_by": e.created_by}
                  for e in entries])  # fmt: skip
            return 0
        kind, value = _subject_of(args)
        query: SubjectQuery = parse_subject(kind, value, site.country)
        subject = subject_ref(settings.secret_key, site.account_id, query.kind, query.value)
        if args.remove:
            removed = await remove_exclusion_of(db, site.account_id, query, settings.secret_key)
            await _audit(db, site.account_id, "privacy.exclusion_remove", now, subject=subject,
                         kind=query.kind, removed=removed)  # fmt: skip
            emit({"removed": removed})
            return 0
        entry, created = await add_exclusion(db, site.account_id, query,
                                             secret_key=settings.secret_key, actor=cli_actor(),
                                             now=now)  # fmt: skip
        await _audit(db, site.account_id, "privacy.exclude", now, f"privacy_exclusions:{entry.id}",
                     subject=subject, kind=query.kind, added=int(created))  # fmt: skip
    emit({"excluded": query.kind, "key_hash": entry.key_hash, "created": created,
          "note": "running servers apply it within 30 seconds"})  # fmt: skip
    return 0


class ProgressBar:
    """A one-line progress bar on stderr (a plain line every few seconds when not a terminal)."""

    def __init__(self, stream: TextIO = sys.stderr, width: int = 28) -> None:
        self.stream = stream
        self.width = width
        self.tty = stream.isatty()
        self._key: tuple[str, str] | None = None
        self._started = 0.0
        self._first = 0
        self._shown = 0.0

    def __call__(self, progress: retention.Progress) -> None:
        if progress.total == 0:
            return
        now = time.monotonic()
        key = (progress.scope, progress.data_class)
        if key != self._key:
            if self._key is not None and self.tty:
                self.stream.write("\n")
            self._key, self._started, self._first, self._shown = key, now, progress.done, 0.0
        finished = progress.done >= progress.total
        # Redrawing more than ten times a second costs more than it tells.
        if not finished and now - self._shown < (0.1 if self.tty else 5.0):
            return
        self._shown = now
        fraction = progress.done / progress.total if progress.total else 1.0
        filled = int(fraction * self.width)
        rate = (progress.done - self._first) / max(now - self._started, 1e-6)
        left = (progress.total - progress.done) / rate if rate > 0 else 0.0
        line = (
            f"{progress.scope:<10} {progress.data_class:<16} "
            f"[{'#' * filled}{'-' * (self.width - filled)}] {fraction:6.1%} "
            f"{progress.done:,}/{progress.total:,} {rate:,.0f} rows/s ETA {left:,.0f} s"
        )
        if self.tty:
            self.stream.write("\r" + line + ("\n" if finished else ""))
            if finished:
                self._key = None
        else:
            self.stream.write(line + "\n")
        self.stream.flush()


async def cmd_purge(args: argparse.Namespace, settings: Settings) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    with contextlib.suppress(NotImplementedError):
        # Ctrl-C stops after the current batch; the next run resumes from the cursor.
        loop.add_signal_handler(signal.SIGINT, stop.set)
        loop.add_signal_handler(signal.SIGTERM, stop.set)
    async with _database(settings) as database:
        site_ids = None
        if args.site:
            async with database.sessions() as db:
                site_ids = [(await site_by_key(db, args.site)).id]
        now = SystemClock().now()

        async def run() -> retention.PurgeReport:
            return await retention.purge(
                database, now, site_ids=site_ids, data_classes=args.data_class or None,
                batch_size=args.batch_size, pause_ratio=args.pause_ratio,
                progress=None if args.no_progress else ProgressBar(),
                should_stop=stop.is_set, export_dir=Path(args.export_dir),
            )  # fmt: skip

        report = await retention.locked_purge(database, run)
        if report is None:
            raise CliError("another purge is running (PostgreSQL advisory lock held)")
        async with database.begin() as db:
            owners = select(Account.id)
            if site_ids is not None:
                owners = select(Site.account_id).where(Site.id.in_(site_ids))
            for account_id in sorted(set(await db.scalars(owners))):
                sites = await db.scalars(select(Site.id).where(Site.account_id == account_id))
                await _audit(db, account_id, "privacy.purge", now,
                             **report.for_account(account_id, list(sites)))  # fmt: skip
    if args.json:
        emit(report.as_json())
    else:
        state = "interrupted (run again to resume)" if report.interrupted else "done"
        print(f"purge {state}: {report.as_json()['total']:,} rows in {report.batches} batches")
        for name, count in sorted(report.deleted.items()):
            print(f"  {name:<18} {count:>12,}")
    return 130 if report.interrupted else 0


async def cmd_register(args: argparse.Namespace, settings: Settings) -> int:
    async with _database(settings) as database, database.begin() as db:
        site = await site_by_key(db, args.site)
        now = SystemClock().now()
        document = await records.build_register(db, site, settings, args.lang, now)
        await _audit(db, site.account_id, "privacy.register", now, f"sites:{site.id}",
                     language=args.lang, format=args.format)  # fmt: skip
    text = records.to_markdown(document) if args.format == "md" else records.to_html(document)
    if args.output:
        target = _output_path(args.output, f"register.{args.format}")
        await asyncio.to_thread(target.write_text, text, encoding="utf-8")
        print(f"written to {target}", file=sys.stderr)
    else:
        sys.stdout.write(text)
    return 0


async def cmd_breach(args: argparse.Namespace, settings: Settings) -> int:
    since = breach.parse_moment(args.since)
    until = breach.parse_moment(args.until, end=True)
    async with _database(settings) as database, database.begin() as db:
        account_id: int | None = None
        if args.site:
            account_id = (await site_by_key(db, args.site)).account_id
        elif args.account:
            account = await db.scalar(select(Account).where(Account.name == args.account))
            if account is None:
                raise CliError(f"no account is called {args.account!r}")
            account_id = account.id
        report = await breach.breach_report(db, account_id, since, until)
        await _audit(db, account_id, "privacy.breach_report", SystemClock().now(),
                     since=since.isoformat(), until=until.isoformat())  # fmt: skip
    if args.json:
        emit(report.as_json())
    else:
        sys.stdout.write(breach.report_text(report))
    return 0


def register(commands: Any) -> None:
    """Add `calltrack privacy ...` to the CLI."""
    privacy = commands.add_parser("privacy", help="data-subject requests, retention, records")
    actions = privacy.add_subparsers(dest="privacy_command", required=True, metavar="ACTION")

    find = actions.add_parser("find", help="show everything held about a person")
    _add_subject(find)
    find.add_argument("--json", action="store_true", help="every record, as JSON")
    find.set_defaults(handler=cmd_find)

    export = actions.add_parser("export", help="write the person's ZIP archive (JSON + CSV)")
    _add_subject(export)
    export.add_argument("--output", help="also copy the archive here")
    export.add_argument("--export-dir", default=str(DEFAULT_EXPORT_DIR))
    export.set_defaults(handler=cmd_export)

    fields = "; ".join(f"{t}: {', '.join(f)}" for t, f in RECTIFIABLE.items())
    fix = actions.add_parser("rectify", help=f"correct a stored detail ({fields})")
    _add_subject(fix)
    fix.add_argument("--table", required=True, choices=sorted(RECTIFIABLE))
    fix.add_argument("--record", required=True, help="the record's id (see find --json)")
    fix.add_argument("--field", required=True)
    fix.add_argument("--value", required=True)
    fix.set_defaults(handler=cmd_rectify)

    erase = actions.add_parser("erase", help="erase the person (calls kept anonymously)")
    _add_subject(erase)
    erase.add_argument("--yes", action="store_true", help="erase (without it: show what would go)")
    erase.add_argument("--drop-exclusion", action="store_true",
                       help="also remove the person's exclusion-list entries")  # fmt: skip
    erase.add_argument("--export-dir", default=str(DEFAULT_EXPORT_DIR))
    erase.add_argument("--json", action="store_true")
    erase.set_defaults(handler=cmd_erase)

    restrict = actions.add_parser("restrict", help="keep the data but hide it everywhere")
    _add_subject(restrict)
    restrict.add_argument("--lift", action="store_true", help="lift the restriction")
    restrict.set_defaults(handler=cmd_restrict)

    exclude = actions.add_parser("exclude", help="never track a phone number or visitor again")
    group = exclude.add_mutually_exclusive_group(required=True)
    group.add_argument("--phone")
    group.add_argument("--visitor")
    group.add_argument("--list", action="store_true", help="list the account's entries")
    exclude.add_argument("--site", required=True)
    exclude.add_argument("--remove", action="store_true", help="take it off the list")
    exclude.set_defaults(handler=cmd_exclude)

    purge = actions.add_parser("purge", help="delete data past its retention period")
    purge.add_argument("--site", help="only this site (default: every site)")
    purge.add_argument("--class", dest="data_class", action="append",
                       choices=[*retention.DATA_CLASSES, "exports"],
                       help="only this data class (repeatable)")  # fmt: skip
    purge.add_argument("--batch-size", type=int, default=retention.DEFAULT_BATCH)
    purge.add_argument("--pause-ratio", type=float, default=retention.DEFAULT_PAUSE_RATIO,
                       help="pause after each batch this many times its duration")  # fmt: skip
    purge.add_argument("--no-progress", action="store_true")
    purge.add_argument("--export-dir", default=str(DEFAULT_EXPORT_DIR))
    purge.add_argument("--json", action="store_true")
    purge.set_defaults(handler=cmd_purge)

    reg = actions.add_parser("register", help="the site's record of processing activities")
    reg.add_argument("--site", required=True)
    reg.add_argument("--lang", choices=records.LANGUAGES, default="en")
    reg.add_argument("--format", choices=["md", "html"], default="md")
    reg.add_argument("--output")
    reg.set_defaults(handler=cmd_register)

    report = actions.add_parser("breach-report", help="who accessed what in a time window")
    report.add_argument("--since", required=True, help="ISO date or date-time (UTC)")
    report.add_argument("--until", required=True, help="ISO date (inclusive) or date-time")
    # Without --site or --account: the whole installation (the processor's view, all accounts).
    owner = report.add_mutually_exclusive_group()
    owner.add_argument("--site")
    owner.add_argument("--account")
    report.add_argument("--json", action="store_true")
    report.set_defaults(handler=cmd_breach)
