"""`calltrack bench NAME [--json]`: the performance harness (see docs/benchmarks.md)."""

from __future__ import annotations

from typing import Any


def register(commands: Any) -> None:
    bench = commands.add_parser("bench", help="run a benchmark; --json prints one JSON object")
    names = bench.add_subparsers(dest="bench_name", required=True, metavar="NAME")
    from dashboard.bench import collect, dni, hub, purge, reports, snippet, webhook

    for module in (collect, dni, webhook, hub, reports, purge, snippet):
        module.register(names)
