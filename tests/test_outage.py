"""A database or Redis that cannot be reached: a 503 that says so, and workers that carry on."""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from conftest import PG_ADMIN_URL, _pg_admin
from support.app import free_port, in_thread, make_settings
from test_webhooks_out import T0, Receiver, make_call, make_world

from dashboard import webhooks
from dashboard.app import create_app
from tracker import appkeys
from tracker.clock import FrozenClock
from tracker.db import Database, migrate_sync

ClientFactory = Callable[..., Awaitable[TestClient[Any, Any]]]
BROWSER = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0"
EVENT = {"k": "ctdeadbeef", "t": "pageview", "p": "0123456789abcdef", "u": "https://shop.example/"}


@pytest.fixture
async def receiver(aiohttp_server: Callable[..., Awaitable[TestServer]]) -> Receiver:
    """A merchant's webhook endpoint."""
    box = Receiver()
    endpoint = web.Application()
    endpoint.router.add_post("/hooks", box.handle)
    box.url = str((await aiohttp_server(endpoint)).make_url("/hooks"))
    return box


async def test_an_unreachable_database_is_a_503_that_says_when_to_retry(
    aiohttp_client: ClientFactory,
) -> None:
    # Nothing listens on a free port: connections are refused, as when PostgreSQL restarts.
    url = f"postgresql+asyncpg://postgres@127.0.0.1:{free_port()}/calltrack"
    app = create_app(make_settings(url))
    app[appkeys.EXTRAS]["workers_disabled"] = {"webhooks", "reports"}
    client = await aiohttp_client(app)
    collect = await client.post("/collect", json=EVENT, headers={"User-Agent": BROWSER})
    assert collect.status == 503
    assert collect.headers["Retry-After"] == "5"
    error = (await collect.json())["error"]
    assert error["code"] == "service_unavailable" and "database" in error["message"]
    # The snippet itself is still served (see the test below), so pages keep working.
    snippet = await client.get("/ct.js?k=ctdeadbeef")
    assert snippet.status == 200 and snippet.headers["Cache-Control"] == "public, max-age=30"
    # The snippet must be able to read the answer across origins.
    assert collect.headers["Access-Control-Allow-Origin"] == "*"
    health = await client.get("/healthz")
    assert health.status == 503 and (await health.json())["status"] == "degraded"


async def test_an_unreachable_redis_is_never_a_500(
    aiohttp_client: ClientFactory, sqlite_url: str
) -> None:
    app = create_app(make_settings(sqlite_url, redis_url=f"redis://127.0.0.1:{free_port()}/0"))
    app[appkeys.EXTRAS]["workers_disabled"] = {"webhooks", "reports"}
    client = await aiohttp_client(app)
    health = await client.get("/healthz")
    assert health.status == 503 and (await health.json())["redis"].startswith("error")
    collect = await client.post("/collect", json=EVENT, headers={"User-Agent": BROWSER})
    assert collect.status in (404, 503), await collect.text()


async def test_the_webhook_worker_outlives_a_database_that_comes_up_late(
    aiohttp_client: ClientFactory,
    receiver: Receiver,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A worker started before its database (a restart, a container started first) recovers.

    It used to read its starting point once, before its loop: that read failed and ended the
    task, so no webhook left that worker until it was restarted.
    """
    name = f"calltrack_late_{secrets.token_hex(6)}"
    base = PG_ADMIN_URL.rsplit("/", 1)[0].replace("postgresql://", "postgresql+asyncpg://", 1)
    url = f"{base}/{name}"
    caplog.set_level(logging.ERROR, logger="calltrack.webhooks")
    app = create_app(make_settings(url), clock=FrozenClock(T0))
    app[appkeys.EXTRAS]["workers_disabled"] = {"reports"}
    await aiohttp_client(app)
    try:
        for _ in range(50):
            if "webhook delivery round failed" in caplog.text:
                break
            await asyncio.sleep(0.1)
        assert "webhook delivery round failed" in caplog.text  # the database was not there
        await _pg_admin(f'CREATE DATABASE "{name}"')
        await asyncio.to_thread(in_thread, migrate_sync, url)
        database = Database(url)
        try:
            world = await make_world(database, receiver.url)
            async with database.begin() as db:
                call = make_call(world.site_id)
                db.add(call)
            await webhooks.on_call(app, call)
            for _ in range(100):
                if receiver.received:
                    break
                await asyncio.sleep(0.1)
            assert receiver.received, "the worker stopped when the database was missing"
        finally:
            await database.close()
    finally:
        await _pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


async def test_only_transient_sqlite_errors_count_as_unreachable(tmp_path: Path) -> None:
    """A locked or unopenable file is an outage (503, spooled); a schema error is a bug (500)."""
    from sqlalchemy import text
    from sqlalchemy.ext.asyncio import create_async_engine

    from tracker.web import unreachable

    async def error_of(url: str, sql: str, **options: Any) -> BaseException:
        engine = create_async_engine(url, **options)
        try:
            async with engine.begin() as connection:
                await connection.execute(text(sql))
        except Exception as exc:
            return exc
        finally:
            await engine.dispose()
        raise AssertionError("no error")

    url = f"sqlite+aiosqlite:///{tmp_path / 'ct.sqlite3'}"
    assert not unreachable(await error_of(url, "SELECT * FROM sessions"))  # never migrated
    missing = f"sqlite+aiosqlite:///{tmp_path / 'no' / 'such' / 'dir.sqlite3'}"
    assert unreachable(await error_of(missing, "SELECT 1"))
    holder = create_async_engine(url)
    try:
        async with holder.begin() as connection:
            await connection.execute(text("CREATE TABLE t (x INTEGER)"))
            await connection.execute(text("INSERT INTO t VALUES (1)"))  # holds the write lock
            locked = await error_of(url, "INSERT INTO t VALUES (2)", connect_args={"timeout": 0.1})
    finally:
        await holder.dispose()
    assert "locked" in str(locked) and unreachable(locked)


async def test_a_hung_database_holds_a_bounded_number_of_events_and_loses_none(
    aiohttp_client: ClientFactory, postgresql_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """While PostgreSQL hangs, events wait for it up to a bound; past it they get a 503 at
    once instead of piling up in memory. Every event that got its 200 is stored."""
    from sqlalchemy import func, select
    from support.proxy import forward
    from test_collect import Visitor, new_site, page_id

    from tracker import collector
    from tracker.models import Pageview

    proxy, proxied = await forward(postgresql_url, 5432)
    app = create_app(make_settings(proxied))
    app[appkeys.EXTRAS]["workers_disabled"] = {"webhooks", "reports", "spool"}
    client = await aiohttp_client(app)
    database = Database(postgresql_url, pool_size=2)
    try:
        site = await new_site(database)
        visitor = Visitor(client, site, ip="198.51.100.200")
        await visitor.view("https://velos-martin.fr/", title="Accueil")  # the visit is known
        monkeypatch.setattr(collector, "MAX_WAITING", 5)
        proxy.stall()

        async def page(n: int) -> int:
            # Every fourth is a new visitor, whose visit must be looked up in the database.
            ip = visitor.ip if n % 4 else f"198.51.100.{n + 1}"
            tab = Visitor(client, site, ip=ip)
            tab.session, tab.page = (visitor.session if n % 4 else None), page_id()
            response = await client.post(
                "/collect",
                json={"k": site.site_key, "t": "pageview", "p": tab.page, "s": tab.session,
                      "u": f"https://velos-martin.fr/p/{n}", "ti": f"P{n}"},
                headers={"User-Agent": BROWSER, "X-Forwarded-For": ip},
            )  # fmt: skip
            if response.status == 503:
                assert response.headers["Retry-After"] == "5"
                assert response.headers["Access-Control-Allow-Origin"] == "*"
            return response.status

        pending = [asyncio.create_task(page(n)) for n in range(12)]
        for _ in range(200):  # the refusals come at once; the others wait for the database
            if sum(task.done() for task in pending) >= 7:
                break
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.2)  # nothing else may finish while the database hangs
        refused = [task for task in pending if task.done()]
        # Five events wait for the database (lookups or writes); the seven others are refused
        # at once.
        assert [task.result() for task in refused] == [503] * 7
        proxy.flow()
        statuses = await asyncio.gather(*pending)
        assert statuses.count(200) == 5 and statuses.count(503) == 7
        async with database.sessions() as db:
            stored = await db.scalar(
                select(func.count()).select_from(Pageview).where(Pageview.site_id == site.id)
            )
        assert stored == 1 + 5
    finally:
        await proxy.cut()
        await database.close()


async def test_tracking_and_callback_requests_carry_on_while_redis_is_down(
    aiohttp_client: ClientFactory, sqlite_url: str
) -> None:
    """Redis holds the number pool, rate limits and the hub's streams, not the visits: while it
    is away, pageviews are stored and answered (without numbers: the page keeps the ones it
    shows), and a visitor's request to be called back is kept."""
    from sqlalchemy import select
    from test_collect import Visitor
    from test_contacts import MONDAY_10H, make_tenant

    from telephony.carrier_factory import close_carrier, create_carrier
    from telephony.signature import webhook_urls
    from tracker.models import ContactRequest, Pageview, Site
    from tracker.numbers.service import number_service_for

    clock = FrozenClock(MONDAY_10H)
    database = Database(sqlite_url)
    try:
        tenant = await make_tenant(database, clock)
        settings = make_settings(sqlite_url)
        carrier = create_carrier(settings)
        service = number_service_for(settings, None, carrier=carrier, database=database)
        async with database.begin() as db:
            site = await db.get(Site, tenant.site.id)
            assert site is not None
            await service.add_numbers(
                db, site, clock.now(), count=2, webhooks=webhook_urls("https://ct.example.eu")
            )
        await close_carrier(carrier)
        down = make_settings(sqlite_url, redis_url=f"redis://127.0.0.1:{free_port()}/0")
        app = create_app(down, clock=clock)
        app[appkeys.EXTRAS]["workers_disabled"] = {"webhooks", "reports", "spool"}
        client = await aiohttp_client(app)

        visitor = Visitor(client, tenant.site, ip="198.51.100.31")
        first = await visitor.view("https://velos-martin.fr/?utm_source=google&utm_medium=cpc")
        again = await visitor.view("https://velos-martin.fr/velos", title="Vélos")
        assert first["n"] is None and again["s"] == first["s"]  # one visit, numbers kept
        async with database.sessions() as db:
            pages = await db.scalars(select(Pageview).where(Pageview.session_id == first["s"]))
            assert [p.url for p in pages] == [
                "https://velos-martin.fr/?utm_source=google&utm_medium=cpc",
                "https://velos-martin.fr/velos",
            ]

        response = await client.post(
            "/contact",
            json={"k": tenant.site.site_key, "s": first["s"], "phone": "06 12 34 56 78"},
            headers={"User-Agent": BROWSER, "X-Forwarded-For": "198.51.100.31"},
        )
        assert response.status == 201, await response.text()
        async with database.sessions() as db:
            kept = await db.get(ContactRequest, (await response.json())["id"])
        assert kept is not None and kept.phone_e164 == "+33612345678"
    finally:
        await database.close()


async def test_the_snippet_is_served_while_the_database_is_away(
    aiohttp_client: ClientFactory, postgresql_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """ct.js is on every page of the merchant's site: a database failover must not turn it
    into an error. A site this worker knows keeps its last configuration past the cache's
    30 s; one it never saw gets the tracker with safe defaults, cached briefly."""
    import json
    import re

    from support.proxy import forward
    from test_collect import new_site

    from tracker import sitecache
    from tracker.sitecache import TTL

    proxy, proxied = await forward(postgresql_url, 5432)
    clock = FrozenClock(T0)
    app = create_app(make_settings(proxied), clock=clock)
    app[appkeys.EXTRAS]["workers_disabled"] = {"webhooks", "reports", "spool"}
    client = await aiohttp_client(app)
    database = Database(postgresql_url, pool_size=2)

    def config(body: str) -> dict[str, Any]:
        found = re.match(r"window\.__calltrack_cfg=(\{.*?\});", body)
        assert found is not None, body[:200]
        return dict(json.loads(found.group(1)))

    try:
        known, unseen = await new_site(database), await new_site(database)
        before = await client.get(f"/ct.js?k={known.site_key}")
        assert before.status == 200
        known_config = config(await before.text())
        await proxy.cut()
        clock.advance(seconds=TTL.total_seconds() + 1)  # past the cache's freshness

        stale = await client.get(f"/ct.js?k={known.site_key}")
        assert stale.status == 200 and stale.headers["Cache-Control"] == (
            "public, max-age=300, stale-while-revalidate=86400"
        )
        assert config(await stale.text()) == known_config  # business numbers included

        degraded = await client.get(f"/ct.js?k={unseen.site_key}")
        assert degraded.status == 200
        assert degraded.headers["Cache-Control"] == "public, max-age=30"
        body = await degraded.text()
        assert config(body)["k"] == unseen.site_key and "calltrack" in body
        # Collect still says 503 (nothing can be stored): the snippet sends the event again.
        refused = await client.post(
            "/collect",
            json={**EVENT, "k": known.site_key},
            headers={"User-Agent": BROWSER, "X-Forwarded-For": "198.51.100.7"},
        )
        assert refused.status == 503

        # A database that hangs instead of refusing: the stale entry after the read deadline.
        monkeypatch.setattr(sitecache, "READ_DEADLINE", 0.5)
        await proxy.restore()
        proxy.stall()
        clock.advance(seconds=TTL.total_seconds() + 1)
        started = asyncio.get_running_loop().time()
        hung = await client.get(f"/ct.js?k={known.site_key}")
        assert hung.status == 200 and config(await hung.text()) == known_config
        assert asyncio.get_running_loop().time() - started < 5
        proxy.flow()
    finally:
        await proxy.cut()
        await database.close()
