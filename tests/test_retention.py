"""Retention with an injected clock: per-site periods, bounded resumable purge, closed accounts."""

from __future__ import annotations

import datetime as dt
import itertools
import secrets
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from sqlalchemy import func, select
from support.app import make_settings

from dashboard.app import create_app
from dashboard.privacy_http import run_scheduled_purge
from tracker import appkeys
from tracker.audit import audit
from tracker.clock import FrozenClock
from tracker.db import Database
from tracker.errors import ApiError
from tracker.models import (
    Account,
    AuditEntry,
    Call,
    CarrierEvent,
    Cart,
    ContactRequest,
    ExportRecord,
    Pageview,
    PurgeCursor,
    Restriction,
    Site,
    TrackedSession,
    User,
)
from tracker.privacy import retention
from tracker.privacy.retention import months_before, purge, retention_months, set_retention
from tracker.sites import SiteSpec, create_site, get_or_create_account
from tracker.users import create_user

ClientFactory = Callable[..., Awaitable[TestClient[Any, Any]]]
NOW = dt.datetime(2026, 3, 31, 12, 0, tzinfo=dt.UTC)


def ago(months: int, days: int = 0) -> dt.datetime:
    return months_before(NOW, months) - dt.timedelta(days=days)


def test_calendar_months() -> None:
    assert months_before(NOW, 1) == dt.datetime(2026, 2, 28, 12, 0, tzinfo=dt.UTC)
    assert months_before(NOW, 13) == dt.datetime(2025, 2, 28, 12, 0, tzinfo=dt.UTC)
    assert months_before(dt.datetime(2024, 3, 31, tzinfo=dt.UTC), 1).day == 29
    assert months_before(NOW, 60) == dt.datetime(2021, 3, 31, 12, 0, tzinfo=dt.UTC)


def test_lawful_defaults_are_documented() -> None:
    defaults = {name: c.months for name, c in retention.DATA_CLASSES.items()}
    assert defaults == {
        "pageviews": 13, "sessions": 13, "carts": 13, "calls": 25, "recordings": 6,
        "contact_requests": 36, "audit_log": 60, "server_logs": 12,
    }  # fmt: skip
    for data_class in retention.DATA_CLASSES.values():
        assert data_class.basis_en and data_class.basis_fr


def test_periods_are_validated_and_stored_per_site() -> None:
    site = Site(settings={"other": 1})
    assert set_retention(site, {"pageviews": "6", "calls": 25})["pageviews"] == 6
    # Only what differs from the defaults is stored; other settings are kept.
    assert site.settings == {"other": 1, "retention": {"pageviews": 6}}
    assert retention_months(site)["pageviews"] == 6 and retention_months(site)["calls"] == 25
    for bad in ({"pageviews": 0}, {"pageviews": "x"}, {"pageviews": 121}, {"cookies": 3}):
        with pytest.raises(ApiError):
            set_retention(site, bad)


async def make_site(database: Database, *, closed_at: dt.datetime | None = None) -> Site:
    clock = FrozenClock(NOW)
    async with database.begin() as db:
        account = await get_or_create_account(db, f"ret-{secrets.token_hex(4)}", clock)
        account.closed_at = closed_at
        site = await create_site(
            db, account, SiteSpec("Vélos", "velos.fr", "+33 1 23 45 67 89", "FR"), clock
        )
        await create_user(
            db, account, f"a-{secrets.token_hex(3)}@velos.fr", "x" * 12, "admin", clock
        )
    return site


async def add_visit(database: Database, site: Site, when: dt.datetime, pages: int = 1) -> str:
    session_id = secrets.token_hex(16)
    async with database.begin() as db:
        db.add(TrackedSession(id=session_id, site_id=site.id, started_at=when, last_seen_at=when,
                              landing_url="https://velos.fr/", channel="Direct"))  # fmt: skip
        await db.flush()
        for index in range(pages):
            db.add(Pageview(site_id=site.id, session_id=session_id, url="https://velos.fr/",
                            page_id=secrets.token_hex(8),
                            viewed_at=when + dt.timedelta(seconds=index)))  # fmt: skip
        db.add(Cart(session_id=session_id, site_id=site.id, updated_at=when, items=[]))
    return session_id


async def add_call(database: Database, site: Site, when: dt.datetime, *, recorded: bool) -> int:
    sid = "CA" + secrets.token_hex(16)
    async with database.begin() as db:
        call = Call(site_id=site.id, provider="simulated", provider_call_id=sid,
                    caller_e164="+33612345678", tracking_e164="+33970000000", started_at=when,
                    recording_sid="RE" + secrets.token_hex(16) if recorded else None,
                    recording_url="https://api.twilio.com/r" if recorded else None)  # fmt: skip
        db.add(call)
        db.add(CarrierEvent(provider="simulated", provider_call_id=sid, kind="status",
                            params={"From": "+33612345678"}, received_at=when))  # fmt: skip
        if recorded:
            db.add(CarrierEvent(provider="simulated", provider_call_id=sid, kind="recording",
                                params={"RecordingSid": call.recording_sid}, received_at=when))  # fmt: skip
        await db.flush()
        return call.id


async def count(database: Database, model: Any, *where: Any) -> int:
    async with database.sessions() as db:
        return int(await db.scalar(select(func.count()).select_from(model).where(*where)) or 0)


async def test_purge_deletes_exactly_what_is_past_each_period(
    database: Database, tmp_path: Path
) -> None:
    site = await make_site(database)
    old_visit = await add_visit(database, site, ago(14), pages=3)
    kept_visit = await add_visit(database, site, ago(12), pages=2)
    old_call = await add_call(database, site, ago(26), recorded=True)
    recorded_call = await add_call(database, site, ago(7), recorded=True)
    fresh_call = await add_call(database, site, ago(1), recorded=True)
    async with database.begin() as db:
        for months in (37, 35):
            db.add(
                ContactRequest(site_id=site.id, phone_e164="+33612345678", created_at=ago(months))
            )
        for visit in (old_visit, kept_visit):
            db.add(Restriction(account_id=site.account_id, kind="session", value=visit,
                               created_at=NOW, created_by="dpo"))  # fmt: skip
        for months in (61, 59):
            await audit(db, action="privacy.find", at=ago(months), actor="dpo@velos.fr",
                        account_id=site.account_id)  # fmt: skip
        (tmp_path / "expired.zip").write_bytes(b"zip")
        db.add(ExportRecord(account_id=site.account_id, filename="expired.zip",
                            created_at=ago(1), created_by="dpo", expires_at=NOW - dt.timedelta(days=1),
                            subject_hashes=[]))  # fmt: skip

    report = await purge(database, NOW, site_ids=[site.id], batch_size=2, pause_ratio=0,
                         export_dir=tmp_path)  # fmt: skip

    assert report.deleted["pageviews"] == 3 and report.deleted["sessions"] == 1
    assert report.deleted["carts"] == 1 and report.deleted["calls"] == 1
    assert report.deleted["recordings"] == 2  # the 26- and 7-month-old calls' references
    assert report.deleted["contact_requests"] == 1 and report.deleted["audit_log"] == 1
    assert report.deleted["exports"] == 1 and not (tmp_path / "expired.zip").exists()
    assert await count(database, TrackedSession, TrackedSession.id == old_visit) == 0
    assert await count(database, TrackedSession, TrackedSession.id == kept_visit) == 1
    assert await count(database, Pageview, Pageview.session_id == kept_visit) == 2
    assert await count(database, Call, Call.id == old_call) == 0
    async with database.sessions() as db:
        recorded = await db.get(Call, recorded_call)
        fresh = await db.get(Call, fresh_call)
        assert recorded is not None and recorded.recording_sid is None and recorded.caller_e164
        assert fresh is not None and fresh.recording_sid is not None
        # The carrier's recording callbacks hold the same reference: they go with it, and only
        # those (found by an audit: they stayed until the call itself was purged).
        kinds = {
            sid: sorted(await db.scalars(
                select(CarrierEvent.kind).where(CarrierEvent.provider_call_id == sid)))
            for sid in (recorded.provider_call_id, fresh.provider_call_id)
        }  # fmt: skip
        assert kinds == {recorded.provider_call_id: ["status"],
                         fresh.provider_call_id: ["recording", "status"]}  # fmt: skip
        events = await db.scalar(
            select(func.count()).where(CarrierEvent.received_at < ago(25), CarrierEvent.params.is_not(None),
                                       CarrierEvent.provider_call_id.not_in(select(Call.provider_call_id)))
        )  # fmt: skip
        assert events == 0
    assert await count(database, ContactRequest, ContactRequest.site_id == site.id) == 1
    assert await count(database, AuditEntry, AuditEntry.account_id == site.account_id) == 1
    # A restriction naming a purged visit goes with it.
    restricted = Restriction.account_id == site.account_id
    assert await count(database, Restriction, restricted, Restriction.value == old_visit) == 0
    assert await count(database, Restriction, restricted, Restriction.value == kept_visit) == 1

    again = await purge(database, NOW, site_ids=[site.id], pause_ratio=0, export_dir=tmp_path)
    assert sum(again.deleted.values()) == 0


async def test_a_shorter_period_set_for_one_site_applies_to_it_only(database: Database) -> None:
    short, default = await make_site(database), await make_site(database)
    async with database.begin() as db:
        site = await db.get(Site, short.id)
        assert site is not None
        set_retention(site, {"pageviews": 1})
    for target in (short, default):
        await add_visit(database, target, ago(2), pages=2)
    await purge(database, NOW, site_ids=[short.id, default.id], pause_ratio=0)
    assert await count(database, Pageview, Pageview.site_id == short.id) == 0
    assert await count(database, Pageview, Pageview.site_id == default.id) == 2
    # The visit itself follows the sessions period (13 months): only its pages went.
    assert await count(database, TrackedSession, TrackedSession.site_id == short.id) == 1


async def test_purge_runs_in_bounded_batches_and_resumes_from_its_cursor(
    database: Database,
) -> None:
    site = await make_site(database)
    for day in range(5):
        await add_visit(database, site, ago(14, days=day), pages=3)  # 15 expired pageviews
    seen: list[retention.Progress] = []
    batches = 0

    def stop_after_two() -> bool:
        return batches >= 2

    def progress(p: retention.Progress) -> None:
        nonlocal batches
        seen.append(p)
        if p.data_class == "pageviews" and p.done:
            batches += 1

    first = await purge(database, NOW, site_ids=[site.id], data_classes=["pageviews"],
                        batch_size=4, pause_ratio=0, progress=progress,
                        should_stop=stop_after_two)  # fmt: skip
    assert first.interrupted and first.deleted["pageviews"] == 8 and first.batches == 2
    assert seen[0].done == 0 and seen[0].total == 15
    async with database.sessions() as db:
        cursor = await db.scalar(select(PurgeCursor).where(
            PurgeCursor.scope == f"site:{site.id}", PurgeCursor.data_class == "pageviews"))  # fmt: skip
        assert cursor is not None and cursor.finished_at is None and cursor.deleted == 8
        assert cursor.position_at is not None
    assert await count(database, Pageview, Pageview.site_id == site.id) == 7

    seen.clear()
    second = await purge(database, NOW, site_ids=[site.id], data_classes=["pageviews"],
                         batch_size=4, pause_ratio=0, progress=seen.append)  # fmt: skip
    assert not second.interrupted and second.deleted["pageviews"] == 7 and second.batches == 2
    # The resumed run continues the same count: 8 done of 15.
    assert (seen[0].done, seen[0].total) == (8, 15) and (seen[-1].done, seen[-1].total) == (15, 15)
    assert all(a.done <= b.done for a, b in itertools.pairwise(seen))
    async with database.sessions() as db:
        cursor = await db.scalar(select(PurgeCursor).where(
            PurgeCursor.scope == f"site:{site.id}", PurgeCursor.data_class == "pageviews"))  # fmt: skip
        assert cursor is not None and cursor.finished_at == NOW and cursor.deleted == 15


async def test_each_account_is_told_its_own_deletions(database: Database) -> None:
    """The purge's audit entry of each account listed every tenant's counts (found by an
    audit)."""
    mine, theirs = await make_site(database), await make_site(database)
    old = NOW - dt.timedelta(days=500)
    await add_visit(database, mine, old, pages=2)
    await add_visit(database, theirs, old, pages=5)
    report = await purge(database, NOW, site_ids=[mine.id, theirs.id], pause_ratio=0)
    assert report.deleted["pageviews"] == 7
    assert report.for_account(mine.account_id, [mine.id])["deleted"]["pageviews"] == 2
    told = report.for_account(theirs.account_id, [theirs.id])
    assert told["deleted"]["pageviews"] == 5 and told["account_deleted"] is False


@pytest.mark.parametrize("ratio", [-1.0, float("nan"), 1e9])
async def test_a_pause_ratio_out_of_range_is_refused(database: Database, ratio: float) -> None:
    with pytest.raises(ApiError) as refused:
        await purge(database, NOW, pause_ratio=ratio)
    assert refused.value.code == "invalid_pause_ratio"


async def test_webhook_deliveries_done_with_are_purged(database: Database) -> None:
    """They keep the exact body sent, a caller's number included: it outlived the purged call
    (found by an audit). Pending ones are still to be delivered."""
    from tracker.models import WebhookDelivery, WebhookEndpoint

    site = await make_site(database)
    old, recent = NOW - retention.WEBHOOK_DELIVERY_TTL - dt.timedelta(days=1), NOW
    async with database.begin() as db:
        endpoint = WebhookEndpoint(account_id=site.account_id, url="https://shop.example/hook",
                                   secret="s" * 40, events=["call.started"], created_at=old)  # fmt: skip
        db.add(endpoint)
        await db.flush()
        for status, created in (("delivered", old), ("failed", old), ("pending", old),
                                ("delivered", recent)):  # fmt: skip
            db.add(WebhookDelivery(endpoint_id=endpoint.id, account_id=site.account_id,
                                   event_id=secrets.token_hex(8), event_type="call.started",
                                   dedupe_key=secrets.token_hex(8), body='{"caller": "+336"}',
                                   status=status, created_at=created, next_attempt_at=created))  # fmt: skip
    report = await purge(database, NOW, pause_ratio=0)
    assert report.deleted["webhook_deliveries"] == 2
    async with database.sessions() as db:
        left = await db.execute(
            select(WebhookDelivery.status, WebhookDelivery.created_at).where(
                WebhookDelivery.endpoint_id == endpoint.id
            )
        )
        assert sorted(status for status, _ in left) == ["delivered", "pending"]


async def test_a_closed_accounts_data_is_all_deleted_within_90_days(database: Database) -> None:
    recent = await make_site(database, closed_at=NOW - dt.timedelta(days=10))
    closed = await make_site(database, closed_at=NOW - retention.CLOSED_ACCOUNT_GRACE)
    for site in (recent, closed):
        await add_visit(database, site, NOW - dt.timedelta(hours=1), pages=2)
        await add_call(database, site, NOW - dt.timedelta(hours=1), recorded=False)
    report = await purge(database, NOW, site_ids=[recent.id, closed.id], pause_ratio=0)
    assert report.closed_accounts == [closed.account_id]
    assert retention.CLOSED_ACCOUNT_GRACE < retention.CLOSED_ACCOUNT_DEADLINE
    async with database.sessions() as db:
        assert await db.get(Account, closed.account_id) is None
        assert await db.get(Site, closed.id) is None
        for model in (User, AuditEntry):
            assert await db.scalar(select(func.count()).select_from(model).where(
                model.account_id == closed.account_id)) == 0  # fmt: skip
        assert await db.get(Account, recent.account_id) is not None
    for table, column in ((Pageview, Pageview.site_id), (Call, Call.site_id)):
        assert await count(database, table, column == closed.id) == 0
        assert await count(database, table, column == recent.id) > 0


async def test_the_server_runs_the_purge_on_schedule(
    aiohttp_client: ClientFactory, database_url: str, database: Database, tmp_path: Path
) -> None:
    clock = FrozenClock(NOW)
    app = create_app(make_settings(database_url), clock=clock)
    app[appkeys.PRIVACY_EXPORT_DIR] = tmp_path
    client = await aiohttp_client(app)
    site = await make_site(database)
    await add_visit(database, site, ago(14), pages=2)
    report = await run_scheduled_purge(client.app)
    assert report is not None and report.deleted.get("pageviews", 0) >= 2
    assert await count(database, Pageview, Pageview.site_id == site.id) == 0
