"""CSV exports and imports, checked field by field: report tables, calls, Google Ads files, costs."""

from __future__ import annotations

import csv
import datetime as dt
import io
import zoneinfo
from collections.abc import Awaitable, Callable
from decimal import Decimal
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from sqlalchemy import select
from support.app import make_settings
from test_reports import NOW, PERIOD, Seed, scope_of, seed_reports, sign_in

from dashboard.app import create_app
from dashboard.reports import costs, exports, queries
from dashboard.reports.queries import CallFilter
from tracker import appkeys
from tracker.clock import FrozenClock
from tracker.db import Database
from tracker.errors import ApiError
from tracker.models import AdCost, Call

ClientFactory = Callable[..., Awaitable[TestClient[Any, Any]]]
PARIS = zoneinfo.ZoneInfo("Europe/Paris")
QUERY = {"from": "2026-01-05", "to": "2026-01-11"}


def rows_of(text: str) -> list[list[str]]:
    return list(csv.reader(io.StringIO(text.lstrip("\ufeff"))))


async def test_report_csv_matches_the_table(database: Database) -> None:
    seed = await seed_reports(database)
    async with database.sessions() as db:
        rows, total = await queries.breakdown(
            db, await scope_of(database, seed, "linear"), "channel"
        )
    table = rows_of(exports.report_csv(rows, total))
    assert table[0] == list(exports.REPORT_HEADER)
    body = {r[0]: r for r in table[1:]}
    paid = body["Paid Search"]
    assert paid[1:5] == ["1.3", "1.333", "100.0", "0.0"]
    # Talk time weighted by credit: (0.333 × 120 s + 1 × 60 s) / 1.333 = 75 s.
    assert paid[5] == "75" and paid[7] == "1" and paid[8] == "1333.00"
    # Tenths 13.33 + 3.34 + 3.33 + 3 × 10 floor to 49: the largest remainder (.34) gets the
    # missing tenth, so the column shows 1.3 + 0.4 + 0.3 + 3 = 5.0.
    assert body["Organic Search"][1:3] == ["0.4", "0.334"]
    assert body["Direct"][1:3] == ["0.3", "0.333"]
    assert body["Total"][1:3] == ["5.0", "5.000"] and body["Total"][7] == "7"
    # The rounded column adds up to the rounded total, whatever the model.
    assert sum(Decimal(r[1]) for r in table[1:-1]) == Decimal("5.0")
    assert body["Total"][13] == "1.000"


async def test_calls_csv_masks_caller_numbers_for_marketers(database: Database) -> None:
    seed = await seed_reports(database)
    async with database.sessions() as db:
        lines, _ = await queries.list_calls(db, await scope_of(database, seed), CallFilter())
    marketer = rows_of(exports.calls_csv(lines, "marketer"))
    admin = rows_of(exports.calls_csv(lines, "admin"))
    assert marketer[0] == list(exports.CALLS_HEADER)
    callers = {r[3] for r in marketer[1:]}
    assert "+33 6 •• •• •• 78" in callers and not any(c.startswith("+336") for c in callers)
    assert {r[3] for r in admin[1:]} >= {"+33612345678", "+33698765432"}
    first = next(r for r in admin[1:] if r[0] == str(seed.calls["c1"]))
    assert first[1:3] == ["Vélos Martin", "2026-01-08T11:05:00+01:00"]
    assert first[6:13] == [
        "Paid Search",
        "google",
        "cpc",
        "winter",
        "velo electrique",
        "answered",
        "120",
    ]
    assert first[13:] == ["sale", "pool-session", "1.00", "1.000"]


def _call(**values: Any) -> Call:
    return Call(
        id=values.pop("id", 1),
        site_id=1,
        provider="simulated",
        provider_call_id="CA" + "0" * 32,
        tracking_e164="+33199000001",
        method="pool-session",
        confidence=1.0,
        **values,
    )


def test_google_ads_call_conversion_file_follows_the_template() -> None:
    calls = [
        _call(
            caller_e164="+33612345678",
            started_at=dt.datetime(2026, 1, 8, 10, 5, tzinfo=dt.UTC),
            ended_at=dt.datetime(2026, 1, 8, 10, 7, 5, tzinfo=dt.UTC),
            duration_s=120,
        ),
        # Summer time: Paris is UTC+2; the end is missing, so start + duration.
        _call(
            id=2,
            caller_e164="+14155550123",
            started_at=dt.datetime(2026, 7, 1, 22, 30, tzinfo=dt.UTC),
            duration_s=61,
        ),
        _call(
            id=3,
            caller_e164=None,
            started_at=dt.datetime(2026, 7, 1, 9, 0, tzinfo=dt.UTC),
            duration_s=90,
        ),
    ]
    text = exports.google_ads_calls_csv(
        calls, PARIS, conversion_name="Phone sale", value=Decimal("12.5"), currency="EUR"
    )
    assert not text.startswith("\ufeff")
    lines = text.split("\r\n")
    assert lines[0] == "Parameters:TimeZone=Europe/Paris"
    assert (
        lines[1]
        == "Caller's Phone Number,Call Start Time,Conversion Name,Conversion Time,Conversion Value,Conversion Currency"
    )
    assert lines[2] == "+33612345678,2026-01-08 11:05:00,Phone sale,2026-01-08 11:07:05,12.50,EUR"
    assert lines[3] == "+14155550123,2026-07-02 00:30:00,Phone sale,2026-07-02 00:31:01,12.50,EUR"
    assert lines[4:] == [""]  # a withheld number cannot be matched by Google: no row


def test_google_ads_click_conversion_file_follows_the_template() -> None:
    call = _call(started_at=dt.datetime(2026, 1, 8, 10, 5, tzinfo=dt.UTC))
    text = exports.google_ads_clicks_csv(
        [(call, "Cj0KCQiA-gclid_123"), (call, '=HYPERLINK("x")')],
        PARIS,
        conversion_name="Call",
        value=Decimal("0"),
        currency="USD",
    )
    lines = text.split("\r\n")
    assert lines[0] == "Parameters:TimeZone=Europe/Paris"
    assert (
        lines[1]
        == "Google Click ID,Conversion Name,Conversion Time,Conversion Value,Conversion Currency"
    )
    assert lines[2] == "Cj0KCQiA-gclid_123,Call,2026-01-08 11:05:00,0.00,USD"
    assert lines[3:] == [""]  # a forged click id is left out


def test_cells_never_become_spreadsheet_formulas() -> None:
    assert exports.safe_cell("=SUM(A1)") == "'=SUM(A1)"
    assert exports.safe_cell("@cmd") == "'@cmd"
    assert exports.safe_cell("-12.5") == "-12.5"
    assert exports.safe_cell("+33612345678") == "+33612345678"
    assert exports.safe_cell("+33 6 •• •• •• 78") == "+33 6 •• •• •• 78"
    assert exports.safe_cell("+1+cmd|' /C calc'!A0").startswith("'")
    # Looks like a number, is arithmetic: Excel showed -4444 (a visitor's utm_campaign).
    assert exports.safe_cell("+1234-5678") == "'+1234-5678"
    assert exports.safe_cell("+33 (0)1 23-45") == "'+33 (0)1 23-45"


def test_cost_csv_is_parsed_by_column_name() -> None:
    text = (
        "Date;Source/Medium;Campaign;Cost;Currency\n"
        "2026-01-08;google / cpc;winter;40,00;eur\n"
        "2026-01-09;newsletter / email;;1 200,5;EUR\n"
    )
    parsed = costs.parse_costs_csv(text)
    assert [
        (r.day, r.channel, r.source, r.medium, r.campaign, r.cost, r.currency) for r in parsed
    ] == [
        (dt.date(2026, 1, 8), "Paid Search", "google", "cpc", "winter", Decimal("40.00"), "EUR"),
        (dt.date(2026, 1, 9), "Email", "newsletter", "email", None, Decimal("1200.50"), "EUR"),
    ]
    direct = costs.parse_costs_csv("date,channel,cost,currency\n2026-01-08,paid social,10,EUR\n")
    assert direct[0].channel == "Paid Social" and direct[0].campaign is None


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "empty"),
        ("date,cost,currency\n2026-01-08,1,EUR\n", "channel, source_medium or source and medium"),
        ("date,channel,cost,currency\n08/01/2026,Email,1,EUR\n", "line 2: date"),
        ("date,channel,cost,currency\n2026-01-08,Radio,1,EUR\n", "line 2: 'Radio'"),
        ("date,channel,cost,currency\n2026-01-08,Email,-1,EUR\n", "line 2: cost"),
        (
            "date,channel,cost,currency\n2026-01-08,Email,1,EUR\n2026-01-09,Email,1,euro\n",
            "line 3: currency",
        ),
        ("date,channel,cost,currency\n", "no data rows"),
    ],
)
def test_bad_cost_files_name_the_line(text: str, message: str) -> None:
    with pytest.raises(ApiError) as caught:
        costs.parse_costs_csv(text)
    assert message in caught.value.message


async def login(client: TestClient[Any, Any], database: Database, email: str) -> str:
    return await sign_in(client, database, email)


async def client_for(aiohttp_client: ClientFactory, database_url: str) -> TestClient[Any, Any]:
    app = create_app(make_settings(database_url), clock=FrozenClock(NOW))
    app[appkeys.EXTRAS]["workers_disabled"] = {"webhooks", "reports"}
    return await aiohttp_client(app)


async def test_cost_upload_gives_cost_per_call_and_replaces_the_same_days(
    aiohttp_client: ClientFactory, database_url: str, database: Database
) -> None:
    seed = await seed_reports(database)
    client = await client_for(aiohttp_client, database_url)
    csrf = await login(client, database, seed.users["marketer"])

    def form(text: str, token: str = csrf) -> Any:
        import aiohttp

        data = aiohttp.FormData()
        data.add_field("csrf", token)
        data.add_field("site", "")
        data.add_field("file", text.encode(), filename="spend.csv", content_type="text/csv")
        return data

    spend = "date,channel,campaign,cost,currency\n2026-01-08,Paid Search,winter,50.00,EUR\n2026-01-10,Paid Search,brand,30,EUR\n2026-01-09,Display,banner-nocalls,75,EUR\n"
    assert (await client.post("/dashboard/costs", data=form(spend, "forged"))).status == 403
    uploaded = await client.post("/dashboard/costs", data=form(spend))
    assert uploaded.status == 200 and "Rows imported: 3." in await uploaded.text()
    again = await client.post("/dashboard/costs", data=form(spend.replace("50.00", "40.00")))
    assert again.status == 200
    bad = await client.post(
        "/dashboard/costs", data=form("date,channel,cost,currency\nnope,Email,1,EUR\n")
    )
    assert bad.status == 400 and "line 2" in await bad.text()
    # A form that is not multipart (a script posting urlencoded fields) is a 400, not a 500.
    plain = await client.post("/dashboard/costs", data={"csrf": csrf, "file": "date,cost"})
    assert plain.status == 400 and (await plain.json())["error"]["code"] == "invalid_form"
    async with database.sessions() as db:
        amounts = list(
            await db.scalars(
                select(AdCost.cost).where(AdCost.account_id == seed.account_id).order_by(AdCost.day)
            )
        )
        assert amounts == [Decimal("40.00"), Decimal("75.00"), Decimal("30.00")]
        rows, total = await queries.breakdown(db, await scope_of(database, seed), "channel")
        paid = next(r for r in rows if r.value == "Paid Search")
        # Spend that brought no call is a row, and in the total (found by an audit: it vanished).
        display = next(r for r in rows if r.value == "Display")
        assert display.current.calls == 0 and display.costs == {"EUR": Decimal("75.00")}
        assert display.cost_per_call() == {} and total.costs == {"EUR": Decimal("145.00")}
        assert paid.costs == {"EUR": Decimal("70.00")} and paid.cost_per_call() == {
            "EUR": Decimal("35.00")
        }
        campaigns, _ = await queries.breakdown(db, await scope_of(database, seed), "campaign")
        winter = next(r for r in campaigns if r.value == "winter")
        assert winter.cost_per_call() == {"EUR": Decimal("40.00")}
        # Account-wide spend is not shown for a single site (it cannot be split between sites).
        one_site, _ = await queries.breakdown(
            db, await scope_of(database, seed, site=seed.site_a), "channel"
        )
        assert next(r for r in one_site if r.value == "Paid Search").costs == {}
    report = await client.get("/dashboard/export/report.csv", params={**QUERY, "dim": "channel"})
    paid_row = next(r for r in rows_of(await report.text()) if r[0] == "Paid Search")
    assert paid_row[11:13] == ["70.00 EUR", "35.00 EUR"]


async def test_export_endpoints_formats_and_rights(
    aiohttp_client: ClientFactory, database_url: str, database: Database
) -> None:
    seed: Seed = await seed_reports(database)
    client = await client_for(aiohttp_client, database_url)
    await login(client, database, seed.users["marketer"])
    for name in ("report", "calls", "daily", "heatmap", "google-ads-clicks"):
        response = await client.get(f"/dashboard/export/{name}.csv", params=QUERY)
        assert response.status == 200, name
        assert response.headers["Content-Type"].startswith("text/csv")
        assert response.headers["Content-Disposition"].startswith("attachment; filename=")
    daily = rows_of(await (await client.get("/dashboard/export/daily.csv", params=QUERY)).text())
    assert daily[0] == ["date", "calls", "previous_period_calls"] and len(daily) == 1 + PERIOD.days
    assert sum(Decimal(r[1]) for r in daily[1:]) == 5
    heat = rows_of(await (await client.get("/dashboard/export/heatmap.csv", params=QUERY)).text())
    assert heat[4][0] == "Thursday" and heat[4][12] == "1.000"  # 11 h column of Thursday
    clicks = await (
        await client.get("/dashboard/export/google-ads-clicks.csv", params=QUERY)
    ).text()
    assert (
        clicks.splitlines()[2] == "Cj0KCQiA-gclid_123,Calltrack call,2026-01-08 11:05:00,0.00,EUR"
    )
    # Full caller numbers go to Google only from an administrator.
    assert (await client.get("/dashboard/export/google-ads-calls.csv", params=QUERY)).status == 403
    await login(client, database, seed.users["admin"])
    calls = await client.get(
        "/dashboard/export/google-ads-calls.csv",
        params={**QUERY, "value": "9.99", "currency": "eur", "min_duration": "60"},
    )
    lines = (await calls.text()).splitlines()
    assert lines[0] == "Parameters:TimeZone=Europe/Paris"
    assert [line.split(",")[0] for line in lines[2:]] == ["+33612345678", "+33612345678"]
    assert all(line.endswith(",9.99,EUR") for line in lines[2:])
    bad = await client.get(
        "/dashboard/export/google-ads-calls.csv", params={**QUERY, "currency": "euros"}
    )
    assert bad.status == 400 and (await bad.json())["error"]["code"] == "invalid_currency"
