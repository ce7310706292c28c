"""Run the `calltrack` command line from a test."""

from __future__ import annotations

import threading
from typing import Any

from dashboard.cli import main


def run_cli(argv: list[str]) -> int:
    """Run the CLI in a fresh thread: its asyncio.run needs a thread without a running loop."""
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["rc"] = main(argv)
        except SystemExit as exc:
            box["rc"] = exc.code
        except BaseException as exc:
            box["error"] = exc

    thread = threading.Thread(target=target)
    thread.start()
    thread.join()
    if "error" in box:
        raise box["error"]
    return int(box["rc"])
