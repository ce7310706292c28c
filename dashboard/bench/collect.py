"""`calltrack bench collect`: the collect endpoint against a bare aiohttp handler, same run."""

from __future__ import annotations

import argparse
import asyncio
import json
import secrets
from typing import Any

from dashboard.bench.common import (
    bench_postgres_url,
    drop_bench_database,
    free_port,
    output,
    run_load,
    server_process,
)

USER_AGENT = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/126.0.0.0 Safari/537.36"
)


def register(names: Any) -> None:
    bench = names.add_parser("collect", help="collect endpoint throughput vs a bare handler")
    bench.add_argument("--json", action="store_true", help="print exactly one JSON object")
    bench.add_argument("--output", help="also write the JSON to this file")
    bench.add_argument("--seconds", type=float, default=8.0, help="duration of each load run")
    bench.add_argument("--connections", type=int, default=32)
    bench.add_argument("--rounds", type=int, default=2, help="alternating rounds per server")
    bench.set_defaults(handler=run)


def visitor_events(site_key: str) -> Any:
    """Make a body factory: each connection is a visitor browsing five pages with a cart."""

    def make_body(sequence: int, previous: bytes | None) -> bytes:
        step = sequence % 6
        session = None
        if step and previous:
            try:
                session = json.loads(previous).get("s")
            except ValueError:
                session = None
        page = secrets.token_hex(8)
        base: dict[str, Any] = {"k": site_key, "p": page, "s": session, "c": None}
        if step == 0:
            base.update(
                t="pageview",
                u="https://shop.example/?utm_source=google&utm_medium=cpc&utm_campaign=bench",
                r="https://www.google.com/",
                ti="Home",
            )
        elif step == 3:
            base.update(
                t="cart",
                u="https://shop.example/cart",
                cart={
                    "items": [{"name": "Vélo", "sku": "V1", "qty": 1, "price": 649}],
                    "total": 649,
                    "currency": "EUR",
                },
            )
        elif step == 5:
            base.update(t="ping", d=30000, u="https://shop.example/p/3")
        else:
            base.update(t="pageview", u=f"https://shop.example/p/{step}", ti=f"Product {step}")
        return json.dumps(base).encode()

    return make_body


async def _create_site(database_url: str) -> str:
    from tracker.clock import SystemClock
    from tracker.db import Database
    from tracker.sites import SiteSpec, create_site, get_or_create_account

    database = Database(database_url)
    try:
        async with database.begin() as db:
            account = await get_or_create_account(db, "bench", SystemClock())
            site = await create_site(
                db,
                account,
                SiteSpec(name="Bench", domain="shop.example", phone="+33123456789", country="FR"),
            )
            return site.site_key
    finally:
        await database.close()


async def _measure(
    args: argparse.Namespace, ours_url: str, base_url: str, site_key: str
) -> dict[str, Any]:
    factory = visitor_events(site_key)

    def headers(index: int) -> dict[str, str]:
        # Each connection is a different visitor: its own address (the server trusts
        # X-Forwarded-For from loopback, as from a local reverse proxy).
        return {
            "User-Agent": USER_AGENT,
            "X-Forwarded-For": f"198.51.{index // 250}.{index % 250 + 1}",
        }

    # Warm both servers (connection pools, caches, JIT-free Python warm-up of code paths).
    await run_load(ours_url, factory, seconds=1.5, connections=args.connections, headers=headers)
    await run_load(base_url, factory, seconds=1.0, connections=args.connections, headers=headers)
    ours, base = [], []
    # Alternate rounds so that noise from a shared machine hits both sides alike.
    for _ in range(args.rounds):
        base.append(
            await run_load(
                base_url,
                factory,
                seconds=args.seconds,
                connections=args.connections,
                headers=headers,
            )
        )
        ours.append(
            await run_load(
                ours_url,
                factory,
                seconds=args.seconds,
                connections=args.connections,
                headers=headers,
            )
        )
    latencies = [lat for r in ours for lat in r.latencies_ms]
    ours_rps = sum(r.requests for r in ours) / sum(r.seconds for r in ours)
    base_rps = sum(r.requests for r in base) / sum(r.seconds for r in base)
    ordered = sorted(latencies)
    return {
        "ours_rps": round(ours_rps, 1),
        "baseline_rps": round(base_rps, 1),
        "ratio": round(ours_rps / base_rps, 3) if base_rps else 0.0,
        "p50_ms": round(ordered[len(ordered) // 2], 2),
        "p99_ms": round(ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))], 2),
        "errors": sum(r.errors for r in ours),
        "requests": sum(r.requests for r in ours),
        "connections": args.connections,
        "seconds_per_round": args.seconds,
        "rounds": args.rounds,
    }


async def run(args: argparse.Namespace, settings: Any) -> int:
    from tracker.db import migrate_sync
    from widget.snippet_size import snippet_size

    url, name = await bench_postgres_url()
    async_url = url.replace("postgresql://", "postgresql+asyncpg://", 1)
    try:
        await asyncio.to_thread(migrate_sync, async_url)
        site_key = await _create_site(async_url)
        ours_port, base_port = free_port(), free_port()
        env = {
            "CALLTRACK_DATABASE_URL": async_url,
            "CALLTRACK_LOG_LEVEL": "WARNING",
            "CALLTRACK_SECRET_KEY": secrets.token_hex(16),
        }
        env.pop("CALLTRACK_REDIS_URL", None)
        with (
            server_process(
                ["-m", "dashboard.cli", "serve", "--port", str(ours_port)],
                {**env, "CALLTRACK_REDIS_URL": ""},
                f"http://127.0.0.1:{ours_port}/healthz",
            ),
            server_process(
                ["-m", "dashboard.bench.baseline", "--port", str(base_port)],
                {},
                f"http://127.0.0.1:{base_port}/healthz",
            ),
        ):
            data = await _measure(
                args,
                f"http://127.0.0.1:{ours_port}/collect",
                f"http://127.0.0.1:{base_port}/collect",
                site_key,
            )
    finally:
        await drop_bench_database(name)
    data["snippet"] = snippet_size()
    data["target_ratio"] = 0.5
    data["meets_target"] = data["ratio"] >= 0.5
    rows = [
        ("collect (ours) req/s", data["ours_rps"]),
        ("bare aiohttp 204 req/s", data["baseline_rps"]),
        ("ratio (target >= 0.5)", data["ratio"]),
        ("p50 ms (ours)", data["p50_ms"]),
        ("p99 ms (ours)", data["p99_ms"]),
        ("errors", data["errors"]),
        ("snippet gzip bytes (<= 3000)", data["snippet"].get("gzipped")),
        ("  as served, one business number", data["snippet"].get("served_gzipped")),
        (
            "  two numbers + contact widget loader",
            data["snippet"].get("served_gzipped_two_numbers_contact_widget"),
        ),
    ]
    output(args, "calltrack bench collect (one worker, PostgreSQL)", data, rows)
    return 0
