"""Two real `calltrack serve` workers sharing PostgreSQL and Redis: the hub spans them."""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from support.app import free_port
from websockets.asyncio.client import ClientConnection, connect
from yarl import URL

from dashboard.hub.events import check_message
from tracker.clock import FrozenClock
from tracker.db import Database
from tracker.sites import SiteSpec, create_site, get_or_create_account
from tracker.users import create_user

ROOT = Path(__file__).resolve().parent.parent
PASSWORD = "correct horse battery"
CHROME = (
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/126.0.0.0 Safari/537.36"
)


class Worker:
    def __init__(self, process: subprocess.Popen[bytes], port: int) -> None:
        self.process = process
        self.port = port

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def _wait_ready(worker: Worker, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if worker.process.poll() is not None:
            break
        try:
            with urllib.request.urlopen(f"{worker.url}/healthz", timeout=2) as answer:
                if answer.status == 200:
                    return
        except OSError:
            time.sleep(0.2)
    worker.process.terminate()
    _, err = worker.process.communicate(timeout=10)
    pytest.fail(f"worker on {worker.port} did not start:\n{err.decode(errors='replace')[-3000:]}")


@pytest.fixture
def workers(postgresql_url: str, redis_url: str, redis_prefix: str) -> Iterator[list[Worker]]:
    env = {
        **os.environ,
        "CALLTRACK_DATABASE_URL": postgresql_url,
        "CALLTRACK_REDIS_URL": redis_url,
        "CALLTRACK_REDIS_PREFIX": redis_prefix,
        "CALLTRACK_SECRET_KEY": secrets.token_hex(32),
        "CALLTRACK_LOG_LEVEL": "WARNING",
    }
    started = []
    for _ in range(2):
        port = free_port()
        process = subprocess.Popen(
            [sys.executable, "-m", "dashboard.cli", "serve", "--port", str(port)],
            cwd=ROOT,
            env={**env, "CALLTRACK_PUBLIC_URL": f"http://127.0.0.1:{port}"},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        started.append(Worker(process, port))
    try:
        for worker in started:
            _wait_ready(worker)
        yield started
    finally:
        for worker in started:
            worker.process.terminate()
        for worker in started:
            try:
                worker.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                worker.process.kill()
            if worker.process.stderr is not None:
                worker.process.stderr.close()
        import redis

        client = redis.Redis.from_url(redis_url)
        keys = list(client.scan_iter(match=f"{redis_prefix}*"))
        if keys:
            client.delete(*keys)
        client.close()


async def receive(ws: ClientConnection, within: float = 10) -> dict[str, Any]:
    while True:
        message = json.loads(await asyncio.wait_for(ws.recv(), within))
        check_message(message)
        if message["type"] != "ping":
            return dict(message)


async def command(ws: ClientConnection, message_id: int, type_: str, **payload: Any) -> Any:
    await ws.send(json.dumps({"id": message_id, "type": type_, **payload}))
    reply = await receive(ws)
    assert reply["type"] == "result" and reply["id"] == message_id and reply["success"], reply
    return reply["result"]


async def collect(http: aiohttp.ClientSession, worker: Worker, site_key: str, title: str) -> None:
    body = {"k": site_key, "t": "pageview", "p": secrets.token_hex(8), "ti": title}
    body["u"] = "https://velos-martin.fr/"
    async with http.post(
        f"{worker.url}/collect", data=json.dumps(body), headers={"User-Agent": CHROME}
    ) as response:
        assert response.status == 200, await response.text()


async def test_a_console_on_one_worker_sees_events_of_another_and_resumes_anywhere(
    workers: list[Worker], postgresql_url: str
) -> None:
    a, b = workers
    account = f"acct-{secrets.token_hex(4)}"
    email = f"advisor-{secrets.token_hex(4)}@velos-martin.fr"
    database = Database(postgresql_url)
    try:
        async with database.begin() as db:
            owner = await get_or_create_account(db, account, FrozenClock())
            site = await create_site(
                db,
                owner,
                SiteSpec(
                    name="Vélos", domain="velos-martin.fr", phone="+33123456789", country="FR"
                ),
            )
            await create_user(db, owner, email, PASSWORD, "advisor", FrozenClock())
            site_key = site.site_key
    finally:
        await database.close()

    jar = aiohttp.CookieJar(unsafe=True)
    async with aiohttp.ClientSession(cookie_jar=jar) as http:
        signed = await http.post(
            f"{a.url}/login", data={"email": email, "password": PASSWORD}, allow_redirects=False
        )
        assert signed.status == 302
        cookie = f"ct_session={jar.filter_cookies(URL(a.url))['ct_session'].value}"

        async with connect(
            f"ws://127.0.0.1:{a.port}/console/ws", additional_headers={"Cookie": cookie}
        ) as on_a:
            await command(on_a, 1, "subscribe", sites=None)
            await collect(http, b, site_key, "Collected by B")
            event = (await receive(on_a))["event"]
            assert event["kind"] == "visitor.pageview" and event["site"] == site_key
            assert event["data"]["page"]["title"] == "Collected by B"
            last_id = event["id"]

        for n in range(2):
            await collect(http, a, site_key, f"Missed {n}")
        async with connect(
            f"ws://127.0.0.1:{b.port}/console/ws", additional_headers={"Cookie": cookie}
        ) as on_b:
            result = await command(
                on_b, 1, "subscribe", sites=None, last_event_ids={site_key: last_id}
            )
            assert result["replayed"] == 2 and result["gap"] is False
            titles = [(await receive(on_b))["event"]["data"]["page"]["title"] for _ in range(2)]
            assert titles == ["Missed 0", "Missed 1"]
            await collect(http, a, site_key, "Live from A")
            live = (await receive(on_b))["event"]
            assert live["data"]["page"]["title"] == "Live from A"
