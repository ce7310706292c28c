"""`calltrack bench purge`: collect throughput alone, then while a purge of 1 M pageviews runs.

The retention purge must not slow collection down: it deletes in bounded batches, each in its
own short transaction, pausing between them (tracker.privacy.retention). This bench seeds a
scratch PostgreSQL database with expired pageviews, serves collect from one worker, and drives
it with the collect bench's virtual visitors while `calltrack privacy purge` runs in its own
process (as an operator runs it). Collect is measured in paired windows, purge running and
purge stopped (SIGSTOP), alternating until the purge is done; "alone" before and after are
reported as well, to show how much the machine itself drifted.
Target: throughput with the purge running is at least 80 % of throughput with it stopped.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import signal
import subprocess
import sys
import time
from typing import Any

from dashboard.bench.collect import USER_AGENT, _create_site, visitor_events
from dashboard.bench.common import (
    LoadResult,
    bench_postgres_url,
    drop_bench_database,
    free_port,
    output,
    run_load,
    server_process,
)

TARGET_RATIO = 0.8


def register(names: Any) -> None:
    bench = names.add_parser("purge", help="collect throughput alone vs during a 1 M row purge")
    bench.add_argument("--json", action="store_true", help="print exactly one JSON object")
    bench.add_argument("--output", help="also write the JSON to this file")
    bench.add_argument("--rows", type=int, default=1_000_000, help="expired pageviews to purge")
    bench.add_argument("--seconds", type=float, default=10.0, help="each 'alone' measurement")
    bench.add_argument("--connections", type=int, default=32)
    bench.add_argument("--batch-size", type=int, default=2000, help="purge batch size")
    bench.add_argument(
        "--pause-ratio", type=float, default=4.0, help="purge pause per batch time (its default)"
    )
    bench.add_argument("--window", type=float, default=2.0, help="seconds per paired window")
    bench.set_defaults(handler=run)


async def _seed(url: str, site_key: str, rows: int) -> None:
    """Insert `rows` pageviews 14 to 24 months old (past the 13-month default) in bulk."""
    import asyncpg

    connection = await asyncpg.connect(url)
    try:
        site_id = await connection.fetchval("SELECT id FROM sites WHERE site_key = $1", site_key)
        sessions = max(1, rows // 100)
        await connection.execute(
            """
            INSERT INTO sessions (id, site_id, consent, started_at, last_seen_at, landing_url,
                                  channel, click_ids, pageview_count)
            SELECT md5('s' || g), $1, false, now() - interval '700 days' + g * interval '1 minute',
                   now() - interval '700 days' + g * interval '1 minute',
                   'https://shop.example/', 'Direct', '{}', 100
            FROM generate_series(1, $2) AS g
            """,
            site_id,
            sessions,
        )
        await connection.execute(
            """
            INSERT INTO pageviews (site_id, session_id, page_id, url, title, viewed_at, duration_ms)
            SELECT $1, md5('s' || (1 + g % $3)), substr(md5('p' || g), 1, 16),
                   'https://shop.example/p/' || (g % 50), 'Product',
                   now() - interval '730 days' + make_interval(secs => g * $4::float8), 0
            FROM generate_series(1, $2::int) AS g
            """,
            site_id,
            rows,
            sessions,
            # Spread over 300 days, all older than 13 months.
            300 * 86400 / rows,
        )
        # Let the bulk load settle (statistics, visibility map, dirty pages written) as it
        # would have long before its rows expire: otherwise the background work it leaves
        # behind slows the first measurement down and looks like noise.
        await connection.execute("VACUUM ANALYZE sessions")
        await connection.execute("VACUUM ANALYZE pageviews")
        await connection.execute("CHECKPOINT")
    finally:
        await connection.close()


async def _expired(url: str) -> int:
    import asyncpg

    connection = await asyncpg.connect(url)
    try:
        return int(
            await connection.fetchval(
                "SELECT count(*) FROM pageviews WHERE viewed_at < now() - interval '13 months'"
            )
        )
    finally:
        await connection.close()


def _summary(results: list[LoadResult]) -> dict[str, Any]:
    seconds = sum(r.seconds for r in results)
    latencies = sorted(lat for r in results for lat in r.latencies_ms)
    if not latencies:
        return {"rps": 0.0, "seconds": round(seconds, 1), "requests": 0, "errors": 0}
    return {
        "rps": round(sum(r.requests for r in results) / seconds, 1) if seconds else 0.0,
        "seconds": round(seconds, 1),
        "requests": sum(r.requests for r in results),
        "errors": sum(r.errors for r in results),
        "p50_ms": round(latencies[len(latencies) // 2], 2),
        "p99_ms": round(latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))], 2),
    }


async def _measure(
    args: argparse.Namespace, collect_url: str, site_key: str, env: dict[str, str]
) -> dict[str, Any]:
    factory = visitor_events(site_key)
    headers = {"User-Agent": USER_AGENT}

    async def load(seconds: float) -> LoadResult:
        return await run_load(
            collect_url, factory, seconds=seconds, connections=args.connections, headers=headers
        )

    await load(5.0)  # warm-up: connection pools, the collector's caches
    before = await load(args.seconds)
    command = [
        sys.executable, "-m", "dashboard.cli", "privacy", "purge", "--site", site_key,
        "--class", "pageviews", "--batch-size", str(args.batch_size),
        "--pause-ratio", str(args.pause_ratio), "--no-progress", "--json",
    ]  # fmt: skip
    purge = await asyncio.create_subprocess_exec(
        *command, env={**os.environ, **env}, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    during: list[LoadResult] = []
    paused: list[LoadResult] = []
    started = time.perf_counter()
    try:
        # Paired windows: the purge runs, then is stopped (SIGSTOP), in turn, until it is done.
        # Both sides of each pair share whatever else the machine is doing at that moment, so
        # the ratio measures the purge's cost rather than a shared machine's drift.
        while purge.returncode is None:
            during.append(await load(args.window))
            if purge.returncode is not None:
                break
            purge.send_signal(signal.SIGSTOP)
            try:
                paused.append(await load(args.window))
            finally:
                purge.send_signal(signal.SIGCONT)
        purge_seconds = time.perf_counter() - started
    finally:
        if purge.returncode is None:
            # Only when measuring failed: never leave a stopped purge behind.
            purge.send_signal(signal.SIGCONT)
            purge.terminate()
    out, err = await asyncio.wait_for(purge.communicate(), timeout=600)
    if purge.returncode != 0:
        raise RuntimeError(f"the purge failed: {err.decode(errors='replace')[-2000:]}")
    report = json.loads(out)
    after = await load(args.seconds)
    active = sum(r.seconds for r in during)
    return {
        "alone_before": _summary([before]),
        "during_purge": _summary(during),
        "purge_stopped": _summary(paused),
        "alone_after": _summary([after]),
        "purge": {
            "deleted": report["deleted"].get("pageviews", 0),
            "batches": report["batches"],
            "seconds_running": round(active, 1),
            "seconds_wall": round(purge_seconds, 1),
            "rows_per_s": round(report["deleted"].get("pageviews", 0) / active, 1),
            "batch_size": args.batch_size,
            "pause_ratio": args.pause_ratio,
        },
    }


async def run(args: argparse.Namespace, settings: Any) -> int:
    from tracker.db import migrate_sync

    url, name = await bench_postgres_url()
    async_url = url.replace("postgresql://", "postgresql+asyncpg://", 1)
    try:
        await asyncio.to_thread(migrate_sync, async_url)
        site_key = await _create_site(async_url)
        seed_started = time.perf_counter()
        await _seed(url, site_key, args.rows)
        seed_seconds = time.perf_counter() - seed_started
        port = free_port()
        env = {
            "CALLTRACK_DATABASE_URL": async_url,
            "CALLTRACK_LOG_LEVEL": "WARNING",
            "CALLTRACK_SECRET_KEY": secrets.token_hex(16),
            "CALLTRACK_REDIS_URL": "",
        }
        with server_process(
            ["-m", "dashboard.cli", "serve", "--port", str(port)],
            env,
            f"http://127.0.0.1:{port}/healthz",
        ):
            data = await _measure(args, f"http://127.0.0.1:{port}/collect", site_key, env)
        data["expired_left"] = await _expired(url)
    finally:
        await drop_bench_database(name)
    # The reference is collect in the windows paired with the purge's: same moments, purge
    # stopped. The before/after measurements are reported to show the machine's drift.
    alone = data["purge_stopped"]["rps"]
    unpaired = (data["alone_before"]["rps"] + data["alone_after"]["rps"]) / 2
    during = data["during_purge"]["rps"]
    data.update(
        rows=args.rows,
        seed_seconds=round(seed_seconds, 1),
        connections=args.connections,
        alone_rps=round(alone, 1),
        during_rps=during,
        ratio=round(during / alone, 3) if alone else 0.0,
        # Against separate runs before and after the purge: includes the machine's own drift,
        # and the background work the deletions leave (WAL writes, autovacuum) on both sides.
        ratio_vs_alone=round(during / unpaired, 3) if unpaired else 0.0,
        target_ratio=TARGET_RATIO,
        cpus=os.cpu_count(),
    )
    data["meets_target"] = data["ratio"] >= TARGET_RATIO and data["expired_left"] == 0
    rows = [
        ("pageviews purged", data["purge"]["deleted"]),
        ("purge seconds (running)", data["purge"]["seconds_running"]),
        ("purge rows/s", data["purge"]["rows_per_s"]),
        ("collect req/s alone (before)", data["alone_before"]["rps"]),
        ("collect req/s, purge running", during),
        ("collect req/s, purge stopped (paired)", alone),
        ("collect req/s alone (after)", data["alone_after"]["rps"]),
        (f"ratio (target >= {TARGET_RATIO})", data["ratio"]),
        ("ratio vs alone before/after", data["ratio_vs_alone"]),
        (
            "p99 ms alone / during",
            f"{data['alone_before'].get('p99_ms')} / {data['during_purge'].get('p99_ms')}",
        ),
        ("expired rows left", data["expired_left"]),
    ]
    output(args, "calltrack bench purge (one collect worker, PostgreSQL)", data, rows)
    return 0
