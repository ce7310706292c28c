"""A TCP forwarder that a test can cut, to take a real PostgreSQL away from an application.

`cut()` aborts every forwarded connection and stops listening (new connections are refused,
as while PostgreSQL restarts); `restore()` listens again on the same port. `stall()` keeps every
connection open but forwards nothing (a network partition, a server that hangs) until `flow()`.
"""

from __future__ import annotations

import asyncio
import contextlib
from urllib.parse import urlsplit

from support.app import free_port


class CuttableProxy:
    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.port = free_port()
        self._server: asyncio.Server | None = None
        self._transports: set[asyncio.BaseTransport] = set()
        self._flowing = asyncio.Event()
        self._flowing.set()

    def stall(self) -> None:
        self._flowing.clear()

    def flow(self) -> None:
        self._flowing.set()

    async def restore(self) -> None:
        self._server = await asyncio.start_server(self._forward, "127.0.0.1", self.port)

    async def cut(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        for transport in list(self._transports):
            transport.abort()
        self._transports.clear()

    async def _forward(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.transport.abort()
            return
        self._transports |= {writer.transport, upstream_writer.transport}

        async def pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
            with contextlib.suppress(OSError, RuntimeError):
                while data := await source.read(65536):
                    await self._flowing.wait()
                    sink.write(data)
                    await sink.drain()
            sink.transport.abort()

        await asyncio.gather(pipe(reader, upstream_writer), pipe(upstream_reader, writer))
        self._transports -= {writer.transport, upstream_writer.transport}


async def forward(url: str, default_port: int) -> tuple[CuttableProxy, str]:
    """Start a forwarder to the server of `url` (PostgreSQL, Redis); return it and the URL that
    reaches the server through it (same scheme, user, database)."""
    parts = urlsplit(url)
    proxy = CuttableProxy(parts.hostname or "127.0.0.1", parts.port or default_port)
    await proxy.restore()
    user = f"{parts.username}@" if parts.username else ""
    return proxy, parts._replace(netloc=f"{user}127.0.0.1:{proxy.port}").geturl()
