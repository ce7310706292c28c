"""Hostile requests on every route: whatever a visitor, a carrier or a user sends, never a 500.

The routes are read from the application itself, so a route added later is covered without
editing this file. Each parameter a route's module reads is sent alone with hostile values on
top of a valid request (a handler stops at its first invalid parameter, so sending them all at
once would only test the first). Carrier webhooks are signed with twilio's RequestValidator,
the dashboard is signed in as an administrator with its CSRF token, and the REST API gets a
bearer token: the hostile values reach the code behind the authentication.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
from aiohttp.test_utils import TestClient
from support.app import make_settings
from test_reports import NOW, Seed, seed_reports, sign_in
from twilio.request_validator import RequestValidator

from dashboard.api.tokens import create_token
from dashboard.app import create_app
from tracker import appkeys
from tracker.clock import FrozenClock
from tracker.db import Database
from tracker.models import Account, Site

ClientFactory = Callable[..., Awaitable[TestClient[Any, Any]]]
ROOT = Path(__file__).resolve().parent.parent
TWILIO_TOKEN = "hostile-test-twilio-token-0123456789"
PUBLIC_URL = "http://calltrack.test"
PERIOD = {"from": "2026-01-05", "to": "2026-01-11"}
SHOP = "https://velos-martin.fr/"
BROWSER = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/126.0.0.0 Safari/537.36"
)
_ADDRESSES = itertools.cycle(range(1, 60_000))

# Values no handler should need to expect, each a different kind of wrong.
HOSTILE = (
    "-1",
    "9999999999",
    "99999999999999999999999999",
    "²",
    "NaN",
    "\x00é<script>'\"",
    "x" * 5000,
)
# Past 32 bits, past 64 bits, a digit int() refuses, a digit int() takes.
PATH_VALUES = ("0", "-1", "9999999999", "9" * 26, "²", "٣", "abc", "%00", "%ff", "a" * 3000)
# What carriers post (https://www.twilio.com/docs/voice/twiml#request-parameters).
TWILIO_PARAMS = {
    "AccountSid": "AC" + "1" * 32,
    "CallSid": "CA" + "2" * 32,
    "CallStatus": "ringing",
    "From": "+33142685300",
    "To": "+33123456789",
    "Caller": "+33142685300",
    "Called": "+33123456789",
    "Direction": "inbound",
}
TWILIO_FIELDS = (
    "CallDuration",
    "DialCallDuration",
    "DialCallSid",
    "DialCallStatus",
    "ParentCallSid",
    "RecordingDuration",
    "RecordingSid",
    "RecordingStatus",
    "RecordingUrl",
    "SequenceNumber",
    "Timestamp",
    "Digits",
)
# Read by the dashboard's shared helpers rather than by name in the route's module.
COMMON = ("from", "to", "site", "site_id", "cursor", "limit", "q", "lang", "next", "model")
DASHBOARD_PAGES = (
    "dashboard.reports",
    "dashboard.api",
    "dashboard.privacy_http",
    "dashboard.site_settings",
    "dashboard.console",
)
EXTRA = {
    "tracker.http": ("k", "t", "p", "s", "v", "u", "r", "ti", "d", "c", "gpc", "lang", "cart"),
    "widget.contact_http": ("k", "s", "phone", "message", "lang"),
    "dashboard.site_settings": ("contact_widget", "always_open", "hours_mon", "hours_sun"),
}
_NAME = re.compile(
    r"""(?:query|form|body|fields|params|data)(?:\.get|\.getall|\.getone)?[(\[]\s*["']([A-Za-z_]\w*)["']"""
)


def names_read_by(module: str) -> tuple[str, ...]:
    """Every name a module reads from a query, form or body: the parameters to try."""
    path = ROOT / (module.replace(".", "/") + ".py")
    found = set(_NAME.findall(path.read_text())) | set(EXTRA.get(module, ()))
    if module.startswith(DASHBOARD_PAGES):
        found |= set(COMMON)
    return tuple(sorted(found))


@dataclass
class World:
    client: TestClient[Any, Any]
    seed: Seed
    csrf: str
    bearer: str
    site_key: str

    def baseline(self, method: str, path: str) -> dict[str, str]:
        """A valid request to build on, so that one hostile value reaches past validation."""
        if path == "/collect":
            return {"k": self.site_key, "t": "pageview", "p": "0123456789abcdef", "u": SHOP}
        if path == "/contact":
            return {"k": self.site_key, "phone": "+33612345678", "message": "Rappel ?"}
        if path in ("/ct.js", "/contact.js", "/contact/status"):
            return {"k": self.site_key}
        return dict(PERIOD) if method == "GET" else {}

    def path_values(self, name: str) -> tuple[str, ...]:
        valid = {
            "call_id": str(self.seed.calls["c1"]),
            "session_id": self.seed.sessions["s1"],
            "site_id": str(self.seed.site_a),
            "name": "calls",
            "dimension": "channel",
            "sku": "gravel",
        }.get(name, "1")
        return (valid, *PATH_VALUES)


async def _world(aiohttp_client: ClientFactory, database_url: str, database: Database) -> World:
    seed = await seed_reports(database)
    async with database.begin() as db:
        account = await db.get(Account, seed.account_id)
        assert account is not None
        _, bearer = await create_token(db, account, "hostile", "write", NOW)
        site = await db.get(Site, seed.site_a)
        assert site is not None
        site.settings = {**(site.settings or {}), "contact_widget": True}
        site_key = site.site_key
    settings = make_settings(
        database_url,
        public_url=PUBLIC_URL,
        twilio_account_sid=TWILIO_PARAMS["AccountSid"],
        twilio_auth_token=TWILIO_TOKEN,
        carrier="simulated",
    )
    app = create_app(settings, clock=FrozenClock(NOW))
    app[appkeys.EXTRAS]["workers_disabled"] = {"webhooks", "reports"}
    client = await aiohttp_client(app)
    csrf = await sign_in(client, database, seed.users["admin"])
    return World(client, seed, csrf, bearer, site_key)


@pytest.fixture
async def world(aiohttp_client: ClientFactory, database_url: str, database: Database) -> World:
    """On each backend."""
    return await _world(aiohttp_client, database_url, database)


@pytest.fixture
async def pg_world(aiohttp_client: ClientFactory, postgresql_url: str) -> AsyncIterator[World]:
    """On PostgreSQL alone: the stricter backend (no U+0000 in text, 32-bit integers)."""
    database = Database(postgresql_url, pool_size=5)
    yield await _world(aiohttp_client, postgresql_url, database)
    await database.close()


def _routes(world: World) -> list[tuple[str, str, str]]:
    """(method, path template, module) of every route but static files, preflights, logout."""
    routes = []
    for route in world.client.app.router.routes():
        info = route.resource.get_info() if route.resource is not None else {}
        template = info.get("path") or info.get("formatter")
        # Signing out would end the administrator's session the sweep depends on.
        if template in (None, "/logout") or route.method in ("HEAD", "OPTIONS"):
            continue
        routes.append((route.method, template, route.handler.__module__))
    return routes


def _fill(template: str, world: World, hostile_path: bool) -> list[str]:
    names = re.findall(r"\{(\w+)\}", template)
    if not names:
        return [template]
    paths = []
    for name in names:
        values = world.path_values(name) if hostile_path else world.path_values(name)[:1]
        for value in values:
            path = template
            for other in names:
                path = path.replace(
                    "{" + other + "}", value if other == name else world.path_values(other)[0]
                )
            paths.append(path)
    return paths


def _request(
    world: World,
    method: str,
    path: str,
    module: str,
    params: dict[str, str],
    *,
    raw: bytes | None = None,
    content_type: str | None = None,
    extra_headers: dict[str, str] | None = None,
) -> tuple[str, dict[str, str], Any]:
    """The path with its query, the headers and the body of a request as `_send` sends it."""
    # A browser (the collect endpoint drops bots), each request from its own address (the
    # contact form limits requests per address; loopback is a trusted proxy).
    address = next(_ADDRESSES)
    headers = {"User-Agent": BROWSER, "X-Forwarded-For": f"203.0.{address // 250}.{address % 250}"}
    data: Any = None
    if path.startswith("/api/v1/"):
        headers["Authorization"] = f"Bearer {world.bearer}"
    if method in ("GET", "DELETE"):
        path_qs = path + ("?" + urlencode(params) if params else "")
    elif raw is not None:
        path_qs, data = path, raw
        if content_type != "":  # "": send no Content-Type at all
            headers["Content-Type"] = content_type or "application/x-www-form-urlencoded"
    elif path.startswith("/api/") or path in ("/collect", "/contact"):
        path_qs, data = path, json.dumps(params).encode()
        headers["Content-Type"] = "application/json"
    else:
        form = {"csrf": world.csrf, **params}
        path_qs, data = path, urlencode(form).encode()
        headers["Content-Type"] = "application/x-www-form-urlencoded"
        headers["X-CSRF-Token"] = world.csrf
    if module.startswith("telephony.") and path.startswith("/telephony/") and raw is None:
        form = {**TWILIO_PARAMS, **params}
        path_qs, data = path, urlencode(form).encode()
        validator = RequestValidator(TWILIO_TOKEN)
        headers["X-Twilio-Signature"] = validator.compute_signature(PUBLIC_URL + path, form)
        headers["Content-Type"] = "application/x-www-form-urlencoded"
    headers.update(extra_headers or {})
    return path_qs, headers, data


async def _send(
    world: World, method: str, path: str, module: str, params: dict[str, str], **options: Any
) -> int:
    """Send what `_request` builds (its keyword options: raw, content_type, extra_headers)."""
    path_qs, headers, data = _request(world, method, path, module, params, **options)
    response = await world.client.request(
        method, path_qs, data=data, headers=headers, allow_redirects=False
    )
    body = await response.read()
    if response.status >= 400 and response.content_type == "application/json":
        error = json.loads(body).get("error", {})
        assert error.get("code") and error.get("message"), (path_qs[:200], body[:200])
    return response.status


async def test_no_parameter_value_gets_a_500(pg_world: World) -> None:
    # About eight thousand requests: run on PostgreSQL, whose text and integer types refuse
    # more than SQLite's; the path and body sweeps below run on both backends.
    world = pg_world
    failures: list[str] = []
    # A few requests at once.
    limit = asyncio.Semaphore(6)

    async def probe(method: str, path: str, module: str, params: dict[str, str]) -> None:
        async with limit:
            status = await _send(world, method, path, module, params)
        if status >= 500:
            name, value = list(params.items())[-1]
            failures.append(f"{method} {path} {name}={value[:40]!r}: {status}")

    probes = []
    for method, template, module in _routes(world):
        fields = TWILIO_FIELDS + tuple(TWILIO_PARAMS) if module.startswith("telephony.") else ()
        for path in _fill(template, world, hostile_path=False):
            base = world.baseline(method, path)
            for name in names_read_by(module) + fields:
                for value in HOSTILE:
                    probes.append(probe(method, path, module, {**base, name: value}))
    await asyncio.gather(*probes)
    assert not failures, "\n".join(sorted(failures)[:40])


async def test_no_path_value_gets_a_500(world: World) -> None:
    failures: list[str] = []
    for method, template, module in _routes(world):
        for path in _fill(template, world, hostile_path=True):
            status = await _send(world, method, path, module, world.baseline(method, path))
            if status >= 500:
                failures.append(f"{method} {path[:80]}: {status}")
    assert not failures, "\n".join(failures)


GZIP = {"Content-Encoding": "gzip"}
BODIES = (
    # Bodies that do not decode as their headers say: every body reader stumbles on them.
    (b"\x1f\x8b\x08garbage", "application/x-www-form-urlencoded", GZIP),
    (b"\x1f\x8b\x08garbage", "application/json", GZIP),
    (b"xx", "application/json", {"Content-Encoding": "deflate"}),
    (b"a=b", "application/x-www-form-urlencoded; charset=klingon"),
    (b"--x\r\ngarbage", "multipart/form-data; boundary=x"),
    (
        b'--x\r\nContent-Disposition: form-data; name="a"\r\nContent-Type: text/plain; '
        b"charset=klingon\r\n\r\nb\r\n--x--\r\n",
        "multipart/form-data; boundary=x",
    ),
    (b"a=b", ""),  # no Content-Type at all
    (b"\xff\xfe\x00garbage", "application/x-www-form-urlencoded"),
    (b"\xff\xfe\x00garbage", "application/json"),
    (b'{"k": ', "application/json"),
    (b"[1, 2, 3]", "application/json"),
    (b'{"a": ' * 5000 + b"1" + b"}" * 5000, "application/json"),
    (b"--x\r\nContent-Disposition: form-data\r\n\r\n", "multipart/form-data"),
    (b"a=" + b"%" * 3000, "application/x-www-form-urlencoded"),
    (b"x" * (3 * 1024 * 1024), "application/octet-stream"),
)


async def test_no_body_gets_a_500(world: World) -> None:
    failures: list[str] = []
    for method, template, module in _routes(world):
        if method == "GET":
            continue
        for path in _fill(template, world, hostile_path=False):
            for raw, content_type, *extra in BODIES:
                status = await _send(
                    world, method, path, module, {}, raw=raw, content_type=content_type,
                    extra_headers=extra[0] if extra else None,
                )  # fmt: skip
                if status >= 500:
                    failures.append(f"{method} {path} {content_type} {raw[:20]!r}: {status}")
    assert not failures, "\n".join(failures)


HEADERS = (
    {"Accept-Language": "x" * 3000 + ";q=NaN, zz-ZZ;q=-1, *;q=2, fr;q=0.5;q=0.1"},
    {"X-Forwarded-For": "not-an-ip, 999.1.1.1, ::ffff:zz%eth0, " + "10.0.0.1, " * 300},
    {"User-Agent": "Mozilla/5.0 (" + "A" * 8000},
    {"Cookie": "ct_session=" + "%ff" * 100 + "; ct_session=x; =;;"},
    {"Authorization": "Bearer " + "x" * 3000},
    {"Authorization": "Basic !!!not-base64"},
    {"Authorization": "Basic /+7/Og=="},  # b"\xff\xfe\xff:" — not UTF-8
    {"Authorization": "Basic YQBiQHg6cHc="},  # b"a\x00b@x:pw" — NUL in the email
    {"X-Twilio-Signature": "%%%" + "=" * 100},
    {"Origin": "null", "Sec-GPC": "1", "If-None-Match": '"' + "*" * 2000},
    {"Accept": "application/json;q=NaN, text/html;q=-1"},
)


async def test_no_header_gets_a_500(world: World) -> None:
    failures: list[str] = []
    for method, template, module in _routes(world):
        for path in _fill(template, world, hostile_path=False):
            for extra in HEADERS:
                status = await _send(
                    world, method, path, module, world.baseline(method, path), extra_headers=extra
                )
                if status >= 500:
                    failures.append(f"{method} {path} {list(extra)}: {status}")
    assert not failures, "\n".join(failures)


# Bytes that are not UTF-8 (Latin-1 "é", a lone continuation byte): aiohttp hands them on as
# lone surrogates, which str.encode() and the database drivers refuse. Sent on a raw socket:
# aiohttp's client writes headers as UTF-8 and could not send them.
RAW_HEADERS = (
    b"User-Agent: Mozilla/5.0 (X11; Linux x86_64) caf\xe9 Chrome/124.0 Safari/537.36",
    b"Accept-Language: fr-FR\xe9,\x80;q=0.9",
    b"X-Forwarded-For: 203.0.113.\xe9",
    b"Referer: https://velos-martin.fr/caf\xe9",
    b"Origin: http://calltrack.test\xe9",
    b"X-Twilio-Signature: \xe9\xe9\xe9=",
    b"Authorization: Basic \xe9\xe9",
    b'If-None-Match: "\xe9"',
    b"X-CSRF-Token: \xe9",
)


async def _send_raw(world: World, method: str, path: str, module: str, extra: bytes) -> int:
    path_qs, headers, data = _request(world, method, path, module, world.baseline(method, path))
    body = b"" if data is None else data
    url = world.client.make_url(path_qs)
    cookies = world.client.session.cookie_jar.filter_cookies(url)
    if cookies:
        headers["Cookie"] = "; ".join(f"{name}={morsel.value}" for name, morsel in cookies.items())
    name = extra.split(b":", 1)[0].decode().lower()
    lines = [
        f"{method} {url.raw_path_qs} HTTP/1.1".encode(),
        f"Host: {url.host}:{url.port}".encode(),
    ]
    lines += [f"{k}: {v}".encode() for k, v in headers.items() if k.lower() != name]
    lines += [extra, f"Content-Length: {len(body)}".encode(), b"Connection: close", b"", b""]
    reader, writer = await asyncio.open_connection(url.host, url.port)
    try:
        writer.write(b"\r\n".join(lines) + body)
        await writer.drain()
        status_line = await asyncio.wait_for(reader.readline(), 10)
        await reader.read()
    finally:
        writer.close()
    return int(status_line.split()[1])


async def test_no_undecodable_header_gets_a_500(world: World) -> None:
    failures: list[str] = []
    for method, template, module in _routes(world):
        for path in _fill(template, world, hostile_path=False):
            for extra in RAW_HEADERS:
                status = await _send_raw(world, method, path, module, extra)
                if status >= 500:
                    failures.append(f"{method} {path} {extra[:30]!r}: {status}")
    assert not failures, "\n".join(failures)


async def test_values_past_every_range_get_a_4xx(pg_world: World) -> None:
    """Numbers and dates a column, a double or a datetime cannot hold, each where it is read
    (found by a fuzzing audit: each was a 500)."""
    world = pg_world
    site, page = world.site_key, "0123456789abcdef"

    def collect(body: dict[str, Any] | str) -> tuple[str, str, str, dict[str, str], bytes]:
        raw = body if isinstance(body, str) else json.dumps(body)
        return ("POST", "/collect", "tracker.http", {}, raw.encode())

    view = f'{{"k": "{site}", "t": "pageview", "p": "{page}", "u": "{SHOP}"'
    cart = {"k": site, "t": "cart", "p": page, "cart": {"currency": "EUR"}}
    cases = [
        collect(view + ', "d": 1e309}'),
        # "$" also matches before a final newline: ids are checked to the very end.
        collect(view + ', "v": "0123456789abcdef\\n"}'),
        ("POST", "/telephony/twilio/status", "telephony.http",
         {"CallSid": "CA" + "3" * 32 + "\n", "CallStatus": "completed"}, None),
        collect(view + ', "d": -1e309}'),
        collect({**cart, "cart": {"items": [{"name": "x", "qty": 1, "price": "999999999999.999"}]}}),
        collect({**cart, "cart": {"items": [{"name": "x", "qty": 1, "price": -999999999999.999}]}}),
        collect({**cart, "cart": {"items": [{"name": "x", "qty": 900000, "price": 9999999.99}]}}),
        collect({**cart, "cart": {"total": "999999999999.995"}}),
        collect({**cart, "cart": {"total": "1e30"}}),  # too many digits to round to cents
        collect({**cart, "cart": {"items": [{"name": "x", "qty": 1, "price": 1e30}]}}),
        collect(f'{{"k": "{site}", "t": "cart", "p": "{page}", "cart": {{"items": [{{"qty": 1e309}}]}}}}'),
        ("POST", "/telephony/twilio/status", "telephony.http",
         {"CallStatus": "completed", "Timestamp": "Fri, 31 Dec 9999 23:59:59 -0100"}, None),
        ("GET", "/api/v1/calls", "dashboard.api.http",
         {**PERIOD, "cursor": "1.0_99999999999999999999"}, None),
        ("GET", "/dashboard/calls", "dashboard.reports.http",
         {**PERIOD, "cursor": "1.0_99999999999999999999"}, None),
        ("POST", "/api/v1/webhooks", "dashboard.api.http", {},
         json.dumps({"url": "https://[::1", "events": ["call.completed"]}).encode()),
        ("POST", "/api/v1/costs", "dashboard.api.http", {}, json.dumps({"rows": [
            {"date": "2026-01-05", "channel": "Paid Search", "cost": "999999999999.999",
             "currency": "EUR"}]}).encode()),
        ("POST", "/api/v1/costs", "dashboard.api.http", {}, json.dumps({"rows": [
            {"date": "2026-01-05", "channel": "Paid Search", "cost": "1e30",
             "currency": "EUR"}]}).encode()),
        ("POST", "/api/v1/costs", "dashboard.api.http", {}, json.dumps({"rows": [
            {"date": "2026-01-05", "channel": "Paid Search", "cost": "1", "currency": "EUR",
             "campaign": "x" * 140_000}]}).encode()),
        ("GET", "/dashboard/privacy/breach", "dashboard.privacy_http",
         {"since": "0001-01-01T00:00:00+01:00", "until": "2026-01-01"}, None),
        ("GET", "/dashboard/privacy/breach", "dashboard.privacy_http",
         {"since": "2026-01-01", "until": "9999-12-31T23:59:59-01:00"}, None),
        ("GET", "/dashboard/privacy/audit", "dashboard.privacy_http",
         {"since": "0001-01-01T00:00+01:00"}, None),
        ("GET", "/dashboard/privacy/audit.csv", "dashboard.privacy_http",
         {"until": "9999-12-31"}, None),
    ]  # fmt: skip
    failures = []
    for method, path, module, params, raw in cases:
        status = await _send(world, method, path, module, params, raw=raw,
                             content_type="application/json" if raw else None)  # fmt: skip
        if not 400 <= status < 500:
            failures.append(f"{method} {path} {params or raw[:80]!r}: {status}")
    assert not failures, "\n".join(failures)
    # A privacy page's own error page names the code too, as every error page does.
    response = await world.client.get(
        "/dashboard/privacy/breach",
        params={"since": "0001-01-01T00:00+01:00", "until": "2026-01-01"},
    )
    assert response.status == 400 and "<code>invalid_date</code>" in await response.text()
