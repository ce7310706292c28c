"""Audit completeness: every action on personal data leaves exactly one audit entry.

One walk through the privacy pages (and one through the CLI) on each backend: before and after
every step the account's audit log is counted, and exactly one entry with the expected action
must appear (none for pages that name nobody, and none for refused requests).
"""

from __future__ import annotations

import asyncio
import io
import json
import re
import secrets
import zipfile
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from sqlalchemy import func, select
from support.app import make_settings
from test_privacy_erase import SECRET, Seeded, seed_person

from dashboard.app import create_app
from dashboard.cli import main
from tracker import appkeys
from tracker.clock import FrozenClock
from tracker.db import Database
from tracker.models import Account, AuditEntry, ExclusionEntry, LoginSession, User
from tracker.privacy.hashing import subject_hash
from tracker.sites import get_or_create_account
from tracker.users import create_user

ClientFactory = Callable[..., Awaitable[TestClient[Any, Any]]]
PASSWORD = "correct horse battery"
PRIVACY_PAGES = [
    ("GET", "/dashboard/privacy"),
    ("POST", "/dashboard/privacy/find"),
    ("POST", "/dashboard/privacy/export"),
    ("POST", "/dashboard/privacy/erase"),
    ("GET", "/dashboard/privacy/exclusions"),
    ("GET", "/dashboard/privacy/retention"),
    ("GET", "/dashboard/privacy/audit"),
    ("GET", "/dashboard/privacy/audit.csv"),
    ("GET", "/dashboard/privacy/register"),
    ("GET", "/dashboard/privacy/breach"),
]


async def add_user(database: Database, account_name: str, role: str) -> str:
    email = f"{role}-{secrets.token_hex(4)}@velos-martin.fr"
    async with database.begin() as db:
        account = await get_or_create_account(db, account_name, FrozenClock())
        await create_user(db, account, email, PASSWORD, role, FrozenClock())
    return email


async def sign_in(client: TestClient[Any, Any], database: Database, email: str) -> str:
    response = await client.post(
        "/login", data={"email": email, "password": PASSWORD}, allow_redirects=False
    )
    assert response.status == 302
    async with database.sessions() as db:
        user = await db.scalar(select(User).where(User.email == email))
        assert user is not None
        login = await db.scalar(
            select(LoginSession)
            .where(LoginSession.user_id == user.id)
            .order_by(LoginSession.created_at.desc())
        )
        assert login is not None
        return login.csrf_token


async def account_name_of(database: Database, seeded: Seeded) -> str:
    async with database.sessions() as db:
        account = await db.get(Account, seeded.account_id)
        assert account is not None
        return account.name


async def audit_rows(database: Database, account_id: int) -> list[AuditEntry]:
    async with database.sessions() as db:
        return list(
            await db.scalars(
                select(AuditEntry)
                .where(AuditEntry.account_id == account_id)
                .order_by(AuditEntry.id)
            )
        )


@pytest.fixture
async def setup(
    aiohttp_client: ClientFactory, database_url: str, database: Database, tmp_path: Path
) -> tuple[TestClient[Any, Any], Seeded, str]:
    app = create_app(make_settings(database_url, secret_key=SECRET))
    app[appkeys.PRIVACY_EXPORT_DIR] = tmp_path
    client = await aiohttp_client(app)
    seeded = await seed_person(database, with_privacy_rows=False)
    return client, seeded, await account_name_of(database, seeded)


@pytest.mark.parametrize("role", ["marketer", "advisor"])
async def test_only_admin_and_dpo_reach_the_privacy_tools(
    setup: tuple[TestClient[Any, Any], Seeded, str], database: Database, role: str
) -> None:
    client, seeded, account = setup
    email = await add_user(database, account, role)
    csrf = await sign_in(client, database, email)
    before = len(await audit_rows(database, seeded.account_id))
    for method, path in PRIVACY_PAGES:
        data = {"csrf": csrf, "kind": "phone", "q": "0612345678", "confirm": "yes"}
        response = await client.request(method, path, data=data if method == "POST" else None,
                                        allow_redirects=False)  # fmt: skip
        assert response.status == 403, (method, path)
    assert len(await audit_rows(database, seeded.account_id)) == before


async def test_signed_out_visitors_are_sent_to_the_sign_in_page(
    setup: tuple[TestClient[Any, Any], Seeded, str],
) -> None:
    client, _, _ = setup
    for method, path in PRIVACY_PAGES:
        response = await client.request(method, path, allow_redirects=False)
        assert response.status == 302 and response.headers["Location"].startswith("/login?next=")


async def test_each_personal_data_action_produces_exactly_one_audit_entry(
    setup: tuple[TestClient[Any, Any], Seeded, str], database: Database
) -> None:
    client, seeded, account = setup
    email = await add_user(database, account, "dpo")
    entries = await audit_rows(database, seeded.account_id)

    async def expect(action: str | None, response: Any, status: int = 200) -> AuditEntry | None:
        nonlocal entries
        assert response.status == status, (action, await response.text())
        now = await audit_rows(database, seeded.account_id)
        new = now[len(entries) :]
        entries = now
        if action is None:
            assert new == [], [e.action for e in new]
            return None
        assert [e.action for e in new] == [action]
        entry = new[0]
        assert entry.actor == email
        assert entry.ip_truncated == "127.0.0.0"
        return entry

    # Signing in: who, from where.
    response = await client.post("/login", data={"email": email, "password": PASSWORD},
                                 allow_redirects=False)  # fmt: skip
    await expect("auth.login", response, 302)
    csrf = await sign_in_token(database, email)
    lookup = {"csrf": csrf, "kind": "phone", "q": "06 12 34 56 78", "site": seeded.site.site_key}
    subject = "phone:" + subject_hash(SECRET, seeded.account_id, "phone", "+33612345678")

    await expect(None, await client.get("/dashboard/privacy"))
    # A form without the CSRF token is refused, and leaves no trace.
    await expect(
        None, await client.post("/dashboard/privacy/find", data={**lookup, "csrf": ""}), 403
    )

    found = await expect("privacy.find", await client.post("/dashboard/privacy/find", data=lookup))
    assert found is not None and found.detail["subject"] == subject
    assert found.detail["records"]["calls"] == [str(seeded.call_id)]
    assert "+33612345678" not in json.dumps(found.detail)

    response = await client.post("/dashboard/privacy/export", data=lookup)
    exported = await expect("privacy.export", response)
    assert response.headers["Content-Type"] == "application/zip"
    archive = zipfile.ZipFile(io.BytesIO(await response.read()))
    assert any(name.endswith("README.md") for name in archive.namelist())
    assert exported is not None and exported.target is not None
    export_id = exported.target.split(":")[1]
    await expect(
        "privacy.export_download", await client.get(f"/dashboard/privacy/exports/{export_id}")
    )

    rectified = await expect("privacy.rectify", await client.post("/dashboard/privacy/rectify", data={
        **lookup, "table": "contact_requests", "record": str(seeded.request_id),
        "field": "phone", "value": "06 11 22 33 44"}))  # fmt: skip
    assert rectified is not None and rectified.target == f"contact_requests:{seeded.request_id}"
    assert rectified.detail["changed"] is True and rectified.detail["new"] != "+33611223344"

    await expect("privacy.restrict", await client.post("/dashboard/privacy/restrict",
                                                       data={**lookup, "do": "restrict"}))  # fmt: skip
    await expect("privacy.restrict_lift", await client.post("/dashboard/privacy/restrict",
                                                            data={**lookup, "do": "lift"}))  # fmt: skip
    # An action the form never sends restricts no one (it did: found by an audit).
    refused = await client.post("/dashboard/privacy/restrict", data={**lookup, "do": "explode"})
    assert refused.status == 400
    await expect("privacy.exclude", await client.post("/dashboard/privacy/exclude",
                                                      data={**lookup, "what": "visitor"}))  # fmt: skip
    await expect("privacy.exclusions_view", await client.get("/dashboard/privacy/exclusions"))
    response = await client.post("/dashboard/privacy/exclusions", allow_redirects=False, data={
        "csrf": csrf, "kind": "phone", "q": "+33 6 99 88 77 66", "site": seeded.site.site_key})  # fmt: skip
    await expect("privacy.exclude", response, 303)
    async with database.sessions() as db:
        entry_id = await db.scalar(
            select(func.max(ExclusionEntry.id)).where(
                ExclusionEntry.account_id == seeded.account_id
            )
        )
    response = await client.post(f"/dashboard/privacy/exclusions/{entry_id}/delete",
                                 data={"csrf": csrf}, allow_redirects=False)  # fmt: skip
    await expect("privacy.exclusion_remove", response, 303)

    await expect("privacy.retention_view", await client.get("/dashboard/privacy/retention"))
    updated = await expect("privacy.retention_update", await client.post(
        "/dashboard/privacy/retention",
        data={"csrf": csrf, "site": seeded.site.site_key, "pageviews": "6", "calls": "25"}))  # fmt: skip
    assert updated is not None and updated.detail["changed"] == {"pageviews": [13, 6]}

    await expect(
        "privacy.audit_search", await client.get("/dashboard/privacy/audit?action=privacy.")
    )
    response = await client.get("/dashboard/privacy/audit.csv")
    await expect("privacy.audit_export", response)
    assert (await response.text()).startswith("id,at,actor,action,target,detail,ip_truncated")

    await expect("privacy.register", await client.get("/dashboard/privacy/register?doc=fr"))
    response = await client.get(
        f"/dashboard/privacy/register?site={seeded.site.site_key}&format=md"
    )
    await expect("privacy.register", response)
    assert "# Record of processing activities" in await response.text()

    await expect(None, await client.get("/dashboard/privacy/breach"))
    await expect("privacy.breach_report",
                 await client.get("/dashboard/privacy/breach?since=2020-01-01&until=2030-01-01"))  # fmt: skip

    await expect(
        "privacy.erase_preview", await client.post("/dashboard/privacy/erase", data=lookup)
    )
    erased = await expect("privacy.erase", await client.post("/dashboard/privacy/erase",
                                                             data={**lookup, "confirm": "yes"}))  # fmt: skip
    assert erased is not None and erased.detail["total"] > 0
    # The search before the erasure no longer names the person.
    assert found.id in {e.id for e in entries}
    scrubbed = next(e for e in entries if e.id == found.id)
    assert scrubbed.detail["subject"] == "[erased]"

    response = await client.post("/logout", data={"csrf": csrf}, allow_redirects=False)
    await expect("auth.logout", response, 302)


async def sign_in_token(database: Database, email: str) -> str:
    async with database.sessions() as db:
        user = await db.scalar(select(User).where(User.email == email))
        assert user is not None
        token = await db.scalar(
            select(LoginSession.csrf_token)
            .where(LoginSession.user_id == user.id)
            .order_by(LoginSession.created_at.desc())
        )
        assert token is not None
        return token


def test_each_cli_use_is_audited_exactly_once(
    database_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    async def seed() -> Seeded:
        database = Database(database_url)
        try:
            return await seed_person(database, with_privacy_rows=False)
        finally:
            await database.close()

    async def actions(account_id: int) -> list[str]:
        database = Database(database_url)
        try:
            return [e.action for e in await audit_rows(database, account_id)]
        finally:
            await database.close()

    seeded = asyncio.run(seed())
    monkeypatch.setenv("CALLTRACK_DATABASE_URL", database_url)
    monkeypatch.setenv("CALLTRACK_SECRET_KEY", SECRET)
    monkeypatch.delenv("CALLTRACK_REDIS_URL", raising=False)
    key = seeded.site.site_key
    person = ["--phone", "06 12 34 56 78", "--site", key]
    exports = ["--export-dir", str(tmp_path)]
    steps: list[tuple[list[str], str, int]] = [
        (["find", *person], "privacy.find", 0),
        (["export", *person, *exports], "privacy.export", 0),
        (["rectify", *person, "--table", "sessions", "--record", seeded.session_ids[0],
          "--field", "city", "--value", "Grenoble"], "privacy.rectify", 0),
        (["restrict", *person], "privacy.restrict", 0),
        (["restrict", *person, "--lift"], "privacy.restrict_lift", 0),
        (["exclude", "--visitor", seeded.visitor_id, "--site", key], "privacy.exclude", 0),
        (["exclude", "--list", "--site", key], "privacy.exclusions_view", 0),
        (["exclude", "--visitor", seeded.visitor_id, "--site", key, "--remove"],
         "privacy.exclusion_remove", 0),
        (["register", "--site", key, "--lang", "fr"], "privacy.register", 0),
        (["breach-report", "--since", "2020-01-01", "--until", "2030-01-01", "--site", key],
         "privacy.breach_report", 0),
        (["purge", "--site", key, "--no-progress", *exports], "privacy.purge", 0),
        (["erase", *person, *exports], "privacy.erase_preview", 1),
        (["erase", *person, *exports, "--yes", "--json"], "privacy.erase", 0),
    ]  # fmt: skip
    before = asyncio.run(actions(seeded.account_id))
    for argv, action, code in steps:
        assert main(["privacy", *argv]) == code, argv
        capsys.readouterr()
        after = asyncio.run(actions(seeded.account_id))
        assert after[len(before) :] == [action], argv
        before = after
    assert re.fullmatch(r"cli(:.+)?", _last_actor(database_url, seeded.account_id))


def _last_actor(database_url: str, account_id: int) -> str:
    async def run() -> str:
        database = Database(database_url)
        try:
            return (await audit_rows(database, account_id))[-1].actor
        finally:
            await database.close()

    return asyncio.run(run())
