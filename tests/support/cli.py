"""Run the `calltrack` command line from a test."""

from __future__ import annotations

import asyncio
from typing import Any

from dashboard.cli import main
from support.app import in_thread


def run_cli(argv: list[str]) -> int:
    """Run the CLI in a fresh thread: its asyncio.run needs a thread without a running loop."""

    def status() -> Any:
        try:
            return main(argv)
        except SystemExit as exc:
            return exc.code

    return int(in_thread(status))


async def run_cli_beside(argv: list[str]) -> int:
    """Run the CLI while this test's event loop keeps going, as a second process would.

    A test that calls run_cli() from a coroutine blocks its loop: an application started in
    that loop can be stopped half-way through a SQLite write transaction (a background
    refresh, say), and the command then waits for a lock nobody can release.
    """
    return await asyncio.to_thread(run_cli, argv)
