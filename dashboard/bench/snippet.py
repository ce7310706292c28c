"""`calltrack bench snippet`: the visitor snippet's size and its main-thread time on page load.

A merchant page (a product list) comes from one origin and the snippet and a collect endpoint
that answers with a tracking number from another, as on a real site; Debian's Chromium loads
it while a trace records the main thread. The snippet's cost is the CPU time of the tasks the
trace attributes to its URL (its evaluation, then its timers, observers and listeners until
the number is swapped); the page's own main-thread CPU time in the same load is the baseline.
CPU time (the trace's `tdur`) leaves out the time a shared machine gives to other processes.

Needs Playwright (installed with the test extras: `make test`) and /usr/bin/chromium.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from typing import Any

from aiohttp import web

from dashboard.bench.common import free_port, output
from tracker.phones import phone_forms
from tracker.sites import snippet_for
from widget.http import render_snippet, snippet_config
from widget.snippet_size import GZIP_BUDGET_BYTES, snippet_size

CHROMIUM = "/usr/bin/chromium"  # Debian's, as the browser tests use
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking"]
BUSINESS = "+33123456789"
TRACKING = "+33987654321"
TARGET_MS = 10.0
TARGET_PRODUCTS = 300


def register(names: Any) -> None:
    bench = names.add_parser("snippet", help="snippet size and main-thread time in Chromium")
    bench.add_argument("--json", action="store_true", help="print exactly one JSON object")
    bench.add_argument("--output", help="also write the JSON to this file")
    bench.add_argument("--runs", type=int, default=5, help="page loads per page size (min kept)")
    bench.add_argument(
        "--products",
        type=int,
        nargs="+",
        default=[TARGET_PRODUCTS, 1500],
        help="product list sizes (300 items: about 1,200 text nodes, 33 kB of text)",
    )
    bench.set_defaults(handler=run)


def product_list(count: int) -> str:
    """A shop's category page: products, prices, dates, the business number three times."""
    products = "".join(
        f'<li class="p"><a href="/p/{i}"><span>Produit {i}</span></a> <b>{i * 7 % 100},99 €</b>'
        f"<small>Réf. {1000 + i} · livré le 12/0{i % 9 + 1}/2025</small></li>"
        for i in range(count)
    )
    return (
        '<header>Service client <a href="tel:+33123456789">01 23 45 67 89</a></header>'
        f"<ul>{products}</ul><footer>+33 (0)1 23 45 67 89 · 01 98 76 54 32</footer>"
    )


def _apps(script_origin: str) -> tuple[web.Application, web.Application]:
    pages = web.Application()
    script = web.Application()
    config = snippet_config("ct-bench", script_origin, "required", (BUSINESS,))
    body = render_snippet(config)
    answer = {
        "s": "5e55105e55105e55105e55105e551055",
        "v": None,
        "n": [
            {
                "from": phone_forms(BUSINESS).as_snippet(with_display=True),
                "to": phone_forms(TRACKING).as_snippet(with_display=True),
                "kind": "pool",
            }
        ],
    }

    async def page(request: web.Request) -> web.Response:
        count = int(request.match_info["count"])
        html = (
            '<!doctype html><html><head><meta charset="utf-8"><title>Shop</title>'
            f'<link rel="icon" href="data:,">{snippet_for("ct-bench", script_origin)}</head>'
            f"<body>{product_list(count)}</body></html>"
        )
        return web.Response(text=html, content_type="text/html")

    async def snippet(request: web.Request) -> web.Response:
        return web.Response(
            text=body,
            content_type="application/javascript",
            headers={"Access-Control-Allow-Origin": "*", "Cache-Control": "no-store"},
        )

    async def collect(request: web.Request) -> web.Response:
        await request.read()
        return web.json_response(answer, headers={"Access-Control-Allow-Origin": "*"})

    pages.router.add_get("/p/{count:\\d+}", page)
    script.router.add_get("/ct.js", snippet)
    script.router.add_post("/collect", collect)
    return pages, script


def _main_thread_ms(trace: dict[str, Any]) -> tuple[float, float]:
    """Return (snippet CPU ms, page CPU ms) on the renderer's main thread from a trace."""
    events = [e for e in trace["traceEvents"] if e.get("ph") == "X"]
    ours = [
        e
        for e in events
        if e.get("name") in ("EvaluateScript", "FunctionCall")
        and "/ct.js" in str(((e.get("args") or {}).get("data") or {}).get("url", ""))
    ]
    if not ours:
        raise RuntimeError("the trace holds no task of the snippet")
    thread = ours[0]["tid"]

    def cpu(selected: list[dict[str, Any]]) -> float:
        total, end = 0.0, -1
        # Nested events are inside their parent's time already.
        for event in sorted(selected, key=lambda e: e["ts"]):
            if event["ts"] < end:
                continue
            end = event["ts"] + event.get("dur", 0)
            total += event.get("tdur", 0) / 1000
        return total

    # Every task of the main thread from navigation until the number is swapped (and 200 ms).
    names = ("ThreadControllerImpl::RunTask", "RunTask")
    tasks = [e for e in events if e["tid"] == thread and e.get("name") in names]
    return cpu([e for e in ours if e["tid"] == thread]), cpu(tasks)


async def _measure(args: argparse.Namespace) -> dict[str, Any]:
    from playwright.async_api import async_playwright

    script_port, page_port = free_port(), free_port()
    # Two origins: the pages on 127.0.0.1, the snippet and collect on localhost.
    script_origin = f"http://localhost:{script_port}"
    page_origin = f"http://127.0.0.1:{page_port}"
    runners: list[web.AppRunner] = []
    try:
        for app, port in zip(_apps(script_origin), (page_port, script_port), strict=True):
            runner = web.AppRunner(app, access_log=None)
            await runner.setup()
            runners.append(runner)
            await web.TCPSite(runner, "127.0.0.1", port).start()
        results: dict[str, Any] = {}
        async with async_playwright() as playwright:
            browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            try:
                for count in args.products:
                    runs = []
                    for _ in range(max(1, args.runs)):
                        context = await browser.new_context()
                        page = await context.new_page()
                        await browser.start_tracing(
                            page=page, categories=["devtools.timeline", "toplevel"]
                        )
                        await page.goto(f"{page_origin}/p/{count}")
                        await page.wait_for_function(
                            "document.querySelector('header').textContent.includes('09 87')"
                        )
                        await page.wait_for_timeout(200)
                        trace = json.loads(await browser.stop_tracing())
                        await context.close()
                        runs.append(_main_thread_ms(trace))
                    snippet_ms = [r[0] for r in runs]
                    page_ms = [r[1] for r in runs]
                    results[str(count)] = {
                        "snippet_cpu_ms_min": round(min(snippet_ms), 2),
                        "snippet_cpu_ms_median": round(statistics.median(snippet_ms), 2),
                        "page_cpu_ms_median": round(statistics.median(page_ms), 2),
                        "share_of_page_median": round(
                            statistics.median(s / p for s, p in runs if p), 3
                        ),
                        "runs": len(runs),
                    }
            finally:
                await browser.close()
        return results
    finally:
        for runner in runners:
            await runner.cleanup()


def _require_chromium() -> None:
    try:
        import playwright  # noqa: F401
    except ImportError:
        raise SystemExit(
            "Playwright is missing: it comes with the test extras (`make test` installs them)"
        ) from None
    if not os.path.exists(CHROMIUM):
        raise SystemExit(f"Chromium is missing at {CHROMIUM}: `make test` installs Debian's")


async def run(args: argparse.Namespace, settings: Any) -> int:
    _require_chromium()
    started = time.perf_counter()
    loads = await _measure(args)
    size = snippet_size()
    at_target = loads.get(str(TARGET_PRODUCTS))
    data: dict[str, Any] = {
        "bench": "snippet",
        "size": size,
        "gzip_budget_bytes": GZIP_BUDGET_BYTES,
        "size_met": size["gzipped"] <= GZIP_BUDGET_BYTES
        and size["served_gzipped"] <= GZIP_BUDGET_BYTES,
        "main_thread": loads,
        "target_ms": TARGET_MS,
        "target_products": TARGET_PRODUCTS,
        "time_met": None if at_target is None else at_target["snippet_cpu_ms_median"] < TARGET_MS,
        "seconds": round(time.perf_counter() - started, 1),
    }
    rows: list[tuple[str, Any]] = [
        ("snippet gzip bytes, code (<= 3000)", size["gzipped"]),
        ("  as served, one business number", size["served_gzipped"]),
        (
            "  two numbers + contact widget loader",
            size["served_gzipped_two_numbers_contact_widget"],
        ),
    ]
    for count, load in loads.items():
        rows.append(
            (
                f"main thread, {count} products",
                f"snippet {load['snippet_cpu_ms_median']} ms CPU (min "
                f"{load['snippet_cpu_ms_min']}) = {100 * load['share_of_page_median']:.1f} % "
                f"of the page's {load['page_cpu_ms_median']} ms",
            )
        )
    rows.append(
        (f"target: < {TARGET_MS:g} ms at {TARGET_PRODUCTS} products", _met(data["time_met"]))
    )
    output(args, "calltrack bench snippet (Chromium)", data, rows)
    return 0


def _met(value: bool | None) -> str:
    return "not measured" if value is None else "met" if value else "not met"
