"""Who reaches what: a matrix of role × endpoint, caller-number masking, tenant isolation."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from support.app import make_settings
from test_reports import NOW, Seed, seed_reports, sign_in

from dashboard.app import create_app
from tracker import appkeys
from tracker.clock import FrozenClock
from tracker.db import Database
from tracker.models import Call

ClientFactory = Callable[..., Awaitable[TestClient[Any, Any]]]
ROLES = ("anonymous", "advisor", "marketer", "admin", "dpo")
Q = "from=2026-01-05&to=2026-01-11"
OK, SIGN_IN, FORBIDDEN, UNAUTHORISED = 200, 302, 403, 401

# endpoint → expected status for anonymous, advisor, marketer, admin, dpo.
MATRIX: dict[str, tuple[int, int, int, int, int]] = {
    f"/dashboard?{Q}": (SIGN_IN, FORBIDDEN, OK, OK, FORBIDDEN),
    f"/dashboard?{Q}&dim=landing&model=time_decay": (SIGN_IN, FORBIDDEN, OK, OK, FORBIDDEN),
    f"/dashboard/calls?{Q}&dim=channel&value=Paid+Search": (SIGN_IN, FORBIDDEN, OK, OK, FORBIDDEN),
    "/dashboard/calls/{c1}": (SIGN_IN, FORBIDDEN, OK, OK, FORBIDDEN),
    "/dashboard/calls/{c1}/recording": (SIGN_IN, FORBIDDEN, FORBIDDEN, 302, FORBIDDEN),
    "/dashboard/costs": (SIGN_IN, FORBIDDEN, OK, OK, FORBIDDEN),
    "/dashboard/webhooks": (SIGN_IN, FORBIDDEN, FORBIDDEN, OK, FORBIDDEN),
    f"/dashboard/export/report.csv?{Q}": (SIGN_IN, FORBIDDEN, OK, OK, FORBIDDEN),
    f"/dashboard/export/calls.csv?{Q}": (SIGN_IN, FORBIDDEN, OK, OK, FORBIDDEN),
    f"/dashboard/export/google-ads-clicks.csv?{Q}": (SIGN_IN, FORBIDDEN, OK, OK, FORBIDDEN),
    f"/dashboard/export/google-ads-calls.csv?{Q}": (SIGN_IN, FORBIDDEN, FORBIDDEN, OK, FORBIDDEN),
    "/console": (SIGN_IN, OK, FORBIDDEN, OK, FORBIDDEN),
    "/dashboard/settings": (SIGN_IN, FORBIDDEN, FORBIDDEN, OK, FORBIDDEN),
    "/dashboard/users": (SIGN_IN, FORBIDDEN, FORBIDDEN, OK, FORBIDDEN),
    "/profile": (SIGN_IN, OK, OK, OK, OK),
    # The REST API takes bearer tokens only: a signed-in browser is not a token.
    "/api/v1/calls": (UNAUTHORISED,) * 5,
    "/api/v1/reports/channel": (UNAUTHORISED,) * 5,
    "/api/openapi.json": (OK,) * 5,
}


@pytest.fixture
async def world(
    aiohttp_client: ClientFactory, database_url: str, database: Database
) -> AsyncIterator[tuple[Seed, dict[str, TestClient[Any, Any]]]]:
    seed = await seed_reports(database)
    async with database.begin() as db:
        call = await db.get(Call, seed.calls["c1"])
        assert call is not None
        call.recording_url = "https://api.twilio.com/2010-04-01/Accounts/AC1/Recordings/RE1"
    app = create_app(make_settings(database_url), clock=FrozenClock(NOW))
    app[appkeys.EXTRAS]["workers_disabled"] = {"webhooks", "reports"}
    clients: dict[str, TestClient[Any, Any]] = {}
    for role in ROLES:
        client = (
            await aiohttp_client(app) if not clients else TestClient(clients["anonymous"].server)
        )
        if role != "anonymous":
            await client.start_server()
            await sign_in(client, database, seed.users[role])
        clients[role] = client
    yield seed, clients
    for role, client in clients.items():
        if role != "anonymous":
            await client.session.close()


async def test_role_matrix(world: tuple[Seed, dict[str, TestClient[Any, Any]]]) -> None:
    seed, clients = world
    failures = []
    for template, expected in MATRIX.items():
        path = template.format(c1=seed.calls["c1"])
        for role, status in zip(ROLES, expected, strict=True):
            response = await clients[role].get(path, allow_redirects=False)
            if response.status != status:
                failures.append(f"{role} {path}: {response.status}, expected {status}")
            if role == "anonymous" and response.status == SIGN_IN:
                assert response.headers["Location"].startswith("/login?next=")
            if status == UNAUTHORISED and response.status == UNAUTHORISED:
                assert (await response.json())["error"]["code"] == "unauthorized"
    assert not failures, "\n".join(failures)


async def test_state_changing_pages_need_the_right_role_and_csrf(
    world: tuple[Seed, dict[str, TestClient[Any, Any]]],
) -> None:
    _, clients = world
    for role in ("advisor", "marketer", "dpo"):
        response = await clients[role].post(
            "/dashboard/webhooks", data={"url": "https://x.example"}, allow_redirects=False
        )
        assert response.status == FORBIDDEN, role
    response = await clients["admin"].post(
        "/dashboard/webhooks", data={"url": "https://x.example"}, allow_redirects=False
    )
    assert (
        response.status == FORBIDDEN and (await response.json())["error"]["code"] == "csrf_failed"
    )
    response = await clients["anonymous"].post("/dashboard/costs", data={}, allow_redirects=False)
    assert response.status == SIGN_IN


async def test_caller_numbers_are_masked_except_for_admins(
    world: tuple[Seed, dict[str, TestClient[Any, Any]]],
) -> None:
    seed, clients = world
    for path in (
        f"/dashboard/calls?{Q}",
        f"/dashboard/calls/{seed.calls['c1']}",
        f"/dashboard/export/calls.csv?{Q}",
    ):
        marketer = await (await clients["marketer"].get(path)).text()
        admin = await (await clients["admin"].get(path)).text()
        assert "+33612345678" not in marketer and "+33 6 •• •• •• 78" in marketer, path
        assert "+33612345678" in admin, path
    page = await (await clients["marketer"].get(f"/dashboard/calls/{seed.calls['c1']}")).text()
    assert "administrators only" in page and "/recording" not in page
    admin_page = await (await clients["admin"].get(f"/dashboard/calls/{seed.calls['c1']}")).text()
    assert f"/dashboard/calls/{seed.calls['c1']}/recording" in admin_page


async def test_no_one_reads_another_accounts_data(
    world: tuple[Seed, dict[str, TestClient[Any, Any]]],
) -> None:
    seed, clients = world
    theirs = seed.calls["cx"]
    for path in (f"/dashboard/calls/{theirs}", f"/dashboard/calls/{theirs}/recording"):
        response = await clients["admin"].get(path, allow_redirects=False)
        assert response.status == 404, path
    response = await clients["admin"].get(f"/dashboard?{Q}&site={seed.site_other}")
    assert response.status == 404
    listing = await (await clients["admin"].get(f"/dashboard/export/calls.csv?{Q}")).text()
    assert str(theirs) not in {line.split(",")[0] for line in listing.splitlines()}
    assert "+33644444444" not in listing
