"""Site settings: the opening-hours spec, `calltrack site set` and the admin page.

Every test that touches storage runs on SQLite and PostgreSQL (the `database_url` fixture).
"""

from __future__ import annotations

import datetime as dt
import json
import re
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from sqlalchemy import select
from support.app import make_settings
from support.cli import run_cli_beside
from test_reports import sign_in

from dashboard import cli_extra, numbers_cli
from dashboard.app import create_app
from dashboard.pages import top_nav
from dashboard.site_settings import BASE, check_timezone
from tracker import appkeys
from tracker.clock import FrozenClock
from tracker.contacts import (
    format_opening_hours,
    is_open_now,
    parse_opening_hours,
    parse_opening_spec,
)
from tracker.db import Database
from tracker.errors import ApiError
from tracker.models import Account, AuditEntry, Site, User

ClientFactory = Callable[..., Awaitable[TestClient[Any, Any]]]
# Monday 12 January 2026, 11:00 in Paris.
NOW = dt.datetime(2026, 1, 12, 10, 0, tzinfo=dt.UTC)
SPEC = "mon-fri 09:00-12:30,14:00-18:00; sat 10:00-13:00"
WEEK = [["09:00", "12:30"], ["14:00", "18:00"]]
STORED = {"mon": WEEK, "tue": WEEK, "wed": WEEK, "thu": WEEK, "fri": WEEK, "sat": [["10:00", "13:00"]]}  # fmt: skip


# -- the spec ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        (SPEC, STORED),
        ("always", None),
        (" ALWAYS ", None),
        ("{}", None),
        ("mon,wed 9:00-12:00", {"mon": [["09:00", "12:00"]], "wed": [["09:00", "12:00"]]}),
        (
            "Monday - Tuesday 14:00 - 18:00, 09:00-12:00",
            {d: [["09:00", "12:00"], ["14:00", "18:00"]] for d in ("mon", "tue")},
        ),
        # A day range may wrap past Sunday; a range ending before it starts runs past midnight.
        ("sat-mon 20:00-02:00", {d: [["20:00", "02:00"]] for d in ("mon", "sat", "sun")}),
        (
            "mon-fri 09:00-12:00; fri 14:00-16:00",
            {
                **{d: [["09:00", "12:00"]] for d in ("mon", "tue", "wed", "thu")},
                "fri": [["09:00", "12:00"], ["14:00", "16:00"]],
            },
        ),
        ("sun 00:00-24:00", {"sun": [["00:00", "24:00"]]}),
        (
            '{"sat": [["10:00", "13:00"]], "mon": [["09:00", "12:00"]]}',
            {"mon": [["09:00", "12:00"]], "sat": [["10:00", "13:00"]]},
        ),
    ],
)
def test_opening_spec_is_read_into_the_stored_format(
    spec: str, expected: dict[str, Any] | None
) -> None:
    hours = parse_opening_spec(spec)
    assert hours == expected
    assert parse_opening_hours(hours) is not None or expected is None
    # What the formatter writes reads back to the same setting.
    text = format_opening_hours(hours)
    assert parse_opening_spec(text) == hours


def test_opening_hours_are_written_in_the_short_form() -> None:
    assert format_opening_hours(STORED) == SPEC
    assert format_opening_hours(None) == format_opening_hours({}) == "always"
    assert format_opening_hours({"mon": [["09:00", "12:00"]], "wed": [["09:00", "12:00"]],
                                 "thu": [["09:00", "12:00"]]}) == "mon,wed-thu 09:00-12:00"  # fmt: skip


@pytest.mark.parametrize(
    ("spec", "says"),
    [
        ("", "no opening hours"),
        ("mon", "has no hours"),
        ("mon-fry 09:00-18:00", "'fry' is not a day"),
        ("09:00-18:00", "name the days first"),
        ("mon 9-18", "'9-18' is not a time range"),
        ("mon 9h-18h", "'9h-18h' is not a time range"),
        ("mon 25:00-26:00", "is not a time range"),
        ("mon 24:00-10:00", "is not a time range"),
        ("mon 10:60-11:00", "is not a time range"),
        ("mon 09:00-09:00", "empty range"),
        ("{not json", "not valid JSON"),
        ("[]", "must be an object"),
        ('{"monday": []}', "is not one of"),
        ('{"mon": [["09:00+01:00", "10:00"]]}', "is not a range like"),
        ("mon " + ",".join(f"{h:02d}:00-{h:02d}:30" for h in range(13)), "at most 12"),
        ("x" * 3000, "longer than"),
    ],
)
def test_a_bad_spec_is_refused_with_a_sentence(spec: str, says: str) -> None:
    with pytest.raises(ApiError) as raised:
        parse_opening_spec(spec)
    assert raised.value.code == "invalid_opening_hours"
    assert says in raised.value.message


def test_time_zones_are_checked_and_spelled_as_iana_does() -> None:
    assert check_timezone("Europe/Paris") == "Europe/Paris"
    assert check_timezone(" america/new_york ") == "America/New_York"
    for bad in ("", "Mars/Olympus", "Europe", "../etc/passwd", "Europe/Paris\x00", "x" * 100):
        with pytest.raises(ApiError) as raised:
            check_timezone(bad)
        assert raised.value.code == "invalid_timezone" and "IANA" in raised.value.message


# -- the command line ------------------------------------------------------------------------------


Run = Callable[..., Awaitable[tuple[int, Any, str]]]


@pytest.fixture
def run(
    monkeypatch: pytest.MonkeyPatch, database_url: str, capsys: pytest.CaptureFixture[str]
) -> Run:
    monkeypatch.setenv("CALLTRACK_DATABASE_URL", database_url)
    monkeypatch.setenv("CALLTRACK_SECRET_KEY", "cli-test-" + "k" * 40)
    monkeypatch.setenv("CALLTRACK_CARRIER", "simulated")
    monkeypatch.setenv("CALLTRACK_LOG_LEVEL", "WARNING")
    monkeypatch.delenv("CALLTRACK_REDIS_URL", raising=False)
    original = cli_extra.register

    def register(commands: Any) -> None:
        original(commands)
        if "numbers" not in commands.choices:
            numbers_cli.register(commands)

    monkeypatch.setattr(cli_extra, "register", register)

    async def invoke(*argv: str) -> tuple[int, Any, str]:
        code = await run_cli_beside(list(argv))
        out, err = capsys.readouterr()
        return code, json.loads(out) if code == 0 else out, err

    return invoke


async def _error_code(run: Run, *argv: str) -> str:
    code, _, err = await run(*argv)
    assert code == 2, err
    return str(json.loads(err.strip().splitlines()[-1])["error"]["code"])


async def _settings_actions(database: Database, site_key: str) -> list[AuditEntry]:
    async with database.sessions() as db:
        site = await db.scalar(select(Site).where(Site.site_key == site_key))
        assert site is not None
        return list(
            await db.scalars(
                select(AuditEntry)
                .where(AuditEntry.target == f"site:{site.id}")
                .order_by(AuditEntry.id)
            )
        )


async def test_site_set_round_trip_reaches_the_snippet_and_the_widget(
    run: Run, database: Database, database_url: str, aiohttp_client: ClientFactory
) -> None:
    code, site, _ = await run(
        "site", "create", "--name", "Vélos Martin", "--domain", "velos-martin.fr",
        "--phone", "01 23 45 67 89", "--country", "FR", "--account", f"cli-{secrets.token_hex(4)}",
    )  # fmt: skip
    assert code == 0
    key = site["site_key"]

    code, shown, _ = await run("site", "set", "--site", key)
    assert code == 0
    assert shown["contact_widget"] is False and shown["opening_hours"] is None
    assert shown["opening_hours_text"] == "always" and shown["timezone"] == "Europe/Paris"

    code, shown, _ = await run(
        "site", "set", "--site", key, "--contact-widget", "on", "--opening-hours", SPEC,
        "--timezone", "america/new_york", "--hold-minutes", "45",
    )  # fmt: skip
    assert code == 0, shown
    assert shown == {
        "site_key": key,
        "hold_minutes": 45,
        "exhaustion": "overflow",
        "consent_mode": "required",
        "record_calls": False,
        "recording_notice": True,
        "whisper": True,
        "contact_widget": True,
        "opening_hours": STORED,
        "opening_hours_text": SPEC,
        "timezone": "America/New_York",
    }
    entries = await _settings_actions(database, key)
    assert [e.action for e in entries] == ["site.settings_changed"]
    assert entries[0].actor.startswith("cli")
    assert entries[0].detail["changed"] == {
        "contact_widget": [False, True],
        "opening_hours": ["always", SPEC],
        "timezone": ["Europe/Paris", "America/New_York"],
        "hold_minutes": [30, 45],
    }

    # Bad input: exit 2 with the code, and nothing changes.
    assert await _error_code(run, "site", "set", "--site", key, "--opening-hours", "mon-fry 9:00-18:00",
                       "--contact-widget", "off") == "invalid_opening_hours"  # fmt: skip
    assert await _error_code(run, "site", "set", "--site", key, "--timezone", "Mars/Olympus") == (
        "invalid_timezone"
    )
    code, shown, _ = await run("site", "set", "--site", key)
    assert code == 0 and shown["contact_widget"] is True and shown["opening_hours"] == STORED
    assert shown["timezone"] == "America/New_York"
    assert len(await _settings_actions(database, key)) == 1  # a look changes nothing

    # Monday 10:00 UTC is 05:00 in New York: closed until 09:00 there.
    app = create_app(make_settings(database_url), clock=FrozenClock(NOW))
    client = await aiohttp_client(app)
    script = await (await client.get(f"/ct.js?k={key}")).text()
    assert '"c":"http://calltrack.test/contact.js"' in script
    status = await (await client.get(f"/contact/status?k={key}&lang=en")).json()
    assert status["enabled"] is True and status["open"] is False
    assert "today at 09:00" in status["message"]

    code, shown, _ = await run(
        "site", "set", "--site", key, "--contact-widget", "off", "--opening-hours", "always"
    )
    assert code == 0 and shown["contact_widget"] is False and shown["opening_hours"] is None
    app = create_app(make_settings(database_url), clock=FrozenClock(NOW))
    client = await aiohttp_client(app)
    script = await (await client.get(f"/ct.js?k={key}")).text()
    assert "contact.js" not in script
    status = await (await client.get(f"/contact/status?k={key}")).json()
    assert status == {"enabled": False, "open": True, "message": None}
    assert len(await _settings_actions(database, key)) == 2


# -- the page ------------------------------------------------------------------------------------


@dataclass
class World:
    client: TestClient[Any, Any]
    database: Database
    site: Site
    second: Site
    foreign: Site
    users: dict[str, str]


async def _seed(database: Database) -> tuple[Site, Site, Site, dict[str, str]]:
    tag = secrets.token_hex(4)
    async with database.begin() as db:
        account = Account(name=f"shop-{tag}", created_at=NOW)
        rival = Account(name=f"rival-{tag}", created_at=NOW)
        db.add_all([account, rival])
        await db.flush()

        def site(account_id: int, name: str, settings: dict[str, Any]) -> Site:
            return Site(
                account_id=account_id, site_key="ct" + secrets.token_hex(10), name=name,
                domain="velos-martin.fr", country="FR", timezone="Europe/Paris", language="fr",
                settings=settings, created_at=NOW,
            )  # fmt: skip

        sites = (
            site(account.id, "Vélos Martin", {}),
            site(account.id, "Atelier", {"contact_widget": True}),
            site(rival.id, "Rival <b>shop</b>", {"contact_widget": True, "opening_hours": STORED}),
        )
        db.add_all(sites)
        users: dict[str, str] = {}
        for role in ("admin", "marketer", "advisor", "dpo"):
            users[role] = f"{role}-{tag}@velos-martin.fr"
            db.add(User(account_id=account.id, email=users[role], password_hash="-", role=role,
                        language="en", created_at=NOW))  # fmt: skip
        users["rival_admin"] = f"admin-{tag}@rival.fr"
        db.add(User(account_id=rival.id, email=users["rival_admin"], password_hash="-",
                    role="admin", language="en", created_at=NOW))  # fmt: skip
    return sites[0], sites[1], sites[2], users


@pytest.fixture
async def world(aiohttp_client: ClientFactory, database_url: str, database: Database) -> World:
    site, second, foreign, users = await _seed(database)
    app = create_app(make_settings(database_url), clock=FrozenClock(NOW))
    app[appkeys.EXTRAS]["workers_disabled"] = {"webhooks", "reports"}
    client = await aiohttp_client(app)
    return World(client, database, site, second, foreign, users)


async def _stored(database: Database, site_id: int) -> Site:
    async with database.sessions() as db:
        site = await db.get(Site, site_id)
        assert site is not None
        return site


async def _audit(database: Database, site_id: int) -> list[AuditEntry]:
    async with database.sessions() as db:
        return list(
            await db.scalars(
                select(AuditEntry)
                .where(AuditEntry.target == f"site:{site_id}")
                .order_by(AuditEntry.id)
            )
        )


def _form(csrf: str, site: Site, **fields: str) -> dict[str, str]:
    days = {f"hours_{d}": "" for d in ("mon", "tue", "wed", "thu", "fri", "sat", "sun")}
    return {"csrf": csrf, "site": site.site_key, "timezone": "Europe/Paris", **days, **fields}


async def test_admin_sets_hours_and_widget_and_the_site_follows_at_once(world: World) -> None:
    client, site = world.client, world.site
    csrf = await sign_in(client, world.database, world.users["admin"], NOW)
    page = await client.get(f"{BASE}?site={site.site_key}")
    html = await page.text()
    assert page.status == 200
    assert f"http://calltrack.test/ct.js?k={site.site_key}" in html  # the snippet to paste
    assert 'name="contact_widget" value="on">' in html  # unticked
    assert 'name="always_open" id="always-open" value="on" checked>' in html
    assert f'href="{BASE}" aria-current=page' in html  # the navigation link
    assert "Rival" not in html  # another account's site is not offered

    # The snippet is cached on this worker before the change.
    assert "contact.js" not in await (await client.get(f"/ct.js?k={site.site_key}")).text()

    response = await client.post(
        BASE,
        data=_form(csrf, site, contact_widget="on", timezone="america/new_york",
                   hours_mon="09:00-12:30, 14:00-18:00", hours_tue="9:00-12:30,14:00-18:00",
                   hours_wed="09:00-12:30, 14:00-18:00", hours_thu="09:00-12:30, 14:00-18:00",
                   hours_fri="14:00-18:00, 09:00-12:30", hours_sat=" 10:00 - 13:00 "),
        allow_redirects=False,
    )  # fmt: skip
    assert response.status == 303
    location = response.headers["Location"]
    assert location.startswith(f"{BASE}?site={site.site_key}") and "saved=1" in location

    stored = await _stored(world.database, site.id)
    assert stored.settings == {"contact_widget": True, "opening_hours": STORED}
    assert stored.timezone == "America/New_York"
    entries = await _audit(world.database, site.id)
    assert len(entries) == 1
    entry = entries[0]
    assert entry.action == "site.settings_changed" and entry.actor == world.users["admin"]
    assert entry.detail["changed"] == {
        "contact_widget": [False, True],
        "opening_hours": ["always", SPEC],
        "timezone": ["Europe/Paris", "America/New_York"],
    }

    # No waiting for the cache: this worker serves the new settings now.
    assert "contact.js" in await (await client.get(f"/ct.js?k={site.site_key}")).text()
    status = await (await client.get(f"/contact/status?k={site.site_key}")).json()
    assert status["enabled"] is True and status["open"] is False  # 05:00 in New York
    assert not is_open_now(stored, NOW)

    html = await (await client.get(location)).text()
    assert "Settings saved" in html
    assert 'value="09:00-12:30, 14:00-18:00"' in html and 'value="10:00-13:00"' in html
    assert 'value="America/New_York"' in html
    assert 'name="contact_widget" value="on" checked>' in html

    # Saving the same values again changes nothing and writes no audit entry.
    same = _form(csrf, site, contact_widget="on", timezone="America/New_York",
                 **{f"hours_{d}": "09:00-12:30, 14:00-18:00" for d in ("mon", "tue", "wed", "thu", "fri")},
                 hours_sat="10:00-13:00")  # fmt: skip
    response = await client.post(BASE, data=same, allow_redirects=False)
    assert response.status == 303 and "saved=0" in response.headers["Location"]
    assert len(await _audit(world.database, site.id)) == 1

    # "Always open" removes the hours whatever the day fields hold.
    response = await client.post(BASE, data={**same, "always_open": "on"}, allow_redirects=False)
    assert response.status == 303
    stored = await _stored(world.database, site.id)
    assert stored.settings == {"contact_widget": True}
    entries = await _audit(world.database, site.id)
    assert len(entries) == 2 and entries[1].detail["changed"] == {"opening_hours": [SPEC, "always"]}
    # The other site of the account was not touched.
    assert (await _stored(world.database, world.second.id)).settings == {"contact_widget": True}


async def test_bad_input_is_shown_next_to_the_field_and_nothing_is_saved(world: World) -> None:
    client, site = world.client, world.site
    csrf = await sign_in(client, world.database, world.users["admin"], NOW)
    typed = _form(csrf, site, contact_widget="on", timezone="Mars/Olympus",
                  hours_mon="09:00-18:00", hours_tue="9h-18h", hours_wed="<script>x</script>")  # fmt: skip
    response = await client.post(BASE, data=typed, allow_redirects=False)
    html = await response.text()
    assert response.status == 400
    assert "Nothing was saved" in html
    assert 'value="Mars/Olympus" autocomplete="off" spellcheck="false" aria-invalid="true"' in html
    assert re.search(r'id="timezone-error"[^>]*>Unknown time zone', html)
    assert 'value="9h-18h"' in html and 'id="hours_tue-error"' in html
    assert 'id="hours_wed-error"' in html and "&lt;script&gt;x&lt;/script&gt;" in html
    assert "<script>x" not in html
    assert 'value="09:00-18:00"' in html and 'id="hours_mon-error"' not in html
    assert 'name="contact_widget" value="on" checked>' in html  # what was typed is kept

    # No hours at all, without "always open": said once, above the days.
    response = await client.post(f"{BASE}?lang=fr", data=_form(csrf, site), allow_redirects=False)
    html = await response.text()
    assert response.status == 400 and 'id="hours-error"' in html
    assert "cochez « Toujours ouvert »" in html

    # Whatever is typed, the answer is a page, never a 500.
    for fields in ({"timezone": "x" * 5000}, {"hours_sun": "1" * 5000}, {"hours_sun": "\x00"}):
        response = await client.post(BASE, data=_form(csrf, site, **fields), allow_redirects=False)
        assert response.status == 400, fields

    stored = await _stored(world.database, site.id)
    assert stored.settings == {} and stored.timezone == "Europe/Paris"
    assert await _audit(world.database, site.id) == []


@pytest.mark.parametrize("role", ["marketer", "advisor", "dpo"])
async def test_only_admins_reach_the_page(world: World, role: str) -> None:
    client, site = world.client, world.site
    csrf = await sign_in(client, world.database, world.users[role], NOW)
    response = await client.get(BASE, allow_redirects=False)
    assert response.status == 403
    # The treatment of every admin-only page (see test_roles.py).
    assert (await response.json())["error"]["code"] == "forbidden"
    response = await client.post(
        BASE, data=_form(csrf, site, contact_widget="on", always_open="on"), allow_redirects=False
    )
    assert response.status == 403
    assert (await _stored(world.database, site.id)).settings == {}
    assert await _audit(world.database, site.id) == []
    nav = top_nav(role=role, email="x@y.z", csrf="c", lang="en", active="/dashboard")
    assert BASE not in nav


async def test_signed_out_visitors_are_sent_to_sign_in(world: World) -> None:
    response = await world.client.get(BASE, allow_redirects=False)
    assert response.status == 302 and response.headers["Location"].startswith("/login?next=")
    response = await world.client.post(BASE, data={"site": world.site.site_key},
                                       allow_redirects=False)  # fmt: skip
    assert response.status == 302


async def test_a_post_without_the_csrf_token_is_refused(world: World) -> None:
    client, site = world.client, world.site
    await sign_in(client, world.database, world.users["admin"], NOW)
    for token in (None, "", "forged-token"):
        data = _form("", site, contact_widget="on", always_open="on")
        if token is None:
            del data["csrf"]
        else:
            data["csrf"] = token
        response = await client.post(BASE, data=data, allow_redirects=False)
        assert response.status == 403
        assert (await response.json())["error"]["code"] == "csrf_failed"
    assert (await _stored(world.database, site.id)).settings == {}
    assert await _audit(world.database, site.id) == []


async def test_an_admin_cannot_see_or_change_another_accounts_site(world: World) -> None:
    client, foreign = world.client, world.foreign
    csrf = await sign_in(client, world.database, world.users["admin"], NOW)
    response = await client.get(f"{BASE}?site={foreign.site_key}")
    html = await response.text()
    assert response.status == 404 and "No such site in your account" in html
    assert "Rival" not in html and foreign.site_key not in html

    response = await client.post(
        BASE,
        data=_form(csrf, foreign, timezone="Asia/Tokyo", always_open="on"),
        allow_redirects=False,
    )
    assert response.status == 404
    stored = await _stored(world.database, foreign.id)
    assert stored.settings == {"contact_widget": True, "opening_hours": STORED}
    assert stored.timezone == "Europe/Paris"
    assert await _audit(world.database, foreign.id) == []

    # The rival's own admin does see it, and only it.
    other = TestClient(client.server)
    await other.start_server()
    try:
        await sign_in(other, world.database, world.users["rival_admin"], NOW)
        html = await (await other.get(BASE)).text()
        assert foreign.site_key in html and world.site.site_key not in html
        assert 'value="09:00-12:30, 14:00-18:00"' in html
    finally:
        await other.session.close()
