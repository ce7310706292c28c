"""`calltrack bench webhook`: incoming-call webhooks on PostgreSQL while collect is under load.

Each request is what Twilio sends for a new call to a pool number held by a live session,
signed with twilio's `RequestValidator`: the server checks the signature, attributes the
call, stores it and answers TwiML. Throughput is compared with the bare aiohttp handler
(`dashboard.bench.baseline`) in the same run; server time is measured inside the server
process (a middleware around the voice webhook), so the load generator's own queueing on this
small machine does not count.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import random
import secrets
import sys
import time
import urllib.request
from collections.abc import Callable
from typing import Any
from urllib.parse import urlencode, urlsplit

from dashboard.bench.collect import USER_AGENT, visitor_events
from dashboard.bench.common import (
    LoadResult,
    bench_postgres_url,
    drop_bench_database,
    free_port,
    output,
    server_process,
)

PUBLIC_URL = "https://bench.calltrack.test"
VOICE_PATH = "/telephony/twilio/voice"
ACCOUNT_SID = "AC" + "b" * 32
POOL_SIZE = 50
TARGET_P99_MS = 50.0
# A request factory gets the connection's previous response body (None at first) and returns
# the next request's (body, headers): collect visitors carry their session id that way.
RequestFactory = Callable[[bytes | None], tuple[bytes, dict[str, str]]]


def register(names: Any) -> None:
    bench = names.add_parser("webhook", help="voice webhook (signature, attribution, TwiML)")
    bench.add_argument("--json", action="store_true", help="print exactly one JSON object")
    bench.add_argument("--output", help="also write the JSON to this file")
    bench.add_argument("--seconds", type=float, default=8.0, help="duration of each load run")
    bench.add_argument(
        "--connections", type=int, default=8, help="webhook senders in the throughput runs"
    )
    bench.add_argument(
        "--call-rate",
        type=float,
        default=20.0,
        help="incoming calls per second in the latency run (far above any one merchant's)",
    )
    bench.add_argument(
        "--collect-rate", type=float, default=150.0, help="collect events per second meanwhile"
    )
    bench.add_argument("--rounds", type=int, default=2, help="alternating rounds per server")
    bench.set_defaults(handler=run)


def voice_requests(token: str, numbers: list[str]) -> RequestFactory:
    """Make a factory of signed voice webhooks: a new call to a random pool number each time."""
    from twilio.request_validator import RequestValidator

    validator = RequestValidator(token)
    callers = [f"+336{random.randrange(10**7, 10**8)}" for _ in range(2000)]

    def make(previous: bytes | None = None) -> tuple[bytes, dict[str, str]]:
        to, caller = random.choice(numbers), random.choice(callers)
        params = {
            "AccountSid": ACCOUNT_SID,
            "ApiVersion": "2010-04-01",
            "CallSid": "CA" + secrets.token_hex(16),
            "CallStatus": "ringing",
            "Called": to,
            "Caller": caller,
            "Direction": "inbound",
            "From": caller,
            "FromCountry": "FR",
            "To": to,
            "ToCountry": "FR",
        }
        signature = validator.compute_signature(PUBLIC_URL + VOICE_PATH, params)
        return urlencode(params).encode(), {
            "Content-Type": "application/x-www-form-urlencoded",
            "X-Twilio-Signature": signature,
        }

    return make


def collect_requests(site_key: str) -> RequestFactory:
    """Make a factory of collect events: a visitor browsing with a cart (as bench collect)."""
    events = visitor_events(site_key)
    headers = {"Content-Type": "text/plain", "User-Agent": USER_AGENT}
    sequence = 0

    def make(previous: bytes | None) -> tuple[bytes, dict[str, str]]:
        nonlocal sequence
        sequence += 1
        return events(sequence, previous), headers

    return make


async def _exchange(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    host: str,
    port: int,
    path: str,
    body: bytes,
    headers: dict[str, str],
) -> tuple[bool, bytes]:
    """Send one HTTP/1.1 request on a keep-alive connection; return (2xx?, response body)."""
    head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    writer.write(
        (
            f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\n"
            f"Content-Length: {len(body)}\r\n{head}\r\n"
        ).encode()
        + body
    )
    status_line = await reader.readline()
    length = 0
    while True:
        line = await reader.readline()
        if line in (b"\r\n", b""):
            break
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value.strip())
    answer = await reader.readexactly(length) if length else b""
    parts = status_line.split()
    return len(parts) >= 2 and parts[1].startswith(b"2"), answer


async def load(
    url: str,
    make: RequestFactory,
    *,
    seconds: float,
    connections: int,
    rate: float | None = None,
) -> LoadResult:
    """Send requests for `seconds` on keep-alive connections.

    Without `rate`, each connection sends as fast as it is answered (throughput). With `rate`,
    requests are started on a fixed schedule shared by the connections (latency at a given
    load); a late request counts from its scheduled time, so a stalled server is not hidden
    by a stalled client.
    """
    parts = urlsplit(url)
    host, port, path = parts.hostname or "127.0.0.1", parts.port or 80, parts.path
    result = LoadResult(requests=0, errors=0, seconds=seconds)
    started = time.perf_counter()
    deadline = started + seconds
    ticket = 0

    def next_start() -> float | None:
        nonlocal ticket
        if rate is None:
            now = time.perf_counter()
            return now if now < deadline else None
        at = started + ticket / rate
        ticket += 1
        return at if at < deadline else None

    async def connection() -> None:
        reader, writer = await asyncio.open_connection(host, port)
        previous: bytes | None = None
        try:
            while (at := next_start()) is not None:
                delay = at - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                body, headers = make(previous)
                ok, previous = await _exchange(reader, writer, host, port, path, body, headers)
                result.latencies_ms.append((time.perf_counter() - at) * 1000)
                result.requests += 1
                result.errors += 0 if ok else 1
        except (ConnectionError, asyncio.IncompleteReadError):
            result.errors += 1
        finally:
            writer.close()

    await asyncio.gather(*(connection() for _ in range(connections)))
    result.seconds = time.perf_counter() - started
    return result


async def _prepare(database_url: str) -> tuple[str, list[str]]:
    """Create a site whose pool numbers are each held by a live Paid Search session."""
    from tracker.clock import SystemClock
    from tracker.db import Database
    from tracker.models import Lease, TrackedSession, TrackingNumber
    from tracker.sites import SiteSpec, create_site, get_or_create_account

    database = Database(database_url)
    now = SystemClock().now()
    numbers = [f"+3319900{i:04d}" for i in range(POOL_SIZE)]
    try:
        async with database.begin() as db:
            account = await get_or_create_account(db, "bench", SystemClock())
            site = await create_site(
                db,
                account,
                SiteSpec(name="Bench", domain="shop.example", phone="+33123456789", country="FR"),
            )
            site.record_calls = True
            for e164 in numbers:
                number = TrackingNumber(
                    site_id=site.id,
                    e164=e164,
                    provider="twilio",
                    kind="pool",
                    state="active",
                    created_at=now,
                )
                session = TrackedSession(
                    id=secrets.token_hex(16),
                    site_id=site.id,
                    started_at=now,
                    last_seen_at=now,
                    landing_url="https://shop.example/?utm_source=google&utm_medium=cpc",
                    channel="Paid Search",
                    source="google",
                    medium="cpc",
                )
                db.add_all([number, session])
                await db.flush()
                db.add(
                    Lease(
                        site_id=site.id,
                        tracking_number_id=number.id,
                        session_id=session.id,
                        started_at=now,
                        last_seen_at=now,
                        hold_until=now + dt.timedelta(days=1),
                    )
                )
            return site.site_key, numbers
    finally:
        await database.close()


def _server_times(base_url: str, reset: bool = False) -> list[float]:
    with urllib.request.urlopen(f"{base_url}/bench/server-times?reset={int(reset)}") as answer:
        return [float(v) for v in json.load(answer)]


def _percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))]


async def _measure(
    args: argparse.Namespace, ours: str, base: str, site_key: str, calls: RequestFactory
) -> dict[str, Any]:
    seconds, connections = args.seconds, args.connections
    collect = collect_requests(site_key)

    async def with_collect_load(work: Any) -> tuple[LoadResult, LoadResult]:
        """Run `work` while the collect endpoint takes `--collect-rate` events per second."""
        background = asyncio.create_task(
            load(
                ours + "/collect", collect, seconds=seconds, connections=16, rate=args.collect_rate
            )
        )
        measured = await work
        return measured, await background

    # Warm-up: connection pools, prepared statements, code paths.
    await load(ours + VOICE_PATH, calls, seconds=1.5, connections=connections)
    await load(base + VOICE_PATH, calls, seconds=1.0, connections=connections)
    await asyncio.to_thread(_server_times, ours, True)
    mine: list[LoadResult] = []
    bare: list[LoadResult] = []
    collected: list[LoadResult] = []
    for _ in range(args.rounds):
        # Alternate rounds so that noise from a shared machine hits both sides alike.
        bare.append(await load(base + VOICE_PATH, calls, seconds=seconds, connections=connections))
        webhook, background = await with_collect_load(
            load(ours + VOICE_PATH, calls, seconds=seconds, connections=connections)
        )
        mine.append(webhook)
        collected.append(background)
    saturated_ms = await asyncio.to_thread(_server_times, ours, True)
    # Latency at a steady call rate (calls do not arrive as fast as a server can answer).
    paced, paced_collect = await with_collect_load(
        load(ours + VOICE_PATH, calls, seconds=seconds * 2, connections=8, rate=args.call_rate)
    )
    server_ms = await asyncio.to_thread(_server_times, ours, True)
    client_ms = paced.latencies_ms
    ours_rps = sum(r.requests for r in mine) / sum(r.seconds for r in mine)
    base_rps = sum(r.requests for r in bare) / sum(r.seconds for r in bare)
    collect_rps = sum(r.requests for r in collected) / sum(r.seconds for r in collected)
    return {
        "webhook_rps": round(ours_rps, 1),
        "baseline_rps": round(base_rps, 1),
        "ratio": round(ours_rps / base_rps, 4) if base_rps else 0.0,
        "call_rate": args.call_rate,
        "server_p50_ms": round(_percentile(server_ms, 0.50), 2),
        "server_p99_ms": round(_percentile(server_ms, 0.99), 2),
        "client_p50_ms": round(_percentile(client_ms, 0.50), 2),
        "client_p99_ms": round(_percentile(client_ms, 0.99), 2),
        "saturated_server_p50_ms": round(_percentile(saturated_ms, 0.50), 2),
        "saturated_server_p99_ms": round(_percentile(saturated_ms, 0.99), 2),
        "requests": sum(r.requests for r in mine) + paced.requests,
        "errors": sum(r.errors for r in mine) + paced.errors,
        "collect_rate": args.collect_rate,
        "collect_rps_during": round(collect_rps, 1),
        "collect_rps_during_paced": round(paced_collect.rps, 1),
        "collect_errors": sum(r.errors for r in collected) + paced_collect.errors,
        "connections": connections,
        "seconds_per_round": seconds,
        "rounds": args.rounds,
    }


async def run(args: argparse.Namespace, settings: Any) -> int:
    from tracker.db import migrate_sync

    url, name = await bench_postgres_url()
    async_url = url.replace("postgresql://", "postgresql+asyncpg://", 1)
    token = secrets.token_hex(16)
    try:
        await asyncio.to_thread(migrate_sync, async_url)
        site_key, numbers = await _prepare(async_url)
        ours_port, base_port = free_port(), free_port()
        env = {
            "CALLTRACK_DATABASE_URL": async_url,
            "CALLTRACK_LOG_LEVEL": "WARNING",
            "CALLTRACK_SECRET_KEY": secrets.token_hex(16),
            "CALLTRACK_PUBLIC_URL": PUBLIC_URL,
            "CALLTRACK_TWILIO_ACCOUNT_SID": ACCOUNT_SID,
            "CALLTRACK_TWILIO_AUTH_TOKEN": token,
            "CALLTRACK_CARRIER": "simulated",
            "CALLTRACK_REDIS_URL": "",
        }
        ours, base = f"http://127.0.0.1:{ours_port}", f"http://127.0.0.1:{base_port}"
        with (
            server_process(
                ["-m", "dashboard.bench.webhook", "--port", str(ours_port)],
                env,
                f"{ours}/healthz",
            ),
            server_process(
                ["-m", "dashboard.bench.baseline", "--port", str(base_port)],
                {},
                f"{base}/healthz",
            ),
        ):
            data = await _measure(args, ours, base, site_key, voice_requests(token, numbers))
    finally:
        await drop_bench_database(name)
    data["bench"] = "webhook"
    data["database"] = "postgresql"
    data["target_p99_ms"] = TARGET_P99_MS
    data["meets_target"] = data["server_p99_ms"] < TARGET_P99_MS and data["errors"] == 0
    data["load_average"] = round(os.getloadavg()[0], 2)
    rows = [
        ("voice webhook req/s, saturated (ours)", data["webhook_rps"]),
        ("bare aiohttp 204 req/s", data["baseline_rps"]),
        ("ratio", data["ratio"]),
        (f"server p50 ms at {data['call_rate']:g} calls/s", data["server_p50_ms"]),
        (
            f"server p99 ms at {data['call_rate']:g} calls/s (< {TARGET_P99_MS:g})",
            data["server_p99_ms"],
        ),
        ("client p99 ms at that rate", data["client_p99_ms"]),
        ("server p99 ms, saturated", data["saturated_server_p99_ms"]),
        ("collect req/s meanwhile", data["collect_rps_during"]),
        ("errors", data["errors"] + data["collect_errors"]),
    ]
    output(args, "calltrack bench webhook (one worker, PostgreSQL, collect under load)", data, rows)
    return 0


def serve(port: int) -> None:
    """Serve the real application plus a server-time probe around the voice webhook."""
    from aiohttp import web

    from dashboard.app import create_app
    from tracker.config import Settings
    from tracker.web import Handler

    times: list[float] = []

    @web.middleware
    async def server_time(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path != VOICE_PATH:
            return await handler(request)
        started = time.perf_counter()
        try:
            return await handler(request)
        finally:
            times.append((time.perf_counter() - started) * 1000)

    async def report(request: web.Request) -> web.Response:
        data = list(times)
        if request.query.get("reset") == "1":
            times.clear()
        return web.json_response(data)

    settings = Settings.from_env()
    app = create_app(settings)
    # Outermost: the time includes body parsing, the error envelope and the timing metric.
    app.middlewares.insert(0, server_time)
    app.router.add_get("/bench/server-times", report)
    web.run_app(app, host="127.0.0.1", port=port, print=None, access_log=None)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="serve the app for `calltrack bench webhook`")
    parser.add_argument("--port", type=int, required=True)
    serve(parser.parse_args(argv).port)


if __name__ == "__main__":
    main(sys.argv[1:])
