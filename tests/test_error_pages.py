"""Errors are JSON for scripts, carriers and the API, and a page for a person's browser."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from support.app import free_port, make_settings

from dashboard.app import create_app
from tracker import appkeys

ClientFactory = Callable[..., Awaitable[TestClient[Any, Any]]]
NAVIGATION = {
    "Accept": "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8",
    "Accept-Language": "fr-FR,fr;q=0.9,en;q=0.8",
}


async def test_a_browser_gets_a_page_with_the_same_status_and_code(
    aiohttp_client: ClientFactory, sqlite_url: str
) -> None:
    client = await aiohttp_client(create_app(make_settings(sqlite_url)))
    page = await client.get("/dashboard/nope", headers=NAVIGATION)
    assert page.status == 404 and page.content_type == "text/html"
    text = await page.text()
    assert '<html lang="fr">' in text and "Page introuvable" in text
    assert "<code>not_found</code>" in text and 'href="/"' in text
    assert page.headers["Content-Security-Policy"].startswith("default-src 'self'")

    # Scripts (fetch sends */*), the API, the snippet's endpoints and carriers keep the JSON.
    for path, headers in (
        ("/dashboard/nope", {"Accept": "*/*"}),
        ("/api/v1/calls/1", NAVIGATION),
        ("/telephony/twilio/nope", NAVIGATION),
    ):
        response = await client.get(path, headers=headers)
        assert response.status in (401, 404) and response.content_type == "application/json"
        assert "code" in (await response.json())["error"]


async def test_an_outage_page_says_so_and_tries_again(aiohttp_client: ClientFactory) -> None:
    # Nothing listens on a free port: connections are refused, as when PostgreSQL restarts.
    url = f"postgresql+asyncpg://postgres@127.0.0.1:{free_port()}/calltrack"
    app = create_app(make_settings(url))
    app[appkeys.EXTRAS]["workers_disabled"] = {"webhooks", "reports", "spool"}
    client = await aiohttp_client(app)
    client.session.cookie_jar.update_cookies({"ct_session": "a-sign-in-token"})
    page = await client.get("/dashboard", headers={**NAVIGATION, "Accept-Language": "en"})
    assert page.status == 503 and page.content_type == "text/html"
    assert page.headers["Retry-After"] == "5"
    text = await page.text()
    assert "Calltrack is briefly unavailable" in text and "service_unavailable" in text
    assert '<meta http-equiv="refresh" content="5">' in text


async def test_a_signed_in_users_page_speaks_their_language(
    aiohttp_client: ClientFactory, sqlite_url: str
) -> None:
    from test_hub_ws import PASSWORD, new_user

    from tracker.db import Database

    database = Database(sqlite_url)
    try:
        email = await new_user(database, "errors", "admin", language="en")
    finally:
        await database.close()
    client = await aiohttp_client(create_app(make_settings(sqlite_url)))
    signed = await client.post(
        "/login", data={"email": email, "password": PASSWORD}, allow_redirects=False
    )
    assert signed.status == 302
    page = await client.get("/dashboard/calls/999999", headers=NAVIGATION)  # browser in French
    assert page.status == 404 and page.content_type == "text/html"
    text = await page.text()
    assert '<html lang="en">' in text and "Page not found" in text and "unknown_call" in text


async def test_a_served_instance_has_no_demo_pages_and_starts_at_sign_in(
    aiohttp_client: ClientFactory, sqlite_url: str
) -> None:
    """`calltrack serve` is production: the demo's pages need no sign-in and would create the
    demo account in the merchant's database on the first visit, so only `calltrack demo` has
    them."""
    import dataclasses

    from sqlalchemy import func, select

    from tracker.db import Database
    from tracker.models import Site

    async def demo_sites() -> int:
        database = Database(sqlite_url)
        try:
            async with database.sessions() as db:
                count = await db.scalar(
                    select(func.count()).where(Site.name == "Vélos Martin (demo)")
                )
                return int(count or 0)
        finally:
            await database.close()

    before = await demo_sites()
    served = await aiohttp_client(create_app(make_settings(sqlite_url)))
    for path in ("/demo/", "/demo/activity", "/demo/product/VM-GRAV-02"):
        assert (await served.get(path, headers=NAVIGATION)).status == 404, path
    assert await demo_sites() == before
    root = await served.get("/", allow_redirects=False)
    assert root.status == 302 and root.headers["Location"] == "/login"

    settings = dataclasses.replace(make_settings(sqlite_url), demo=True)
    demo = await aiohttp_client(create_app(settings))
    root = await demo.get("/", allow_redirects=False)
    assert root.status == 302 and root.headers["Location"] == "/demo/activity"
    assert (await demo.get("/demo/")).status == 200
    assert await demo_sites() == max(before, 1)


async def test_a_malformed_request_is_refused_and_logged_as_one_line(
    aiohttp_client: ClientFactory, caplog: Any
) -> None:
    """aiohttp answers a request it cannot parse itself and logs an ERROR with a traceback:
    anyone could fill the log that way. `calltrack serve` logs one warning line instead."""
    import asyncio
    import logging

    from dashboard.cli import malformed_http_as_one_line

    client = await aiohttp_client(create_app(make_settings("sqlite+aiosqlite:///:memory:")))
    caplog.set_level(logging.DEBUG, logger="aiohttp.server")
    # Another test's command line may have installed the filter: see aiohttp's own record.
    logger = logging.getLogger("aiohttp.server")
    installed = malformed_http_as_one_line in logger.filters
    logger.removeFilter(malformed_http_as_one_line)
    try:
        reader, writer = await asyncio.open_connection(client.server.host, client.server.port)
        writer.write(b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: calltrack.test\r\n\r\n")
        await writer.drain()
        status_line = await reader.readline()
        writer.close()
    finally:
        if installed:
            logger.addFilter(malformed_http_as_one_line)
    assert status_line.split()[1] == b"400"
    records = [r for r in caplog.records if r.name == "aiohttp.server" and r.exc_info]
    assert records, "aiohttp no longer logs malformed requests with their exception"
    record = records[0]
    assert record.levelno == logging.ERROR  # what aiohttp does on its own
    malformed_http_as_one_line(record)
    assert record.levelno == logging.WARNING and record.exc_info is None
    assert "malformed request refused (400)" in record.getMessage()
    assert len(record.getMessage()) <= 500  # not the 9,000-byte line


@pytest.mark.parametrize(
    ("request_bytes", "code"),
    [
        (b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: h\r\n\r\n", "request_too_large"),
        (b"GET / HTTP/1.1\r\nHost: h\r\nX-Long: " + b"a" * 9000 + b"\r\n\r\n", "request_too_large"),
        (b"BL\x01AH / HTTP/1.1\r\nHost: h\r\n\r\n", "malformed_http"),
        (b"GET /\xff HTTP/1.1\r\nHost: h\r\n\r\n", "malformed_http"),
        (b"GET / HTTP/1.1\r\nHost: h\r\nNo colon here\r\n\r\n", "malformed_http"),
        (
            b"POST /collect HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
            "malformed_http",
        ),
    ],
    ids=["long-path", "long-header", "bad-method", "raw-byte-path", "bad-header", "bad-chunk"],
)
async def test_a_request_aiohttp_cannot_parse_gets_the_error_envelope(
    aiohttp_client: ClientFactory, request_bytes: bytes, code: str
) -> None:
    """aiohttp answers these before any middleware runs; the answer is still JSON with a code
    and a sentence, and the connection is closed."""
    import asyncio

    client = await aiohttp_client(create_app(make_settings("sqlite+aiosqlite:///:memory:")))
    reader, writer = await asyncio.open_connection(client.server.host, client.server.port)
    writer.write(request_bytes)
    await writer.drain()
    answer = await asyncio.wait_for(reader.read(), 5)  # to the end: the server closes
    writer.close()
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.split()[1] == b"400", head
    assert b"application/json" in head
    error = json.loads(body)["error"]
    assert error["code"] == code
    assert error["message"].endswith(".") and len(error["message"]) < 300
    # The service still answers on a new connection.
    assert (await client.get("/healthz")).status == 200
