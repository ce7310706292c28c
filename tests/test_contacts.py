"""Contact requests: phone validation, opening hours, exclusive claims, tags, tenants, `/contact`.

Every test that touches storage runs on SQLite and PostgreSQL (the `database` fixture).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import gzip
import json
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession
from support.app import make_settings

from dashboard.app import create_app
from tracker import appkeys
from tracker.clock import FrozenClock
from tracker.contacts import (
    CLAIMED,
    CLOSED,
    OPEN,
    claim_request,
    close_request,
    create_contact_request,
    is_open_now,
    next_opening,
    open_requests,
    parse_opening_hours,
    request_summary,
    tag_call,
    tag_request,
)
from tracker.db import Database
from tracker.errors import ApiError
from tracker.models import (
    Account,
    AuditEntry,
    Call,
    Cart,
    ContactRequest,
    Site,
    TrackedSession,
    User,
)
from tracker.sites import SiteSpec, create_site, get_or_create_account
from widget.contact_http import ContactRateLimiter

ClientFactory = Callable[..., Awaitable[TestClient[Any, Any]]]
# Monday 5 January 2026, 10:00 in Paris (UTC+1).
MONDAY_10H = dt.datetime(2026, 1, 5, 9, 0, tzinfo=dt.UTC)
HOURS = {
    "mon": [["09:00", "12:30"], ["14:00", "18:00"]],
    "tue": [["09:00", "18:00"]],
    "wed": [["09:00", "18:00"]],
    "thu": [["09:00", "18:00"]],
    "fri": [["09:00", "18:00"]],
    "sat": [["10:00", "13:00"]],
}


async def create_user(
    db: AsyncSession, account: Account, email: str, role: str, clock: FrozenClock
) -> User:
    """Add a user without hashing a password: these tests never sign in (argon2 is slow)."""
    user = User(
        account_id=account.id, email=email, password_hash="-", role=role, created_at=clock.now()
    )
    db.add(user)
    await db.flush()
    return user


@dataclass
class Tenant:
    site: Site
    advisor: User
    colleague: User
    admin: User
    session: TrackedSession


async def make_tenant(
    database: Database,
    clock: FrozenClock,
    *,
    country: str = "FR",
    phone: str = "01 23 45 67 89",
    settings: dict[str, Any] | None = None,
) -> Tenant:
    """An account with a site, two advisors, an administrator and a visit with a cart."""
    tag = secrets.token_hex(4)
    async with database.begin() as db:
        account = await get_or_create_account(db, f"contacts-{tag}", clock)
        site = await create_site(
            db, account, SiteSpec("Vélos Martin", "velos-martin.fr", phone, country), clock
        )
        site.settings = {"contact_widget": True, **(settings or {})}
        users = [
            await create_user(db, account, f"{role}-{tag}@velos-martin.fr", kind, clock)
            for role, kind in (("ana", "advisor"), ("ben", "advisor"), ("root", "admin"))
        ]
        session = TrackedSession(
            id=secrets.token_hex(16),
            site_id=site.id,
            started_at=clock.now() - dt.timedelta(minutes=4),
            last_seen_at=clock.now(),
            landing_url="https://velos-martin.fr/?utm_source=google&utm_medium=cpc",
            channel="Paid Search",
            source="google",
            medium="cpc",
            current_url="https://velos-martin.fr/velos/gravel",
            current_title="Gravel",
        )
        db.add(session)
        await db.flush()
        db.add(
            Cart(
                session_id=session.id,
                site_id=site.id,
                items=[{"name": "Gravel Aventure", "sku": "VM-GRAV-02", "qty": 1, "price": 1290}],
                total=1290,
                currency="EUR",
                item_count=1,
                updated_at=clock.now(),
            )
        )
    return Tenant(site, users[0], users[1], users[2], session)


@pytest.fixture
def clock() -> FrozenClock:
    return FrozenClock(MONDAY_10H)


async def new_request(
    database: Database, tenant: Tenant, clock: FrozenClock, phone: str = "06 12 34 56 78"
) -> ContactRequest:
    async with database.begin() as db:
        return await create_contact_request(
            db, tenant.site, tenant.session.id, phone, "Quelle taille ?", "fr-FR", clock.now()
        )


# -- phone numbers -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("country", "raw", "e164"),
    [
        ("FR", "06 12 34 56 78", "+33612345678"),
        ("FR", "06.12.34.56.78", "+33612345678"),
        ("FR", "+33 (0)6 12 34 56 78", "+33612345678"),
        ("FR", "0033 6 12 34 56 78", "+33612345678"),
        ("FR", "+32 470 12 34 56", "+32470123456"),  # a Belgian visitor on a French site
        ("GB", "020 7946 0958", "+442079460958"),
        ("BE", "0470 12 34 56", "+32470123456"),
    ],
)
async def test_phone_numbers_are_read_with_the_sites_country(
    database: Database, clock: FrozenClock, country: str, raw: str, e164: str
) -> None:
    business = {"FR": "01 23 45 67 89", "GB": "020 7946 0000", "BE": "02 512 34 56"}[country]
    tenant = await make_tenant(database, clock, country=country, phone=business)
    async with database.begin() as db:
        request = await create_contact_request(db, tenant.site, None, raw, None, "en", clock.now())
    assert request.phone_e164 == e164
    assert request.status == OPEN and request.kind == "callback" and request.session_id is None


@pytest.mark.parametrize(
    ("raw", "code"),
    [("", "invalid_phone"), ("12345", "invalid_phone"), ("06 12 34", "invalid_phone"),
     ("not a number", "invalid_phone"), ("+33 6 12 34 56 78 99", "invalid_phone"),
     # Numbers the merchant would pay a surcharge or long-distance rates to call back (toll
     # fraud: found by an audit): premium rate, shared cost, far away. Said apart from a
     # mistyped number: retrying the same number will not help.
     ("0899 123 456", "uncallable_number"), ("08 36 65 65 65", "uncallable_number"),
     ("+44 909 879 0000", "uncallable_number"), ("+247 6 1234", "uncallable_number"),
     ("+1 201 555 0123", "uncallable_number")],
)  # fmt: skip
async def test_invalid_phone_numbers_are_refused(
    database: Database, clock: FrozenClock, raw: str, code: str
) -> None:
    tenant = await make_tenant(database, clock)
    async with database.begin() as db:
        with pytest.raises(ApiError) as raised:
            await create_contact_request(db, tenant.site, None, raw, None, "fr", clock.now())
    assert raised.value.code == code and raised.value.status == 400
    async with database.sessions() as db:
        count = await db.scalar(
            select(func.count()).where(ContactRequest.site_id == tenant.site.id)
        )
    assert count == 0


@pytest.mark.parametrize(
    "raw", ["+262 692 12 34 56", "+590 690 12 34 56", "+32 470 12 34 56", "+41 79 123 45 67",
            "+44 7911 123456", "0800 123 456"],
)  # fmt: skip
async def test_callback_numbers_a_french_shop_calls_are_taken(
    database: Database, clock: FrozenClock, raw: str
) -> None:
    """Overseas France (Réunion, Guadeloupe), Europe's mobiles, toll-free numbers."""
    tenant = await make_tenant(database, clock)
    async with database.begin() as db:
        request = await create_contact_request(db, tenant.site, None, raw, None, "fr", clock.now())
    assert request.phone_e164.startswith("+")


async def test_a_session_of_another_site_is_not_linked(
    database: Database, clock: FrozenClock
) -> None:
    mine = await make_tenant(database, clock)
    other = await make_tenant(database, clock)
    async with database.begin() as db:
        request = await create_contact_request(
            db, mine.site, other.session.id, "0612345678", "x" * 1000, "de-DE", clock.now()
        )
        with pytest.raises(ApiError) as raised:
            await create_contact_request(
                db, mine.site, None, "0612345678", "x" * 1001, "fr", clock.now()
            )
    assert request.session_id is None
    assert request.language == "fr"  # German is not spoken here: the site's language
    assert raised.value.code == "invalid_message"


# -- opening hours ---------------------------------------------------------------------------------


def paris_site(hours: Any) -> Site:
    return Site(
        id=1,
        country="FR",
        timezone="Europe/Paris",
        language="fr",
        settings={"opening_hours": hours},
    )


@pytest.mark.parametrize(
    ("utc", "expected"),
    [
        (dt.datetime(2026, 1, 5, 7, 59, tzinfo=dt.UTC), False),  # Monday 08:59 Paris
        (dt.datetime(2026, 1, 5, 8, 0, tzinfo=dt.UTC), True),  # Monday 09:00
        (dt.datetime(2026, 1, 5, 11, 30, tzinfo=dt.UTC), False),  # lunch, 12:30 is the end
        (dt.datetime(2026, 1, 5, 13, 0, tzinfo=dt.UTC), True),  # 14:00
        (dt.datetime(2026, 1, 5, 17, 0, tzinfo=dt.UTC), False),  # 18:00
        (dt.datetime(2026, 1, 10, 11, 0, tzinfo=dt.UTC), True),  # Saturday 12:00
        (dt.datetime(2026, 1, 11, 11, 0, tzinfo=dt.UTC), False),  # Sunday: closed
        # Summer time: 09:00 in Paris is 07:00 UTC.
        (dt.datetime(2026, 7, 6, 7, 0, tzinfo=dt.UTC), True),
        (dt.datetime(2026, 7, 6, 6, 59, tzinfo=dt.UTC), False),
    ],
)
def test_opening_hours_are_read_in_the_sites_time_zone(utc: dt.datetime, expected: bool) -> None:
    assert is_open_now(paris_site(HOURS), utc) is expected


def test_no_hours_means_always_open_and_ranges_can_run_past_midnight() -> None:
    sunday_3am = dt.datetime(2026, 1, 11, 2, 0, tzinfo=dt.UTC)
    assert is_open_now(paris_site(None), sunday_3am)
    assert is_open_now(paris_site({}), sunday_3am)
    night = {"sat": [["20:00", "04:00"]], "sun": [["00:00", "24:00"]]}
    friday_23h = dt.datetime(2026, 1, 9, 22, 0, tzinfo=dt.UTC)
    saturday_23h = dt.datetime(2026, 1, 10, 22, 0, tzinfo=dt.UTC)
    monday_3am = dt.datetime(2026, 1, 12, 2, 0, tzinfo=dt.UTC)
    assert not is_open_now(paris_site(night), friday_23h)
    assert is_open_now(paris_site(night), saturday_23h)
    assert is_open_now(paris_site(night), sunday_3am)
    assert not is_open_now(paris_site(night), monday_3am)


def test_next_opening_and_invalid_settings() -> None:
    saturday_14h = dt.datetime(2026, 1, 10, 13, 0, tzinfo=dt.UTC)
    opening = next_opening(paris_site(HOURS), saturday_14h)
    assert opening is not None and opening.isoformat() == "2026-01-12T09:00:00+01:00"
    assert next_opening(paris_site(HOURS), MONDAY_10H) is None  # open now
    bad_settings: list[Any] = [
        ["mon"],
        {"monday": []},
        {"mon": [["9h", "18h"]]},
        {"mon": [["09:00", "09:00"]]},
        {"mon": [["09:00+01:00", "18:00"]]},  # an offset would break the open/closed test
    ]
    for bad in bad_settings:
        with pytest.raises(ApiError) as raised:
            parse_opening_hours(bad)
        assert raised.value.code == "invalid_opening_hours"
    # A broken setting never turns visitors away.
    assert is_open_now(paris_site({"mon": "always"}), saturday_14h)


# -- claims ----------------------------------------------------------------------------------------


async def test_one_advisor_claims_and_a_second_cannot(
    database: Database, clock: FrozenClock
) -> None:
    tenant = await make_tenant(database, clock)
    request = await new_request(database, tenant, clock)
    async with database.begin() as db:
        claimed = await claim_request(db, request.id, tenant.advisor, clock.now())
    assert claimed.status == CLAIMED and claimed.claimed_by_user_id == tenant.advisor.id
    async with database.begin() as db:
        with pytest.raises(ApiError) as raised:
            await claim_request(db, str(request.id), tenant.colleague, clock.now())
    assert raised.value.code == "already_claimed" and raised.value.status == 409
    assert raised.value.detail["claimed_by"] == tenant.advisor.email
    # The holder clicking again (another tab) is not an error.
    async with database.begin() as db:
        again = await claim_request(db, request.id, tenant.advisor, clock.now())
    assert again.claimed_by_user_id == tenant.advisor.id
    async with database.sessions() as db:
        audited = list(
            await db.scalars(
                select(AuditEntry.user_id).where(
                    AuditEntry.action == "contact.claimed",
                    AuditEntry.target == f"contact_request:{request.id}",
                )
            )
        )
    assert audited == [tenant.advisor.id]


@pytest.mark.parametrize("request_id", [2**70, -1, 0, "12abc", "9" * 5000, 1.5, None, True])
async def test_claiming_a_request_id_no_database_can_hold_is_invalid(
    database: Database, clock: FrozenClock, request_id: Any
) -> None:
    # A console is a browser: it can send any JSON number, and 2**70 made the driver raise.
    tenant = await make_tenant(database, clock)
    with pytest.raises(ApiError) as refused:
        async with database.begin() as db:
            await claim_request(db, request_id, tenant.advisor, clock.now())
    assert refused.value.code == "invalid_request"


async def test_concurrent_claims_have_exactly_one_winner(
    database: Database, clock: FrozenClock
) -> None:
    tenant = await make_tenant(database, clock)
    async with database.begin() as db:
        account = await db.get(Account, tenant.site.account_id)
        assert account is not None
        others = [
            await create_user(
                db,
                account,
                f"adv{i}-{secrets.token_hex(3)}@velos-martin.fr",
                "advisor",
                clock,
            )
            for i in range(6)
        ]
    advisors = [tenant.advisor, tenant.colleague, *others]
    for _ in range(3):
        request = await new_request(database, tenant, clock)

        async def attempt(user: User, request_id: int = request.id) -> int | str:
            try:
                async with database.begin() as db:
                    await claim_request(db, request_id, user, clock.now())
                return user.id
            except ApiError as exc:
                return exc.code

        outcomes = await asyncio.gather(*(attempt(user) for user in advisors))
        winners = [o for o in outcomes if isinstance(o, int)]
        assert len(winners) == 1, outcomes
        assert sorted(o for o in outcomes if isinstance(o, str)) == ["already_claimed"] * (
            len(advisors) - 1
        )
        async with database.sessions() as db:
            stored = await db.get(ContactRequest, request.id)
        assert stored is not None and stored.claimed_by_user_id == winners[0]


# -- tags ------------------------------------------------------------------------------------------


async def test_tags_close_requests_and_mark_calls(database: Database, clock: FrozenClock) -> None:
    tenant = await make_tenant(database, clock)
    request = await new_request(database, tenant, clock)
    async with database.begin() as db:
        await claim_request(db, request.id, tenant.advisor, clock.now())
    async with database.begin() as db:
        with pytest.raises(ApiError) as bad:
            await tag_request(db, request.id, tenant.advisor, "great", clock.now())
        with pytest.raises(ApiError) as other:
            await tag_request(db, request.id, tenant.colleague, "sale", clock.now())
    assert bad.value.code == "invalid_tag" and other.value.code == "claimed_by_other"
    clock.advance(minutes=3)
    async with database.begin() as db:
        tagged = await tag_request(db, request.id, tenant.advisor, "sale", clock.now())
    assert (tagged.status, tagged.outcome_tag) == (CLOSED, "sale")
    assert tagged.closed_at == clock.now()
    # An administrator may correct the outcome.
    async with database.begin() as db:
        fixed = await tag_request(db, request.id, tenant.admin, "lead", clock.now())
    assert fixed.outcome_tag == "lead" and fixed.closed_at == tagged.closed_at

    # An unclaimed request tagged as spam is taken by whoever tagged it.
    spam = await new_request(database, tenant, clock, "07 81 23 45 67")
    async with database.begin() as db:
        closed = await tag_request(db, spam.id, tenant.colleague, "spam", clock.now())
    assert closed.claimed_by_user_id == tenant.colleague.id and closed.status == CLOSED
    duplicate = await new_request(database, tenant, clock, "07 81 23 45 68")
    async with database.begin() as db:
        closed = await close_request(db, duplicate.id, tenant.advisor, clock.now())
    assert closed.status == CLOSED and closed.outcome_tag is None

    async with database.begin() as db:
        call = Call(
            site_id=tenant.site.id,
            provider="simulated",
            provider_call_id="CA" + secrets.token_hex(16),
            tracking_e164="+33199001234",
            started_at=clock.now(),
            session_id=tenant.session.id,
        )
        db.add(call)
        await db.flush()
        call_id = call.id
    async with database.begin() as db:
        await tag_call(db, call_id, tenant.advisor, "no_answer", clock.now())
    async with database.sessions() as db:
        stored = await db.get(Call, call_id)
        actions = sorted(
            await db.scalars(
                select(AuditEntry.action).where(AuditEntry.account_id == tenant.site.account_id)
            )
        )
        queue = await open_requests(db, [tenant.site.id])
    assert stored is not None and stored.outcome_tag == "no_answer"
    assert actions == [
        "call.tagged",
        "contact.claimed",
        "contact.closed",
        "contact.tagged",
        "contact.tagged",
        "contact.tagged",
    ]
    assert queue == []


async def test_advisors_never_reach_another_accounts_requests_or_calls(
    database: Database, clock: FrozenClock
) -> None:
    mine = await make_tenant(database, clock)
    theirs = await make_tenant(database, clock)
    request = await new_request(database, theirs, clock)
    async with database.begin() as db:
        call = Call(
            site_id=theirs.site.id,
            provider="simulated",
            provider_call_id="CA" + secrets.token_hex(16),
            tracking_e164="+33199001235",
            started_at=clock.now(),
        )
        db.add(call)
        await db.flush()
        call_id = call.id
    attempts: list[Callable[[AsyncSession], Awaitable[object]]] = [
        lambda db: claim_request(db, request.id, mine.advisor, clock.now()),
        lambda db: tag_request(db, request.id, mine.admin, "sale", clock.now()),
        lambda db: close_request(db, request.id, mine.advisor, clock.now()),
        lambda db: tag_call(db, call_id, mine.advisor, "spam", clock.now()),
    ]
    for attempt in attempts:
        async with database.begin() as db:
            with pytest.raises(ApiError) as raised:
                await attempt(db)
        assert raised.value.status == 404, raised.value.code
    async with database.sessions() as db:
        stored = await db.get(ContactRequest, request.id)
        assert stored is not None and stored.status == OPEN
        assert await open_requests(db, [mine.site.id]) == []
        assert [r["id"] for r in await open_requests(db, [theirs.site.id])] == [request.id]


async def test_marketers_cannot_claim(database: Database, clock: FrozenClock) -> None:
    tenant = await make_tenant(database, clock)
    request = await new_request(database, tenant, clock)
    async with database.begin() as db:
        account = await db.get(Account, tenant.site.account_id)
        assert account is not None
        marketer = await create_user(
            db, account, f"m-{secrets.token_hex(3)}@velos-martin.fr", "marketer", clock
        )
    async with database.begin() as db:
        with pytest.raises(ApiError) as raised:
            await claim_request(db, request.id, marketer, clock.now())
    assert raised.value.status == 403


def test_the_summary_is_what_the_console_reads() -> None:
    request = ContactRequest(
        id=7,
        site_id=1,
        session_id="s1",
        phone_e164="+33612345678",
        message="<img src=x onerror=alert(1)>",
        language="fr",
        kind="callback",
        status=OPEN,
        created_at=MONDAY_10H,
        outside_hours=False,
    )
    summary = request_summary(request, "ctkey")
    assert summary["phone_display"] == "+33 6 12 34 56 78"
    # Data, not markup: the console renders it as text.
    assert summary["message"] == "<img src=x onerror=alert(1)>"
    assert json.loads(json.dumps(summary)) == summary


# -- POST /contact -----------------------------------------------------------------------------------


@dataclass
class Endpoint:
    client: TestClient[Any, Any]
    app: web.Application
    tenant: Tenant
    published: list[dict[str, Any]]

    async def post(self, body: Any, **headers: str) -> tuple[int, dict[str, Any], Any]:
        response = await self.client.post(
            "/contact",
            data=json.dumps(body) if not isinstance(body, bytes) else body,
            headers={"Content-Type": "text/plain;charset=UTF-8", **headers},
        )
        return response.status, await response.json(), response.headers


async def endpoint(
    aiohttp_client: ClientFactory,
    database: Database,
    database_url: str,
    clock: FrozenClock,
    settings: dict[str, Any] | None = None,
) -> Endpoint:
    tenant = await make_tenant(database, clock, settings=settings)
    app = create_app(make_settings(database_url), clock=clock)
    published: list[dict[str, Any]] = []

    async def listener(app: web.Application, site: Site, request: dict[str, Any]) -> None:
        published.append({"site_id": site.id, **request})

    app[appkeys.EXTRAS].setdefault("contact_listeners", []).append(listener)
    client = await aiohttp_client(app)
    return Endpoint(client, app, tenant, published)


async def test_contact_endpoint_stores_publishes_and_confirms(
    aiohttp_client: ClientFactory, database: Database, database_url: str, clock: FrozenClock
) -> None:
    ep = await endpoint(aiohttp_client, database, database_url, clock, {"opening_hours": HOURS})
    status, body, headers = await ep.post(
        {
            "k": ep.tenant.site.site_key,
            "s": ep.tenant.session.id,
            "phone": "06 12 34 56 78",
            "message": "Quelle taille pour 1m80 ?",
            "lang": "fr-FR",
        },
        Origin="https://velos-martin.fr",
    )
    assert status == 201, body
    assert headers["Access-Control-Allow-Origin"] == "*"
    assert body["status"] == "open" and body["outside_hours"] is False
    assert body["message"] == "Merci ! Un conseiller vous rappelle dans quelques minutes."
    async with database.sessions() as db:
        stored = await db.get(ContactRequest, body["id"])
    assert stored is not None and stored.phone_e164 == "+33612345678"
    assert stored.session_id == ep.tenant.session.id and stored.language == "fr"
    [event] = ep.published
    assert event["id"] == body["id"] and event["site"] == ep.tenant.site.site_key
    assert event["cart"]["total"] == 1290 and event["cart"]["items"][0]["sku"] == "VM-GRAV-02"
    assert event["visitor"]["channel"] == "Paid Search"


async def test_outside_hours_the_request_is_kept_and_the_visitor_told_when(
    aiohttp_client: ClientFactory, database: Database, database_url: str, clock: FrozenClock
) -> None:
    clock.set(dt.datetime(2026, 1, 10, 15, 30, tzinfo=dt.UTC))  # Saturday 16:30 in Paris
    ep = await endpoint(aiohttp_client, database, database_url, clock, {"opening_hours": HOURS})
    key = ep.tenant.site.site_key
    status, body, _ = await ep.post({"k": key, "phone": "0612345678", "lang": "fr"})
    assert status == 201 and body["outside_hours"] is True
    assert "fermés" in body["message"] and "lundi à 09:00" in body["message"]
    status, body, _ = await ep.post({"k": key, "phone": "0612345679", "lang": "en-GB"})
    assert "closed" in body["message"] and "Monday at 09:00" in body["message"]
    async with database.sessions() as db:
        flags = list(
            await db.scalars(
                select(ContactRequest.outside_hours).where(
                    ContactRequest.site_id == ep.tenant.site.id
                )
            )
        )
    assert flags == [True, True] and len(ep.published) == 2

    status_reply = await ep.client.get(f"/contact/status?k={key}&lang=fr")
    assert status_reply.headers["Access-Control-Allow-Origin"] == "*"
    info = await status_reply.json()
    assert info["open"] is False and info["enabled"] is True
    assert "lundi à 09:00" in info["message"]
    clock.set(dt.datetime(2026, 1, 12, 8, 30, tzinfo=dt.UTC))  # Monday 09:30
    assert (await (await ep.client.get(f"/contact/status?k={key}")).json())["open"] is True


async def test_contact_errors_are_localized_with_cors(
    aiohttp_client: ClientFactory, database: Database, database_url: str, clock: FrozenClock
) -> None:
    ep = await endpoint(aiohttp_client, database, database_url, clock)
    key = ep.tenant.site.site_key
    status, body, headers = await ep.post({"k": key, "phone": "12", "lang": "fr-BE"})
    assert status == 400 and headers["Access-Control-Allow-Origin"] == "*"
    assert body["error"]["code"] == "invalid_phone"
    assert body["error"]["message"].startswith("Ce numéro de téléphone")
    status, body, _ = await ep.post({"k": key, "phone": "12", "lang": "en"})
    assert body["error"]["message"].startswith("This phone number")
    status, body, _ = await ep.post({"k": "ct-unknown", "phone": "0612345678"})
    assert status == 404 and body["error"]["code"] == "unknown_site"
    status, body, _ = await ep.post(b"{not json")
    assert status == 400 and body["error"]["code"] == "invalid_json"
    status, body, _ = await ep.post(["k"])
    assert status == 400 and body["error"]["code"] == "invalid_request"
    status, body, _ = await ep.post({"k": key, "phone": "0612345678", "message": 12})
    assert status == 400 and body["error"]["code"] == "invalid_message"
    preflight = await ep.client.options("/contact")
    assert preflight.status == 204 and preflight.headers["Access-Control-Allow-Origin"] == "*"
    assert ep.published == []


async def test_a_site_without_the_widget_refuses_requests(
    aiohttp_client: ClientFactory, database: Database, database_url: str, clock: FrozenClock
) -> None:
    ep = await endpoint(aiohttp_client, database, database_url, clock, {"contact_widget": False})
    status, body, _ = await ep.post(
        {"k": ep.tenant.site.site_key, "phone": "0612345678", "lang": "fr"}
    )
    assert status == 403 and body["error"]["code"] == "contact_disabled"
    assert "rappel" in body["error"]["message"]


async def test_requests_are_rate_limited_per_address(
    aiohttp_client: ClientFactory, database: Database, database_url: str, clock: FrozenClock
) -> None:
    ep = await endpoint(aiohttp_client, database, database_url, clock)
    ep.app[appkeys.EXTRAS]["contact_limiter"] = ContactRateLimiter("secret", limit=3)
    key = ep.tenant.site.site_key
    statuses = [(await ep.post({"k": key, "phone": f"061234567{i}"}))[0] for i in range(5)]
    assert statuses == [201, 201, 201, 429, 429]
    status, body, headers = await ep.post({"k": key, "phone": "0612345670", "lang": "fr"})
    assert body["error"]["code"] == "rate_limited" and "patienter" in body["error"]["message"]
    assert headers["Access-Control-Allow-Origin"] == "*"
    # Mistyped numbers are refused before they count: the visitor can still correct one.
    other = {"X-Forwarded-For": "198.51.100.7"}
    for _ in range(5):
        status, body, _ = await ep.post({"k": key, "phone": "12"}, **other)
        assert (status, body["error"]["code"]) == (400, "invalid_phone")
    assert (await ep.post({"k": key, "phone": "0612345670"}, **other))[0] == 201
    # Another address (through a trusted proxy: loopback) is counted on its own.
    status, _, _ = await ep.post(
        {"k": key, "phone": "0612345670"}, **{"X-Forwarded-For": "203.0.113.9"}
    )
    assert status == 201


async def test_the_rate_limiter_counts_in_redis(redis_url: str, redis_prefix: str) -> None:
    from redis.asyncio import Redis

    redis = Redis.from_url(redis_url)
    try:
        limiter = ContactRateLimiter("secret", limit=2)
        results = [await limiter.allow("198.51.100.7", redis, redis_prefix) for _ in range(3)]
        other = await limiter.allow("198.51.100.8", redis, redis_prefix)
        keys = [str(k) for k in await redis.keys(f"{redis_prefix}*")]
    finally:
        for k in await redis.keys(f"{redis_prefix}*"):
            await redis.delete(k)
        await redis.aclose()
    assert results == [True, True, False] and other is True
    assert keys and not any("198.51.100" in k for k in keys)  # the address is never stored


async def test_the_widget_script_is_served_cacheable_and_cross_origin(
    aiohttp_client: ClientFactory, database_url: str
) -> None:
    client = await aiohttp_client(create_app(make_settings(database_url)))
    response = await client.get("/contact.js")
    text = await response.text()
    assert response.status == 200 and "__calltrack_contact" in text
    assert response.headers["Access-Control-Allow-Origin"] == "*"
    assert response.headers["Cache-Control"].startswith("public")
    assert response.content_type == "application/javascript"
    again = await client.get("/contact.js", headers={"If-None-Match": response.headers["ETag"]})
    assert again.status == 304
    # Gzipped for a browser that takes it (it was 11 KB uncompressed: found by an audit), under
    # an ETag of its own; not for one that does not.
    raw = await client.get(
        "/contact.js", headers={"Accept-Encoding": "gzip"}, auto_decompress=False
    )
    body = await raw.read()
    assert raw.headers["Content-Encoding"] == "gzip" and raw.headers["Vary"] == "Accept-Encoding"
    assert gzip.decompress(body).decode() == text and len(body) < len(text.encode()) / 2
    plain = await client.get("/contact.js", headers={"Accept-Encoding": "identity"})
    assert "Content-Encoding" not in plain.headers and await plain.text() == text
    assert raw.headers["ETag"] != plain.headers["ETag"]
