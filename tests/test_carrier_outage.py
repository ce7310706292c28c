"""Calls while the database cannot be reached: the caller still reaches the merchant, and the
call is stored and attributed once the database answers again (telephony.spool).

The application reaches a real PostgreSQL through a forwarder that the tests cut, as a
PostgreSQL restart or failover would: connections in the pool die and new ones are refused.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import threading
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from sqlalchemy import select
from support.proxy import CuttableProxy, forward
from test_telephony_simulated import carrier_client
from test_telephony_webhooks import (
    BUSINESS,
    CALLER,
    SECRET,
    START,
    ClientFactory,
    World,
    build_world,
    sign,
    telephony_app,
    voice_params,
)

from dashboard.hub import http as hub_http
from telephony import http as telephony_http
from telephony import spool
from telephony.calls import drain_call_listeners
from telephony.http import replay_spooled
from telephony.signature import simulated_auth_token
from telephony.simulate import CallScript, ring
from tracker import appkeys
from tracker.clock import FrozenClock
from tracker.db import Database
from tracker.metrics import REGISTRY
from tracker.models import CarrierEvent
from tracker.web import unreachable

T0 = START


@pytest.fixture
async def outage(
    aiohttp_client: ClientFactory, postgresql_url: str
) -> AsyncIterator[tuple[World, CuttableProxy]]:
    """A telephony world whose application reaches PostgreSQL through a cuttable forwarder."""
    proxy, proxied = await forward(postgresql_url, 5432)
    clock = FrozenClock(T0)
    app = telephony_app(proxied, clock)
    # The tests replay by hand, to watch each step; one test runs the worker's own loop.
    app[appkeys.EXTRAS]["workers_disabled"] = {"webhooks", "reports", "spool"}
    client = await aiohttp_client(app)
    database = Database(postgresql_url, pool_size=2)  # direct: what the tests read
    try:
        world = await build_world(
            database, client, clock, provider="simulated", token=simulated_auth_token(SECRET)
        )
        yield world, proxy
    finally:
        await proxy.cut()
        await database.close()


def _urls(world: World) -> dict[str, str]:
    base = f"{world.public_url}/telephony/twilio"
    return {
        "voice_url": f"{base}/voice",
        "status_url": f"{base}/status",
        "fallback_url": f"{base}/fallback?to={quote(BUSINESS)}",
    }


async def _replay(world: World) -> int:
    """Replay as the worker does, until everything spooled is stored."""
    app = world.client.app
    spool_dir = app[appkeys.SETTINGS].spool_dir

    async def apply(entry: spool.SpooledWebhook) -> None:
        await replay_spooled(app, entry)

    applied = 0
    for _ in range(5):  # the pool's connections died with the outage: the first use may fail
        try:
            applied += await spool.replay(spool_dir, apply, unreachable)
        except Exception as exc:
            assert unreachable(exc), exc
        if spool.pending(spool_dir) == 0:
            break
    return applied


async def test_a_call_during_an_outage_rings_the_merchant_and_is_attributed_after(
    outage: tuple[World, CuttableProxy], monkeypatch: pytest.MonkeyPatch
) -> None:
    world, proxy = outage
    carrier = carrier_client(world)
    await proxy.cut()
    result = await ring(
        carrier, to=world.pool.e164, from_=CALLER, now=T0, script=CallScript(talk_seconds=42),
        **_urls(world),
    )  # fmt: skip
    sent = [(url.split("/twilio/")[1].split("?")[0], status) for url, _, status in carrier.sent]
    # The voice webhook could not reach the database; Twilio asked the fallback, which rang
    # the business line; every callback after it was kept for later, none refused.
    assert sent[0] == ("voice", 503)
    assert sent[1] == ("fallback", 200)
    assert result.dialed == BUSINESS
    assert all(status in (200, 204) for _, status in sent[1:]), sent
    assert {name for name, _ in sent} >= {"fallback", "status", "dial"}
    spool_dir = world.client.app[appkeys.SETTINGS].spool_dir
    assert spool.pending(spool_dir) == len(sent) - 1
    assert await world.call(result.call_sid) is None  # nothing could be stored yet
    health = await world.client.get("/healthz")
    assert health.status == 503
    assert (await health.json())["spooled_webhooks"] == len(sent) - 1  # what waits, for operators

    await proxy.restore()
    world.clock.advance(minutes=10)  # the outage lasted ten minutes
    published: list[tuple[str, str]] = []

    async def publish(_app: Any, _site_id: int, kind: str, data: dict[str, Any]) -> None:
        published.append((kind, data["call"]["status"]))

    monkeypatch.setattr(hub_http, "publish_site_event", publish)
    assert await _replay(world) == len(sent) - 1
    await drain_call_listeners(world.client.app)
    # Advisors get no screen-pop of a call that rang ten minutes ago, only its updates.
    assert published and {kind for kind, _ in published} == {"call.updated"}
    assert published[-1] == ("call.updated", "completed")
    assert spool.pending(spool_dir) == 0
    call = await world.call(result.call_sid)
    assert call is not None
    # Attributed as at the time of the call, to the Paid Search visitor holding the number.
    assert call.started_at == T0
    assert (call.session_id, call.channel, call.method) == (
        world.session.id,
        "Paid Search",
        "pool-session",
    )
    assert (call.status, call.outcome, call.duration_s) == ("completed", "answered", 42)
    assert call.forwarded_to_e164 == BUSINESS
    async with world.database.sessions() as db:
        events = list(
            await db.scalars(
                select(CarrierEvent).where(CarrierEvent.provider_call_id == result.call_sid)
            )
        )
    assert events and all(e.applied_at is not None for e in events)

    # Replaying again (a second worker, a restart) stores nothing twice.
    assert await _replay(world) == 0
    health = await world.client.get("/healthz")
    assert health.status == 200 and "spooled_webhooks" not in await health.json()


async def test_a_database_that_hangs_costs_the_caller_seconds_not_the_call(
    outage: tuple[World, CuttableProxy], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A network partition: connections stay open and nothing comes back. The voice webhook
    gives up after its deadline, so Twilio asks the fallback well before its own 15 s."""
    world, proxy = outage
    monkeypatch.setattr(telephony_http, "DATABASE_DEADLINE", 0.3)
    proxy.stall()
    carrier = carrier_client(world)
    # Voice and every callback wait for the deadline (plus up to 2 s to drop a dead connection)
    # each; the whole call must be through long before the 15 s after which Twilio gives up.
    async with asyncio.timeout(14):
        result = await ring(carrier, to=world.pool.e164, from_=CALLER, now=T0, **_urls(world))
    sent = [(url.split("/twilio/")[1].split("?")[0], status) for url, _, status in carrier.sent]
    assert sent[:2] == [("voice", 503), ("fallback", 200)] and result.dialed == BUSINESS
    assert all(status in (200, 204) for _, status in sent[1:]), sent  # callbacks spooled
    # A health check reports the hung database instead of hanging with it.
    async with asyncio.timeout(10):
        health = await world.client.get("/healthz")
    assert health.status == 503 and (await health.json())["database"] == "error: TimeoutError"
    proxy.flow()
    assert await _replay(world) >= 1
    call = await world.call(result.call_sid)
    assert call is not None and call.session_id == world.session.id
    # The pool is usable again: the next call goes through the voice webhook itself.
    again = await ring(
        carrier_client(world), to=world.pool.e164, from_=CALLER, now=T0, **_urls(world)
    )
    assert again.voice_status == 200 and await world.call(again.call_sid) is not None


async def test_the_worker_replays_by_itself_once_the_database_is_back(
    outage: tuple[World, CuttableProxy], monkeypatch: pytest.MonkeyPatch
) -> None:
    world, proxy = outage
    monkeypatch.setattr(spool, "REPLAY_SECONDS", 0.1)
    app = world.client.app
    app[appkeys.EXTRAS]["workers_disabled"] = set()
    contexts = app.cleanup_ctx  # run the replayer's own context, as the server starts it
    from telephony.http import _spool_ctx

    assert _spool_ctx in contexts
    await proxy.cut()
    result = await ring(
        carrier_client(world), to=world.pool.e164, from_=CALLER, now=T0, **_urls(world)
    )
    assert result.dialed == BUSINESS
    running = _spool_ctx(app)
    await running.__anext__()
    try:
        await asyncio.sleep(0.5)  # rounds while PostgreSQL is away: nothing lost, no crash
        assert await world.call(result.call_sid) is None
        await proxy.restore()
        for _ in range(100):
            if await world.call(result.call_sid) is not None:
                break
            await asyncio.sleep(0.1)
        call = await world.call(result.call_sid)
        assert call is not None and call.session_id == world.session.id
    finally:
        with pytest.raises(StopAsyncIteration):
            await running.__anext__()


async def test_the_fallback_checks_the_signature_and_needs_a_business_line(
    outage: tuple[World, CuttableProxy],
) -> None:
    world, _ = outage
    base = f"{world.public_url}/telephony/twilio/fallback"
    params = voice_params(world.pool.e164)

    async def post(url: str, signed: bool = True) -> tuple[int, str]:
        headers = {"X-Twilio-Signature": sign(url, params, world.token) if signed else "forged"}
        response = await world.client.post(
            url[len(world.public_url) :], data=params, headers=headers
        )
        return response.status, await response.text()

    assert (await post(f"{base}?to={quote(BUSINESS)}", signed=False))[0] == 403
    status, answer = await post(f"{base}?to={quote(BUSINESS)}")
    assert status == 200 and ET.fromstring(answer).findtext("Dial/Number") == BUSINESS
    for wrong in ("", "?to=not-a-number", "?to=%2B1"):
        status, answer = await post(base + wrong)
        # No line to ring: a polite apology in the number's language, then hang up.
        assert status == 200 and "Nous sommes désolés" in answer and "<Hangup" in answer
    assert "<Dial" not in answer


async def test_a_malformed_callback_is_refused_not_spooled_during_an_outage(
    outage: tuple[World, CuttableProxy],
) -> None:
    world, proxy = outage
    await proxy.cut()
    url = f"{world.public_url}/telephony/twilio/status"
    params = {"CallSid": "not-a-sid", "CallStatus": "completed"}
    response = await world.client.post(
        "/telephony/twilio/status",
        data=params,
        headers={"X-Twilio-Signature": sign(url, params, world.token)},
    )
    assert response.status == 400
    assert spool.pending(world.client.app[appkeys.SETTINGS].spool_dir) == 0


# -- the spool file itself ----------------------------------------------------------------------


def _entry(n: int) -> spool.SpooledWebhook:
    return spool.SpooledWebhook("status", "twilio", {"CallSid": f"CA{n:032x}", "n": str(n)}, T0)


async def test_writers_racing_a_replayer_lose_nothing(tmp_path: Path) -> None:
    """Four writers append while replays claim the file again and again."""
    seen: list[int] = []

    async def apply(entry: spool.SpooledWebhook) -> None:
        seen.append(int(entry.params["n"]))

    def write(start: int) -> None:
        for n in range(start, start + 250):
            spool.append(tmp_path, _entry(n))

    threads = [threading.Thread(target=write, args=(k * 1000,)) for k in range(4)]
    for thread in threads:
        thread.start()
    while any(thread.is_alive() for thread in threads):
        await spool.replay(tmp_path, apply, unreachable)
        await asyncio.sleep(0)
    for thread in threads:
        thread.join()
    await spool.replay(tmp_path, apply, unreachable)
    assert sorted(seen) == [k * 1000 + n for k in range(4) for n in range(250)]
    assert os.listdir(tmp_path) == []  # every file replayed and removed


async def test_an_outage_mid_replay_keeps_the_rest_and_bad_lines_are_set_aside(
    tmp_path: Path,
) -> None:
    def counted(outcome: str) -> float:
        return REGISTRY.get_sample_value("calltrack_carrier_spool_total", {"outcome": outcome}) or 0

    before = {outcome: counted(outcome) for outcome in ("replayed", "set_aside")}
    for n in range(3):
        spool.append(tmp_path, _entry(n))
    with (tmp_path / spool.SPOOL_FILE).open("ab") as torn:
        torn.write(b'{"kind": "status", "provi\n')  # a crash in the middle of a write
    for n in range(3, 6):
        spool.append(tmp_path, _entry(n))
    seen: list[int] = []
    down = {2}

    async def apply(entry: spool.SpooledWebhook) -> None:
        n = int(entry.params["n"])
        if n in down:
            raise ConnectionRefusedError("PostgreSQL is restarting")
        if n == 4:
            raise ValueError("a bug, not an outage")
        seen.append(n)

    with pytest.raises(ConnectionRefusedError):
        await spool.replay(tmp_path, apply, unreachable)
    assert seen == [0, 1] and spool.pending(tmp_path) == 5  # 2, the torn line, 3, 4, 5
    # What is left is kept as privately as it was written (callers' numbers).
    modes = {os.stat(tmp_path / name).st_mode & 0o777 for name in os.listdir(tmp_path)}
    assert modes == {0o600}
    down.clear()
    assert await spool.replay(tmp_path, apply, unreachable) == 3  # the two others set aside
    assert seen == [0, 1, 2, 3, 5]
    failed = [json.loads(line) for line in (tmp_path / spool.FAILED_FILE).read_text().splitlines()]
    assert [f["error"].split(":")[0] for f in failed] == ["unreadable", "ValueError"]
    assert json.loads(failed[1]["line"])["params"]["n"] == "4"  # kept for the operator
    # Operators see it in /metrics: 5 stored, 2 set aside.
    assert counted("replayed") - before["replayed"] == 5
    assert counted("set_aside") - before["set_aside"] == 2
    assert spool.pending(tmp_path) == 0


def test_set_aside_lines_are_deleted_after_their_retention_not_before(tmp_path: Path) -> None:
    """Set-aside lines hold callers' numbers: each worker deletes them after SET_ASIDE_TTL."""
    now = dt.datetime.now(dt.UTC)
    spool._set_aside(tmp_path, _entry(1).to_line(), "ValueError: a bug")  # set aside now
    failed = tmp_path / spool.FAILED_FILE
    old_moment = now - spool.SET_ASIDE_TTL - dt.timedelta(hours=1)
    old = {"line": _entry(2).to_line().decode(), "error": "ValueError: an older bug"}
    old["set_aside_at"] = old_moment.isoformat()
    # Set aside before lines said when: dated by the webhook's own arrival.
    arrived = spool.SpooledWebhook("status", "twilio", {"n": "3"}, old_moment)
    before_dates = {"line": arrived.to_line().decode(), "error": "ValueError"}
    undated = {"line": "torn", "error": "unreadable: torn"}  # says no time: kept
    with failed.open("a") as out:
        for record in (old, before_dates, undated):
            out.write(json.dumps(record) + "\n")

    assert spool.prune_set_aside(tmp_path, now) == 2
    kept = [json.loads(line) for line in failed.read_text().splitlines()]
    assert [r["error"] for r in kept] == ["ValueError: a bug", "unreadable: torn"]
    assert failed.stat().st_mode & 0o777 == 0o600
    assert spool.prune_set_aside(tmp_path, now) == 0  # nothing more to delete
    # A month later only the undated line is left; once none is left, the file goes too.
    assert spool.prune_set_aside(tmp_path, now + spool.SET_ASIDE_TTL * 2) == 1
    assert [json.loads(line) for line in failed.read_text().splitlines()] == [undated]
    failed.write_text(json.dumps({**old, "line": "x"}) + "\n")
    assert spool.prune_set_aside(tmp_path, now) == 1 and not failed.exists()
    assert spool.prune_set_aside(tmp_path, now) == 0  # no file: nothing to do


def test_a_spooled_line_keeps_everything_the_carrier_sent() -> None:
    entry = spool.SpooledWebhook(
        "voice", "twilio", {"To": "+33199001234", "From": "+33612345678", "Caller": "Zoë"}, T0
    )
    assert spool.SpooledWebhook.from_line(entry.to_line()) == entry
    with pytest.raises(ValueError):
        spool.SpooledWebhook.from_line(
            b'{"kind":"voice","provider":"twilio","params":{"a":1},'
            b'"received_at":"2026-03-02T10:00:00+00:00"}'
        )
