"""`calltrack token ...` (REST API tokens) and `calltrack reports refresh` (rollups)."""

from __future__ import annotations

import argparse
import json
from typing import Any

from sqlalchemy import select

from tracker.clock import SystemClock
from tracker.config import Settings
from tracker.db import Database
from tracker.errors import ApiError
from tracker.models import Account, ApiToken


async def _account(db: Any, name: str) -> Account:
    account = await db.scalar(select(Account).where(Account.name == name))
    if account is None:
        raise ApiError("unknown_account", f"no account called {name!r}", status=404)
    return account  # type: ignore[no-any-return]


async def cmd_token_create(args: argparse.Namespace, settings: Settings) -> int:
    """Create a token and print it once (it is stored only as a hash)."""
    from dashboard.api.tokens import create_token

    database = Database(settings.database_url)
    try:
        async with database.begin() as db:
            account = await _account(db, args.account)
            token, plaintext = await create_token(
                db,
                account,
                args.name,
                args.scope,
                SystemClock().now(),
                caller_numbers=args.caller_numbers,
            )
            summary = {
                "id": token.id,
                "account": account.name,
                "name": token.name,
                "scope": token.scope,
                "caller_numbers": token.caller_numbers,
                "token": plaintext,
                "note": "Shown once: store it now. Send it as 'Authorization: Bearer <token>'.",
            }
    finally:
        await database.close()
    print(json.dumps(summary, indent=2))
    return 0


async def cmd_token_list(args: argparse.Namespace, settings: Settings) -> int:
    database = Database(settings.database_url)
    try:
        async with database.sessions() as db:
            account = await _account(db, args.account)
            tokens = list(
                await db.scalars(
                    select(ApiToken).where(ApiToken.account_id == account.id).order_by(ApiToken.id)
                )
            )
    finally:
        await database.close()
    rows = [
        {
            "id": t.id,
            "name": t.name,
            "prefix": t.prefix,
            "scope": t.scope,
            "caller_numbers": t.caller_numbers,
            "created_at": t.created_at.isoformat(),
            "last_used_at": t.last_used_at.isoformat() if t.last_used_at else None,
            "revoked_at": t.revoked_at.isoformat() if t.revoked_at else None,
        }
        for t in tokens
    ]
    print(json.dumps(rows, indent=2))
    return 0


async def cmd_token_revoke(args: argparse.Namespace, settings: Settings) -> int:
    from dashboard.api.tokens import revoke_token

    database = Database(settings.database_url)
    try:
        async with database.begin() as db:
            account = await _account(db, args.account)
            token = await revoke_token(db, account.id, args.id, SystemClock().now())
    finally:
        await database.close()
    print(
        json.dumps(
            {
                "id": token.id,
                "revoked_at": token.revoked_at.isoformat() if token.revoked_at else None,
            }
        )
    )
    return 0


async def cmd_reports_refresh(args: argparse.Namespace, settings: Settings) -> int:
    """Bring the report rollups up to date (or rebuild them all with --all)."""
    from dashboard.reports import rollup

    database = Database(settings.database_url)
    try:
        if args.all:
            stats = await rollup.rebuild_all(database, SystemClock())
        else:
            stats = await rollup.refresh(database, SystemClock())
    finally:
        await database.close()
    print(json.dumps({"sites": stats.sites, "call_days": stats.call_days, "calls": stats.calls}))
    return 0


def register(commands: Any) -> None:
    """Add `token` and `reports` to the `calltrack` parser."""
    token = commands.add_parser("token", help="manage REST API tokens").add_subparsers(
        dest="token_command", required=True, metavar="ACTION"
    )
    create = token.add_parser("create", help="create a token and print it once")
    create.add_argument("--account", required=True)
    create.add_argument("--scope", required=True, choices=["read", "write"])
    create.add_argument("--name", default="API token")
    create.add_argument(
        "--caller-numbers",
        action="store_true",
        help="answer with full caller numbers (masked otherwise, as for a marketer)",
    )
    create.set_defaults(handler=cmd_token_create)
    listing = token.add_parser(
        "list", help="list an account's tokens (never the tokens themselves)"
    )
    listing.add_argument("--account", required=True)
    listing.set_defaults(handler=cmd_token_list)
    revoke = token.add_parser("revoke", help="revoke a token")
    revoke.add_argument("--account", required=True)
    revoke.add_argument("--id", type=int, required=True)
    revoke.set_defaults(handler=cmd_token_revoke)

    reports = commands.add_parser("reports", help="report rollups").add_subparsers(
        dest="reports_command", required=True, metavar="ACTION"
    )
    refresh = reports.add_parser("refresh", help="bring the report rollups up to date")
    refresh.add_argument("--all", action="store_true", help="forget and rebuild every rollup")
    refresh.set_defaults(handler=cmd_reports_refresh)
