"""The users pages (admins) and the profile page (everyone): forms, checks, sign-outs, audit.

Every test runs on SQLite and PostgreSQL (the `database_url` fixture).
"""

from __future__ import annotations

import datetime as dt
import re
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from sqlalchemy import func, select
from support.app import make_settings
from test_reports import sign_in

from dashboard.app import create_app
from dashboard.users_http import BASE, PROFILE
from tracker import appkeys
from tracker.clock import FrozenClock
from tracker.db import Database
from tracker.models import Account, AuditEntry, LoginSession, Site, User
from tracker.users import hash_password, verify_password

ClientFactory = Callable[..., Awaitable[TestClient[Any, Any]]]
NOW = dt.datetime(2026, 1, 12, 10, 0, tzinfo=dt.UTC)
PASSWORD = "correct horse battery"
NEW_PASSWORD = "a brand new passphrase"


@dataclass
class World:
    client: TestClient[Any, Any]
    database: Database
    account_id: int
    users: dict[str, str]
    rival_user_id: int


@pytest.fixture
async def world(aiohttp_client: ClientFactory, database_url: str, database: Database) -> World:
    tag = secrets.token_hex(4)
    async with database.begin() as db:
        account, rival = Account(name=f"shop-{tag}", created_at=NOW), Account(name=f"rival-{tag}", created_at=NOW)  # fmt: skip
        db.add_all([account, rival])
        await db.flush()
        db.add(Site(account_id=account.id, site_key="ct" + secrets.token_hex(10), name="Vélos",
                    domain="velos-martin.fr", country="FR", timezone="Europe/Paris",
                    language="fr", settings={}, created_at=NOW))  # fmt: skip
        users: dict[str, str] = {}
        for role in ("admin", "marketer", "advisor", "dpo"):
            users[role] = f"{role}-{tag}@velos-martin.fr"
            # Only the advisor signs in with a password here (argon2 is slow on purpose).
            password_hash = hash_password(PASSWORD) if role == "advisor" else "-"
            db.add(User(account_id=account.id, email=users[role], password_hash=password_hash,
                        role=role, language="en", created_at=NOW))  # fmt: skip
        intruder = User(account_id=rival.id, email=f"admin-{tag}@rival.fr", password_hash="-",
                        role="admin", language="en", created_at=NOW)  # fmt: skip
        db.add(intruder)
        await db.flush()
        account_id, rival_user_id = account.id, intruder.id
    app = create_app(make_settings(database_url), clock=FrozenClock(NOW))
    app[appkeys.EXTRAS]["workers_disabled"] = {"webhooks", "reports"}
    client = await aiohttp_client(app)
    return World(client, database, account_id, users, rival_user_id)


async def _user(database: Database, email: str) -> User:
    async with database.sessions() as db:
        user = await db.scalar(select(User).where(User.email == email))
        assert user is not None
        return user


async def _actions(database: Database, account_id: int) -> list[AuditEntry]:
    async with database.sessions() as db:
        return list(
            await db.scalars(
                select(AuditEntry)
                .where(AuditEntry.account_id == account_id, AuditEntry.action.like("user.%"))
                .order_by(AuditEntry.id)
            )
        )


async def _sign_ins(database: Database, user_id: int) -> int:
    async with database.sessions() as db:
        count = await db.scalar(
            select(func.count()).select_from(LoginSession).where(LoginSession.user_id == user_id)
        )
        return int(count or 0)


def _new_user(csrf: str, **fields: str) -> dict[str, str]:
    return {"csrf": csrf, "email": "Nouveau@Velos-Martin.fr", "role": "advisor", "language": "fr",
            "phone": "06 12 34 56 78", "password": NEW_PASSWORD, "password_again": NEW_PASSWORD,
            **fields}  # fmt: skip


async def test_an_admin_adds_a_user_with_errors_shown_by_their_fields(world: World) -> None:
    client, database = world.client, world.database
    csrf = await sign_in(client, database, world.users["admin"], NOW)
    page = await client.get(BASE)
    html = await page.text()
    assert page.status == 200
    for email in (world.users[r] for r in ("admin", "marketer", "advisor", "dpo")):
        assert email in html
    assert "rival.fr" not in html  # another account's users are never shown
    assert f'href="{BASE}" aria-current=page' in html
    assert [e.action for e in await _actions(database, world.account_id)] == ["user.list"]

    # Bad fields: each error next to its field, nothing stored, what was typed kept.
    response = await client.post(BASE, data=_new_user(csrf, email="nope", phone="12",
                                                      password="short", password_again="short"))  # fmt: skip
    html = await response.text()
    assert response.status == 400
    for name in ("email", "phone", "password"):
        assert re.search(rf'id="{name}" name="{name}"[^>]*aria-invalid="true"', html), name
    assert 'value="nope"' in html and 'value="12"' in html
    response = await client.post(BASE, data=_new_user(csrf, password_again="something else"))
    assert response.status == 400 and 'id="password_again-error"' in await response.text()
    # Without the form's CSRF token: refused.
    response = await client.post(BASE, data=_new_user(""))
    assert response.status == 403 and (await response.json())["error"]["code"] == "csrf_failed"
    async with database.sessions() as db:
        assert await db.scalar(select(User).where(User.email == "nouveau@velos-martin.fr")) is None

    response = await client.post(BASE, data=_new_user(csrf), allow_redirects=False)
    assert response.status == 303
    created = await _user(database, "nouveau@velos-martin.fr")
    assert (created.account_id, created.role, created.language, created.phone_e164) == (
        world.account_id, "advisor", "fr", "+33612345678"
    )  # fmt: skip
    assert verify_password(created.password_hash, NEW_PASSWORD)
    html = await (await client.get(response.headers["Location"])).text()
    assert "nouveau@velos-martin.fr was added." in html and "+33 6 12 34 56 78" in html
    # A crafted link cannot make the page say that someone else was added.
    html = await (await client.get(f"{BASE}?done=created&email=ceo%40rival.fr")).text()
    assert "The user was added." in html and "ceo@rival.fr" not in html

    # The same email again (in any case): refused by the email field.
    response = await client.post(BASE, data=_new_user(csrf, email="NOUVEAU@velos-martin.fr"))
    assert response.status == 400 and 'id="email-error"' in await response.text()

    entries = await _actions(database, world.account_id)
    created_entries = [e for e in entries if e.action == "user.created"]
    assert len(created_entries) == 1
    entry = created_entries[0]
    assert entry.actor == world.users["admin"] and entry.target == f"user:{created.id}"
    assert entry.ip_truncated == "127.0.0.0" and entry.detail == {"role": "advisor"}


async def test_an_admin_changes_disables_and_resets_a_user(world: World) -> None:
    client, database = world.client, world.database
    csrf = await sign_in(client, database, world.users["admin"], NOW)
    advisor = await _user(database, world.users["advisor"])
    # The advisor is signed in on two browsers.
    other = TestClient(client.server)
    await other.start_server()
    await sign_in(other, database, advisor.email, NOW)
    await sign_in(other, database, advisor.email, NOW)
    assert await _sign_ins(database, advisor.id) == 2
    url = f"{BASE}/{advisor.id}"

    page = await client.get(url)
    assert page.status == 200 and advisor.email in await page.text()

    # Phone and language: saved, nobody signed out.
    response = await client.post(url, data={"csrf": csrf, "do": "save", "role": "advisor",
                                            "language": "fr", "phone": "+32 2 555 12 12"},
                                 allow_redirects=False)  # fmt: skip
    assert response.status == 303 and "done=saved" in response.headers["Location"]
    changed = await _user(database, advisor.email)
    assert (changed.language, changed.phone_e164) == ("fr", "+3225551212")
    assert await _sign_ins(database, advisor.id) == 2
    # A bad phone: a 400 naming the field, nothing changed.
    response = await client.post(url, data={"csrf": csrf, "do": "save", "role": "marketer",
                                            "language": "en", "phone": "call me"})  # fmt: skip
    assert response.status == 400 and 'id="phone-error"' in await response.text()
    assert (await _user(database, advisor.email)).role == "advisor"

    # A new role signs them out everywhere; an empty phone removes it.
    response = await client.post(url, data={"csrf": csrf, "do": "save", "role": "marketer",
                                            "language": "fr", "phone": ""}, allow_redirects=False)  # fmt: skip
    assert response.status == 303
    changed = await _user(database, advisor.email)
    assert (changed.role, changed.phone_e164) == ("marketer", None)
    assert await _sign_ins(database, advisor.id) == 0

    await sign_in(other, database, advisor.email, NOW)
    response = await client.post(url, data={"csrf": csrf, "do": "disable"}, allow_redirects=False)
    assert response.status == 303
    assert (await _user(database, advisor.email)).disabled_at == NOW
    assert await _sign_ins(database, advisor.id) == 0
    assert "Disabled since 2026-01-12" in await (await client.get(BASE)).text()
    response = await client.post(url, data={"csrf": csrf, "do": "enable"}, allow_redirects=False)
    assert response.status == 303 and (await _user(database, advisor.email)).disabled_at is None

    await sign_in(other, database, advisor.email, NOW)
    response = await client.post(url, data={"csrf": csrf, "do": "password", "password": "short",
                                            "password_again": "short"})  # fmt: skip
    assert response.status == 400 and 'id="password-error"' in await response.text()
    response = await client.post(url, data={"csrf": csrf, "do": "password", "password": NEW_PASSWORD,
                                            "password_again": NEW_PASSWORD}, allow_redirects=False)  # fmt: skip
    assert response.status == 303
    assert verify_password((await _user(database, advisor.email)).password_hash, NEW_PASSWORD)
    assert await _sign_ins(database, advisor.id) == 0
    await other.close()

    entries = [e for e in await _actions(database, world.account_id) if e.target == f"user:{advisor.id}"]  # fmt: skip
    assert [e.action for e in entries] == [
        "user.viewed", "user.changed", "user.changed", "user.disabled", "user.enabled",
        "user.password_changed",
    ]  # fmt: skip
    assert entries[1].detail == {
        "changed": {"language": ["en", "fr"], "phone": [None, "+32 2 ••• •• 12"]},
        "sign_ins_ended": 0,
    }
    assert entries[2].detail["changed"]["role"] == ["advisor", "marketer"]
    assert entries[2].detail["sign_ins_ended"] == 2
    assert all(e.actor == world.users["admin"] for e in entries)


async def test_an_admin_cannot_lock_themselves_out_nor_reach_another_account(
    world: World,
) -> None:
    client, database = world.client, world.database
    csrf = await sign_in(client, database, world.users["admin"], NOW)
    admin = await _user(database, world.users["admin"])
    url = f"{BASE}/{admin.id}"
    html = await (await client.get(url)).text()
    assert '<select id="role" name="role" disabled>' in html and 'value="disable"' not in html
    response = await client.post(url, data={"csrf": csrf, "do": "disable"})
    assert response.status == 409 and (await response.json())["error"]["code"] == "own_access"
    # A forged role is ignored for oneself: the select is disabled, the role stays.
    response = await client.post(url, data={"csrf": csrf, "do": "save", "role": "advisor",
                                            "language": "en", "phone": ""}, allow_redirects=False)  # fmt: skip
    assert response.status == 303 and (await _user(database, admin.email)).role == "admin"
    assert await _sign_ins(database, admin.id) == 1  # still signed in

    for path in (f"{BASE}/{world.rival_user_id}", f"{BASE}/999999999", f"{BASE}/x",
                 f"{BASE}/%C2%B2", f"{BASE}/99999999999999", f"{BASE}/-1"):  # fmt: skip
        assert (await client.get(path)).status == 404, path
        response = await client.post(path, data={"csrf": csrf, "do": "disable"})
        assert response.status == 404, path
    response = await client.post(url, data={"csrf": csrf, "do": "explode"})
    assert response.status == 400 and (await response.json())["error"]["code"] == "invalid_action"


async def test_only_admins_reach_the_users_pages(world: World) -> None:
    client, database = world.client, world.database
    advisor = await _user(database, world.users["advisor"])
    for path in (BASE, f"{BASE}/{advisor.id}"):
        response = await client.get(path, allow_redirects=False)
        assert response.status == 302 and response.headers["Location"].startswith("/login?next=")
    for role in ("marketer", "advisor", "dpo"):
        client.session.cookie_jar.clear()
        csrf = await sign_in(client, database, world.users[role], NOW)
        assert (await client.get(BASE, allow_redirects=False)).status == 403, role
        response = await client.post(BASE, data=_new_user(csrf), allow_redirects=False)
        assert response.status == 403, role
        response = await client.post(f"{BASE}/{advisor.id}", data={"csrf": csrf, "do": "disable"})
        assert response.status == 403, role
        # Everyone has a profile.
        assert (await client.get(PROFILE)).status == 200, role
    assert (await _user(database, advisor.email)).disabled_at is None


async def test_a_user_sets_their_own_phone_language_and_password(world: World) -> None:
    client, database = world.client, world.database
    advisor = await _user(database, world.users["advisor"])
    other = TestClient(client.server)
    await other.start_server()
    await sign_in(other, database, advisor.email, NOW)
    csrf = await sign_in(client, database, advisor.email, NOW)

    html = await (await client.get("/console")).text()
    assert f'href="{PROFILE}"' in html  # the console's header leads to the profile
    page = await client.get(PROFILE)
    html = await page.text()
    assert page.status == 200 and advisor.email in html and "Your profile" in html

    response = await client.post(PROFILE, data={"csrf": csrf, "do": "save", "language": "fr",
                                                "phone": "06 98 76 54 32"}, allow_redirects=False)  # fmt: skip
    assert response.status == 303
    changed = await _user(database, advisor.email)
    assert (changed.language, changed.phone_e164, changed.role) == ("fr", "+33698765432", "advisor")
    html = await (await client.get(response.headers["Location"])).text()
    assert "Votre profil" in html and "+33 6 98 76 54 32" in html  # in the language just chosen
    assert await _sign_ins(database, advisor.id) == 2

    # A role sent to the profile changes nothing: only admins change roles.
    await client.post(PROFILE, data={"csrf": csrf, "do": "save", "language": "fr",
                                     "phone": "06 98 76 54 32", "role": "admin"})  # fmt: skip
    assert (await _user(database, advisor.email)).role == "advisor"

    response = await client.post(PROFILE, data={"csrf": csrf, "do": "password",
                                                "current_password": "not it",
                                                "password": NEW_PASSWORD, "password_again": NEW_PASSWORD})  # fmt: skip
    assert response.status == 400 and 'id="current_password-error"' in await response.text()
    assert verify_password((await _user(database, advisor.email)).password_hash, PASSWORD)
    response = await client.post(PROFILE, data={"csrf": csrf, "do": "password",
                                                "current_password": PASSWORD,
                                                "password": NEW_PASSWORD, "password_again": NEW_PASSWORD},
                                 allow_redirects=False)  # fmt: skip
    assert response.status == 303
    assert verify_password((await _user(database, advisor.email)).password_hash, NEW_PASSWORD)
    # This browser stays signed in; the other one is signed out.
    assert (await client.get(PROFILE, allow_redirects=False)).status == 200
    assert (await other.get(PROFILE, allow_redirects=False)).status == 302
    assert await _sign_ins(database, advisor.id) == 1
    await other.close()

    entries = await _actions(database, world.account_id)
    assert [e.action for e in entries] == ["user.changed", "user.password_changed"]
    assert all(e.actor == advisor.email and e.target == f"user:{advisor.id}" for e in entries)
    assert "+33698765432" not in str(entries[0].detail)  # the audit log keeps it masked


@pytest.mark.parametrize(
    "email",
    ["a@b..fr", "x@-y.fr", "dot.@x.fr", ".a@x.fr", "<a@x.fr>", 'a"b@x.fr', "a@x.fr-", "a@x.f",
     "a@localhost", "a b@x.fr", "a@x_y.fr"],
)  # fmt: skip
def test_addresses_no_invitation_can_reach_are_refused(email: str) -> None:
    from tracker.errors import ApiError
    from tracker.users import check_email

    with pytest.raises(ApiError) as refused:
        check_email(email)
    assert refused.value.code == "invalid_email"


@pytest.mark.parametrize(
    ("email", "stored"),
    [("First.Last+tag@Sub.Example.co.uk", "first.last+tag@sub.example.co.uk"),
     ("o'brien@x.ie", "o'brien@x.ie"), ("josé@exämple.fr", "josé@exämple.fr"),
     ("demo@calltrack.test", "demo@calltrack.test"), ("u@xn--p1ai.xn--p1ai", "u@xn--p1ai.xn--p1ai")],
)  # fmt: skip
def test_ordinary_addresses_are_accepted(email: str, stored: str) -> None:
    from tracker.users import check_email

    assert check_email(email) == stored
