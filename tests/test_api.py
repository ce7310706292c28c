"""REST API: every answer is validated against the served OpenAPI 3.1 document (openapi-core)."""

from __future__ import annotations

import asyncio
import datetime as dt
import functools
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from openapi_core import OpenAPI
from openapi_core.testing import MockRequest, MockResponse
from openapi_spec_validator import validate
from sqlalchemy import select
from support.app import make_settings
from test_reports import NOW, Seed, seed_reports

from dashboard.api.http import ROUTES
from dashboard.api.tokens import create_token, hash_token
from dashboard.app import create_app
from dashboard.reports.models import MODELS
from tracker import appkeys
from tracker.clock import FrozenClock
from tracker.db import Database
from tracker.models import Account, ApiToken, AuditEntry, Call, ContactRequest

ClientFactory = Callable[..., Awaitable[TestClient[Any, Any]]]
HOST = "http://calltrack.test"
PERIOD = {"from": "2026-01-05", "to": "2026-01-11"}


@dataclass
class Api:
    client: TestClient[Any, Any]
    spec: OpenAPI
    seed: Seed
    tokens: dict[str, str]
    checked: set[tuple[str, str, int]]

    async def call(
        self,
        method: str,
        path: str,
        token: str | None = "read",
        *,
        params: dict[str, str] | None = None,
        body: Any = None,
        expect: int = 200,
    ) -> Any:
        """Send a request, check the status, validate the answer against the document."""
        headers = {"Authorization": f"Bearer {self.tokens.get(token, token)}"} if token else {}
        data = json.dumps(body).encode() if body is not None else None
        if data is not None:
            headers["Content-Type"] = "application/json"
        response = await self.client.request(
            method, path, params=params, data=data, headers=headers
        )
        raw = await response.read()
        assert response.status == expect, raw[:500]
        request = MockRequest(
            HOST,
            method.lower(),
            path,
            args=params or {},
            headers=headers,
            data=data or b"",
        )
        answer = MockResponse(
            raw,
            status_code=response.status,
            # A 204 has no body and so no media type to check.
            content_type=response.content_type if raw else "",
            headers=dict(response.headers),
        )
        self.spec.validate_response(request, answer)
        self.checked.add((method, path, response.status))
        return json.loads(raw) if raw else None


@pytest.fixture
async def api(
    aiohttp_client: ClientFactory, database_url: str, database: Database
) -> AsyncIterator[Api]:
    seed = await seed_reports(database)
    app = create_app(make_settings(database_url), clock=FrozenClock(NOW))
    app[appkeys.EXTRAS]["workers_disabled"] = {"webhooks", "reports"}
    client = await aiohttp_client(app)
    tokens: dict[str, str] = {}
    async with database.begin() as db:
        account = await db.get(Account, seed.account_id)
        other = await db.get(Account, seed.other_account_id)
        assert account is not None and other is not None
        for name, owner, scope, callers in [
            ("read", account, "read", False),
            ("write", account, "write", False),
            ("callers", account, "read", True),
            ("other", other, "write", True),
        ]:
            _, tokens[name] = await create_token(
                db, owner, name, scope, NOW, caller_numbers=callers
            )
    document = await (await client.get("/api/openapi.json")).json()
    yield Api(client, compiled(json.dumps(document, sort_keys=True)), seed, tokens, set())


@functools.cache
def compiled(document: str) -> OpenAPI:
    """Check the document against the OpenAPI 3.1 schema and compile it (once: seconds)."""
    spec = json.loads(document)
    validate(spec)
    return OpenAPI.from_dict(spec)


async def test_the_document_describes_every_route(api: Api) -> None:
    response = await api.client.get("/api/openapi.json")
    document = await response.json()
    assert document["openapi"].startswith("3.1")
    operations = {(m.upper(), p) for p, ops in document["paths"].items() for m in ops}
    assert operations == {(r.method, r.path) for r in ROUTES}
    for path, ops in document["paths"].items():
        for op in ops.values():
            assert op["responses"].get("401"), path


async def test_tokens_are_required_checked_and_scoped(api: Api) -> None:
    error = await api.call("GET", "/api/v1/calls", None, expect=401)
    assert error["error"]["code"] == "unauthorized"
    await api.call("GET", "/api/v1/calls", "ct_not-a-real-token", expect=401)
    refused = await api.call(
        "PATCH",
        f"/api/v1/calls/{api.seed.calls['c1']}",
        "read",
        body={"outcome_tag": "lead"},
        expect=403,
    )
    assert refused["error"]["code"] == "insufficient_scope"


async def test_sites_numbers_and_tenant_isolation(api: Api) -> None:
    sites = await api.call("GET", "/api/v1/sites")
    assert {s["id"] for s in sites["data"]} == {api.seed.site_a, api.seed.site_b}
    site = await api.call("GET", f"/api/v1/sites/{api.seed.site_a}")
    assert site["timezone"] == "Europe/Paris"
    await api.call("GET", f"/api/v1/sites/{api.seed.site_other}", expect=404)
    await api.call("GET", "/api/v1/numbers", params={"site_id": str(api.seed.site_a)})
    await api.call(
        "GET", "/api/v1/numbers", params={"site_id": str(api.seed.site_other)}, expect=404
    )
    theirs = await api.call("GET", "/api/v1/calls", "other", params=PERIOD)
    assert [c["id"] for c in theirs["data"]] == [api.seed.calls["cx"]]
    await api.call("GET", f"/api/v1/calls/{api.seed.calls['c1']}", "other", expect=404)


async def test_calls_are_paginated_masked_and_drillable(api: Api) -> None:
    first = await api.call("GET", "/api/v1/calls", params={**PERIOD, "limit": "3"})
    assert len(first["data"]) == 3 and first["next_cursor"]
    rest = await api.call(
        "GET", "/api/v1/calls", params={**PERIOD, "limit": "3", "cursor": first["next_cursor"]}
    )
    assert len(rest["data"]) == 2 and rest["next_cursor"] is None
    callers = {c["caller"] for c in first["data"] + rest["data"]}
    assert "+33 6 •• •• •• 78" in callers and "+33612345678" not in callers
    full = await api.call("GET", f"/api/v1/calls/{api.seed.calls['c1']}", "callers")
    assert full["caller"] == "+33612345678"
    linear = await api.call(
        "GET",
        "/api/v1/calls",
        params={**PERIOD, "model": "linear", "dimension": "channel", "value": "Organic Search"},
    )
    assert [(c["id"], c["credit"]) for c in linear["data"]] == [(api.seed.calls["c1"], 0.334)]
    await api.call("GET", "/api/v1/calls", params={"limit": "0"}, expect=400)
    await api.call("GET", "/api/v1/calls", params={"from": "2026-13-01"}, expect=400)
    await api.call("GET", "/api/v1/calls", params={"dimension": "channel"}, expect=400)
    await api.call("GET", "/api/v1/calls/999999999", expect=404)


async def test_call_tags_can_be_written_and_are_audited(api: Api, database: Database) -> None:
    path = f"/api/v1/calls/{api.seed.calls['c4']}"
    updated = await api.call("PATCH", path, "write", body={"outcome_tag": "lead"})
    assert updated["outcome_tag"] == "lead"
    await api.call("PATCH", path, "write", body={"outcome_tag": "won"}, expect=400)
    await api.call("PATCH", path, "write", body={"tag": "lead"}, expect=400)
    await api.call(
        "PATCH",
        f"/api/v1/calls/{api.seed.calls['cx']}",
        "write",
        body={"outcome_tag": "lead"},
        expect=404,
    )
    async with database.sessions() as db:
        call = await db.get(Call, api.seed.calls["c4"])
        assert call is not None and call.outcome_tag == "lead"
        actions = set(
            await db.scalars(
                select(AuditEntry.action).where(AuditEntry.account_id == api.seed.account_id)
            )
        )
    assert "call.tagged" in actions


async def test_sessions_with_pages_and_cart(api: Api, database: Database) -> None:
    page = await api.call(
        "GET", "/api/v1/sessions", params={**PERIOD, "site_id": str(api.seed.site_a), "limit": "4"}
    )
    assert len(page["data"]) == 4 and page["next_cursor"]
    more = await api.call(
        "GET",
        "/api/v1/sessions",
        params={**PERIOD, "site_id": str(api.seed.site_a), "cursor": page["next_cursor"]},
    )
    assert len(page["data"]) + len(more["data"]) == 6
    detail = await api.call("GET", f"/api/v1/sessions/{api.seed.sessions['s3']}")
    assert len(detail["pageviews"]) == 2 and detail["cart"]["total"] == "649.00"
    assert detail["gclid"] == "Cj0KCQiA-gclid_123" and detail["returning_visitor"] is True
    await api.call("GET", f"/api/v1/sessions/{api.seed.sessions['s3']}", "other", expect=404)
    async with database.sessions() as db:
        actors = set(
            await db.scalars(
                select(AuditEntry.actor).where(AuditEntry.action == "api.session_read")
            )
        )
    assert any(a.startswith("api-token:ct_") for a in actors)


async def test_contact_requests(api: Api, database: Database) -> None:
    async with database.begin() as db:
        db.add(
            ContactRequest(
                site_id=api.seed.site_a,
                phone_e164="+33655555555",
                kind="callback",
                status="closed",
                outcome_tag="lead",
                created_at=NOW - dt.timedelta(days=3),
                closed_at=NOW - dt.timedelta(days=3, hours=-1),
            )
        )
    listed = await api.call("GET", "/api/v1/contact-requests", params=PERIOD)
    assert [r["phone"] for r in listed["data"]] == ["+33 6 •• •• •• 55"]
    closed = await api.call(
        "GET", "/api/v1/contact-requests", "callers", params={**PERIOD, "status": "closed"}
    )
    assert closed["data"][0]["phone"] == "+33655555555"
    await api.call("GET", "/api/v1/contact-requests", params={"status": "lost"}, expect=400)


async def test_reports_distribute_the_same_total_under_every_model(api: Api) -> None:
    splits = {}
    for model in MODELS:
        report = await api.call("GET", "/api/v1/reports/channel", params={**PERIOD, "model": model})
        assert report["total"]["current"]["calls"] == 5
        assert sum(r["current"]["calls"] for r in report["rows"]) == pytest.approx(5)
        splits[model] = {r["value"]: r["current"]["calls"] for r in report["rows"]}
    assert (
        splits["first_touch"]["Organic Search"] == 1
        and splits["last_non_direct"]["Paid Search"] == 2
    )
    campaign = await api.call(
        "GET",
        "/api/v1/reports/campaign",
        params={**PERIOD, "compare": "false", "site_id": str(api.seed.site_a)},
    )
    assert campaign["previous_period"] is None
    series = await api.call("GET", "/api/v1/reports/timeseries", params=PERIOD)
    assert sum(series["calls"]) == 5 and sum(series["previous_calls"]) == 1
    await api.call("GET", "/api/v1/reports/nonsense", expect=404)
    await api.call("GET", "/api/v1/reports/channel", params={"model": "u_shaped"}, expect=400)


async def test_costs_and_webhooks(api: Api) -> None:
    imported = await api.call(
        "POST",
        "/api/v1/costs",
        "write",
        body={
            "rows": [
                {
                    "date": "2026-01-08",
                    "source": "google",
                    "medium": "cpc",
                    "campaign": "winter",
                    "cost": "40.00",
                    "currency": "EUR",
                }
            ]
        },
        expect=201,
    )
    assert imported["rows"] == 1
    report = await api.call("GET", "/api/v1/reports/channel", params=PERIOD)
    paid = next(r for r in report["rows"] if r["value"] == "Paid Search")
    assert paid["cost"] == {"EUR": "40.00"} and paid["cost_per_call"] == {"EUR": "20.00"}
    await api.call(
        "POST",
        "/api/v1/costs",
        "write",
        body={"rows": [{"date": "2026-01-08", "cost": "x", "currency": "EUR"}]},
        expect=400,
    )
    created = await api.call(
        "POST",
        "/api/v1/webhooks",
        "write",
        body={"url": "https://crm.example/hook", "events": ["call.completed"]},
        expect=201,
    )
    assert created["secret"].startswith("whsec_")
    listed = await api.call("GET", "/api/v1/webhooks")
    assert [e["id"] for e in listed["data"]] == [created["id"]] and "secret" not in listed["data"][
        0
    ]
    await api.call(
        "POST",
        "/api/v1/webhooks",
        "write",
        body={"url": "ftp://x", "events": ["call.completed"]},
        expect=400,
    )
    await api.call("DELETE", f"/api/v1/webhooks/{created['id']}", "other", expect=404)
    await api.call("DELETE", f"/api/v1/webhooks/{created['id']}", "write", expect=204)
    # Each with where from, like every audit entry (found by an audit: these had none).
    async with api.client.app[appkeys.DATABASE].sessions() as db:
        entries = await db.execute(
            select(AuditEntry.action, AuditEntry.ip_truncated).where(
                AuditEntry.action.in_(["costs.imported", "webhook.created", "webhook.deleted"])
            )
        )
        where = {action: ip for action, ip in entries}
    assert set(where) == {"costs.imported", "webhook.created", "webhook.deleted"}
    assert all(ip for ip in where.values()), where


async def test_every_operation_was_validated(api: Api) -> None:
    """Run the other scenarios' calls once more and check every operation answered."""
    await test_sites_numbers_and_tenant_isolation(api)
    await test_calls_are_paginated_masked_and_drillable(api)
    await test_reports_distribute_the_same_total_under_every_model(api)
    await test_costs_and_webhooks(api)
    await api.call("GET", f"/api/v1/sessions/{api.seed.sessions['s1']}")
    await api.call("GET", "/api/v1/sessions", params=PERIOD)
    await api.call("GET", "/api/v1/contact-requests", params=PERIOD)
    await api.call(
        "PATCH", f"/api/v1/calls/{api.seed.calls['c2']}", "write", body={"outcome_tag": None}
    )
    seen = {method for method, _, _ in api.checked}
    assert seen == {"GET", "POST", "PATCH", "DELETE"}
    templated = {(r.method, r.path) for r in ROUTES}
    assert len(templated) == len(ROUTES)


def test_token_create_prints_the_token_once_and_stores_its_hash(
    sqlite_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from support.app import in_thread

    from dashboard.cli import main

    monkeypatch.setenv("CALLTRACK_DATABASE_URL", sqlite_url)
    monkeypatch.setenv("CALLTRACK_SECRET_KEY", "cli-test-" + "k" * 40)  # no var/ file
    assert in_thread(main, ["token", "create", "--account", "nobody-here", "--scope", "read"]) == 2
    assert "unknown_account" in capsys.readouterr().err
    site = ["site", "create", "--account", "cli-acct", "--name", "Shop", "--domain", "shop.example"]
    assert in_thread(main, [*site, "--phone", "+33123456789", "--country", "FR"]) == 0
    capsys.readouterr()
    assert in_thread(main, ["token", "create", "--account", "cli-acct", "--scope", "write"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["token"].startswith("ct_") and printed["scope"] == "write"

    async def stored() -> ApiToken | None:
        database = Database(sqlite_url)
        try:
            async with database.sessions() as db:
                return await db.scalar(select(ApiToken).where(ApiToken.id == printed["id"]))
        finally:
            await database.close()

    token = in_thread(asyncio.run, stored())
    assert token is not None and token.token_hash == hash_token(printed["token"])
    assert token.prefix == printed["token"][:10]
    assert in_thread(main, ["token", "list", "--account", "cli-acct"]) == 0
    assert printed["token"] not in capsys.readouterr().out
