"""`calltrack bench hub`: console fan-out against a bare `websockets` broadcast server.

The rule is the websocket shootout's (github.com/hashrocket/websocket-shootout, `websocket-bench
broadcast -c 4 -s 40`): N clients stay connected while 4 broadcasters each send a message and
wait until it has reached all N before sending the next; 40 samples per step; a step passes
while the 95th percentile of that round trip stays under 500 ms. (The shootout stops the clock
when the server says it has sent to everyone; we stop it when the last client has received,
which is stricter.)

Ours: a broadcast is a visitor's pageview (POST /collect), which the hub fans out to N advisor
sockets that signed in and subscribed; the latency runs from the visitor's request to each
advisor's socket. Bare: `websockets.broadcast` echoes a message of the same size to everyone.
Each server is one process (ours: in-process hub and SQLite, the embedded default). Each has
its own load generator process (raw sockets and epoll: it must cost little per message, or it
would cap both servers and hide the difference), and the two are measured alternately, step by
step, so that a busy machine weighs on both alike. Server CPU time per delivered message is
reported too: unlike latency, it hardly depends on what else the machine is doing.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import http.client
import json
import os
import resource
import secrets
import select
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dashboard.bench.common import free_port, output, server_process

STEPS = "1000,2000,5000,7500,10000,12500,15000,17500,20000"
LIMIT_MS = 500.0
PERCENTILE = 95
CONCURRENT = 4
SAMPLES = 40
# Handshakes in flight at once: under the listen backlog (aiohttp 128, websockets 100), so
# no SYN is dropped and retried a second later.
CONNECT_BATCH = 96
# A broadcast that has not reached everyone after this long failed (10 times the limit).
BROADCAST_TIMEOUT = 5.0
# Client frames must be masked (RFC 6455 section 5.3); a zero key leaves the payload as is,
# which servers accept and which spares the load generator a Python XOR per byte.
ZERO_MASK = b"\x00\x00\x00\x00"
MARKER = b"bench:"
USER_AGENT = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/126.0.0.0 Safari/537.36"
)
PASSWORD = "bench-password-not-secret"
perf_counter = time.perf_counter


def register(names: Any) -> None:
    bench = names.add_parser("hub", help="console fan-out latency and capacity vs bare websockets")
    bench.add_argument("--json", action="store_true", help="print exactly one JSON object")
    bench.add_argument("--output", help="also write the JSON to this file")
    bench.add_argument("--steps", default=STEPS, help="connection counts to ramp through")
    bench.add_argument("--samples", type=int, default=SAMPLES, help="broadcasts per step")
    bench.add_argument("--concurrent", type=int, default=CONCURRENT, help="broadcasters")
    bench.add_argument("--limit-ms", type=float, default=LIMIT_MS, help="p95 limit per step")
    bench.add_argument(
        "--latency-samples", type=int, default=100, help="paced pageviews at the first step"
    )
    bench.set_defaults(handler=run)


# -- websocket frames, by hand: the load generator's per-message cost must stay tiny -----------


def client_frame(payload: bytes, opcode: int = 0x1) -> bytes:
    length = len(payload)
    if length < 126:
        header = bytes((0x80 | opcode, 0x80 | length))
    elif length < 65536:
        header = bytes((0x80 | opcode, 0x80 | 126)) + length.to_bytes(2, "big")
    else:
        header = bytes((0x80 | opcode, 0x80 | 127)) + length.to_bytes(8, "big")
    return header + ZERO_MASK + payload


def handshake(host: str, port: int, path: str, cookie: str | None) -> bytes:
    key = base64.b64encode(secrets.token_bytes(16)).decode()
    lines = [
        f"GET {path} HTTP/1.1",
        f"Host: {host}:{port}",
        "Upgrade: websocket",
        "Connection: Upgrade",
        f"Sec-WebSocket-Key: {key}",
        "Sec-WebSocket-Version: 13",
    ]
    if cookie:
        lines.append(f"Cookie: {cookie}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


class Client:
    """One receiving websocket: a buffer for a partial frame and its pong counter."""

    __slots__ = ("buffer", "counted", "next_id", "recv", "sock")

    def __init__(self, sock: socket.socket, counted: bool = True) -> None:
        self.sock = sock
        self.recv = sock.recv
        self.buffer = b""
        self.next_id = 2
        self.counted = counted


@dataclass
class Pending:
    started: float
    remaining: int
    broadcaster: int


@dataclass
class Step:
    connections: int
    rtt_ms: list[float] = field(default_factory=list)
    delivery_ms: list[float] = field(default_factory=list)
    failed: int = 0
    dropped: int = 0
    server_cpu_s: float = 0.0
    client_cpu_s: float = 0.0

    @staticmethod
    def _pct(values: list[float], q: float) -> float:
        if not values:
            return BROADCAST_TIMEOUT * 1000  # nothing arrived: as bad as a timed-out broadcast
        ordered = sorted(values)
        return ordered[min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))]

    def summary(self) -> dict[str, Any]:
        deliveries = max(1, len(self.delivery_ms))
        return {
            "connections": self.connections,
            "p95_rtt_ms": round(self._pct(self.rtt_ms, PERCENTILE), 1),
            "p50_rtt_ms": round(self._pct(self.rtt_ms, 50), 1),
            "max_rtt_ms": round(max(self.rtt_ms, default=BROADCAST_TIMEOUT * 1000), 1),
            "delivery_p50_ms": round(self._pct(self.delivery_ms, 50), 2),
            "delivery_p99_ms": round(self._pct(self.delivery_ms, 99), 2),
            # CPU time per delivered message: far less moved by other load than latency is.
            "server_us_per_delivery": round(self.server_cpu_s / deliveries * 1e6, 2),
            "client_us_per_delivery": round(self.client_cpu_s / deliveries * 1e6, 2),
            "broadcasts": len(self.rtt_ms),
            "failed_broadcasts": self.failed,
            "dropped_connections": self.dropped,
        }


class LoadGenerator:
    """Hold N websockets, send broadcasts, time each delivery; one thread, one epoll."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        path: str,
        cookie: str | None,
        subscribe: bool,
        server_pid: int,
        concurrent: int,
        make_broadcasters: Callable[[LoadGenerator, int], list[socket.socket]],
        send_broadcast: Callable[[socket.socket, int], None],
    ) -> None:
        self.host, self.port, self.path = host, port, path
        self.cookie, self.subscribe = cookie, subscribe
        self.server_pid = server_pid
        self.epoll = select.epoll()
        self.clients: dict[int, Client] = {}
        self.receivers = 0
        self.send_broadcast = send_broadcast
        self.pending: dict[int, Pending] = {}
        self.step: Step | None = None
        self.frame_bytes = 0
        # Descriptors other than the receivers' (broadcasters, the command pipe) → handler.
        self.others: dict[int, Callable[[], None]] = {}
        self.broadcasters: list[socket.socket] = []
        self.broadcasters = make_broadcasters(self, concurrent)
        self.sequence = 0

    # -- connecting ----------------------------------------------------------------------------

    def open_websocket(self, *, counted: bool) -> socket.socket:
        sock = socket.create_connection((self.host, self.port), timeout=30)
        sock.sendall(handshake(self.host, self.port, self.path, self.cookie))
        return sock

    def finish_handshake(self, sock: socket.socket) -> bytes:
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(65536)
            if not chunk:
                raise ConnectionError("the server closed during the handshake")
            data += chunk
        head, _, rest = data.partition(b"\r\n\r\n")
        if b" 101 " not in head.split(b"\r\n", 1)[0]:
            raise ConnectionError(f"handshake refused: {head[:200]!r}")
        return rest

    def read_result(self, sock: socket.socket, data: bytes) -> bytes:
        """Wait for the subscribe result; return what followed it."""
        while True:
            frame, rest = _split_frame(data)
            if frame is None:
                chunk = sock.recv(65536)
                if not chunk:
                    raise ConnectionError("closed before the subscribe result")
                data += chunk
                continue
            if b'"type":"result"' in frame:
                if b'"success":true' not in frame:
                    raise ConnectionError(f"subscribe refused: {frame[:300]!r}")
                return rest
            data = rest

    def register(self, sock: socket.socket, rest: bytes, *, counted: bool) -> None:
        sock.setblocking(False)
        client = Client(sock, counted)
        client.buffer = rest
        self.clients[sock.fileno()] = client
        self.epoll.register(sock.fileno(), select.EPOLLIN)
        if counted:
            self.receivers += 1

    def grow(self, total: int) -> None:
        """Open receiving sockets until `total` are connected (and subscribed)."""
        subscribe = client_frame(b'{"id":1,"type":"subscribe","sites":null}')
        while self.receivers < total:
            batch = [
                self.open_websocket(counted=True)
                for _ in range(min(CONNECT_BATCH, total - self.receivers))
            ]
            rests = [self.finish_handshake(sock) for sock in batch]
            if self.subscribe:
                for sock in batch:
                    sock.sendall(subscribe)
                rests = [self.read_result(s, r) for s, r in zip(batch, rests, strict=True)]
            for sock, rest in zip(batch, rests, strict=True):
                self.register(sock, rest, counted=True)
            self.pump(0)  # answer heartbeats of the sockets already open

    def close(self) -> None:
        for client in self.clients.values():
            client.sock.close()
        for sock in self.broadcasters:
            sock.close()
        self.epoll.close()

    # -- receiving -----------------------------------------------------------------------------

    def watch(self, fd: int, handler: Callable[[], None]) -> None:
        self.others[fd] = handler
        self.epoll.register(fd, select.EPOLLIN)

    def unwatch(self, fd: int) -> None:
        del self.others[fd]
        self.epoll.unregister(fd)

    def pump(self, timeout: float) -> None:
        for fd, _ in self.epoll.poll(timeout, 8192):
            client = self.clients.get(fd)
            if client is not None:
                self._read(fd, client)
            else:
                self.others[fd]()

    def measure(self, samples: int, limit_ms: float, concurrency: int = 0) -> dict[str, Any]:
        """Run one step at the current size: a warm-up round, then `samples` broadcasts."""
        concurrency = concurrency or len(self.broadcasters)
        self.pump(0.2)
        self.broadcast_round(concurrency, None, concurrency)  # warm the path; not counted
        step = Step(self.receivers)
        server_cpu, client_cpu = process_cpu_seconds(self.server_pid), own_cpu_seconds()
        self.broadcast_round(samples, step, concurrency)
        step.server_cpu_s = process_cpu_seconds(self.server_pid) - server_cpu
        step.client_cpu_s = own_cpu_seconds() - client_cpu
        summary = step.summary()
        summary["passed"] = summary["p95_rtt_ms"] < limit_ms and not step.failed
        summary["frame_bytes"] = self.frame_bytes
        return summary

    def _drop(self, fd: int, client: Client) -> None:
        self.epoll.unregister(fd)
        client.sock.close()
        del self.clients[fd]
        if client.counted:
            self.receivers -= 1
            if self.step is not None:
                self.step.dropped += 1

    def _read(self, fd: int, client: Client) -> None:
        try:
            data = client.recv(262144)
        except BlockingIOError:
            return
        except ConnectionError:
            data = b""
        if not data:
            self._drop(fd, client)
            return
        if not client.buffer and data[0] == 0x81:
            # The usual case: exactly one whole text frame of under 64 KiB arrived.
            length = data[1]
            header = 2 if length < 126 else 4
            if length == 126:
                length = (data[2] << 8) | data[3]
            if header + length == len(data):
                self._text(client, data, header, len(data))
                return
        if client.buffer:
            data = client.buffer + data
            client.buffer = b""
        end = len(data)
        at = 0
        while end - at >= 2:
            length = data[at + 1]
            if length < 126:
                start = at + 2
            elif length == 126:
                if end - at < 4:
                    break
                length = int.from_bytes(data[at + 2 : at + 4], "big")
                start = at + 4
            else:
                if end - at < 10:
                    break
                length = int.from_bytes(data[at + 2 : at + 10], "big")
                start = at + 10
            stop = start + length
            if stop > end:
                break
            opcode = data[at] & 0x0F
            if opcode == 0x1:
                self._text(client, data, start, stop)
            elif opcode == 0x9:  # protocol ping (websockets' keepalive): answer with a pong
                client.sock.send(client_frame(data[start:stop], 0xA))
            elif opcode == 0x8:
                self._drop(fd, client)
                return
            at = stop
        if at < end:
            client.buffer = data[at:]

    def _text(self, client: Client, data: bytes, start: int, stop: int) -> None:
        # The last marker: in a pageview event the page's own title comes after the session
        # summary, whose current title may already be a later broadcast's (one shared visit).
        marker = data.rfind(MARKER, start, stop)
        if marker < 0:
            if data.startswith(b'{"type":"ping"', start):  # the hub's heartbeat
                client.sock.send(client_frame(b'{"id":%d,"type":"pong"}' % client.next_id))
                client.next_id += 1
            return
        if not client.counted:
            return
        now = perf_counter()
        key = int(data[marker + 6 : marker + 14])
        pending = self.pending.get(key)
        if pending is None:
            return  # a late delivery of a broadcast already given up on
        step = self.step
        if step is not None:
            step.delivery_ms.append((now - pending.started) * 1000)
        self.frame_bytes = stop - start
        pending.remaining -= 1
        if pending.remaining <= 0:
            del self.pending[key]
            if step is not None:
                step.rtt_ms.append((now - pending.started) * 1000)
            self._next(pending.broadcaster)

    # -- broadcasting --------------------------------------------------------------------------

    def _next(self, broadcaster: int) -> None:
        if self._to_send <= 0:
            return
        self._to_send -= 1
        self.sequence += 1
        key = broadcaster * 1_000_000 + self.sequence % 1_000_000
        self.pending[key] = Pending(time.perf_counter(), self.receivers, broadcaster)
        self.send_broadcast(self.broadcasters[broadcaster], key)

    def broadcast_round(self, count: int, step: Step | None, concurrency: int) -> None:
        """Send `count` broadcasts, `concurrency` at a time, each after the previous one."""
        self.step = step
        self._to_send = count
        self.pending.clear()
        for index in range(concurrency):
            self._next(index)
        while self.pending:
            self.pump(0.05)
            now = time.perf_counter()
            for key, pending in list(self.pending.items()):
                if now - pending.started > BROADCAST_TIMEOUT:
                    del self.pending[key]
                    if step is not None:
                        step.failed += 1
                        step.rtt_ms.append(BROADCAST_TIMEOUT * 1000)
                    self._next(pending.broadcaster)
        self.step = None

    _to_send = 0


def process_cpu_seconds(pid: int) -> float:
    """User plus system CPU time of a process, from /proc (Linux)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def own_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _split_frame(data: bytes) -> tuple[bytes | None, bytes]:
    if len(data) < 2:
        return None, data
    length, start = data[1] & 0x7F, 2
    if length == 126:
        if len(data) < 4:
            return None, data
        length, start = int.from_bytes(data[2:4], "big"), 4
    elif length == 127:
        if len(data) < 10:
            return None, data
        length, start = int.from_bytes(data[2:10], "big"), 10
    if len(data) < start + length:
        return None, data
    return data[start : start + length], data[start + length :]


class GeneratorProcess:
    """A load generator in its own process, driven by one-line commands on its stdin."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str]) -> None:
        self.name = name
        self.process = subprocess.Popen(
            [sys.executable, "-m", "dashboard.bench.hub", "generate", *argv],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env={**os.environ, **env},
        )

    def ask(self, command: str, timeout: float = 600) -> dict[str, Any]:
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.write(command.encode() + b"\n")
        self.process.stdin.flush()
        ready, _, _ = select.select([self.process.stdout], [], [], timeout)
        line = self.process.stdout.readline() if ready else b""
        if not line:
            raise RuntimeError(f"the {self.name} load generator stopped answering ({command})")
        answer: dict[str, Any] = json.loads(line)
        return answer

    def close(self) -> None:
        if self.process.poll() is None:
            try:
                self.ask("quit", timeout=30)
            except (RuntimeError, OSError):
                pass
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()


def _generate(args: argparse.Namespace) -> None:
    """Serve a `GeneratorProcess`: grow, measure, quit; answering heartbeats all the while."""
    _raise_fd_limit()
    if args.target == "ours":
        make, send = _http_broadcasters(args.site_key)
    else:
        make, send = _ws_broadcasters(args.frame_bytes)
    generator = LoadGenerator(
        "127.0.0.1",
        args.port,
        path=args.path,
        cookie=os.environ.get("CALLTRACK_BENCH_COOKIE"),
        subscribe=args.target == "ours",
        server_pid=args.server_pid,
        concurrent=args.concurrent,
        make_broadcasters=make,
        send_broadcast=send,
    )
    commands: list[str] = []
    pending = b""

    def read_commands() -> None:
        nonlocal pending
        chunk = os.read(0, 4096)
        if not chunk:
            commands.append("quit")
        pending += chunk
        while b"\n" in pending:
            line, pending = pending.split(b"\n", 1)
            commands.append(line.decode().strip())

    def answer(data: dict[str, Any]) -> None:
        sys.stdout.write(json.dumps(data) + "\n")
        sys.stdout.flush()

    generator.watch(0, read_commands)
    try:
        while True:
            generator.pump(1.0)
            while commands:
                verb, _, value = commands.pop(0).partition(" ")
                if verb == "quit":
                    answer({"ok": True})
                    return
                if verb == "grow":
                    try:
                        generator.grow(int(value))
                        answer({"connections": generator.receivers})
                    except (OSError, ConnectionError) as exc:
                        answer({"error": f"connect: {exc}", "connections": generator.receivers})
                elif verb == "measure":
                    samples, limit_ms, concurrency = value.split()
                    answer(generator.measure(int(samples), float(limit_ms), int(concurrency)))
    finally:
        generator.close()


def _largest_passing(results: list[dict[str, Any]]) -> int:
    return max((r["connections"] for r in results if r.get("passed")), default=0)


# -- the two servers -----------------------------------------------------------------------------


MakeBroadcasters = Callable[[LoadGenerator, int], list[socket.socket]]
SendBroadcast = Callable[[socket.socket, int], None]


def _http_broadcasters(site_key: str) -> tuple[MakeBroadcasters, SendBroadcast]:
    """Visitors: each broadcast is a pageview POSTed to /collect on a keep-alive connection."""

    def connect(generator: LoadGenerator, index: int) -> socket.socket:
        sock = socket.create_connection((generator.host, generator.port), timeout=30)
        sock.setblocking(False)

        def discard() -> None:
            # Read and drop the answers; reconnect if the server closed an idle keep-alive.
            try:
                if sock.recv(262144):
                    return
            except BlockingIOError:
                return
            except ConnectionError:
                pass
            generator.unwatch(sock.fileno())
            sock.close()
            generator.broadcasters[index] = connect(generator, index)

        generator.watch(sock.fileno(), discard)
        return sock

    def make(generator: LoadGenerator, count: int) -> list[socket.socket]:
        generator.broadcasters = []
        for index in range(count):
            generator.broadcasters.append(connect(generator, index))
        return generator.broadcasters

    def send(sock: socket.socket, key: int) -> None:
        body = json.dumps(
            {
                "k": site_key,
                "t": "pageview",
                "p": secrets.token_hex(8),
                "u": "https://shop.example/velos/route",
                "ti": f"bench:{key:08d} Vélo de route",
            }
        ).encode()
        head = (
            f"POST /collect HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: text/plain\r\n"
            f"User-Agent: {USER_AGENT}\r\nContent-Length: {len(body)}\r\n\r\n"
        ).encode()
        sock.setblocking(True)
        sock.sendall(head + body)
        sock.setblocking(False)

    return make, send


def _ws_broadcasters(frame_bytes: int) -> tuple[MakeBroadcasters, SendBroadcast]:
    """Shootout clients: each broadcast is a websocket message the server echoes to all."""

    def make(generator: LoadGenerator, count: int) -> list[socket.socket]:
        sockets = []
        for _ in range(count):
            sock = generator.open_websocket(counted=False)
            rest = generator.finish_handshake(sock)
            generator.register(sock, rest, counted=False)
            sockets.append(sock)
        return sockets

    def send(sock: socket.socket, key: int) -> None:
        head = b'{"type":"event","event":{"title":"bench:%08d","padding":"' % key
        padding = b"x" * max(0, frame_bytes - len(head) - 3)
        sock.setblocking(True)
        sock.sendall(client_frame(head + padding + b'"}}'))
        sock.setblocking(False)

    return make, send


async def _prepare_database(url: str) -> tuple[str, str]:
    """Create the bench site and an advisor; return (site key, email)."""
    from tracker.clock import SystemClock
    from tracker.db import Database, migrate
    from tracker.sites import SiteSpec, create_site, get_or_create_account
    from tracker.users import create_user

    await migrate(url)
    database = Database(url)
    email = f"advisor-{secrets.token_hex(4)}@bench.example"
    try:
        async with database.begin() as db:
            account = await get_or_create_account(db, "bench", SystemClock())
            site = await create_site(
                db,
                account,
                SiteSpec(name="Bench", domain="shop.example", phone="+33123456789", country="FR"),
            )
            await create_user(db, account, email, PASSWORD, "advisor", SystemClock())
            return site.site_key, email
    finally:
        await database.close()


def _sign_in(port: int, email: str) -> str:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    body = urllib.parse.urlencode({"email": email, "password": PASSWORD})
    connection.request(
        "POST", "/login", body, {"Content-Type": "application/x-www-form-urlencoded"}
    )
    response = connection.getresponse()
    response.read()
    cookie = response.getheader("Set-Cookie") or ""
    connection.close()
    if response.status != 302 or "ct_session=" not in cookie:
        raise RuntimeError(f"bench sign-in failed: {response.status}")
    return cookie.split(";", 1)[0]


def _wait_port(port: int, process: subprocess.Popen[bytes], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError("the bare websockets server exited")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError("the bare websockets server did not start")


def socket_floor_us(connections: int = 500, rounds: int = 10) -> float:
    """Time one loopback send plus its recv, in wall-clock microseconds (this machine, now)."""
    # No Python server can deliver faster than this; it says how far the figures of a busy or
    # slow machine are from those of an idle one.
    with socket.create_server(("127.0.0.1", 0), backlog=connections) as listener:
        pairs = []
        for _ in range(connections):
            client = socket.create_connection(listener.getsockname())
            pairs.append((listener.accept()[0], client))
        message = b"x" * 780
        started = time.perf_counter()
        for _ in range(rounds):
            for server, client in pairs:
                server.send(message)
                client.recv(65536)
        elapsed = time.perf_counter() - started
        for server, client in pairs:
            server.close()
            client.close()
    return elapsed / (connections * rounds) * 1e6


def _raise_fd_limit() -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


def _measure(args: argparse.Namespace, steps: list[int], workdir: str) -> dict[str, Any]:
    """Ramp both servers, alternating them step by step so that both see the same machine."""
    url = f"sqlite+aiosqlite:///{workdir}/bench.sqlite3"
    site_key, email = asyncio.run(_prepare_database(url))
    ours_port, bare_port = free_port(), free_port()
    env = {
        "CALLTRACK_DATABASE_URL": url,
        "CALLTRACK_REDIS_URL": "",
        "CALLTRACK_LOG_LEVEL": "WARNING",
        "CALLTRACK_SECRET_KEY": secrets.token_hex(16),
        "CALLTRACK_PUBLIC_URL": f"http://127.0.0.1:{ours_port}",
    }
    bare_server = subprocess.Popen(
        [sys.executable, "-m", "dashboard.bench.hub", "bare", "--port", str(bare_port)],
        stdout=subprocess.DEVNULL,
    )
    generators: dict[str, GeneratorProcess] = {}
    results: dict[str, list[dict[str, Any]]] = {"ours": [], "bare": []}
    latency: dict[str, dict[str, Any]] = {}
    frame_bytes = 0
    try:
        with server_process(
            ["-m", "dashboard.cli", "serve", "--port", str(ours_port)],
            env,
            f"http://127.0.0.1:{ours_port}/healthz",
        ) as ours_server:
            _wait_port(bare_port, bare_server)
            common = ["--concurrent", str(args.concurrent)]
            generators["ours"] = GeneratorProcess(
                "ours",
                [
                    *("--target", "ours", "--port", str(ours_port), "--path", "/console/ws"),
                    *("--server-pid", str(ours_server.pid), "--site-key", site_key, *common),
                ],
                {"CALLTRACK_BENCH_COOKIE": _sign_in(ours_port, email)},
            )
            active = {"ours", "bare"}
            for index, connections in enumerate(steps):
                # Ours goes first on the first step: the bare server's messages copy its size.
                order = ("ours", "bare") if index % 2 == 0 else ("bare", "ours")
                for name in order:
                    if name not in active:
                        continue
                    if name not in generators:
                        generators[name] = GeneratorProcess(
                            name,
                            [
                                *("--target", "bare", "--port", str(bare_port), "--path", "/"),
                                *("--server-pid", str(bare_server.pid), *common),
                                *("--frame-bytes", str(frame_bytes or 780)),
                            ],
                            {},
                        )
                    grown = generators[name].ask(f"grow {connections}")
                    if "error" in grown:
                        summary: dict[str, Any] = {"connections": connections, **grown}
                        summary["passed"] = False
                    else:
                        if index == 0:
                            # Delivery latency as a console sees it: one visitor at a time.
                            paced = generators[name].ask(
                                f"measure {args.latency_samples} {args.limit_ms} 1"
                            )
                            latency[name] = {
                                "connections": paced["connections"],
                                "delivery_p50_ms": paced["delivery_p50_ms"],
                                "delivery_p99_ms": paced["delivery_p99_ms"],
                                "broadcasts": paced["broadcasts"],
                            }
                            print(f"  {name} paced: {latency[name]}", file=sys.stderr)
                        summary = generators[name].ask(
                            f"measure {args.samples} {args.limit_ms} {args.concurrent}"
                        )
                        frame_bytes = frame_bytes or int(summary.get("frame_bytes") or 0)
                    results[name].append(summary)
                    print(f"  {name}: {summary}", file=sys.stderr)
                    if not summary["passed"]:
                        # Out of the race: its idle sockets' heartbeats would only add noise.
                        active.discard(name)
                        generators.pop(name).close()
                if not active:
                    break
            for generator in generators.values():
                generator.close()  # before the servers stop under them
    finally:
        for generator in generators.values():
            generator.close()
        bare_server.terminate()
        bare_server.wait(timeout=15)
    return {**results, "frame_bytes": frame_bytes, "latency": latency}


async def run(args: argparse.Namespace, settings: Any) -> int:
    started = time.monotonic()
    load_before = os.getloadavg()[0]
    floor_us = socket_floor_us()
    hard = _raise_fd_limit()
    # Each side holds one descriptor per connection, plus a few hundred of its own.
    ceiling = (hard - 300) // 500 * 500
    wanted = sorted({int(s) for s in args.steps.split(",") if s.strip()})
    steps = [s for s in wanted if s <= ceiling]
    if len(steps) < len(wanted) and (not steps or steps[-1] < ceiling):
        steps.append(ceiling)
    with tempfile.TemporaryDirectory(prefix="calltrack-bench-hub-") as workdir:
        measured = await asyncio.to_thread(_measure, args, steps, workdir)
    ours, bare = measured["ours"], measured["bare"]
    ours_max, bare_max = _largest_passing(ours), _largest_passing(bare)
    paced: dict[str, Any] = measured["latency"].get("ours", {})
    bare_paced: dict[str, Any] = measured["latency"].get("bare", {})
    at_max: dict[str, Any] = next((r for r in ours if r["connections"] == ours_max), {})
    # None when the bare server passed no step: there is nothing to compare with.
    ratio = round(ours_max / bare_max, 3) if bare_max else None
    data: dict[str, Any] = {
        "rule": (
            f"p{PERCENTILE} broadcast round trip < {args.limit_ms:g} ms, "
            f"{args.concurrent} concurrent broadcasters, {args.samples} samples per step"
        ),
        "ours_max_connections": ours_max,
        "bare_max_connections": bare_max,
        "ratio": ratio,
        # Visitor's request → advisor's socket, one pageview at a time (a console's day).
        "ours_delivery_p50_ms": paced.get("delivery_p50_ms"),
        "ours_delivery_p99_ms": paced.get("delivery_p99_ms"),
        "bare_delivery_p50_ms": bare_paced.get("delivery_p50_ms"),
        "bare_delivery_p99_ms": bare_paced.get("delivery_p99_ms"),
        "latency_at_connections": paced.get("connections"),
        # The same under the shootout's load, at the largest passing step.
        "ours_delivery_p50_ms_at_max": at_max.get("delivery_p50_ms"),
        "ours_delivery_p99_ms_at_max": at_max.get("delivery_p99_ms"),
        "ours_server_us_per_delivery": at_max.get("server_us_per_delivery"),
        "bare_server_us_per_delivery": next(
            (r.get("server_us_per_delivery") for r in bare if r["connections"] == bare_max), None
        ),
        "frame_bytes": measured["frame_bytes"],
        "steps": {"ours": ours, "bare": bare},
        "fd_limit": hard,
        "cpus": os.cpu_count(),
        # Other work on the machine inflates latencies; these say how busy it was.
        "load_average_before": round(load_before, 2),
        "load_average_after": round(os.getloadavg()[0], 2),
        "socket_floor_us": round(floor_us, 2),
        "target_ratio": 0.7,
        "target_connections": 10_000,
        "meets_target": ratio is not None and ratio >= 0.7 and ours_max >= 10_000,
        "seconds": round(time.monotonic() - started, 1),
    }
    at = data["latency_at_connections"]
    rows = [
        (f"ours: max connections (p{PERCENTILE} < {args.limit_ms:g} ms)", ours_max),
        (f"bare websockets: max connections (p{PERCENTILE} < {args.limit_ms:g} ms)", bare_max),
        ("ratio (target >= 0.7)", ratio),
        (f"delivery p50 ms, paced, {at} connections", data["ours_delivery_p50_ms"]),
        (f"delivery p99 ms, paced, {at} connections", data["ours_delivery_p99_ms"]),
        (f"delivery p50 ms under load, {ours_max} conn.", data["ours_delivery_p50_ms_at_max"]),
        (f"delivery p99 ms under load, {ours_max} conn.", data["ours_delivery_p99_ms_at_max"]),
        ("server CPU us per delivery, ours", data["ours_server_us_per_delivery"]),
        ("server CPU us per delivery, bare", data["bare_server_us_per_delivery"]),
        ("loopback send+recv floor, us (idle machine: ~3-4)", data["socket_floor_us"]),
        ("seconds", data["seconds"]),
    ]
    output(args, "calltrack bench hub (one process each; shootout rule)", data, rows)
    return 0


# -- the bare server (run as `python -m dashboard.bench.hub bare --port N`) ---------------------


async def _bare_server(port: int) -> None:
    from websockets.asyncio.server import ServerConnection, broadcast, serve
    from websockets.exceptions import ConnectionClosed

    clients: set[ServerConnection] = set()

    async def handler(connection: ServerConnection) -> None:
        clients.add(connection)
        try:
            async for message in connection:
                broadcast(clients, message)
        except ConnectionClosed:
            pass  # the load generator hangs up without a closing handshake
        finally:
            clients.discard(connection)

    # No compression, like the hub: the comparison is of fan-out, not of deflate.
    async with serve(handler, "127.0.0.1", port, compression=None, max_size=2**16) as server:
        await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m dashboard.bench.hub")
    roles = parser.add_subparsers(dest="role", required=True)
    bare = roles.add_parser("bare", help="serve the bare websockets broadcast server")
    bare.add_argument("--port", type=int, required=True)
    generate = roles.add_parser("generate", help="a load generator driven over stdin")
    generate.add_argument("--target", choices=["ours", "bare"], required=True)
    generate.add_argument("--port", type=int, required=True)
    generate.add_argument("--path", default="/")
    generate.add_argument("--server-pid", type=int, required=True)
    generate.add_argument("--concurrent", type=int, default=CONCURRENT)
    generate.add_argument("--site-key", default="")
    generate.add_argument("--frame-bytes", type=int, default=780)
    args = parser.parse_args()
    if args.role == "generate":
        _generate(args)
        return
    _raise_fd_limit()
    try:
        asyncio.run(_bare_server(args.port))
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
