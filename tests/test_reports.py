"""Report rollups and queries on a hand-built dataset, on SQLite and PostgreSQL.

The dataset (see `seed_reports`) has hand-computed answers: three sessions of one consenting
visitor before a Paid Search call, a call without consent, a source-number call, an
unattributed call, a call on a second site, a call in the previous period and another
account's call that must never show.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import secrets
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import func, select

from dashboard.reports import rollup
from dashboard.reports.models import MODELS, UNITS_PER_CALL
from dashboard.reports.queries import (
    CallFilter,
    Period,
    Scope,
    breakdown,
    call_in_account,
    call_journey,
    daily,
    heatmap,
    list_calls,
    resolve_sites,
    tag_counts,
    totals,
)
from tracker.clock import FrozenClock
from tracker.db import Database
from tracker.errors import NotFound
from tracker.models import (
    Account,
    Call,
    Cart,
    LoginSession,
    Pageview,
    ReportCallDay,
    ReportSessionDay,
    Site,
    TrackedSession,
    User,
)
from tracker.users import hash_password

NOW = dt.datetime(2026, 1, 12, 9, 0, tzinfo=dt.UTC)
PERIOD = Period(dt.date(2026, 1, 5), dt.date(2026, 1, 11))
PASSWORD = "correct horse battery"
_PASSWORD_HASH = hash_password(PASSWORD)


def at(day: int, hour: int, minute: int = 0) -> dt.datetime:
    """An instant in January 2026 (UTC; Paris is UTC+1, so the local day is the same)."""
    return dt.datetime(2026, 1, day, hour, minute, tzinfo=dt.UTC)


@dataclass
class Seed:
    account_id: int
    other_account_id: int
    site_a: int
    site_b: int
    site_other: int
    calls: dict[str, int] = field(default_factory=dict)
    sessions: dict[str, str] = field(default_factory=dict)
    users: dict[str, str] = field(default_factory=dict)


def _session(site: int, started: dt.datetime, channel: str, **values: Any) -> TrackedSession:
    return TrackedSession(
        id=secrets.token_hex(8),
        site_id=site,
        visitor_id=values.pop("visitor", None),
        consent=values.pop("consent", False),
        started_at=started,
        last_seen_at=started + dt.timedelta(minutes=10),
        landing_url=values.pop("landing", "https://velos-martin.fr/"),
        channel=channel,
        source=values.pop("source", "(direct)"),
        medium=values.pop("medium", "(none)"),
        pageview_count=1,
        **values,
    )


def _call(site: int, started: dt.datetime, **values: Any) -> Call:
    answered = values.pop("answered", True)
    duration = values.pop("duration", 60)
    return Call(
        site_id=site,
        provider="simulated",
        provider_call_id="CA" + secrets.token_hex(16),
        direction="inbound",
        caller_e164=values.pop("caller", "+33612345678"),
        first_time_caller=values.pop("first_time", True),
        tracking_e164=values.pop("tracking", "+33199000001"),
        started_at=started,
        answered_at=started + dt.timedelta(seconds=5) if answered else None,
        ended_at=started + dt.timedelta(seconds=duration + 5),
        status="completed" if answered else "no-answer",
        outcome="answered" if answered else "missed",
        duration_s=duration if answered else 0,
        method=values.pop("method", "pool-session"),
        confidence=values.pop("confidence", 1.0),
        **values,
    )


async def seed_reports(database: Database, *, with_users: bool = True) -> Seed:
    """Create the dataset of this module (a fresh account each time)."""
    tag = secrets.token_hex(4)
    async with database.begin() as db:
        account = Account(name=f"velos-{tag}", created_at=NOW)
        other = Account(name=f"rival-{tag}", created_at=NOW)
        db.add_all([account, other])
        await db.flush()

        def site(account_id: int, name: str) -> Site:
            return Site(
                account_id=account_id,
                site_key="ct" + secrets.token_hex(10),
                name=name,
                domain="velos-martin.fr",
                country="FR",
                timezone="Europe/Paris",
                language="fr",
                created_at=NOW,
            )

        site_a, site_b, site_other = (
            site(account.id, "Vélos Martin"),
            site(account.id, "Atelier"),
            site(other.id, "Rival"),
        )
        db.add_all([site_a, site_b, site_other])
        await db.flush()
        seed = Seed(account.id, other.id, site_a.id, site_b.id, site_other.id)
        visitor = "v" + secrets.token_hex(8)
        s1 = _session(
            site_a.id,
            at(5, 10),
            "Organic Search",
            visitor=visitor,
            consent=True,
            source="google",
            medium="organic",
        )
        s2 = _session(
            site_a.id,
            at(7, 10),
            "Direct",
            visitor=visitor,
            consent=True,
            landing="https://velos-martin.fr/contact",
        )
        s3 = _session(
            site_a.id,
            at(8, 10),
            "Paid Search",
            visitor=visitor,
            consent=True,
            source="google",
            medium="cpc",
            campaign="winter",
            term="velo electrique",
            gclid="Cj0KCQiA-gclid_123",
            landing="https://velos-martin.fr/velos?gclid=Cj0KCQiA-gclid_123&utm_campaign=winter",
        )
        s4 = _session(site_a.id, at(9, 14), "Organic Social", source="facebook", medium="referral")
        s5 = _session(site_a.id, at(6, 9), "Direct")
        s6 = _session(site_a.id, at(11, 16), "Referral", source="velo-forum.fr", medium="referral")
        s7 = _session(
            site_b.id, at(9, 8), "Email", source="newsletter", medium="email", campaign="janvier"
        )
        s0 = _session(site_a.id, at(2, 10), "Direct")
        sx = _session(site_other.id, at(8, 10), "Paid Search", source="google", medium="cpc")
        db.add_all([s1, s2, s3, s4, s5, s6, s7, s0, sx])
        await db.flush()
        db.add_all(
            [
                Pageview(
                    site_id=site_a.id,
                    session_id=s3.id,
                    url=s3.landing_url,
                    title="Vélos",
                    viewed_at=at(8, 10),
                ),
                Pageview(
                    site_id=site_a.id,
                    session_id=s3.id,
                    url="https://velos-martin.fr/velos/city",
                    title="City",
                    viewed_at=at(8, 10, 2),
                ),
                Cart(
                    session_id=s3.id,
                    site_id=site_a.id,
                    items=[{"name": "Vélo City", "qty": 1, "price": 649}],
                    total=Decimal("649.00"),
                    currency="EUR",
                    item_count=1,
                    updated_at=at(8, 10, 3),
                ),
            ]
        )
        calls = {
            "c1": _call(
                site_a.id,
                at(8, 10, 5),
                session_id=s3.id,
                channel="Paid Search",
                source="google",
                medium="cpc",
                campaign="winter",
                term="velo electrique",
                duration=120,
                outcome_tag="sale",
            ),
            "c2": _call(
                site_a.id,
                at(9, 14, 10),
                session_id=s4.id,
                channel="Organic Social",
                source="facebook",
                medium="referral",
                answered=False,
                caller="+33698765432",
            ),
            "c3": _call(
                site_a.id,
                at(10, 9),
                channel="Paid Search",
                source="google",
                medium="cpc",
                campaign="brand",
                method="source-number",
                confidence=0.9,
                first_time=False,
                outcome_tag="lead",
            ),
            "c4": _call(
                site_a.id,
                at(10, 18),
                method="unattributed",
                confidence=0.0,
                duration=30,
                caller="+33611111111",
                unattributed_reason="no lease at call time",
            ),
            "c5": _call(
                site_b.id,
                at(9, 8, 20),
                session_id=s7.id,
                channel="Email",
                source="newsletter",
                medium="email",
                campaign="janvier",
                duration=45,
                caller="+33622222222",
            ),
            "c0": _call(
                site_a.id,
                at(2, 10, 5),
                session_id=s0.id,
                channel="Direct",
                source="(direct)",
                medium="(none)",
                caller="+33633333333",
            ),
            "cx": _call(
                site_other.id,
                at(8, 10, 5),
                session_id=sx.id,
                channel="Paid Search",
                source="google",
                medium="cpc",
                caller="+33644444444",
            ),
        }
        db.add_all(calls.values())
        await db.flush()
        seed.calls = {name: call.id for name, call in calls.items()}
        seed.sessions = {"s1": s1.id, "s2": s2.id, "s3": s3.id, "s4": s4.id, "s7": s7.id}
        if with_users:
            for role in ("admin", "marketer", "advisor", "dpo"):
                email = f"{role}-{tag}@velos-martin.fr"
                db.add(
                    User(
                        account_id=account.id,
                        email=email,
                        password_hash=_PASSWORD_HASH,
                        role=role,
                        language="en",
                        created_at=NOW,
                    )
                )
                seed.users[role] = email
    await rollup.refresh(
        database, FrozenClock(NOW), site_ids=[seed.site_a, seed.site_b, seed.site_other]
    )
    return seed


async def sign_in(client: Any, database: Database, email: str, now: dt.datetime = NOW) -> str:
    """Open a login session for `email` in this test client; return its CSRF token.

    The sign-in form itself is tested in test_auth.py and the browser test; argon2 takes about
    a second per password here, which a matrix of roles cannot afford.
    """
    token, csrf = secrets.token_urlsafe(32), secrets.token_urlsafe(24)
    async with database.begin() as db:
        user = await db.scalar(select(User).where(User.email == email))
        assert user is not None
        db.add(
            LoginSession(
                token_hash=hashlib.sha256(token.encode()).hexdigest(),
                user_id=user.id,
                csrf_token=csrf,
                created_at=now,
                last_seen_at=now,
                expires_at=now + dt.timedelta(hours=12),
            )
        )
    client.session.cookie_jar.update_cookies({"ct_session": token})
    return csrf


async def scope_of(
    database: Database, seed: Seed, model: str = "last_non_direct", site: int | None = None
) -> Scope:
    async with database.sessions() as db:
        sites = await resolve_sites(db, seed.account_id, site)
    return Scope(seed.account_id, sites, PERIOD, model)  # type: ignore[arg-type]


def calls_by_value(rows: list[Any]) -> dict[str, int]:
    """Map each value with calls in the period to its milli-calls."""
    return {row.value: row.current.calls for row in rows if row.current.calls}


async def test_channel_breakdown_under_each_model(database: Database) -> None:
    seed = await seed_reports(database)
    expected = {
        "first_touch": {
            "Organic Search": 1000,
            "Paid Search": 1000,
            "Organic Social": 1000,
            "(unattributed)": 1000,
            "Email": 1000,
        },
        "last_non_direct": {
            "Paid Search": 2000,
            "Organic Social": 1000,
            "(unattributed)": 1000,
            "Email": 1000,
        },
        # c1's journey is Organic Search, Direct, Paid Search: 334/333/333 by largest remainder.
        "linear": {
            "Paid Search": 1333,
            "Organic Search": 334,
            "Direct": 333,
            "Organic Social": 1000,
            "(unattributed)": 1000,
            "Email": 1000,
        },
        "position_based": {
            "Paid Search": 1400,
            "Organic Search": 400,
            "Direct": 200,
            "Organic Social": 1000,
            "(unattributed)": 1000,
            "Email": 1000,
        },
    }
    async with database.sessions() as db:
        for model, wanted in expected.items():
            rows, total = await breakdown(db, await scope_of(database, seed, model), "channel")
            assert calls_by_value(rows) == wanted, model
            assert total.current.calls == 5 * UNITS_PER_CALL
            assert total.display_tenths == 50
        rows, total = await breakdown(db, await scope_of(database, seed, "time_decay"), "channel")
        decay = calls_by_value(rows)
        # Ages 3 d 5 min, 1 d 5 min and 5 min: weights 0.7427, 0.9055, 0.9997 (sum 2.6479)
        # → 280.51, 341.95, 377.54 milli-calls; largest remainders round to 280, 342, 378.
        assert decay["Organic Search"] == 280 and decay["Direct"] == 342
        assert decay["Paid Search"] == 1000 + 378
        assert total.current.calls == 5000


async def test_every_model_gives_the_same_total_in_every_dimension(database: Database) -> None:
    seed = await seed_reports(database)
    async with database.sessions() as db:
        for dimension in rollup.DIMENSIONS:
            for model in MODELS:
                _, total = await breakdown(db, await scope_of(database, seed, model), dimension)
                assert total.current.calls == 5000, (dimension, model)
                assert total.previous.calls == 1000


async def test_metrics_sessions_and_previous_period(database: Database) -> None:
    seed = await seed_reports(database)
    async with database.sessions() as db:
        scope = await scope_of(database, seed)
        current, previous = await totals(db, scope)
        assert current.calls == 5000 and previous.calls == 1000
        assert current.answered == 4000 and current.missed == 1000
        assert current.answered_rate == 0.8 and current.missed_rate == 0.2
        assert current.average_duration == (120 + 60 + 30 + 45) / 4
        assert current.first_time == 4000
        assert current.sales == 1000 and current.leads == 1000
        assert current.sessions == 7
        assert current.per_thousand_sessions == 5 * 1000 / 7
        rows, total = await breakdown(db, scope, "channel")
        by = {r.value: r for r in rows}
        assert by["Paid Search"].current.sessions == 1
        assert by["Paid Search"].current.per_thousand_sessions == 2000.0
        assert by["Direct"].current.calls == 0 and by["Direct"].current.sessions == 2
        assert by["Direct"].previous.calls == 1000
        assert by["Referral"].current.sessions == 1
        assert total.current.sessions == 7
        assert await daily(db, scope) == [0, 0, 0, 1000, 2000, 2000, 0]
        grid = await heatmap(db, scope)
        # c1 on Thursday 8 January at 11:05 Paris time.
        assert grid[3][11] == 1000 and sum(map(sum, grid)) == 5000
        assert await tag_counts(db, scope) == {"sale": 1000, "lead": 1000, "(none)": 3000}


async def test_other_dimensions_and_site_filter(database: Database) -> None:
    seed = await seed_reports(database)
    async with database.sessions() as db:
        scope = await scope_of(database, seed)
        campaigns = calls_by_value((await breakdown(db, scope, "campaign"))[0])
        assert campaigns == {"winter": 1000, "brand": 1000, "janvier": 1000, "(not set)": 2000}
        terms = calls_by_value((await breakdown(db, scope, "term"))[0])
        assert terms["velo electrique"] == 1000
        pages = calls_by_value((await breakdown(db, scope, "landing"))[0])
        assert pages["/velos"] == 1000 and pages["(not set)"] == 2000 and pages["/"] == 2000
        sm = calls_by_value((await breakdown(db, scope, "source_medium"))[0])
        assert sm == {
            "google / cpc": 2000,
            "facebook / referral": 1000,
            "(not set)": 1000,
            "newsletter / email": 1000,
        }
        only_b = await scope_of(database, seed, site=seed.site_b)
        assert calls_by_value((await breakdown(db, only_b, "channel"))[0]) == {"Email": 1000}


async def test_session_rollup_is_the_same_on_both_backends(database: Database) -> None:
    seed = await seed_reports(database)
    async with database.sessions() as db:
        rows = await db.execute(
            select(
                ReportSessionDay.dimension,
                ReportSessionDay.value,
                func.sum(ReportSessionDay.sessions),
            )
            .where(ReportSessionDay.site_id == seed.site_a)
            .group_by(ReportSessionDay.dimension, ReportSessionDay.value)
        )
        got = {(d, v): int(n) for d, v, n in rows}
    assert got[("landing", "/velos")] == 1
    assert got[("landing", "/contact")] == 1
    assert got[("landing", "/")] == 5
    assert got[("source_medium", "google / cpc")] == 1
    assert got[("campaign", "(not set)")] == 6
    assert got[("total", "all")] == 7


async def test_drill_down_lists_the_calls_behind_a_figure(database: Database) -> None:
    seed = await seed_reports(database)
    async with database.sessions() as db:
        scope = await scope_of(database, seed, "linear")
        lines, cursor = await list_calls(db, scope, CallFilter("channel", "Organic Search"))
        assert [(line.call.id, line.credit) for line in lines] == [(seed.calls["c1"], 334)]
        assert cursor is None
        lines, _ = await list_calls(db, scope, CallFilter("channel", "Paid Search"))
        assert sorted(line.credit for line in lines) == [333, 1000]
        lines, _ = await list_calls(db, scope, CallFilter(metric="missed"))
        assert [line.call.id for line in lines] == [seed.calls["c2"]]
        lines, _ = await list_calls(db, scope, CallFilter("channel", "(unattributed)"))
        assert [line.call.id for line in lines] == [seed.calls["c4"]]
        # The same call is the "(not set)" row of source / medium, which drilled down to
        # nothing (found by an audit).
        lines, _ = await list_calls(db, scope, CallFilter("source_medium", "(not set)"))
        assert [line.call.id for line in lines] == [seed.calls["c4"]]
        lines, _ = await list_calls(db, scope, CallFilter(slot="3-11"))
        assert [line.call.id for line in lines] == [seed.calls["c1"]]
        lines, _ = await list_calls(db, scope, CallFilter(day=dt.date(2026, 1, 10)))
        assert len(lines) == 2
        first, cursor = await list_calls(db, scope, CallFilter(), limit=3)
        rest, end = await list_calls(db, scope, CallFilter(), limit=3, cursor=cursor)
        assert len(first) == 3 and len(rest) == 2 and end is None
        assert seed.calls["cx"] not in {line.call.id for line in first + rest}


async def test_call_journey_has_sessions_pages_cart_and_credits(database: Database) -> None:
    seed = await seed_reports(database)
    async with database.sessions() as db:
        journey = await call_journey(db, seed.account_id, seed.calls["c1"])
        assert [s.session.id for s in journey.sessions] == [
            seed.sessions[k] for k in ("s1", "s2", "s3")
        ]
        last = journey.sessions[-1]
        assert len(last.pageviews) == 2 and last.cart is not None and last.cart.item_count == 1
        assert [s.credits["position_based"] for s in journey.sessions] == [400, 200, 400]
        for model in MODELS:
            assert sum(s.credits[model] for s in journey.sessions) == 1000


async def test_dirty_days_are_recomputed_when_a_call_changes(database: Database) -> None:
    seed = await seed_reports(database)
    clock = FrozenClock(NOW)
    async with database.begin() as db:
        call = await db.get(Call, seed.calls["c4"])
        assert call is not None
        call.outcome_tag = "sale"
    await rollup.mark_call_dirty(database, call, clock.now())
    await rollup.refresh(database, clock, site_ids=[seed.site_a])
    async with database.sessions() as db:
        current, _ = await totals(db, await scope_of(database, seed))
        assert current.sales == 2000
        rows = await db.scalar(
            select(func.count())
            .select_from(ReportCallDay)
            .where(ReportCallDay.site_id == seed.site_other)
        )
        assert rows  # the other account has its own rollups, never in this account's reports


async def restrict_caller(db: Any, seed: Seed, call_key: str, at: dt.datetime) -> Call:
    """Restrict the caller of one of the seed's calls by phone number; return the call."""
    from tracker.models import Restriction

    call = await db.get(Call, seed.calls[call_key])
    assert call is not None and call.caller_e164
    db.add(
        Restriction(
            account_id=seed.account_id,
            kind="phone",
            value=call.caller_e164,
            created_at=at,
            created_by="dpo@velos-martin.fr",
        )
    )
    return call


async def test_a_restricted_caller_is_left_out_of_call_lists(database: Database) -> None:
    seed = await seed_reports(database)
    async with database.begin() as db:
        await restrict_caller(db, seed, "c2", dt.datetime(2026, 1, 20, tzinfo=dt.UTC))
    async with database.sessions() as db:
        scope = await scope_of(database, seed, "linear")
        lines, _ = await list_calls(db, scope, CallFilter())
        ids = {line.call.id for line in lines}
    assert seed.calls["c2"] not in ids and seed.calls["c1"] in ids
    # Nor opened by its id (the detail page, the API, the recording: found by an audit).
    async with database.sessions() as db:
        with pytest.raises(NotFound):
            await call_in_account(db, seed.account_id, seed.calls["c2"])
        with pytest.raises(NotFound):
            await call_journey(db, seed.account_id, seed.calls["c2"])
        assert (await call_in_account(db, seed.account_id, seed.calls["c1"]))[0].id == seed.calls[
            "c1"
        ]


async def test_restricting_a_caller_takes_their_call_out_of_the_totals(database: Database) -> None:
    seed = await seed_reports(database)
    async with database.sessions() as db:
        _, before = await breakdown(db, await scope_of(database, seed, "linear"), "channel")
    async with database.begin() as db:
        call = await restrict_caller(db, seed, "c1", NOW)
        await rollup.mark_calls_dirty(db, [call], NOW)
    await rollup.refresh(database, FrozenClock(NOW), site_ids=[seed.site_a, seed.site_b])
    async with database.sessions() as db:
        _, after = await breakdown(db, await scope_of(database, seed, "linear"), "channel")
    assert after.current.calls == before.current.calls - 1000


async def test_restricting_a_visitor_takes_their_visits_out_of_session_counts(
    database: Database,
) -> None:
    """Restriction goes through `mark_person_dirty`, as the privacy page and CLI do."""
    from tracker.privacy.find import Scope as PrivacyScope
    from tracker.privacy.find import SubjectQuery, find_person
    from tracker.privacy.restrict import lift_restriction, restrict_person

    seed = await seed_reports(database)

    async def sessions_by_channel() -> tuple[int, dict[str, int]]:
        async with database.sessions() as db:
            rows, total = await breakdown(db, await scope_of(database, seed), "channel")
        return total.current.sessions, {r.value: r.current.sessions for r in rows}

    total_before, before = await sessions_by_channel()
    async with database.sessions() as db:
        first = await db.get(TrackedSession, seed.sessions["s1"])
        assert first is not None and first.visitor_id
        visitor = first.visitor_id
    scope = PrivacyScope(seed.account_id, (seed.site_a, seed.site_b), "FR")
    later = NOW + dt.timedelta(minutes=1)
    async with database.begin() as db:
        person = await find_person(db, scope, SubjectQuery("visitor", visitor), "secret")
        assert {seed.sessions[k] for k in ("s1", "s2", "s3")} <= person.session_ids
        await restrict_person(db, person, actor="dpo@velos-martin.fr", now=later)
        await rollup.mark_person_dirty(db, person, later)
    # One refresh round, moments after the last one (which made every day up to date).
    await rollup.refresh(database, FrozenClock(later), site_ids=[seed.site_a, seed.site_b])
    total_after, after = await sessions_by_channel()
    assert total_after == total_before - 3
    assert after.get("Organic Search", 0) == before["Organic Search"] - 1
    assert after.get("Paid Search", 0) == before["Paid Search"] - 1
    assert after.get("Organic Social") == before["Organic Social"]

    async with database.begin() as db:
        person = await find_person(db, scope, SubjectQuery("visitor", visitor), "secret")
        await lift_restriction(db, person)
        await rollup.mark_person_dirty(db, person, later)
    await rollup.refresh(
        database, FrozenClock(later + dt.timedelta(minutes=1)), site_ids=[seed.site_a]
    )
    assert await sessions_by_channel() == (total_before, before)


def test_the_default_period_ends_on_today_of_the_sites_shown() -> None:
    """04:10 UTC on 24 November: the Paris site's today is the 24th, Samoa's the 23rd. The
    default period followed the account's first site (Samoa) and hid Paris's calls of the day
    (found by an audit)."""
    from dashboard.reports.queries import today_for
    from tracker.models import Site

    now = dt.datetime(2026, 11, 24, 4, 10, tzinfo=dt.UTC)
    samoa, paris = Site(timezone="Pacific/Pago_Pago"), Site(timezone="Europe/Paris")
    assert today_for([samoa], now) == dt.date(2026, 11, 23)
    assert today_for([paris], now) == dt.date(2026, 11, 24)
    assert today_for([samoa, paris], now) == dt.date(2026, 11, 24)
    assert today_for([], now) == dt.date(2026, 11, 24)
