"""The `calltrack` command: serve, demo, migrate, site, user, bench, and each domain's commands."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import getpass
import json
import logging
import os
import sys
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from aiohttp.http_exceptions import HttpProcessingError
from sqlalchemy.exc import IntegrityError

from tracker.audit import audit
from tracker.clock import SystemClock
from tracker.config import Settings
from tracker.db import migrate_sync, migrated_database
from tracker.errors import ApiError
from tracker.sites import (
    SiteSpec,
    create_site,
    dumps,
    get_or_create_account,
    list_sites,
    site_summary,
)
from tracker.users import (
    KEEP,
    ROLES,
    USER_LANGUAGES,
    account_region,
    audit_user,
    create_user,
    parse_user_phone,
    set_disabled,
    set_password,
    update_user,
    user_by_email,
)

Command = Callable[[argparse.Namespace, Settings], Coroutine[Any, Any, int]]


class CliError(Exception):
    """A user-facing error: printed as one line, exit status 2."""


class JsonFormatter(logging.Formatter):
    """Write one JSON object per log line (structured logs for the collector)."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


def malformed_http_as_one_line(record: logging.LogRecord) -> bool:
    """aiohttp logs each request it cannot parse (a URL over 8 KiB, raw bytes in the path, a
    bad chunk) as an ERROR with a traceback, and answers 400 itself: what anyone can send must
    not fill the log with tracebacks. One warning line instead, without the traceback."""
    error = record.exc_info[1] if record.exc_info else None
    if isinstance(error, HttpProcessingError):
        record.levelno, record.levelname = logging.WARNING, "WARNING"
        record.msg = (
            f"{record.getMessage()}: malformed request refused ({error.code}): {error.message!r}"[
                :500
            ]
        )
        record.args, record.exc_info, record.exc_text = None, None, None
    return True


def configure_logging(level: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    logging.basicConfig(level=getattr(logging, level.upper(), logging.INFO), handlers=[handler])
    # Alembic narrates every migration step at INFO; only its problems are worth a line.
    logging.getLogger("alembic").setLevel(logging.WARNING)
    logging.getLogger("aiohttp.server").addFilter(malformed_http_as_one_line)


def emit(data: Any) -> None:
    print(dumps(data))


async def with_db(settings: Settings, work: Callable[[Any], Awaitable[Any]]) -> Any:
    """Run `work(session)` in one committed transaction."""
    database = await migrated_database(settings.database_url)
    try:
        async with database.begin() as db:
            return await work(db)
    finally:
        await database.close()


async def cmd_migrate(args: argparse.Namespace, settings: Settings) -> int:
    await asyncio.to_thread(migrate_sync, settings.database_url)
    print(f"schema up to date ({_redacted(settings.database_url)})", file=sys.stderr)
    return 0


def _redacted(url: str) -> str:
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return "not a database URL"


def _database_problem(exc: BaseException, database_url: str) -> str | None:
    """A one-line reason when `exc` says the database cannot be used (unreachable, missing,
    refused, or a URL that is none); None for anything else."""
    import socket
    import sqlite3

    import asyncpg
    from sqlalchemy.exc import ArgumentError

    unusable = (
        ArgumentError,
        ConnectionError,
        TimeoutError,
        socket.gaierror,
        asyncpg.PostgresConnectionError,
        asyncpg.InvalidCatalogNameError,
        asyncpg.InvalidAuthorizationSpecificationError,
    )
    seen: BaseException | None = exc
    while seen is not None:
        # A SQLite file that cannot be opened or created (its folder, its permissions).
        sqlite_file = (
            isinstance(seen, sqlite3.OperationalError) and "unable to open" in str(seen)
        ) or (
            isinstance(seen, OSError) and bool(seen.filename) and str(seen.filename) in database_url
        )
        if isinstance(seen, unusable) or sqlite_file:
            return " ".join(str(seen).split())[:300] or type(seen).__name__
        seen = getattr(seen, "orig", None) or seen.__cause__
    return None


# Python's cycle collector runs after every 700 new container objects and each full pass walks
# every live object, which in a server includes the collect path's cache of recent visits
# (tracker/collector.py). Measured with `calltrack bench collect`: 1.3x the throughput with
# these settings, and no slow decline as the cache fills. The objects from start-up (modules,
# routes, models) are frozen out of the collector's view once, as Instagram's servers do.
GC_THRESHOLDS = (20_000, 50, 100)


def tune_gc() -> None:
    """Make the cycle collector cheap for a long-running server (see GC_THRESHOLDS)."""
    import gc

    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


def run_server(settings: Settings, host: str, port: int) -> None:
    from aiohttp import web

    from dashboard.app import create_app

    migrate_sync(settings.database_url)
    app = create_app(settings)
    tune_gc()
    print(
        f"Calltrack serving on http://{host}:{port} (public URL {settings.public_url})",
        file=sys.stderr,
    )
    web.run_app(app, host=host, port=port, print=None, access_log=None, shutdown_timeout=5)


async def cmd_site_create(args: argparse.Namespace, settings: Settings) -> int:
    async def work(db: Any) -> dict[str, object]:
        clock = SystemClock()
        account = await get_or_create_account(db, args.account, clock)
        site = await create_site(
            db,
            account,
            SiteSpec(
                name=args.name,
                domain=args.domain,
                phone=args.phone,
                country=args.country,
                timezone=args.timezone,
                language=args.language,
                consent_mode=args.consent_mode,
            ),
            clock,
        )
        summary = await site_summary(db, site, settings.public_url)
        summary["account"] = account.name
        return summary

    emit(await with_db(settings, work))
    return 0


async def cmd_site_list(args: argparse.Namespace, settings: Settings) -> int:
    if args.account is not None and not args.account.strip():
        raise CliError("--account needs a name (leave it out to list every account's sites)")

    async def work(db: Any) -> list[dict[str, object]]:
        account = None
        if args.account:
            from sqlalchemy import select

            from tracker.models import Account

            # Stored trimmed (get_or_create_account): look it up the same way.
            name = args.account.strip()
            account = await db.scalar(select(Account).where(Account.name == name))
            if account is None:
                return []
        return [
            await site_summary(db, s, settings.public_url) for s in await list_sites(db, account)
        ]

    emit(await with_db(settings, work))
    return 0


def _read_password(args: argparse.Namespace) -> str:
    if args.password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        if not sys.stdin.isatty():
            raise CliError("no terminal to prompt for a password: use --password-stdin")
        password = getpass.getpass("Password: ")
        if getpass.getpass("Repeat password: ") != password:
            raise CliError("the two passwords differ")
    return password


def cli_actor() -> str:
    """Name the person at the terminal in the audit log."""
    try:
        return f"cli:{getpass.getuser()}"
    except Exception:
        return "cli"


async def _audit_user(db: Any, user: Any, action: str, **detail: Any) -> None:
    await audit_user(db, user, action, SystemClock().now(), actor=cli_actor(), **detail)


def _user_json(user: Any, account: str) -> dict[str, object]:
    return {
        "id": user.id,
        "email": user.email,
        "role": user.role,
        "account": account,
        "language": user.language,
        "phone": user.phone_e164,
        "created_at": user.created_at.isoformat(),
        "disabled_at": user.disabled_at.isoformat() if user.disabled_at else None,
    }


async def cmd_user_create(args: argparse.Namespace, settings: Settings) -> int:
    password = _read_password(args)

    async def work(db: Any) -> dict[str, object]:
        clock = SystemClock()
        account = await get_or_create_account(db, args.account, clock)
        phone = parse_user_phone(args.phone or "", await account_region(db, account.id))
        user = await create_user(db, account, args.email, password, args.role, clock,
                                 language=args.language, phone_e164=phone)  # fmt: skip
        await _audit_user(db, user, "user.created", role=user.role)
        return _user_json(user, account.name)

    emit(await with_db(settings, work))
    return 0


async def cmd_user_list(args: argparse.Namespace, settings: Settings) -> int:
    from sqlalchemy import select

    from tracker.models import Account, User

    async def work(db: Any) -> list[dict[str, object]]:
        query = select(User, Account.name).join(Account, Account.id == User.account_id)
        if args.account:
            query = query.where(Account.name == args.account.strip())
        rows = list(await db.execute(query.order_by(Account.name, User.email)))
        # Staff emails are personal data: who listed them is kept, once per account shown.
        for account_id in sorted({user.account_id for user, _ in rows}):
            await audit(db, action="user.list", at=SystemClock().now(), actor=cli_actor(),
                        account_id=account_id)  # fmt: skip
        return [_user_json(user, name) for user, name in rows]

    emit(await with_db(settings, work))
    return 0


async def cmd_user_change(args: argparse.Namespace, settings: Settings) -> int:
    """`user disable|enable|set|password`: one user, by email; audited; prints the user."""
    from tracker.models import Account

    password = _read_password(args) if args.user_command == "password" else None

    async def work(db: Any) -> dict[str, object]:
        user = await user_by_email(db, args.email)
        ended: list[str] = []
        if args.user_command in ("disable", "enable"):
            disabled = args.user_command == "disable"
            if (user.disabled_at is not None) != disabled:
                ended = await set_disabled(db, user, disabled, SystemClock().now())
                await _audit_user(db, user, f"user.{args.user_command}d",
                                  sign_ins_ended=len(ended))  # fmt: skip
        elif args.user_command == "set":
            phone: str | object | None = KEEP
            if args.phone is not None:
                phone = parse_user_phone(args.phone, await account_region(db, user.account_id))
            changed, ended = await update_user(
                db, user, role=args.role, language=args.language, phone_e164=phone
            )
            if changed:
                await _audit_user(db, user, "user.changed", changed=changed,
                                  sign_ins_ended=len(ended))  # fmt: skip
        else:
            assert password is not None
            ended = await set_password(db, user, password)
            await _audit_user(db, user, "user.password_changed", sign_ins_ended=len(ended))
        account = await db.get(Account, user.account_id)
        return {**_user_json(user, account.name if account else ""), "sign_ins_ended": len(ended)}

    emit(await with_db(settings, work))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="calltrack", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = commands.add_parser("serve", help="serve everything on one port")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8080)

    demo = commands.add_parser("demo", help="create the demo site and serve (embedded default)")
    demo.add_argument("--host", default="127.0.0.1")
    demo.add_argument("--port", type=int, default=8080)

    migrate_cmd = commands.add_parser("migrate", help="bring the database schema up to date")
    migrate_cmd.set_defaults(handler=cmd_migrate)

    site = commands.add_parser("site", help="manage sites").add_subparsers(
        dest="site_command", required=True, metavar="ACTION"
    )
    create = site.add_parser("create", help="create a site and print its snippet as JSON")
    create.add_argument("--name", required=True)
    create.add_argument("--domain", required=True)
    create.add_argument("--phone", required=True, help="the business number, any written form")
    create.add_argument("--country", required=True, help="ISO country code, e.g. FR")
    create.add_argument("--account", default="default")
    create.add_argument("--timezone")
    create.add_argument("--language")
    create.add_argument("--consent-mode", choices=["required", "not_required"], default="required")
    create.set_defaults(handler=cmd_site_create)
    listing = site.add_parser("list", help="list sites as JSON, each with its account")
    listing.add_argument("--account", help="only this account's sites (default: every account)")
    listing.set_defaults(handler=cmd_site_list)

    user = commands.add_parser("user", help="manage users").add_subparsers(
        dest="user_command", required=True, metavar="ACTION"
    )
    user_create = user.add_parser("create", help="create a user")
    user_create.add_argument("--email", required=True)
    user_create.add_argument("--role", required=True, choices=ROLES)
    user_create.add_argument("--account", default="default")
    user_create.add_argument("--language", choices=USER_LANGUAGES, default="en")
    user_create.add_argument("--phone", help="the phone the user's callbacks ring (advisors)")
    user_create.add_argument("--password-stdin", action="store_true")
    user_create.set_defaults(handler=cmd_user_create)
    user_list = user.add_parser("list", help="list users as JSON (audited)")
    user_list.add_argument("--account")
    user_list.set_defaults(handler=cmd_user_list)
    for name, text in (
        ("disable", "refuse a user's sign-in and sign them out everywhere (someone who left)"),
        ("enable", "let a disabled user sign in again"),
        ("set", "change a user's role (signs them out everywhere), language or phone"),
        ("password", "set a new password and sign the user out everywhere"),
    ):
        change = user.add_parser(name, help=text)
        change.add_argument("--email", required=True)
        if name == "set":
            change.add_argument("--role", choices=ROLES)
            change.add_argument("--language", choices=USER_LANGUAGES)
            change.add_argument(
                "--phone", help="the phone the user's callbacks ring; an empty text removes it"
            )
        if name == "password":
            change.add_argument("--password-stdin", action="store_true")
        change.set_defaults(handler=cmd_user_change)

    from dashboard import cli_extra

    cli_extra.register(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        settings = Settings.from_env()
    except ValueError as exc:
        # A CALLTRACK_* variable that does not parse: say which, without a traceback.
        print(f"calltrack: configuration error: {exc}", file=sys.stderr)
        return 2
    if args.command in ("serve", "demo") and not os.environ.get("CALLTRACK_PUBLIC_URL"):
        # Without a configured public URL, the snippet and webhook URLs point at where this
        # process listens (a wildcard address is reached through loopback).
        host = "127.0.0.1" if args.host in ("0.0.0.0", "::", "") else args.host
        settings = dataclasses.replace(settings, public_url=f"http://{host}:{args.port}")
    configure_logging(settings.log_level)
    try:
        if args.command in ("serve", "demo"):
            if args.command == "demo":
                from dashboard.democli import prepare_demo

                settings = dataclasses.replace(settings, demo=True)

                prepare_demo(settings, args.host, args.port)
            run_server(settings, args.host, args.port)
            return 0
        handler: Command = args.handler
        return asyncio.run(handler(args, settings))
    except ApiError as exc:
        print(json.dumps(exc.as_json(), ensure_ascii=False), file=sys.stderr)
        return 2
    except CliError as exc:
        print(f"calltrack: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # (an OSError: before the database problems below)
        # `calltrack numbers list | head`: the reader left. Python would print a traceback
        # when it flushes stdout at exit; point stdout at /dev/null instead.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except IntegrityError as exc:
        if "unique" not in str(exc.orig).lower():
            raise  # not a race: a bug, with its traceback
        # Another command (or the service) wrote the same record at the same moment: the
        # transaction was rolled back, nothing was saved.
        print(
            "calltrack: another process saved the same record at the same moment; nothing was "
            "changed: run the command again",
            file=sys.stderr,
        )
        return 2
    except Exception as exc:
        problem = _database_problem(exc, settings.database_url)
        if problem is None:
            raise
        url = _redacted(settings.database_url)
        print(f"calltrack: the database cannot be used ({url}): {problem}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
