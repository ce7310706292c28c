"""Run the `calltrack` command line from a test."""

from __future__ import annotations

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
