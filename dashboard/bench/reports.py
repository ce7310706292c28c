"""`calltrack bench reports`: channel and campaign reports at 1 M and 10 M sessions.

The dataset is generated inside PostgreSQL with `INSERT ... SELECT generate_series` (no rows
travel through Python): 3 sites, 1,000,000 sessions and 50,000 calls over the last 90 days,
then 10× that in a second scratch database. About 60 % of the sessions have a consenting
visitor with about three sessions each, so the multi-touch models have journeys to split.

What is timed is what the dashboard and the API run for a report: `queries.breakdown` for the
channel and the campaign dimension, with the previous-period comparison and the ad spend,
over 30 and 90 days and all three sites — median of several runs after a warm-up.

Why it scales: reports never read the sessions or calls tables. They read the rollups of
`dashboard.reports.rollup` (one row per site, local day, model and dimension value, kept up to
date by the refresher), whose size follows the number of distinct channels and campaigns a day
sees, not the traffic. The primary key (site_id, model, dimension, day, value) is the index: a
report is one range scan per site over at most 90 days × the values of one dimension. Ten
times the traffic adds few rows (the campaigns and pages were already there), so the time
barely moves. Indexes alone could not do that: summing 10× more rows costs 10× the time.
Building the rollups is measured too (it is the refresher's work, not the report's).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import statistics
import time
from typing import Any

from sqlalchemy import text

from dashboard.bench.common import bench_postgres_url, drop_bench_database, output

SESSIONS = 1_000_000
CALLS = 50_000
DAYS = 90
SITES = 3
CAMPAIGNS = 200
PAGES = 300
KEYWORDS = 1000


def register(names: Any) -> None:
    bench = names.add_parser("reports", help="report timings at 1 M and 10 M sessions")
    bench.add_argument("--json", action="store_true", help="print exactly one JSON object")
    bench.add_argument("--output", help="also write the JSON to this file")
    bench.add_argument("--runs", type=int, default=7, help="timed runs per report")
    bench.add_argument(
        "--scale",
        type=float,
        default=1.0,
        help="multiply the base dataset (1 M sessions) by this, e.g. 0.01 for a smoke run",
    )
    bench.add_argument("--no-10x", action="store_true", help="skip the 10× dataset")
    bench.set_defaults(handler=run)


# Channel, source, medium of the generated sessions; campaigns and keywords on the paid ones.
CHANNELS = [
    ("Organic Search", "google", "organic"),
    ("Paid Search", "google", "cpc"),
    ("Direct", "(direct)", "(none)"),
    ("Organic Social", "facebook", "referral"),
    ("Email", "newsletter", "email"),
    ("Referral", "velo-forum.fr", "referral"),
    ("Paid Social", "facebook", "paid_social"),
    ("Display", "google", "display"),
]


def _array(values: list[str]) -> str:
    return "ARRAY[" + ",".join("'" + v.replace("'", "''") + "'" for v in values) + "]"


def _generate_sql(sessions: int, calls: int) -> list[str]:
    """Build the statements that fill a migrated, empty database."""
    channels = _array([c for c, _, _ in CHANNELS])
    sources = _array([s for _, s, _ in CHANNELS])
    mediums = _array([m for _, _, m in CHANNELS])
    spacing = max(sessions // calls, 1)
    visitors = max(sessions // 3, 1)
    seconds = DAYS * 86400
    return [
        "INSERT INTO accounts (id, name, created_at) VALUES (1, 'bench', now())",
        "INSERT INTO sites (id, account_id, site_key, name, domain, country, timezone, language,"
        " consent_mode, lease_hold_minutes, pool_exhaustion, record_calls, recording_notice,"
        " whisper, settings, created_at) SELECT s, 1, 'ctbench' || s, 'Site ' || s,"
        " 'shop' || s || '.example', 'FR', 'Europe/Paris', 'fr', 'required', 30, 'overflow',"
        " false, true, true, '{}', now() FROM generate_series(1, 3) s",
        # Pseudo-random but deterministic: multiplicative hashes of the row number.
        f"""
        INSERT INTO sessions (id, site_id, visitor_id, consent, started_at, last_seen_at,
            landing_url, channel, source, medium, campaign, term, click_ids, gclid,
            pageview_count)
        SELECT 'b' || lpad(to_hex(i), 15, '0'), 1 + i % {SITES},
               CASE WHEN i % 5 < 3 THEN 'v' || ((i * 7) % {visitors}) END,
               i % 5 < 3,
               now() - make_interval(secs => (i::bigint * 7919) % {seconds}),
               now() - make_interval(secs => (i::bigint * 7919) % {seconds}) + interval '6 minutes',
               'https://shop.example/p/' || (h / 8) % {PAGES} || '?utm_source=x',
               ({channels})[1 + h % 8],
               ({sources})[1 + h % 8],
               ({mediums})[1 + h % 8],
               CASE WHEN h % 8 IN (1, 6, 7) OR i % 4 = 0
                    THEN 'campaign-' || (h / 2400) % {CAMPAIGNS} END,
               CASE WHEN h % 8 = 1 THEN 'keyword ' || (h / 480000) % {KEYWORDS} END,
               '{{}}',
               CASE WHEN h % 8 = 1 THEN 'Cj0KCQ' || md5('g' || i) END,
               1 + i % 6
        -- h: 32 bits of md5 of the row number. The called sessions are every twentieth one,
        -- so a linear formula of i would give them only a handful of channels or campaigns.
        FROM (
            SELECT i, ('x' || substr(md5(i::text), 1, 8))::bit(32)::bigint AS h
            FROM generate_series(1, {sessions}) i
        ) g
        """,
        f"""
        INSERT INTO calls (site_id, provider, provider_call_id, direction, caller_e164,
            first_time_caller, tracking_e164, started_at, answered_at, ended_at, status,
            outcome, duration_s, last_sequence, session_id, channel, source, medium, campaign,
            term, method, confidence, outcome_tag)
        SELECT s.site_id, 'simulated', 'CA' || md5('c' || k), 'inbound',
               '+336' || lpad(((k * 7) % 99999999)::text, 8, '0'), k % 3 = 0, '+33199000001',
               s.started_at + interval '4 minutes',
               CASE WHEN k % 5 <> 0 THEN s.started_at + interval '4 minutes 10 seconds' END,
               s.started_at + interval '7 minutes',
               CASE WHEN k % 5 <> 0 THEN 'completed' ELSE 'no-answer' END,
               CASE WHEN k % 5 <> 0 THEN 'answered' ELSE 'missed' END,
               CASE WHEN k % 5 <> 0 THEN 30 + (k * 13) % 400 ELSE 0 END, 1,
               s.id, s.channel, s.source, s.medium, s.campaign, s.term,
               'pool-session', 1.0,
               CASE k % 10 WHEN 1 THEN 'sale' WHEN 2 THEN 'lead' END
        FROM generate_series(1, {calls}) k
        JOIN sessions s ON s.id = 'b' || lpad(to_hex(k * {spacing}), 15, '0')
        """,
        f"""
        INSERT INTO ad_costs (account_id, site_id, day, channel, source, medium, campaign,
            cost, currency, import_id, imported_at)
        SELECT 1, NULL, current_date - d, c.channel, c.source, c.medium, 'campaign-' || n,
               (10 + (d * n) % 90)::numeric, 'EUR', 'bench', now()
        FROM generate_series(0, {DAYS}) d, generate_series(0, 49) n,
             (VALUES ('Paid Search', 'google', 'cpc'), ('Paid Social', 'facebook', 'paid_social'))
                 AS c(channel, source, medium)
        """,
        "ANALYZE",
    ]


async def _prepare(url: str, sessions: int, calls: int) -> dict[str, float]:
    """Generate the dataset and build the rollups; return how long each step took."""
    from dashboard.reports import rollup
    from tracker.clock import SystemClock
    from tracker.db import Database, migrate

    await migrate(url)
    database = Database(url)
    timings: dict[str, float] = {}
    try:
        started = time.perf_counter()
        async with database.engine.begin() as connection:
            # Bulk load the way a restore does: secondary indexes built once at the end (a
            # sorted build instead of 10 M random insertions) and foreign-key triggers off
            # (the generator only writes valid references). Needs a superuser, as the
            # scratch-database server of the bench has; without one it is only slower.
            indexes = list(
                await connection.execute(
                    text(
                        "SELECT indexname, indexdef FROM pg_indexes WHERE tablename IN"
                        " ('sessions', 'calls') AND indexname LIKE 'ix\\_%'"
                    )
                )
            )
            for index_name, _ in indexes:
                await connection.execute(text(f'DROP INDEX "{index_name}"'))
            with contextlib.suppress(Exception):
                async with connection.begin_nested():
                    await connection.execute(text("SET LOCAL session_replication_role = replica"))
            for statement in _generate_sql(sessions, calls):
                await connection.execute(text(statement))
            for _, definition in indexes:
                await connection.execute(text(definition))
            await connection.execute(text("ANALYZE"))
        timings["generate_s"] = round(time.perf_counter() - started, 1)
        started = time.perf_counter()
        await rollup.rebuild_all(database, SystemClock())
        async with database.engine.begin() as connection:
            await connection.execute(text("ANALYZE report_call_days"))
            await connection.execute(text("ANALYZE report_session_days"))
        timings["rollup_s"] = round(time.perf_counter() - started, 1)
        async with database.engine.connect() as connection:
            counts = (
                await connection.execute(
                    text(
                        "SELECT (SELECT count(*) FROM sessions), (SELECT count(*) FROM calls),"
                        " (SELECT count(*) FROM report_call_days),"
                        " (SELECT count(*) FROM report_session_days)"
                    )
                )
            ).one()
        timings.update(
            sessions=counts[0],
            calls=counts[1],
            call_rollup_rows=counts[2],
            session_rollup_rows=counts[3],
        )
    finally:
        await database.close()
    return timings


async def _time_reports(url: str, runs: int) -> dict[str, float]:
    """Time the channel and campaign reports over 30 and 90 days (median ms)."""
    from dashboard.reports import queries
    from tracker.clock import SystemClock
    from tracker.db import Database

    database = Database(url)
    results: dict[str, float] = {}
    try:
        async with database.sessions() as db:
            sites = tuple(await queries.account_sites(db, 1))
        today = queries.today_for(sites, SystemClock().now())
        for days in (30, 90):
            period = queries.Period(today - dt.timedelta(days=days - 1), today)
            scope = queries.Scope(1, sites, period)
            for dimension in ("channel", "campaign"):
                samples = []
                for attempt in range(runs + 1):
                    async with database.sessions() as db:
                        started = time.perf_counter()
                        rows, total = await queries.breakdown(db, scope, dimension)
                        elapsed = (time.perf_counter() - started) * 1000
                    if attempt:  # the first run warms the caches and the connection pool
                        samples.append(elapsed)
                results[f"{dimension}_{days}d_ms"] = round(statistics.median(samples), 1)
                results[f"{dimension}_{days}d_rows"] = len(rows)
                results[f"{dimension}_{days}d_calls"] = round(total.current.calls / 1000)
    finally:
        await database.close()
    return results


async def _measure(sessions: int, calls: int, runs: int) -> dict[str, Any]:
    url, name = await bench_postgres_url()
    async_url = url.replace("postgresql://", "postgresql+asyncpg://", 1)
    try:
        data: dict[str, Any] = await _prepare(async_url, sessions, calls)
        data.update(await _time_reports(async_url, runs))
        return data
    finally:
        await drop_bench_database(name)


async def run(args: argparse.Namespace, settings: Any) -> int:
    sessions, calls = int(SESSIONS * args.scale), int(CALLS * args.scale)
    base = await _measure(sessions, calls, args.runs)
    data: dict[str, Any] = {"base": base, "target_ms": 1000, "target_ratio": 2.0}
    reports = [k for k in base if k.endswith("_ms")]
    if not args.no_10x:
        tenfold = await _measure(sessions * 10, calls * 10, args.runs)
        data["tenfold"] = tenfold
        data["ratios"] = {k: round(tenfold[k] / base[k], 2) if base[k] else None for k in reports}
        data["meets_target"] = all(base[k] < 1000 and tenfold[k] < 2000 for k in reports) and all(
            r is not None and r <= 2.0 for r in data["ratios"].values()
        )
    else:
        data["meets_target"] = all(base[k] < 1000 for k in reports)
    rows: list[tuple[str, Any]] = [
        ("sessions / calls", f"{base['sessions']:,} / {base['calls']:,}"),
        ("generate s / rollup build s", f"{base['generate_s']} / {base['rollup_s']}"),
        (
            "rollup rows (calls / sessions)",
            f"{base['call_rollup_rows']:,} / {base['session_rollup_rows']:,}",
        ),
    ]
    rows += [(f"{k} (1x)", base[k]) for k in reports]
    if "tenfold" in data:
        tenfold = data["tenfold"]
        rows += [
            ("sessions / calls (10x)", f"{tenfold['sessions']:,} / {tenfold['calls']:,}"),
            (
                "generate s / rollup build s (10x)",
                f"{tenfold['generate_s']} / {tenfold['rollup_s']}",
            ),
            (
                "rollup rows (10x)",
                f"{tenfold['call_rollup_rows']:,} / {tenfold['session_rollup_rows']:,}",
            ),
        ]
        rows += [(f"{k} (10x, ratio {data['ratios'][k]})", tenfold[k]) for k in reports]
    rows.append(("meets target (< 1 s, 10x <= 2x)", data["meets_target"]))
    output(args, "calltrack bench reports (PostgreSQL, all 3 sites, with comparison)", data, rows)
    return 0
