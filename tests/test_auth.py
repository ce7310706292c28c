"""Sign-in: argon2 passwords, cookie sessions, CSRF on sign-out, audit of sign-ins."""

from __future__ import annotations

import secrets
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp.test_utils import TestClient
from sqlalchemy import select
from support.app import make_settings

from dashboard.app import create_app
from tracker.clock import FrozenClock
from tracker.db import Database
from tracker.models import AuditEntry, LoginSession
from tracker.sites import get_or_create_account
from tracker.users import create_user

ClientFactory = Callable[..., Awaitable[TestClient[Any, Any]]]
PASSWORD = "correct horse battery"


async def make_user(database: Database, role: str = "advisor") -> str:
    email = f"{role}-{secrets.token_hex(4)}@velos-martin.fr"
    async with database.begin() as db:
        account = await get_or_create_account(db, f"acct-{secrets.token_hex(4)}", FrozenClock())
        await create_user(db, account, email, PASSWORD, role, FrozenClock())
    return email


async def test_sign_in_sets_an_httponly_cookie_and_is_audited(
    aiohttp_client: ClientFactory, database_url: str, database: Database
) -> None:
    client = await aiohttp_client(create_app(make_settings(database_url)))
    email = await make_user(database, "marketer")
    page = await client.get("/login")
    text = await page.text()
    assert page.status == 200 and 'name="email"' in text and 'name="password"' in text
    assert "script-src 'self' 'nonce-" in page.headers["Content-Security-Policy"]

    wrong = await client.post(
        "/login", data={"email": email, "password": "nope"}, allow_redirects=False
    )
    assert wrong.status == 401 and "Wrong email or password" in await wrong.text()

    right = await client.post(
        "/login", data={"email": email.upper(), "password": PASSWORD}, allow_redirects=False
    )
    assert right.status == 302 and right.headers["Location"] == "/dashboard"
    cookie = right.headers["Set-Cookie"]
    assert "ct_session=" in cookie and "HttpOnly" in cookie and "SameSite=Lax" in cookie
    async with database.sessions() as db:
        actions = list(
            await db.scalars(select(AuditEntry.action).where(AuditEntry.actor.in_([email, email])))
        )
        assert sorted(actions) == ["auth.login", "auth.login_failed"]
        token = cookie.split("ct_session=", 1)[1].split(";", 1)[0]
        assert await db.get(LoginSession, token) is None  # only the hash is stored


async def test_cross_site_sign_in_is_refused(
    aiohttp_client: ClientFactory, database_url: str, database: Database
) -> None:
    client = await aiohttp_client(create_app(make_settings(database_url)))
    email = await make_user(database)
    response = await client.post(
        "/login",
        data={"email": email, "password": PASSWORD},
        headers={"Origin": "https://evil.example"},
        allow_redirects=False,
    )
    assert response.status == 403


async def test_sign_out_needs_the_csrf_token(
    aiohttp_client: ClientFactory, database_url: str, database: Database
) -> None:
    client = await aiohttp_client(create_app(make_settings(database_url)))
    email = await make_user(database)
    await client.post("/login", data={"email": email, "password": PASSWORD}, allow_redirects=False)
    refused = await client.post("/logout", data={}, allow_redirects=False)
    assert refused.status == 403
    async with database.sessions() as db:
        login = await db.scalar(select(LoginSession).order_by(LoginSession.created_at.desc()))
        assert login is not None
    done = await client.post("/logout", data={"csrf": login.csrf_token}, allow_redirects=False)
    assert done.status == 302


BAD_FORMS = [
    ("application/x-www-form-urlencoded", b"email=\xff\xfe&password=x"),
    (
        "multipart/form-data; boundary=zz",
        b'--zz\r\nContent-Disposition: form-data; name="email"\r\n\r\n\xff\r\n--zz--\r\n',
    ),
    ("multipart/form-data; boundary=zz", b"no boundary in this body"),
]


async def test_forms_that_are_not_utf8_get_a_400_not_a_500(
    aiohttp_client: ClientFactory, database_url: str, database: Database
) -> None:
    client = await aiohttp_client(create_app(make_settings(database_url)))
    email = await make_user(database, "admin")
    for content_type, body in BAD_FORMS:
        response = await client.post("/login", data=body, headers={"Content-Type": content_type})
        assert response.status == 400, await response.text()
        assert (await response.json())["error"]["code"] == "invalid_form"
    signed_in = await client.post(
        "/login", data={"email": email, "password": PASSWORD}, allow_redirects=False
    )
    assert signed_in.status == 302
    # Pages behind the sign-in read their forms the same way.
    for path in ("/dashboard/settings", "/logout"):
        content_type, body = BAD_FORMS[0]
        response = await client.post(path, data=body, headers={"Content-Type": content_type})
        assert response.status == 400, (path, await response.text())
        assert (await response.json())["error"]["code"] == "invalid_form"


async def test_an_admin_manages_users_from_the_command_line(
    aiohttp_client: ClientFactory,
    database_url: str,
    database: Database,
    monkeypatch: Any,
    capsys: Any,
) -> None:
    """Someone who leaves is disabled and signed out at once; a password is replaced and the
    sign-ins made with the old one end; a role change takes effect on the next sign-in."""
    import json

    from support.cli import run_cli_beside

    monkeypatch.setenv("CALLTRACK_DATABASE_URL", database_url)
    monkeypatch.setenv("CALLTRACK_SECRET_KEY", "cli-test-" + "k" * 40)  # no var/ file
    client = await aiohttp_client(create_app(make_settings(database_url)))
    email = await make_user(database, "marketer")

    async def cli(*argv: str, stdin: str | None = None) -> tuple[int, Any]:
        if stdin is not None:
            import io

            monkeypatch.setattr("sys.stdin", io.StringIO(stdin))
        code = await run_cli_beside(list(argv))
        out, err = capsys.readouterr()
        return code, json.loads(out) if code == 0 else err

    async def sign_in(password: str = PASSWORD) -> int:
        client.session.cookie_jar.clear()
        response = await client.post(
            "/login", data={"email": email, "password": password}, allow_redirects=False
        )
        return response.status

    async def dashboard() -> int:
        return (await client.get("/dashboard", allow_redirects=False)).status

    assert await sign_in() == 302 and await dashboard() == 200
    code, listed = await cli("user", "list", "--account", (await _account_of(database, email)))
    assert code == 0 and [u["email"] for u in listed] == [email]
    assert listed[0]["role"] == "marketer" and listed[0]["disabled_at"] is None

    code, shown = await cli("user", "disable", "--email", email.upper())
    assert code == 0 and shown["disabled_at"] and shown["sign_ins_ended"] == 1
    assert await dashboard() == 302  # signed out at once
    assert await sign_in() == 401
    code, shown = await cli("user", "enable", "--email", email)
    assert code == 0 and shown["disabled_at"] is None
    assert await sign_in() == 302 and await dashboard() == 200

    code, shown = await cli("user", "password", "--email", email, "--password-stdin",
                            stdin="a new long passphrase\n")  # fmt: skip
    assert code == 0 and shown["sign_ins_ended"] == 1
    assert await dashboard() == 302
    assert await sign_in() == 401 and await sign_in("a new long passphrase") == 302

    code, shown = await cli("user", "set", "--email", email, "--role", "advisor")
    assert code == 0 and shown["role"] == "advisor" and shown["sign_ins_ended"] == 1
    assert await sign_in("a new long passphrase") == 302
    assert (await client.get("/dashboard", allow_redirects=False)).status == 403
    code, err = await cli("user", "password", "--email", email, "--password-stdin", stdin="short\n")
    assert code == 2 and "weak_password" in err
    code, err = await cli("user", "disable", "--email", "nobody@velos-martin.fr")
    assert code == 2 and "unknown_user" in err
    # The phone the advisor's callbacks ring: any written form (an account without a site
    # reads only international ones), an empty text removes it; not a number is refused.
    code, shown = await cli("user", "set", "--email", email, "--phone", "+33 6 12 34 56 78")
    assert code == 0 and shown["phone"] == "+33612345678" and shown["sign_ins_ended"] == 0
    code, err = await cli("user", "set", "--email", email, "--phone", "06 12 34 56 78 99")
    assert code == 2 and "invalid_phone" in err
    code, shown = await cli("user", "set", "--email", email, "--phone", "")
    assert code == 0 and shown["phone"] is None
    second = f"second-{secrets.token_hex(4)}@velos-martin.fr"
    code, shown = await cli("user", "create", "--email", second, "--role", "advisor",
                            "--language", "fr", "--phone", "+32 2 555 12 12",
                            "--account", listed[0]["account"], "--password-stdin",
                            stdin="a long enough password\n")  # fmt: skip
    assert code == 0 and (shown["language"], shown["phone"]) == ("fr", "+3225551212")

    async with database.sessions() as db:
        actions = list(
            await db.scalars(
                select(AuditEntry.action)
                .where(AuditEntry.target == f"user:{listed[0]['id']}")
                .order_by(AuditEntry.id)
            )
        )
    assert actions == ["user.disabled", "user.enabled", "user.password_changed", "user.changed",
                       "user.changed", "user.changed"]  # fmt: skip


async def _account_of(database: Database, email: str) -> str:
    from tracker.models import Account, User

    async with database.sessions() as db:
        name = await db.scalar(
            select(Account.name)
            .join(User, User.account_id == Account.id)
            .where(User.email == email)
        )
    assert name is not None
    return str(name)


async def test_each_role_lands_on_a_page_it_may_open(
    aiohttp_client: ClientFactory, database_url: str, database: Database
) -> None:
    """A DPO landed on the reports and got "Access denied", with no way on (found by audits)."""
    client = await aiohttp_client(create_app(make_settings(database_url)))
    for role, home in (("marketer", "/dashboard"), ("admin", "/dashboard"),
                       ("advisor", "/console"), ("dpo", "/dashboard/privacy")):  # fmt: skip
        client.session.cookie_jar.clear()
        email = await make_user(database, role)
        signed_in = await client.post(
            "/login", data={"email": email, "password": PASSWORD}, allow_redirects=False
        )
        assert signed_in.headers["Location"] == home, role
        assert (await client.get(home, allow_redirects=False)).status == 200, role
