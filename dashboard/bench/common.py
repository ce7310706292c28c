"""Shared pieces of the benchmarks: a lean HTTP load generator, server processes, output."""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

DEFAULT_BENCH_POSTGRES = "postgresql://postgres@127.0.0.1:5432/test"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class LoadResult:
    requests: int
    errors: int
    seconds: float
    latencies_ms: list[float] = field(default_factory=list)

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    def percentile(self, q: float) -> float:
        if not self.latencies_ms:
            return float("nan")
        ordered = sorted(self.latencies_ms)
        index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
        return ordered[index]


# A body factory gets the previous response body of this connection (or None) and returns the
# next request body: that is how a virtual visitor carries its session id from one event on.
BodyFactory = Callable[[int, bytes | None], bytes]


async def _connection(
    host: str,
    port: int,
    path: str,
    make_body: BodyFactory,
    deadline: float,
    result: LoadResult,
    extra_headers: dict[str, str],
) -> None:
    """Drive one keep-alive connection with raw HTTP/1.1 (far lighter than a client library).

    The load generator shares a 2-core machine with the server under test, so its own cost
    must be small next to the server's or it caps the measured throughput.
    """
    reader, writer = await asyncio.open_connection(host, port)
    headers = "".join(f"{k}: {v}\r\n" for k, v in extra_headers.items())
    previous: bytes | None = None
    sequence = 0
    try:
        while time.perf_counter() < deadline:
            body = make_body(sequence, previous)
            sequence += 1
            request = (
                f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\n"
                f"Content-Type: text/plain\r\nContent-Length: {len(body)}\r\n{headers}\r\n"
            ).encode() + body
            started = time.perf_counter()
            writer.write(request)
            status_line = await reader.readline()
            length = 0
            while True:
                line = await reader.readline()
                if line in (b"\r\n", b""):
                    break
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value.strip())
            previous = await reader.readexactly(length) if length else b""
            result.latencies_ms.append((time.perf_counter() - started) * 1000)
            result.requests += 1
            parts = status_line.split()
            if len(parts) < 2 or not parts[1].startswith((b"2", b"3")):
                result.errors += 1
    except (ConnectionError, asyncio.IncompleteReadError):
        result.errors += 1
    finally:
        writer.close()


async def run_load(
    url: str,
    make_body: BodyFactory,
    *,
    seconds: float,
    connections: int,
    headers: dict[str, str] | Callable[[int], dict[str, str]] | None = None,
) -> LoadResult:
    """Send POST requests on `connections` keep-alive connections for `seconds`.

    `headers` may be a function of the connection's index, e.g. to give each simulated
    visitor its own X-Forwarded-For address.
    """
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    result = LoadResult(requests=0, errors=0, seconds=seconds)
    started = time.perf_counter()
    deadline = started + seconds
    await asyncio.gather(
        *(
            _connection(
                parts.hostname or "127.0.0.1",
                parts.port or 80,
                parts.path or "/",
                make_body,
                deadline,
                result,
                headers(index) if callable(headers) else (headers or {}),
            )
            for index in range(connections)
        )
    )
    result.seconds = time.perf_counter() - started
    return result


def wait_http(url: str, timeout: float = 60) -> None:
    """Wait until `url` answers (a server process is up)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except Exception:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{url} did not answer within {timeout} s") from None
            time.sleep(0.2)


@contextmanager
def server_process(
    args: list[str], env: dict[str, str], health_url: str
) -> Iterator[subprocess.Popen[bytes]]:
    """Start a server in its own process (its own core), wait for it, stop it afterwards."""
    process = subprocess.Popen(
        [sys.executable, *args],
        env={**os.environ, **env},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        wait_http(health_url)
        yield process
    except Exception:
        process.terminate()
        _, err = process.communicate(timeout=10)
        sys.stderr.write(err.decode(errors="replace")[-4000:])
        raise
    finally:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()


async def bench_postgres_url() -> tuple[str, str]:
    """Create a scratch PostgreSQL database for a benchmark; return (url, name).

    The server is CALLTRACK_BENCH_POSTGRES_URL (default: the local `test` database's server).
    """
    base = os.environ.get("CALLTRACK_BENCH_POSTGRES_URL", DEFAULT_BENCH_POSTGRES)
    name = f"calltrack_bench_{secrets.token_hex(4)}"
    await _pg_admin(base, f'CREATE DATABASE "{name}"')
    return base.rsplit("/", 1)[0] + "/" + name, name


async def drop_bench_database(name: str) -> None:
    base = os.environ.get("CALLTRACK_BENCH_POSTGRES_URL", DEFAULT_BENCH_POSTGRES)
    await _pg_admin(base, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


async def _pg_admin(url: str, sql: str) -> None:
    import asyncpg

    connection = await asyncpg.connect(url)
    try:
        await connection.execute(sql)
    finally:
        await connection.close()


def print_table(title: str, rows: list[tuple[str, Any]]) -> None:
    width = max(len(name) for name, _ in rows)
    print(title)
    print("-" * (width + 20))
    for name, value in rows:
        shown = f"{value:,.2f}" if isinstance(value, float) else str(value)
        print(f"{name:<{width}}  {shown}")


def output(args: Any, title: str, data: dict[str, Any], rows: list[tuple[str, Any]]) -> None:
    """Print exactly one JSON object with --json, else a table; also write JSON to a file."""
    if getattr(args, "output", None):
        with open(args.output, "w", encoding="utf-8") as handle:
            json.dump(data, handle, indent=2)
    if args.json:
        print(json.dumps(data))
    else:
        print_table(title, rows)


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")
