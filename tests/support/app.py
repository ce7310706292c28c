"""Helpers for tests: settings, free ports and live servers for browser tests."""

from __future__ import annotations

import asyncio
import atexit
import os
import secrets
import shutil
import socket
import tempfile
import threading
from typing import Any

from aiohttp import web

from tracker.config import Settings

CHROMIUM = os.environ.get("CALLTRACK_TEST_CHROMIUM", "/usr/bin/chromium")
BACKENDS = ("sqlite", "postgresql")
# The test applications' carrier spools, removed when the test run ends.
_SPOOLS = tempfile.mkdtemp(prefix="calltrack-test-spools-")
atexit.register(shutil.rmtree, _SPOOLS, ignore_errors=True)


def make_settings(database_url: str, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "database_url": database_url,
        "public_url": "http://calltrack.test",
        "secret_key": "test-secret-key-" + "x" * 32,
        # Each application its own spool, created only if a webhook is spooled (not under var/).
        "spool_dir": os.path.join(_SPOOLS, secrets.token_hex(8)),
    }
    values.update(overrides)
    return Settings(**values)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class LiveServer:
    """An aiohttp application served from its own thread and event loop (browser tests)."""

    def __init__(
        self, app: web.Application, host: str = "127.0.0.1", port: int | None = None
    ) -> None:
        self.app = app
        self.host = host
        self.port = port or free_port()
        self.loop = asyncio.new_event_loop()
        self._runner: web.AppRunner | None = None
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> LiveServer:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self.loop).result(60)
        return self

    async def _start(self) -> None:
        self._runner = web.AppRunner(self.app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, self.host, self.port).start()

    def call(self, coro: Any, timeout: float = 30) -> Any:
        """Run a coroutine on the server's loop (to read the database it uses)."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def stop(self) -> None:
        if self._runner is not None:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self.loop).result(30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        self.loop.close()


def in_thread(function: Any, *args: Any) -> Any:
    """Run blocking set-up in a fresh thread: Playwright's sync API keeps a loop running here."""
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = function(*args)
        except BaseException as exc:
            box["error"] = exc

    thread = threading.Thread(target=target)
    thread.start()
    thread.join()
    if "error" in box:
        raise box["error"]
    return box.get("value")
